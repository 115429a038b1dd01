"""The training step as one CUDA graph (``vaekit train --cuda-graphs``).

On a GPU a step of a small network (the IWAE paper's 784-200-200-50 at batch 20) is a few
hundred kernel launches, each far shorter than the CPU's time to issue it: the step's cost is
the launches. With ``--cuda-graphs`` the trainer records one whole step, exactly the eager
step of :meth:`vaekit.training.Trainer._steps` (the batch gathered from the data on the device
by its permutation slice, the dynamic binarization, the estimator's loss, the backward pass
and fused Adam's update), as a ``torch.cuda.CUDAGraph`` ("whole-network capture", PyTorch's
CUDA semantics notes) and replays it at every full batch: one launch per step.

What stays as it is (tests/test_cuda.py checks the parameters against eager steps, on a GPU):

* the numbers: a replay runs the kernels the eager step runs, on the same parameter, gradient
  and Adam-state tensors, and PyTorch's Philox generator is graph-safe (each replay draws from
  the generator's current offset and advances it as the eager step would), so the random
  stream, and with it ``--resume``, continue as they do without graphs;
* the partial last batch of an epoch (another shape), which runs eagerly;
* the learning rate: the graph holds it as a constant, so the step is captured again when the
  schedule changes it (at most once per epoch; never with the constant schedule).

Three eager warm-up steps on a side stream come first (they initialise Adam's state, cuBLAS's
workspaces and autograd's buffers, as capture requires); then the step is captured and
replayed. Adam is built with ``capturable=True`` (its step counts stay on the device).

Where a graph cannot serve, the steps run eagerly and one line says why: no CUDA device,
several processes (torchrun), a callback that changes every step (KL warm-up), labels
(semi-supervised and conditional models), or a capture that failed (an estimator that
synchronises with the host inside its step, for instance); training goes on either way.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING

import torch

from .data import to_values
from .precision import training_precision

if TYPE_CHECKING:
    from .training import Trainer

WARMUP_STEPS = 3


def unavailable(trainer: Trainer) -> str | None:
    """Why ``trainer`` cannot replay its steps as a CUDA graph, or ``None`` when it can."""
    if trainer.device.type != "cuda":
        return f"it needs a CUDA device (this run trains on {trainer.device.type})"
    if trainer.world.distributed:
        return "it is not built for several processes (torchrun)"
    if any(c.every_step for c in trainer.callbacks):
        return "a callback changes every step (KL warm-up)"
    if trainer.train_y is not None or trainer.labelled is not None:
        return "the steps of labelled models are not captured"
    return None


class GraphedSteps:
    """The full-batch training steps of one :class:`~vaekit.training.Trainer` as a replayed
    CUDA graph (see the module).

    Args:
        trainer: the trainer; its optimizer must be ``capturable``.
        log: where the one-line fallback message goes.
    """

    def __init__(self, trainer: Trainer, log: Callable[[str], None]) -> None:
        self.trainer = trainer
        self.log = log
        self.failed = False
        self.replays = 0
        self.captures = 0
        self.reset()

    def reset(self) -> None:
        """Drop the graph (after the optimizer's state tensors were replaced, e.g. by loading a
        checkpoint): the next steps warm up and capture again."""
        self.graph: torch.cuda.CUDAGraph | None = None
        self.key: tuple | None = None
        self.warm = 0
        self.static: tuple[torch.Tensor, torch.Tensor, object] | None = None

    def _key(self, idx: torch.Tensor) -> tuple:
        return idx.shape[0], tuple(float(g["lr"]) for g in self.trainer.optimizer.param_groups)

    def _body(self, idx: torch.Tensor):
        """The step (gradients must be ``None`` on entry: the backward pass assigns them)."""
        t = self.trainer
        x = to_values(t.train_x[idx], t.divisor)
        if t.dynamic_binarization:
            x = torch.bernoulli(x)
        with training_precision(t.config.precision, t.device):
            losses = t.estimator(t.model, x)
        losses.loss.backward()
        t.optimizer.step()
        return x, losses

    def eager(self, idx: torch.Tensor):
        """One eager step on the batch ``idx``."""
        self.trainer.optimizer.zero_grad(set_to_none=True)
        return self._body(idx)

    def step(self, idx: torch.Tensor):
        """One training step on the batch of indices ``idx: (B,)``; returns ``(x, losses)``
        (the graph's static tensors, overwritten by the next replay)."""
        if self.failed:
            return self.eager(idx)
        key = self._key(idx)
        if self.graph is not None and key == self.key:
            static_idx, x, losses = self.static
            static_idx.copy_(idx)
            self.graph.replay()
            self.replays += 1
            return x, losses
        if self.warm < WARMUP_STEPS:
            self.warm += 1
            device = self.trainer.device
            side = torch.cuda.Stream(device)
            side.wait_stream(torch.cuda.current_stream(device))
            with torch.cuda.stream(side):
                out = self.eager(idx)
            torch.cuda.current_stream(device).wait_stream(side)
            return out
        return self._capture(idx, key)

    def _capture(self, idx: torch.Tensor, key: tuple):
        self.graph, self.static = None, None          # an old graph's memory goes back
        static_idx = idx.clone()
        self.trainer.optimizer.zero_grad(set_to_none=True)
        graph = torch.cuda.CUDAGraph()
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)   # capture's notes on the RNG
                with torch.cuda.graph(graph):
                    x, losses = self._body(static_idx)
        except Exception as e:  # noqa: BLE001 - any capture failure: train eagerly
            self.failed = True
            torch.cuda.synchronize(self.trainer.device)
            first = str(e).splitlines()[0][:160] if str(e) else ""
            self.log(f"--cuda-graphs: capturing the training step failed ({type(e).__name__}: "
                     f"{first}); the steps run eagerly")
            return self.eager(idx)
        self.graph, self.key, self.static = graph, key, (static_idx, x, losses)
        self.captures += 1
        graph.replay()                   # capture records the step; the replay runs it
        self.replays += 1
        return x, losses
