"""The training loop: Adam on one estimator's losses, checkpoints, resume, logging.

Design points:
    * the training set is one tensor on the training device; a batch is an index slice of a
      fresh permutation, binarized on the fly under dynamic binarization;
    * no host-device synchronisation per step: the running bound is summed on the device and
      read once per epoch (and at each progress-bar refresh);
    * theta (generative) and phi (inference) parameters each receive the gradient of their own
      loss when an estimator gives two (:class:`vaekit.estimators.Losses`);
    * every epoch writes ``last.safetensors`` (model, optimizer, RNG state and counters, one
      atomic file), ``best.safetensors`` when the validation score (ELBO) improves, a line of
      ``metrics.jsonl`` and TensorBoard scalars. ``resume`` continues from ``last`` and reaches
      the same parameters as an uninterrupted run with the same seed.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm

from .config import TrainConfig
from .errors import CheckpointError, ConfigError, TrainingDivergedError
from .estimators import Losses, get_estimator
from .evaluation import log_likelihood
from .io import atomic_write, load_tensors, save_tensors
from .objectives import elbo

BEST = "best.safetensors"
LAST = "last.safetensors"
METRICS = "metrics.jsonl"


def resolve_device(name: str = "auto") -> torch.device:
    """``auto``: the first CUDA device when one is present, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {name!r} was asked for but CUDA is not available; "
                          "use --device auto or cpu")
    return device


def schedule_length(config: TrainConfig) -> int:
    """Epochs of the full schedule: ``(3^S - 1) / 2`` for the IWAE schedule with S stages."""
    if config.lr_schedule == "iwae":
        return (3 ** config.schedule_stages - 1) // 2
    return config.epochs


def lr_at_epoch(config: TrainConfig, epoch: int) -> float:
    """Learning rate of 0-based ``epoch``.

    ``iwae``: stage i (i = 0..S-1) lasts 3^i epochs at lr * (lr_final / lr)^(i / (S-1)); with
    lr = 1e-3, lr_final = 1e-4 and S = 8 this is Burda et al. (2016), Sec. 5: "3^i passes
    over the data with learning rate 0.001 * 10^(-i/7), for i = 0..7". Epochs past the
    schedule keep the last stage's rate.
    """
    if config.lr_schedule == "constant":
        return config.lr
    stages = config.schedule_stages
    stage, start = 0, 0
    while stage < stages - 1 and epoch >= start + 3 ** stage:
        start += 3 ** stage
        stage += 1
    if stages == 1:
        return config.lr
    return config.lr * (config.lr_final / config.lr) ** (stage / (stages - 1))


def make_optimizer(model: torch.nn.Module, config: TrainConfig,
                   extra: list[torch.nn.Parameter] = ()) -> torch.optim.Adam:
    """Adam over all parameters of ``model`` and ``extra`` (an estimator's own), in one group:
    one fused kernel call per step when possible."""
    kwargs = dict(lr=config.lr, betas=(config.adam_beta1, config.adam_beta2),
                  eps=config.adam_eps)
    params = [*model.parameters(), *extra]
    try:
        return torch.optim.Adam(params, fused=True, **kwargs)
    except (RuntimeError, TypeError, ValueError):   # a device or dtype without fused Adam
        return torch.optim.Adam(params, **kwargs)


@torch.no_grad()
def validation_score(model, x: torch.Tensor, batch_size: int = 2000,
                     kl: str = "analytic") -> float:
    """The model-selection score of ``x: (N, D)``, higher is better, one sync at the end:
    the mean single-sample ELBO in nats, or ``model.validation_score(x)`` for families that
    define one (autoencoders: minus the reconstruction error)."""
    was_training = model.training
    model.eval()
    own = getattr(model, "validation_score", None)
    total = torch.zeros((), device=x.device, dtype=torch.float64)
    for i in range(0, x.shape[0], batch_size):
        xb = x[i:i + batch_size]
        total += (own(xb) if own is not None else elbo(model, xb, 1, kl=kl)).sum()
    model.train(was_training)
    return float(total) / x.shape[0]


def validation_name(model) -> str:
    """What :func:`validation_score` measures for this model, for logs and plots."""
    return getattr(model, "validation_name", "ELBO")


