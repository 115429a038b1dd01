"""The configuration of a run: data, model (one family's options), training and objective.

A configuration file (JSON or TOML) has three sections, as ``config.json`` in a run directory::

    [data]                      dataset, data_dir, binarization
    [model]                     model = "<family>", then that family's options
    [train]                     objective = "<estimator>", the trainer's options and that
                                estimator's options

Which options the ``model`` and ``train`` sections take depends on the family and the
objective chosen: each family (:mod:`vaekit.families`) and each estimator
(:mod:`vaekit.estimators`) declares its own options class. A file may set any subset of
fields; an option that the chosen family or objective does not take is an error naming
what it does take. Every option is also a command-line option of ``vaekit train``
(``latent_dim`` -> ``--latent-dim``). Ready-made configurations are in :data:`PRESETS`.

Run directories written by vaekit 0.1 (one flat model section with every family's fields,
every estimator's fields in the train section) still load: :meth:`Config.from_dict` with
``legacy=True`` drops the 0.1 fields that the run's family and objective do not take.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ConfigError, did_you_mean
from .options import Options, nonnegative, off_or_positive, one_of, option, positive
from .precision import PRECISIONS

BINARIZATIONS = ("auto", "dynamic", "none")
STANDARDIZE = ("auto", "on", "off")
LR_SCHEDULES = ("constant", "iwae")
SECTIONS = ("data", "model", "train")


@dataclass
class DataConfig(Options):
    section = "the data section"
    dataset: str = option("mnist-5k", "dataset name (mnist-5k, binarized-mnist, mnist, "
                                      "fashion-mnist, cifar10, colored-mnist, "
                                      "gaussian-mixture-2d), a folder of images, or a "
                                      ".npy/.npz path")
    data_dir: str | None = option(None, "directory searched first for named datasets' files")
    image_size: int | None = option(None, "a folder of images: resize (shorter side) and "
                                          "centre-crop every image to N x N",
                                    check=lambda name, v: v is None or positive(name, v))
    columns: str = option("", "a table: the kind of some columns, e.g. age=real,zip=drop "
                              "(kinds: real, binary, categorical, drop; the others are inferred)")
    label_column: str | None = option(None, "a table: the column that holds labels (used "
                                            "by figures, not modelled)")
    standardize: str = option(
        "auto", "auto | on | off: standardise real values with the training split's mean and "
                "standard deviation (log-likelihoods are still reported in the original "
                "units); auto: on for tables and arrays of real vectors",
        check=one_of(STANDARDIZE))
    binarization: str = option(
        "auto",
        "auto | dynamic | none. dynamic: a fresh Bernoulli draw of the grey levels at every "
        "epoch (the validation and test sets are binarized once, with a fixed seed each); auto: "
        "dynamic for grey-level data with a Bernoulli decoder, none otherwise",
        check=one_of(BINARIZATIONS))


def _devices(name: str, value: str) -> None:
    """``auto`` or any string ``torch.device`` accepts (``cpu``, ``cuda``, ``cuda:1``, ``mps``,
    ``xpu``, ...); whether that device is present is checked when the run starts
    (:func:`vaekit.training.resolve_device`)."""
    if value == "auto":
        return
    import torch

    try:
        torch.device(value)
    except (RuntimeError, ValueError, TypeError):
        raise ConfigError(f"{name} must be auto or a torch device (cpu, cuda, cuda:N, mps, "
                          f"xpu, ...), got {value!r}") from None


def _adam_beta(name: str, value: float) -> None:
    if not 0 <= value < 1:
        raise ConfigError(f"{name} must lie in [0, 1), got {value}")


@dataclass
class TrainConfig(Options):
    """The trainer's options (the objective's own options are in :attr:`Config.estimator`)."""

    section = "the trainer"
    objective: str = option("auto", "training objective / estimator (see vaekit.estimators); "
                                     "auto: the model family's default (elbo for VAEs)")
    epochs: int = option(60, "maximum number of passes over the training set", check=positive)
    batch_size: int = option(100, "examples per gradient step", check=positive)
    lr: float = option(1e-3, "Adam learning rate (the initial one for a decaying schedule)",
                       check=positive)
    lr_schedule: str = option(
        "constant", "constant | iwae (stage i lasts 3^i epochs; lr decays geometrically "
        "from lr to lr_final over schedule_stages stages, Burda et al. 2016)",
        check=one_of(LR_SCHEDULES))
    lr_final: float = option(1e-4, "iwae schedule: learning rate of the last stage",
                             check=positive)
    schedule_stages: int = option(8, "iwae schedule: number of stages (8 gives 3280 epochs)",
                                  check=positive)
    adam_beta1: float = option(0.9, "Adam beta1", check=_adam_beta)
    adam_beta2: float = option(0.999, "Adam beta2", check=_adam_beta)
    adam_eps: float = option(1e-8, "Adam epsilon (the IWAE paper uses 1e-4)", check=positive)
    patience: int = option(0, "early stopping: epochs without a better validation score "
                              "(0: off)", check=off_or_positive)
    seed: int = option(0, "random seed: the same seed gives the same run")
    kl_warmup_epochs: float = option(0.0, "raise the KL weight linearly from 0 to beta over "
                                          "this many epochs (objectives with a KL weight: "
                                          "elbo; 0: off)", check=nonnegative)
    eval_num_samples: int = option(5000, "k of the importance-weighted test log-likelihood",
                                   check=positive)
    valid_num_samples: int = option(
        0, "the validation score that picks the best checkpoint: 0 = the model family's (a "
           "VAE's ELBO); K >= 1 = the importance-weighted bound L_K (for IWAE-type objectives, "
           "whose models the ELBO can rank worse as they improve)", check=off_or_positive)
    monitor_every: int = option(0, "every this many epochs (and after the first) record L_k on "
                                   "the test set in metrics.jsonl (0: off)",
                                check=off_or_positive)
    monitor_num_samples: int = option(1000, "k of the monitored bound L_k", check=positive)
    monitor_examples: int = option(1000, "test examples used by the monitor (a fixed random "
                                         "subset)", check=positive)
    precision: str = option("fp32", "training steps' precision: fp32 | tf32 (CUDA matrix "
                                    "products on TensorFloat-32) | bf16 (the networks under "
                                    "bfloat16 autocast; densities and bounds in float32); "
                                    "evaluation is always float32",
                            check=one_of(PRECISIONS))
    cuda_graphs: bool = option(False, "CUDA: capture the training step once as a CUDA graph "
                                      "and replay it at every full batch (vaekit.cuda_graphs; "
                                      "falls back to eager steps with a message)")
    device: str = option("auto", "auto (CUDA when present, else CPU) | any torch device: cpu, "
                                 "cuda, cuda:N, mps, xpu",
                         check=_devices)
    tracking: str = option(
        "auto", "experiment tracking (vaekit.tracking): none | tensorboard (RUN/tensorboard/) "
                "| mlflow (parameters, per-epoch metrics, evaluation, figures); auto: "
                "tensorboard when installed, else none",
        check=one_of(lambda: _tracking_choices()))
    tracking_uri: str | None = option(
        None, "mlflow: the tracking store, a server (http://host:port) or sqlite:///file.db; "
              "None: MLFLOW_TRACKING_URI, else MLflow's default in the working directory")
    experiment: str | None = option(
        None, "mlflow: the experiment name; None: MLFLOW_EXPERIMENT_NAME, else vaekit")

    def check(self) -> None:
        from .tracking import check_settings
        check_settings(self)


def _tracking_choices() -> list[str]:
    from .tracking import tracking_choices
    return tracking_choices()


# Fields of vaekit 0.1's flat sections, which its run directories' config.json files hold for
# every family and objective: when such a file is read (legacy=True), those that the run's
# family or objective does not take are dropped.
LEGACY_MODEL_FIELDS = frozenset((
    "latent_dim", "hidden_sizes", "activation", "likelihood", "decoder_std", "learn_decoder_std",
    "latent_dims", "upper_hidden_sizes", "noise", "noise_level", "num_latents",
    "embedding_dim", "codebook_size", "commitment_cost", "ema_decay", "code_prior",
    "num_components", "covariance_type", "reg_covar", "bernoulli_alpha", "em_max_iter",
    "em_tol", "em_restarts", "em_init"))
LEGACY_TRAIN_FIELDS = frozenset((
    "num_samples", "kl", "beta", "num_groups", "ciwae_beta", "baseline", "baseline_decay",
    "rws_wake_weight", "pretrain_epochs", "em_max_iter", "em_tol", "em_restarts"))
# 0.1 fields that now belong to the model section (of the families that take them)
MOVED_TO_MODEL = ("em_max_iter", "em_tol", "em_restarts", "pretrain_epochs")


def _family(name: str):
    from .families import get_family
    return get_family(name)


def _family_objectives() -> set[str]:
    """The objectives of the families' own that are not estimators (``em``)."""
    from .families import FAMILIES, _ensure_registered
    _ensure_registered()
    return {o for n in FAMILIES for o in FAMILIES.get(n).objectives}


