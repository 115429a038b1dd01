"""Image datasets: the idx reader, MNIST / Fashion-MNIST (shared files, tiny files, the
downloader with its mirrors), CIFAR-10 from tiny archives in its binary format, colored-mnist."""

from __future__ import annotations

import dataclasses
import functools
import gzip
import hashlib
import http.server
import io
import tarfile
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import SHARED_DATA

import vaekit.image_data as image_data
from vaekit.data import DATASETS, binarized_mnist_dirs, dataset_dirs, load_dataset
from vaekit.download import cache_dir, download
from vaekit.errors import ChecksumError, DataError, DataNotFoundError
from vaekit.image_data import (
    IDX_FILES,
    IDX_IMAGES,
    IDX_LABELS,
    colorize,
    load_cifar10,
    load_colored_mnist,
    load_fashion_mnist,
    load_mnist,
    read_idx,
)

MNIST_DIR = SHARED_DATA / "mnist"
FASHION_DIR = SHARED_DATA / "fashion-mnist"


def _has_idx_files(d: Path) -> bool:
    return all((d / n).is_file() or (d / f"{n}.gz").is_file() for n in IDX_FILES.values())


def _needs(d: Path):
    return pytest.mark.skipif(
        not _has_idx_files(d),
        reason=f"{d} does not hold the four idx files: a fresh clone has no ../shared/data "
               "(CI provides it; or set VAEKIT_SHARED_DATA)")


needs_mnist, needs_fashion = _needs(MNIST_DIR), _needs(FASHION_DIR)


# ----------------------------------------------------------------------------- helpers
def idx_bytes(a: np.ndarray) -> bytes:
    """``a`` (uint8, 1 or 3 dimensions) in the idx format."""
    magic = {1: IDX_LABELS, 3: IDX_IMAGES}[a.ndim]
    header = magic.to_bytes(4, "big") + b"".join(n.to_bytes(4, "big") for n in a.shape)
    return header + a.astype(np.uint8).tobytes()


def tiny_mnist(n_train: int = 7, n_test: int = 3, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"train_images": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
            "train_labels": rng.integers(0, 10, n_train, dtype=np.uint8),
            "test_images": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
            "test_labels": rng.integers(0, 10, n_test, dtype=np.uint8)}


def write_tiny_mnist(d: Path, arrays: dict[str, np.ndarray], gz: bool = True) -> dict[str, bytes]:
    """Write the four files into ``d``; returns each file's bytes, by key."""
    d.mkdir(parents=True, exist_ok=True)
    out = {}
    for key, name in IDX_FILES.items():
        raw = idx_bytes(arrays[key])
        if gz:
            raw, name = gzip.compress(raw, mtime=0), f"{name}.gz"
        (d / name).write_bytes(raw)
        out[key] = raw
    return out


def tiny_spec(spec, mirrors, files: dict[str, bytes], **sizes):
    return dataclasses.replace(
        spec, mirrors=tuple(mirrors),
        md5={k: hashlib.md5(b).hexdigest() for k, b in files.items()},
        sha256={k: hashlib.sha256(b).hexdigest() for k, b in files.items()},
        **({"n_train": 7, "n_test": 3, "n_valid": 2} | sizes))


