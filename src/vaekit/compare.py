"""Put several runs side by side: one table and the bound L_k on the test set over training.

Each run's test metrics come from its ``eval.json`` when that was computed with the same
number of importance samples (or needs none), and are computed (and saved) otherwise. The
curve is the ``monitor_log_likelihood`` that ``vaekit train --monitor-every N`` records in
``metrics.jsonl``, plotted against the number of training examples processed, as in Kingma &
Welling (2014), Fig. 2 (AEVB against wake-sleep).

Log-likelihoods of different datasets (or of one dataset binarized differently) cannot be
compared: runs that disagree are refused unless ``allow_mixed`` is set.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from .errors import ConfigError
from .runs import EVAL, Run, evaluate_run, load_run
from .seeds import config_key, over_seeds, without_key
from .training import METRICS, read_metrics


def run_summary(path: str | os.PathLike | Run, num_samples: int = 5000,
                data_dir: str | None = None, progress: bool = False) -> dict:
    """Table row of one run: its full name, model, dataset, latent size, objective, K,
    epochs, wall time, and the test metrics its model has, in nats per example
    (:meth:`vaekit.evaluation.Evaluation.comparison`: ``test_elbo`` (VQ-VAE: its bound),
    ``test_log_likelihood`` (importance-sampled; exact for mixtures),
    ``test_reconstruction_error`` and ``active_units``); a metric the model lacks is None."""
    run = path if isinstance(path, Run) else load_run(path, data_dir=data_dir)
    path = run.path
    family = run.family
    cached = path / EVAL
    result = (family.result.from_dict(json.loads(cached.read_text(encoding="utf-8")))
              if cached.is_file() else None)
    # An importance-sampled estimate is reused only when it used the same k; deterministic
    # metrics (reconstruction error, a mixture's exact log-likelihood) do not depend on k.
    if result is None or result.num_samples not in (None, num_samples):
        result = evaluate_run(run, num_samples, progress=progress)
    history = read_metrics(path / METRICS)
    options = run.config.estimator_options()
    row = {"run": str(path), "name": path.name, "model": family.name,
           "seed": run.config.train.seed, "config_key": config_key(run.config.to_dict()),
           "dataset": run.dataset.name, "binarization": result.binarization,
           "latent_dim": family.latent_dim(run.model), "objective": run.config.objective,
           "num_samples": (options.to_dict().get("num_samples")
                           if options is not None else None),
           "epochs": history[-1]["epoch"] if history else 0,
           "train_seconds": history[-1].get("seconds", 0.0) if history else 0.0,
           "eval_num_samples": result.num_samples,
           "monitor": [(r["examples"], r["monitor_log_likelihood"]) for r in history
                       if "monitor_log_likelihood" in r],
           "monitor_num_samples": next((r["monitor_num_samples"] for r in history
                                        if "monitor_num_samples" in r), None)}
    row.update(result.comparison())
    return row


def check_comparable(runs: list[Run]) -> str | None:
    """``None`` when every run was trained and evaluated on the same data; else a line
    saying how they differ."""
    kinds = {(r.dataset.name, r.binarization) for r in runs}
    if len(kinds) == 1:
        return None
    parts = ", ".join(f"{r.path.name}: {r.dataset.name} ({r.binarization})" for r in runs)
    return f"the runs were trained on different data ({parts})"


def compare_runs(paths: list[str | os.PathLike], out: str | os.PathLike,
                 num_samples: int = 5000, data_dir: str | None = None,
                 progress: bool = False, allow_mixed: bool = False) -> tuple[list[dict],
                                                                             list[Path]]:
    """Summaries of the runs and the figures written into ``out``: ``compare.json`` (the rows;
    and ``compare_seeds.json``, :func:`vaekit.seeds.over_seeds`, when some runs differ only in
    their seed),
    ``compare.png`` (the monitored test bound over training), ``compare_latent.png`` when
    every run has a 2-D latent space, and ``compare_interpolations.png`` (the same pairs of
    test images interpolated by every model) when every model embeds images.

    Raises:
        ConfigError: the runs were trained on different datasets or binarizations (their
            log-likelihoods are not comparable), unless ``allow_mixed``.
    """
    from . import plotting
    from .data import eval_split
    from .io import write_json
    from .sampling import embeddings, interpolations, shown_examples

    out = Path(out)
    runs = [load_run(p, data_dir=data_dir) for p in paths]
    mixed = check_comparable(runs)
    if mixed and not allow_mixed:
        raise ConfigError(f"{mixed}: their log-likelihoods are not comparable; compare runs "
                          "on one dataset, or pass --allow-mixed to show them anyway")
    rows = [run_summary(run, num_samples, progress=progress) for run in runs]
    figures = []
    write_json(out / "compare.json", [without_key(r) for r in rows])
    groups = over_seeds(rows)
    if groups:
        write_json(out / "compare_seeds.json", groups)

    def save(fig, name):
        plotting.save_figure(fig, out / name)
        figures.append(out / name)

    embed = all(r.family.supports("embed") for r in runs)
    if any(r["monitor"] for r in rows):
        save(plotting.plot_monitor_curves(rows), "compare.png")
    if embed and all(r["latent_dim"] == 2 for r in rows):
        save(plotting.plot_latent_panels([
            (run.path.name, embeddings(run.model, eval_split(run.dataset, "test",
                                                             run.binarization)).cpu(),
             run.dataset.split("test")[1]) for run in runs]), "compare_latent.png")
    shapes = {run.dataset.figure_shape for run in runs}
    if len(runs) > 1 and embed and len(shapes) == 1 and None not in shapes:
        # The same test pairs through every model: nothing makes an autoencoder's straight
        # lines in code space decode to digits; a VAE's prior does (Kingma & Welling 2014).
        panels = []
        for run in runs:
            x = shown_examples(eval_split(run.dataset, "test", run.binarization), 12)
            pairs = x.shape[0] // 2
            panels.append((run.path.name, interpolations(run.model, x[:pairs],
                                                         x[pairs:2 * pairs])))
        save(plotting.plot_interpolation_panels(panels, shapes.pop()),
             "compare_interpolations.png")
    return rows, figures