def pretrain_greedy(model, x: torch.Tensor, config: TrainConfig, *,
                    dynamic_binarization: bool = False,
                    log: Callable[[str], None] | None = None) -> list[float]:
    """Greedy layer-wise pre-training of a stacked autoencoder (Bengio et al. 2007; Vincent
    et al. 2010, Sec. 3.5): each layer's shallow autoencoder (``model.layer_pairs()``) is
    trained for ``config.pretrain_epochs`` epochs with Adam on the codes of the layers below,
    with the model's input corruption. Returns each layer's final mean training error."""
    from .models.autoencoder import corrupt, reconstruction_error

    device = resolve_device(config.device)
    model.to(device)
    h = x.to(device, torch.float32)
    errors = []
    for level, (enc, dec, likelihood) in enumerate(model.layer_pairs()):
        params = [*enc.parameters(), *dec.parameters()]
        opt = torch.optim.Adam(params, lr=config.lr, betas=(config.adam_beta1,
                                                            config.adam_beta2),
                               eps=config.adam_eps)
        n, b = h.shape[0], config.batch_size
        total = torch.zeros((), device=device)
        for _ in range(config.pretrain_epochs):
            perm = torch.randperm(n, device=device)
            total = torch.zeros((), device=device)
            for i in range(0, n, b):
                xb = h[perm[i:i + b]]
                if level == 0 and dynamic_binarization:
                    xb = torch.bernoulli(xb)
                err = reconstruction_error(dec(enc(corrupt(xb, model.noise, model.noise_level))),
                                           xb, likelihood)
                opt.zero_grad(set_to_none=True)
                err.mean().backward()
                opt.step()
                total += err.detach().sum()
        errors.append(float(total) / n)
        if log:
            log(f"pre-trained layer {level + 1}: reconstruction error {errors[-1]:.3f}")
        with torch.no_grad():
            h = torch.cat([enc(h[i:i + 2000]) for i in range(0, n, 2000)])
    return errors


@dataclass
class TrainResult:
    history: list[dict] = field(default_factory=list)  # one record per epoch (metrics.jsonl)
    best_epoch: int = 0                   # epoch (1-based) of the best validation score
    best_valid_score: float = -math.inf    # nats
    epochs: int = 0                       # epochs completed
    stopped: str = ""                     # why training ended
    seconds: float = 0.0                  # wall time of all sessions of this run


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