@pytest.fixture
def server(tmp_path):
    """A local HTTP server on 127.0.0.1 serving tmp_path/www."""
    root = tmp_path / "www"
    root.mkdir()

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(Quiet, directory=str(root)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


UNREACHABLE = "http://127.0.0.1:9/"           # the discard port: connection refused


# ----------------------------------------------------------------------------- registry
def test_the_names_are_registered_and_search_directories():
    assert {"mnist", "fashion-mnist", "cifar10", "colored-mnist"} <= set(DATASETS)
    d = Path("/data")
    assert dataset_dirs(d, ("mnist", "")) == [d / "mnist", d, cache_dir() / "mnist", cache_dir()]
    assert dataset_dirs(d) == binarized_mnist_dirs(d) == [d, cache_dir()]


# ----------------------------------------------------------------------------- shared data
@pytest.fixture(scope="module")
def mnist():
    return load_mnist(SHARED_DATA, download_missing=False)


@needs_mnist
def test_mnist_from_the_shared_files(mnist, mnist5k, monkeypatch):
    d = mnist
    assert (d.raw_train.shape, d.raw_valid.shape, d.raw_test.shape) == (
        (50000, 1, 28, 28), (10000, 1, 28, 28), (10000, 1, 28, 28))
    assert d.raw_train.dtype == torch.uint8 and d.divisor == 255 and d.image_shape == (28, 28)
    assert all(y.dtype == torch.int64 for y in (d.train_labels, d.valid_labels, d.test_labels))
    # the first 50,000 training images train, the last 10,000 validate
    train = read_idx(MNIST_DIR / "train-images-idx3-ubyte", IDX_IMAGES)
    assert np.array_equal(d.raw_train[:, 0].numpy(), train[:50000])
    assert np.array_equal(d.raw_valid[:, 0].numpy(), train[50000:])
    # the class counts of the shared README
    counts = np.bincount(np.concatenate([d.train_labels.numpy(), d.valid_labels.numpy()]))
    assert counts.tolist() == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    assert np.bincount(d.test_labels.numpy()).tolist() == [
        980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    # grey levels in [0, 1], not binary
    assert d.value_range("test") == (0.0, 1.0) and not d.binary and d.levels == 256
    assert len(torch.unique(d.raw_test[:100])) > 100
    # rows in the right order: mnist-5k's digits are rows of this training set
    rows = {r.tobytes() for r in train.reshape(60000, -1)}
    assert all(r.tobytes() in rows for r in mnist5k.raw_test[:20].reshape(20, -1).numpy())
    # found through load_dataset and $VAEKIT_DATA_DIR too, also as D/mnist
    monkeypatch.setenv("VAEKIT_DATA_DIR", str(SHARED_DATA))
    assert torch.equal(load_dataset("mnist").raw_test, d.raw_test)


@needs_fashion
def test_fashion_mnist_from_the_shared_files():
    d = load_fashion_mnist(SHARED_DATA, download_missing=False)
    assert (d.raw_train.shape, d.raw_valid.shape, d.raw_test.shape) == (
        (50000, 1, 28, 28), (10000, 1, 28, 28), (10000, 1, 28, 28))
    assert d.raw_train.dtype == torch.uint8 and d.divisor == 255
    assert d.test_labels.dtype == torch.int64
    counts = np.bincount(np.concatenate([d.train_labels.numpy(), d.valid_labels.numpy()]))
    assert counts.tolist() == [6000] * 10
    assert np.bincount(d.test_labels.numpy()).tolist() == [1000] * 10
    # the last 10,000 training labels validate
    labels = read_idx(FASHION_DIR / "train-labels-idx1-ubyte.gz", IDX_LABELS)
    assert np.array_equal(d.valid_labels.numpy(), labels[50000:])
    assert d.value_range("train") == (0.0, 1.0) and not d.binary


# ----------------------------------------------------------------------------- idx reader
@pytest.mark.parametrize("gz", [False, True])
def test_idx_files_read_back_exactly(tmp_path, gz):
    arrays = tiny_mnist()
    write_tiny_mnist(tmp_path, arrays, gz=gz)
    suffix = ".gz" if gz else ""
    for key, name in IDX_FILES.items():
        a = read_idx(tmp_path / f"{name}{suffix}")
        assert a.dtype == np.uint8 and np.array_equal(a, arrays[key])


def test_truncated_and_wrong_idx_files_name_the_file(tmp_path):
    raw = idx_bytes(tiny_mnist()["train_images"])
    cases = {"short": raw[:-5], "header": raw[:10], "tiny": raw[:2], "long": raw + b"\0",
             "short.gz": gzip.compress(raw)[:-20],
             "magic": b"\x00\x00\x0c\x03" + raw[4:]}           # 0x0c: 32-bit floats
    for name, content in cases.items():
        (tmp_path / name).write_bytes(content)
        with pytest.raises(DataError, match=f"{tmp_path / name}.*delete it to download it"):
            read_idx(tmp_path / name)
    with pytest.raises(DataError, match="magic number 0x00000c03"):
        read_idx(tmp_path / "magic")
    (tmp_path / "images").write_bytes(raw)
    with pytest.raises(DataError, match=r"images.*0x00000803, expected 0x00000801 \(labels\)"):
        read_idx(tmp_path / "images", IDX_LABELS)
    with pytest.raises(DataNotFoundError):
        read_idx(tmp_path / "absent")


def test_tiny_mnist_files_load_and_fashion_is_only_looked_up_in_its_folder(tmp_path,
                                                                           monkeypatch):
    arrays = tiny_mnist()
    files = write_tiny_mnist(tmp_path, arrays, gz=False)
    monkeypatch.setattr(image_data, "MNIST", tiny_spec(image_data.MNIST, [UNREACHABLE], files))
    d = load_mnist(tmp_path, download_missing=False)            # D/<file>, uncompressed
    assert np.array_equal(d.raw_train[:, 0].numpy(), arrays["train_images"][:5])
    assert np.array_equal(d.raw_valid[:, 0].numpy(), arrays["train_images"][5:])
    assert d.valid_labels.tolist() == arrays["train_labels"][5:].tolist()
    assert np.array_equal(d.raw_test[:, 0].numpy(), arrays["test_images"])
    # the same names in D/ are MNIST's: fashion-mnist looks only in D/fashion-mnist/
    monkeypatch.setattr(image_data, "FASHION_MNIST",
                        tiny_spec(image_data.FASHION_MNIST, [UNREACHABLE], files))
    with pytest.raises(DataNotFoundError, match="fashion-mnist not found in .*fashion-mnist"):
        load_fashion_mnist(tmp_path, download_missing=False)
    write_tiny_mnist(tmp_path / "fashion-mnist", tiny_mnist(seed=1))
    f = load_fashion_mnist(tmp_path, download_missing=False)
    assert np.array_equal(f.raw_test[:, 0].numpy(), tiny_mnist(seed=1)["test_images"])
    # a file of the wrong size for the dataset is named
    monkeypatch.setattr(image_data, "MNIST", dataclasses.replace(image_data.MNIST, n_train=8))
    with pytest.raises(DataError, match="train-images-idx3-ubyte holds images of shape"):
        load_mnist(tmp_path, download_missing=False)


# ----------------------------------------------------------------------------- downloads
def test_download_checks_md5_too(server, tmp_path):
    root, url = server
    (root / "f.gz").write_bytes(b"payload")
    md5 = hashlib.md5(b"payload").hexdigest()
    assert download(f"{url}/f.gz", tmp_path / "a" / "f.gz", md5=md5, progress=False) \
        .read_bytes() == b"payload"
    with pytest.raises(ChecksumError, match="f.gz has md5 .*, expected 0000"):
        download(f"{url}/f.gz", tmp_path / "b" / "f.gz", hashlib.sha256(b"payload").hexdigest(),
                 md5="0" * 32, progress=False)
    assert list((tmp_path / "b").iterdir()) == []
    with pytest.raises(ValueError, match="sha256 or md5"):
        download(f"{url}/f.gz", tmp_path / "c" / "f.gz")


def test_mnist_is_downloaded_verified_and_loaded_from_the_cache(server, tmp_path, monkeypatch):
    root, url = server
    arrays = tiny_mnist()
    files = write_tiny_mnist(root / "mnist", arrays)
    monkeypatch.setattr(image_data, "MNIST",
                        tiny_spec(image_data.MNIST, [f"{url}/mnist/"], files))
    d = load_dataset("mnist", tmp_path / "empty")
    cache = cache_dir() / "mnist"
    assert sorted(p.name for p in cache.iterdir()) == sorted(f"{n}.gz" for n in IDX_FILES.values())
    assert np.array_equal(d.raw_test[:, 0].numpy(), arrays["test_images"])
    assert d.train_labels.tolist() == arrays["train_labels"][:5].tolist()
    for p in (root / "mnist").iterdir():                        # now cached: no server needed
        p.unlink()
    assert torch.equal(load_mnist().raw_valid, d.raw_valid)


def test_a_wrong_download_is_refused_and_leaves_nothing(server, tmp_path, monkeypatch):
    root, url = server
    files = write_tiny_mnist(root / "mnist", tiny_mnist())
    spec = tiny_spec(image_data.MNIST, [f"{url}/mnist/", UNREACHABLE], files)
    monkeypatch.setattr(image_data, "MNIST", spec)
    (root / "mnist" / "train-images-idx3-ubyte.gz").write_bytes(b"tampered")
    want = spec.sha256["train_images"]
    with pytest.raises(ChecksumError, match=f"train-images-idx3-ubyte.gz has sha256 "
                                            f"{hashlib.sha256(b'tampered').hexdigest()}, "
                                            f"expected {want}"):
        load_mnist(tmp_path)
    assert list((cache_dir() / "mnist").iterdir()) == []        # and no other mirror tried
    monkeypatch.setattr(image_data, "MNIST", dataclasses.replace(
        spec, md5=spec.md5 | {"train_labels": "0" * 32}))
    (root / "mnist" / "train-images-idx3-ubyte.gz").write_bytes(files["train_images"])
    with pytest.raises(ChecksumError, match="train-labels-idx1-ubyte.gz has md5"):
        load_mnist(tmp_path)
    assert [p.name for p in (cache_dir() / "mnist").iterdir()] == ["train-images-idx3-ubyte.gz"]


def test_an_unreachable_mirror_falls_back_to_the_next(server, tmp_path, monkeypatch):
    root, url = server
    arrays = tiny_mnist()
    files = write_tiny_mnist(root / "mirror2", arrays)
    monkeypatch.setattr(image_data, "FASHION_MNIST", tiny_spec(
        image_data.FASHION_MNIST, [UNREACHABLE, f"{url}/missing/", f"{url}/mirror2/"], files))
    d = load_fashion_mnist(tmp_path)
    assert np.array_equal(d.raw_train[:, 0].numpy(), arrays["train_images"][:5])
    assert len(list((cache_dir() / "fashion-mnist").iterdir())) == 4
    # no mirror answers: one line naming what was tried and the alternatives
    (cache_dir() / "fashion-mnist" / "t10k-labels-idx1-ubyte.gz").unlink()
    monkeypatch.setattr(image_data, "FASHION_MNIST", dataclasses.replace(
        image_data.FASHION_MNIST, mirrors=(UNREACHABLE, f"{url}/missing/")))
    with pytest.raises(DataError, match=r"could not download .*127.0.0.1:9/t10k-labels.*"
                                        r"missing/t10k-labels.*--data-dir or \$VAEKIT_DATA_DIR"):
        load_fashion_mnist(tmp_path)


# ----------------------------------------------------------------------------- CIFAR-10
N_BATCH = 4


def tiny_cifar(seed: int = 0):
    """Records for the six batch files, built plane by plane: {file: (bytes, images, labels)}."""
    rng = np.random.default_rng(seed)
    out = {}
    for b in image_data.CIFAR10_BATCHES:
        images = rng.integers(0, 256, (N_BATCH, 3, 32, 32), dtype=np.uint8)
        labels = rng.integers(0, 10, N_BATCH, dtype=np.uint8)
        raw = b"".join(bytes([int(y)]) + img[0].tobytes() + img[1].tobytes() + img[2].tobytes()
                       for img, y in zip(images, labels, strict=True))
        out[b] = (raw, images, labels)
    # one recognisable record: red plane 200, green 0, blue a ramp along each row
    ramp = np.tile(np.arange(32, dtype=np.uint8), (32, 1))
    img = np.stack([np.full((32, 32), 200, np.uint8), np.zeros((32, 32), np.uint8), ramp])
    raw, images, labels = out["test_batch.bin"]
    images[0], labels[0] = img, 7
    raw = bytes([7]) + bytes([200]) * 1024 + bytes(1024) + ramp.tobytes() + raw[3073:]
    out["test_batch.bin"] = (raw, images, labels)
    return out


def write_cifar_archive(path: Path, batches, extra: dict[str, bytes] | None = None) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        members = {f"cifar-10-batches-bin/{b}": raw for b, (raw, _, _) in batches.items()}
        for name, raw in {"cifar-10-batches-bin/batches.meta.txt": b"airplane\n",
                          **members, **(extra or {})}.items():
            info = tarfile.TarInfo(name)
            info.size = len(raw)
            tf.addfile(info, io.BytesIO(raw))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(buf.getvalue())
    return buf.getvalue()


@pytest.fixture
def tiny_cifar_sizes(monkeypatch):
    monkeypatch.setattr(image_data, "CIFAR10_BATCH_SIZE", N_BATCH)
    monkeypatch.setattr(image_data, "CIFAR10_VALID_SIZE", 3)


def check_cifar(d, batches):
    train = np.concatenate([batches[f"data_batch_{i}.bin"][1] for i in range(1, 6)])
    labels = np.concatenate([batches[f"data_batch_{i}.bin"][2] for i in range(1, 6)])
    assert (d.raw_train.shape, d.raw_valid.shape, d.raw_test.shape) == (
        (17, 3, 32, 32), (3, 3, 32, 32), (4, 3, 32, 32))
    assert d.raw_train.dtype == torch.uint8 and d.divisor == 255 and d.channels == 3
    assert np.array_equal(d.raw_train.numpy(), train[:17])
    assert np.array_equal(d.raw_valid.numpy(), train[17:])          # the last training images
    assert d.valid_labels.tolist() == labels[17:].tolist()
    assert d.test_labels.dtype == torch.int64
    assert np.array_equal(d.raw_test.numpy(), batches["test_batch.bin"][1])
    first = d.raw_test[0]                                           # R plane first
    assert d.test_labels[0] == 7 and (first[0] == 200).all() and (first[1] == 0).all()
    assert first[2, 5].tolist() == list(range(32)) and (first[2, :, 3] == 3).all()


def test_cifar10_from_the_archive_and_from_the_folder(tmp_path, tiny_cifar_sizes):
    batches = tiny_cifar()
    write_cifar_archive(tmp_path / "a" / "cifar-10-binary.tar.gz", batches)
    check_cifar(load_cifar10(tmp_path / "a", download_missing=False), batches)
    folder = tmp_path / "b" / "cifar-10-batches-bin"
    folder.mkdir(parents=True)
    for b, (raw, _, _) in batches.items():
        (folder / b).write_bytes(raw)
    check_cifar(load_dataset("cifar10", tmp_path / "b"), batches)
    # a truncated batch file is named
    (folder / "data_batch_3.bin").write_bytes(batches["data_batch_3.bin"][0][:-1])
    with pytest.raises(DataError, match="data_batch_3.bin has 12291 bytes.*delete it"):
        load_cifar10(tmp_path / "b")
    with pytest.raises(DataNotFoundError, match="cifar10 not found in"):
        load_cifar10(tmp_path / "c", download_missing=False)


def test_cifar10_archives_that_are_not_cifar10_are_refused(tmp_path, tiny_cifar_sizes):
    batches = tiny_cifar()
    bad = tmp_path / "escape" / "cifar-10-binary.tar.gz"
    write_cifar_archive(bad, batches, extra={"../evil.bin": b"x"})
    with pytest.raises(DataError, match="'../evil.bin' whose path leaves"):
        load_cifar10(bad.parent)
    missing = tmp_path / "missing" / "cifar-10-binary.tar.gz"
    write_cifar_archive(missing, {k: v for k, v in batches.items() if k != "test_batch.bin"})
    with pytest.raises(DataError, match="has no cifar-10-batches-bin/test_batch.bin"):
        load_cifar10(missing.parent)
    truncated = tmp_path / "truncated" / "cifar-10-binary.tar.gz"
    truncated.parent.mkdir()
    truncated.write_bytes(bad.read_bytes()[:200])
    with pytest.raises(DataError, match="truncated or not a tar.gz"):
        load_cifar10(truncated.parent)


def test_cifar10_is_downloaded_and_verified(server, tmp_path, monkeypatch, tiny_cifar_sizes):
    root, url = server
    batches = tiny_cifar()
    content = write_cifar_archive(root / "cifar-10-binary.tar.gz", batches)
    monkeypatch.setattr(image_data, "CIFAR10_MIRRORS", (UNREACHABLE, f"{url}/"))
    monkeypatch.setattr(image_data, "CIFAR10_MD5", hashlib.md5(content).hexdigest())
    monkeypatch.setattr(image_data, "CIFAR10_SHA256", "0" * 64)
    with pytest.raises(ChecksumError, match="cifar-10-binary.tar.gz has sha256"):
        load_cifar10(tmp_path)
    assert not (cache_dir() / "cifar-10-binary.tar.gz").exists()
    monkeypatch.setattr(image_data, "CIFAR10_SHA256", hashlib.sha256(content).hexdigest())
    check_cifar(load_cifar10(tmp_path), batches)
    assert (cache_dir() / "cifar-10-binary.tar.gz").read_bytes() == content


# ----------------------------------------------------------------------------- colored-mnist
def test_colorize_is_the_documented_blend():
    grey = np.array([0, 255, 51], np.uint8).reshape(1, 1, 1, 3)
    out = colorize(grey, np.array([[10, 20, 30]]), np.array([[200, 150, 250]]))
    assert out.dtype == np.uint8 and out.shape == (1, 3, 1, 3)
    assert out[0, :, 0, 0].tolist() == [10, 20, 30]               # background
    assert out[0, :, 0, 1].tolist() == [200, 150, 250]            # stroke
    assert out[0, :, 0, 2].tolist() == [48, 46, 74]               # 0.8 bg + 0.2 stroke


def test_colored_mnist(mnist5k, monkeypatch):
    monkeypatch.setattr(image_data, "load_mnist_5k", lambda: mnist5k)   # loaded once
    d = load_colored_mnist()
    assert (d.raw_train.shape, d.raw_valid.shape, d.raw_test.shape) == (
        (4000, 3, 28, 28), (500, 3, 28, 28), (500, 3, 28, 28))
    assert d.raw_train.dtype == torch.uint8 and d.divisor == 255 and d.figure_shape == (3, 28, 28)
    for s in ("train", "valid", "test"):
        assert torch.equal(getattr(d, f"{s}_labels"), getattr(mnist5k, f"{s}_labels"))
    assert torch.equal(load_dataset("colored-mnist").raw_test, d.raw_test)    # deterministic
    # the digits' shapes are mnist-5k's, their colours differ from one example to the next
    corner = d.raw_train[:50, :, 0, 0]                            # background colours
    assert len({tuple(c) for c in corner.tolist()}) == 50
    ink = mnist5k.raw_train[:50, 0] == 255
    strokes = {tuple(d.raw_train[i, :, ink[i]][:, 0].tolist()) for i in range(50) if ink[i].any()}
    assert len(strokes) > 40
    assert (d.raw_train[:, :, mnist5k.raw_train[0, 0] == 0][0] < 128).all()
