"""Several seeds of one configuration: ``vaekit train --seeds 0,1,2 --out DIR``.

Each seed is a complete run of its own, ``DIR/seed-S``, trained exactly as ``vaekit train
--seed S --out DIR/seed-S`` trains it (the same code path, one after another in this process),
so every run can be evaluated, resumed, sampled and compared on its own. ``DIR/seeds.json``
records the seeds and, once they are evaluated, the mean and the spread over seeds of each
test metric: the sample standard deviation (n - 1 in the denominator) of the per-seed values,
which is the error bar over training runs, beside the mean of the per-seed standard errors
(the error of estimating each run's value on the finite test set).

``vaekit train --resume DIR`` continues every seed: finished runs are kept, interrupted ones
resume from their last checkpoint, and seeds never started are trained. ``vaekit compare``
groups any runs whose configurations differ only in the seed and reports the same statistics
(:func:`over_seeds`).

The replicas are not stacked into one model: on the CPU a step of 8 replicas stacked with
``torch.func`` measured 1.00-1.22x the throughput of 8 steps one after another
(benchmarks/bench_replicas.py), since Adam's update and the products grow with the replicas.
"""

from __future__ import annotations

import dataclasses
import json
import os
import statistics
from collections.abc import Callable, Sequence
from pathlib import Path

from .config import Config
from .errors import CheckpointError, ConfigError
from .io import read_json, write_json
from .runs import CONFIG, _absolute_paths

SEEDS = "seeds.json"
METRICS = ("test_log_likelihood", "test_elbo", "test_reconstruction_error")
# what does not change the experiment when two runs are grouped over seeds
IGNORED = {("train", "seed"), ("train", "device"), ("train", "tracking"),
           ("train", "tracking_uri"), ("train", "experiment"), ("train", "cuda_graphs"),
           ("train", "eval_num_samples"), ("data", "data_dir")}


def parse_seeds(text: str) -> list[int]:
    """``"0,1,2"`` -> ``[0, 1, 2]``; ``"0-4"`` -> ``[0, 1, 2, 3, 4]``.

    Raises:
        ConfigError: not a list of distinct non-negative integers, or fewer than two.
    """
    seeds: list[int] = []
    try:
        for part in text.split(","):
            lo, dash, hi = part.strip().partition("-")
            seeds.extend(range(int(lo), int(hi) + 1) if dash else [int(lo)])
    except ValueError:
        raise ConfigError(f"--seeds takes integers such as 0,1,2 or 0-4, got {text!r}") from None
    if len(seeds) < 2 or len(set(seeds)) != len(seeds) or min(seeds) < 0:
        raise ConfigError(f"--seeds needs two or more distinct non-negative seeds, got {text!r}")
    return seeds


def seed_dir(out: str | os.PathLike, seed: int) -> Path:
    return Path(out) / f"seed-{seed}"


def without_key(row: dict) -> dict:
    """A summary without its ``config_key`` (a whole configuration as a string, the grouping
    key of :func:`over_seeds`): what ``seeds.json``, ``compare.json`` and ``--json`` show."""
    return {k: v for k, v in row.items() if k != "config_key"}


def config_key(config: dict) -> str:
    """The configuration (``config.json``'s dict) without what two seeds of one experiment may
    differ in (the seed, the device, the tracking, the data's directory)."""
    kept = {section: {k: v for k, v in values.items() if (section, k) not in IGNORED}
            if isinstance(values, dict) else values for section, values in config.items()}
    return json.dumps(kept, sort_keys=True)


def over_seeds(rows: Sequence[dict]) -> list[dict]:
    """The groups of two or more summaries (rows of :func:`vaekit.compare.run_summary`, with
    ``config_key`` and ``seed``) that differ only in their seed: for each metric of
    :data:`METRICS` the ``mean``, the ``sd`` over seeds (n - 1) and ``mean_se`` (the mean of
    the per-run standard errors); ``None`` where a run lacks the metric."""
    groups: dict[str, list[dict]] = {}
    for r in rows:
        groups.setdefault(r["config_key"], []).append(r)
    out = []
    for members in groups.values():
        if len(members) < 2:
            continue
        g = {"runs": [m["name"] for m in members], "seeds": [m["seed"] for m in members]}
        for metric in METRICS:
            values = [m.get(metric) for m in members]
            if any(v is None for v in values):
                g[metric] = None
                continue
            ses = [m.get(f"{metric}_se") or 0.0 for m in members]
            g[metric] = {"mean": statistics.fmean(values), "sd": statistics.stdev(values),
                         "mean_se": statistics.fmean(ses), "n": len(values)}
        out.append(g)
    return out


