"""Training in several processes: ``torchrun --nproc-per-node N -m vaekit train ...``.

torchrun starts N copies of ``vaekit train`` with ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
``MASTER_ADDR`` and ``MASTER_PORT`` set; :func:`init_from_env` joins them in one process group
(gloo on the CPU, NCCL on CUDA, each rank on GPU ``LOCAL_RANK``). Then, per step of the global
batch B (``--batch-size``):

* every rank draws the same permutation (every rank's random stream starts from the same seed
  and makes the same draws, so the streams stay equal), gathers the global batch, binarizes
  it (dynamic binarization) and keeps its own contiguous shard of ``ceil(B / N)`` examples;
* the reparameterization noise is drawn for the global batch and sliced the same way
  (:func:`standard_normal` within :func:`shard`), so each example gets the noise it gets in one
  process: N processes reach the parameters of one process with the same global batch, to
  float rounding (tests/test_distributed.py). Draws of other estimators (score-function
  ``q.sample``) are of the shard's shape; they are unbiased, but not those of one process;
* the gradients are all-reduced, each rank's weighted by its share of the batch (one flat
  buffer: what DDP's reducer does with one bucket; DDP itself cannot be used, since the
  estimators call ``model.encoder`` and ``model.decoder`` rather than ``forward``);
* validation, the monitor and KL warm-up run alike on every rank (the same draws keep the
  random streams equal); rank 0 alone writes checkpoints, ``metrics.jsonl``, the tracker's
  logs and figures;
* the final evaluation is sharded: each rank scores its contiguous part of the test set and
  the per-example values are gathered (:func:`sharded_evaluation`); rank 0 saves it.

As every rank's random state is the same, the one state the checkpoint holds is each rank's:
a resumed multi-process run continues exactly (and so does a resume with another N: the
shards are slices of the same global batch).

Several nodes: the same command on each with ``--nnodes M --node-rank i
--rdzv-backend c10d --rdzv-endpoint HOST:PORT`` (torchrun's rendezvous); nothing in vaekit
changes, but the run directory must be on a file system rank 0 writes and every rank can read
(for ``--resume``).
"""

from __future__ import annotations

import contextlib
import contextvars
import datetime
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import torch

from .errors import ConfigError


@dataclass(frozen=True)
class World:
    """This process's place among the training processes (one process: rank 0 of 1)."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that writes."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1

    def shard(self, batch: int) -> tuple[int, int]:
        """``(lo, hi)``: this rank's contiguous slice of a global batch of ``batch`` examples
        (``ceil(batch / size)`` each, the last ranks fewer)."""
        per = -(-batch // self.size)
        lo = min(self.rank * per, batch)
        return lo, min(lo + per, batch)


_WORLD = World()


def world() -> World:
    """The current :class:`World` (set by :func:`init_from_env`)."""
    return _WORLD


def launched() -> bool:
    """Whether this process was started by torchrun with more than one process."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init_from_env(device: str = "auto", timeout_minutes: float = 60.0) -> World:
    """Join the process group torchrun describes in the environment (nothing to do for one
    process). The backend is NCCL when the run trains on CUDA, else gloo; on CUDA each rank
    uses GPU ``LOCAL_RANK`` (:func:`device_for`).

    Raises:
        ConfigError: ``WORLD_SIZE`` is set but ``RANK`` is missing or not a number.
    """
    global _WORLD
    if not launched():
        return _WORLD
    import torch.distributed as dist
    try:
        rank, size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
        local = int(os.environ.get("LOCAL_RANK", rank))
    except (KeyError, ValueError) as e:
        raise ConfigError(f"WORLD_SIZE is set but {e} is missing or not a number: start "
                          "several processes with torchrun --nproc-per-node N -m vaekit "
                          "train ...") from None
    cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    if cuda:
        torch.cuda.set_device(local % max(torch.cuda.device_count(), 1))
    if not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo",
                                timeout=datetime.timedelta(minutes=timeout_minutes))
    _WORLD = World(rank, size, local)
    return _WORLD


def shutdown() -> None:
    """Leave the process group (when one was joined)."""
    global _WORLD
    if _WORLD.distributed:
        import torch.distributed as dist
        if dist.is_initialized():
            dist.destroy_process_group()
    _WORLD = World()


def device_for(name: str, w: World | None = None) -> str:
    """The device string of this rank: ``auto``/``cuda`` become ``cuda:LOCAL_RANK`` under
    torchrun; others unchanged."""
    w = w or _WORLD
    if w.distributed and torch.cuda.is_available() and name in ("auto", "cuda"):
        return f"cuda:{w.local_rank % torch.cuda.device_count()}"
    return name


# --------------------------------------------------------------------------- noise
_SHARD: contextvars.ContextVar[tuple[int, int, int] | None] = contextvars.ContextVar(
    "vaekit_shard", default=None)


@contextlib.contextmanager
def shard(batch: int, lo: int, hi: int) -> Iterator[None]:
    """Within the block, :func:`standard_normal` draws of shape ``(..., hi - lo, D)`` are the
    rows ``lo:hi`` of a draw for the whole batch ``(..., batch, D)``."""
    token = _SHARD.set((batch, lo, hi))
    try:
        yield
    finally:
        _SHARD.reset(token)


