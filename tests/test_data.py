"""Datasets: the embedded default, binarized MNIST, users' arrays, and their errors."""

from __future__ import annotations

import hashlib
import warnings

import numpy as np
import pytest
import torch
from conftest import BINARIZED_MNIST_NPZ, SHARED_DATA, needs_shared_data

from vaekit.data import (
    BINARIZED_MNIST_SHA256,
    Dataset,
    binarize_fixed,
    check_likelihood,
    eval_split,
    load_array_file,
    load_binarized_mnist,
    load_dataset,
    read_amat,
    resolve_binarization,
)
from vaekit.errors import ConfigError, DataError, DataNotFoundError


# ----------------------------------------------------------------------------- mnist-5k
def test_mnist_5k_splits_ranges_and_labels(mnist5k):
    d = mnist5k
    assert (d.train.shape, d.valid.shape, d.test.shape) == ((4000, 1, 28, 28), (500, 1, 28, 28),
                                                           (500, 1, 28, 28))
    assert d.train.dtype == torch.float32 and d.image_shape == (28, 28)
    assert d.raw_train.dtype == torch.uint8 and d.divisor == 255     # stored as grey levels
    assert float(d.train.min()) == 0.0 and float(d.train.max()) == 1.0
    assert not d.binary                                   # grey levels
    assert set(d.test_labels.tolist()) == set(range(10))
    assert d.train_labels.shape == (4000,)
    # the split is a fixed permutation: loading again gives the same tensors
    again = load_dataset("mnist-5k")
    assert torch.equal(again.test, d.test) and torch.equal(again.train_labels, d.train_labels)
    # and no example is in two splits
    rows = {tuple(r) for r in d.test[:, 200:260].tolist()}
    assert not any(tuple(r) in rows for r in d.valid[:, 200:260].tolist() if any(r))


# ----------------------------------------------------------------------------- binarized MNIST
def _write_amat(a: np.ndarray, path) -> None:
    """The original .amat format: '0 1 0 ... 0\\n' per example."""
    out = np.full((a.shape[0], 2 * a.shape[1]), ord(" "), dtype=np.uint8)
    out[:, 0::2] = a + ord("0")
    out[:, -1] = ord("\n")
    path.write_bytes(out.tobytes())


@needs_shared_data
def test_binarized_mnist_from_npz_via_data_dir_and_env(monkeypatch):
    d = load_binarized_mnist(SHARED_DATA, download_missing=False)
    assert (d.train.shape, d.valid.shape, d.test.shape) == ((50000, 1, 28, 28),
                                                           (10000, 1, 28, 28),
                                                           (10000, 1, 28, 28))
    assert d.raw_train.dtype == torch.uint8
    assert d.binary
    assert 0.12 < float(d.train.mean()) < 0.14            # MNIST ink density
    monkeypatch.setenv("VAEKIT_DATA_DIR", str(SHARED_DATA))
    assert torch.equal(load_dataset("binarized-mnist").test, d.test)


@needs_shared_data
def test_amat_files_reproduce_the_published_checksums_and_load(tmp_path):
    """The shared arrays written back as .amat have the original files' sha256, which is
    what the downloader checks: the digests in vaekit are those of the real files."""
    with np.load(BINARIZED_MNIST_NPZ) as f:
        arrays = {s: f[s] for s in ("train", "valid", "test")}
    for split, a in arrays.items():
        p = tmp_path / f"binarized_mnist_{split}.amat"
        _write_amat(a, p)
        assert hashlib.sha256(p.read_bytes()).hexdigest() == BINARIZED_MNIST_SHA256[split]
    d = load_binarized_mnist(tmp_path, download_missing=False)
    assert torch.equal(d.valid.flatten(1), torch.from_numpy(arrays["valid"].astype(np.float32)))


def test_binarized_mnist_missing_without_download_names_where_it_looked(tmp_path):
    with pytest.raises(DataNotFoundError, match="binarized_mnist.npz"):
        load_binarized_mnist(tmp_path, download_missing=False)


def test_truncated_binarized_mnist_npz_is_a_clear_error(tmp_path):
    p = tmp_path / "binarized_mnist.npz"
    np.savez(p, train=np.zeros((5, 784), np.uint8), valid=np.zeros((5, 784), np.uint8),
             test=np.zeros((5, 784), np.uint8))
    raw = p.read_bytes()
    p.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(DataError, match="truncated"):
        load_binarized_mnist(tmp_path, download_missing=False)
    np.savez(p, train=np.zeros((5, 784), np.uint8), valid=np.zeros((5, 784), np.uint8),
             test=np.zeros((5, 784), np.uint8))
    with pytest.raises(DataError, match=r"shape \(5, 784\), expected \(50000, 784\)"):
        load_binarized_mnist(tmp_path, download_missing=False)