def train_seeds(config: Config, out: str | os.PathLike, seeds: Sequence[int], *,
                train_one: Callable[..., dict], log: Callable[[str], None]) -> dict:
    """Train ``config`` once per seed into ``out/seed-S``, one after another, with
    ``train_one(config, run_dir, resume=...)`` (:func:`vaekit.runs.train_run` with the
    caller's options); write ``out/seeds.json``. Returns ``{"seeds", "runs", "over_seeds"}``
    (the per-seed summaries and the statistics of :func:`over_seeds`, when evaluated).

    Raises:
        CheckpointError: ``out`` already holds seeds, or ``out/seed-S`` a run (nothing is
            written then).
    """
    out = Path(out)
    if (out / SEEDS).exists():
        raise CheckpointError(f"{out} already holds seeds; continue them with vaekit train "
                              f"--resume {out}, or choose another --out")
    taken = [str(seed_dir(out, s)) for s in seeds if (seed_dir(out, s) / CONFIG).exists()]
    if taken:
        raise CheckpointError(f"{taken[0]} already holds a run; choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    # data paths absolute: a resume may start the missing seeds from another directory
    write_json(out / SEEDS, {"seeds": list(seeds), "config": _absolute_paths(config).to_dict()})
    summaries = []
    for i, s in enumerate(seeds):
        log(f"seed {s} ({i + 1} of {len(seeds)}): {seed_dir(out, s)}")
        cfg = dataclasses.replace(config, train=dataclasses.replace(config.train, seed=s))
        summaries.append(train_one(cfg, seed_dir(out, s), resume=False))
    return finish(out, seeds, summaries)


def read_group(out: str | os.PathLike) -> tuple[list[int], dict]:
    """The seeds and the group's configuration (a ``config.json`` dict, without the seed's
    own) that ``out/seeds.json`` records.

    Raises:
        ConfigError: ``out/seeds.json`` is missing or not vaekit's.
    """
    path = Path(out) / SEEDS
    try:
        record = read_json(path)
        return [int(s) for s in record["seeds"]], dict(record["config"])
    except (OSError, ValueError, KeyError, TypeError):
        raise ConfigError(f"{path} is missing or not written by vaekit train --seeds") from None


def resume_seeds(out: str | os.PathLike, *, resume_one: Callable[[Path], dict],
                 start_one: Callable[[Path, int], dict],
                 log: Callable[[str], None]) -> dict:
    """Continue the seeds of ``out`` (written by :func:`train_seeds`): each run that has a
    ``config.json`` is resumed with ``resume_one(run_dir)``, each never started is trained
    with ``start_one(run_dir, seed)``.

    Raises:
        ConfigError: ``out/seeds.json`` is missing or not vaekit's.
    """
    out = Path(out)
    seeds, _ = read_group(out)
    summaries = []
    for i, s in enumerate(seeds):
        run = seed_dir(out, s)
        started = (run / CONFIG).is_file()
        log(f"seed {s} ({i + 1} of {len(seeds)}): {'resuming' if started else 'starting'} "
            f"{run}")
        summaries.append(resume_one(run) if started else start_one(run, s))
    return finish(out, seeds, summaries)


def finish(out: Path, seeds: Sequence[int], summaries: Sequence[dict]) -> dict:
    """``seeds.json`` with the per-seed test metrics and their statistics over seeds."""
    rows = []
    for s, summary in zip(seeds, summaries, strict=True):
        ev = summary.get("eval")
        metrics = ev.comparison() if ev is not None else {}
        rows.append({"name": seed_dir(out, s).name, "seed": s, "config_key": "one",
                     "run_dir": summary["run_dir"],
                     "best_valid_score": summary["train"]["best_valid_score"], **metrics})
    stats = over_seeds(rows)
    record = {**read_json(out / SEEDS), "seeds": list(seeds),
              "runs": [without_key(r) for r in rows],
              "over_seeds": stats[0] if stats else None}
    write_json(out / SEEDS, record)
    return record
