"""The training loop: Adam on one estimator's surrogate loss, checkpoints, resume, logging.

Design points:
    * the training set is one tensor on the training device, stored as it came (8-bit grey
      levels stay uint8: a quarter of the memory); a batch is an index slice of a fresh
      permutation, converted to values and, under dynamic binarization, binarized on the fly;
    * one backward pass per step: the estimator's surrogate carries theta's and phi's
      gradients (:class:`vaekit.estimators.Losses`);
    * no host-device synchronisation per step: the running bound is summed on the device and
      read once per epoch (and at each progress-bar refresh);
    * the learning rate follows a ``torch.optim.lr_scheduler`` (constant, or the IWAE paper's
      schedule) whose state is in the checkpoint; validation and the best checkpoint, early
      stopping, the monitored test bound and KL warm-up are callbacks
      (:mod:`vaekit.callbacks`);
    * every epoch writes ``last.safetensors`` (model, estimator, optimizer, scheduler, RNG
      state and counters, one atomic file), ``best.safetensors`` when the validation score
      improves, a line of ``metrics.jsonl`` and the tracker's scalars (:mod:`vaekit.tracking`:
      TensorBoard by default, MLflow, or none). ``resume`` continues from
      ``last`` and reaches the same parameters as an uninterrupted run with the same seed.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm

from .callbacks import (
    BoundValidation,
    Callback,
    EarlyStopping,
    KLWarmup,
    Monitor,
    Validation,
    batched_score,
)
from .config import TrainConfig
from .cuda_graphs import GraphedSteps, unavailable
from .data import to_values
from .distributed import (
    World,
    all_reduce_gradients,
    all_reduce_sum,
    broadcast_parameters,
    device_for,
    shard,
    world,
)
from .errors import CheckpointError, ConfigError, TrainingDivergedError
from .estimators import ESTIMATORS, Estimator, EstimatorOptions, get_estimator
from .io import atomic_write, load_tensors, save_tensors
from .precision import training_precision

BEST = "best.safetensors"
LAST = "last.safetensors"
METRICS = "metrics.jsonl"


# device type -> (is it present, how many); other types (meta, ...) are refused
_ACCELERATORS = {
    "cuda": (torch.cuda.is_available, torch.cuda.device_count),
    "mps": (torch.backends.mps.is_available, lambda: 1),
    "xpu": (torch.xpu.is_available, torch.xpu.device_count),
}


def resolve_device(name: str = "auto") -> torch.device:
    """The device a run uses.

    ``auto``: the first CUDA device when one is present, else the CPU (MPS and XPU are used
    only when asked for by name). Any other string is a ``torch.device`` (``cpu``, ``cuda``,
    ``cuda:1``, ``mps``, ``xpu:0``, ...), checked to be present.

    Raises:
        ConfigError: the string is not a device, or the device is not present here.
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError, TypeError):
        raise ConfigError(f"--device must be auto or a torch device (cpu, cuda, cuda:N, mps, "
                          f"xpu, ...), got {name!r}") from None
    if device.type == "cpu":
        return device
    backend = _ACCELERATORS.get(device.type)
    if backend is None or not backend[0]():
        raise ConfigError(f"device {name!r} was asked for but {device.type.upper()} is not "
                          "available here; use --device auto or cpu")
    count = backend[1]()
    if device.index is not None and device.index >= count:
        raise ConfigError(f"device {name!r} was asked for but this machine has {count} "
                          f"{device.type} device(s) (indices 0..{count - 1})")
    return device


# --------------------------------------------------------------------------- schedules
def schedule_length(config: TrainConfig) -> int:
    """Epochs of the full schedule: ``(3^S - 1) / 2`` for the IWAE schedule with S stages."""
    if config.lr_schedule == "iwae":
        return (3 ** config.schedule_stages - 1) // 2
    return config.epochs


class IWAESchedule:
    """The learning-rate factor of 0-based epoch ``e`` (a ``LambdaLR`` multiplier of ``lr``):
    stage i (i = 0..S-1) lasts 3^i epochs at (lr_final / lr)^(i / (S-1)); with lr = 1e-3,
    lr_final = 1e-4 and S = 8 this is Burda et al. (2016), Sec. 5: "3^i passes over the data
    with learning rate 0.001 * 10^(-i/7), for i = 0..7". Epochs past the schedule keep the
    last stage's rate. A class (not a closure) so that ``LambdaLR`` saves it in its state."""

    def __init__(self, lr: float, lr_final: float, stages: int) -> None:
        self.lr, self.lr_final, self.stages = lr, lr_final, stages

    def stage(self, epoch: int) -> int:
        stage, start = 0, 0
        while stage < self.stages - 1 and epoch >= start + 3 ** stage:
            start += 3 ** stage
            stage += 1
        return stage

    def __call__(self, epoch: int) -> float:
        if self.stages == 1:
            return 1.0
        return (self.lr_final / self.lr) ** (self.stage(epoch) / (self.stages - 1))


