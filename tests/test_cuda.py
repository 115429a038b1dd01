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


def _graph_trainer(run_dir, cuda_graphs, epochs, estimator=None, **train):
    """A VAE on 1,050 random binary vectors at batch 100: ten full batches (replayed) and one
    of 50 (eager) per epoch."""
    from vaekit.config import TrainConfig
    from vaekit.training import Trainer
    g = torch.Generator().manual_seed(3)
    x = (torch.rand(1100, 64, generator=g) < 0.3).float()
    torch.manual_seed(0)
    model = VAE(64, latent_dim=4, hidden_sizes=(32,))
    cfg = TrainConfig(epochs=epochs, batch_size=100, seed=5, device="cuda", tracking="none",
                      cuda_graphs=cuda_graphs, **train)
    lines: list[str] = []
    trainer = Trainer(model, cfg, x[:1050], x[1050:], estimator=estimator, run_dir=run_dir,
                      progress=False, dynamic_binarization=True, log=lines.append)
    return trainer, lines


def _assert_same_parameters(a, b, atol):
    for (name, p), q in zip(a.model.state_dict().items(), b.model.state_dict().values(),
                            strict=True):
        torch.testing.assert_close(p, q, rtol=0, atol=atol, msg=name)


@pytest.mark.parametrize("objective", ["elbo", "iwae"])
def test_cuda_graph_steps_match_eager_steps(objective):
    """3 epochs, the IWAE schedule with 2 stages (the rate changes after epoch 1: captured
    twice), dynamic binarization and reparameterization noise drawn inside the graph."""
    kw = dict(objective=objective, lr_schedule="iwae", schedule_stages=2)
    graphed, lines = _graph_trainer(None, True, 3, **kw)
    eager, _ = _graph_trainer(None, False, 3, **kw)
    graphed.fit(restore_best=False)
    eager.fit(restore_best=False)
    assert not lines, lines
    assert graphed.graphs.captures == 2 and not graphed.graphs.failed
    assert graphed.graphs.replays == 3 * 10 - 3     # 3 eager warm-up steps, first epoch only
    _assert_same_parameters(graphed, eager, atol=1e-5)
    ra, rb = graphed.result.history, eager.result.history
    assert [r["lr"] for r in ra] == [r["lr"] for r in rb]
    for a, b in zip(ra, rb, strict=True):
        assert abs(a["train_bound"] - b["train_bound"]) < 1e-4


def test_cuda_graph_run_resumes_where_the_uninterrupted_one_ends(tmp_path):
    whole, _ = _graph_trainer(tmp_path / "whole", True, 3)
    whole.fit(restore_best=False)
    part, _ = _graph_trainer(tmp_path / "part", True, 1)
    part.fit(restore_best=False)
    rest, _ = _graph_trainer(tmp_path / "part", True, 3)
    rest.fit(resume=True, restore_best=False)
    _assert_same_parameters(whole, rest, atol=1e-6)


def test_a_capture_that_fails_falls_back_to_eager_steps():
    """An estimator that reads its loss on the host inside the step cannot be captured: one
    line says so and the run trains on, as the eager one does."""
    elbo = type(get_estimator("elbo"))

    class Syncing(elbo):                        # ELBO with a host read in its step
        def forward(self, model, x):
            losses = super().forward(model, x)
            if float(losses.loss.detach()) > 1e9:        # illegal while a stream is capturing
                raise AssertionError("unreachable")
            return losses

    graphed, lines = _graph_trainer(None, True, 2, estimator=Syncing())
    eager, _ = _graph_trainer(None, False, 2, estimator=Syncing())
    graphed.fit(restore_best=False)
    eager.fit(restore_best=False)
    assert graphed.graphs.failed and len(lines) == 1 and "capturing the training step failed" \
        in lines[0]
    _assert_same_parameters(graphed, eager, atol=1e-5)
