"""Small messages (issue 14): each mistake a user makes gets one line that names it and the
fix, with the exit status of its kind (2: a usage error, 1: anything else)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import TINY, make_binary_images, run_cli

from vaekit import data as vdata


def _one_line(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err
    return lines[0]


def test_threads_zero_is_refused(capsys, tmp_path):
    code, _, err = run_cli(capsys, "train", "--threads", "0", "--out", tmp_path / "r")
    assert code == 1 and "--threads must be a positive integer, got 0" in _one_line(err)
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("flag, value, message", [
    ("--lr", "abc", "lr must be a number, got 'abc'"),
    ("--epochs", "2.5", "epochs must be an integer"),
    ("--hidden-sizes", "16,x", "hidden_sizes must be a comma-separated list of integers"),
])
def test_unreadable_values_are_usage_errors(capsys, tmp_path, flag, value, message):
    code, _, err = run_cli(capsys, "train", flag, value, "--out", tmp_path / "r")
    line = _one_line(err)
    assert code == 2 and message in line and f"argument {flag}" in line, err
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("argv, toml, hint", [
    (["--model", "vea"], None, "(did you mean 'vae'?)"),
    (["--objective", "iwea"], None, "(did you mean 'iwae'?)"),
    (["--likelihood", "bernouli"], None, "(did you mean 'bernoulli'?)"),
    ([], "[modle]\n", "(did you mean 'model'?)"),
    ([], "[train]\nlrr = 0.1\n", "(did you mean 'lr'?)"),
    ([], "[model]\nlatent_dm = 3\n", "(did you mean 'latent_dim'?)"),
])
def test_typos_get_a_did_you_mean(capsys, tmp_path, argv, toml, hint):
    if toml is not None:
        (tmp_path / "c.toml").write_text(toml)
        argv = [*argv, "--config", tmp_path / "c.toml"]
    code, _, err = run_cli(capsys, "train", *argv, "--out", tmp_path / "r")
    assert code in (1, 2) and hint in _one_line(err), err


def test_a_far_name_gets_no_guess(capsys, tmp_path):
    code, _, err = run_cli(capsys, "train", "--model", "transformer", "--out", tmp_path / "r")
    assert code == 1 and "did you mean" not in _one_line(err)


def test_small_whole_numbers_are_not_called_grey_levels(capsys, tmp_path):
    rng = np.random.default_rng(0)
    np.save(tmp_path / "counts.npy", rng.integers(0, 5, (60, 4, 4)))
    np.save(tmp_path / "grey.npy", rng.integers(0, 256, (60, 4, 4)).astype(np.int64))
    code, _, err = run_cli(capsys, "train", "--data", tmp_path / "counts.npy", "--likelihood",
                           "bernoulli", "--out", tmp_path / "r1")
    line = _one_line(err)
    assert code == 1 and "values lie in [0, 4]" in line and "grey levels" in line
    assert "look like 0..255 grey levels" not in line and "counts or category codes" in line
    code, _, err = run_cli(capsys, "train", "--data", tmp_path / "grey.npy", "--likelihood",
                           "bernoulli", "--out", tmp_path / "r2")
    assert code == 1 and "they look like 0..255 grey levels" in _one_line(err)


def test_offline_binarized_mnist_names_every_missing_file(capsys, tmp_path, monkeypatch):
    import socket
    with socket.socket() as s:                     # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setattr(vdata, "BINARIZED_MNIST_URL",
                        f"http://127.0.0.1:{port}/binarized_mnist_{{split}}.amat")
    monkeypatch.setenv("VAEKIT_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("VAEKIT_DATA_DIR", str(tmp_path / "nodata"))
    code, _, err = run_cli(capsys, "train", "--data", "binarized-mnist", "--out", tmp_path / "r")
    line = _one_line(err)
    assert code == 1
    for split in ("train", "valid", "test"):
        assert f"binarized_mnist_{split}.amat" in line, line
    assert str(tmp_path / "cache") in line


def test_resume_says_where_it_starts_and_a_finished_run_keeps_its_evaluation(capsys, tmp_path):
    np.save(tmp_path / "x.npy", make_binary_images(120, side=6).astype(bool))
    run = tmp_path / "run"
    assert run_cli(capsys, "train", "--data", tmp_path / "x.npy", *TINY, "--threads", "1",
                   "--out", run)[0] == 0
    before = (run / "eval.json").read_bytes()
    code, _, err = run_cli(capsys, "train", "--resume", run, "--threads", "1", "--no-progress")
    assert code == 0
    assert f"resuming {run} from its last checkpoint (epoch 2)" in err
    assert "already complete at epoch 2" in err and "eval.json is kept" in err
    assert (run / "eval.json").read_bytes() == before
    code, _, err = run_cli(capsys, "train", "--resume", run, "--epochs", "3", "--threads", "1",
                           "--no-progress")
    assert code == 0 and "already complete" not in err
    assert json.loads((run / "eval.json").read_text()) != json.loads(before)
