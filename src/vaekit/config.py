"""Typed, validated configuration, saved as ``config.json`` beside every checkpoint.

A :class:`Config` has three sections, one field a line. Every field is also a command-line
option of ``vaekit train`` (``latent_dim`` -> ``--latent-dim``), and a configuration file
(JSON or TOML, the same nesting as :meth:`Config.to_dict`) may set any subset of fields.
Ready-made configurations are registered in :data:`PRESETS` and chosen by name with
``--config NAME``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ConfigError

BINARIZATIONS = ("auto", "dynamic", "none")
LIKELIHOODS = ("bernoulli", "gaussian")
KL_ESTIMATES = ("analytic", "mc")
LR_SCHEDULES = ("constant", "iwae")


def _f(default: Any, help: str, **kw: Any) -> Any:
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata={"help": help, **kw})
    return field(default=default, metadata={"help": help, **kw})


@dataclass
class DataConfig:
    dataset: str = _f("mnist-5k", "dataset name (mnist-5k, binarized-mnist) or a .npy/.npz path")
    data_dir: str | None = _f(None, "directory searched first for named datasets' files")
    binarization: str = _f(
        "auto",
        "auto | dynamic | none. dynamic: a fresh Bernoulli draw of the grey levels at every "
        "epoch (the test set is binarized once, seed 0); auto: dynamic for grey-level data "
        "with a Bernoulli decoder, none otherwise",
    )


@dataclass
class ModelConfig:
    model: str = _f("vae", "model family (see vaekit.models.MODELS)")
    latent_dim: int = _f(16, "dimension of z")
    hidden_sizes: list[int] = _f([200, 200], "hidden layer widths of the encoder MLP, e.g. 200,200 "
                                 "(the decoder mirrors them)")
    activation: str = _f("tanh", "hidden activation: tanh, relu, elu, softplus, silu, gelu")
    likelihood: str = _f("bernoulli", "decoder p(x|z): bernoulli (0/1 or [0,1] data) | gaussian")
    decoder_std: float = _f(0.1, "Gaussian decoder: the (initial) standard deviation sigma")
    learn_decoder_std: bool = _f(True, "Gaussian decoder: learn sigma (else keep it fixed)")
    latent_dims: list[int] = _f([], "hierarchical-vae: latent widths bottom-up, e.g. 100,50 "
                                    "(empty: one layer of latent_dim)")
    upper_hidden_sizes: list[int] = _f([100, 100], "hierarchical-vae: hidden widths between "
                                                   "stochastic layers")
    noise: str = _f("none", "autoencoders: input corruption none | masking | gaussian "
                            "(a denoising autoencoder)")
    noise_level: float = _f(0.25, "autoencoders: masking probability or Gaussian noise std")
    num_latents: int = _f(16, "vqvae: number of code positions M")
    embedding_dim: int = _f(16, "vqvae: dimension of each codebook vector")
    codebook_size: int = _f(128, "vqvae: number of codebook vectors")
    commitment_cost: float = _f(0.25, "vqvae: weight beta of the commitment loss")
    ema_decay: float = _f(0.99, "vqvae: decay of the codebook's moving averages")
    code_prior: str = _f("categorical", "vqvae: prior over codes fitted after training: "
                                        "categorical | autoregressive")
    num_components: int = _f(10, "gmm / bernoulli-mixture: number of components")
    covariance_type: str = _f("full", "gmm: full | diag")
    reg_covar: float = _f(1e-6, "gmm: added to the covariances' diagonal")
    bernoulli_alpha: float = _f(0.1, "bernoulli-mixture: Beta(1+a, 1+a) smoothing of the "
                                     "component probabilities in the M-step")
    em_max_iter: int = _f(100, "mixtures: maximum EM iterations per restart")
    em_tol: float = _f(1e-3, "mixtures: stop when the mean log-likelihood gains less (nats)")
    em_restarts: int = _f(1, "mixtures: restarts from fresh initialisations; the best is kept")
    em_init: str = _f("k-means++", "mixtures: initialisation k-means++ | random")


@dataclass
class TrainConfig:
    objective: str = _f("auto", "training objective / estimator (see vaekit.estimators); auto: "
                                "the model's default (elbo for VAEs)")
    num_samples: int = _f(1, "z samples per x in the training objective (k)")
    kl: str = _f("analytic", "ELBO's KL term: analytic (closed form) | mc (Monte Carlo)")
    beta: float = _f(1.0, "elbo: weight of the KL term (beta-VAE; the reported bound uses 1)")
    kl_warmup_epochs: float = _f(0.0, "elbo: raise the KL weight linearly from 0 to beta over "
                                      "this many epochs (0: off)")
    num_groups: int = _f(1, "miwae/piwae: M groups of num_samples draws")
    ciwae_beta: float = _f(0.5, "ciwae: weight of the ELBO in beta*ELBO + (1-beta)*IWAE")
    baseline: str = _f("nvil", "elbo-sf control variate: none | moving-average | nvil")
    baseline_decay: float = _f(0.8, "elbo-sf: decay of the running averages of the signal")
    rws_wake_weight: float = _f(0.5, "rws/rws-dreg: weight of wake-phi (1 - it: sleep-phi)")
    epochs: int = _f(60, "maximum number of passes over the training set")
    batch_size: int = _f(100, "examples per gradient step")
    lr: float = _f(1e-3, "Adam learning rate (the initial one for a decaying schedule)")
    lr_schedule: str = _f(
        "constant", "constant | iwae (stage i lasts 3^i epochs; lr decays geometrically "
        "from lr to lr_final over schedule_stages stages, Burda et al. 2016)")
    lr_final: float = _f(1e-4, "iwae schedule: learning rate of the last stage")
    schedule_stages: int = _f(8, "iwae schedule: number of stages (8 gives 3280 epochs)")
    adam_beta1: float = _f(0.9, "Adam beta1")
    adam_beta2: float = _f(0.999, "Adam beta2")
    adam_eps: float = _f(1e-8, "Adam epsilon (the IWAE paper uses 1e-4)")
    patience: int = _f(0, "early stopping: epochs without a better validation ELBO (0: off)")
    seed: int = _f(0, "random seed: the same seed gives the same run")
    eval_num_samples: int = _f(5000, "k of the importance-weighted test log-likelihood")
    pretrain_epochs: int = _f(5, "stacked-autoencoder: epochs of greedy pre-training per layer")
    monitor_every: int = _f(0, "every this many epochs (and after the first) record L_k on the "
                               "test set in metrics.jsonl (0: off)")
    monitor_num_samples: int = _f(1000, "k of the monitored bound L_k")
    monitor_examples: int = _f(1000, "test examples used by the monitor (a fixed random subset)")
    device: str = _f("auto", "auto (CUDA when present) | cpu | cuda | cuda:N")


SECTIONS: dict[str, type] = {"data": DataConfig, "model": ModelConfig, "train": TrainConfig}


# Fields that lived in the train section of early config.json files; read where they are now.
_MOVED_TO_MODEL = ("em_max_iter", "em_tol", "em_restarts")


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    # ---------------------------------------------------------------- (de)serialisation
    def to_dict(self) -> dict[str, dict[str, Any]]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any], base: Config | None = None) -> Config:
        """Build a config from a (possibly partial) nested dict over ``base`` (default: defaults).

        Raises:
            ConfigError: an unknown section or field, or a value of the wrong type.
        """
        cfg = dataclasses.replace(base) if base is not None else cls()
        if not isinstance(d, dict):
            raise ConfigError("a configuration must be a mapping of sections (data, model, train)")
        out = {section: dataclasses.replace(getattr(cfg, section)) for section in SECTIONS}
        for section, values in d.items():
            if section not in SECTIONS:
                raise ConfigError(
                    f"unknown configuration section {section!r}; known: {', '.join(SECTIONS)}")
            if not isinstance(values, dict):
                raise ConfigError(f"configuration section {section!r} must be a mapping")
            for name, value in values.items():
                if section == "train" and name in _MOVED_TO_MODEL:
                    section_of = "model"          # config.json of runs from before 0.1
                else:
                    section_of = section
                set_field(out[section_of], name, value)
        return cls(**out)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2) + "\n"

    def resolved_objective(self) -> str:
        """``train.objective``, with ``auto`` replaced by the model family's default."""
        if self.train.objective != "auto":
            return self.train.objective
        from .models import MODELS
        return getattr(MODELS[self.model.model], "default_objective", "elbo")

    def resolved_likelihood(self) -> str:
        """The decoder's likelihood: fixed by families that have one (a Gaussian mixture is
        Gaussian, a Bernoulli mixture Bernoulli), else ``model.likelihood``."""
        from .models import MODELS
        fixed = getattr(MODELS[self.model.model], "likelihood", None)
        return fixed if isinstance(fixed, str) else self.model.likelihood

    def resolved(self) -> Config:
        """A copy with ``auto`` choices made (what a run directory's config.json records)."""
        train = dataclasses.replace(self.train, objective=self.resolved_objective())
        model = dataclasses.replace(self.model, likelihood=self.resolved_likelihood())
        return dataclasses.replace(self, train=train, model=model)

    # ---------------------------------------------------------------- validation
    def validate(self) -> Config:
        """Check every value's range and choice; return ``self``.

        Raises:
            ConfigError: naming the field, the bad value and what is allowed.
        """
        from .estimators import BASELINES, ESTIMATORS
        from .models import MODELS
        from .nn import ACTIVATIONS

        d, m, t = self.data, self.model, self.train
        _choice("binarization", d.binarization, BINARIZATIONS)
        _choice("model", m.model, MODELS)
        _choice("objective", t.objective, ("auto", *ESTIMATORS, "em"))
        family = MODELS[m.model]
        own = getattr(family, "own_objective", False)
        if t.objective != "auto" and own and t.objective != family.default_objective:
            raise ConfigError(f"model {m.model} is trained with objective "
                              f"{family.default_objective} (or auto), not {t.objective}")
        if t.objective in (*OWN_OBJECTIVES, "em") and not own:
            raise ConfigError(f"objective {t.objective} belongs to another model family; "
                              f"{m.model} takes a bound estimator such as elbo or iwae")
        _choice("activation", m.activation, ACTIVATIONS)
        _choice("likelihood", m.likelihood, LIKELIHOODS)
        _choice("kl", t.kl, KL_ESTIMATES)
        _choice("baseline", t.baseline, BASELINES)
        _choice("noise", m.noise, ("none", "masking", "gaussian"))
        _choice("covariance_type", m.covariance_type, ("full", "diag"))
        _choice("code_prior", m.code_prior, ("categorical", "autoregressive"))
        _choice("em_init", m.em_init, ("k-means++", "random"))
        _choice("lr_schedule", t.lr_schedule, LR_SCHEDULES)
        for name in ("latent_dim", "num_latents", "embedding_dim", "codebook_size",
                     "num_components", "em_max_iter", "em_restarts"):
            _positive(name, getattr(m, name))
        if any(v <= 0 for v in [*m.latent_dims, *m.upper_hidden_sizes]):
            raise ConfigError("latent_dims and upper_hidden_sizes must be positive widths")
        if not 0 <= m.noise_level or (m.noise == "masking" and m.noise_level >= 1):
            raise ConfigError(f"noise_level must be >= 0 (< 1 for masking), got {m.noise_level}")
        if not (math.isfinite(m.bernoulli_alpha) and m.bernoulli_alpha >= 0):
            raise ConfigError(f"bernoulli_alpha must be >= 0, got {m.bernoulli_alpha}")
        if not 0 < m.ema_decay < 1:
            raise ConfigError(f"ema_decay must lie in (0, 1), got {m.ema_decay}")
        if not m.hidden_sizes or any(h <= 0 for h in m.hidden_sizes):
            raise ConfigError(
                f"hidden_sizes must be one or more positive widths, got {m.hidden_sizes}")
        for name in ("num_samples", "epochs", "batch_size", "schedule_stages",
                     "eval_num_samples", "num_groups", "monitor_num_samples",
                     "monitor_examples"):
            _positive(name, getattr(t, name))
        for name in ("patience", "monitor_every", "pretrain_epochs"):
            if getattr(t, name) < 0:
                raise ConfigError(f"{name} must be >= 0 (0 turns it off), got {getattr(t, name)}")
        if not (math.isfinite(t.kl_warmup_epochs) and t.kl_warmup_epochs >= 0):
            raise ConfigError(f"kl_warmup_epochs must be >= 0, got {t.kl_warmup_epochs}")
        if self.resolved_objective() not in ("em", *OWN_OBJECTIVES):
            from .estimators import get_estimator
            get_estimator(dataclasses.replace(t, objective=self.resolved_objective()),
                          data_dim=1)            # each estimator checks its own options
        for name, value in (("decoder_std", m.decoder_std), ("lr", t.lr),
                            ("lr_final", t.lr_final), ("adam_eps", t.adam_eps),
                            ("commitment_cost", m.commitment_cost), ("reg_covar", m.reg_covar),
                            ("em_tol", m.em_tol)):
            if not (math.isfinite(value) and value > 0):
                raise ConfigError(f"{name} must be a positive number, got {value}")
        for name in ("adam_beta1", "adam_beta2"):
            v = getattr(t, name)
            if not 0 <= v < 1:
                raise ConfigError(f"{name} must lie in [0, 1), got {v}")
        if not (t.device == "auto" or t.device == "cpu" or t.device.startswith("cuda")):
            raise ConfigError(f"device must be auto, cpu, cuda or cuda:N, got {t.device!r}")
        return self


