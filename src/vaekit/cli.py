"""The ``vaekit`` command line: ``train``, ``evaluate``, ``sample``.

Every configuration field is an option of ``vaekit train`` (``--latent-dim 2``); bad options
and bad values give one line naming the problem and the fix, and a non-zero exit status.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path

import torch

from . import __version__
from .config import (
    PRESETS,
    Config,
    DataConfig,
    TrainConfig,
    merge,
    read_config_file,
    written_by_0_1,
)
from .errors import ConfigError, VaekitError, VaekitWarning
from .io import read_json
from .memory import keep_freed_memory
from .options import choices_of, coerce, field_types
from .threads import default_threads

THREADS_HELP = "CPU threads (default: the cores other work leaves free; see README, Threads)"
DEVICE_HELP = "auto or a torch device: cpu, cuda, cuda:N, mps, xpu"

EXIT_ERROR = 1
EXIT_USAGE = 2
# Fields that may change when a run is resumed; the rest must stay as trained.
RESUMABLE_FIELDS = {"epochs", "patience", "device", "eval_num_samples", "data_dir", "lr",
                    "cuda_graphs", "tracking", "tracking_uri", "experiment"}


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _option_sources():
    """``[(section, group title, options class, owners)]``: the data section, the trainer,
    every estimator's and every family's options (owners: the names that take each class)."""
    from .estimators import ESTIMATORS
    from .families import FAMILIES, _ensure_registered
    _ensure_registered()
    yield "data", "data", DataConfig, None
    yield "train", "training", TrainConfig, None
    for name in ESTIMATORS:
        yield "train", "objective", ESTIMATORS.get(name).options, name
    for name in FAMILIES:
        yield "model", "model", FAMILIES.get(name).options, name


def _add_config_options(p: argparse.ArgumentParser) -> None:
    """One option per configuration field of the data section, the trainer, every estimator
    and every family. An option that several estimators or families take appears once, in a
    group named after the ones that take it."""
    fields: dict[str, dict] = {}              # name -> {section, field, type, owners, title}
    for section, title, cls, owner in _option_sources():
        types_ = field_types(cls)
        for f in dataclasses.fields(cls):
            if f.name == "objective":               # --objective, with its choices, above
                continue
            entry = fields.setdefault(f.name, {"section": section, "field": f, "title": title,
                                               "type": types_[f.name], "owners": [],
                                               "defaults": {}})
            if entry["section"] != section:
                raise RuntimeError(f"option {f.name!r} is declared in both the {section} and "
                                   f"the {entry['section']} sections")
            if owner is not None and owner not in entry["owners"]:
                entry["owners"].append(owner)
                entry["defaults"].setdefault(_default(f), []).append(owner)
    groups: dict[str, argparse._ArgumentGroup] = {}

    def group(title: str, owners: list[str]) -> argparse._ArgumentGroup:
        """``data (override --config)``, ``training``, or ``options of the models a, b``."""
        if not owners:
            head = "data (override --config)" if title == "data" else title
        else:
            head = f"options of the {title}{'s' if len(owners) > 1 else ''} {', '.join(owners)}"
        if head not in groups:
            groups[head] = p.add_argument_group(head)
        return groups[head]

    for name, e in sorted(fields.items(), key=lambda kv: (
            ("data", "training", "objective", "model").index(kv[1]["title"]),
            -len(kv[1]["owners"]))):
        f = e["field"]
        flags = [_flag(name)] + (["--data"] if name == "dataset" else [])
        if name == "dataset":
            flags.reverse()
        help_ = f.metadata.get("help", "")
        defaults = e["defaults"] or {_default(f): []}
        if len(defaults) == 1:
            shown = f"(default {next(iter(defaults))})"
        else:
            shown = "(default " + "; ".join(f"{v} for {', '.join(o)}"
                                            for v, o in defaults.items()) + ")"
        g = group(e["title"], e["owners"])
        dest = f"{e['section']}.{name}"
        if e["type"] is bool:
            g.add_argument(*flags, dest=dest, action=argparse.BooleanOptionalAction,
                           default=argparse.SUPPRESS, help=f"{help_} {shown}")
        else:
            choices = choices_of(f)
            metavar = "{" + ",".join(choices) + "}" if choices else _metavar(e["type"])
            g.add_argument(*flags, dest=dest, metavar=metavar, default=argparse.SUPPRESS,
                           type=_readable_as(name, e["type"]), help=f"{help_} {shown}")


def _readable_as(name: str, tp):
    """An argparse ``type`` that checks a command-line string reads as the field's type (a
    usage error, exit 2, when not) and passes the string on unchanged for the configuration
    to convert."""
    def check(value: str) -> str:
        try:
            coerce(name, tp, value)
        except ConfigError as e:
            raise argparse.ArgumentTypeError(str(e)) from None
        return value
    check.__name__ = _metavar(tp).lower()
    return check


def _default(f: dataclasses.Field) -> str:
    """A field's default as the help shows it (lists as ``200,200``)."""
    default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
    return ",".join(map(str, default)) if isinstance(default, list) else str(default)


