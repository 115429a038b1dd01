"""Resume reaches bit-identical parameters: a run trained for M epochs and continued with
``--resume`` to N ends with the same ``last.safetensors`` (model, estimator, Adam state,
scheduler and random state) and the same ``metrics.jsonl`` as a run trained for N epochs
in one go, through the same path as ``vaekit train``."""

from __future__ import annotations

import pytest
import torch

from vaekit.cli import main
from vaekit.config import Config
from vaekit.io import load_tensors
from vaekit.runs import train_run
from vaekit.training import LAST, METRICS, read_metrics

NET = {"hidden_sizes": [16], "latent_dim": 2}
CASES = {
    # the IWAE schedule with 3 stages (1, 3, 9 epochs): the resumed part crosses into stage 2
    "iwae-schedule": ({"model": NET, "train": {"objective": "iwae", "num_samples": 3,
                                              "lr_schedule": "iwae", "schedule_stages": 3}},
                      2, 6),
    "dynamic-binarization": ({"model": NET, "data": {"binarization": "dynamic"}}, 2, 4),
    "nvil": ({"model": NET, "train": {"objective": "elbo-sf", "baseline": "nvil"}}, 2, 4),
    "kl-warmup": ({"model": NET, "train": {"kl_warmup_epochs": 3.0, "beta": 0.7}}, 2, 4),
    "vqvae-dead-codes": ({"model": {"model": "vqvae", "hidden_sizes": [16], "num_latents": 4,
                                    "embedding_dim": 2, "codebook_size": 8,
                                    "dead_code_threshold": 1.0}}, 2, 4),
    "monitor": ({"model": NET, "train": {"monitor_every": 1, "monitor_num_samples": 5,
                                         "monitor_examples": 10}}, 1, 3),
}


def _config(tiny_npz, grey_npz, spec: dict, epochs: int) -> Config:
    data = {"dataset": str(grey_npz if spec.get("data", {}).get("binarization") == "dynamic"
                           else tiny_npz), **spec.get("data", {})}
    train = {"batch_size": 32, "seed": 3, "device": "cpu", **spec.get("train", {}),
             "epochs": epochs}
    return Config.from_dict({"data": data, "model": spec.get("model", {}), "train": train})


def _train(config, out, resume=False):
    return train_run(config, out, resume=resume, progress=False, evaluate_after=False,
                     figures=False, log=lambda msg: None)


@pytest.mark.parametrize("case", list(CASES))
def test_resume_reaches_bit_identical_parameters(case, tiny_npz, grey_npz, tmp_path):
    spec, interrupted, total = CASES[case]
    _train(_config(tiny_npz, grey_npz, spec, total), tmp_path / "whole")
    _train(_config(tiny_npz, grey_npz, spec, interrupted), tmp_path / "parts")
    code = main(["train", "--resume", str(tmp_path / "parts"), "--epochs", str(total),
                 "--no-eval", "--no-progress"])            # as a user continues a run
    assert code == 0
    a, meta_a = load_tensors(tmp_path / "whole" / LAST)
    b, meta_b = load_tensors(tmp_path / "parts" / LAST)
    assert sorted(a) == sorted(b)
    assert any(k.startswith("optimizer.") for k in a) and "rng.cpu" in a
    for k in a:
        assert torch.equal(a[k], b[k]), k
    for key in ("epoch", "step", "best_epoch", "best_valid_score", "bad_epochs", "scheduler",
                "param_names"):
        assert meta_a[key] == meta_b[key], key
    timing = ("epoch_seconds", "seconds")
    ha, hb = (read_metrics(tmp_path / d / METRICS) for d in ("whole", "parts"))
    assert [{k: v for k, v in r.items() if k not in timing} for r in ha] == \
        [{k: v for k, v in r.items() if k not in timing} for r in hb]
    assert [r["epoch"] for r in hb] == list(range(1, total + 1))
    if case == "iwae-schedule":
        lrs = [r["lr"] for r in ha]
        assert len(set(lrs)) == 3 and lrs[4] < lrs[3] < lrs[0]      # stages 0, 1, 2
    if case == "monitor":
        assert all("monitor_log_likelihood" in r for r in ha)
    if case == "kl-warmup":
        assert "estimator.signal_mean" not in a         # the ELBO estimator has no state