@dataclass
class Config:
    """A run's configuration. ``model`` is the options of one model family (its class says
    which: :func:`vaekit.families.family_of_options`), ``estimator`` the options of the
    objective (``None`` for the family's default objective with its defaults, and for
    families fitted by EM)."""

    data: DataConfig = field(default_factory=DataConfig)
    model: Options = field(default_factory=lambda: _family("vae").options())
    train: TrainConfig = field(default_factory=TrainConfig)
    estimator: Options | None = None

    # ---------------------------------------------------------------- what was chosen
    @property
    def family(self):
        """The model family (:class:`vaekit.families.Family`) of :attr:`model`."""
        from .families import family_of_options
        return family_of_options(self.model)

    @property
    def objective(self) -> str:
        """``train.objective``, with ``auto`` replaced by the family's default."""
        if self.train.objective == "auto":
            return self.family.default_objective
        return self.train.objective

    def estimator_options(self) -> Options | None:
        """The objective's options: :attr:`estimator`, else its defaults; ``None`` for
        objectives that are not estimators (EM)."""
        if self.estimator is not None:
            return self.estimator
        from .estimators import ESTIMATORS
        name = self.objective
        return ESTIMATORS.get(name).options() if name in ESTIMATORS else None

    @property
    def likelihood(self) -> str:
        """The observation model p(x|z): a family option, or fixed by the family."""
        return self.family.likelihood(self.model)

    # ---------------------------------------------------------------- (de)serialisation
    def to_dict(self) -> dict[str, dict[str, Any]]:
        """The nested dict of a configuration file (estimator options in ``train``)."""
        train = self.train.to_dict()
        est = self.estimator_options()
        if est is not None:
            train.update(est.to_dict())
        return {"data": self.data.to_dict(),
                "model": {"model": self.family.name, **self.model.to_dict()},
                "train": train}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2) + "\n"

    @classmethod
    def from_dict(cls, d: Any, *, legacy: bool = False) -> Config:
        """A configuration from a (possibly partial) nested dict; absent fields take their
        defaults. Not validated (see :meth:`validate`).

        Args:
            legacy: the dict is a run's ``config.json`` (perhaps of vaekit 0.1): 0.1 fields
                that the family or objective does not take are dropped, and fields that moved
                are read where they are now.

        Raises:
            ConfigError: an unknown section, family, objective or field, or a value of the
                wrong type.
        """
        from .estimators import ESTIMATORS

        if not isinstance(d, dict):
            raise ConfigError("a configuration must be a mapping of sections (data, model, train)")
        for section, values in d.items():
            if section not in SECTIONS:
                raise ConfigError(
                    f"unknown configuration section {section!r}"
                    f"{did_you_mean(section, SECTIONS)}; known: {', '.join(SECTIONS)}")
            if not isinstance(values, dict):
                raise ConfigError(f"configuration section {section!r} must be a mapping")
        model = dict(d.get("model", {}))
        train = dict(d.get("train", {}))
        family = _family(model.pop("model", "vae"))
        family_fields = set(family.options.field_names())
        for name in MOVED_TO_MODEL:
            if name in train and name in family_fields and (legacy or name not in model):
                model.setdefault(name, train.pop(name))
        if legacy:
            model = {k: v for k, v in model.items()
                     if k in family_fields or k not in LEGACY_MODEL_FIELDS}
        trainer_fields = set(TrainConfig.field_names())
        objective = train.get("objective", "auto")
        if not isinstance(objective, str):
            raise ConfigError(f"objective must be a string, got {objective!r}")
        resolved = family.default_objective if objective == "auto" else objective
        est_cls = ESTIMATORS.get(resolved).options if resolved in ESTIMATORS else None
        if resolved not in ESTIMATORS and resolved not in _family_objectives():
            ESTIMATORS.get(resolved)                  # unknown: the error lists the choices
        est_fields = set(est_cls.field_names()) if est_cls else set()
        est_values = {k: train.pop(k) for k in list(train)
                      if k in est_fields and k not in trainer_fields}
        if legacy:
            train = {k: v for k, v in train.items()
                     if k in trainer_fields or k not in LEGACY_TRAIN_FIELDS}
        unknown = [k for k in train if k not in trainer_fields]
        if unknown:
            takes = ", ".join(sorted(est_fields)) or "none"
            raise ConfigError(
                f"{unknown[0]!r} is not an option of the trainer or of objective {resolved}"
                f"{did_you_mean(unknown[0], trainer_fields | est_fields | family_fields)} "
                f"(its options: {takes}); trainer options: {', '.join(sorted(trainer_fields))}")
        data = dict(d.get("data", {}))
        if legacy:
            # a run written before these options existed was trained without them
            data.setdefault("standardize", "off")
            if "likelihood" in family_fields:
                model.setdefault("likelihood", "bernoulli")
        return cls(data=DataConfig.from_values(data, "the data section"),
                   model=family.options.from_values(model, f"model {family.name}"),
                   train=TrainConfig.from_values(train),
                   estimator=(est_cls.from_values(est_values, f"objective {resolved}")
                              if est_cls else None))

    def resolved(self) -> Config:
        """A copy with the ``auto`` objective replaced by the family's default and the
        estimator's options filled in (what a run directory's config.json records)."""
        return dataclasses.replace(
            self, train=dataclasses.replace(self.train, objective=self.objective),
            estimator=self.estimator_options())

    # ---------------------------------------------------------------- validation
    def validate(self) -> Config:
        """Check every value's range and choice, and that the sections fit together; return
        ``self``.

        Raises:
            ConfigError: naming the field, the bad value and what is allowed.
        """
        from .estimators import ESTIMATORS

        self.data.validate()
        self.train.validate()
        self.model.validate()
        family, objective = self.family, self.objective
        if objective in ESTIMATORS:
            entry = ESTIMATORS.get(objective)
            if entry.kind not in family.objectives:
                own = [o for o in family.objectives if o != "bound"]
                if own:
                    raise ConfigError(f"model {family.name} is trained with objective "
                                      f"{own[0]} (or auto), not {objective}")
                raise ConfigError(f"objective {objective} belongs to another model family; "
                                  f"{family.name} takes a bound estimator such as elbo or iwae")
            self.estimator_options().validate()
            if self.train.kl_warmup_epochs and not entry.kl_weighted:
                raise ConfigError(
                    f"kl_warmup_epochs needs an objective with a KL weight (such as elbo); "
                    f"{objective} has none: remove --kl-warmup-epochs or choose --objective elbo")
        elif objective not in family.objectives:
            if objective not in _family_objectives():
                ESTIMATORS.get(objective)               # unknown: lists the choices
            raise ConfigError(f"objective {objective} belongs to another model family; "
                              f"{family.name} is trained with {family.default_objective}")
        elif self.train.kl_warmup_epochs:
            raise ConfigError(f"kl_warmup_epochs applies to objectives with a KL weight; "
                              f"{family.name} is fitted with {objective}")
        if self.train.valid_num_samples and not family.supports("monitor"):
            raise ConfigError(f"--valid-num-samples scores a bound on log p(x), which model "
                              f"{family.name} does not have; remove it")
        if self.train.monitor_every and not family.supports("monitor"):
            raise ConfigError(f"--monitor-every records a bound on log p(x), which model "
                              f"{family.name} does not have; remove it")
        return self


