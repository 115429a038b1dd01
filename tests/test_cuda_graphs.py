"""``--cuda-graphs`` where it cannot serve: the trainer says why in one line and trains as
without it (the captured path itself is tested on a GPU, in tests/test_cuda.py)."""

from __future__ import annotations

import json

import pytest
import torch

from vaekit.config import TrainConfig
from vaekit.data import load_array_file
from vaekit.io import load_tensors, save_tensors
from vaekit.models.vae import VAE
from vaekit.training import LAST, Trainer


def _trainer(tiny_npz, run_dir, epochs=2, **overrides):
    d = load_array_file(tiny_npz)
    torch.manual_seed(0)
    model = VAE(d.event_shape, latent_dim=3, hidden_sizes=(16,))
    cfg = TrainConfig(epochs=epochs, batch_size=32, seed=7, device="cpu", tracking="none",
                      **overrides)
    lines: list[str] = []
    return Trainer(model, cfg, d.train, d.valid, run_dir=run_dir, progress=False,
                   log=lines.append), lines


def test_cuda_graphs_on_the_cpu_say_why_and_train_as_eager_steps(tiny_npz, tmp_path):
    graphed, lines = _trainer(tiny_npz, tmp_path / "g", cuda_graphs=True)
    eager, quiet = _trainer(tiny_npz, tmp_path / "e")
    graphed.fit()
    eager.fit()
    assert graphed.graphs is None and not quiet
    assert lines == ["--cuda-graphs: it needs a CUDA device (this run trains on cpu); the "
                     "steps run eagerly"]
    for (name, a), b in zip(graphed.model.state_dict().items(),
                            eager.model.state_dict().values(), strict=True):
        assert torch.equal(a, b), name


def test_kl_warmup_is_a_reason_not_to_capture(tiny_npz, tmp_path, monkeypatch):
    import vaekit.cuda_graphs as cg
    # what the trainer would decide on a GPU, asked of the CPU trainer with the device check
    # passed: the every-step callback is named
    trainer, _ = _trainer(tiny_npz, None, kl_warmup_epochs=1.0)
    monkeypatch.setattr(trainer, "device", torch.device("cuda"))
    assert cg.unavailable(trainer) == "a callback changes every step (KL warm-up)"
    plain, _ = _trainer(tiny_npz, None)
    monkeypatch.setattr(plain, "device", torch.device("cuda"))
    assert cg.unavailable(plain) is None


def test_a_checkpoint_of_a_capturable_optimizer_resumes_on_the_cpu(tiny_npz, tmp_path):
    """A run trained with --cuda-graphs saved Adam's groups with capturable=True; resumed
    without graphs, how Adam runs (fused, capturable) is the resuming optimizer's, not the
    checkpoint's; the hyperparameters are the checkpoint's."""
    run = tmp_path / "run"
    first, _ = _trainer(tiny_npz, run, epochs=1)
    first.fit()
    tensors, meta = load_tensors(run / LAST)
    for g in meta["param_groups"]:
        g["capturable"] = True
    save_tensors(run / LAST, tensors, meta)
    resumed, _ = _trainer(tiny_npz, run, epochs=2)
    resumed.fit(resume=True)
    assert [g["capturable"] for g in resumed.optimizer.param_groups] == [False]
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2]


@pytest.mark.parametrize("flag", [True, False])
def test_cuda_graphs_is_a_config_field_that_a_resume_may_change(flag):
    assert TrainConfig(cuda_graphs=flag).cuda_graphs is flag
    from vaekit.cli import RESUMABLE_FIELDS
    assert "cuda_graphs" in RESUMABLE_FIELDS
