"""Several processes through torchrun (vaekit.distributed): 2 CPU processes (gloo) reach the
parameters of 1 process with the same global batch, and a 2-process run resumes exactly."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from vaekit.distributed import World, shard, standard_normal
from vaekit.io import load_tensors
from vaekit.training import LAST, METRICS, read_metrics


def test_shards_cover_the_batch_once():
    for size in (1, 2, 3, 4):
        for batch in (size, 7, 32, 33):
            parts = [World(r, size).shard(batch) for r in range(size)]
            assert parts[0][0] == 0 and parts[-1][1] == batch
            assert all(a[1] == b[0] for a, b in zip(parts, parts[1:], strict=False))


def test_sharded_noise_is_the_global_batch_sliced():
    torch.manual_seed(5)
    full = standard_normal((3, 10, 4))
    for lo, hi in ((0, 5), (5, 10), (3, 7)):
        torch.manual_seed(5)
        with shard(10, lo, hi):
            part = standard_normal((3, hi - lo, 4))
            other = standard_normal((3, 2, 4)) if hi - lo != 2 else None   # not the shard's
        assert torch.equal(part, full[:, lo:hi])
        if other is not None:
            assert other.shape == (3, 2, 4)
    torch.manual_seed(5)
    assert torch.equal(torch.randn(3, 10, 4), full)     # outside shard(): Normal.rsample's


def _train(data, out, procs: int, epochs: int) -> None:
    """``vaekit train`` (``--resume`` where ``out`` holds a run) in ``procs`` processes; the
    batch of 30 splits the 192 training examples into 6 full batches and one of 12."""
    args = ["train", "--epochs", str(epochs), "--no-eval", "--no-progress", "--threads", "1"]
    if (out / LAST).exists():
        args += ["--resume", str(out)]
    else:
        args += ["--out", str(out), "--data", str(data), "--binarization", "dynamic",
                 "--hidden-sizes", "16", "--latent-dim", "2", "--objective", "iwae",
                 "--num-samples", "3", "--batch-size", "30", "--seed", "3", "--device", "cpu",
                 "--tracking", "none"]
    _vaekit(procs, *args)


def _vaekit(procs: int, *args: str) -> str:
    """Run ``vaekit ARGS`` in ``procs`` processes (torchrun for more than one): its stdout."""
    if procs == 1:
        cmd = [sys.executable, "-m", "vaekit", *args]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               "--nproc-per-node", str(procs), "-m", "vaekit", *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def _model(run):
    tensors, meta = load_tensors(run / LAST)
    return {k: v for k, v in tensors.items() if not k.startswith("rng.")}, meta


@pytest.mark.slow
def test_two_processes_match_one_and_resume(grey_npz, tmp_path):
    one, two, parts = tmp_path / "one", tmp_path / "two", tmp_path / "parts"
    _train(grey_npz, one, 1, 3)
    _train(grey_npz, two, 2, 3)
    a, meta_a = _model(one)
    b, meta_b = _model(two)
    assert meta_a["step"] == meta_b["step"] > 10
    assert a.keys() == b.keys()
    for k in a:
        # the same examples, binarizations and noise; only the gradient's summation order
        # differs (a weighted sum of two shard means against one mean)
        torch.testing.assert_close(b[k], a[k], rtol=1e-4, atol=1e-5, msg=k)
    ra, rb = read_metrics(one / METRICS), read_metrics(two / METRICS)
    assert [r["epoch"] for r in rb] == [1, 2, 3]
    for x, y in zip(ra, rb, strict=True):
        assert abs(x["train_bound"] - y["train_bound"]) < 1e-3
        assert abs(x["valid_score"] - y["valid_score"]) < 1e-3
    # a sharded evaluation (each process its half of the test set, gathered) agrees with one
    # process's: the same examples, other draws. Measured: seeds 0, 1, 2 of one process differ
    # by 0.02 nats; a lost or doubled shard moves the mean by the halves' difference
    ev = ["evaluate", str(one), "--num-samples", "200", "--json", "--threads", "1"]
    single = json.loads(_vaekit(1, *ev))
    sharded = json.loads(_vaekit(2, *ev))
    assert sharded["num_examples"] == single["num_examples"] > 20
    assert abs(sharded["log_likelihood"] - single["log_likelihood"]) < 0.1
    assert abs(sharded["elbo"] - single["elbo"]) < 0.1
    assert sharded["active_units"] == single["active_units"]
    # a 2-process run stopped after 1 epoch and resumed (2 processes) ends where the
    # uninterrupted one did, bit for bit
    _train(grey_npz, parts, 2, 1)
    _train(grey_npz, parts, 2, 3)
    c, _ = _model(parts)
    for k in b:
        assert torch.equal(c[k], b[k]), k
    untimed = [{k: v for k, v in r.items() if "seconds" not in k}
               for r in read_metrics(parts / METRICS)]
    assert untimed == [{k: v for k, v in r.items() if "seconds" not in k} for r in rb]


def test_threads_are_divided_among_the_node_s_processes(monkeypatch):
    from vaekit.threads import default_threads, usable_cores
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    assert default_threads() == max(1, usable_cores() // 2)


def test_em_families_are_refused_under_torchrun(monkeypatch):
    import vaekit.distributed as d
    from vaekit.errors import ConfigError
    from vaekit.families import FAMILIES
    monkeypatch.setattr(d, "_WORLD", World(0, 2))
    with pytest.raises(ConfigError, match="fitted by EM in one process"):
        d.check_family(FAMILIES.get("gmm"))
    d.check_family(FAMILIES.get("vae"))          # trained by gradient steps: accepted