def standard_normal(shape: Iterable[int], dtype: torch.dtype | None = None,
                    device: torch.device | str | None = None) -> torch.Tensor:
    """eps ~ N(0, I) of ``shape``, the same numbers as ``Normal.rsample``'s
    (``torch.empty(shape).normal_()``, which ``torch.randn`` is; ``randn`` also works under
    ``torch.func.vmap``). Within :func:`shard`, a shape whose batch axis (the
    one before the last) is the shard's is drawn for the global batch and sliced, so that
    each example's noise does not depend on how the batch is split over processes."""
    shape = torch.Size(shape)
    s = _SHARD.get()
    if s is not None and len(shape) >= 2 and shape[-2] == s[2] - s[1] != s[0]:
        full = torch.randn((*shape[:-2], s[0], shape[-1]), dtype=dtype, device=device)
        return full[..., s[1]:s[2], :]
    return torch.randn(shape, dtype=dtype, device=device)      # = empty(shape).normal_()


# --------------------------------------------------------------------------- evaluation
_EVAL_SHARDED: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "vaekit_sharded_evaluation", default=False)


@contextlib.contextmanager
def sharded_evaluation() -> Iterator[None]:
    """Within the block, :func:`vaekit.evaluation.evaluate_terms` splits its examples over
    the ranks (:func:`evaluation_shard`) and gathers the per-example results. Only for a
    final evaluation: the ranks' random streams part ways (each draws for its own shard)."""
    token = _EVAL_SHARDED.set(True)
    try:
        yield
    finally:
        _EVAL_SHARDED.reset(token)


def evaluation_shard(n: int) -> tuple[int, int] | None:
    """``(lo, hi)``: this rank's examples of an evaluation of ``n`` within
    :func:`sharded_evaluation` under torchrun; ``None`` otherwise (all of them)."""
    if not (_WORLD.distributed and _EVAL_SHARDED.get()):
        return None
    return _WORLD.shard(n)


def gather_rows(t: torch.Tensor, n: int) -> torch.Tensor:
    """The ``(n, ...)`` concatenation, in rank order, of every rank's rows ``t`` (this rank's
    :func:`evaluation_shard` of ``n``): one all-gather of equal, padded blocks."""
    if not _WORLD.distributed:
        return t
    import torch.distributed as dist
    sizes = [World(r, _WORLD.size).shard(n) for r in range(_WORLD.size)]
    per = max(hi - lo for lo, hi in sizes)
    block = t.new_zeros((per, *t.shape[1:]))
    block[:t.shape[0]] = t
    blocks = [torch.empty_like(block) for _ in sizes]
    dist.all_gather(blocks, block.contiguous())
    return torch.cat([b[:hi - lo] for b, (lo, hi) in zip(blocks, sizes, strict=True)])


# --------------------------------------------------------------------------- collectives
def all_reduce_gradients(params: Iterable[torch.nn.Parameter], weight: float) -> None:
    """Replace each gradient by the sum over ranks of ``weight`` x the rank's gradient (with
    ``weight`` = the rank's share of the global batch, the global batch's mean gradient), in
    one all-reduce of a flat buffer. A parameter without a gradient counts as zero."""
    import torch.distributed as dist
    params = [p for p in params if p.requires_grad]
    if not params:
        return
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch.cat([g.reshape(-1) for g in grads]).mul_(weight)
    dist.all_reduce(flat)
    offset = 0
    for p, g in zip(params, grads, strict=True):
        n = p.numel()
        g.copy_(flat[offset:offset + n].view_as(g))
        p.grad = g
        offset += n


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """The sum of ``t`` over ranks (in place; ``t`` itself for one process)."""
    if _WORLD.distributed:
        import torch.distributed as dist
        dist.all_reduce(t)
    return t


def barrier() -> None:
    """Wait until every rank is here (nothing for one process)."""
    if _WORLD.distributed:
        import torch.distributed as dist
        dist.barrier()


def broadcast_object(obj):
    """Rank 0's ``obj`` (picklable) on every rank (``obj`` itself for one process)."""
    if not _WORLD.distributed:
        return obj
    import torch.distributed as dist
    box = [obj]
    dist.broadcast_object_list(box, 0)
    return box[0]


def broadcast_parameters(module: torch.nn.Module) -> None:
    """Every rank starts from rank 0's parameters and buffers."""
    if not _WORLD.distributed:
        return
    import torch.distributed as dist
    with torch.no_grad():
        for t in [*module.parameters(), *module.buffers()]:
            dist.broadcast(t.data, 0)


def check_family(family) -> None:
    """Refuse a family that is not fitted by gradient steps of the trainer (EM).

    Raises:
        ConfigError: naming the family and the fix.
    """
    if _WORLD.distributed and "em" in family.objectives:
        raise ConfigError(f"model {family.name} is fitted by EM in one process; run it "
                          "without torchrun")
