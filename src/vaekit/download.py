"""Download files with sha256 and/or md5 verification, written atomically into a cache
directory."""

from __future__ import annotations

import hashlib
import http.client
import os
import urllib.error
import urllib.request
from pathlib import Path

from tqdm.auto import tqdm

from .errors import ChecksumError, DataError
from .io import atomic_path

_CHUNK = 1 << 20


def cache_dir() -> Path:
    """Where vaekit keeps downloaded data: ``$VAEKIT_CACHE_DIR``, else
    ``$XDG_CACHE_HOME/vaekit``, else ``~/.cache/vaekit``."""
    if os.environ.get("VAEKIT_CACHE_DIR"):
        return Path(os.environ["VAEKIT_CACHE_DIR"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "vaekit"


def sha256sum(path: str | os.PathLike) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def md5sum(path: str | os.PathLike) -> str:
    """Hex md5 of a file, read in 1 MiB chunks (for digests that datasets publish as md5)."""
    h = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def download(url: str, dest: str | os.PathLike, sha256: str | None = None, *,
             md5: str | None = None, timeout: float = 60.0, progress: bool = True) -> Path:
    """Fetch ``url`` into ``dest``, verifying its digests before the file appears.

    The body is streamed into a temporary file beside ``dest`` while it is hashed; only when
    every given digest (``sha256``, ``md5``: at least one) matches is it renamed to ``dest``.
    An interrupted or corrupt download leaves nothing behind.

    Raises:
        ValueError: neither ``sha256`` nor ``md5`` is given.
        DataError: the server cannot be reached or answers with an error.
        ChecksumError: the content's sha256 or md5 is not the expected one (nothing is written).
    """
    if not sha256 and not md5:
        raise ValueError("download needs the expected sha256 or md5 of the file")
    dest = Path(dest)
    hashes = {name: (hashlib.new(name, usedforsecurity=False), want.lower())
              for name, want in (("sha256", sha256), ("md5", md5)) if want}
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response, atomic_path(dest) as tmp:
            total = int(response.headers.get("Content-Length") or 0) or None
            with open(tmp, "wb") as f, tqdm(total=total, unit="B", unit_scale=True,
                                            desc=f"downloading {dest.name}",
                                            disable=None if progress else True,
                                            leave=False) as bar:
                while chunk := response.read(_CHUNK):
                    for h, _ in hashes.values():
                        h.update(chunk)
                    f.write(chunk)
                    bar.update(len(chunk))
            for name, (h, want) in hashes.items():
                if h.hexdigest() != want:
                    raise ChecksumError(
                        f"{url} has {name} {h.hexdigest()}, expected {want}: the download is "
                        f"corrupt or the file changed upstream; nothing was written to {dest}")
    except (urllib.error.URLError, http.client.HTTPException, TimeoutError, ConnectionError) as e:
        reason = getattr(e, "reason", e)
        raise DataError(
            f"could not download {url} ({reason}); download it by hand into {dest.parent}") \
            from None
    return dest
