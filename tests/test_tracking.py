"""Experiment tracking (vaekit.tracking): a real MLflow server and a local store, read back
through MlflowClient; TensorBoard event files read back with EventAccumulator; ``none``; the
one-line errors of a missing package, a server that does not answer and misplaced options."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from conftest import TINY, make_binary_images, run_cli

from vaekit.training import read_metrics

# MLflow's SQLAlchemy store warns about its own use of SQLAlchemy
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:mlflow")


@pytest.fixture
def tiny_data(tmp_path) -> Path:
    path = tmp_path / "tiny.npz"
    np.savez(path, x=make_binary_images(120).astype(bool))
    return path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _history(client, run_id: str, key: str) -> list[tuple[int, float]]:
    return sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    """``mlflow server`` on 127.0.0.1 (SQLite store, artifacts served by the server), up to
    60 s to answer /health; killed at the end."""
    pytest.importorskip("mlflow", reason="mlflow is not installed: pip install 'vaekit[mlflow]'")
    root = tmp_path_factory.mktemp("mlflow-server")
    port = _free_port()
    exe = Path(sys.executable).with_name("mlflow")
    cmd = [str(exe) if exe.is_file() else "mlflow", "server", "--host", "127.0.0.1",
           "--port", str(port), "--workers", "1",
           "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
           "--artifacts-destination", str(root / "artifacts")]
    log = open(root / "server.log", "wb")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1",
                                 "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"})
    uri = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    try:
        while True:
            try:
                urllib.request.urlopen(uri + "/health", timeout=2).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail("mlflow server did not start: "
                                + (root / "server.log").read_text(errors="replace")[-2000:])
                time.sleep(0.5)
        yield uri
    finally:
        os.killpg(proc.pid, 15)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait()
        log.close()


def _train(capsys, *argv):
    """``vaekit train ARGV`` (a tiny run; ``--resume RUN``: continued as it was configured)."""
    tiny = ["--no-progress", "--eval-num-samples", "20"] if "--resume" in argv else TINY
    code, out, err = run_cli(capsys, "train", *argv, *tiny, "--threads", "1")
    assert code == 0, err
    return out, err


@pytest.mark.slow
def test_mlflow_server_gets_params_epochs_evaluation_figures_and_resume(
        mlflow_server, tiny_data, tmp_path, capsys):
    from mlflow.tracking import MlflowClient
    run = tmp_path / "run"
    _, err = _train(capsys, "--data", tiny_data, "--out", run, "--tracking", "mlflow",
                    "--tracking-uri", mlflow_server, "--experiment", "vaekit-test")
    state = json.loads((run / "tracking.json").read_text())
    assert state["backend"] == "mlflow" and state["tracking_uri"] == mlflow_server
    assert f"MLflow run {state['run_id']}" in err
    train = json.loads((run / "config.json").read_text())["train"]
    assert (train["tracking"], train["tracking_uri"], train["experiment"]) == (
        "mlflow", mlflow_server, "vaekit-test")
    assert not (run / "tensorboard").exists()

    client = MlflowClient(mlflow_server)
    exp = client.get_experiment_by_name("vaekit-test")
    r = client.get_run(state["run_id"])
    assert r.info.experiment_id == exp.experiment_id and r.info.status == "FINISHED"
    assert r.info.run_name == "run"
    p = r.data.params
    assert (p["latent_dim"], p["objective"], p["hidden_sizes"], p["epochs"], p["model"]) == (
        "2", "elbo", "16", "2", "vae")
    records = read_metrics(run / "metrics.jsonl")
    assert _history(client, r.info.run_id, "bound/train") == [
        (rec["epoch"], pytest.approx(rec["train_bound"], rel=1e-12)) for rec in records]
    assert _history(client, r.info.run_id, "valid/ELBO") == [
        (rec["epoch"], pytest.approx(rec["valid_score"], rel=1e-12)) for rec in records]
    assert [s for s, _ in _history(client, r.info.run_id, "lr")] == [1, 2]
    ev = json.loads((run / "eval.json").read_text())
    m = r.data.metrics
    assert m["test/log_likelihood"] == pytest.approx(ev["log_likelihood"], rel=1e-12)
    assert m["test/kl"] == pytest.approx(ev["kl"], rel=1e-12)
    assert m["test/active_units"] == ev["active_units"]
    assert m["test/bits_per_dim"] == pytest.approx(ev["bits_per_dim"], rel=1e-12)
    assert "test/seed" not in m
    figures = {a.path for a in client.list_artifacts(r.info.run_id, "figures")}
    assert {"figures/samples.png", "figures/curves.png",
            "figures/reconstructions.png"} <= figures

    # resume: the same MLflow run gets epochs 3 and 4, and no epoch twice
    _train(capsys, "--resume", run, "--epochs", "4")
    assert json.loads((run / "tracking.json").read_text())["run_id"] == state["run_id"]
    assert len(client.search_runs([exp.experiment_id])) == 1
    records = read_metrics(run / "metrics.jsonl")
    assert [rec["epoch"] for rec in records] == [1, 2, 3, 4]
    assert _history(client, r.info.run_id, "bound/train") == [
        (rec["epoch"], pytest.approx(rec["train_bound"], rel=1e-12)) for rec in records]
    r = client.get_run(state["run_id"])
    assert r.info.status == "FINISHED" and r.data.params["epochs"] == "2"
    assert r.data.tags["resumed.epochs"] == "4"         # MLflow keeps a parameter's value
    ev = json.loads((run / "eval.json").read_text())
    assert _history(client, r.info.run_id, "test/log_likelihood")[-1] == (
        4, pytest.approx(ev["log_likelihood"], rel=1e-12))


@pytest.mark.slow
def test_mlflow_local_store_by_default_and_lost_epochs_logged_on_resume(
        tiny_data, tmp_path, capsys, monkeypatch):
    """Without --tracking-uri: MLflow's default store in the working directory, recorded as an
    absolute URI. An epoch that never reached MLflow (a kill after its checkpoint) is logged
    on --resume, once."""
    pytest.importorskip("mlflow", reason="mlflow is not installed: pip install 'vaekit[mlflow]'")
    from mlflow.tracking import MlflowClient

    from vaekit import tracking
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_EXPERIMENT_NAME", raising=False)
    real = tracking.MLflowTracker._log_metrics

    def lose_epoch_2(self, metrics, step):
        if step != 2:
            real(self, metrics, step)
    monkeypatch.setattr(tracking.MLflowTracker, "_log_metrics", lose_epoch_2)
    run = tmp_path / "run"
    _train(capsys, "--data", tiny_data, "--out", run, "--tracking", "mlflow")
    train = json.loads((run / "config.json").read_text())["train"]
    uri = train["tracking_uri"]
    assert str(work) in uri and train["experiment"] == "vaekit"
    client = MlflowClient(uri)
    run_id = json.loads((run / "tracking.json").read_text())["run_id"]
    assert [s for s, _ in _history(client, run_id, "bound/train")] == [1]

    monkeypatch.setattr(tracking.MLflowTracker, "_log_metrics", real)
    monkeypatch.chdir(tmp_path)                   # the recorded store, from anywhere
    _train(capsys, "--resume", run, "--epochs", "3", "--no-eval")
    records = read_metrics(run / "metrics.jsonl")
    assert _history(client, run_id, "bound/train") == [
        (rec["epoch"], pytest.approx(rec["train_bound"], rel=1e-12)) for rec in records]
    assert [s for s, _ in _history(client, run_id, "bound/train")] == [1, 2, 3]
    assert not (tmp_path / "mlflow.db").exists()


def test_mlflow_file_uri_store_or_one_line_refusal(tiny_data, tmp_path, capsys, monkeypatch):
    """A ``file:`` store in tmp_path works where MLflow takes it (MLflow 3 only with
    MLFLOW_ALLOW_FILE_STORE=true); where MLflow refuses it, one line and no run directory."""
    pytest.importorskip("mlflow", reason="mlflow is not installed: pip install 'vaekit[mlflow]'")
    from mlflow.tracking import MlflowClient
    store = (tmp_path / "mlruns").as_uri()
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)
    try:
        MlflowClient(store).search_experiments()
        refused = False
    except Exception:
        refused = True
    run = tmp_path / "refused"
    if refused:
        code, _, err = run_cli(capsys, "train", "--data", tiny_data, "--out", run, *TINY,
                               "--tracking", "mlflow", "--tracking-uri", store)
        assert code == 1 and len(err.strip().splitlines()) == 1, err
        assert f"--tracking-uri {store}: MLflow cannot use this store" in err
        assert not run.exists()
        monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    run = tmp_path / "run"
    _train(capsys, "--data", tiny_data, "--out", run, "--tracking", "mlflow",
           "--tracking-uri", store, "--no-eval")
    run_id = json.loads((run / "tracking.json").read_text())["run_id"]
    assert [s for s, _ in _history(MlflowClient(store), run_id, "valid/ELBO")] == [1, 2]


def _scalars(log_dir: Path) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    acc = EventAccumulator(str(log_dir))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def test_tensorboard_tags_resume_without_duplicates_and_legacy_config(tiny_data, tmp_path,
                                                                      capsys):
    pytest.importorskip("tensorboard", reason="pip install 'vaekit[tensorboard]'")
    run = tmp_path / "run"
    _train(capsys, "--data", tiny_data, "--out", run, "--tracking", "tensorboard",
           "--monitor-every", "1", "--monitor-num-samples", "5", "--no-eval")
    tags = _scalars(run / "tensorboard")
    assert set(tags) == {"bound/train", "valid/ELBO", "lr", "monitor/L_5"}
    records = read_metrics(run / "metrics.jsonl")
    assert tags["bound/train"] == [(r["epoch"], pytest.approx(r["train_bound"], rel=1e-6))
                                   for r in records]
    assert [s for s, _ in tags["monitor/L_5"]] == [1, 2]
    assert not (run / "tracking.json").exists()

    # a config.json written before tracking was an option resumes as before: TensorBoard
    config = json.loads((run / "config.json").read_text())
    for name in ("tracking", "tracking_uri", "experiment"):
        del config["train"][name]
    (run / "config.json").write_text(json.dumps(config))
    _train(capsys, "--resume", run, "--epochs", "3", "--no-eval")
    assert json.loads((run / "config.json").read_text())["train"]["tracking"] == "tensorboard"
    records = read_metrics(run / "metrics.jsonl")
    tags = _scalars(run / "tensorboard")
    assert tags["bound/train"] == [(r["epoch"], pytest.approx(r["train_bound"], rel=1e-6))
                                   for r in records]
    assert [s for s, _ in tags["lr"]] == [1, 2, 3]


def test_tracking_none_writes_no_tensorboard(tiny_data, tmp_path, capsys):
    run = tmp_path / "run"
    _train(capsys, "--data", tiny_data, "--out", run, "--tracking", "none", "--no-eval")
    assert not (run / "tensorboard").exists() and not (run / "tracking.json").exists()
    assert json.loads((run / "config.json").read_text())["train"]["tracking"] == "none"


def test_python_api_takes_the_tracking_setting(tiny_data, tmp_path):
    import vaekit
    from vaekit.data import load_dataset
    data = load_dataset(str(tiny_data))
    model = vaekit.VAE(data.event_shape, latent_dim=2, hidden_sizes=[8])
    vaekit.train(model, data, vaekit.TrainConfig(epochs=1, tracking="none"),
                 run_dir=tmp_path / "none", progress=False)
    assert (tmp_path / "none" / "metrics.jsonl").is_file()
    assert not (tmp_path / "none" / "tensorboard").exists()
    with pytest.raises(vaekit.ConfigError, match="tracking must be one of auto, none"):
        vaekit.train(model, data, vaekit.TrainConfig(tracking="wandb"),
                     run_dir=tmp_path / "bad", progress=False)
    assert not (tmp_path / "bad").exists()
    with pytest.raises(vaekit.ConfigError, match="give run_dir, or tracking='none'"):
        vaekit.train(model, data, vaekit.TrainConfig(tracking="tensorboard"), progress=False)


@pytest.mark.parametrize("backend, package, label", [("mlflow", "mlflow", "MLflow"),
                                                     ("tensorboard", "tensorboard",
                                                      "TensorBoard")])
def test_a_missing_package_is_one_line_exit_2_and_nothing_written(
        backend, package, label, tiny_data, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, package, None)          # `import package` now fails
    run = tmp_path / "run"
    code, out, err = run_cli(capsys, "train", "--data", tiny_data, "--out", run, *TINY,
                             "--tracking", backend)
    assert code == 2
    assert err == (f"vaekit train: error: --tracking {backend} needs {label}: "
                   f"pip install 'vaekit[{package}]'\n")
    assert not run.exists() and out == ""


def test_auto_without_tensorboard_tracks_nothing(tiny_data, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorboard", None)
    run = tmp_path / "run"
    _train(capsys, "--data", tiny_data, "--out", run, "--no-eval")
    assert json.loads((run / "config.json").read_text())["train"]["tracking"] == "none"
    assert not (run / "tensorboard").exists()


def test_bad_tracking_settings_are_one_line_before_anything_is_written(tiny_data, tmp_path,
                                                                       capsys):
    run = tmp_path / "run"
    cases = [(["--tracking-uri", "http://127.0.0.1:1"],
              "--tracking-uri applies to MLflow; add --tracking mlflow"),
             (["--tracking", "tensorboard", "--experiment", "x"],
              "--experiment applies to MLflow"),
             (["--tracking", "wandb"], "tracking must be one of auto, none, tensorboard, mlflow")]
    try:
        import mlflow  # noqa: F401
        cases.append((["--tracking", "mlflow", "--tracking-uri",
                       f"http://127.0.0.1:{_free_port()}"], "no MLflow server answers there"))
    except ImportError:
        pass
    for extra, message in cases:
        code, _, err = run_cli(capsys, "train", "--data", tiny_data, "--out", run, *TINY, *extra)
        assert code == 1 and message in err and len(err.strip().splitlines()) == 1, err
        assert not run.exists()
