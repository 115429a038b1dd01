"""--precision: bf16 autocast for the networks only (densities and bounds in float32), tf32
a CUDA setting, evaluation always float32."""

from __future__ import annotations

import pytest
import torch

from vaekit.config import Config
from vaekit.estimators import get_estimator
from vaekit.models.vae import VAE
from vaekit.nn import MLP
from vaekit.precision import training_precision
from vaekit.runs import train_run

CPU = torch.device("cpu")


def test_bf16_runs_the_network_in_bfloat16_and_returns_float32():
    torch.manual_seed(0)
    net = MLP(64, [128], 32)
    x = torch.randn(50, 64)
    full = net(x)
    with training_precision("bf16", CPU):
        half = net(x)
    assert half.dtype == torch.float32
    err = (half - full).abs().max() / full.abs().max()
    assert 1e-4 < err < 3e-2      # bfloat16's 8-bit mantissa, not float32's rounding
    with training_precision("fp32", CPU):
        assert torch.equal(net(x), full)
    assert torch.equal(net(x), full)       # nothing left behind after the block


def test_bf16_bound_is_float32_and_close():
    torch.manual_seed(0)
    model = VAE(784, latent_dim=20, hidden_sizes=(200,))
    x = torch.rand(64, 784).bernoulli()
    est = get_estimator("iwae", None, data_shape=(784,))
    torch.manual_seed(1)
    ref = est(model, x).bound
    torch.manual_seed(1)
    with training_precision("bf16", CPU):
        low = est(model, x).bound
    assert low.dtype == torch.float32
    # per-example bounds of ~545 nats: bf16 products move them by well under a nat
    assert 0 < (low - ref).abs().max() < 1.0


def test_unknown_precision_is_refused():
    with pytest.raises(ValueError, match="precision must be one of"), \
            training_precision("fp16", CPU):
        pass


def test_training_in_bf16_and_tf32_on_the_cpu(tiny_npz, tmp_path):
    def run(precision):
        logs = []
        cfg = Config.from_dict({"data": {"dataset": str(tiny_npz)},
                                "model": {"hidden_sizes": [32], "latent_dim": 4},
                                "train": {"epochs": 3, "seed": 0, "device": "cpu",
                                          "precision": precision, "tracking": "none"}})
        s = train_run(cfg, tmp_path / precision, progress=False, evaluate_after=False,
                      figures=False, log=logs.append)
        return s["train"]["best_valid_score"], logs
    fp32, _ = run("fp32")
    bf16, _ = run("bf16")
    tf32, logs = run("tf32")
    assert bf16 != fp32 and abs(bf16 - fp32) < 1.0
    assert tf32 == fp32 and any("tf32 applies to CUDA" in m for m in logs)