def _metavar(tp) -> str:
    import typing

    from .options import _base_type
    tp = _base_type(tp)[0]                     # X | None: X's metavar
    if typing.get_origin(tp) is list:
        return "N,N,..."
    return {int: "N", float: "X"}.get(tp, "TEXT")


def _model_and_objective_help() -> tuple[str, str]:
    from .estimators import ESTIMATORS
    from .families import FAMILIES, _ensure_registered
    _ensure_registered()
    own = [o for n in FAMILIES for o in FAMILIES.get(n).objectives
           if o != "bound" and o not in ESTIMATORS]
    return ", ".join(FAMILIES), ", ".join(["auto", *ESTIMATORS, *dict.fromkeys(own)])


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="vaekit", description=(
        "Variational autoencoders: train, evaluate the test log-likelihood (nats), sample. "
        "'vaekit train' with no options trains a small VAE on the embedded mnist-5k digits."))
    parser.add_argument("--version", action="version", version=f"vaekit {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    t = sub.add_parser("train", help="train a model and write a run directory",
                       description="Train a model, evaluate it on the test set and draw figures.")
    t.add_argument("--config", metavar="FILE|PRESET",
                   help="a JSON/TOML configuration file or a preset: " + ", ".join(PRESETS))
    t.add_argument("--out", metavar="DIR", help="run directory (default runs/<data>-<time>)")
    t.add_argument("--resume", metavar="RUN", help="continue the interrupted run in RUN (or "
                                                   "every seed of a --seeds directory)")
    t.add_argument("--seeds", metavar="LIST", default=None,
                   help="train one run per seed, one after another, into OUT/seed-S (0,1,2 "
                        "or 0-4); OUT/seeds.json has the mean and spread over seeds")
    t.add_argument("--no-eval", action="store_true", help="skip the final test evaluation")
    models, objectives = _model_and_objective_help()
    t.add_argument("--model", dest="model.model", metavar="{" + models.replace(", ", ",") + "}",
                   default=argparse.SUPPRESS, help="model family (default vae): " + models)
    t.add_argument("--objective", dest="train.objective", metavar="OBJECTIVE",
                   default=argparse.SUPPRESS,
                   help="training objective / gradient estimator (default auto: the model "
                        "family's own): " + objectives)
    _add_common(t)
    _add_config_options(t)

    e = sub.add_parser("evaluate", help="test ELBO, KL, log-likelihood, active units of a run")
    e.add_argument("run", metavar="RUN", help="a run directory written by 'vaekit train'")
    e.add_argument("--num-samples", type=int, metavar="K", default=None,
                   help="importance samples k for the log-likelihood (default: the run's, 5000)")
    e.add_argument("--split", choices=("test", "valid", "train"), default="test")
    e.add_argument("--num-points", type=int, metavar="N", default=None,
                   help="only the split's first N examples (a quicker estimate, saved as "
                        "eval-firstN.json; default: all)")
    _add_run_source(e)
    e.add_argument("--noise", choices=("masking", "gaussian"),
                   help="autoencoders: score the reconstruction of inputs corrupted this way "
                        "(denoising error; saved as eval-SPLIT-NOISE-LEVEL.json)")
    e.add_argument("--noise-level", type=float, metavar="P",
                   help="masking probability or Gaussian std for --noise")
    e.add_argument("--seed", type=int, default=0,
                   help="seed of the importance samples (default 0: the same numbers each time)")
    e.add_argument("--no-compile", action="store_true",
                   help="evaluate without torch.compile (by default the decoder's "
                        "log-density is compiled when k x N >= 1e7: faster, equal to float "
                        "rounding)")
    _add_common(e)

    g = sub.add_parser("gradients", help="variance and SNR of gradient estimators at a run's "
                                          "checkpoint",
                       description="Draw many independent gradient estimates on one mini-batch "
                                   "and report, per parameter group, their variance and "
                                   "signal-to-noise ratio, with the cost of one estimate.")
    g.add_argument("run", metavar="RUN", help="a run directory written by 'vaekit train'")
    g.add_argument("--estimators", default="elbo,elbo-sf,elbo-stl,iwae,iwae-dreg",
                   help="comma-separated objectives (see vaekit train --objective)")
    g.add_argument("--num-samples", default="1,5,50", metavar="K,K,...",
                   help="values of K to study")
    g.add_argument("--draws", type=int, default=100, help="gradient estimates per estimator")
    g.add_argument("--batch-size", type=int, default=20,
                   help="the mini-batch: the first N training examples")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--checkpoint", choices=("best", "last"), default="best")
    g.add_argument("--out", metavar="DIR", help="where gradients.json/png go (default: RUN)")
    g.add_argument("--data-dir", metavar="DIR", help="where the dataset is now, if it moved")
    g.add_argument("--device", metavar="DEVICE", help=DEVICE_HELP)
    _add_common(g)

    c = sub.add_parser("compare", help="a table and learning curves of several runs",
                       description="Test ELBO, test log-likelihood, active units and wall time "
                                   "of each run, and the monitored test bound over training.")
    c.add_argument("runs", metavar="RUN", nargs="+", help="run directories")
    c.add_argument("--out", metavar="DIR", default="runs/compare",
                   help="where compare.json and the figures go (default runs/compare)")
    c.add_argument("--num-samples", type=int, default=5000, metavar="K",
                   help="k of the test log-likelihood (eval.json is reused when it matches)")
    c.add_argument("--data-dir", metavar="DIR", help="where the datasets are now, if moved")
    c.add_argument("--allow-mixed", action="store_true",
                   help="compare runs trained on different datasets or binarizations")
    _add_common(c)

    i = sub.add_parser("importance-sampling",
                       help="the importance-sampling lesson on a mixture: bias and variance of "
                            "estimates of p(x) against the exact value",
                       description="Estimate p(x) and log p(x) of a mixture's test points by "
                                   "sampling z from the prior, from the exact posterior and "
                                   "from a poor proposal, and report bias and spread against "
                                   "the exact values as the number of samples grows.")
    i.add_argument("run", metavar="RUN", nargs="?",
                   help="a gmm / bernoulli-mixture run (default: the true mixture of "
                        "gaussian-mixture-2d)")
    i.add_argument("--sample-sizes", default="1,10,100,1000,10000", metavar="N,N,...")
    i.add_argument("--repeats", type=int, default=200, help="independent estimates per point")
    i.add_argument("--points", type=int, default=50, help="test points used")
    i.add_argument("--seed", type=int, default=0)
    i.add_argument("--out", metavar="DIR", help="where the json and png go (default: RUN, or "
                                                "runs/importance-sampling)")
    i.add_argument("--json", action="store_true", help="print the rows as JSON")
    i.add_argument("--threads", type=int, metavar="N", help=THREADS_HELP)

    gp = sub.add_parser("gaps", help="the inference gap of a VAE split into approximation and "
                                     "amortization gaps (Cremer et al. 2018)",
                        description="For the first N test points: log p(x) (L_K), the ELBO of "
                                    "the amortized q(z|x) and of q*, the same family optimised "
                                    "point by point from the encoder's output (Adam); the "
                                    "inference gap log p(x) - ELBO(q) = approximation gap "
                                    "(log p(x) - ELBO(q*)) + amortization gap (ELBO(q*) - "
                                    "ELBO(q)), in nats. Writes gaps.json and gaps.png into RUN.")
    gp.add_argument("run", metavar="RUN", help="a run directory written by 'vaekit train'")
    gp.add_argument("--num-points", type=int, default=100, metavar="N",
                    help="the first N test points (default 100)")
    gp.add_argument("--num-samples", type=int, default=5000, metavar="K",
                    help="importance samples k of the estimate of log p(x) (default 5000)")
    gp.add_argument("--elbo-samples", type=int, default=1000, metavar="M",
                    help="samples per point of each ELBO estimate (default 1000)")
    gp.add_argument("--steps", type=int, default=2000, metavar="S",
                    help="the most Adam steps of the per-point optimisation (default 2000; a "
                         "point stops earlier when its ELBO stops improving)")
    gp.add_argument("--lr", type=float, default=1e-2,
                    help="Adam's learning rate for the local parameters (default 0.01)")
    gp.add_argument("--seed", type=int, default=0,
                    help="seed of every draw (default 0: the same numbers each time)")
    gp.add_argument("--flow", choices=("planar",),
                    help="also optimise, per point, q* followed by a local planar flow, and "
                         "report the approximation gap that is left")
    gp.add_argument("--flow-steps", type=int, default=4, metavar="T",
                    help="planar steps of --flow (default 4)")
    gp.add_argument("--split", choices=("test", "valid", "train"), default="test")
    _add_run_source(gp)
    _add_common(gp)

    s = sub.add_parser("sample", help="draw samples, reconstructions and other figures of a run",
                       description="Draw a run's figures (samples, reconstructions, ...) into "
                                   "its directory or --out DIR; with --out FILE.npy or "
                                   "FILE.csv, write the samples themselves instead: draws x ~ "
                                   "p(x) in the data's original units (a table's columns by "
                                   "name).")
    s.add_argument("run", metavar="RUN", help="a run directory written by 'vaekit train'")
    s.add_argument("--num", type=int, default=100, metavar="N",
                   help="how many samples (default 100)")
    s.add_argument("--seed", type=int, default=0, help="seed of the samples (default 0)")
    s.add_argument("--out", metavar="DIR|FILE",
                   help="a directory for the figures (default: RUN), or a .npy / .csv file "
                        "for the samples themselves")
    s.add_argument("--mean", action="store_true",
                   help="with a .npy/.csv --out: write the means E[x|z] instead of draws")
    s.add_argument("--label", type=int, metavar="Y", default=None,
                   help="conditional models (cvae, m2): draw from p(x|z, y=Y), the class "
                        "numbered Y (0-based)")
    _add_run_source(s)
    s.add_argument("--threads", type=int, metavar="N", help=THREADS_HELP)
    return parser


