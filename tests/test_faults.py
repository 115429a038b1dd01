"""Fault injection: ``vaekit train`` as a subprocess, killed with SIGKILL at random moments
(in an epoch, while a checkpoint is written, in the final evaluation, in the figures) and
resumed each time; the run that results is the uninterrupted one, tensor for tensor, with
exactly one metrics record per epoch."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from conftest import make_binary_images

from vaekit.io import load_tensors

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")]

SMALL = ["--hidden-sizes", "16", "--batch-size", "16", "--eval-num-samples",
         "10", "--threads", "1", "--no-progress"]
CASES = {
    # the IWAE learning-rate schedule (stages of 1, 3, 9 epochs) on binary data
    "iwae-schedule": ["--latent-dim", "3", "--objective", "iwae", "--num-samples", "3",
                      "--lr-schedule", "iwae", "--epochs", "6", "--schedule-stages", "3"],
    # grey levels binarized afresh every epoch
    "dynamic": ["--latent-dim", "3", "--epochs", "5", "--binarization", "dynamic"],
    # a stateful estimator: NVIL's learned baseline and running averages
    "nvil": ["--latent-dim", "3", "--objective", "elbo-sf", "--baseline", "nvil", "--epochs", "5"],
    # a VQ-VAE, whose code prior is fitted after training
    "vqvae": ["--model", "vqvae", "--num-latents", "2", "--embedding-dim", "2",
              "--codebook-size", "8", "--epochs", "5"],
}
KILLS_PER_CASE = 7                      # at most 28 kill points in all, at least 20 landed


def _data(tmp_path, grey: bool):
    x = make_binary_images(160, side=6, seed=1)
    if grey:
        rng = np.random.default_rng(0)
        x = (x * rng.integers(150, 256, x.shape) + (1 - x) * rng.integers(0, 60, x.shape))
        x = x.astype(np.uint8)
    p = tmp_path / ("grey.npy" if grey else "binary.npy")
    np.save(p, x if grey else x.astype(bool))
    return p


def _cmd(*args):
    return [sys.executable, "-m", "vaekit", "train", *map(str, args)]


def _run_with_kills(args, out, kills, rng, budget):
    """Start, kill after a random delay, resume; ``kills`` times; then run to the end."""
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    killed = 0
    while True:
        cmd = _cmd("--resume", out, "--threads", "1", "--no-progress") \
            if (out / "config.json").is_file() else _cmd(*args, "--out", out)
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                env=env)
        if killed < kills:
            # a resumed run redoes its interrupted epoch: kill within 70% of a whole run's time
            # so that most kills land before the run completes
            time.sleep(rng.uniform(0.2, 0.7 * budget))
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                killed += 1
                continue
        _, err = proc.communicate(timeout=600)
        if proc.returncode == 0:
            return killed
        # a run killed after it finished training resumes into "already complete": fine
        raise AssertionError(f"{cmd} failed: {err.decode()[-2000:]}")


@pytest.mark.parametrize("case", sorted(CASES))
def test_killed_runs_resume_to_the_uninterrupted_run(case, tmp_path):
    data = _data(tmp_path, grey=(case == "dynamic"))
    args = ["--data", data, *SMALL, *CASES[case]]
    ref = tmp_path / "ref"
    start = time.perf_counter()
    subprocess.run(_cmd(*args, "--out", ref), check=True, capture_output=True)
    budget = time.perf_counter() - start              # the whole run, evaluation and figures
    rng = random.Random(f"{case}-kills")
    out = tmp_path / "killed"
    killed = _run_with_kills(args, out, KILLS_PER_CASE, rng, budget)
    assert killed >= 5, f"only {killed} kills landed before the run ended"
    a, meta_a = load_tensors(ref / "last.safetensors")
    b, meta_b = load_tensors(out / "last.safetensors")
    assert sorted(a) == sorted(b)
    for k in a:
        assert torch.equal(a[k], b[k]), (case, k)
    for k in ("epoch", "step", "best_epoch", "best_valid_score"):
        assert meta_a[k] == meta_b[k], (case, k)
    best_a, _ = load_tensors(ref / "best.safetensors")
    best_b, _ = load_tensors(out / "best.safetensors")
    for k in best_a:
        assert torch.equal(best_a[k], best_b[k]), (case, "best", k)
    rec_a = [json.loads(x) for x in (ref / "metrics.jsonl").read_text().splitlines()]
    rec_b = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rec_b] == [r["epoch"] for r in rec_a]        # one per epoch
    assert [r["train_bound"] for r in rec_b] == [r["train_bound"] for r in rec_a]
    ea = json.loads((ref / "eval.json").read_text())
    eb = json.loads((out / "eval.json").read_text())
    key = "log_likelihood_bound" if case == "vqvae" else "log_likelihood"
    assert ea[key] == eb[key]
