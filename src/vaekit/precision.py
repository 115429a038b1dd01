"""Training precision (``--precision fp32|tf32|bf16``).

* ``fp32``: everything in float32 (the default).
* ``tf32``: float32 tensors, CUDA matrix products and convolutions on TensorFloat-32 tensor
  cores (``torch.backends.cuda.matmul.allow_tf32``, ``torch.backends.cudnn.allow_tf32``;
  10-bit mantissas in the products, float32 accumulation). No effect on the CPU.
* ``bf16``: the encoder's and decoder's networks run under ``torch.autocast`` in bfloat16
  (their matrix products and convolutions; parameters, gradients and Adam stay float32) and
  hand float32 outputs to the distributions: log-densities, KL terms, the bounds'
  log-sum-exps and their means are computed in float32.

Only the training steps use it: validation, the monitor and ``vaekit evaluate`` (the k=5000
log-likelihood) run in float32, so a bf16-trained model's reported numbers are those of its
weights, not of a low-precision forward pass.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Callable, Iterator

import torch

PRECISIONS = ("fp32", "tf32", "bf16")

_AUTOCAST: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "vaekit_autocast_device", default=None)


@contextlib.contextmanager
def training_precision(precision: str, device: torch.device) -> Iterator[None]:
    """Within the block, networks follow ``precision`` on ``device`` (see the module).

    Raises:
        ValueError: an unknown precision.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "fp32":
        yield
        return
    if precision == "tf32":
        old = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
        try:
            yield
        finally:
            torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old
        return
    token = _AUTOCAST.set(device.type)
    try:
        yield
    finally:
        _AUTOCAST.reset(token)


def network_call(forward: Callable[[torch.Tensor], torch.Tensor],
                 x: torch.Tensor) -> torch.Tensor:
    """``forward(x)``, under bfloat16 autocast within :func:`training_precision` ``("bf16")``
    (the output cast back to float32), else as it is."""
    device = _AUTOCAST.get()
    if device is None:
        return forward(x)
    # no cast cache: each weight is used once per call, and a cache must not outlive a CUDA
    # graph capture (vaekit.cuda_graphs)
    with torch.autocast(device, dtype=torch.bfloat16, cache_enabled=False):
        out = forward(x)
    return out.float()