def test_read_amat_fast_path_fallback_and_truncation(tmp_path):
    a = (np.random.default_rng(0).random((7, 784)) < 0.3).astype(np.uint8)
    p = tmp_path / "x.amat"
    _write_amat(a, p)
    np.testing.assert_array_equal(read_amat(p), a)
    # other whitespace goes through numpy's parser
    p.write_text("\n".join("\t".join(map(str, r)) + "  " for r in a.tolist()) + "\n")
    np.testing.assert_array_equal(read_amat(p), a)
    # a file cut in the middle of a line
    _write_amat(a, p)
    p.write_bytes(p.read_bytes()[:-100])
    with pytest.raises(DataError, match="truncated"):
        read_amat(p)
    with pytest.raises(DataNotFoundError):
        read_amat(tmp_path / "nope.amat")


# ----------------------------------------------------------------------------- user arrays
def test_single_array_is_split_80_10_10_with_labels(tiny_npz):
    d = load_array_file(tiny_npz)
    assert (len(d.train), len(d.valid), len(d.test)) == (192, 24, 24)
    assert d.dim == 64 and d.image_shape == (8, 8) and d.binary
    assert d.test_labels is not None and d.test_labels.shape == (24,)
    assert torch.equal(load_array_file(tiny_npz).valid, d.valid)   # fixed permutation


def test_npz_with_named_splits_and_missing_test(tmp_path):
    rng = np.random.default_rng(0)
    p = tmp_path / "s.npz"
    np.savez(p, train=rng.random((50, 3)), validation=rng.random((10, 3)),
             test=rng.random((7, 3)))
    d = load_array_file(p)
    assert (len(d.train), len(d.valid), len(d.test)) == (50, 10, 7)
    assert d.image_shape is None
    np.savez(p, train=rng.random((100, 3)))
    d = load_array_file(p)
    assert (len(d.train), len(d.valid), len(d.test)) == (80, 10, 10)
    np.savez(p, train=rng.random((100, 3)), test=rng.random((9, 3)))
    d = load_array_file(p)
    assert (len(d.train), len(d.valid), len(d.test)) == (90, 10, 9)


def test_npy_uint8_images_are_scaled_and_keep_their_shape(tmp_path):
    a = np.random.default_rng(0).integers(0, 256, (30, 1, 5, 4), dtype=np.uint8)
    p = tmp_path / "img.npy"
    np.save(p, a)
    d = load_array_file(p)
    assert d.image_shape == (5, 4) and d.dim == 20
    assert d.event_shape == (1, 5, 4) and d.raw_train.dtype == torch.uint8
    assert float(d.train.max()) <= 1.0
    all_rows = torch.cat([d.train, d.valid, d.test]).flatten(1) * 255
    assert torch.allclose(all_rows.sort(0).values,
                          torch.from_numpy(a.reshape(30, 20).astype(np.float32)).sort(0).values)


@pytest.mark.parametrize("array,match", [
    (np.zeros(10), r"shape \(10,\); expected \(N, D\)"),
    (np.array([[0.1, np.nan], [0.2, 0.3]] * 5), "NaN or infinite values in 5 rows"),
    (np.array([[0.1, np.inf], [0.2, 0.3]] * 5), "NaN or infinite"),
    (np.array([["a", "b"]] * 5), "numeric"),
])
def test_bad_arrays_give_clear_errors(tmp_path, array, match):
    p = tmp_path / "bad.npy"
    np.save(p, array)
    with pytest.raises(DataError, match=match):
        load_array_file(p)


def test_bad_files_give_clear_errors(tmp_path):
    with pytest.raises(DataNotFoundError, match="does not exist"):
        load_dataset(str(tmp_path / "missing.npz"))
    p = tmp_path / "x.csv"
    p.write_text("1,2\n")
    with pytest.raises(DataError, match=".npy or .npz"):
        load_array_file(p)
    p = tmp_path / "two.npz"
    np.savez(p, a=np.zeros((5, 2)), b=np.zeros((5, 2)))
    with pytest.raises(DataError, match="name them train/valid/test"):
        load_array_file(p)
    np.savez(p, train=np.zeros((20, 2)), test=np.zeros((5, 3)))
    with pytest.raises(DataError, match="3 columns but train has 2"):
        load_array_file(p)
    np.savez(p, x=np.zeros((20, 2)), labels=np.zeros(19))
    with pytest.raises(DataError, match="19 labels for 20 examples"):
        load_array_file(p)
    p = tmp_path / "trunc.npy"
    np.save(p, np.zeros((100, 10)))
    p.write_bytes(p.read_bytes()[:500])
    with pytest.raises(DataError, match="truncated"):
        load_array_file(p)