def _add_run_source(p: argparse.ArgumentParser) -> None:
    """Which weights of RUN, where its data are now, and the device."""
    p.add_argument("--checkpoint", choices=("best", "last"), default="best")
    p.add_argument("--data-dir", metavar="DIR", help="where the dataset is now, if it moved")
    p.add_argument("--device", metavar="DEVICE", help=DEVICE_HELP)


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print the result as JSON on stdout")
    p.add_argument("--no-progress", action="store_true", help="no progress bar or epoch lines")
    p.add_argument("--threads", type=int, metavar="N", help=THREADS_HELP)


def config_from_args(args: argparse.Namespace, saved: dict | None = None) -> Config:
    """The configuration: ``--config`` (or the run's, with ``--resume``; or ``saved``, a
    ``config.json`` dict, in its place) plus overrides."""
    overrides: dict[str, dict] = {}
    for key, value in vars(args).items():
        if "." in key:
            section, name = key.split(".")
            overrides.setdefault(section, {})[name] = value
    given = [n for values in overrides.values() for n in values]
    if args.resume:
        from .runs import CONFIG
        cfg_path = Path(args.resume) / CONFIG
        if saved is None and not cfg_path.is_file():
            raise ConfigError(f"--resume {args.resume}: no {CONFIG} there; is it a run directory?")
        fixed = sorted(n for n in given if n not in RESUMABLE_FIELDS)
        if fixed or args.config:
            names = ", ".join(_flag(n) for n in fixed) or "--config"
            raise ConfigError(
                f"{names} cannot change when resuming; only "
                f"{', '.join(_flag(n) for n in sorted(RESUMABLE_FIELDS))} can")
        saved = read_json(cfg_path) if saved is None else saved
        train = overrides.get("train", {})
        if "tracking" in train and isinstance(saved.get("train"), dict):
            # another --tracking on resume: the run's MLflow settings are not carried over
            for name in ("tracking_uri", "experiment"):
                if name not in train:
                    saved["train"].pop(name, None)
        return Config.from_dict(merge(saved, overrides), legacy=True).validate()
    base = read_config_file(args.config)                 # a run's config.json may serve too
    return Config.from_dict(merge(base, overrides), legacy=written_by_0_1(base)).validate()


