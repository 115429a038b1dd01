"""Run directories: train, evaluate and sample end to end, as the CLI does.

A run directory holds::

    config.json         the full configuration (binarization, standardisation, likelihood and
                        objective resolved), first
    data.json           the data's shape, standardisation (mean, std) and a table's columns
    best.safetensors    model weights at the best validation score
    last.safetensors    model + estimator + optimizer + scheduler + RNG state of the last epoch
    metrics.jsonl       one JSON record per epoch
    tensorboard/        TensorBoard event files (--tracking tensorboard: the default when the
                        package is installed)
    tracking.json       --tracking mlflow: the MLflow run (store, experiment, run id) that
                        --resume continues
    eval.json           test metrics (vaekit evaluate)
    *.png               figures (vaekit sample)

Every file is written atomically (:mod:`vaekit.io`). :func:`train` is the one path by which a
model is fitted, from Python (``vaekit.train``) and from ``vaekit train`` alike: it hands the
model to its family (:meth:`vaekit.families.Family.fit`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from . import distributed, plotting, tracking
from .config import Config, TrainConfig
from .data import (
    EVAL_BINARIZATION_SEEDS,
    Dataset,
    eval_split,
    load_dataset,
    refuse_float_grey_levels,
    resolve_standardize,
    standardize,
)
from .errors import CheckpointError, ConfigError
from .evaluation import Evaluation, model_device
from .families import FAMILIES, FigureContext, FitJob, check_data, family_of, monitor_subset
from .io import load_tensors, read_json, run_lock, write_json
from .options import Options
from .training import (
    BEST,
    LAST,
    METRICS,
    TrainResult,
    best_fallback,
    read_metrics,
    resolve_device,
)

CONFIG = "config.json"
DATA = "data.json"
EVAL = "eval.json"

__all__ = ["CONFIG", "DATA", "EVAL", "Run", "draw_samples", "evaluate_run", "export_samples",
           "load_eval", "load_model", "load_run", "make_figures", "monitor_subset",
           "prepare_data", "resolve_data", "train", "train_run"]


@dataclass
class Run:
    """A loaded run: its directory, configuration, model (on its device) and data."""

    path: Path
    config: Config
    model: torch.nn.Module
    dataset: Dataset
    binarization: str     # "dynamic" or "none", as trained
    checkpoint: str = "best"   # which weights the model holds: "best" or "last"

    @property
    def family(self):
        return self.config.family


def _silent(msg: str) -> None:
    pass


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def default_run_dir(config: Config) -> Path:
    p = Path(config.data.dataset).expanduser()
    name = p.stem if p.suffix in (".npz", ".npy") else p.name if p.is_dir() else p.name
    return Path("runs") / f"{name}-{config.family.name}-{time.strftime('%Y%m%d-%H%M%S')}"


def _absolute_paths(config: Config) -> Config:
    """Record data paths absolutely so that the run can be reloaded from any directory."""
    data = config.data
    if data.data_dir is not None:
        data = dataclasses.replace(data, data_dir=str(Path(data.data_dir).expanduser().resolve()))
    p = Path(data.dataset).expanduser()
    if (data.dataset.endswith((".npz", ".npy")) or p.is_dir()) and p.exists():
        data = dataclasses.replace(data, dataset=str(p.resolve()))
    return dataclasses.replace(config, data=data)


def resolve_data(config: Config) -> tuple[Config, Dataset, str]:
    """Load the configured dataset, standardise it when asked (``standardize``), fill in
    the options that depend on it (``likelihood`` ``auto``, a table's columns), check it
    against the observation model and resolve the binarization.

    Returns:
        ``(config, dataset, binarization)``: the configuration with ``standardize``,
        ``likelihood`` and the table's columns resolved (what a run's config.json records).

    Raises:
        DataNotFoundError, DataError, ConfigError: see the loaders and checks.
    """
    d = config.data
    dataset = load_dataset(d.dataset, d.data_dir, image_size=d.image_size, columns=d.columns,
                           label_column=d.label_column)
    standardized = resolve_standardize(d.standardize, dataset)
    if config.family.likelihood(config.model) == "auto":
        refuse_float_grey_levels(dataset)
    if standardized == "on":
        dataset = standardize(dataset)
    model = config.family.options_for_data(config.model, dataset).validate()
    config = dataclasses.replace(config, model=model,
                                 data=dataclasses.replace(d, standardize=standardized))
    return config, dataset, check_data(config.family, model, dataset, d.binarization)


def prepare_data(config: Config) -> tuple[Dataset, str]:
    """:func:`resolve_data` without the resolved configuration: ``(dataset,
    binarization)``."""
    _, dataset, binarization = resolve_data(config)
    return dataset, binarization


def train(model: torch.nn.Module, data: Dataset, config: TrainConfig | None = None, *,
          estimator: Options | None = None, binarization: str = "auto",
          run_dir: str | os.PathLike | None = None, progress: bool = True,
          log: Callable[[str], None] | None = None, resume: bool = False) -> TrainResult:
    """Fit ``model`` to ``data`` as its family does (gradient steps with an estimator,
    greedy pre-training first and a code prior after for the families that have them, or EM).

    Args:
        config: the trainer's options (default :class:`~vaekit.config.TrainConfig`); its
            ``objective`` names the estimator (``auto``: the family's default).
        estimator: the objective's options (default: its defaults), e.g.
            ``vaekit.estimators.IWAEOptions(num_samples=5)``.
        binarization: ``auto``, ``dynamic`` or ``none`` (see :class:`~vaekit.config.DataConfig`).
        run_dir: where checkpoints and logs go (``None``: nothing is written). The tracker
            of ``config.tracking`` (:mod:`vaekit.tracking`) logs the epochs there.
        resume: continue from ``run_dir``'s ``last.safetensors``.

    Returns:
        The :class:`~vaekit.training.TrainResult`; a gradient-trained model ends with its
        best-validation weights.

    Raises:
        DataError, ConfigError: data the model cannot take, bad options (a tracking backend
            without ``run_dir``; a missing package: :class:`vaekit.tracking.MissingPackageError`).
        TrainingDivergedError: NaN loss; the last good checkpoint is kept.
    """
    family = family_of(model)
    config = config or TrainConfig()
    config.validate()
    if run_dir is not None and tracking.active(run_dir) is None:   # before anything is written
        config = tracking.prepare(config, run_dir, resume=resume)
    elif run_dir is None and config.tracking not in ("auto", "none"):
        raise ConfigError(f"tracking {config.tracking} logs a run directory's training: give "
                          "run_dir, or tracking='none'")
    from .data import check_likelihood, resolve_binarization
    likelihood = family.observation_name(model)
    check_likelihood(data, likelihood)
    b = resolve_binarization(binarization, data, likelihood)
    job = FitJob(data, b, config, estimator, Path(run_dir) if run_dir is not None else None,
                 resume, progress, log or _stderr)
    params = {"model": family.name, **config.to_dict(),
              **(estimator.to_dict() if estimator is not None else {})}
    with tracking.session(config, run_dir, params=params, resume=resume) as tracker:
        result = family.fit(model, job)
        # a family fitted without the trainer (EM) logs its iterations here
        tracker.log_history(result.history, (f"L_{config.valid_num_samples}"
                                             if config.valid_num_samples
                                             else family.validation_name))
    return result


def train_run(config: Config, out: str | os.PathLike | None = None, *, resume: bool = False,
              progress: bool = True, evaluate_after: bool = True, figures: bool = True,
              log: Callable[[str], None] = _stderr) -> dict:
    """Train (or resume) a run, then evaluate it on the test set and draw its figures.

    Returns a summary dict: ``run_dir``, ``train`` (epochs, best epoch, ...), ``eval`` (the
    :class:`~vaekit.evaluation.Evaluation`) and ``figures``.

    Raises:
        ConfigError, DataError: bad configuration or data (nothing is written).
        CheckpointError: ``out`` already holds a run (without ``resume``), or cannot resume.
        TrainingDivergedError: NaN loss; the last good checkpoint is kept.
    """
    config.validate()
    w = distributed.world()           # under torchrun rank 0 writes; the others only train
    if not w.is_main:                 # it takes part in the final (sharded) evaluation
        progress, figures = False, False
        log = _silent
    resumed_at = None                 # the epoch of the checkpoint a resumed run starts from
    if resume:
        if out is None:
            raise CheckpointError("--resume needs the run directory to continue")
        run_dir = Path(out)
        if not (run_dir / LAST).is_file():
            if not (run_dir / CONFIG).is_file():
                raise CheckpointError(f"{run_dir} holds no {LAST} to resume from")
            # stopped before its first checkpoint was written: nothing to lose, start it
            log(f"{run_dir} stopped before its first checkpoint; training it from the start")
            resume = False
        else:
            try:                                  # checked before anything is written
                _, last_meta = load_tensors(run_dir / LAST)
            except CheckpointError as e:
                raise CheckpointError(f"{e}; {best_fallback(run_dir)}") from None
            resumed_at = last_meta.get("epoch")
    else:
        # the default name holds the time: every rank takes rank 0's
        run_dir = Path(distributed.broadcast_object(
            str(Path(out) if out is not None else default_run_dir(config))))
        if (run_dir / CONFIG).exists():
            if (run_dir / LAST).exists() or (run_dir / BEST).exists():
                raise CheckpointError(
                    f"{run_dir} already holds a run; continue it with --resume, or choose "
                    "another --out")
            log(f"{run_dir} holds a run that stopped before its first checkpoint; "
                "starting afresh there")
        config = _absolute_paths(config)
    # --tracking resolved (auto), its package and store checked: before anything is written
    config = dataclasses.replace(config, train=(
        tracking.prepare(config.train, run_dir, resume=resume) if w.is_main
        else dataclasses.replace(config.train, tracking="none", tracking_uri=None,
                                 experiment=None)))
    config, dataset, binarization = resolve_data(config)   # fails before anything is written
    resolve_device(config.train.device)
    config = config.resolved()
    config = dataclasses.replace(config, data=dataclasses.replace(config.data,
                                                                  binarization=binarization))
    family = config.family
    distributed.check_family(family)
    torch.manual_seed(config.train.seed)
    model = family.build(config.model, dataset.event_shape)
    distributed.barrier()             # every rank has checked the run directory: rank 0 writes
    lock = run_lock(run_dir, "train") if w.is_main else contextlib.nullcontext()
    with lock, contextlib.ExitStack() as held:                # refused while another
        if w.is_main:                                         # process holds it
            run_dir.mkdir(parents=True, exist_ok=True)
            write_json(run_dir / CONFIG, config.to_dict())
            if not resume or not (run_dir / DATA).is_file():
                write_json(run_dir / DATA, data_description(dataset))
        if resumed_at is not None:
            log(f"resuming {run_dir} from its last checkpoint (epoch {resumed_at})")
        if w.distributed:
            log(f"{w.size} processes (torchrun): each trains on its shard of every batch of "
                f"{config.train.batch_size}; rank 0 writes")
        # one tracking session for training, evaluation and figures (vaekit.tracking)
        tracker = held.enter_context(tracking.session(config.train,
                                                      run_dir if w.is_main else None,
                                                      params=config.to_dict(), resume=resume))
        if tracker.name == "mlflow":
            log(f"MLflow run {tracker.run_id} (experiment {config.train.experiment}) at "
                f"{config.train.tracking_uri}")
        log(f"training {family.name} ({config.objective}) on {dataset.name} "
            f"({dataset.raw_train.shape[0]} examples, binarization {binarization}); "
            f"run directory {run_dir}")
        if dataset.standardization is not None:
            log(f"real values standardised by the training split's mean and std: training "
                f"metrics are of the standardised data; evaluation reports the original units "
                f"(log |dx'/dx| = {dataset.standardization.log_abs_det:.2f} nats per example)")
        family.initialize(model, dataset)
        result = train(model, dataset, config.train, estimator=config.estimator,
                       binarization=binarization, run_dir=run_dir, progress=progress, log=log,
                       resume=resume)
        summary = {"run_dir": str(run_dir),
                   "train": {"epochs": result.epochs, "best_epoch": result.best_epoch,
                             "best_valid_score": result.best_valid_score,
                             "valid_name": (f"L_{config.train.valid_num_samples}"
                                            if config.train.valid_num_samples
                                            else family.validation_name),
                             "unit": "EM iterations" if "em" in family.objectives else "epochs",
                             "seconds": round(result.seconds, 2), "stopped": result.stopped,
                             "log_jacobian": (None if dataset.standardization is None
                                              else dataset.standardization.log_abs_det)}}
        run = Run(run_dir, config, model.to(resolve_device(config.train.device)), dataset,
                  binarization)
        finished_before = (resume and resumed_at is not None and result.epochs == resumed_at
                           and (run_dir / EVAL).is_file())
        if evaluate_after and finished_before:
            # nothing was trained: the run's evaluation stands (and is not recomputed)
            log(f"{run_dir} was already complete at epoch {resumed_at}; nothing to train, and "
                f"its {EVAL} is kept (vaekit evaluate {run_dir} evaluates it again)")
            summary["eval"] = family.result.from_dict(load_eval(run_dir))
        elif evaluate_after:
            summary["eval"] = evaluate_run(run, progress=progress, log=log, save=w.is_main)
            tracker.log_evaluation(summary["eval"].to_dict(), step=result.epochs)
        if figures:
            summary["figures"] = [str(p) for p in make_figures(run, result.history)]
            for p in summary["figures"]:
                tracker.log_artifact(p)
        return summary


def data_description(dataset: Dataset) -> dict:
    """What ``data.json`` records of the data a run was trained on: the dataset's name, the
    shape of an example, the standardisation (the training split's mean and std, by which
    samples are mapped back to the original units) and a table's columns."""
    return {"dataset": dataset.name, "event_shape": list(dataset.event_shape),
            "num_examples": {s: int(dataset.raw(s).shape[0]) for s in ("train", "valid", "test")},
            "standardization": (None if dataset.standardization is None
                                else dataset.standardization.to_dict()),
            "table": None if dataset.table is None else dataset.table.to_dict(),
            "label_names": dataset.label_names}


def _check_same_data(path: Path, dataset: Dataset) -> None:
    """Raise :class:`CheckpointError` when the data loaded for a run are not those it was
    trained on (by ``data.json``; runs without one are not checked)."""
    if not (path / DATA).is_file():
        return
    saved, now = read_json(path / DATA), data_description(dataset)
    for key in ("event_shape", "table", "num_examples"):
        if saved.get(key) != now[key]:
            raise CheckpointError(
                f"the data of {path} have changed since it was trained ({key} was "
                f"{saved.get(key)}, now {now[key]}); point --data-dir at the original data")
    a, b = saved.get("standardization"), now["standardization"]
    if (a is None) != (b is None) or (a is not None and not torch.allclose(
            torch.tensor(a["mean"] + a["std"]), torch.tensor(b["mean"] + b["std"]),
            rtol=1e-5, atol=1e-6)):
        raise CheckpointError(f"the data of {path} have changed since it was trained (their "
                              "standardisation differs from data.json's); point --data-dir at "
                              "the original data")


def _run_config(path: Path, checkpoint: str) -> Config:
    """A run directory's configuration, checked (and the checkpoint's name)."""
    if not path.is_dir():
        raise CheckpointError(f"run directory {path} does not exist")
    if not (path / CONFIG).is_file():
        raise CheckpointError(f"{path} is not a run directory (it has no {CONFIG})")
    if checkpoint not in ("best", "last"):
        raise ValueError(f"checkpoint must be best or last, got {checkpoint!r}")
    try:
        return Config.from_dict(read_json(path / CONFIG), legacy=True).validate()
    except ConfigError as e:
        raise CheckpointError(f"{path / CONFIG} is not a valid configuration: {e}") from None


def _built_model(path: Path, config: Config, event_shape: tuple[int, ...],
                 checkpoint: str) -> torch.nn.Module:
    """The run's model with the checkpoint's weights, in eval mode on its device."""
    model = config.family.build(config.model, event_shape)
    tensors, _ = load_tensors(path / (BEST if checkpoint == "best" else LAST))
    if checkpoint == "last":
        tensors = {k[6:]: v for k, v in tensors.items() if k.startswith("model.")}
    try:
        model.load_state_dict(tensors)
    except RuntimeError as e:
        raise CheckpointError(f"the {checkpoint} checkpoint of {path} does not fit its "
                              f"{CONFIG} ({str(e).splitlines()[0]})") from None
    return model.to(resolve_device(config.train.device)).eval()


def load_run(path: str | os.PathLike, *, checkpoint: str = "best",
             data_dir: str | None = None, device: str | None = None) -> Run:
    """Load a run directory's configuration, data and model weights (also a run written by
    vaekit 0.1).

    Args:
        checkpoint: ``"best"`` (best validation score) or ``"last"``.
        data_dir: where to look for the dataset if it moved since training.
        device: override the configured device.

    Raises:
        CheckpointError: not a run directory, or a missing/corrupt checkpoint, or one that
            does not fit the run's configuration; data that changed since training.
    """
    path = Path(path)
    config = _run_config(path, checkpoint)
    if data_dir is not None:
        config.data.data_dir = data_dir
    if device is not None:
        config.train.device = device
    saved_model = config.model
    config, dataset, binarization = resolve_data(config)
    _check_same_data(path, dataset)
    if config.model != saved_model:
        raise CheckpointError(f"the data of {path} have changed since it was trained (its model "
                              "options no longer fit them); point --data-dir at the original "
                              "data")
    model = _built_model(path, config, dataset.event_shape, checkpoint)
    return Run(path, config, model, dataset, binarization, checkpoint)


def load_model(path: str | os.PathLike, *, checkpoint: str = "best",
               device: str | None = None) -> torch.nn.Module:
    """A run's trained model, in eval mode on its device (``device`` overrides the run's
    ``auto``, which takes CUDA when present), with the run's :class:`~vaekit.config.Config`
    as ``model.config``::

        model = vaekit.load_model("runs/mnist-5k-vae-20261202-101500")
        x = model.sample(16)                                  # (16, 1, 28, 28)

    The data are not read when the run records their shape (``data.json``); runs written
    before it (and by vaekit 0.1) are loaded with their data, as :func:`load_run` does. The
    model works in the units it was trained in: for standardised data, :func:`load_run`'s
    ``dataset.to_original`` maps its samples back.

    Raises:
        CheckpointError: not a run directory, or a missing, corrupt or mismatched checkpoint.
    """
    path = Path(path)
    if not (path / DATA).is_file():
        run = load_run(path, checkpoint=checkpoint, device=device)
        run.model.config = run.config
        return run.model
    config = _run_config(path, checkpoint)
    if device is not None:
        config.train.device = device
    model = _built_model(path, config, tuple(read_json(path / DATA)["event_shape"]), checkpoint)
    model.config = config
    return model


def evaluate_run(run: Run | str | os.PathLike, num_samples: int | None = None, *,
                 split: str = "test", progress: bool = False, save: bool = True,
                 noise: tuple[str, float] | None = None,
                 compile: bool | str = "auto", seed: int = 0,
                 num_points: int | None = None,
                 log: Callable[[str], None] = _stderr) -> Evaluation:
    """Evaluate a run on a split; save the result as ``eval.json`` (``eval-valid.json``...).

    Returns the family's :class:`~vaekit.evaluation.Evaluation`, with ``dataset``, ``split``,
    ``binarization``, ``likelihood``, ``checkpoint``, ``seed`` and ``run_dir`` set. With
    ``noise = (kind, level)`` (autoencoders: the corruption ``denoising_error`` is scored on)
    the result gains ``noise`` and is saved as ``eval-{split}-{kind}-{level}.json``, leaving
    ``eval.json`` as it was; the last checkpoint's results are saved with ``-last`` before
    ``.json`` (``eval-last.json``), so they never replace the best checkpoint's. ``compile``
    as in :func:`vaekit.evaluation.log_likelihood`. The importance samples are drawn from a
    generator seeded with ``seed``, so evaluating a run again gives the same numbers; the
    caller's random state is left as it was. Under torchrun each rank evaluates its contiguous
    shard of the examples (from seed ``seed + rank``) and the per-example results are gathered
    (:func:`vaekit.distributed.sharded_evaluation`); rank 0 saves. With ``progress``, a long
    evaluation shows a bar on a terminal and a line every 10 s with the time left elsewhere.
    ``num_points``: only the split's first N examples (saved with ``-firstN`` before
    ``.json``: ``eval-first200.json`` for the test split), a quicker estimate of a costly
    model.
    """
    if not isinstance(run, Run):
        run = load_run(run)
    # a result to be saved in RUN waits for no trainer: refused while one holds it
    with run_lock(run.path, "evaluate") if save else contextlib.nullcontext():
        k = num_samples or run.config.train.eval_num_samples
        if k < 1:
            raise ConfigError(f"--num-samples must be a positive integer, got {k}")
        x = eval_split(run.dataset, split, run.binarization)
        family = run.family
        device = model_device(run.model)
        # families with the "labels" capability are scored with the split's labels
        labels = ({"labels": FitJob(run.dataset, run.binarization).labels(split)}
                  if family.supports("labels") else {})
        subset = num_points is not None and num_points < x.shape[0]
        if subset:
            x = x[:num_points]
            labels = {k: v[:num_points] for k, v in labels.items()}
        w = distributed.world()
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []), \
                distributed.sharded_evaluation():
            torch.manual_seed(seed + w.rank)  # torchrun: rank r's shard from seed + r
            result = family.evaluate(run.model, x, k, progress=progress and w.is_main,
                                     noise=noise, compile=compile, log=log, **labels)
        if run.dataset.standardization is not None:
            result = result.in_original_units(run.dataset.standardization.log_abs_det)
        result.dataset, result.split = run.dataset.name, split
        result.binarization = (f"dynamic (training); evaluation data binarized once, seed "
                               f"{EVAL_BINARIZATION_SEEDS[split]}" if run.binarization == "dynamic"
                               else run.binarization)
        result.likelihood = run.config.likelihood
        result.seed, result.checkpoint, result.run_dir = seed, run.checkpoint, str(run.path)
        name = EVAL if split == "test" else f"eval-{split}.json"
        if subset:
            name = name.replace(".json", f"-first{num_points}.json")
        if noise is not None:
            result.noise = {"kind": noise[0], "level": noise[1]}
            name = f"eval-{split}-{noise[0]}-{noise[1]:g}.json"
        if run.checkpoint != "best":
            name = name.replace(".json", f"-{run.checkpoint}.json")
        if save:
            write_json(run.path / name, result.to_dict())
        return result


