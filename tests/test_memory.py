"""vaekit.memory (the allocator keeps freed memory) and the evaluation's chunk budget."""

from __future__ import annotations

import math
import subprocess
import sys

import pytest

from vaekit.families import DECODER_OUTPUT_BUDGET, rows_within


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt is Linux's")
def test_keep_freed_memory_sets_glibcs_thresholds_unless_the_environment_does():
    code = ("import ctypes, ctypes.util; from vaekit.memory import keep_freed_memory; "
            "print(keep_freed_memory())")
    def run(env):
        import os
        return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              env={**os.environ, **env}, check=True).stdout.strip()
    try:
        import ctypes
        assert ctypes.CDLL("libc.so.6").gnu_get_libc_version is not None
    except (OSError, AttributeError):
        pytest.skip("not glibc")
    assert run({}) == "True"
    assert run({"MALLOC_TRIM_THRESHOLD_": "1000000"}) == "False"
    assert run({"MALLOC_MMAP_THRESHOLD_": "1000000"}) == "False"


@pytest.mark.parametrize("param_shape", [(784,), (1, 28, 28), (30, 28, 28), (100, 28, 28),
                                         (256, 3, 32, 32), (3, 32, 32)])
def test_a_chunk_of_decoder_outputs_stays_within_the_budget(param_shape):
    """At most 2M float32 outputs (8 MB, below glibc's 32 MB mmap threshold) per chunk, at
    most 2048 rows, at least one."""
    rows = rows_within(param_shape)
    size = math.prod(param_shape)
    assert 1 <= rows <= 2048
    assert rows * size <= max(DECODER_OUTPUT_BUDGET, size)
    assert rows == 2048 or (rows + 1) * size > DECODER_OUTPUT_BUDGET
    assert DECODER_OUTPUT_BUDGET * 4 < 32 << 20