OWN_OBJECTIVES = ("reconstruction", "vq")


def _choice(name: str, value: Any, allowed: Any) -> None:
    if value not in allowed:
        raise ConfigError(f"{name} must be one of {', '.join(map(str, allowed))}; got {value!r}")


def _positive(name: str, value: int) -> None:
    if value <= 0:
        raise ConfigError(f"{name} must be a positive integer, got {value}")


# -------------------------------------------------------------------- field typing
def field_types(section_cls: type) -> dict[str, Any]:
    """Resolved annotation of each field of a section dataclass."""
    hints = typing.get_type_hints(section_cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(section_cls)}


def _base_type(tp: Any) -> tuple[Any, bool]:
    """(underlying type, optional?) for ``X | None`` annotations."""
    if isinstance(tp, types.UnionType) or typing.get_origin(tp) is typing.Union:
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return args[0], True
    return tp, False


def coerce(name: str, tp: Any, value: Any) -> Any:
    """Convert ``value`` (from JSON/TOML or a command-line string) to the field's type.

    Raises:
        ConfigError: the value cannot be read as that type.
    """
    base, optional = _base_type(tp)
    if value is None or (optional and isinstance(value, str) and value.lower() in ("", "none")):
        if optional:
            return None
        raise ConfigError(f"{name} cannot be empty")
    try:
        if typing.get_origin(base) is list:
            if isinstance(value, str):
                items = [v for v in value.replace(" ", "").split(",") if v]
            elif isinstance(value, (list, tuple)):
                items = list(value)
            else:
                raise TypeError
            (item_t,) = typing.get_args(base)
            return [_scalar(item_t, v) for v in items]
        return _scalar(base, value)
    except (TypeError, ValueError):
        raise ConfigError(
            f"{name} must be {_type_name(base)}, got {value!r}") from None