def make_figures(run: Run, history: list[dict] | None = None, *,
                 out: str | os.PathLike | None = None, num_samples: int = 100,
                 seed: int = 0, label: int | None = None) -> list[Path]:
    """Draw the run's figures as PNG files in ``out`` (default: the run directory); return
    their paths. What is drawn is the family's choice (:meth:`vaekit.families.Family.figures`);
    ``samples.png`` shows ``num_samples`` samples drawn with ``seed`` (of class ``label``
    only, for a family with the ``labels`` capability).

    Raises:
        ConfigError: ``label`` for a family without labels, or not one of its classes.
    """
    check_label(run, label)
    history = history if history is not None else read_metrics(run.path / METRICS)
    ctx = FigureContext(run.model, run.dataset, run.binarization, history, run.config.model,
                        run.config.objective, num_samples=num_samples, seed=seed,
                        valid_name=(f"L_{run.config.train.valid_num_samples}"
                                    if run.config.train.valid_num_samples else None),
                        label=label)
    where = Path(out) if out is not None else run.path
    written = []
    for name, fig in run.family.figures(ctx):
        plotting.save_figure(fig, where / name)
        written.append(where / name)
    return written


SAMPLE_FORMATS = (".npy", ".csv")


def check_label(run: Run, label: int | None) -> None:
    """Refuse, in one line, a ``--label`` that the run's model cannot be conditioned on.

    Raises:
        ConfigError: a family without the ``labels`` capability, or a label that is not one
            of the model's classes.
    """
    if label is None:
        return
    family = run.family
    if not family.supports("labels"):
        able = [n for n in FAMILIES if FAMILIES.get(n).supports("labels")]
        raise ConfigError(f"--label draws from p(x|z, y), which needs a conditional model "
                          f"({', '.join(able)}); this run's model is {family.name}")
    classes = family.num_classes(run.model)
    if not 0 <= label < classes:
        names = run.dataset.label_names
        listed = (", ".join(f"{i} ({n})" for i, n in enumerate(names)) if names
                  else f"0..{classes - 1}")
        raise ConfigError(f"--label must be one of the model's {classes} classes: {listed}; "
                          f"got {label}")