# -------------------------------------------------------------------- presets and files
PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    # The embedded default: a small VAE on mnist-5k, about a minute on two CPU cores.
    "default": {},
    # The one-stochastic-layer model of Burda, Grosse & Salakhutdinov (2016), "Importance
    # Weighted Autoencoders", ICLR, Sec. 5 and Appendix D: 784-200-200-50 (tanh), Bernoulli
    # decoder, batch 20, Adam(beta1=0.9, beta2=0.999, eps=1e-4), 3^i epochs at learning rate
    # 1e-3 * 10^(-i/7) for i = 0..7 (3,280 epochs); k = 1 gives their VAE row.
    "iwae-paper-1layer": {
        "data": {"dataset": "binarized-mnist"},
        "model": {"model": "vae", "latent_dim": 50, "hidden_sizes": [200, 200],
                  "activation": "tanh", "likelihood": "bernoulli"},
        "train": {"objective": "elbo", "num_samples": 1, "batch_size": 20, "lr": 1e-3,
                  "lr_schedule": "iwae", "lr_final": 1e-4, "schedule_stages": 8,
                  "epochs": 3280, "adam_eps": 1e-4},
    },
}


PRESETS["iwae-paper-2layer"] = {
    # The two-stochastic-layer model of Burda et al. (2016): 784-[200,200]-100-[100,100]-50
    # (tanh), same optimiser and schedule as the one-layer preset.
    "data": PRESETS["iwae-paper-1layer"]["data"],
    "model": {"model": "hierarchical-vae", "latent_dims": [100, 50], "hidden_sizes": [200, 200],
              "upper_hidden_sizes": [100, 100], "activation": "tanh", "likelihood": "bernoulli"},
    "train": PRESETS["iwae-paper-1layer"]["train"],
}