def _fmt(v, se=None, digits=2) -> str:
    if v is None:
        return "-"
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    s = f"{v:.{digits}f}"
    if se is not None and math.isfinite(se):
        s += f" ± {se:.{digits}f}"
    return s


def format_eval(r) -> str:
    """A short table of an :class:`~vaekit.evaluation.Evaluation` (nats per example, mean ±
    standard error): the metrics the model family reports."""
    rows = [(label, v if isinstance(v, str) else _fmt(v, se)) for label, v, se in r.rows()]
    width = max(len(a) for a, _ in rows)
    head = (f"{r['dataset']} {r['split']} set, {r['num_examples']} examples; "
            f"binarization: {r['binarization']}; in nats per example (mean ± s.e.)")
    lines = [head] + [f"  {a:<{width}}  {b}" for a, b in rows]
    if r.get("log_jacobian") is not None:
        lines.append(f"  (the model saw standardised values; log-densities are in the original "
                     f"units: log |dx'/dx| = {r['log_jacobian']:.2f} nats added)")
    return "\n".join(lines)


def _json_default(o):
    return o.to_dict()


def _cmd_train(args) -> int:
    from . import distributed
    from .runs import train_run
    from .seeds import SEEDS
    if args.seeds is not None or (args.resume and (Path(args.resume) / SEEDS).is_file()):
        return _cmd_train_seeds(args)
    config = config_from_args(args)
    w = distributed.init_from_env(config.train.device)     # torchrun: join the other ranks
    try:
        summary = train_run(config, args.resume or args.out, resume=bool(args.resume),
                            progress=not args.no_progress, evaluate_after=not args.no_eval)
    finally:
        distributed.shutdown()
    if not w.is_main:                  # rank 0 reports
        return 0
    if args.json:
        print(json.dumps(summary, indent=2, default=_json_default))
        return 0
    tr = summary["train"]
    run_dir = Path(summary["run_dir"])
    figures = [Path(p).name for p in summary.get("figures", [])]
    files = sorted(p.name + ("/" if p.is_dir() else "") for p in run_dir.iterdir()
                   if p.name not in figures and not p.name.startswith("."))
    print(f"run directory: {run_dir}")
    print("  " + ", ".join(files))
    if figures:
        print("  figures: " + ", ".join(figures))
    unit = tr["unit"]
    lj = tr.get("log_jacobian")
    units = ("" if lj is None else f" of the standardised data "
             f"({tr['best_valid_score'] + lj:.2f} in the original units)")
    print(f"trained {tr['epochs']} {unit} in {tr['seconds']:.1f} s ({tr['stopped']}); best "
          f"validation {tr['valid_name']} {tr['best_valid_score']:.2f}{units} at "
          f"{unit[:-1]} {tr['best_epoch']}")
    if "eval" in summary:
        print(format_eval(summary["eval"]))
    return 0