@torch.no_grad()
def draw_samples(run: Run, num: int, *, seed: int = 0, mean: bool = False,
                 label: int | None = None) -> torch.Tensor:
    """``num`` samples of a run's model in the data's original units, ``(num,
    *event_shape)`` on the CPU: draws x ~ p(x) (z ~ p(z), then x ~ p(x|z)), or with ``mean``
    the means E[x|z]; standardisation undone. The caller's random state is left as it was.
    ``label``: draw from p(x|z, y=label) (families with the ``labels`` capability).

    Raises:
        ConfigError: a model that cannot sample (an autoencoder), ``num`` < 1, or a bad
            ``label`` (:func:`check_label`).
    """
    if num < 1:
        raise ConfigError(f"--num must be a positive integer, got {num}")
    family = run.family
    if not family.supports("sample"):
        raise ConfigError(f"a {family.name} has no generative model to sample from; "
                          "sampling needs a VAE, a VQ-VAE or a mixture")
    check_label(run, label)
    from .sampling import prior_draws, prior_samples
    run.model.eval()
    x = (prior_samples if mean else prior_draws)(run.model, num, seed, label=label)
    x = x.reshape(num, *run.dataset.event_shape).float()
    return run.dataset.to_original(x)


def export_samples(run: Run, path: str | os.PathLike, num: int, *, seed: int = 0,
                   mean: bool = False, label: int | None = None) -> Path:
    """Write :func:`draw_samples` to ``path``, atomically:

    * ``.npy``: the array ``(num, *event_shape)``; draws of 8-bit data as uint8 levels
      (0..255), other values float32;
    * ``.csv``: one sample per row; a table's samples with its columns (categories by name,
      real columns in the original units), other data as columns ``x0, x1, ...``.

    Raises:
        ConfigError: another suffix, or see :func:`draw_samples`.
    """
    import numpy as np

    from .io import atomic_path
    path = Path(path)
    if path.suffix.lower() not in SAMPLE_FORMATS:
        raise ConfigError(f"samples are written as {' or '.join(SAMPLE_FORMATS)}; got {path}")
    x = draw_samples(run, num, seed=seed, mean=mean, label=label)
    ds = run.dataset
    if path.suffix.lower() == ".npy":
        a = x.numpy()
        if not mean and ds.levels is not None and ds.standardization is None:
            a = np.rint(a * ds.divisor).clip(0, ds.divisor).astype(np.uint8)
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            np.save(f, a)
        return path
    import pandas as pd
    if ds.table is not None:
        frame = ds.table.decode(x.numpy())
    else:
        flat = x.reshape(num, -1).numpy()
        frame = pd.DataFrame(flat, columns=[f"x{i}" for i in range(flat.shape[1])])
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False)
    return path


def load_eval(run_dir: str | os.PathLike) -> dict:
    """The saved ``eval.json`` of a run."""
    return json.loads((Path(run_dir) / EVAL).read_text(encoding="utf-8"))
