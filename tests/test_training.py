"""The trainer: learning, resume equality, divergence, early stopping, schedules, files."""

from __future__ import annotations

import os

import pytest
import torch

import vaekit.estimators as estimators
from vaekit.config import TrainConfig, load_config
from vaekit.data import eval_split, load_array_file
from vaekit.errors import CheckpointError, TrainingDivergedError
from vaekit.estimators import Losses, get_estimator
from vaekit.evaluation import log_likelihood
from vaekit.io import atomic_write, load_tensors, save_tensors
from vaekit.models import VAE
from vaekit.training import (
    LAST,
    Trainer,
    lr_at_epoch,
    read_metrics,
    schedule_length,
    validation_score,
)


def test_a_few_epochs_on_mnist_5k_raise_the_validation_score(mnist5k):
    torch.manual_seed(0)
    model = VAE(mnist5k.event_shape, latent_dim=8, hidden_sizes=(64,))
    model.init_decoder_bias(mnist5k.train.mean(0))
    valid = eval_split(mnist5k, "valid", "dynamic")
    before = validation_score(model, valid)
    cfg = TrainConfig(epochs=4, batch_size=50, lr=2e-3, device="cpu")
    result = Trainer(model, cfg, mnist5k.train, valid, dynamic_binarization=True,
                     progress=False).fit()
    after = validation_score(model, valid)
    assert after > before + 25, (before, after)        # e.g. -207 -> -165 nats
    assert [r["epoch"] for r in result.history] == [1, 2, 3, 4]
    assert result.history[-1]["train_bound"] > result.history[0]["train_bound"]
    assert after == pytest.approx(result.best_valid_score, abs=3.0)   # best weights restored


@pytest.mark.parametrize("objective,k", [("wake-sleep", 1), ("rws", 5)])
def test_wake_sleep_and_rws_raise_the_test_log_likelihood(mnist5k, objective, k):
    torch.manual_seed(0)
    model = VAE(mnist5k.event_shape, latent_dim=8, hidden_sizes=(64,))
    model.init_decoder_bias(mnist5k.train.mean(0))
    test = eval_split(mnist5k, "test", "dynamic")[:200]
    before = float(log_likelihood(model, test, 100).mean())
    cfg = TrainConfig(objective=objective, epochs=3, batch_size=50, lr=2e-3, device="cpu")
    Trainer(model, cfg, mnist5k.train, eval_split(mnist5k, "valid", "dynamic"),
            estimator=get_estimator(objective, num_samples=k), dynamic_binarization=True,
            progress=False).fit()
    after = float(log_likelihood(model, test, 100).mean())
    assert after > before + 30, (before, after)    # e.g. -212 -> -167 (ws), -149 (rws)


def _tiny_trainer(tiny_npz, run_dir, epochs, estimator=None, **overrides):
    d = load_array_file(tiny_npz)
    torch.manual_seed(0)
    model = VAE(d.event_shape, latent_dim=3, hidden_sizes=(16,))
    cfg = TrainConfig(epochs=epochs, batch_size=32, seed=7, device="cpu", **overrides)
    return Trainer(model, cfg, d.train, d.valid, estimator=estimator, run_dir=run_dir,
                   progress=False)


def test_resume_reaches_the_same_parameters_as_an_uninterrupted_run(tiny_npz, tmp_path):
    _tiny_trainer(tiny_npz, tmp_path / "a", 4).fit()
    _tiny_trainer(tiny_npz, tmp_path / "b", 2).fit()
    _tiny_trainer(tiny_npz, tmp_path / "b", 4).fit(resume=True)
    a, meta_a = load_tensors(tmp_path / "a" / LAST)
    b, meta_b = load_tensors(tmp_path / "b" / LAST)
    assert sorted(a) == sorted(b)
    assert any(k.startswith("optimizer.") for k in a) and "rng.cpu" in a
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert meta_a["epoch"] == meta_b["epoch"] == 4 and meta_a["step"] == meta_b["step"]
    ha, hb = read_metrics(tmp_path / "a" / "metrics.jsonl"), \
        read_metrics(tmp_path / "b" / "metrics.jsonl")
    assert [r["train_bound"] for r in ha] == [r["train_bound"] for r in hb]
    assert [r["epoch"] for r in hb] == [1, 2, 3, 4]