def _cmd_train_seeds(args) -> int:
    """``vaekit train --seeds LIST`` (and ``--resume`` of its directory): the seeds one after
    another (:mod:`vaekit.seeds`)."""
    from . import distributed
    from . import seeds as S
    from .runs import default_run_dir, train_run
    if distributed.launched():
        raise ConfigError("--seeds is not run under torchrun; train the seeds with torchrun "
                          "one at a time (--seed S), or without torchrun")

    def one(cfg, run_dir, resume):
        return train_run(cfg, run_dir, resume=resume, progress=not args.no_progress,
                         evaluate_after=not args.no_eval)

    if args.resume:
        if args.seeds is not None:
            raise ConfigError(f"--seeds cannot change when resuming; --resume {args.resume} "
                              "continues the seeds it holds")
        _, saved = S.read_group(args.resume)

        def resume_one(run):
            return one(config_from_args(argparse.Namespace(**{**vars(args),
                                                              "resume": str(run)})), run, True)

        def start_one(run, seed):
            cfg = config_from_args(args, saved=saved)
            return one(dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, seed=seed)),
                       run, False)

        record = S.resume_seeds(args.resume, resume_one=resume_one, start_one=start_one,
                                log=_stderr_line)
        out = Path(args.resume)
    else:
        if "train.seed" in vars(args):
            raise ConfigError("--seed and --seeds: give one (--seeds 0,1,2 sets each run's)")
        seeds = S.parse_seeds(args.seeds)
        config = config_from_args(args)
        out = Path(args.out) if args.out else default_run_dir(config)
        record = S.train_seeds(config, out, seeds, train_one=one, log=_stderr_line)
    if args.json:
        print(json.dumps(record, indent=2))
        return 0
    print(format_seeds(record, out))
    return 0


def format_seeds(record: dict, out: Path) -> str:
    """The per-seed test metrics and their mean and spread (:func:`vaekit.seeds.over_seeds`)."""
    from .seeds import METRICS, SEEDS
    labels = {"test_log_likelihood": "test log-likelihood", "test_elbo": "test ELBO",
              "test_reconstruction_error": "reconstruction error"}
    shown = [m for m in METRICS if any(r.get(m) is not None for r in record["runs"])]
    lines = [f"{len(record['runs'])} seeds in {out} ({SEEDS}); nats per example"]
    for r in record["runs"]:
        parts = [f"{labels[m]} {_fmt(r.get(m), r.get(m + '_se'))}" for m in shown] or \
            [f"best validation score {r['best_valid_score']:.2f} (not evaluated)"]
        lines.append(f"  {r['name']:<10} " + ", ".join(parts))
    stats = record.get("over_seeds")
    for m in shown:
        st = stats and stats.get(m)
        if st:
            lines.append(f"  over {st['n']} seeds, {labels[m]}: mean {st['mean']:.2f}, sd "
                         f"{st['sd']:.2f} (each run's s.e. {st['mean_se']:.2f} on average)")
    return "\n".join(lines)


def _cmd_evaluate(args) -> int:
    from .runs import evaluate_run, load_run
    if args.num_samples is not None and args.num_samples < 1:
        raise ConfigError(f"--num-samples must be a positive integer, got {args.num_samples}")
    if args.num_points is not None and args.num_points < 1:
        raise ConfigError(f"--num-points must be a positive integer, got {args.num_points}")
    if (args.noise is None) != (args.noise_level is None):
        raise ConfigError("--noise and --noise-level go together, e.g. --noise masking "
                          "--noise-level 0.25")
    from . import distributed
    w = distributed.init_from_env(args.device or "auto")    # torchrun: a sharded evaluation
    try:
        run = load_run(args.run, checkpoint=args.checkpoint, data_dir=args.data_dir,
                       device=(distributed.device_for(args.device or "auto") if w.distributed
                               else args.device))
        noise = None if args.noise is None else (args.noise, args.noise_level)
        result = evaluate_run(run, args.num_samples, split=args.split,
                              progress=not args.no_progress, noise=noise,
                              compile=False if args.no_compile else "auto", seed=args.seed,
                              num_points=args.num_points, save=w.is_main)
    finally:
        distributed.shutdown()
    if w.is_main:
        print(json.dumps(result.to_dict(), indent=2) if args.json else format_eval(result))
    return 0


