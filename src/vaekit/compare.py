"""Put several runs side by side: one table and the bound L_k on the test set over training.

Each run's test metrics come from its ``eval.json`` when that was computed with the same
number of importance samples, and are computed (and saved) otherwise. The curve is the
``monitor_log_likelihood`` that ``vaekit train --monitor-every N`` records in
``metrics.jsonl``, plotted against the number of training examples processed, as in Kingma &
Welling (2014), Fig. 2 (AEVB against wake-sleep).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from .runs import EVAL, evaluate_run, load_run
from .training import METRICS, read_metrics


def run_summary(path: str | os.PathLike, num_samples: int = 5000, data_dir: str | None = None,
                progress: bool = False) -> dict:
    """Table row of one run: objective, K, epochs, wall time, test ELBO / LL, active units."""
    path = Path(path)
    run = load_run(path, data_dir=data_dir)
    cached = path / EVAL
    result = json.loads(cached.read_text()) if cached.is_file() else None
    if result is None or result.get("num_samples") != num_samples:
        result = evaluate_run(run, num_samples, progress=progress)
    history = read_metrics(path / METRICS)
    t = run.config.train
    return {"run": str(path), "name": path.name, "objective": t.objective,
            "num_samples": t.num_samples, "epochs": history[-1]["epoch"] if history else 0,
            "train_seconds": history[-1]["seconds"] if history else 0.0,
            "test_elbo": result["elbo"], "test_elbo_se": result["elbo_se"],
            "test_log_likelihood": result["log_likelihood"],
            "test_log_likelihood_se": result["log_likelihood_se"],
            "eval_num_samples": result["num_samples"], "active_units": result["active_units"],
            "latent_dim": result["latent_dim"], "dataset": result["dataset"],
            "binarization": result["binarization"],
            "monitor": [(r["examples"], r["monitor_log_likelihood"]) for r in history
                        if "monitor_log_likelihood" in r],
            "monitor_num_samples": next((r["monitor_num_samples"] for r in history
                                         if "monitor_num_samples" in r), None)}


def compare_runs(paths: list[str | os.PathLike], out: str | os.PathLike,
                 num_samples: int = 5000, data_dir: str | None = None,
                 progress: bool = False) -> tuple[list[dict], list[Path]]:
    """Summaries of the runs and the figures written into ``out`` (``compare.json``,
    ``compare.png``, and ``compare_latent.png`` when every run has a 2-D latent space)."""
    from . import plotting
    from .data import eval_split
    from .evaluation import posterior_means
    from .io import write_json

    out = Path(out)
    rows = [run_summary(p, num_samples, data_dir, progress) for p in paths]
    figures = []
    write_json(out / "compare.json", rows)
    if any(r["monitor"] for r in rows):
        plotting.save_figure(plotting.plot_monitor_curves(rows), out / "compare.png")
        figures.append(out / "compare.png")
    if all(r["latent_dim"] == 2 for r in rows):
        panels = []
        for p in paths:
            run = load_run(p, data_dir=data_dir)
            x = eval_split(run.dataset, "test", run.binarization)
            panels.append((Path(p).name, posterior_means(run.model, x),
                           run.dataset.split("test")[1]))
        plotting.save_figure(plotting.plot_latent_panels(panels), out / "compare_latent.png")
        figures.append(out / "compare_latent.png")
    return rows, figures