class Trainer:
    """Fits a model with one estimator and Adam.

    Args:
        model: a model with ``generative_parameters()`` and ``inference_parameters()``.
        config: the :class:`vaekit.config.TrainConfig`.
        train_x: ``(N, D)`` training data (moved once to the training device).
        valid_x: ``(M, D)`` validation data, already binarized if it is to be.
        dynamic_binarization: draw ``bernoulli(x)`` afresh for every batch (every epoch).
        run_dir: where checkpoints and logs go; ``None`` keeps everything in memory.
        progress: show a progress bar (on a terminal) or a line per epoch (otherwise).
        log: where one-line messages go.
        monitor_x: ``(M, D)`` data on which L_k (k = ``monitor_num_samples``) is recorded
            every ``monitor_every`` epochs (in ``vaekit train``, a fixed random subset of the
            test set).
    """

    def __init__(self, model: torch.nn.Module, config: TrainConfig, train_x: torch.Tensor,
                 valid_x: torch.Tensor, *, dynamic_binarization: bool = False,
                 run_dir: str | os.PathLike | None = None, progress: bool = True,
                 log: Callable[[str], None] | None = None,
                 monitor_x: torch.Tensor | None = None) -> None:
        if config.objective == "auto":
            config = dataclasses.replace(
                config, objective=getattr(model, "default_objective", "elbo"))
        self.config = config
        self.device = resolve_device(config.device)
        self.model = model.to(self.device)
        self.train_x = train_x.to(self.device, torch.float32)
        self.valid_x = valid_x.to(self.device, torch.float32)
        self.dynamic_binarization = dynamic_binarization
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.progress = progress
        self.log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
        self.estimator = get_estimator(config, data_dim=self.train_x.shape[1]).to(self.device)
        own = list(self.estimator.parameters())       # e.g. a learned baseline: trained with phi
        self.optimizer = make_optimizer(self.model, config, own)
        self._theta = list(model.generative_parameters())
        self._phi = [*model.inference_parameters(), *own]
        self.monitor_x = None if monitor_x is None else monitor_x.to(self.device, torch.float32)
        self.best_state: dict[str, torch.Tensor] | None = None

    # ------------------------------------------------------------------ one step
    def _backward(self, losses: Losses) -> None:
        if losses.model_loss is losses.inference_loss:
            losses.model_loss.backward()
            return
        if self._theta:
            losses.model_loss.backward(inputs=self._theta, retain_graph=bool(self._phi))
        if self._phi:
            losses.inference_loss.backward(inputs=self._phi)

    def _set_lr(self, lr: float) -> None:
        for g in self.optimizer.param_groups:
            g["lr"] = lr

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
        meta = {"param_groups": opt["param_groups"], "optimizer_scalars": scalars}
        return tensors, meta

    def save_checkpoint(self, result: TrainResult, bad_epochs: int, step: int) -> None:
        if self.run_dir is None:
            return
        tensors, meta = self._state_tensors()
        meta.update(epoch=result.epochs, step=step, best_epoch=result.best_epoch,
                    best_valid_score=result.best_valid_score, bad_epochs=bad_epochs,
                    seconds=result.seconds)
        save_tensors(self.run_dir / LAST, tensors, meta)

    def load_checkpoint(self) -> tuple[TrainResult, int, int]:
        """Restore model, optimizer and RNG from ``last.safetensors``."""
        assert self.run_dir is not None
        tensors, meta = load_tensors(self.run_dir / LAST)
        try:
            self.model.load_state_dict(
                {k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
            self.estimator.load_state_dict(
                {k[10:]: v for k, v in tensors.items() if k.startswith("estimator.")})
            state: dict = {}
            for k, v in tensors.items():
                if k.startswith("optimizer."):
                    _, pid, name = k.split(".", 2)
                    state.setdefault(int(pid), {})[name] = v
            for pid, sc in meta.get("optimizer_scalars", {}).items():
                state.setdefault(int(pid), {}).update(sc)
            self.optimizer.load_state_dict({"state": state,
                                            "param_groups": meta["param_groups"]})
        except (RuntimeError, KeyError, ValueError) as e:
            raise CheckpointError(
                f"{self.run_dir / LAST} does not match this run's model or optimizer ({e}); "
                "was config.json edited?") from None
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
        result = TrainResult(history=history, best_epoch=meta["best_epoch"],
                             best_valid_score=best_valid, epochs=meta["epoch"],
                             seconds=meta.get("seconds", 0.0))
        if (self.run_dir / BEST).is_file():
            best, _ = load_tensors(self.run_dir / BEST)
            self.best_state = best
        return result, meta["bad_epochs"], meta["step"]

    def _save_best(self, result: TrainResult) -> None:
        self.best_state = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        if self.run_dir is not None:
            save_tensors(self.run_dir / BEST, self.best_state,
                         {"epoch": result.best_epoch, "valid_score": result.best_valid_score,
                          "data_dim": self.train_x.shape[1]})

    def _rewrite_metrics(self, history: list[dict]) -> None:
        if self.run_dir is None:
            return
        atomic_write(self.run_dir / METRICS, "".join(json.dumps(r) + "\n" for r in history))

    def _append_metrics(self, record: dict) -> None:
        if self.run_dir is None:
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
            result, bad_epochs, step = self.load_checkpoint()
            self._rewrite_metrics(result.history)
        else:
            torch.manual_seed(cfg.seed)
            result, bad_epochs, step = TrainResult(), 0, 0
            if self.run_dir is not None:
                self._rewrite_metrics([])
        total_epochs = min(cfg.epochs, schedule_length(cfg))
        n, b = self.train_x.shape[0], cfg.batch_size
        steps_per_epoch = math.ceil(n / b)
        writer = self._tensorboard(purge_step=result.epochs + 1 if resume else None)
        bar = tqdm(total=total_epochs * steps_per_epoch, initial=result.epochs * steps_per_epoch,
                   disable=None if self.progress else True, unit="step", dynamic_ncols=True,
                   leave=False)
        show_lines = self.progress and bar.disable
        warmup = cfg.kl_warmup_epochs if hasattr(self.estimator, "beta") else 0.0
        last_line = -math.inf
        self.model.train()
        session_start = time.perf_counter() - result.seconds
        result.stopped = (f"completed {total_epochs} epochs" if cfg.lr_schedule == "constant"
                          else f"completed {total_epochs} of the schedule's "
                               f"{schedule_length(cfg)} epochs")
        try:
            for epoch in range(result.epochs, total_epochs):
                epoch_start = time.perf_counter()
                lr = lr_at_epoch(cfg, epoch)
                self._set_lr(lr)
                bar.set_description(f"epoch {epoch + 1}/{total_epochs}")
                perm = torch.randperm(n, device=self.device)
                running = torch.zeros((), device=self.device, dtype=torch.float64)
                for i in range(0, n, b):
                    if warmup:
                        self.estimator.beta = cfg.beta * min(1.0, (epoch + i / n) / warmup)
                    x = self.train_x[perm[i:i + b]]
                    if self.dynamic_binarization:
                        x = torch.bernoulli(x)
                    losses = self.estimator(self.model, x)
                    self.optimizer.zero_grad(set_to_none=True)
                    self._backward(losses)
                    self.optimizer.step()
                    running += losses.bound.sum()
                    step += 1
                    if not bar.disable:
                        bar.update(1)
                        if step % 200 == 0:
                            seen = i + x.shape[0]
                            bar.set_postfix(elbo=f"{float(running) / seen:.2f}", refresh=False)
                train_bound = float(running) / n
                if not math.isfinite(train_bound):
                    raise TrainingDivergedError(
                        f"the training loss became {train_bound} in epoch {epoch + 1}; the "
                        f"last good checkpoint (epoch {result.epochs}) is kept"
                        f"{' in ' + str(self.run_dir) if self.run_dir else ''}: lower --lr "
                        "and train again, or resume from it")
                valid = validation_score(self.model, self.valid_x, kl=cfg.kl)
                result.epochs = epoch + 1
                result.seconds = time.perf_counter() - session_start
                if valid > result.best_valid_score:
                    result.best_valid_score, result.best_epoch = valid, epoch + 1
                    bad_epochs = 0
                    self._save_best(result)
                else:
                    bad_epochs += 1
                record = {"epoch": epoch + 1, "step": step, "examples": (epoch + 1) * n,
                          "lr": lr, "train_bound": train_bound, "valid_score": valid,
                          "epoch_seconds": round(time.perf_counter() - epoch_start, 4),
                          "seconds": round(result.seconds, 3)}
                if self._monitor_due(epoch + 1, total_epochs):
                    record["monitor_log_likelihood"] = float(log_likelihood(
                        self.model, self.monitor_x, cfg.monitor_num_samples).mean())
                    record["monitor_num_samples"] = cfg.monitor_num_samples
                result.history.append(record)
                self.save_checkpoint(result, bad_epochs, step)
                self._append_metrics(record)
                if writer is not None:
                    writer.add_scalar("bound/train", train_bound, epoch + 1)
                    writer.add_scalar("valid/" + validation_name(self.model), valid, epoch + 1)
                    writer.add_scalar("lr", lr, epoch + 1)
                    if "monitor_log_likelihood" in record:
                        writer.add_scalar(f"monitor/L_{cfg.monitor_num_samples}",
                                          record["monitor_log_likelihood"], epoch + 1)
                if show_lines and time.perf_counter() - last_line > 10:
                    last_line = time.perf_counter()
                    self.log(f"epoch {epoch + 1}/{total_epochs}  train bound {train_bound:.3f}  "
                             f"valid {validation_name(self.model)} {valid:.3f}  lr {lr:.2e}  "
                             f"({result.seconds:.0f} s)")
                if cfg.patience and bad_epochs >= cfg.patience:
                    result.stopped = (f"early stopping: no better validation score in "
                                      f"{cfg.patience} epochs")
                    break
        finally:
            bar.close()
            if writer is not None:
                writer.close()
        if restore_best and self.best_state is not None:
            self.model.load_state_dict(self.best_state)
        return result

    def _monitor_due(self, epoch: int, total: int) -> bool:
        every = self.config.monitor_every
        return bool(every) and self.monitor_x is not None and (
            epoch == 1 or epoch % every == 0 or epoch == total)

    def _tensorboard(self, purge_step: int | None):
        if self.run_dir is None:
            return None
        from torch.utils.tensorboard import SummaryWriter
        return SummaryWriter(log_dir=str(self.run_dir / "tensorboard"), purge_step=purge_step)