def _cmd_sample(args) -> int:
    from .runs import SAMPLE_FORMATS, export_samples, load_run, make_figures
    if args.num < 1:
        raise ConfigError(f"--num must be a positive integer, got {args.num}")
    out = Path(args.out) if args.out else None
    to_file = out is not None and out.suffix.lower() in SAMPLE_FORMATS
    if out is not None and not to_file and out.suffix:
        raise ConfigError(f"--out {out}: give a directory for the figures, or a "
                          f"{' or '.join(SAMPLE_FORMATS)} file for the samples")
    if args.mean and not to_file:
        raise ConfigError("--mean applies to samples written to a .npy or .csv --out")
    run = load_run(args.run, checkpoint=args.checkpoint, data_dir=args.data_dir,
                   device=args.device)
    if to_file:
        print(export_samples(run, out, args.num, seed=args.seed, mean=args.mean,
                             label=args.label))
        return 0
    for p in make_figures(run, out=out, num_samples=args.num, seed=args.seed,
                          label=args.label):
        print(p)
    return 0


def _int_list(text: str, name: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ConfigError(f"{name} must be comma-separated integers, got {text!r}") from None
    if not values or min(values) < 1:
        raise ConfigError(f"{name} must be positive integers, got {text!r}")
    return values


def _cmd_gradients(args) -> int:
    from . import plotting
    from .data import eval_split
    from .estimators import ESTIMATORS
    from .evaluation import model_device
    from .gradients import gradient_study
    from .io import load_tensors, write_json
    from .runs import load_run
    from .training import LAST

    names = [n.strip() for n in args.estimators.split(",") if n.strip()]
    unknown = [n for n in names if n not in ESTIMATORS]
    if unknown or not names:
        raise ConfigError(f"--estimators: unknown {', '.join(unknown) or '(none given)'}; "
                          f"known: {', '.join(ESTIMATORS)}")
    ks = _int_list(args.num_samples, "--num-samples")
    if args.draws < 2 or args.batch_size < 1:
        raise ConfigError("--draws must be >= 2 and --batch-size >= 1")
    run = load_run(args.run, checkpoint=args.checkpoint, data_dir=args.data_dir,
                   device=args.device)
    if not run.family.supports("gradients"):
        from .families import FAMILIES
        able = [n for n in FAMILIES if FAMILIES.get(n).supports("gradients")]
        raise ConfigError(f"{args.run} holds a {run.family.name}: gradient estimators "
                          f"apply to latent-variable models ({', '.join(able)})")
    device = model_device(run.model)
    x = eval_split(run.dataset, "train", run.binarization)[:args.batch_size].to(device)
    state = None
    if (run.path / LAST).is_file():
        tensors, _ = load_tensors(run.path / LAST)
        state = {k[10:]: v for k, v in tensors.items() if k.startswith("estimator.")}
    rows = gradient_study(run.model, run.config.objective, run.config.estimator_options(), x,
                          names, ks, args.draws, args.seed, estimator_state=state)
    out = Path(args.out) if args.out else run.path
    write_json(out / "gradients.json", rows)
    title = (f"gradient estimators at {run.path.name} ({args.checkpoint}), batch of "
             f"{x.shape[0]}, {args.draws} draws each")
    plotting.save_figure(plotting.plot_gradient_study(rows, title=title), out / "gradients.png")
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"gradient estimates at {run.path} ({args.checkpoint}), batch of {x.shape[0]}, "
          f"{args.draws} draws each; theta = generative, phi = inference")
    print(f"  {'estimator':<12} {'K':>4}  {'group':<6} {'variance':>11} {'SNR mean':>9} "
          f"{'SNR median':>10} {'ms/estimate':>11}")
    for r in rows:
        if "skipped" in r:
            print(f"  {r['estimator']:<12} {r['num_samples']:>4}  skipped: {r['skipped']}")
            continue
        group = "theta" if r["group"] == "model" else "phi"
        print(f"  {r['estimator']:<12} {r['num_samples']:>4}  {group:<6} {r['variance']:>11.4g} "
              f"{r['snr_mean']:>9.3f} {r['snr_median']:>10.3f} {1e3 * r['seconds']:>11.2f}")
    print(f"wrote {out / 'gradients.json'} and {out / 'gradients.png'}")
    return 0


