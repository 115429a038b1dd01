"""Shared fixtures. Tests that need ../shared/data skip with a reason in a fresh clone."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("VAEKIT_SHARED_DATA", REPO.parent / "shared" / "data"))
BINARIZED_MNIST_NPZ = SHARED_DATA / "binarized_mnist.npz"

needs_shared_data = pytest.mark.skipif(
    not BINARIZED_MNIST_NPZ.is_file(),
    reason=f"{BINARIZED_MNIST_NPZ} not found: a fresh clone has no ../shared/data "
           "(CI provides it; or set VAEKIT_SHARED_DATA)")


# a training run of a couple of seconds on the command line
TINY = ["--epochs", "2", "--latent-dim", "2", "--hidden-sizes", "16", "--batch-size", "32",
        "--eval-num-samples", "20", "--no-progress"]


def run_cli(capsys, *argv):
    """``vaekit ARGV...`` in-process: ``(exit code, stdout, stderr)``."""
    from vaekit.cli import main
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Never read or write the user's cache, and never see their VAEKIT_DATA_DIR."""
    monkeypatch.setenv("VAEKIT_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
    monkeypatch.delenv("VAEKIT_DATA_DIR", raising=False)


@pytest.fixture(scope="session")
def mnist5k():
    from vaekit.data import load_dataset
    return load_dataset("mnist-5k")


def make_binary_images(n: int = 240, side: int = 8, seed: int = 0) -> np.ndarray:
    """Binary 'images' with structure: a random bar per image plus noise, (n, side, side)."""
    rng = np.random.default_rng(seed)
    x = (rng.random((n, side, side)) < 0.05)
    rows = rng.integers(0, side, n)
    cols = rng.integers(0, side, n)
    horizontal = rng.random(n) < 0.5
    for i in range(n):
        if horizontal[i]:
            x[i, rows[i], :] = True
        else:
            x[i, :, cols[i]] = True
    return x.astype(np.uint8)


@pytest.fixture
def tiny_npz(tmp_path) -> Path:
    """A small user dataset: 240 binary 8x8 images with labels, as one array in an .npz."""
    x = make_binary_images()
    path = tmp_path / "tiny.npz"
    np.savez(path, x=x.astype(bool), labels=np.arange(len(x)) % 2)
    return path


@pytest.fixture(scope="module")
def grey_npz(tmp_path_factory) -> Path:
    """240 8x8 grey-level images (uint8), for training with dynamic binarization."""
    rng = np.random.default_rng(1)
    x = make_binary_images().astype(np.int64) * 180 + rng.integers(0, 70, (240, 8, 8))
    path = tmp_path_factory.mktemp("grey") / "grey.npz"
    np.savez(path, x=x.astype(np.uint8))
    return path


@pytest.fixture
def double_precision():
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)


def whole_and_resumed(dataset, model: dict, tmp_path, total: int, first: int):
    """Train ``model`` on ``dataset`` for ``total`` epochs in one go (``tmp_path/whole``) and
    for ``first`` epochs then ``vaekit train --resume --epochs total`` (``tmp_path/parts``);
    returns the two runs' ``last.safetensors`` as ``((tensors, meta), (tensors, meta))``."""
    from vaekit.cli import main
    from vaekit.config import Config
    from vaekit.io import load_tensors
    from vaekit.runs import train_run
    from vaekit.training import LAST

    def config(epochs):
        return Config.from_dict({"data": {"dataset": str(dataset)},
                                 "model": {"hidden_sizes": [16], "latent_dim": 2, **model},
                                 "train": {"batch_size": 32, "seed": 3, "device": "cpu",
                                           "epochs": epochs}})

    for epochs, out in ((total, "whole"), (first, "parts")):
        train_run(config(epochs), tmp_path / out, progress=False, evaluate_after=False,
                  figures=False, log=lambda msg: None)
    assert main(["train", "--resume", str(tmp_path / "parts"), "--epochs", str(total),
                 "--no-eval", "--no-progress", "--threads", "1"]) == 0
    return (load_tensors(tmp_path / "whole" / LAST), load_tensors(tmp_path / "parts" / LAST))