def read_config_file(name_or_path: str | None) -> dict[str, Any]:
    """The nested dict of a preset (by name) or a JSON / TOML file; ``{}`` for ``None``.

    Raises:
        ConfigError: unknown preset, missing or unreadable file.
    """
    if name_or_path is None:
        return {}
    if name_or_path in PRESETS:
        return copy.deepcopy(PRESETS[name_or_path])
    path = Path(name_or_path)
    if not path.is_file():
        raise ConfigError(
            f"--config {name_or_path!r} is neither a preset ({', '.join(PRESETS)}) "
            "nor an existing .json/.toml file")
    try:
        text = path.read_text(encoding="utf-8")
        return tomllib.loads(text) if path.suffix.lower() == ".toml" else json.loads(text)
    except (json.JSONDecodeError, tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"configuration file {path} cannot be parsed: {e}") from None


def merge(base: dict[str, Any], overrides: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """``base`` with each section updated by ``overrides`` (a new dict)."""
    out = {k: dict(v) if isinstance(v, dict) else v for k, v in base.items()}
    for section, values in overrides.items():
        out.setdefault(section, {})
        if not isinstance(out[section], dict):
            raise ConfigError(f"configuration section {section!r} must be a mapping")
        out[section].update(values)
    return out


def written_by_0_1(d: Any) -> bool:
    """Whether ``d`` is a config.json of vaekit 0.1, whose model section held every field of
    its flat ModelConfig (no file of a user's holds them all)."""
    model = d.get("model") if isinstance(d, dict) else None
    return isinstance(model, dict) and LEGACY_MODEL_FIELDS <= set(model)


def load_config(name_or_path: str | None) -> Config:
    """A preset by name, or a JSON / TOML file (a partial one is completed with defaults; a
    run's config.json of vaekit 0.1 is read as :meth:`Config.from_dict` with ``legacy``).

    Raises:
        ConfigError: unknown preset, missing or unreadable file, unknown field or bad value.
    """
    d = read_config_file(name_or_path)
    return Config.from_dict(d, legacy=written_by_0_1(d))
