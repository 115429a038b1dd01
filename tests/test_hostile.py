"""Hostile inputs: every one gives one clear line and a non-zero exit, writes nothing, and
never a traceback; random configuration files and option values likewise (hypothesis)."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest
from conftest import TINY, run_cli

hypothesis = pytest.importorskip("hypothesis", reason="property tests need hypothesis "
                                                      "(pip install -e '.[test]')")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


def _one_line(code, err):
    lines = [line for line in err.splitlines() if line.strip()]
    assert code in (1, 2), (code, err)
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def _array(tmp_path, name, **arrays):
    p = tmp_path / name
    if name.endswith(".npy"):
        np.save(p, arrays["x"])
    else:
        np.savez(p, **arrays)
    return p


ARRAYS = [
    ("inf.npy", {"x": np.where(np.eye(12) > 0, np.inf, 0.5)}, "NaN or infinite values"),
    ("object.npy", {"x": np.array([[1, "a"], [2, "b"]] * 10, dtype=object)},
     "never unpickles"),
    ("complex.npy", {"x": np.ones((20, 4), dtype=np.complex64)}, "numeric array"),
    ("flat.npy", {"x": np.zeros(30)}, "expected (N, D)"),
    ("five.npy", {"x": np.zeros((2, 2, 2, 2, 2))}, "expected (N, D)"),
    ("widths.npz", {"train": np.zeros((20, 5)), "test": np.zeros((5, 6))},
     "test has 6 columns but train has 5"),
    ("labels.npz", {"x": np.zeros((20, 5)), "labels": np.arange(7)}, "7 labels for 20"),
]


@pytest.mark.parametrize("name,arrays,expected", ARRAYS, ids=[a[0] for a in ARRAYS])
def test_hostile_arrays(name, arrays, expected, tmp_path, capsys):
    p = _array(tmp_path, name, **arrays)
    code, _, err = run_cli(capsys, "train", "--data", p, "--out", tmp_path / "r", *TINY)
    assert expected in _one_line(code, err)
    assert not (tmp_path / "r").exists()


def test_hostile_tables_and_folders(tmp_path, capsys):
    ragged = tmp_path / "ragged.csv"
    ragged.write_text("a,b,c\n1,2,3\n4,5\n6,7,8,9\n" + "1,2,3\n" * 20)
    code, _, err = run_cli(capsys, "train", "--data", ragged, "--out", tmp_path / "r", *TINY)
    assert "ragged.csv" in _one_line(code, err)
    folder = tmp_path / "imgs"
    folder.mkdir()
    (folder / "notes.txt").write_text("not an image")
    code, _, err = run_cli(capsys, "train", "--data", folder, "--out", tmp_path / "r", *TINY)
    assert "notes.txt is not an image" in _one_line(code, err)
    fake = folder / "fake.png"
    (folder / "notes.txt").unlink()
    fake.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    code, _, err = run_cli(capsys, "train", "--data", folder, "--out", tmp_path / "r", *TINY)
    assert "fake.png" in _one_line(code, err)
    assert not (tmp_path / "r").exists()


def test_hostile_config_files(tmp_path, capsys):
    cases = [("[nonsense]\nx = 1\n", "unknown configuration section 'nonsense'"),
             ("[train]\nepochz = 3\n", "'epochz' is not an option"),
             ("[train]\nepochs = \"many\"\n", "epochs must be an integer"),
             ("[model]\nlatent_dim = -3\n", "latent_dim must be a positive integer"),
             ("[data\n", "config.toml")]
    for text, expected in cases:
        p = tmp_path / "config.toml"
        p.write_text(text)
        code, _, err = run_cli(capsys, "train", "--config", p, "--out", tmp_path / "r",
                               "--no-progress")
        assert expected in _one_line(code, err), text
    assert not (tmp_path / "r").exists()


@pytest.fixture
def trained(tiny_npz, tmp_path, capsys):
    out = tmp_path / "run"
    code, _, err = run_cli(capsys, "train", "--data", tiny_npz, "--out", out, *TINY)
    assert code == 0, err
    return out


def _safetensors(header: dict, payload: bytes = b"") -> bytes:
    h = json.dumps(header).encode()
    return struct.pack("<Q", len(h)) + h + payload


def test_hostile_checkpoints(trained, tmp_path, capsys):
    best = trained / "best.safetensors"
    good = best.read_bytes()
    crafted = [
        _safetensors({"w": {"dtype": "F32", "shape": [2 ** 40, 2 ** 40],
                            "data_offsets": [0, 16]}}, b"\x00" * 16),     # huge shape
        _safetensors({"w": {"dtype": "Q7", "shape": [2], "data_offsets": [0, 8]}},
                     b"\x00" * 8),                                         # no such dtype
        struct.pack("<Q", 2 ** 62) + b"{}",                                # header too long
        good[: len(good) // 2],                                            # truncated
    ]
    for data in crafted:
        best.write_bytes(data)
        code, _, err = run_cli(capsys, "evaluate", trained, "--num-samples", "2")
        assert "best.safetensors" in _one_line(code, err)
    best.write_bytes(good)
    # a checkpoint of another model family
    other = tmp_path / "gmm"
    code, _, err = run_cli(capsys, "train", "--data", "gaussian-mixture-2d", "--model", "gmm",
                           "--num-components", "2", "--out", other, "--no-progress")
    assert code == 0, err
    best.write_bytes((other / "best.safetensors").read_bytes())
    code, _, err = run_cli(capsys, "evaluate", trained, "--num-samples", "2")
    assert "does not fit" in _one_line(code, err)


# --------------------------------------------------------------------------- properties
_values = st.one_of(st.integers(-10**6, 10**6), st.floats(allow_nan=True), st.text(max_size=12),
                    st.booleans(), st.none(), st.lists(st.integers(-5, 500), max_size=4))
_fields = st.sampled_from(["epochs", "batch_size", "lr", "latent_dim", "hidden_sizes",
                           "likelihood", "objective", "num_samples", "beta", "patience",
                           "activation", "binarization", "standardize", "model", "prior",
                           "dataset", "net", "decoder_std", "lr_schedule", "nonsense"])
_sections = st.sampled_from(["data", "model", "train", "bogus"])


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.dictionaries(_sections, st.dictionaries(_fields, _values, max_size=3), max_size=3))
def test_random_config_files_fail_cleanly_or_validate(tmp_path_factory, capsys, config):
    """Any JSON configuration is refused with one line: by validation, or else by the data
    loading that follows it (the dataset is a missing file), before anything is written."""
    d = tmp_path_factory.mktemp("cfg")
    p = d / "config.json"
    p.write_text(json.dumps(config, allow_nan=True))
    code, _, err = run_cli(capsys, "train", "--config", p, "--data", str(d / "missing.npy"),
                           "--out", d / "r", "--no-progress")
    line = _one_line(code, err)
    assert "error" in line
    assert not (d / "r").exists()


_flags = st.sampled_from(["--epochs", "--batch-size", "--lr", "--latent-dim", "--hidden-sizes",
                          "--likelihood", "--objective", "--num-samples", "--patience",
                          "--beta", "--threads", "--seed", "--standardize", "--columns",
                          "--image-size", "--valid-num-samples", "--conv-channels"])


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(_flags, st.text(max_size=8)), min_size=1, max_size=3))
def test_random_option_values_fail_cleanly(tmp_path_factory, capsys, options):
    d = tmp_path_factory.mktemp("cli")
    argv = ["train", "--data", str(d / "missing.npy"), "--out", str(d / "r"), "--no-progress"]
    for flag, value in options:
        argv += [flag, value]
    code, _, err = run_cli(capsys, *argv)
    _one_line(code, err)
    assert not (d / "r").exists()


def test_a_flipped_byte_in_a_checkpoint_is_caught(trained, capsys):
    for name in ("best.safetensors", "last.safetensors"):
        p = trained / name
        good = p.read_bytes()
        data = bytearray(good)
        data[-5] ^= 0x01                      # one bit of the last tensor's data
        p.write_bytes(bytes(data))
        if name == "best.safetensors":
            code, _, err = run_cli(capsys, "evaluate", trained, "--num-samples", "2")
            line = _one_line(code, err)
            assert "best.safetensors is corrupt" in line and "digest" in line
        else:
            code, _, err = run_cli(capsys, "train", "--resume", trained, "--epochs", "3",
                                   "--no-progress")
            line = _one_line(code, err)
            assert "last.safetensors is corrupt" in line
            assert "best.safetensors (epoch 2) is intact" in line
        p.write_bytes(good)


def test_a_run_in_use_is_refused_and_a_dead_holder_s_lock_is_taken_over(trained, capsys):
    import subprocess
    import sys
    import time
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from vaekit.io import run_lock\n"
         "with run_lock(sys.argv[1], 'train'):\n    print('held', flush=True)\n"
         "    time.sleep(60)", str(trained)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        code, _, err = run_cli(capsys, "train", "--resume", trained, "--epochs", "3",
                               "--no-progress")
        line = _one_line(code, err)
        assert f"is in use by vaekit train (pid {holder.pid}" in line
        code, _, err = run_cli(capsys, "evaluate", trained, "--num-samples", "2")
        assert f"pid {holder.pid}" in _one_line(code, err)
    finally:
        holder.kill()                         # SIGKILL: the lock is left behind, stale
        holder.wait()
    time.sleep(0.1)
    code, _, err = run_cli(capsys, "train", "--resume", trained, "--epochs", "3",
                           "--no-progress", "--no-eval")
    assert code == 0, err
