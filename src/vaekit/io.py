"""Atomic file writes and safetensors checkpoints.

Every file vaekit writes into a run directory goes through :func:`atomic_write`: the bytes are
written to a temporary file in the same directory, flushed to disk, and renamed over the target
(``os.replace`` is atomic on POSIX and Windows). An interrupted write therefore leaves either
the old file or the new one, never a half-written file.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save as _safetensors_bytes

from .errors import CheckpointError

_METADATA_KEY = "vaekit"
_DIGEST_KEY = "vaekit.sha256"


def tensors_digest(tensors: dict[str, torch.Tensor]) -> str:
    """sha256 over the tensors' names, dtypes, shapes and bytes (in name order): what a
    checkpoint's header records, so that a flipped byte anywhere in its data is caught."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().to("cpu").contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


LOCK = ".vaekit.lock"
_held: dict[Path, int] = {}          # run directories this process holds, and how often


@contextlib.contextmanager
def run_lock(run_dir: str | os.PathLike, what: str = "vaekit") -> Iterator[None]:
    """Hold ``run_dir`` for this process while the block runs: an exclusive ``flock`` on
    ``run_dir/.vaekit.lock``, which records the holder (pid, command, since when). The kernel
    drops the lock when its process dies, so a lock left by a killed process is taken over;
    the same process may enter again (``train`` evaluates its own run). Without ``fcntl``
    (Windows) runs are not locked.

    Raises:
        CheckpointError: another live process holds the run, naming its pid.
    """
    run_dir = Path(run_dir)
    key = run_dir.resolve()
    if key in _held:
        _held[key] += 1
        try:
            yield
        finally:
            _held[key] -= 1
        return
    try:
        import fcntl
    except ImportError:                       # pragma: no cover (Windows)
        yield
        return
    run_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(run_dir / LOCK, os.O_RDWR | os.O_CREAT, 0o666 & ~_umask())
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 512, 0).decode("utf-8", "replace").strip() or "another process"
            raise CheckpointError(f"{run_dir} is in use by {holder}; wait for it to finish, "
                                  "or stop it") from None
        os.ftruncate(fd, 0)
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        os.pwrite(fd, f"vaekit {what} (pid {os.getpid()}, since {stamp})".encode(), 0)
        _held[key] = 1
        try:
            yield
        finally:
            del _held[key]
    finally:
        os.close(fd)                          # releases the lock


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success rename it to ``path``.

    On an exception the temporary file is removed and ``path`` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    os.chmod(tmp_path, 0o666 & ~_umask())        # mkstemp makes 0600; files get the usual mode
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp_path, path)
        _fsync_dir(path.parent)               # the rename itself survives a power cut
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        raise


def _fsync_dir(directory: Path) -> None:
    """Flush a directory's entries to disk (POSIX; a no-op where directories cannot be
    opened, as on Windows)."""
    flags = getattr(os, "O_DIRECTORY", None)
    if flags is None:
        return
    try:
        fd = os.open(directory, os.O_RDONLY | flags)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: str | os.PathLike, data: bytes | str) -> None:
    """Write ``data`` (bytes, or text as UTF-8) to ``path`` atomically."""
    if isinstance(data, str):
        data = data.encode("utf-8")
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(data)


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` as indented JSON, atomically."""
    atomic_write(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    """Read a JSON file; raise :class:`CheckpointError` naming the file if missing or corrupt."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckpointError(f"{path} does not exist") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path} is not valid JSON ({e}): the file is corrupt") from None


def save_tensors(
    path: str | os.PathLike, tensors: dict[str, torch.Tensor], metadata: dict | None = None
) -> None:
    """Save a flat dict of tensors as safetensors, with ``metadata`` (JSON-able) in the header.

    Tensors are moved to the CPU and made contiguous first; the write is atomic.
    """
    flat = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    header = {_METADATA_KEY: json.dumps(metadata or {}), _DIGEST_KEY: tensors_digest(flat)}
    atomic_write(path, _safetensors_bytes(flat, metadata=header))


def load_tensors(
    path: str | os.PathLike, device: str | torch.device = "cpu"
) -> tuple[dict[str, torch.Tensor], dict]:
    """Load a safetensors file written by :func:`save_tensors`: ``(tensors, metadata)``.
    The tensors are checked against the digest in the header (files written before vaekit
    recorded one are not checked).

    Raises:
        CheckpointError: the file is missing, truncated, not a safetensors file, or its
            tensors do not match their digest.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        with safe_open(str(path), framework="pt", device=str(device)) as f:
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open has no iter)
            header = f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(
            f"checkpoint {path} is corrupt or truncated ({e}); "
            "delete it and retrain, or resume from an intact copy"
        ) from None
    digest = header.get(_DIGEST_KEY)
    if digest is not None and tensors_digest(tensors) != digest:
        raise CheckpointError(f"checkpoint {path} is corrupt: its tensors do not match the "
                              "digest they were written with")
    try:
        metadata = json.loads(header.get(_METADATA_KEY, "{}"))
    except json.JSONDecodeError:
        raise CheckpointError(f"checkpoint {path} has a corrupt metadata header") from None
    return tensors, metadata