def test_a_nan_loss_stops_training_and_keeps_the_last_good_checkpoint(tiny_npz, tmp_path,
                                                                      monkeypatch):
    good = _tiny_trainer(tiny_npz, tmp_path / "good", 2)
    good.fit()
    steps_per_epoch = -(-len(load_array_file(tiny_npz).train) // 32)

    class Poisoned(estimators.ELBO):
        calls = 0

        def forward(self, model, x):
            Poisoned.calls += 1
            losses = super().forward(model, x)
            if Poisoned.calls > 2 * steps_per_epoch:         # epoch 3 goes bad
                return Losses(losses.bound * float("nan"), losses.loss * float("nan"))
            return losses

    monkeypatch.setitem(estimators.ESTIMATORS, "poisoned", Poisoned)
    t = _tiny_trainer(tiny_npz, tmp_path / "bad", 5, objective="poisoned")
    with pytest.raises(TrainingDivergedError, match="epoch 3.*last good checkpoint \\(epoch 2\\)"):
        t.fit()
    kept, meta = load_tensors(tmp_path / "bad" / LAST)
    ref, _ = load_tensors(tmp_path / "good" / LAST)
    assert meta["epoch"] == 2
    for k in ref:
        assert torch.equal(kept[k], ref[k]), k
    assert len(read_metrics(tmp_path / "bad" / "metrics.jsonl")) == 2


def test_early_stopping_after_patience_epochs_without_improvement(tiny_npz, tmp_path,
                                                                 monkeypatch):
    class Ascent(estimators.ELBO):       # minimises the ELBO: validation gets worse
        def forward(self, model, x):
            losses = super().forward(model, x)
            return Losses(losses.bound, -losses.loss)

    monkeypatch.setitem(estimators.ESTIMATORS, "ascent", Ascent)
    result = _tiny_trainer(tiny_npz, tmp_path / "r", 50, objective="ascent", patience=2,
                           lr=1e-2).fit()
    assert result.epochs == 3 and result.best_epoch == 1
    assert "early stopping" in result.stopped


def test_iwae_learning_rate_schedule():
    cfg = load_config("iwae-paper-1layer").train
    assert schedule_length(cfg) == 3280
    lrs = [lr_at_epoch(cfg, e) for e in range(3280)]
    stage_lengths = [sum(1 for v in lrs if v == pytest.approx(1e-3 * 10 ** (-i / 7)))
                     for i in range(8)]
    assert stage_lengths == [3 ** i for i in range(8)]
    assert lrs[0] == 1e-3 and lrs[-1] == pytest.approx(1e-4)
    assert lr_at_epoch(TrainConfig(lr=3e-4), 99) == 3e-4


def test_an_interrupted_write_keeps_the_previous_file(tmp_path, monkeypatch):
    path = tmp_path / "last.safetensors"
    save_tensors(path, {"w": torch.ones(3)}, {"epoch": 1})

    def crash(*args, **kwargs):
        raise KeyboardInterrupt    # the process is stopped just before the rename

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(KeyboardInterrupt):
        save_tensors(path, {"w": torch.zeros(3)}, {"epoch": 2})
    monkeypatch.undo()
    tensors, meta = load_tensors(path)
    assert torch.equal(tensors["w"], torch.ones(3)) and meta == {"epoch": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["last.safetensors"]
    atomic_write(tmp_path / "t.txt", "x")
    assert (tmp_path / "t.txt").read_text() == "x"


def test_a_truncated_checkpoint_is_a_clear_error(tmp_path):
    path = tmp_path / "best.safetensors"
    save_tensors(path, {"w": torch.ones(1000)})
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        load_tensors(path)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_tensors(tmp_path / "nope.safetensors")


def test_kl_warmup_raises_beta_linearly(tiny_npz, tmp_path):
    t = _tiny_trainer(tiny_npz, None, 1, kl_warmup_epochs=2.0,
                      estimator=get_estimator("elbo", beta=0.8))
    t.fit()
    n = len(load_array_file(tiny_npz).train)
    last_start = (n - 1) // 32 * 32          # the last batch of epoch 1 starts here
    assert t.estimator.beta == pytest.approx(0.8 * (last_start / n) / 2)
    t = _tiny_trainer(tiny_npz, None, 3, kl_warmup_epochs=2.0,
                      estimator=get_estimator("elbo", beta=0.8))
    t.fit()
    assert t.estimator.beta == pytest.approx(0.8)


def test_monitor_subset_is_fixed_random_and_ordered():
    from vaekit.runs import monitor_subset

    x = torch.arange(1000.0).unsqueeze(1)
    a, b = monitor_subset(x, 100), monitor_subset(x, 100)
    assert torch.equal(a, b)                                   # the same for every run
    v = a.squeeze(1)
    assert v.unique().numel() == 100 and torch.all(v[1:] > v[:-1])
    assert v.max() > 500                                       # not the split's first examples
    assert monitor_subset(x, 5000) is x


def test_figures_show_a_fixed_random_draw_of_the_test_split():
    # Binarized MNIST's test split starts with a run of zeros: figures built from x[:n]
    # interpolated between two zeros. The shown examples are a seeded draw, in random order.
    from vaekit.sampling import shown_examples

    x = torch.arange(1000.0).unsqueeze(1)
    a = shown_examples(x, 12)
    assert torch.equal(a, shown_examples(x, 12))               # the same for every run
    v = a.squeeze(1)
    assert v.unique().numel() == 12 and not torch.all(v[1:] > v[:-1])
    assert v.max() > 100                                       # not the split's first rows
    assert shown_examples(x[:5], 12).shape == (5, 1)


def test_validation_by_the_importance_weighted_bound(tiny_npz, tmp_path):
    """--valid-num-samples K scores each epoch by L_K of the validation set, on draws of its
    own: the training does not depend on K, and the best checkpoint is the epoch with the
    highest L_K (recomputed here from the saved weights)."""
    plain = _tiny_trainer(tiny_npz, tmp_path / "a", 4, objective="iwae")
    plain.fit()
    _tiny_trainer(tiny_npz, tmp_path / "c", 4, objective="iwae", valid_num_samples=3).fit()
    bound = _tiny_trainer(tiny_npz, tmp_path / "b", 4, objective="iwae", valid_num_samples=7)
    result = bound.fit()
    a, _ = load_tensors(tmp_path / "c" / LAST)
    b, _ = load_tensors(tmp_path / "b" / LAST)
    for k in a:
        if k.startswith("model."):
            assert torch.equal(a[k], b[k]), k
    history = read_metrics(tmp_path / "b" / "metrics.jsonl")
    scores = [r["valid_score"] for r in history]
    assert result.best_epoch == 1 + scores.index(max(scores))
    model = bound.model
    best, _ = load_tensors(tmp_path / "b" / "best.safetensors")
    model.load_state_dict(best)
    torch.manual_seed(0)
    again = float(log_likelihood(model, bound.valid_x, 7).mean())
    assert again == pytest.approx(max(scores), abs=1e-4)
    # and it is not the ELBO the default validation records
    elbo_scores = [r["valid_score"] for r in read_metrics(tmp_path / "a" / "metrics.jsonl")]
    assert all(s > e for s, e in zip(scores, elbo_scores, strict=True))


def test_validation_by_a_bound_needs_a_model_with_one():
    from vaekit.config import Config
    from vaekit.errors import ConfigError
    c = Config.from_dict({"model": {"model": "autoencoder"}, "train": {"valid_num_samples": 5}})
    with pytest.raises(ConfigError, match="--valid-num-samples scores a bound"):
        c.validate()


def test_a_checkpoint_is_written_before_the_first_epoch(tiny_npz, tmp_path):
    """Epoch 0 is a checkpoint: a run stopped in its first epoch resumes to the parameters of
    an uninterrupted run."""
    t = _tiny_trainer(tiny_npz, tmp_path / "b", 0)
    t.fit()
    tensors, meta = load_tensors(tmp_path / "b" / LAST)
    assert meta["epoch"] == 0 and meta["step"] == 0
    _tiny_trainer(tiny_npz, tmp_path / "a", 2).fit()
    _tiny_trainer(tiny_npz, tmp_path / "b", 2).fit(resume=True)
    a, _ = load_tensors(tmp_path / "a" / LAST)
    b, _ = load_tensors(tmp_path / "b" / LAST)
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_a_diverged_epoch_names_the_batch_and_the_first_non_finite_tensor(tmp_path,
                                                                         monkeypatch):
    """The epoch is replayed from the last checkpoint to find where it went non-finite: here
    the gradient of one decoder weight (finite loss, NaN gradient) on the batch holding a
    marked example, in epoch 1, so the replay starts from the epoch-0 checkpoint."""
    import numpy as np
    from conftest import make_binary_images
    x = make_binary_images(200).reshape(200, 64)
    x[123] = 1                                                   # the marker: all ones
    np.save(tmp_path / "marked.npy", x.astype(bool))
    d = load_array_file(tmp_path / "marked.npy")
    marker = int(np.flatnonzero(d.train.sum(1).numpy() == 64)[0])

    torch.manual_seed(0)
    model = VAE(d.event_shape, latent_dim=3, hidden_sizes=(16,))
    target = "decoder_net.0.weight"
    assert target in dict(model.named_parameters())

    class Exploding(estimators.ELBO):
        def forward(self, model, xb):
            losses = super().forward(model, xb)
            if bool((xb.sum(1) == 64).any()):
                w = dict(model.named_parameters())[target]
                kink = (w - w.detach()).abs().sqrt().sum()          # value 0, gradient NaN
                return Losses(losses.bound, losses.loss + kink)
            return losses

    monkeypatch.setitem(estimators.ESTIMATORS, "exploding", Exploding)
    cfg = TrainConfig(epochs=3, batch_size=32, seed=7, device="cpu", objective="exploding")
    t = Trainer(model, cfg, d.train, d.valid, run_dir=tmp_path / "r", progress=False)
    torch.manual_seed(7)
    batch = int((torch.randperm(d.train.shape[0]) == marker).nonzero()) // 32 + 1
    with pytest.raises(TrainingDivergedError,
                       match=rf"epoch 1 \(batch {batch}\): the gradient of {target} is the "
                             r"first non-finite tensor; the last good checkpoint \(epoch 0\)"):
        t.fit()