def _cmd_compare(args) -> int:
    from .compare import compare_runs
    from .seeds import over_seeds, without_key
    if args.num_samples < 1:
        raise ConfigError(f"--num-samples must be a positive integer, got {args.num_samples}")
    rows, figures = compare_runs(args.runs, args.out, args.num_samples, args.data_dir,
                                 progress=not args.no_progress and not args.json,
                                 allow_mixed=args.allow_mixed)
    if args.json:
        print(json.dumps([without_key(r) for r in rows], indent=2))
        return 0
    k = args.num_samples
    print(f"test set, nats per example (mean ± s.e.); log-likelihood with k={k} "
          "(exact for mixtures); '-' where a model has no such metric")
    name_w = max(len("run"), *(len(r["name"]) for r in rows))
    data_w = max(len("dataset"), *(len(r["dataset"]) for r in rows))
    print(f"  {'run':<{name_w}} {'dataset':<{data_w}} {'model':<19} {'latent':>6} "
          f"{'objective':<14} {'K':>4} {'epochs':>6} {'time':>8}  {'test ELBO':>16}  "
          f"{'test log-lik.':>16}  {'recon. error':>16}  {'AU':>7}")
    for r in rows:
        au = "-" if r["active_units"] is None else f"{r['active_units']}/{r['latent_dim']}"
        K = "-" if r["num_samples"] is None else r["num_samples"]
        print(f"  {r['name']:<{name_w}} {r['dataset']:<{data_w}} {r['model']:<19} "
              f"{r['latent_dim']:>6} {r['objective']:<14} {K:>4} {r['epochs']:>6} "
              f"{r['train_seconds']:>7.0f}s  "
              f"{_fmt(r['test_elbo'], r['test_elbo_se']):>16}  "
              f"{_fmt(r['test_log_likelihood'], r['test_log_likelihood_se']):>16}  "
              f"{_fmt(r['test_reconstruction_error'], r['test_reconstruction_error_se']):>16}"
              f"  {au:>7}")
    for g in over_seeds(rows):
        parts = [f"{label} mean {g[m]['mean']:.2f}, sd {g[m]['sd']:.2f}"
                 for m, label in (("test_log_likelihood", "log-lik."), ("test_elbo", "ELBO"))
                 if g[m] is not None]
        print(f"  over seeds {', '.join(map(str, g['seeds']))} ({', '.join(g['runs'])}): "
              + ("; ".join(parts) or "no test metric"))
    print(f"wrote {Path(args.out) / 'compare.json'}"
          + "".join(f", {p}" for p in figures))
    return 0


def _cmd_importance_sampling(args) -> int:
    from . import plotting
    from .importance_sampling import importance_sampling_study
    from .io import write_json
    sizes = _int_list(args.sample_sizes, "--sample-sizes")
    if args.repeats < 2 or args.points < 1:
        raise ConfigError("--repeats must be >= 2 and --points >= 1")
    if args.run:
        from .runs import load_run
        run = load_run(args.run)
        if not run.family.supports("importance_sampling"):
            raise ConfigError(f"{args.run} is not a mixture run (gmm or bernoulli-mixture)")
        mixture, x = run.model, eval_test(run).flatten(1)
        out = Path(args.out) if args.out else run.path
        source = f"{run.family.name} fitted in {run.path}"
    else:
        from .data import load_dataset
        from .synthetic import true_gaussian_mixture_2d
        mixture = true_gaussian_mixture_2d()
        x = load_dataset("gaussian-mixture-2d").test.double()
        out = Path(args.out or "runs/importance-sampling")
        source = "the true mixture of gaussian-mixture-2d"
    x = x[:args.points].to(next(iter(mixture.buffers())).device, mixture.weights.dtype)
    rows = importance_sampling_study(mixture, x, sizes, args.repeats, args.seed)
    write_json(out / "importance_sampling.json", rows)
    plotting.save_figure(plotting.plot_importance_sampling(rows), out / "importance_sampling.png")
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"estimates of p(x) for {x.shape[0]} test points of {source}; {args.repeats} "
          f"repeats; bias and sd averaged over points")
    print(f"  {'proposal':<16} {'n':>6}  {'rel. bias of p^':>15} {'rel. sd of p^':>13} "
          f"{'bias of log p^':>14} {'sd of log p^':>12}")
    for r in rows:
        print(f"  {r['estimator']:<16} {r['n']:>6}  {r['rel_bias_p']:>15.4f} "
              f"{r['rel_std_p']:>13.4f} {r['bias_log_p']:>14.4f} {r['std_log_p']:>12.4f}")
    print(f"wrote {out / 'importance_sampling.json'} and {out / 'importance_sampling.png'}")
    return 0