# ----------------------------------------------------------------------------- likelihoods
def _ds(x):
    x = torch.as_tensor(x, dtype=torch.float32)
    return Dataset("toy", x, x, x)


def test_bernoulli_needs_values_in_unit_interval_and_names_the_fix():
    with pytest.raises(DataError, match=r"\[0, 255\].*divide by 255.*--likelihood gaussian"):
        check_likelihood(_ds([[0.0, 255.0]]), "bernoulli")
    with pytest.raises(DataError, match=r"\[-1, 1\].*rescale"):
        check_likelihood(_ds([[-1.0, 1.0]]), "bernoulli")
    check_likelihood(_ds([[-1.0, 3.0]]), "gaussian")
    check_likelihood(_ds([[0.0, 0.5, 1.0]]), "bernoulli")


def test_binarization_resolution():
    grey, binary = _ds([[0.0, 0.5]]), _ds([[0.0, 1.0]])
    assert resolve_binarization("auto", grey, "bernoulli") == "dynamic"
    assert resolve_binarization("auto", binary, "bernoulli") == "none"
    assert resolve_binarization("auto", grey, "gaussian") == "none"
    with pytest.raises(ConfigError, match="needs --likelihood bernoulli"):
        resolve_binarization("dynamic", grey, "gaussian")
    with pytest.warns(UserWarning, match="not a normalised density"):
        assert resolve_binarization("none", grey, "bernoulli") == "none"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        resolve_binarization("none", binary, "bernoulli")


def test_evaluation_data_are_binarized_once_with_a_fixed_seed(mnist5k):
    a = eval_split(mnist5k, "test", "dynamic")
    b = eval_split(mnist5k, "test", "dynamic")
    assert torch.equal(a, b) and set(a.unique().tolist()) == {0.0, 1.0}
    assert abs(float(a.mean()) - float(mnist5k.test.mean())) < 0.005
    assert torch.equal(eval_split(mnist5k, "test", "none"), mnist5k.test)
    assert not torch.equal(binarize_fixed(mnist5k.test, seed=1), a)


def test_splits_are_binarized_with_independent_streams():
    """vaekit 0.1 binarized every split with seed 0, so row i of each split saw the same
    uniforms; each split now has its own generator (the test split keeps seed 0)."""
    half = torch.full((400, 30), 0.5)
    ds = Dataset("half", half, half.clone(), half.clone())
    test, valid, train = (eval_split(ds, s, "dynamic") for s in ("test", "valid", "train"))
    assert torch.equal(test, binarize_fixed(half, 0))              # as published numbers were
    for a, b in ((test, valid), (test, train), (valid, train)):
        agree = float((a == b).double().mean())
        assert abs(agree - 0.5) < 0.03, agree                       # independent: 1/2 agree


def test_an_empty_array_is_one_clear_error(tmp_path):
    p = tmp_path / "empty.npz"
    np.savez(p, train=np.zeros((0, 784), np.float32))
    with pytest.raises(DataError, match=r"empty.npz\['train'\] is empty \(shape \(0, 784\)\)"):
        load_array_file(p)


def test_image_arrays_keep_their_channels(tmp_path):
    rng = np.random.default_rng(0)
    for shape, event in (((20, 6, 5), (1, 6, 5)), ((20, 1, 6, 5), (1, 6, 5)),
                         ((20, 6, 5, 1), (1, 6, 5)), ((20, 3, 6, 5), (3, 6, 5)),
                         ((20, 6, 5, 3), (3, 6, 5)), ((20, 30), (30,))):
        a = rng.integers(0, 256, shape, dtype=np.uint8)
        p = tmp_path / "a.npy"
        np.save(p, a)
        d = load_array_file(p)
        assert d.event_shape == event and d.raw_train.dtype == torch.uint8, shape
        if len(shape) == 4 and shape[3] == 3:                       # channels moved first
            values = torch.cat([d.raw_train, d.raw_valid, d.raw_test]).permute(0, 2, 3, 1)
            assert sorted(map(tuple, values.reshape(20, -1).tolist())) == \
                sorted(map(tuple, a.reshape(20, -1).tolist()))
    p = tmp_path / "b.npy"
    np.save(p, np.zeros((5, 2, 6, 7)))
    with pytest.raises(DataError, match="1 or 3 channels"):
        load_array_file(p)
    np.save(p, np.zeros((5, 2, 3, 4, 5)))
    with pytest.raises(DataError, match=r"shape \(5, 2, 3, 4, 5\); expected"):
        load_array_file(p)
