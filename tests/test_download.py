"""The downloader against a local HTTP server on 127.0.0.1 (no outside network needed)."""

from __future__ import annotations

import functools
import hashlib
import http.server
import threading

import numpy as np
import pytest

import vaekit.data as data
from vaekit.download import download, sha256sum
from vaekit.errors import ChecksumError, DataError


@pytest.fixture
def server(tmp_path):
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


def test_good_checksum_writes_the_file(server, tmp_path):
    root, url = server
    payload = b"0 1 1 0\n" * 1000
    (root / "f.amat").write_bytes(payload)
    dest = tmp_path / "cache" / "f.amat"
    download(f"{url}/f.amat", dest, hashlib.sha256(payload).hexdigest(), progress=False)
    assert dest.read_bytes() == payload
    assert sha256sum(dest) == hashlib.sha256(payload).hexdigest()
    assert [p.name for p in dest.parent.iterdir()] == ["f.amat"]     # no temporary left


def test_bad_checksum_writes_nothing(server, tmp_path):
    root, url = server
    (root / "f.amat").write_bytes(b"tampered\n")
    dest = tmp_path / "cache" / "f.amat"
    with pytest.raises(ChecksumError, match="expected 0000"):
        download(f"{url}/f.amat", dest, "0" * 64, progress=False)
    assert not dest.exists()
    assert list(dest.parent.iterdir()) == []


def test_http_errors_and_unreachable_hosts_are_clear(server, tmp_path):
    _, url = server
    with pytest.raises(DataError, match="could not download .*missing.amat"):
        download(f"{url}/missing.amat", tmp_path / "m.amat", "0" * 64, progress=False)
    with pytest.raises(DataError, match="could not download"):
        download("http://127.0.0.1:9/x.amat", tmp_path / "x.amat", "0" * 64, timeout=2,
                 progress=False)
    assert not (tmp_path / "m.amat").exists()


def test_binarized_mnist_is_downloaded_into_the_cache_when_absent(server, tmp_path, monkeypatch):
    """End to end with tiny stand-in files: download, verify, then load from the cache."""
    root, url = server
    rng = np.random.default_rng(0)
    sizes = {"train": 6, "valid": 3, "test": 2}
    digests = {}
    for split, n in sizes.items():
        a = (rng.random((n, 784)) < 0.2).astype(np.uint8)
        text = "".join(" ".join(map(str, r)) + "\n" for r in a.tolist()).encode()
        (root / f"binarized_mnist_{split}.amat").write_bytes(text)
        digests[split] = hashlib.sha256(text).hexdigest()
    monkeypatch.setattr(data, "BINARIZED_MNIST_URL", url + "/binarized_mnist_{split}.amat")
    monkeypatch.setattr(data, "BINARIZED_MNIST_SHA256", digests)
    monkeypatch.setattr(data, "BINARIZED_MNIST_SIZES", sizes)
    cache = tmp_path / "vaekit-cache"
    monkeypatch.setenv("VAEKIT_CACHE_DIR", str(cache))

    d = data.load_binarized_mnist(tmp_path / "empty")
    assert (len(d.train), len(d.valid), len(d.test)) == (6, 3, 2) and d.binary
    assert sorted(p.name for p in cache.iterdir()) == [
        "binarized_mnist_test.amat", "binarized_mnist_train.amat", "binarized_mnist_valid.amat"]
    # now cached: no server needed
    for p in root.iterdir():
        p.unlink()
    assert np.array_equal(data.load_binarized_mnist().test.numpy(), d.test.numpy())

    # a corrupted upstream file is refused and leaves the cache without it
    (cache / "binarized_mnist_test.amat").unlink()
    (root / "binarized_mnist_test.amat").write_bytes(b"0 1\n")
    with pytest.raises(ChecksumError):
        data.load_binarized_mnist()
    assert not (cache / "binarized_mnist_test.amat").exists()


def test_an_unreachable_server_names_the_alternatives(tmp_path, monkeypatch):
    monkeypatch.setattr(data, "BINARIZED_MNIST_URL", "http://127.0.0.1:9/binarized_mnist_{split}.amat")
    with pytest.raises(DataError, match="not in .*could not download.*--data-dir or "
                                        r"\$VAEKIT_DATA_DIR"):
        data.load_binarized_mnist(tmp_path)