def _cmd_gaps(args) -> int:
    from .gaps import run_gaps
    if args.num_points < 1 or args.num_samples < 1 or args.steps < 1:
        raise ConfigError("--num-points, --num-samples and --steps must be positive integers")
    if args.elbo_samples < 2:
        raise ConfigError(f"--elbo-samples must be at least 2, got {args.elbo_samples}")
    if not args.lr > 0:
        raise ConfigError(f"--lr must be positive, got {args.lr}")
    if args.flow and args.flow_steps < 1:
        raise ConfigError(f"--flow-steps must be a positive integer, got {args.flow_steps}")
    from .runs import load_run
    run = load_run(args.run, checkpoint=args.checkpoint, data_dir=args.data_dir,
                   device=args.device)
    result, written = run_gaps(run, num_points=args.num_points, num_samples=args.num_samples,
                               elbo_samples=args.elbo_samples, steps=args.steps, lr=args.lr,
                               seed=args.seed, split=args.split,
                               flow_steps=args.flow_steps if args.flow else 0,
                               log=None if args.no_progress or args.json else _stderr_line)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    s = result
    print(f"inference gaps of {run.path} ({args.checkpoint}): {s['dataset']} {s['split']} set, "
          f"the first {s['num_points']} points; in nats per point (mean ± s.e. over points)")
    rows = [(f"log p(x)   L_{s['num_samples']}, proposal (q + q*)/2", "log_likelihood"),
            (f"  (L_{s['num_samples']} with q alone, as vaekit evaluate)", "log_likelihood_q"),
            (f"ELBO(q*)   optimised per point, {s['elbo_samples']} samples", "elbo_q_star"),
            (f"ELBO(q)    amortized, {s['elbo_samples']} samples", "elbo_q"),
            ("inference gap      log p(x) - ELBO(q)", "inference_gap"),
            ("  approximation gap  log p(x) - ELBO(q*)", "approximation_gap"),
            ("  amortization gap   ELBO(q*) - ELBO(q)", "amortization_gap")]
    if s.get("elbo_q_star_flow") is not None:
        rows[3:3] = [(f"ELBO(q*_flow) q* + {args.flow_steps} planar steps, per point",
                      "elbo_q_star_flow")]
        rows.append(("  with the flow:     log p(x) - ELBO(q*_flow)", "approximation_gap_flow"))
    width = max(len(label) for label, _ in rows)
    for label, key in rows:
        print(f"  {label:<{width}}  {_fmt(s[key], s[key + '_se']):>16}")
    print(f"  Monte-Carlo s.e. of the means: log p(x) {s['log_likelihood_mc_se']:.3f}, ELBO(q*) "
          f"{s['elbo_q_star_mc_se']:.3f}, ELBO(q) {s['elbo_q_mc_se']:.3f}")
    o = s["optimisation"]
    print(f"  q*: Adam, lr {s['lr']:g}, {s['train_samples']} samples per step; steps per "
          f"point: median {o['median_steps']}, at most {o['max_steps']}; {o['at_limit']} of "
          f"{s['num_points']} still improving at the limit of {s['steps']}")
    print("wrote " + " and ".join(str(p) for p in written))
    return 0


def _stderr_line(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def eval_test(run) -> torch.Tensor:
    """The run's test split as evaluated (binarized once under dynamic binarization)."""
    from .data import eval_split
    return eval_split(run.dataset, "test", run.binarization)


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """vaekit's own warnings as one line; everything else as Python shows it."""
    if issubclass(category, VaekitWarning):
        print(f"vaekit: warning: {message}", file=sys.stderr)
    else:
        warnings._showwarning_orig(message, category, filename, lineno, file, line)


def _parse(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace:
    args, extra = parser.parse_known_args(argv)
    if extra:   # report unknown options against the subcommand, whose --help lists them
        sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        target = sub.choices.get(args.command, parser) if args.command else parser
        target.error(f"unrecognized arguments: {' '.join(extra)}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = _parse(parser, argv)
    except SystemExit as e:        # --help, --version, or a usage error already printed
        return int(e.code or 0)
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    with warnings.catch_warnings():           # restored when main returns
        warnings.showwarning = _show_warning
        try:
            if args.threads is not None and args.threads < 1:
                raise ConfigError(f"--threads must be a positive integer, got {args.threads}")
            torch.set_num_threads(args.threads or default_threads())     # vaekit.threads
            keep_freed_memory()                                          # vaekit.memory
            return {"train": _cmd_train, "evaluate": _cmd_evaluate, "sample": _cmd_sample,
                    "gradients": _cmd_gradients, "compare": _cmd_compare,
                    "importance-sampling": _cmd_importance_sampling,
                    "gaps": _cmd_gaps}[args.command](args)
        except VaekitError as e:
            print(f"vaekit {args.command}: error: {e}", file=sys.stderr)
            return e.exit_code               # EXIT_ERROR; EXIT_USAGE for a missing package
        except KeyboardInterrupt:
            print(f"vaekit {args.command}: interrupted; the last completed epoch's checkpoint "
                  "is kept (continue with 'vaekit train --resume RUN')", file=sys.stderr)
            return 130


if __name__ == "__main__":
    sys.exit(main())
