"""The GPU path: trainer, resume, evaluation, every estimator and the precisions on CUDA,
against the CPU where the numbers must agree. Every test skips where no CUDA device is
present (``pytest -m cuda`` selects them on a machine with one)."""

from __future__ import annotations

import pytest
import torch

from vaekit.config import Config
from vaekit.estimators import ESTIMATORS, get_estimator
from vaekit.io import load_tensors
from vaekit.models.vae import VAE
from vaekit.runs import evaluate_run, load_run, train_run
from vaekit.training import LAST

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


def _config(data, device, epochs=2, **train):
    return Config.from_dict({"data": {"dataset": str(data)},
                             "model": {"hidden_sizes": [32], "latent_dim": 4},
                             "train": {"epochs": epochs, "seed": 0, "device": device,
                                       "tracking": "none", "eval_num_samples": 50, **train}})


def _train(cfg, out, resume=False):
    return train_run(cfg, out, resume=resume, progress=False, evaluate_after=False,
                     figures=False, log=lambda m: None)


def test_training_runs_on_the_gpu_and_resumes_exactly(tiny_npz, tmp_path):
    _train(_config(tiny_npz, "cuda", 3), tmp_path / "whole")
    _train(_config(tiny_npz, "cuda", 1), tmp_path / "parts")
    _train(_config(tiny_npz, "cuda", 3), tmp_path / "parts", resume=True)
    a, _ = load_tensors(tmp_path / "whole" / LAST)
    b, _ = load_tensors(tmp_path / "parts" / LAST)
    assert any(k.startswith("rng.cuda.") for k in a)
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_gpu_evaluation_agrees_with_the_cpu(tiny_npz, tmp_path):
    _train(_config(tiny_npz, "cuda"), tmp_path / "run")
    gpu = evaluate_run(load_run(tmp_path / "run", device="cuda"), 200, save=False)
    cpu = evaluate_run(load_run(tmp_path / "run", device="cpu"), 200, save=False)
    # different random streams: equal within a few standard errors of the estimate
    se = (gpu["log_likelihood_se"] ** 2 + cpu["log_likelihood_se"] ** 2) ** 0.5
    assert abs(gpu["log_likelihood"] - cpu["log_likelihood"]) < 4 * se + 0.05


@pytest.mark.parametrize("name", [n for n in ESTIMATORS if ESTIMATORS.get(n).kind == "bound"])
def test_every_estimator_steps_on_the_gpu(name):
    torch.manual_seed(0)
    model = VAE(64, latent_dim=4, hidden_sizes=(32,)).cuda()
    opts = ESTIMATORS.get(name).options.field_names()
    est = get_estimator(name, data_shape=(64,),
                        **({"num_samples": 3} if "num_samples" in opts else {})).cuda()
    x = (torch.rand(16, 64, device="cuda") < 0.3).float()
    losses = est(model, x)
    losses.loss.backward()
    assert losses.bound.device.type == "cuda" and torch.isfinite(losses.bound).all()
    assert all(p.grad is None or torch.isfinite(p.grad).all() for p in model.parameters())


@pytest.mark.parametrize("precision", ["tf32", "bf16"])
def test_precisions_train_on_the_gpu(tiny_npz, tmp_path, precision):
    fp32 = _train(_config(tiny_npz, "cuda"), tmp_path / "fp32")["train"]["best_valid_score"]
    low = _train(_config(tiny_npz, "cuda", precision=precision),
                 tmp_path / precision)["train"]["best_valid_score"]
    assert abs(low - fp32) < 1.0
