"""Run directories: train, evaluate and sample end to end, as the CLI does.

A run directory holds::

    config.json         the full configuration (binarization resolved), written first
    best.safetensors    model weights at the best validation ELBO
    last.safetensors    model + optimizer + RNG state of the last epoch (for --resume)
    metrics.jsonl       one JSON record per epoch
    tensorboard/        TensorBoard event files
    eval.json           test metrics (vaekit evaluate)
    *.png               figures (vaekit sample)

Every file is written atomically (:mod:`vaekit.io`).
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from . import plotting, sampling
from .config import Config
from .data import (
    Dataset,
    binarize_fixed,
    check_likelihood,
    eval_split,
    load_dataset,
    resolve_binarization,
)
from .errors import CheckpointError, ConfigError
from .evaluation import evaluate, model_device
from .io import atomic_write, load_tensors, read_json, save_tensors, write_json
from .models import build_model
from .training import (
    BEST,
    LAST,
    METRICS,
    Trainer,
    TrainResult,
    pretrain_greedy,
    read_metrics,
    resolve_device,
    validation_name,
)

CONFIG = "config.json"
EVAL = "eval.json"


@dataclass
class Run:
    """A loaded run: its directory, configuration, model (on its device) and data."""

    path: Path
    config: Config
    model: torch.nn.Module
    dataset: Dataset
    binarization: str     # "dynamic" or "none", as trained
    checkpoint: str = "best"   # which weights the model holds: "best" or "last"


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def default_run_dir(config: Config) -> Path:
    name = Path(config.data.dataset).stem if config.data.dataset.endswith((".npz", ".npy")) \
        else config.data.dataset
    return Path("runs") / f"{name}-{config.model.model}-{time.strftime('%Y%m%d-%H%M%S')}"


def _absolute_paths(config: Config) -> Config:
    """Record data paths absolutely so that the run can be reloaded from any directory."""
    data = config.data
    if data.data_dir is not None:
        data = dataclasses.replace(data, data_dir=str(Path(data.data_dir).expanduser().resolve()))
    p = Path(data.dataset).expanduser()
    if data.dataset.endswith((".npz", ".npy")) and p.exists():
        data = dataclasses.replace(data, dataset=str(p.resolve()))
    return dataclasses.replace(config, data=data)


def prepare_data(config: Config) -> tuple[Dataset, str]:
    """Load the configured dataset, check it against the likelihood, resolve binarization."""
    dataset = load_dataset(config.data.dataset, config.data.data_dir)
    likelihood = config.resolved_likelihood()
    check_likelihood(dataset, likelihood)
    return dataset, resolve_binarization(config.data.binarization, dataset, likelihood)


def monitor_subset(x: torch.Tensor, n: int) -> torch.Tensor:
    """``n`` test examples drawn without replacement by a fixed generator (seed 0), in their
    original order: the same subset for every run, and representative of the whole split,
    whose order is not random (binarized MNIST's test set has runs of easy digits)."""
    if n >= x.shape[0]:
        return x
    return x[sampling.fixed_indices(x.shape[0], n).sort().values.to(x.device)]


def train_run(config: Config, out: str | os.PathLike | None = None, *, resume: bool = False,
              progress: bool = True, evaluate_after: bool = True, figures: bool = True,
              log: Callable[[str], None] = _stderr) -> dict:
    """Train (or resume) a run, then evaluate it on the test set and draw its figures.

    Returns a summary dict: ``run_dir``, ``train`` (epochs, best epoch, ...), ``eval``
    (see :func:`vaekit.evaluation.evaluate`) and ``figures``.

    Raises:
        ConfigError, DataError: bad configuration or data (nothing is written).
        CheckpointError: ``out`` already holds a run (without ``resume``), or cannot resume.
        TrainingDivergedError: NaN loss; the last good checkpoint is kept.
    """
    config.validate()
    if resume:
        if out is None:
            raise CheckpointError("--resume needs the run directory to continue")
        run_dir = Path(out)
        if not (run_dir / LAST).is_file():
            raise CheckpointError(f"{run_dir} holds no {LAST} to resume from")
    else:
        run_dir = Path(out) if out is not None else default_run_dir(config)
        if (run_dir / CONFIG).exists():
            raise CheckpointError(
                f"{run_dir} already holds a run; continue it with --resume, or choose "
                "another --out")
        config = _absolute_paths(config)
    dataset, binarization = prepare_data(config)          # fails before anything is written
    config = dataclasses.replace(
        config.resolved(), data=dataclasses.replace(config.data, binarization=binarization))
    torch.manual_seed(config.train.seed)
    model = build_model(config.model, dataset.dim)
    run_dir.mkdir(parents=True, exist_ok=True)
    write_json(run_dir / CONFIG, config.to_dict())
    dynamic = binarization == "dynamic"
    log(f"training {config.model.model} ({config.train.objective}) on {dataset.name} "
        f"({dataset.train.shape[0]} examples, binarization {binarization}); "
        f"run directory {run_dir}")
    if config.train.objective == "em":
        result = fit_em(model, dataset, config, run_dir, binarization, log)
    else:
        model.init_decoder_bias(dataset.train.mean(0))
        if hasattr(model, "layer_pairs") and config.train.pretrain_epochs and not resume:
            pretrain_greedy(model, dataset.train, config.train, dynamic_binarization=dynamic,
                            log=log)
        monitor_x = (monitor_subset(eval_split(dataset, "test", binarization),
                                    config.train.monitor_examples)
                     if config.train.monitor_every else None)
        trainer = Trainer(model, config.train, dataset.train,
                          eval_split(dataset, "valid", binarization),
                          dynamic_binarization=dynamic, run_dir=run_dir, progress=progress,
                          log=log, monitor_x=monitor_x)
        result = trainer.fit(resume=resume)
        model = trainer.model
        if hasattr(model, "fit_prior"):           # VQ-VAE: the prior over codes, after training
            x = binarize_fixed(dataset.train) if dynamic else dataset.train
            with torch.no_grad():
                model.eval()
                model.fit_prior(torch.cat([model.encode(xb.to(trainer.device))
                                           for xb in x.split(2000)]))
            save_tensors(run_dir / BEST, model.state_dict(), {"epoch": result.best_epoch})
    summary = {"run_dir": str(run_dir),
               "train": {"epochs": result.epochs, "best_epoch": result.best_epoch,
                         "best_valid_score": result.best_valid_score,
                         "valid_name": validation_name(model),
                         "seconds": round(result.seconds, 2), "stopped": result.stopped}}
    run = Run(run_dir, config, model, dataset, binarization)
    if evaluate_after:
        summary["eval"] = evaluate_run(run, progress=progress)
    if figures:
        summary["figures"] = [str(p) for p in make_figures(run, result.history)]
    return summary


def fit_em(model, dataset: Dataset, config: Config, run_dir: Path, binarization: str,
           log: Callable[[str], None]) -> TrainResult:
    """Fit a mixture by EM (restarts, tolerance and iterations from ``config.train``), write
    ``best.safetensors`` and one ``metrics.jsonl`` record per EM iteration (its ``epoch`` is
    the iteration; 0 is the initialisation, so the last is ``n_iter_``)."""
    device = resolve_device(config.train.device)
    x = binarize_fixed(dataset.train) if binarization == "dynamic" else dataset.train
    x = x.to(device)                      # EM needs fixed data: grey levels binarized once
    model.seed = config.train.seed        # k-means++ seeding and restarts
    start = time.perf_counter()
    model.to(device).fit(x)
    seconds = time.perf_counter() - start
    history = [{"epoch": i, "train_bound": ll, "valid_score": None}
               for i, ll in enumerate(model.history_)]
    valid = float(model.score_samples(eval_split(dataset, "valid", binarization).to(device))
                  .mean())
    if history:                           # the fit's total time on the last record, as the
        history[-1]["valid_score"] = valid  # trainer's cumulative "seconds" ends there
        history[-1]["seconds"] = round(seconds, 3)
    save_tensors(run_dir / BEST, model.state_dict(), {"epoch": model.n_iter_,
                                                      "valid_score": valid})
    atomic_write(run_dir / METRICS, "".join(json.dumps(r) + "\n" for r in history))
    log(f"EM: {model.n_iter_} iterations, converged {model.converged_}, train log-likelihood "
        f"{model.lower_bound_:.3f} nats, validation {valid:.3f} ({seconds:.1f} s)")
    return TrainResult(history=history, best_epoch=model.n_iter_, best_valid_score=valid,
                       epochs=model.n_iter_, stopped="EM converged" if model.converged_
                       else "EM reached em_max_iter", seconds=seconds)


def load_run(path: str | os.PathLike, *, checkpoint: str = "best",
             data_dir: str | None = None, device: str | None = None) -> Run:
    """Load a run directory's configuration, data and model weights.

    Args:
        checkpoint: ``"best"`` (best validation ELBO) or ``"last"``.
        data_dir: where to look for the dataset if it moved since training.
        device: override the configured device.

    Raises:
        CheckpointError: not a run directory, or a missing/corrupt checkpoint.
    """
    path = Path(path)
    if not path.is_dir():
        raise CheckpointError(f"run directory {path} does not exist")
    if not (path / CONFIG).is_file():
        raise CheckpointError(f"{path} is not a run directory (it has no {CONFIG})")
    try:
        config = Config.from_dict(read_json(path / CONFIG)).validate()
    except ConfigError as e:
        raise CheckpointError(f"{path / CONFIG} is not a valid configuration: {e}") from None
    if data_dir is not None:
        config.data.data_dir = data_dir
    if device is not None:
        config.train.device = device
    dataset, binarization = prepare_data(config)
    model = build_model(config.model, dataset.dim)
    if checkpoint not in ("best", "last"):
        raise ValueError(f"checkpoint must be best or last, got {checkpoint!r}")
    tensors, _ = load_tensors(path / (BEST if checkpoint == "best" else LAST))
    if checkpoint == "last":
        tensors = {k[6:]: v for k, v in tensors.items() if k.startswith("model.")}
    try:
        model.load_state_dict(tensors)
    except RuntimeError as e:
        raise CheckpointError(f"the {checkpoint} checkpoint of {path} does not fit its "
                              f"{CONFIG} ({str(e).splitlines()[0]})") from None
    model.to(resolve_device(config.train.device)).eval()
    return Run(path, config, model, dataset, binarization, checkpoint)


def evaluate_run(run: Run | str | os.PathLike, num_samples: int | None = None, *,
                 split: str = "test", progress: bool = False, save: bool = True,
                 noise: tuple[str, float] | None = None,
                 compile: bool | str = "auto", seed: int = 0) -> dict:
    """Evaluate a run on a split; save the result as ``eval.json`` (``eval-valid.json``...).

    The returned dict is :func:`vaekit.evaluation.evaluate`'s plus ``dataset``, ``split``,
    ``binarization``, ``likelihood``, ``checkpoint``, ``seed``, ``run_dir``. With ``noise =
    (kind, level)`` (autoencoders: the corruption ``denoising_error`` is scored on) the result
    gains ``noise`` and is saved as ``eval-{split}-{kind}-{level}.json``, leaving ``eval.json``
    as it was; the last checkpoint's results are saved with ``-last`` before ``.json``
    (``eval-last.json``), so they never replace the best checkpoint's. ``compile`` as in
    :func:`vaekit.evaluation.log_likelihood`. The importance samples are drawn from a
    generator seeded with ``seed`` (saved in the result), so evaluating a run again gives the
    same numbers; the caller's random state is left as it was.
    """
    if not isinstance(run, Run):
        run = load_run(run)
    k = num_samples or run.config.train.eval_num_samples
    if k < 1:
        raise ConfigError(f"--num-samples must be a positive integer, got {k}")
    x = eval_split(run.dataset, split, run.binarization)
    result = {"dataset": run.dataset.name, "split": split,
              "binarization": ("dynamic (training); evaluation data binarized once, seed 0"
                               if run.binarization == "dynamic" else run.binarization),
              "likelihood": run.config.model.likelihood}
    device = model_device(run.model)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        result.update(evaluate(run.model, x, k, progress=progress, noise=noise,
                               compile=compile))
    result.update(seed=seed, checkpoint=run.checkpoint, run_dir=str(run.path))
    name = EVAL if split == "test" else f"eval-{split}.json"
    if noise is not None:
        result["noise"] = {"kind": noise[0], "level": noise[1]}
        name = f"eval-{split}-{noise[0]}-{noise[1]:g}.json"
    if run.checkpoint != "best":
        name = name.replace(".json", f"-{run.checkpoint}.json")
    if save:
        write_json(run.path / name, result)
    return result


def make_figures(run: Run, history: list[dict] | None = None) -> list[Path]:
    """Draw the run's figures as PNG files in its directory; return their paths.

    What is drawn depends on what the model can do: samples (generative models), test images
    beside their reconstructions and latent interpolations (models with ``embed`` and
    ``decode_mean``), noisy/clean/reconstructed rows (denoising autoencoders), the decoded
    manifold (2-D latent VAEs), the test set's embeddings by label (2-D latent spaces), the
    learning curves, and for 2-D data the data with the fitted mixture's components."""
    model, ds, out = run.model, run.dataset, run.path
    model.eval()
    x_test = eval_split(ds, "test", run.binarization)
    _, labels = ds.split("test")
    written: list[Path] = []

    def save(fig, name):
        plotting.save_figure(fig, out / name)
        written.append(out / name)

    history = history if history is not None else read_metrics(out / METRICS)
    if history and run.config.train.objective == "em":
        save(plotting.plot_em_history([r["train_bound"] for r in history]), "curves.png")
    elif history:
        save(plotting.plot_curves(history, validation_name(model)), "curves.png")
    shape = ds.image_shape
    can_sample = hasattr(model, "sample") and getattr(model, "can_sample", True)
    can_embed = hasattr(model, "embed") and hasattr(model, "decode_mean")
    if shape is not None:
        if can_sample:
            save(plotting.plot_samples(sampling.prior_samples(model, 100), shape), "samples.png")
        shown = sampling.shown_examples(x_test, 50)        # a fixed random draw, not x[:50]
        if can_embed:
            save(plotting.plot_reconstructions(shown, sampling.reconstructions(model, shown),
                                               shape), "reconstructions.png")
            pairs = min(8, shown.shape[0] // 2)
            if pairs:
                paths = sampling.interpolations(model, shown[:pairs], shown[pairs:2 * pairs])
                save(plotting.plot_interpolations(paths, shape), "interpolations.png")
        if getattr(model, "noise", "none") != "none":
            from .models.autoencoder import corrupt_fixed
            clean = shown[:10]
            noisy = corrupt_fixed(clean, model.noise, model.noise_level,
                                  torch.Generator().manual_seed(0))
            rec = model.decode_mean(model.embed(noisy.to(model_device(model)))).cpu()
            save(plotting.plot_denoising(noisy, clean, rec, shape), "denoising.png")
    if can_embed and getattr(model, "latent_dim", None) == 2:
        if shape is not None and hasattr(model, "prior"):
            images, _ = sampling.latent_grid(model, 20)
            save(plotting.plot_manifold(images, shape, 20), "manifold.png")
        save(plotting.plot_latent(sampling.embeddings(model, x_test).cpu(), labels), "latent.png")
    if hasattr(model, "score_samples"):                   # mixtures fitted by EM
        if ds.dim == 2 and hasattr(model, "covariances_"):
            truth = None
            if ds.name == "gaussian-mixture-2d":
                from .synthetic import true_gaussian_mixture_2d
                truth = true_gaussian_mixture_2d()
            save(plotting.plot_mixture_2d(x_test, labels, truth, model), "mixture.png")
        if shape is not None:
            order = model.weights_.argsort(descending=True)[:100]
            save(plotting.plot_samples(model.means_[order].cpu(), shape,
                                       title="component means, by weight"), "components.png")
    return written


def load_eval(run_dir: str | os.PathLike) -> dict:
    """The saved ``eval.json`` of a run."""
    return json.loads((Path(run_dir) / EVAL).read_text(encoding="utf-8"))
