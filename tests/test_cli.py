"""The command line end to end on tiny data, and one clear line for every bad input."""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import TINY, run_cli
from test_download import server  # noqa: F401  (fixture)

import vaekit.data as data
from vaekit.runs import evaluate_run, load_run

run = run_cli


@pytest.fixture
def trained(tiny_npz, tmp_path, capsys):
    out = tmp_path / "run"
    code, stdout, err = run(capsys, "train", "--data", tiny_npz, "--out", out, *TINY)
    assert code == 0, err
    return out, stdout


def test_train_writes_the_run_directory(trained):
    out, stdout = trained
    names = {p.name for p in out.iterdir()}
    assert {"config.json", "best.safetensors", "last.safetensors", "metrics.jsonl",
            "eval.json", "tensorboard", "curves.png", "samples.png", "reconstructions.png",
            "interpolations.png", "manifold.png", "latent.png"} <= names
    assert not [n for n in names if n.endswith(".tmp")]
    assert any(p.name.startswith("events.out.tfevents") for p in (out / "tensorboard").iterdir())
    lines = (out / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2]
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["model"]["latent_dim"] == 2 and cfg["data"]["binarization"] == "none"
    assert f"run directory: {out}" in stdout and "log-likelihood (IWAE bound, k=20)" in stdout
    ev = json.loads((out / "eval.json").read_text())
    assert ev["num_samples"] == 20 and ev["dataset"] == "tiny.npz"


def test_evaluate_json_and_sample(trained, capsys):
    out, _ = trained
    code, stdout, _ = run(capsys, "evaluate", out, "--num-samples", "30", "--json")
    assert code == 0
    r = json.loads(stdout)
    for key in ("elbo", "log_likelihood", "num_samples", "active_units", "dataset",
                "binarization", "kl", "reconstruction", "bits_per_dim", "log_likelihood_se"):
        assert key in r
    assert r["num_samples"] == 30 and r["split"] == "test" and r["seed"] == 0
    loaded = load_run(out)
    state = torch.get_rng_state()
    again = evaluate_run(loaded, 30, save=False)
    assert again["log_likelihood"] == r["log_likelihood"]        # seeded: the same numbers
    assert torch.equal(torch.get_rng_state(), state)              # the caller's RNG untouched
    other = json.loads(run(capsys, "evaluate", out, "--num-samples", "30", "--seed", "1",
                           "--json")[1])
    assert other["log_likelihood"] != r["log_likelihood"] and other["seed"] == 1
    last = json.loads(run(capsys, "evaluate", out, "--num-samples", "30", "--checkpoint",
                          "last", "--json")[1])
    assert last["checkpoint"] == "last" and r["checkpoint"] == "best"
    assert json.loads((out / "eval-last.json").read_text())["checkpoint"] == "last"
    code, _, err = run(capsys, "evaluate", out, "--noise", "masking", "--noise-level", "0.2")
    assert "noise applies to autoencoders" in _one_line_error(code, err)
    assert r["log_likelihood"] >= r["elbo"] - 1.0
    assert json.loads((out / "eval.json").read_text())["num_samples"] == 30
    first = json.loads(run(capsys, "evaluate", out, "--num-samples", "30", "--num-points", "5",
                           "--json")[1])
    assert first["num_examples"] == 5 < r["num_examples"]
    assert json.loads((out / "eval-first5.json").read_text()) == first
    assert json.loads((out / "eval.json").read_text())["num_examples"] == r["num_examples"]
    (out / "samples.png").unlink()
    code, stdout, _ = run(capsys, "sample", out)
    assert code == 0 and (out / "samples.png").is_file() and "samples.png" in stdout