def lr_factor(config: TrainConfig) -> Callable[[int], float]:
    """The multiplier of ``config.lr`` at each 0-based epoch."""
    if config.lr_schedule == "iwae":
        return IWAESchedule(config.lr, config.lr_final, config.schedule_stages)
    return _constant


def _constant(epoch: int) -> float:
    return 1.0


def lr_at_epoch(config: TrainConfig, epoch: int) -> float:
    """Learning rate of 0-based ``epoch`` (see :class:`IWAESchedule`)."""
    factor = lr_factor(config)(epoch)
    return config.lr if factor == 1.0 else config.lr * factor


def make_optimizer(model: torch.nn.Module, config: TrainConfig,
                   extra: Sequence[torch.nn.Parameter] = (),
                   capturable: bool = False) -> torch.optim.Adam:
    """Adam over all parameters of ``model`` and ``extra`` (an estimator's own), in one group:
    one fused kernel call per step when possible; ``capturable``: safe to record in a CUDA
    graph (:mod:`vaekit.cuda_graphs`)."""
    kwargs = dict(lr=config.lr, betas=(config.adam_beta1, config.adam_beta2),
                  eps=config.adam_eps, capturable=capturable)
    params = [*model.parameters(), *extra]
    try:
        return torch.optim.Adam(params, fused=True, **kwargs)
    except (RuntimeError, TypeError, ValueError):   # a device or dtype without fused Adam
        return torch.optim.Adam(params, **kwargs)


