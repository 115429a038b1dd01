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

from .runs import EVAL, Run, evaluate_run, load_run
from .training import METRICS, read_metrics


def run_summary(path: str | os.PathLike | Run, num_samples: int = 5000,
                data_dir: str | None = None, progress: bool = False) -> dict:
    """Table row of one run: objective, K, epochs, wall time, and the test metrics its model
    has, in nats per example: ``test_elbo`` (VQ-VAE: its bound), ``test_log_likelihood``
    (importance-sampled; exact for mixtures), ``test_reconstruction_error`` and
    ``active_units``; a metric the model lacks is None."""
    run = path if isinstance(path, Run) else load_run(path, data_dir=data_dir)
    path = run.path
    cached = path / EVAL
    result = json.loads(cached.read_text()) if cached.is_file() else None
    # An importance-sampled estimate is reused only when it used the same k; deterministic
    # metrics (reconstruction error, a mixture's exact log-likelihood) do not depend on k.
    if result is None or (result.get("num_samples") not in (None, num_samples)
                          and not hasattr(run.model, "score_samples")):
        result = evaluate_run(run, num_samples, progress=progress)
    history = read_metrics(path / METRICS)
    t = run.config.train
    row = {"run": str(path), "name": path.name, "model": run.config.model.model,
           "objective": t.objective, "num_samples": t.num_samples,
           "epochs": history[-1]["epoch"] if history else 0,
           "train_seconds": history[-1].get("seconds", 0.0) if history else 0.0,
           "eval_num_samples": result.get("num_samples"),
           "latent_dim": result.get("latent_dim", getattr(run.model, "latent_dim", None)),
           "dataset": result["dataset"], "binarization": result["binarization"],
           "monitor": [(r["examples"], r["monitor_log_likelihood"]) for r in history
                       if "monitor_log_likelihood" in r],
           "monitor_num_samples": next((r["monitor_num_samples"] for r in history
                                        if "monitor_num_samples" in r), None)}
    # The VQ-VAE's bound log p(x|z_q(x)) + log p(c(x)) is the ELBO of a one-hot q(c|x);
    # the reconstruction error is -log p(x|x^) for autoencoders, -E_q log p(x|z) for VAEs.
    for keys, name in ((("elbo", "log_likelihood_bound"), "test_elbo"),
                       (("log_likelihood",), "test_log_likelihood"),
                       (("reconstruction_error",), "test_reconstruction_error")):
        key = next((k for k in keys if k in result), None)
        row[name] = None if key is None else result[key]
        row[name + "_se"] = None if key is None else result.get(key + "_se")
    if row["test_reconstruction_error"] is None and "reconstruction" in result:
        row["test_reconstruction_error"] = -result["reconstruction"]
        row["test_reconstruction_error_se"] = result.get("reconstruction_se")
    row["active_units"] = result.get("active_units")
    return row


def compare_runs(paths: list[str | os.PathLike], out: str | os.PathLike,
                 num_samples: int = 5000, data_dir: str | None = None,
                 progress: bool = False) -> tuple[list[dict], list[Path]]:
    """Summaries of the runs and the figures written into ``out``: ``compare.json``,
    ``compare.png`` (the monitored test bound over training), ``compare_latent.png`` when
    every run has a 2-D latent space, and ``compare_interpolations.png`` (the same pairs of
    test images interpolated by every model) when every model embeds images."""
    from . import plotting
    from .data import eval_split
    from .io import write_json
    from .sampling import embeddings, interpolations, shown_examples

    out = Path(out)
    runs = [load_run(p, data_dir=data_dir) for p in paths]
    rows = [run_summary(run, num_samples, progress=progress) for run in runs]
    figures = []
    write_json(out / "compare.json", rows)

    def save(fig, name):
        plotting.save_figure(fig, out / name)
        figures.append(out / name)

    if any(r["monitor"] for r in rows):
        save(plotting.plot_monitor_curves(rows), "compare.png")
    if all(r["latent_dim"] == 2 for r in rows):
        save(plotting.plot_latent_panels([
            (run.path.name, embeddings(run.model, eval_split(run.dataset, "test",
                                                             run.binarization)).cpu(),
             run.dataset.split("test")[1]) for run in runs]), "compare_latent.png")
    if len(runs) > 1 and all(hasattr(r.model, "embed") and hasattr(r.model, "decode_mean")
                             and r.dataset.image_shape is not None for r in runs):
        # The same test pairs through every model: nothing makes an autoencoder's straight
        # lines in code space decode to digits; a VAE's prior does (Kingma & Welling 2014).
        panels = []
        for run in runs:
            x = shown_examples(eval_split(run.dataset, "test", run.binarization), 12)
            pairs = x.shape[0] // 2
            panels.append((run.path.name, interpolations(run.model, x[:pairs],
                                                         x[pairs:2 * pairs])))
        save(plotting.plot_interpolation_panels(panels, runs[0].dataset.image_shape),
             "compare_interpolations.png")
    return rows, figures
