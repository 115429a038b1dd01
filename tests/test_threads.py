"""The default thread count and OpenMP wait policy (vaekit.threads) and device strings."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from vaekit import threads
from vaekit.errors import ConfigError
from vaekit.training import resolve_device


@pytest.mark.parametrize("load, running, expected", [
    (0.0, 1, 4),      # idle: every core
    (1.2, 1, 3),      # one core busy on average
    (0.1, 3, 2),      # two other processes runnable right now (the load average lags)
    (9.0, 12, 1),     # overloaded: still one thread
])
def test_default_threads_leaves_busy_cores_alone(monkeypatch, load, running, expected):
    monkeypatch.setattr(threads, "usable_cores", lambda: 4)
    monkeypatch.setattr(os, "cpu_count", lambda: 4)
    monkeypatch.setattr(os, "getloadavg", lambda: (load, load, load))
    real_open = open

    def fake_open(path, *a, **k):
        if path == "/proc/loadavg":
            import io
            return io.StringIO(f"{load} {load} {load} {running}/300 12345\n")
        return real_open(path, *a, **k)

    monkeypatch.setattr("builtins.open", fake_open)
    assert threads.busy_cores() == max(round(load), running - 1)
    assert threads.default_threads() == expected


def test_a_slice_of_a_larger_machine_ignores_its_load(monkeypatch):
    monkeypatch.setattr(threads, "usable_cores", lambda: 2)
    monkeypatch.setattr(os, "cpu_count", lambda: 64)
    monkeypatch.setattr(threads, "busy_cores", lambda: 40)
    assert threads.default_threads() == 2


def _omp_policy(env_extra: dict) -> str:
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"} | env_extra
    out = subprocess.run([sys.executable, "-c", "import os, vaekit; "
                          "print(os.environ.get('OMP_WAIT_POLICY'))"],
                         capture_output=True, text=True, env=env, check=True)
    return out.stdout.strip()


def test_import_sets_a_passive_wait_policy_unless_the_user_chose():
    assert _omp_policy({}) == "PASSIVE"
    assert _omp_policy({"OMP_WAIT_POLICY": "ACTIVE"}) == "ACTIVE"


def test_cli_uses_the_default_thread_count():
    """Without --threads the command sets torch's thread count to default_threads()."""
    code = ("import torch, vaekit.cli as c; c.default_threads = lambda: 3; "
            "c.main(['evaluate', 'nowhere']); print(torch.get_num_threads())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.stdout.strip().splitlines()[-1] == "3"


@pytest.mark.parametrize("name", ["cpu", "cpu:0"])
def test_cpu_device_strings(name):
    assert resolve_device(name).type == "cpu"


@pytest.mark.parametrize("name, message", [
    ("tpu", "must be auto or a torch device"),
    ("cuda:x", "must be auto or a torch device"),
    ("mps", "is not available here"),
    ("xpu:0", "is not available here"),
])
def test_unusable_device_strings_are_one_clear_error(name, message):
    if name == "mps" and resolve_mps_available():
        pytest.skip("MPS is present on this machine")
    with pytest.raises(ConfigError, match=message):
        resolve_device(name)


def resolve_mps_available() -> bool:
    import torch
    return bool(getattr(torch, "mps", None) and torch.mps.is_available())


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="CUDA is present here")
def test_cuda_index_without_cuda():
    with pytest.raises(ConfigError, match="CUDA is not available"):
        resolve_device("cuda:1")
