"""The C allocator's settings for vaekit's commands: freed memory is kept for reuse.

glibc's ``malloc`` (which torch's CPU allocator calls) returns memory to the system eagerly:
an allocation above its mmap threshold (128 KB, rising with use up to 32 MB) is mapped on
its own and unmapped when freed, and free space at the top of the heap beyond the trim
threshold is released. A k = 5000 evaluation allocates and frees the same few buffers for
every chunk of samples, so each chunk page-faults its memory in again: measured on a
convolutional VAE with the discretized logistic mixture, 2.3 million page faults and a third
of the evaluation's time in the kernel (``benchmarks/bench_eval_chunks.py``).

:func:`keep_freed_memory` fixes both thresholds (``mallopt``: mmap at 32 MB, trim at
256 MB), so the buffers of one chunk serve the next; ``vaekit`` commands call it when they
start. A process keeps up to 256 MB of freed memory for reuse. Nothing changes where the
environment sets ``MALLOC_MMAP_THRESHOLD_`` or ``MALLOC_TRIM_THRESHOLD_`` (glibc's own
variables, which win), or where the C library is not glibc.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3       # glibc's <malloc.h>
TRIM_THRESHOLD = 256 << 20
MMAP_THRESHOLD = 32 << 20                         # glibc's largest (64-bit)
ENVIRONMENT = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")


def keep_freed_memory() -> bool:
    """Set glibc's trim and mmap thresholds (see the module); ``True`` when both were set."""
    if not sys.platform.startswith("linux") or any(v in os.environ for v in ENVIRONMENT):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        if not hasattr(libc, "gnu_get_libc_version"):  # glibc only (musl has no such function)
            return False
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD)) and \
        bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD))


__all__ = ["keep_freed_memory"]