def _scalar(tp: type, value: Any) -> Any:
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "yes", "1", "false", "no", "0"):
            return value.lower() in ("true", "yes", "1")
        raise ValueError
    if tp is int:
        if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
            raise ValueError
        if isinstance(value, str):
            return int(value, 10)
        return int(value)
    if tp is float:
        if isinstance(value, bool):
            raise ValueError
        v = float(value)
        if math.isnan(v):
            raise ValueError
        return v
    if tp is str:
        if not isinstance(value, str):
            raise TypeError
        return value
    raise TypeError


def _type_name(tp: Any) -> str:
    if typing.get_origin(tp) is list:
        return "a comma-separated list of integers"
    return {int: "an integer", float: "a number", bool: "true or false", str: "a string"}.get(
        tp, str(tp))


def set_field(section: Any, name: str, value: Any) -> None:
    """Set ``section.name = value`` with type checking (ConfigError on unknown names)."""
    types_ = field_types(type(section))
    if name not in types_:
        raise ConfigError(
            f"unknown configuration field {name!r}; known: {', '.join(types_)}")
    setattr(section, name, coerce(name, types_[name], value))


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


def load_config(name_or_path: str | None) -> Config:
    """A preset by name, or a JSON / TOML file (a partial one is completed with defaults).

    Raises:
        ConfigError: unknown preset, missing or unreadable file, unknown field or bad value.
    """
    if name_or_path is None:
        return Config()
    if name_or_path in PRESETS:
        return Config.from_dict(PRESETS[name_or_path])
    path = Path(name_or_path)
    if not path.is_file():
        raise ConfigError(
            f"--config {name_or_path!r} is neither a preset ({', '.join(PRESETS)}) "
            "nor an existing .json/.toml file")
    text = path.read_text(encoding="utf-8")
    try:
        if path.suffix.lower() == ".toml":
            d = tomllib.loads(text)
        else:
            d = json.loads(text)
    except (json.JSONDecodeError, tomllib.TOMLDecodeError) as e:
        raise ConfigError(f"configuration file {path} cannot be parsed: {e}") from None
    return Config.from_dict(d)