def make_scheduler(optimizer: torch.optim.Optimizer,
                   config: TrainConfig) -> torch.optim.lr_scheduler.LambdaLR:
    """The learning-rate schedule of ``config`` as a ``LambdaLR``, stepped once per epoch."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor(config))


# --------------------------------------------------------------------------- results
@dataclass
class TrainResult:
    history: list[dict] = field(default_factory=list)  # one record per epoch (metrics.jsonl)
    best_epoch: int = 0                   # epoch (1-based) of the best validation score
    best_valid_score: float = -math.inf    # nats
    epochs: int = 0                       # epochs completed
    stopped: str = ""                     # why training ended
    seconds: float = 0.0                  # wall time of all sessions of this run
    bad_epochs: int = 0                   # epochs since the best validation score
    step: int = 0                         # optimizer steps taken


def read_metrics(path: str | os.PathLike) -> list[dict]:
    """Records of ``metrics.jsonl``; a truncated last line (an interrupted write) is skipped."""
    path = Path(path)
    if not path.is_file():
        return []
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out


def validation_score(model, x: torch.Tensor, batch_size: int = 2000) -> float:
    """The model-selection score of ``x`` as the model's family defines it (higher is
    better: a VAE's mean single-sample ELBO in nats, an autoencoder's minus its
    reconstruction error), one sync at the end."""
    from .families import family_of
    family = family_of(model)
    was_training = model.training
    model.eval()
    try:
        return batched_score(lambda xb: family.validation_score(model, xb), x, batch_size)
    finally:
        model.train(was_training)


def build_estimator(objective: str, options: EstimatorOptions | None,
                    data_shape: tuple[int, ...]) -> Estimator:
    """The estimator ``objective`` with ``options`` (its defaults when ``None``)."""
    return get_estimator(objective, options, data_shape=data_shape)


def best_fallback(run_dir: Path) -> str:
    """What a user can do when a run's last.safetensors is unusable: whether best.safetensors
    is intact (it can be evaluated and sampled, not resumed)."""
    try:
        _, meta = load_tensors(run_dir / BEST)
    except CheckpointError:
        return "best.safetensors is not usable either: train the run again"
    epoch = f" (epoch {meta['epoch']})" if "epoch" in meta else ""
    return (f"best.safetensors{epoch} is intact: 'vaekit evaluate' and 'vaekit sample' use "
            "it, but it holds no optimizer state to resume from")


# --------------------------------------------------------------------------- the trainer
@dataclass
class LabelledSet:
    """The labelled examples of semi-supervised training: each step draws ``batch_size`` of
    them with replacement (``torch.randint`` on the training device, from the training's
    random stream, so a resumed run draws the same ones) beside the main batch.

    ``x: (N_l, *event_shape)`` as stored (values are ``x / divisor``), ``y: (N_l,)`` int64;
    ``weight``: the factor of the labelled sub-batch's mean beside the main batch's mean in
    the step's objective (``N_l / N_u`` for a sum over the labelled set beside a sum over
    the unlabelled one, as in Kingma et al. 2014, eq. 9)."""

    x: torch.Tensor
    y: torch.Tensor
    batch_size: int
    weight: float = 1.0


class Trainer:
    """Fits a model with one estimator and Adam.

    Args:
        model: a model whose family (:func:`vaekit.families.family_of`) is trained by
            gradient steps.
        config: the :class:`vaekit.config.TrainConfig`.
        train_x: ``(N, *event_shape)`` training data as stored (moved once to the training
            device; values are ``train_x / divisor``).
        valid_x: ``(M, *event_shape)`` validation values, already binarized if they are to be.
        estimator: the estimator, or its options (the objective is ``config.objective``), or
            ``None`` (``config.objective`` with its default options; ``auto``: the family's).
        divisor: stored values / divisor = data values (255 for uint8 grey levels).
        dynamic_binarization: draw ``bernoulli(x)`` afresh for every batch (every epoch).
        run_dir: where checkpoints and logs go; ``None`` keeps everything in memory.
        progress: show a progress bar (on a terminal) or a line per epoch (otherwise).
        log: where one-line messages go.
        monitor_x: ``(M, *event_shape)`` data on which L_k (k = ``monitor_num_samples``) is
            recorded every ``monitor_every`` epochs (in ``vaekit train``, a fixed random
            subset of the test set).
        callbacks: more :class:`~vaekit.callbacks.Callback` objects, run after the built-in
            ones.
        train_y: ``(N,)`` int64 labels of ``train_x`` for a family with the ``labels``
            capability: kept on the device and sliced by the batch's permutation; each step
            then calls ``family.batch_losses(estimator, model, LabelledBatch(x, y, ...))``.
        valid_y: ``(M,)`` labels of ``valid_x``: the validation score is
            ``family.validation_score(model, x, y)``.
        labelled: a :class:`LabelledSet` drawn from at every step (semi-supervised
            training; ``train_x`` then holds the unlabelled examples).

    Raises:
        ConfigError: KL warm-up with an estimator that has no KL weight, or a monitor for a
            family without a bound.
    """

    def __init__(self, model: torch.nn.Module, config: TrainConfig, train_x: torch.Tensor,
                 valid_x: torch.Tensor, *, estimator: Estimator | EstimatorOptions | None = None,
                 divisor: float = 1.0, dynamic_binarization: bool = False,
                 run_dir: str | os.PathLike | None = None, progress: bool = True,
                 log: Callable[[str], None] | None = None,
                 monitor_x: torch.Tensor | None = None,
                 callbacks: Sequence[Callback] = (), train_y: torch.Tensor | None = None,
                 valid_y: torch.Tensor | None = None,
                 labelled: LabelledSet | None = None) -> None:
        from .families import family_of

        family = family_of(model)
        self.family = family
        self.config = config
        self.device = resolve_device(device_for(config.device))
        self.model = model.to(self.device)
        self.train_x = train_x.to(self.device)
        self.divisor = float(divisor)
        self.valid_x = valid_x.to(self.device, torch.float32)
        self.train_y = None if train_y is None else train_y.to(self.device, torch.long)
        self.valid_y = None if valid_y is None else valid_y.to(self.device, torch.long)
        self.labelled = None if labelled is None else LabelledSet(
            labelled.x.to(self.device), labelled.y.to(self.device, torch.long),
            int(labelled.batch_size), float(labelled.weight))
        if self.train_y is not None and self.train_y.shape[0] != self.train_x.shape[0]:
            raise ValueError(f"train_y has {self.train_y.shape[0]} labels for "
                             f"{self.train_x.shape[0]} examples")
        self.dynamic_binarization = dynamic_binarization
        self.run_dir = Path(run_dir) if run_dir is not None else None
        # under torchrun (vaekit.distributed) every rank trains on its shard of each global
        # batch; rank 0 alone writes
        self.world = world()
        self.writes = self.world.is_main
        self._check_shards(config.batch_size)
        self.progress = progress
        self.log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
        if config.precision == "tf32" and self.device.type != "cuda":
            self.log(f"--precision tf32 applies to CUDA matrix products; on {self.device.type} "
                     "the steps run in fp32")
        objective = family.default_objective if config.objective == "auto" else config.objective
        if not isinstance(estimator, Estimator):
            estimator = build_estimator(objective, estimator, tuple(self.train_x.shape[1:]))
        self.estimator = estimator.to(self.device)
        graphs_wanted = config.cuda_graphs and self.device.type == "cuda"
        self.optimizer = make_optimizer(self.model, config, list(self.estimator.parameters()),
                                        capturable=graphs_wanted)
        self.scheduler = make_scheduler(self.optimizer, config)
        if config.valid_num_samples:
            if not family.supports("monitor"):
                raise ConfigError(f"--valid-num-samples scores a bound on log p(x), which "
                                  f"model {family.name} does not have; remove it")
            validation = BoundValidation(self.valid_x, config.valid_num_samples)
        elif self.valid_y is not None:
            validation = self._labelled_validation(family)
        else:
            validation = Validation(self.valid_x,
                                    lambda xb: family.validation_score(self.model, xb),
                                    family.validation_name)
        self.valid_name = validation.name
        self.callbacks: list[Callback] = [validation]
        if config.patience:
            self.callbacks.append(EarlyStopping(config.patience))
        if config.monitor_every and monitor_x is not None:
            if not family.supports("monitor"):
                raise ConfigError(f"--monitor-every records a bound on log p(x), which model "
                                  f"{family.name} does not have; remove it")
            self.callbacks.append(Monitor(monitor_x.to(self.device, torch.float32),
                                          config.monitor_num_samples, config.monitor_every))
        if config.kl_warmup_epochs:
            if not ESTIMATORS.get(self.estimator.name).kl_weighted:
                raise ConfigError(
                    f"kl_warmup_epochs needs an objective with a KL weight (such as elbo); "
                    f"{self.estimator.name} has none")
            self.callbacks.append(KLWarmup(self.estimator.kl_weight, config.kl_warmup_epochs))
        self.callbacks.extend(callbacks)
        self.result = TrainResult()
        self.best_state: dict[str, torch.Tensor] | None = None
        self.stop: str | None = None
        self.total_epochs = min(config.epochs, schedule_length(config))
        self.graphs: GraphedSteps | None = None
        if config.cuda_graphs:
            why = unavailable(self)
            if why:
                self.log(f"--cuda-graphs: {why}; the steps run eagerly")
            else:
                self.graphs = GraphedSteps(self, self.log)

    def _check_shards(self, batch_size: int) -> None:
        """Every rank must get examples of every batch (the last, smaller one included)."""
        w, n = self.world, self.train_x.shape[0]
        if not w.distributed:
            return
        for b in {min(batch_size, n), n % batch_size or min(batch_size, n)}:
            if World(w.size - 1, w.size).shard(b)[0] >= b:
                raise ConfigError(
                    f"a batch of {b} examples cannot be split over {w.size} processes (the "
                    f"{n} training examples in batches of {batch_size}); choose --batch-size "
                    f"so that every batch has at least one example per process")

    def _labelled_validation(self, family) -> Validation:
        """Validation by ``family.validation_score(model, x, y)``: the callback batches a
        range of indices into the validation set (on the device), which select both x and y."""
        vx, vy = self.valid_x, self.valid_y
        return Validation(torch.arange(vx.shape[0], device=self.device),
                          lambda idx: family.validation_score(self.model, vx[idx], vy[idx]),
                          family.validation_name)

    # ------------------------------------------------------------------ checkpoints
    def _state_tensors(self) -> tuple[dict[str, torch.Tensor], dict]:
        tensors = {f"model.{k}": v for k, v in self.model.state_dict().items()}
        tensors.update({f"estimator.{k}": v for k, v in self.estimator.state_dict().items()})
        opt = self.optimizer.state_dict()
        scalars = {}
        for pid, st in opt["state"].items():
            for k, v in st.items():
                if torch.is_tensor(v):
                    tensors[f"optimizer.{pid}.{k}"] = v
                else:
                    scalars.setdefault(str(pid), {})[k] = v
        tensors["rng.cpu"] = torch.get_rng_state()
        if torch.cuda.is_available() and self.device.type == "cuda":
            for i, s in enumerate(torch.cuda.get_rng_state_all()):
                tensors[f"rng.cuda.{i}"] = s
        scheduler = {k: v for k, v in self.scheduler.state_dict().items() if k != "lr_lambdas"}
        meta = {"param_groups": opt["param_groups"], "optimizer_scalars": scalars,
                "param_names": self._param_names(), "scheduler": scheduler}
        return tensors, meta

    def _param_names(self, legacy: bool = False) -> list[str]:
        """The optimizer's parameters by name, in its order (``legacy``: the order vaekit
        0.1 gave them, for its checkpoints, which did not record names)."""
        model = (self.family.legacy_parameter_order(self.model) if legacy
                 else [n for n, _ in self.model.named_parameters()])
        return ([f"model.{n}" for n in model]
                + [f"estimator.{n}" for n, _ in self.estimator.named_parameters()])

    def save_checkpoint(self) -> None:
        """Write ``last.safetensors`` (everything a resume needs), atomically (rank 0 only:
        every rank's random state is the same, see :mod:`vaekit.distributed`)."""
        if self.run_dir is None or not self.writes:
            return
        r = self.result
        tensors, meta = self._state_tensors()
        meta.update(epoch=r.epochs, step=r.step, best_epoch=r.best_epoch,
                    best_valid_score=r.best_valid_score, bad_epochs=r.bad_epochs,
                    seconds=r.seconds)
        save_tensors(self.run_dir / LAST, tensors, meta)

    def load_checkpoint(self) -> TrainResult:
        """Restore model, estimator, optimizer, scheduler and RNG from ``last.safetensors``."""
        assert self.run_dir is not None
        try:
            tensors, meta = load_tensors(self.run_dir / LAST)
        except CheckpointError as e:
            raise CheckpointError(f"{e}; {best_fallback(self.run_dir)}") from None
        try:
            self.model.load_state_dict(
                {k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
            self.estimator.load_state_dict(
                {k[10:]: v for k, v in tensors.items() if k.startswith("estimator.")})
            # the checkpoint's parameter order -> this optimizer's, matched by name
            saved = meta.get("param_names") or self._param_names(legacy=True)
            current = self._param_names()
            if sorted(saved) != sorted(current):
                raise KeyError(f"parameters {sorted(set(saved) ^ set(current))[:3]}")
            where = {i: current.index(name) for i, name in enumerate(saved)}
            state: dict = {}
            for k, v in tensors.items():
                if k.startswith("optimizer."):
                    _, pid, name = k.split(".", 2)
                    state.setdefault(where[int(pid)], {})[name] = v
            for pid, sc in meta.get("optimizer_scalars", {}).items():
                state.setdefault(where[int(pid)], {}).update(sc)
            # hyperparameters from the checkpoint; how Adam runs (fused, capturable for CUDA
            # graphs) is this optimizer's: a run trained with --cuda-graphs resumes on a CPU
            impl = {k: v for k, v in self.optimizer.param_groups[0].items()
                    if k in ("fused", "foreach", "capturable", "differentiable")}
            groups = [{**g, **impl, "params": sorted(where[i] for i in g["params"])}
                      for g in meta["param_groups"]]
            self.optimizer.load_state_dict({"state": state, "param_groups": groups})
        except (RuntimeError, KeyError, ValueError) as e:
            raise CheckpointError(
                f"{self.run_dir / LAST} does not match this run's model or optimizer "
                f"({str(e).splitlines()[0]}); was config.json edited?") from None
        # Checkpoints of vaekit 0.1 hold no scheduler state: the schedule is a function of the
        # epoch, so the epoch count restores it.
        sched = meta.get("scheduler") or {"last_epoch": meta["epoch"],
                                          "_step_count": meta["epoch"] + 1}
        self.scheduler.load_state_dict({**self.scheduler.state_dict(), **sched})
        s = self.scheduler                       # the next epoch's rate, as LambdaLR computes it
        # --lr on resume sets the base rate from here on (a schedule keeps its shape)
        s.base_lrs = [self.config.lr] * len(s.base_lrs)
        for g, base, factor in zip(self.optimizer.param_groups, s.base_lrs, s.lr_lambdas,
                                   strict=True):
            g["initial_lr"] = base
            g["lr"] = base * factor(s.last_epoch)
        if self.graphs is not None:       # new optimizer state tensors: capture again
            self.graphs.reset()
        torch.set_rng_state(tensors["rng.cpu"])
        cuda_states = [tensors[k] for k in sorted(tensors) if k.startswith("rng.cuda.")]
        if cuda_states and self.device.type == "cuda":
            torch.cuda.set_rng_state_all(cuda_states)
        history = [r for r in read_metrics(self.run_dir / METRICS) if r["epoch"] <= meta["epoch"]]
        # Checkpoints written before 0.1 named the validation score "best_valid_elbo".
        best_valid = meta.get("best_valid_score", meta.get("best_valid_elbo"))
        if best_valid is None:
            raise CheckpointError(f"{self.run_dir / LAST} lacks its best validation score; "
                                  "it was not written by vaekit")
        if (self.run_dir / BEST).is_file():
            best, _ = load_tensors(self.run_dir / BEST)
            self.best_state = best
        return TrainResult(history=history, best_epoch=meta["best_epoch"],
                           best_valid_score=best_valid, epochs=meta["epoch"],
                           seconds=meta.get("seconds", 0.0), bad_epochs=meta["bad_epochs"],
                           step=meta["step"])

    def save_best(self) -> None:
        """Keep the current weights as the best (and write ``best.safetensors``)."""
        r = self.result
        self.best_state = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        if self.run_dir is not None and self.writes:
            save_tensors(self.run_dir / BEST, self.best_state,
                         {"epoch": r.best_epoch, "valid_score": r.best_valid_score,
                          "data_shape": list(self.train_x.shape[1:])})

    def _rewrite_metrics(self, history: list[dict]) -> None:
        if self.run_dir is None or not self.writes:
            return
        atomic_write(self.run_dir / METRICS, "".join(json.dumps(r) + "\n" for r in history))

    def _append_metrics(self, record: dict) -> None:
        if self.run_dir is None or not self.writes:
            return
        with open(self.run_dir / METRICS, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")

    # ------------------------------------------------------------------ the loop
    def fit(self, resume: bool = False, restore_best: bool = True) -> TrainResult:
        """Train until ``config.epochs`` (capped by the schedule's length), early stopping
        or divergence. With ``restore_best`` the model ends with the best-validation weights.

        Raises:
            TrainingDivergedError: the loss became NaN/inf (checkpoints are left as they were).
            CheckpointError: ``resume`` without a usable ``last.safetensors``.
        """
        cfg = self.config
        if resume:
            if self.run_dir is None:
                raise CheckpointError("resuming needs a run directory")
            self.result = self.load_checkpoint()
            self._rewrite_metrics(self.result.history)
        else:
            torch.manual_seed(cfg.seed)
            self.result = TrainResult()
            if self.run_dir is not None:
                self._rewrite_metrics([])
                self.save_checkpoint()       # epoch 0: a run stopped in its first epoch resumes
        broadcast_parameters(self.model)     # several processes: all start from rank 0's
        result, total_epochs = self.result, self.total_epochs
        n, b = self.train_x.shape[0], cfg.batch_size
        steps_per_epoch = math.ceil(n / b)
        writer, own_writer = self._tracker(resume)
        bar = tqdm(total=total_epochs * steps_per_epoch, initial=result.epochs * steps_per_epoch,
                   disable=None if self.progress else True, unit="step", dynamic_ncols=True,
                   leave=False)
        show_lines = self.progress and bar.disable
        step_callbacks = [c for c in self.callbacks if c.every_step]
        for c in self.callbacks:
            c.on_fit_start(self)
        last_line = -math.inf
        self.model.train()
        self.stop = None
        session_start = time.perf_counter() - result.seconds
        result.stopped = (f"completed {total_epochs} epochs" if cfg.lr_schedule == "constant"
                          else f"completed {total_epochs} of the schedule's "
                               f"{schedule_length(cfg)} epochs")
        try:
            for epoch in range(result.epochs, total_epochs):
                epoch_start = time.perf_counter()
                lr = self.optimizer.param_groups[0]["lr"]
                bar.set_description(f"epoch {epoch + 1}/{total_epochs}")
                running = torch.zeros((), device=self.device, dtype=torch.float64)
                for i, x, losses in self._steps(epoch, step_callbacks):
                    running += losses.bound.sum()
                    result.step += 1
                    if not bar.disable:
                        bar.update(1)
                        if result.step % 200 == 0:
                            seen = i + x.shape[0]
                            bar.set_postfix(bound=f"{float(running) / seen:.2f}", refresh=False)
                train_bound = float(all_reduce_sum(running)) / n
                if not math.isfinite(train_bound):
                    raise self._diverged(f"the training loss became {train_bound}", epoch,
                                         step_callbacks)
                good_epochs = result.epochs
                result.epochs = epoch + 1
                record = {"epoch": epoch + 1, "step": result.step, "examples": (epoch + 1) * n,
                          "lr": lr, "train_bound": train_bound}
                for c in self.callbacks:
                    c.on_epoch_end(self, record)
                valid = record.get("valid_score")
                if valid is not None and not math.isfinite(valid):   # the epoch's last steps
                    result.epochs = good_epochs
                    raise self._diverged(f"the validation score became {valid}", epoch,
                                         step_callbacks)
                result.seconds = time.perf_counter() - session_start
                record.update(epoch_seconds=round(time.perf_counter() - epoch_start, 4),
                              seconds=round(result.seconds, 3))
                result.history.append(record)
                self.scheduler.step()               # the next epoch's rate, saved with it
                # the record before the checkpoint: a run killed between the two resumes from
                # the previous checkpoint and rewrites metrics.jsonl up to it, so every epoch
                # has exactly one record
                self._append_metrics(record)
                self.save_checkpoint()
                self._log_epoch(writer, record)
                if show_lines and time.perf_counter() - last_line > 10:
                    last_line = time.perf_counter()
                    self.log(f"epoch {epoch + 1}/{total_epochs}  train bound {train_bound:.3f}  "
                             f"valid {self.valid_name} {record['valid_score']:.3f}"
                             f"  lr {lr:.2e}  ({result.seconds:.0f} s)")
                if self.stop:
                    result.stopped = self.stop
                    break
        finally:
            bar.close()
            if own_writer:
                from .tracking import status_of
                writer.close(status_of(sys.exc_info()[1]))
        if restore_best and self.best_state is not None:
            self.model.load_state_dict(self.best_state)
        return result

    def _steps(self, epoch: int, step_callbacks, inspect=None):
        """One epoch's gradient steps: yields ``(offset, x, losses)`` after each. With
        ``inspect(phase, batch)`` (phases ``"loss"``, ``"grad"``, ``"param"``), the steps stop
        at the first phase for which it returns a message, which is then yielded as
        ``(None, None, message)``."""
        n, b = self.train_x.shape[0], self.config.batch_size
        perm = torch.randperm(n, device=self.device)
        graphs = self.graphs if inspect is None else None
        for batch, i in enumerate(range(0, n, b)):
            for c in step_callbacks:
                c.on_step(self, epoch + i / n)
            idx = perm[i:i + b]
            if graphs is not None and idx.shape[0] == b:    # a full batch: the replayed graph
                x, losses = graphs.step(idx)
                yield i, x, losses
                continue
            x = to_values(self.train_x[idx], self.divisor)
            if self.dynamic_binarization:
                x = torch.bernoulli(x)
            noise, weight = contextlib.nullcontext(), 1.0
            if self.world.distributed:     # this rank's shard of the global batch
                lo, hi = self.world.shard(x.shape[0])
                noise, weight = shard(x.shape[0], lo, hi), (hi - lo) / x.shape[0]
                x, idx = x[lo:hi], idx[lo:hi]
            with noise, training_precision(self.config.precision, self.device):
                if self.train_y is None and self.labelled is None:
                    losses = self.estimator(self.model, x)
                else:
                    losses = self.family.batch_losses(self.estimator, self.model,
                                                      self._labelled_batch(x, idx))
            found = inspect and inspect("loss", batch, losses)
            if not found:
                self.optimizer.zero_grad(set_to_none=True)
                losses.loss.backward()
                if self.world.distributed:
                    all_reduce_gradients(self._parameters(), weight)
                found = inspect and inspect("grad", batch, losses)
            if not found:
                self.optimizer.step()
                found = inspect and inspect("param", batch, losses)
            if found:
                yield None, None, found
                return
            yield i, x, losses

    def _parameters(self) -> list[torch.nn.Parameter]:
        """The optimizer's parameters, in its order (the model's, then the estimator's)."""
        return [p for g in self.optimizer.param_groups for p in g["params"]]

    def _labelled_batch(self, x: torch.Tensor, idx: torch.Tensor):
        """The step's :class:`~vaekit.families.LabelledBatch`: the labels of the batch's
        examples (the same permutation slice), and a labelled sub-batch drawn with replacement
        from :attr:`labelled` (device-side draws, no host sync)."""
        from .families import LabelledBatch
        y = None if self.train_y is None else self.train_y[idx]
        if self.labelled is None:
            return LabelledBatch(x, y)
        s = self.labelled
        j = torch.randint(s.y.shape[0], (s.batch_size,), device=self.device)
        xl = to_values(s.x[j], self.divisor)
        if self.dynamic_binarization:
            xl = torch.bernoulli(xl)
        return LabelledBatch(x, y, xl, s.y[j], s.weight)

    def _diverged(self, what: str, epoch: int, step_callbacks) -> TrainingDivergedError:
        """The error of a diverged epoch: where it went non-finite (a replay, see
        :meth:`_first_non_finite`), that the last good checkpoint is kept, and the fixes."""
        good = self.result.epochs
        where = self._first_non_finite(epoch, step_callbacks)
        return TrainingDivergedError(
            f"{what} in epoch {epoch + 1}{where}; the last good checkpoint (epoch {good}) is "
            f"kept{' in ' + str(self.run_dir) if self.run_dir else ''}: resume it with a lower "
            f"rate (vaekit train --resume RUN --lr {self.config.lr / 10:g}), or use "
            "--kl-warmup-epochs, or a floor on a Gaussian decoder's sigma "
            "(--decoder-std-floor)")

    def _first_non_finite(self, epoch: int, step_callbacks) -> str:
        """Where a diverged epoch first went non-finite: the epoch is replayed from the last
        checkpoint (model, optimizer, estimator and RNG, so the same batches and draws), step
        by step, checking the loss, then every gradient, then every parameter. ``""`` when
        there is no checkpoint to replay from, or the replay stays finite."""
        if self.run_dir is None or not (self.run_dir / LAST).is_file():
            return ""
        try:
            self.load_checkpoint()
        except CheckpointError:
            return ""
        named = [(n, p) for n, p in self.model.named_parameters()] + \
            [(f"estimator.{n}", p) for n, p in self.estimator.named_parameters()]

        def inspect(phase: str, batch: int, losses) -> str | None:
            at = f" (batch {batch + 1})"
            if phase == "loss":
                bad = [n for n, p in named if not bool(torch.isfinite(p).all())]
                if bad:
                    return f"{at}: parameter {bad[0]} was already non-finite"
                if not bool(torch.isfinite(losses.loss)) or \
                        not bool(torch.isfinite(losses.bound).all()):
                    return f"{at}: the loss itself, with every parameter still finite"
                return None
            for name, p in named:
                t = p.grad if phase == "grad" else p
                if t is not None and not bool(torch.isfinite(t).all()):
                    what = "the gradient of" if phase == "grad" else "after the update,"
                    return f"{at}: {what} {name} is the first non-finite tensor"
            return None

        for i, _, found in self._steps(epoch, step_callbacks, inspect):
            if i is None:
                return found
        return ""

    def _log_epoch(self, writer, record: dict) -> None:
        """Hand an epoch's scalars to the tracker (:func:`vaekit.tracking.epoch_metrics`:
        ``bound/train``, ``valid/<score>``, ``lr``, ``monitor/L_<k>``), at the 1-based epoch."""
        from .tracking import epoch_metrics
        writer.log_metrics(epoch_metrics(record, self.valid_name), record["epoch"])

    def _tracker(self, resume: bool):
        """``(tracker, owned)``: the tracker :func:`vaekit.runs.train_run` holds open for this
        run directory (:func:`vaekit.tracking.session`), else one opened here from
        ``config.tracking`` (``owned``: closed at the end of :meth:`fit`); without a run
        directory, the ``none`` tracker. It is told which epochs the checkpoint kept
        (TensorBoard purges later ones; MLflow logs those it lacks)."""
        from .tracking import Tracker, active, epoch_metrics, open_tracker
        tracker, owned = active(self.run_dir), False
        if not self.writes:                  # ranks other than 0 log nothing
            tracker, owned = Tracker(self.config), True
        elif tracker is None:
            tracker, owned = open_tracker(self.config, self.run_dir, resume=resume), True
        try:
            tracker.continue_after([(r["epoch"], epoch_metrics(r, self.valid_name))
                                    for r in self.result.history], resume)
        except BaseException:
            if owned:
                tracker.close("FAILED")
            raise
        return tracker, owned
