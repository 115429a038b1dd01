"""Model families: what each kind of model is, and how it is fitted, evaluated and drawn.

A family is one registry entry (:data:`FAMILIES`, ``--model NAME``) that declares

* its options (a dataclass of :mod:`vaekit.options`, validated in one place),
* its model class and how to build it for data of a given event shape,
* how it is fitted: by gradient steps with an estimator (:class:`GradientFamily`, with hooks
  before and after training: greedy pre-training, a prior fitted after training) or by EM
  (:class:`EMFamily`),
* the objectives it takes (``"bound"``: every bound estimator; or its own),
* how it is evaluated (a typed :class:`~vaekit.evaluation.Evaluation`) and what figures it
  draws,
* what it supports (:data:`CAPABILITIES`): generic code (runs, training, evaluation, the
  command line, compare) asks :meth:`Family.supports` and never inspects a model.

Adding a family is one module: an options class, a model class and a registered
:class:`Family` subclass (see ``docs/architecture.md``).
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import torch
from torch import nn

from .config import TrainConfig
from .data import Dataset, eval_split, resolve_binarization
from .errors import ConfigError, DataError
from .evaluation import BoundEvaluation, Evaluation, ExactEvaluation, evaluate_bound, mean_and_se
from .io import atomic_write, save_tensors
from .options import Options
from .registry import Registry

CAPABILITIES: dict[str, str] = {
    "sample": "draws new data from the model (samples.png)",
    "embed": "maps x to a latent point and back: embed(x), decode_mean(z) (reconstructions, "
             "interpolations, latent scatter)",
    "bound": "has an ELBO and an importance-sampled log-likelihood; trained with bound "
             "estimators (prior(), encoder(x), decoder(z))",
    "monitor": "the test bound L_k can be recorded during training (--monitor-every)",
    "gradients": "gradient estimators can be studied at a checkpoint (vaekit gradients)",
    "latent_grid": "a 2-D latent space is decoded on a grid of prior quantiles (manifold.png)",
    "noise": "scored on corrupted inputs (vaekit evaluate --noise)",
    "exact_likelihood": "log p(x) is computed exactly",
    "importance_sampling": "a discrete latent with an exact posterior (vaekit "
                           "importance-sampling)",
    "labels": "uses the data's class labels: training batches reach the estimator as "
              "(x, y) (Family.batch_losses), validation and evaluation receive the labels "
              "of their split, and samples can be drawn for a given class (--label)",
    "gaps": "q(z|x) is a posterior head applied to per-point encoder features, which can be "
            "optimised point by point (vaekit gaps: approximation and amortization gaps)",
}

FAMILIES: Registry[Family] = Registry("model")


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def register_family(name: str, options: type[Options]):
    """Class decorator: register an instance of the decorated :class:`Family` subclass as
    ``--model NAME``, with its options class."""
    def deco(cls: type[Family]) -> type[Family]:
        cls.name, cls.options = name, options
        if "default_objective" not in cls.__dict__ and "bound" not in cls.objectives:
            cls.default_objective = cls.objectives[0]
        unknown = set(cls.capabilities) - set(CAPABILITIES)
        if unknown:
            raise ValueError(f"family {name}: unknown capabilities {sorted(unknown)}")
        FAMILIES.register(name, cls())
        return cls
    return deco


def _ensure_registered() -> None:
    from . import models  # noqa: F401  (the built-in families register on import)


def get_family(name: str) -> Family:
    """The family registered as ``name``.

    Raises:
        ConfigError: unknown name; the message lists the families.
    """
    _ensure_registered()
    return FAMILIES.get(name)


def family_of(model: nn.Module) -> Family:
    """The family whose model class ``model`` is (the most specific one).

    Raises:
        TypeError: no family is registered for the model's class.
    """
    _ensure_registered()
    for cls in type(model).__mro__:
        for name in FAMILIES:
            if FAMILIES.get(name).model is cls:
                return FAMILIES.get(name)
    raise TypeError(f"no model family is registered for {type(model).__name__}; "
                    "register one with vaekit.families.register_family")


def family_of_options(options: Options) -> Family:
    """The family whose options class ``options`` is."""
    _ensure_registered()
    for name in FAMILIES:
        if type(options) is FAMILIES.get(name).options:
            return FAMILIES.get(name)
    raise TypeError(f"{type(options).__name__} is not the options class of a registered "
                    "model family")


# --------------------------------------------------------------------------- fitting
def monitor_subset(x: torch.Tensor, n: int) -> torch.Tensor:
    """``n`` test examples drawn without replacement by a fixed generator (seed 0), in their
    original order: the same subset for every run, and representative of the whole split,
    whose order is not random (binarized MNIST's test set has runs of easy digits)."""
    from .sampling import fixed_indices
    if n >= x.shape[0]:
        return x
    return x[fixed_indices(x.shape[0], n).sort().values.to(x.device)]


@dataclass
class FitJob:
    """What a family's :meth:`Family.fit` needs: the data, how it is binarized, the trainer's
    and the objective's options, and where results go."""

    dataset: Dataset
    binarization: str                       # "dynamic" or "none", resolved
    train: TrainConfig = field(default_factory=TrainConfig)
    estimator: Options | None = None        # the objective's options (None: its defaults)
    run_dir: Path | None = None
    resume: bool = False
    progress: bool = True
    log: Callable[[str], None] = _stderr

    @property
    def dynamic(self) -> bool:
        return self.binarization == "dynamic"

    def values(self, split: str) -> torch.Tensor:
        """A split's values as evaluated (binarized once under dynamic binarization)."""
        return eval_split(self.dataset, split, self.binarization)

    def labels(self, split: str) -> torch.Tensor:
        """A split's class labels, ``(N,)`` int64, for families with the ``labels``
        capability.

        Raises:
            DataError: the split has no labels.
        """
        y = getattr(self.dataset, f"{split}_labels")
        if y is None:
            raise DataError(f"the {split} split of {self.dataset.name} has no class labels")
        return torch.as_tensor(y).long()


@dataclass
class LabelledBatch:
    """One training step's data for a family with the ``labels`` capability
    (:meth:`Family.batch_losses`): ``x: (B, *event_shape)`` values and ``y: (B,)`` int64
    labels sliced by the same permutation (``None`` when the main batch is unlabelled), and
    for semi-supervised training a labelled sub-batch ``x_labelled: (B_l, *event_shape)``,
    ``y_labelled: (B_l,)`` drawn with replacement from the labelled set, which stands for
    ``labelled_weight`` times as many examples per example as the main batch does."""

    x: torch.Tensor
    y: torch.Tensor | None = None
    x_labelled: torch.Tensor | None = None
    y_labelled: torch.Tensor | None = None
    labelled_weight: float = 1.0


@dataclass
class FigureContext:
    """What a family's :meth:`Family.figures` draws from."""

    model: nn.Module
    dataset: Dataset
    binarization: str
    history: list[dict]
    options: Options
    objective: str
    num_samples: int = 100          # how many samples samples.png shows
    seed: int = 0                   # the seed of those samples
    valid_name: str | None = None   # the validation score's name (None: the family's)
    label: int | None = None        # samples of this class only (families with "labels")

    def test_values(self) -> torch.Tensor:
        return eval_split(self.dataset, "test", self.binarization)


class Family:
    """Base class of model families (instances are registered, see :func:`register_family`).

    Class attributes:
        name, options: set by :func:`register_family`.
        model: the model class (:func:`family_of` finds a model's family by it).
        objectives: ``("bound",)`` takes every bound estimator; otherwise the names of the
            family's own objectives (``("reconstruction",)``, ``("em",)``).
        default_objective: what ``--objective auto`` trains it with (``elbo`` for bound
            families; by default the first of a family's own ``objectives``).
        capabilities: a subset of :data:`CAPABILITIES`.
        validation_name: what the validation score is, for logs and plots.
        fixed_likelihood: the observation model of a family without a ``likelihood``
            option (a Gaussian mixture's is Gaussian); ``None``: the option says.
    """

    name: ClassVar[str]
    options: ClassVar[type[Options]]
    model: ClassVar[type[nn.Module]]
    objectives: ClassVar[tuple[str, ...]] = ("bound",)
    default_objective: ClassVar[str] = "elbo"
    capabilities: ClassVar[frozenset[str]] = frozenset()
    validation_name: ClassVar[str] = "ELBO"
    fixed_likelihood: ClassVar[str | None] = None
    result: ClassVar[type[Evaluation]] = Evaluation

    def supports(self, capability: str) -> bool:
        """Whether the family has ``capability`` (a key of :data:`CAPABILITIES`)."""
        if capability not in CAPABILITIES:
            raise ValueError(f"unknown capability {capability!r}")
        return capability in self.capabilities

    # -------------------------------------------------------------- building
    def likelihood(self, options: Options) -> str:
        """The observation model's name (``--likelihood``) for these options."""
        return self.fixed_likelihood or options.likelihood

    def options_for_data(self, options: Options, dataset: Dataset) -> Options:
        """``options`` with what depends on the data filled in: ``likelihood`` ``auto``
        resolved (:func:`vaekit.observations.auto_likelihood`) and the observation model's
        own data-dependent options (a table decoder's column layout). Families with a fixed
        observation model keep their options.

        Raises:
            ConfigError: an observation model that cannot describe these data at all (the
                table likelihood without a table).
        """
        if self.fixed_likelihood is not None:
            return options
        from .observations import OBSERVATIONS, auto_likelihood
        name = options.likelihood
        if name == "auto":
            name = auto_likelihood(dataset)
        return options.replace(likelihood=name, **OBSERVATIONS.get(name).options_for(dataset))

    def observation_name(self, model: nn.Module) -> str:
        """The observation model's name of a built model."""
        return model.observation.name

    def build(self, options: Options, event_shape: tuple[int, ...]) -> nn.Module:
        """A new model for data of ``event_shape`` (``(D,)`` or ``(C, H, W)``)."""
        return self.model(event_shape, options=options)

    def initialize(self, model: nn.Module, dataset: Dataset) -> None:
        """Data-dependent initialisation before training (the decoder starts at the data
        mean, as the IWAE code does, and a decoder with a scale at the data's spread)."""
        x = dataset.train
        model.init_decoder_bias(x.mean(0), x.std(0, correction=0))   # no NaN for N = 1

    def latent_dim(self, model: nn.Module) -> int:
        return int(model.latent_dim)

    def local_posterior(self, model: nn.Module, x: torch.Tensor):
        """The local variational parameters of q(z|x) and the map from them to q, for the
        ``gaps`` capability: ``(h, head)`` with ``h: (B, F)`` the encoder's features of ``x:
        (B, *event_shape)`` and ``head(h) -> Distribution`` (batch shape ``(B,)``), so that
        ``head(h)`` is the amortized q(z|x) and ``head(h')`` for any other ``h'`` stays in
        the same variational family (:mod:`vaekit.gaps`).

        Raises:
            ConfigError: the family does not have the ``gaps`` capability.
        """
        raise ConfigError(f"a {self.name} has no per-point variational parameters to "
                          "optimise")

    def legacy_parameter_order(self, model: nn.Module) -> list[str]:
        """The model's parameter names in the order vaekit 0.1 gave them (the optimizer
        state of its checkpoints is in that order)."""
        return [n for n, _ in model.named_parameters()]

    # -------------------------------------------------------------- fitting and scoring
    def fit(self, model: nn.Module, job: FitJob):
        """Fit ``model`` to ``job.dataset``; return a :class:`~vaekit.training.TrainResult`.
        With a run directory, checkpoints and ``metrics.jsonl`` are written there."""
        raise NotImplementedError

    def validation_score(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """The model-selection score per example, ``(B,)``, higher is better (families with
        the ``labels`` capability whose trainer gets ``valid_y`` take ``(model, x, y)``)."""
        raise NotImplementedError

    def batch_losses(self, estimator, model: nn.Module, batch: LabelledBatch):
        """The :class:`~vaekit.estimators.Losses` of one training step of a family with the
        ``labels`` capability (the trainer calls ``estimator(model, x)`` for the others)."""
        return estimator(model, batch.x)

    def evaluate(self, model: nn.Module, x: torch.Tensor, num_samples: int = 5000, *,
                 progress: bool = False, noise: tuple[str, float] | None = None,
                 compile: bool | str = "auto",
                 log: Callable[[str], None] | None = None) -> Evaluation:
        """The test metrics of ``model`` on ``x: (N, *event_shape)``.

        Raises:
            ConfigError: ``noise`` for a family without the ``noise`` capability.
        """
        raise NotImplementedError

    def _refuse_noise(self, noise) -> None:
        if noise is not None and not self.supports("noise"):
            raise ConfigError(f"noise applies to autoencoders; this run's model is "
                              f"{self.name}")

    def bits_per_dim(self, model: nn.Module, log_likelihood: float | None,
                     num_values: int) -> float | None:
        from .observations import OBSERVATIONS
        return OBSERVATIONS.get(self.observation_name(model)).bits_per_dim(log_likelihood,
                                                                         num_values)

    def sample(self, model: nn.Module, n: int) -> torch.Tensor:
        """``n`` draws of the model as figures show them, ``(n, *event_shape)``: E[x|z] with
        z ~ p(z) for latent-variable models."""
        return model.sample(n)

    def draw(self, model: nn.Module, n: int) -> torch.Tensor:
        """``n`` draws x ~ p(x) of the model itself, ``(n, *event_shape)`` (ancestral
        sampling: z ~ p(z), then x ~ p(x|z))."""
        return model.draw(n)

    # -------------------------------------------------------------- figures
    def figures(self, ctx: FigureContext) -> list[tuple[str, object]]:
        """``(file name, matplotlib Figure)`` pairs: learning curves, and, as the family's
        capabilities allow, samples, reconstructions, interpolations and for a 2-D latent
        space the decoded manifold and the test set's embeddings by label."""
        from . import plotting, sampling

        model, ds = ctx.model, ctx.dataset
        model.eval()
        out: list[tuple[str, object]] = []
        if ctx.history:
            out.append(("curves.png", self.curves(ctx)))
        shape = ds.figure_shape
        x_test = ctx.test_values()
        _, labels = ds.split("test")
        if shape is not None and self.supports("sample"):
            out.append(("samples.png", plotting.plot_samples(
                sampling.prior_samples(model, ctx.num_samples, ctx.seed, label=ctx.label),
                shape)))
        embed = self.supports("embed")
        if shape is not None and embed:
            shown = sampling.shown_examples(x_test, 50)       # a fixed random draw, not x[:50]
            out.append(("reconstructions.png", plotting.plot_reconstructions(
                shown, sampling.reconstructions(model, shown), shape)))
            pairs = min(8, shown.shape[0] // 2)
            if pairs:
                paths = sampling.interpolations(model, shown[:pairs], shown[pairs:2 * pairs])
                out.append(("interpolations.png", plotting.plot_interpolations(paths, shape)))
        if embed and self.latent_dim(model) == 2:
            if shape is not None and self.supports("latent_grid"):
                images, z = sampling.latent_grid(model, 20)
                out.append(("manifold.png", plotting.plot_manifold(images, shape, 20, z=z)))
            out.append(("latent.png", plotting.plot_latent(
                sampling.embeddings(model, x_test).cpu(), labels,
                label_names=ds.label_names)))
        if shape is None and self.supports("sample"):
            out += self.data_figures(ctx)
        return out + self.extra_figures(ctx)

    def data_figures(self, ctx: FigureContext) -> list[tuple[str, object]]:
        """For data that are not images: the model's draws x ~ p(x) against the test set, in
        the original units: a scatter for 2-D data (``samples.png``), otherwise each
        column's marginals (``marginals.png``: histograms, or frequencies of a table's
        binary and categorical columns) and the pairs of the first real columns
        (``pairs.png``)."""
        import pandas as pd

        from . import plotting, sampling
        ds = ctx.dataset
        x = ds.to_original(ctx.test_values())
        n = min(max(ctx.num_samples, x.shape[0]), 5000)
        draws = ds.to_original(sampling.prior_draws(ctx.model, n, ctx.seed)
                               .reshape(n, *ds.event_shape))
        if ds.table is None and ds.dim == 2:
            return [("samples.png", plotting.plot_samples_2d(x, draws))]
        if ds.table is not None:
            data, samples = ds.table.decode(x.numpy()), ds.table.decode(draws.numpy())
            kinds = {c.name: c.kind for c in ds.table.columns}
        else:
            names = [f"x{i}" for i in range(ds.dim)]
            data = pd.DataFrame(x.reshape(len(x), -1).numpy(), columns=names)
            samples = pd.DataFrame(draws.reshape(n, -1).numpy(), columns=names)
            kinds = {}
        out = [("marginals.png", plotting.plot_marginals(data, samples, kinds))]
        real = [c for c in data.columns if kinds.get(c, "real") == "real"]
        if len(real) >= 2:
            out.append(("pairs.png", plotting.plot_pairs(data[real], samples[real])))
        return out

    def curves(self, ctx: FigureContext):
        from . import plotting
        return plotting.plot_curves(ctx.history, ctx.valid_name or self.validation_name)

    def extra_figures(self, ctx: FigureContext) -> list[tuple[str, object]]:
        """Figures of this family only (a denoising autoencoder's corrupted inputs, ...)."""
        return []


# --------------------------------------------------------------------------- gradient training
class GradientFamily(Family):
    """Families trained by gradient steps with an estimator (:class:`vaekit.training.Trainer`).
    Hooks: :meth:`before_fit` (not on resume) and :meth:`after_fit`."""

    def before_fit(self, model: nn.Module, job: FitJob) -> None:
        """Runs once before the first epoch of a new run (greedy pre-training, ...)."""

    def after_fit(self, model: nn.Module, job: FitJob, trainer) -> None:
        """Runs after training, on the model with its best weights (a prior over codes, ...)."""

    def trainer_data(self, job: FitJob, model: nn.Module) -> dict:
        """The data arguments of the :class:`~vaekit.training.Trainer` that fits ``model``:
        ``train_x`` (as
        stored) and ``valid_x``; with the ``labels`` capability also ``train_y`` and
        ``valid_y``. A family may add ``labelled`` (a
        :class:`~vaekit.training.LabelledSet`) and ``callbacks``."""
        data = {"train_x": job.dataset.raw("train"), "valid_x": job.values("valid")}
        if self.supports("labels"):
            data.update(train_y=job.labels("train"), valid_y=job.labels("valid"))
        return data

    def fit(self, model: nn.Module, job: FitJob):
        from .training import Trainer, resolve_device

        if not job.resume:
            self.before_fit(model.to(resolve_device(job.train.device)), job)
        monitor_x = (monitor_subset(job.values("test"), job.train.monitor_examples)
                     if job.train.monitor_every else None)
        trainer = Trainer(model, job.train, **self.trainer_data(job, model),
                          estimator=job.estimator, divisor=job.dataset.divisor,
                          dynamic_binarization=job.dynamic, run_dir=job.run_dir,
                          progress=job.progress, log=job.log, monitor_x=monitor_x)
        result = trainer.fit(resume=job.resume)
        self.after_fit(trainer.model, job, trainer)
        return result


class OwnObjectiveFamily(GradientFamily):
    """Families trained on an objective of their own (autoencoders, VQ-VAE): the model
    defines ``training_losses(x) -> Losses``, which the objective's estimator hands to the
    trainer (:mod:`vaekit.estimators.own_loss`), and ``validation_score(x) -> (B,)``."""

    def validation_score(self, model, x):
        return model.validation_score(x)


# Decoder outputs held at once in an evaluation: 2M float32 values, 8 MB. glibc maps every
# allocation above 32 MB on its own and unmaps it when freed, so larger chunks page-fault
# their outputs and log-density temporaries in afresh each time (smaller ones are reused
# when vaekit.memory.keep_freed_memory has run): with 32M values a discretized logistic
# mixture's k=5000 evaluation spent 60% of its time in the kernel and took 3x as long
# (benchmarks/bench_eval_chunks.py).
DECODER_OUTPUT_BUDGET = 1 << 21


def rows_within(param_shape: tuple[int, ...], budget: int = DECODER_OUTPUT_BUDGET) -> int:
    """How many (sample, example) rows to decode at once when each row has ``param_shape``
    outputs: :data:`~vaekit.evaluation.DEFAULT_MAX_ROWS`, fewer for large decoder outputs (a
    mixture's or a 256-way categorical's parameters per pixel), so that the chunk's buffers
    stay small enough to be reused rather than mapped afresh (see
    :data:`DECODER_OUTPUT_BUDGET`)."""
    from .evaluation import DEFAULT_MAX_ROWS
    return max(1, min(DEFAULT_MAX_ROWS, budget // math.prod(param_shape)))


class BoundFamily(GradientFamily):
    """Latent-variable models with an inference network, trained on a bound on log p(x)
    with any bound estimator: the VAE and its relatives. Their models provide ``prior()``,
    ``encoder(x)``, ``decoder(z)`` (:class:`vaekit.models.base.LatentVariableModel`)."""

    objectives = ("bound",)
    default_objective = "elbo"
    capabilities = frozenset({"sample", "embed", "bound", "monitor", "gradients",
                              "latent_grid"})
    result = BoundEvaluation

    def legacy_parameter_order(self, model):
        return model.legacy_parameter_order()

    def validation_score(self, model, x):
        """The single-sample ELBO, with the closed-form KL where one exists."""
        from .objectives import elbo
        return elbo(model, x, 1)

    def evaluate(self, model, x, num_samples=5000, *, progress=False, noise=None,
                 compile="auto", log=None, **options):
        """:func:`vaekit.evaluation.evaluate_bound` (``options``: its ``batch_size``,
        ``max_rows``), with bits/dim from the observation model."""
        self._refuse_noise(noise)
        options.setdefault("max_rows", rows_within(model.observation.param_shape))
        r = evaluate_bound(model, x, num_samples, progress=progress, compile=compile, log=log,
                           **options)
        r.bits_per_dim = self.bits_per_dim(model, r.log_likelihood, math.prod(x.shape[1:]))
        return r


# --------------------------------------------------------------------------- EM
class EMFamily(Family):
    """Models fitted by expectation-maximization (mixtures), whose log p(x) is exact. Their
    models follow scikit-learn's conventions (``fit``, ``score_samples``, ``history_``...)
    and take flat ``(N, D)`` data."""

    objectives = ("em",)
    capabilities = frozenset({"sample", "exact_likelihood", "importance_sampling"})
    validation_name = "log-likelihood"
    result = ExactEvaluation

    def observation_name(self, model):
        return model.likelihood

    def initialize(self, model, dataset):
        pass

    def latent_dim(self, model) -> int:
        return 0

    def validation_score(self, model, x):
        return model.score_samples(x.flatten(1))

    def sample(self, model, n):
        return model.sample(n)[0]

    def draw(self, model, n):
        return model.sample(n)[0]

    def fit(self, model, job: FitJob):
        """Fit by EM (restarts, tolerance and iterations from the options), write
        ``best.safetensors`` and one ``metrics.jsonl`` record per EM iteration (its ``epoch``
        is the iteration; 0 is the initialisation, so the last is ``n_iter_``). Grey levels
        under dynamic binarization are binarized once (EM needs fixed data)."""
        from .training import BEST, METRICS, TrainResult, resolve_device

        device = resolve_device(job.train.device)
        x = job.values("train").flatten(1).to(device)
        model.seed = job.train.seed           # k-means++ seeding and restarts
        start = time.perf_counter()
        model.to(device).fit(x)
        seconds = time.perf_counter() - start
        history = [{"epoch": i, "train_bound": ll, "valid_score": None}
                   for i, ll in enumerate(model.history_)]
        valid = float(model.score_samples(job.values("valid").flatten(1).to(device)).mean())
        if history:                           # the fit's total time on the last record, as the
            history[-1]["valid_score"] = valid  # trainer's cumulative "seconds" ends there
            history[-1]["seconds"] = round(seconds, 3)
        if job.run_dir is not None:
            save_tensors(job.run_dir / BEST, model.state_dict(),
                         {"epoch": model.n_iter_, "valid_score": valid})
            atomic_write(job.run_dir / METRICS, "".join(json.dumps(r) + "\n" for r in history))
        job.log(f"EM: {model.n_iter_} iterations, converged {model.converged_}, train "
                f"log-likelihood {model.lower_bound_:.3f} nats, validation {valid:.3f} "
                f"({seconds:.1f} s)")
        return TrainResult(history=history, best_epoch=model.n_iter_, best_valid_score=valid,
                           epochs=model.n_iter_, stopped="EM converged" if model.converged_
                           else "EM reached em_max_iter", seconds=seconds)

    def evaluate(self, model, x, num_samples=None, *, progress=False, noise=None,
                 compile="auto", log=None):
        self._refuse_noise(noise)
        from .evaluation import model_device
        start = time.perf_counter()
        device = model_device(model)
        flat = x.flatten(1)
        ll = torch.cat([model.score_samples(flat[i:i + 2000].to(device)).cpu()
                        for i in range(0, flat.shape[0], 2000)])
        mean, se = mean_and_se(ll)
        return ExactEvaluation(log_likelihood=mean, log_likelihood_se=se,
                               bits_per_dim=self.bits_per_dim(model, mean, flat.shape[1]),
                               num_samples=None, num_examples=int(x.shape[0]),
                               seconds=round(time.perf_counter() - start, 3))

    def curves(self, ctx):
        from . import plotting
        return plotting.plot_em_history([r["train_bound"] for r in ctx.history])


def check_data(family: Family, options: Options, dataset: Dataset, requested: str) -> str:
    """Check ``dataset`` against the family's observation model and resolve the binarization
    (``"dynamic"`` or ``"none"``).

    Raises:
        DataError: values the observation model cannot take.
        ConfigError: a binarization that does not fit the observation model.
    """
    from .data import check_likelihood
    likelihood = family.likelihood(options)
    check_likelihood(dataset, likelihood)
    return resolve_binarization(requested, dataset, likelihood)


__all__ = ["CAPABILITIES", "FAMILIES", "BoundFamily", "EMFamily", "Family", "FigureContext",
           "FitJob", "GradientFamily", "LabelledBatch", "OwnObjectiveFamily", "check_data",
           "family_of", "family_of_options", "get_family", "monitor_subset", "register_family"]
