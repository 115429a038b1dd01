"""Small pieces of the training loop that run around the steps: validation and the best
checkpoint, early stopping, the monitored test bound, KL warm-up.

A :class:`Callback` sees the trainer at the start of the fit, optionally before every step
(``on_step``, only for callbacks that set ``every_step``), and at the end of every epoch with
the epoch's record (the line of ``metrics.jsonl``), which it may extend.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from .evaluation import log_likelihood, model_device


class Callback:
    every_step = False        # call on_step before every step (costs a Python call a step)

    def on_fit_start(self, trainer) -> None:
        """Before the first epoch of this session (after a resume too)."""

    def on_step(self, trainer, epoch_progress: float) -> None:
        """Before a step; ``epoch_progress`` = epoch index + fraction of the epoch done."""

    def on_epoch_end(self, trainer, record: dict) -> None:
        """After an epoch's steps; may add fields to ``record`` or set ``trainer.stop``."""


@torch.no_grad()
def batched_score(score: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor,
                  batch_size: int = 2000) -> float:
    """The mean of ``score(x_batch)`` (a ``(B,)`` tensor) over ``x``, one sync at the end."""
    total = torch.zeros((), device=x.device, dtype=torch.float64)
    for i in range(0, x.shape[0], batch_size):
        total += score(x[i:i + batch_size]).sum()
    return float(total) / x.shape[0]


class Validation(Callback):
    """The model-selection score on the validation set after every epoch (higher is better:
    a VAE's ELBO, an autoencoder's minus reconstruction error), recorded as ``valid_score``;
    a better score saves the best weights (``best.safetensors``)."""

    def __init__(self, x: torch.Tensor, score: Callable[[torch.Tensor], torch.Tensor],
                 name: str = "ELBO") -> None:
        self.x, self.score, self.name = x, score, name

    def on_epoch_end(self, trainer, record: dict) -> None:
        model = trainer.model
        was_training = model.training
        model.eval()
        try:
            valid = batched_score(self.score, self.x)
        finally:
            model.train(was_training)
        record["valid_score"] = valid
        r = trainer.result
        if valid > r.best_valid_score:
            r.best_valid_score, r.best_epoch, r.bad_epochs = valid, record["epoch"], 0
            trainer.save_best()
        else:
            r.bad_epochs += 1


class BoundValidation(Validation):
    """:class:`Validation` by the importance-weighted bound L_K (K = ``num_samples``) of the
    validation set, the model-selection score of IWAE-type objectives. Its samples come from a
    generator seeded 0 each epoch, apart from the training's random stream (as
    :class:`Monitor`'s), so every epoch is scored on the same draws and the training is the one
    it would be without it."""

    def __init__(self, x: torch.Tensor, num_samples: int) -> None:
        super().__init__(x, self._bound, f"L_{num_samples}")
        self.num_samples = num_samples
        self._model = None

    def _bound(self, xb: torch.Tensor) -> torch.Tensor:
        return log_likelihood(self._model, xb, self.num_samples)

    def on_epoch_end(self, trainer, record: dict) -> None:
        self._model = trainer.model
        device = model_device(trainer.model)
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(0)
            super().on_epoch_end(trainer, record)


class EarlyStopping(Callback):
    """Stop after ``patience`` epochs without a better validation score."""

    def __init__(self, patience: int) -> None:
        self.patience = patience

    def on_epoch_end(self, trainer, record: dict) -> None:
        if trainer.result.bad_epochs >= self.patience:
            trainer.stop = (f"early stopping: no better validation score in {self.patience} "
                            "epochs")


class Monitor(Callback):
    """Record the test bound L_k (``monitor_log_likelihood``, k = ``num_samples``) on ``x`` after
    the first epoch, every ``every`` epochs and at the last. Its samples come from a generator
    seeded 0 each time, apart from the training's random stream: monitoring does not change
    the trained model, and every epoch is scored on the same draws."""

    def __init__(self, x: torch.Tensor, num_samples: int, every: int) -> None:
        self.x, self.num_samples, self.every = x, num_samples, every

    def on_epoch_end(self, trainer, record: dict) -> None:
        epoch, total = record["epoch"], trainer.total_epochs
        if not (epoch == 1 or epoch % self.every == 0 or epoch == total):
            return
        device = model_device(trainer.model)
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(0)
            ll = log_likelihood(trainer.model, self.x, self.num_samples)
        record["monitor_log_likelihood"] = float(ll.mean())
        record["monitor_num_samples"] = self.num_samples


class KLWarmup(Callback):
    """Raise the estimator's KL weight linearly from 0 to ``beta`` over ``epochs`` epochs,
    step by step (Bowman et al. 2016; Sonderby et al. 2016)."""

    every_step = True

    def __init__(self, beta: float, epochs: float) -> None:
        self.beta, self.epochs = beta, epochs

    def on_step(self, trainer, epoch_progress: float) -> None:
        trainer.estimator.kl_weight = self.beta * min(1.0, epoch_progress / self.epochs)