def test_resume_continues_and_refuses_changes(trained, capsys):
    out, _ = trained
    code, _, err = run(capsys, "train", "--resume", out, "--epochs", "3", "--no-progress",
                       "--no-eval")
    assert code == 0, err
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 3
    code, _, err = run(capsys, "train", "--resume", out, "--batch-size", "7")
    assert code != 0 and "--batch-size cannot change when resuming" in err
    # the learning rate may change (the fix a diverged run's message suggests): the new rate
    # applies from the next epoch on and is recorded
    code, _, err = run(capsys, "train", "--resume", out, "--epochs", "4", "--lr", "1e-4",
                       "--no-progress", "--no-eval")
    assert code == 0, err
    lrs = [json.loads(line)["lr"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert lrs[:3] == [lrs[0]] * 3 and lrs[3] == pytest.approx(1e-4) and lrs[0] != 1e-4
    assert json.loads((out / "config.json").read_text())["train"]["lr"] == 1e-4


def test_a_run_stopped_before_its_first_checkpoint_is_no_dead_end(tiny_npz, tmp_path, capsys):
    out = tmp_path / "r"
    code, _, err = run(capsys, "train", "--data", tiny_npz, "--out", out, *TINY)
    assert code == 0, err
    for name in ("last.safetensors", "best.safetensors", "eval.json"):
        (out / name).unlink()                     # as if killed before the first checkpoint
    code, _, err = run(capsys, "train", "--resume", out, "--no-progress", "--no-eval")
    assert code == 0 and "training it from the start" in err
    for name in ("last.safetensors", "best.safetensors"):
        (out / name).unlink()
    code, _, err = run(capsys, "train", "--data", tiny_npz, "--out", out, *TINY)
    assert code == 0 and "starting afresh" in err


def test_an_existing_run_is_never_overwritten(trained, tiny_npz, capsys):
    out, _ = trained
    before = (out / "best.safetensors").read_bytes()
    code, _, err = run(capsys, "train", "--data", tiny_npz, "--out", out, *TINY)
    assert code != 0 and "already holds a run" in err and "--resume" in err
    assert (out / "best.safetensors").read_bytes() == before


def _one_line_error(code, err):
    assert code != 0
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    return lines[0]


def _save(tmp_path, name, array):
    p = tmp_path / name
    np.save(p, array)
    return p


@pytest.mark.parametrize("argv,expected", [
    (["train", "--bogus"], "unrecognized arguments: --bogus"),
    (["train", "--epochs", "abc"], "epochs must be an integer, got 'abc'"),
    (["train", "--latent-dim", "0"], "latent_dim must be a positive integer"),
    (["train", "--lr", "-1"], "lr must be a positive number"),
    (["train", "--likelihood", "poisson"], "likelihood must be one of auto, bernoulli, gaussian"),
    (["train", "--config", "nope.toml"], "neither a preset"),
    (["train", "--data", "missing.npz"], "missing.npz does not exist"),
    (["evaluate", "no-such-run"], "run directory no-such-run does not exist"),
    (["evaluate", ".", "--num-samples", "0"], "--num-samples must be a positive integer"),
])
def test_bad_options_give_one_clear_line(argv, expected, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, _, err = run(capsys, *argv)
    assert expected in _one_line_error(code, err)
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("name,array,expected", [
    ("shape.npy", np.zeros(50), "expected (N, D)"),
    ("nan.npy", np.where(np.eye(20) > 0, np.nan, 0.5), "NaN or infinite values in 20 rows"),
    ("range.npy", np.full((30, 4), 200.0), "divide by 255"),
])
def test_bad_data_give_one_clear_line_and_write_nothing(name, array, expected, tmp_path,
                                                        capsys):
    p = _save(tmp_path, name, array)
    out = tmp_path / "run"
    code, _, err = run(capsys, "train", "--data", p, "--out", out, *TINY)
    line = _one_line_error(code, err)
    assert expected in line
    assert not out.exists()


def test_bernoulli_range_error_names_the_fix(tmp_path, capsys):
    p = _save(tmp_path, "neg.npy", np.linspace(-1, 1, 150).reshape(30, 5))
    code, _, err = run(capsys, "train", "--data", p, "--likelihood", "bernoulli",
                       "--standardize", "off", *TINY)
    line = _one_line_error(code, err)
    assert "Bernoulli decoder needs values in [0, 1]" in line and "--likelihood gaussian" in line
    # the default (--likelihood auto) models real values by a Gaussian, standardised
    code, out, err = run(capsys, "train", "--data", p, "--out", tmp_path / "g", *TINY)
    assert code == 0, err
    config = json.loads((tmp_path / "g" / "config.json").read_text())
    assert config["model"]["likelihood"] == "gaussian"
    assert config["data"]["standardize"] == "on"


def test_truncated_file_and_checksum_mismatch(tmp_path, capsys, monkeypatch, server):  # noqa: F811
    p = _save(tmp_path, "t.npy", np.zeros((100, 16)))
    p.write_bytes(p.read_bytes()[:300])
    code, _, err = run(capsys, "train", "--data", p, *TINY)
    assert "truncated" in _one_line_error(code, err)

    root, url = server
    for split in ("train", "valid", "test"):
        (root / f"binarized_mnist_{split}.amat").write_bytes(b"0 1\n")
    monkeypatch.setattr(data, "BINARIZED_MNIST_URL", url + "/binarized_mnist_{split}.amat")
    code, _, err = run(capsys, "train", "--data", "binarized-mnist", "--data-dir",
                       tmp_path / "empty", "--out", tmp_path / "r", *TINY)
    line = _one_line_error(code, err)
    assert "sha256" in line and "expected " + data.BINARIZED_MNIST_SHA256["train"] in line
    assert hashlib.sha256(b"0 1\n").hexdigest() in line
    assert not (tmp_path / "r").exists()


def test_corrupt_checkpoint_gives_one_clear_line(trained, capsys):
    out, _ = trained
    p = out / "best.safetensors"
    p.write_bytes(p.read_bytes()[:64])
    code, _, err = run(capsys, "evaluate", out)
    assert "corrupt or truncated" in _one_line_error(code, err)


@pytest.mark.slow
def test_console_script_and_module_entry_points():
    r = subprocess.run([sys.executable, "-m", "vaekit", "--help"], capture_output=True,
                       text=True)
    assert r.returncode == 0 and "train" in r.stdout and "evaluate" in r.stdout
    r = subprocess.run([sys.executable, "-m", "vaekit", "train", "--help"], capture_output=True,
                       text=True)
    assert r.returncode == 0 and "--latent-dim" in r.stdout and "--resume" in r.stdout


def test_gradients_study_writes_table_and_figure(trained, capsys):
    out, _ = trained
    code, stdout, err = run(capsys, "gradients", out, "--estimators", "elbo,vimco,iwae-dreg",
                            "--num-samples", "1,3", "--draws", "5", "--batch-size", "8")
    assert code == 0, err
    rows = json.loads((out / "gradients.json").read_text())
    assert (out / "gradients.png").is_file()
    skipped = [r for r in rows if "skipped" in r]
    assert [(r["estimator"], r["num_samples"]) for r in skipped] == [("vimco", 1)]
    measured = [r for r in rows if "skipped" not in r]
    assert {(r["estimator"], r["num_samples"], r["group"]) for r in measured} == {
        (e, k, g) for e, k in [("elbo", 1), ("elbo", 3), ("vimco", 3), ("iwae-dreg", 1),
                               ("iwae-dreg", 3)] for g in ("model", "inference")}
    assert all(r["variance"] > 0 and r["snr_mean"] > 0 and r["draws"] == 5 for r in measured)
    assert "SNR mean" in stdout and "skipped" in stdout
    code, _, err = run(capsys, "gradients", out, "--estimators", "elbo,bogus")
    assert "unknown bogus" in _one_line_error(code, err)
    code, _, err = run(capsys, "gradients", out, "--num-samples", "1,x")
    assert "comma-separated integers" in _one_line_error(code, err)


def test_compare_runs_table_and_figures(trained, tiny_npz, tmp_path, capsys):
    first, _ = trained
    second = tmp_path / "ws"
    code, _, err = run(capsys, "train", "--data", tiny_npz, "--out", second, *TINY,
                       "--objective", "wake-sleep", "--monitor-every", "1",
                       "--monitor-num-samples", "10", "--monitor-examples", "20")
    assert code == 0, err
    history = [json.loads(line) for line in (second / "metrics.jsonl").read_text().splitlines()]
    assert [r["monitor_num_samples"] for r in history] == [10, 10]
    assert all(r["monitor_log_likelihood"] < 0 for r in history)
    out = tmp_path / "cmp"
    code, stdout, err = run(capsys, "compare", first, second, "--num-samples", "20",
                            "--out", out)
    assert code == 0, err
    rows = json.loads((out / "compare.json").read_text())
    assert [r["objective"] for r in rows] == ["elbo", "wake-sleep"]
    assert all(r["eval_num_samples"] == 20 and r["test_log_likelihood"] < 0 for r in rows)
    assert rows[1]["monitor"] and not rows[0]["monitor"]
    assert (out / "compare.png").is_file() and (out / "compare_latent.png").is_file()
    assert (out / "compare_interpolations.png").is_file()
    assert "wake-sleep" in stdout and "test log-lik." in stdout
    vae = json.loads((first / "eval.json").read_text())
    assert rows[0]["test_reconstruction_error"] == pytest.approx(-vae["reconstruction"])

    # an autoencoder beside the VAE: no ELBO or log-likelihood, its reconstruction error
    ae = tmp_path / "ae"
    code, _, err = run(capsys, "train", "--model", "autoencoder", "--data", tiny_npz,
                       "--out", ae, *TINY)
    assert code == 0, err
    code, stdout, err = run(capsys, "compare", first, ae, "--num-samples", "20",
                            "--out", tmp_path / "cmp2")
    assert code == 0, err
    rows = json.loads((tmp_path / "cmp2" / "compare.json").read_text())
    ae_eval = json.loads((ae / "eval.json").read_text())
    assert rows[1]["test_elbo"] is None and rows[1]["test_log_likelihood"] is None
    assert rows[1]["test_reconstruction_error"] == ae_eval["reconstruction_error"] > 0
    assert (tmp_path / "cmp2" / "compare_interpolations.png").is_file()


def test_mixture_runs_fit_by_em_and_evaluate_exactly(tmp_path, tiny_npz, capsys):
    out = tmp_path / "gmm"
    code, stdout, err = run(capsys, "train", "--model", "gmm", "--data", "gaussian-mixture-2d",
                            "--num-components", "3", "--out", out, "--no-progress")
    assert code == 0, err
    assert {"mixture.png", "curves.png", "best.safetensors", "eval.json"} <= {
        p.name for p in out.iterdir()}
    ev = json.loads((out / "eval.json").read_text())
    assert ev["num_samples"] is None and ev["bits_per_dim"] is None
    from vaekit.data import load_dataset
    from vaekit.synthetic import true_gaussian_mixture_2d
    truth = float(true_gaussian_mixture_2d().score_samples(
        load_dataset("gaussian-mixture-2d").test.double()).mean())
    assert abs(ev["log_likelihood"] - truth) < 0.05          # EM recovers the true density
    assert "log-likelihood (exact)" in stdout and "EM iterations" in stdout
    code, stdout, _ = run(capsys, "evaluate", out, "--json")
    assert code == 0 and json.loads(stdout)["log_likelihood"] == pytest.approx(
        ev["log_likelihood"])

    mob = tmp_path / "mob"
    code, stdout, err = run(capsys, "train", "--model", "bernoulli-mixture", "--data",
                            tiny_npz, "--num-components", "4", "--out", mob, "--no-progress")
    assert code == 0, err
    n_iter = int(re.search(r"EM: (\d+) iterations", err).group(1))
    assert f"trained {n_iter} EM iterations" in stdout          # the same count everywhere
    records = [json.loads(line) for line in (mob / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == list(range(n_iter + 1))   # 0: initialisation
    ev = json.loads((mob / "eval.json").read_text())
    assert ev["log_likelihood"] < 0 and ev["bits_per_dim"] > 0
    assert (mob / "components.png").is_file() and (mob / "samples.png").is_file()
    assert records[-1]["seconds"] > 0                    # the fit's wall time, for compare

    code, stdout, err = run(capsys, "importance-sampling", out, "--sample-sizes", "1,100",
                            "--repeats", "20", "--points", "5")
    assert code == 0, err
    rows = json.loads((out / "importance_sampling.json").read_text())
    assert {(r["estimator"], r["n"]) for r in rows} == {
        (e, n) for e in ("prior", "posterior", "wrong-component") for n in (1, 100)}
    assert all(r["std_log_p"] < 1e-9 for r in rows if r["estimator"] == "posterior")
    code, _, err = run(capsys, "importance-sampling", mob.parent / "run-missing")
    assert code != 0


def test_model_and_objective_must_fit_together(capsys):
    code, _, err = run(capsys, "train", "--model", "autoencoder", "--objective", "iwae")
    assert "trained with objective reconstruction" in _one_line_error(code, err)
    code, _, err = run(capsys, "train", "--model", "vae", "--objective", "vq")
    assert "belongs to another model family" in _one_line_error(code, err)


def test_gradients_refuse_models_without_a_bound(tmp_path, tiny_npz, capsys):
    out = tmp_path / "ae"
    code, _, err = run(capsys, "train", "--model", "autoencoder", "--data", tiny_npz, "--out",
                       out, *TINY)
    assert code == 0, err
    assert not (out / "samples.png").exists()            # an autoencoder cannot sample
    assert (out / "interpolations.png").is_file()
    code, _, err = run(capsys, "gradients", out)
    assert "apply to latent-variable models" in _one_line_error(code, err)

    # A plain autoencoder scored on corrupted inputs (saved apart from eval.json); the
    # corruption reaches the encoder, and a zero level reproduces the clean error exactly.
    before = (out / "eval.json").read_text()
    code, stdout, err = run(capsys, "evaluate", out, "--noise", "masking", "--noise-level",
                            "0.5", "--json")
    assert code == 0, err
    ev = json.loads(stdout)
    assert ev["denoising_error"] != ev["reconstruction_error"]
    assert ev["noise"] == {"kind": "masking", "level": 0.5}
    assert (out / "eval-test-masking-0.5.json").is_file()
    assert (out / "eval.json").read_text() == before
    code, stdout, err = run(capsys, "evaluate", out, "--noise", "masking", "--noise-level",
                            "0", "--json")
    ev = json.loads(stdout)
    assert ev["denoising_error"] == pytest.approx(ev["reconstruction_error"], abs=1e-6)
    code, _, err = run(capsys, "evaluate", out, "--noise", "masking")
    assert "--noise and --noise-level go together" in _one_line_error(code, err)
    code, _, err = run(capsys, "evaluate", out, "--noise", "masking", "--noise-level", "1.5")
    assert "masking noise_level must lie in [0, 1)" in _one_line_error(code, err)


def test_config_json_of_early_runs_still_loads():
    from vaekit.config import Config
    old = {"model": {"model": "bernoulli-mixture"},
           "train": {"objective": "em", "em_max_iter": 7, "em_tol": 0.5, "em_restarts": 2}}
    cfg = Config.from_dict(old)
    assert (cfg.model.em_max_iter, cfg.model.em_tol, cfg.model.em_restarts) == (7, 0.5, 2)


def test_an_empty_dataset_is_one_clear_line(tmp_path, capsys):
    p = tmp_path / "empty.npz"
    np.savez(p, train=np.zeros((0, 784), np.float32))
    code, _, err = run(capsys, "train", "--data", p, "--out", tmp_path / "run", *TINY)
    assert "is empty (shape (0, 784))" in _one_line_error(code, err)
    assert not (tmp_path / "run").exists()


def test_compare_shows_full_names_dataset_and_latent_size_and_refuses_mixed_data(
        trained, tmp_path, capsys):
    first, _ = trained
    twin = first.parent / (first.name + "-with-a-long-name-that-0.1-would-cut")
    run(capsys, "train", "--data", json.loads((first / "config.json").read_text())["data"][
        "dataset"], "--out", twin, *TINY)
    code, out, err = run(capsys, "compare", first, twin, "--num-samples", "20", "--out",
                         tmp_path / "cmp")
    assert code == 0, err
    assert twin.name in out and "dataset" in out and "latent" in out
    assert out.count("tiny.npz") == 2
    gmm = tmp_path / "gmm"
    assert run(capsys, "train", "--model", "gmm", "--data", "gaussian-mixture-2d",
               "--num-components", "3", "--out", gmm, "--no-progress")[0] == 0
    code, _, err = run(capsys, "compare", first, gmm, "--out", tmp_path / "cmp2")
    line = _one_line_error(code, err)
    assert "trained on different data" in line and "gaussian-mixture-2d" in line
    assert "--allow-mixed" in line
    code, out, err = run(capsys, "compare", first, gmm, "--num-samples", "20", "--out",
                         tmp_path / "cmp2", "--allow-mixed")
    assert code == 0, err
    rows = json.loads((tmp_path / "cmp2" / "compare.json").read_text())
    assert [r["dataset"] for r in rows] == ["tiny.npz", "gaussian-mixture-2d"]
    assert [r["latent_dim"] for r in rows] == [2, 0]


def test_evaluate_reports_progress_lines_when_not_on_a_terminal(trained, capsys, monkeypatch):
    """A long evaluation into a log file: a first line, then one every few seconds with the
    time left (here every 0 s), as training does."""
    import vaekit.progress
    out, _ = trained
    monkeypatch.setattr(vaekit.progress.Progress, "DEFAULT_EVERY", 0.0)
    code, _, err = run(capsys, "evaluate", out, "--num-samples", "400")
    assert code == 0
    lines = [line for line in err.splitlines() if line.startswith("log-likelihood (k=400)")]
    assert len(lines) >= 2 and "left" in lines[-1] and "examples" in lines[-1]
    code, _, err = run(capsys, "evaluate", out, "--num-samples", "400", "--no-progress")
    assert code == 0 and "log-likelihood (k=400)" not in err


def test_main_leaves_warnings_as_it_found_them(trained, capsys):
    import warnings
    out, _ = trained
    before = (warnings.showwarning, warnings.formatwarning)
    run(capsys, "evaluate", out, "--num-samples", "5")
    assert (warnings.showwarning, warnings.formatwarning) == before
    from vaekit.cli import _show_warning
    from vaekit.errors import VaekitWarning
    _show_warning("careful", VaekitWarning, "x.py", 1)
    assert capsys.readouterr().err == "vaekit: warning: careful\n"
    _show_warning("torch's own", UserWarning, "x.py", 1)
    assert "vaekit: warning" not in capsys.readouterr().err


def test_train_help_groups_options_by_family_and_lists_the_choices(capsys):
    code, out, _ = run(capsys, "train", "--help")
    assert code == 0
    assert "options of the models gmm, bernoulli-mixture:" in out
    assert "options of the model vqvae:" in out and "--num-latents" in out
    assert "options of the objective elbo:" in out and "--beta" in out
    assert "{vae,hierarchical-vae,autoencoder,stacked-autoencoder,vqvae,gmm," in out
    assert "auto, elbo, elbo-stl, iwae" in out and "{auto,bernoulli,gaussian,categorical," in out


def test_load_model_needs_two_lines_and_no_data(tiny_npz, tmp_path, capsys):
    import shutil

    import vaekit
    data = tmp_path / "moved.npz"
    shutil.copy(tiny_npz, data)
    out = tmp_path / "r"
    code, _, err = run(capsys, "train", "--data", data, "--out", out, *TINY)
    assert code == 0, err
    expected = load_run(out).model.state_dict()
    data.unlink()                                       # the data are gone
    model = vaekit.load_model(out)
    assert isinstance(model, vaekit.VAE) and not model.training
    assert model.config.model.latent_dim == 2 and model.sample(3).shape == (3, 1, 8, 8)
    for k, v in expected.items():
        assert torch.equal(model.state_dict()[k], v), k
    last = vaekit.load_model(out, checkpoint="last")
    assert set(last.state_dict()) == set(expected)
    with pytest.raises(vaekit.CheckpointError, match="is not a run directory"):
        vaekit.load_model(tmp_path)
