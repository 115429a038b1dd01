"""Conditional and semi-supervised VAEs: the class label y as an observed (or missing) variable.

``--model cvae``: the conditional VAE of Sohn, Lee & Yan (2015), "Learning structured output
representation using deep conditional generative models", NeurIPS, eq. (4)-(5), with x the
output and the label y the conditioning input:

    q_phi(z|x, y) = N(mu_phi(x, y), diag sigma_phi(x, y)^2),   p_theta(x|z, y),
    p(z) = N(0, I)    (the prior does not depend on y: the common simplification of their
                       p_theta(z|x) network, their Sec. 4.2 "baseline" variants do the same),

    log p(x|y) >= E_q(z|x,y)[log p(x|z, y)] - KL(q(z|x, y) || p(z))          (eq. 4),

and the importance-weighted bound L_k of log p(x|y) (eq. 5) for evaluation. y enters as a
one-hot vector concatenated to the encoder's input x and to the decoder's input z (MLPs).
Any bound estimator (ELBO, IWAE, ...) trains it: each step sees the model with the batch's
labels fixed (:class:`Conditioned`).

``--model m2``: the semi-supervised model M2 of Kingma, Rezende, Mohamed & Welling (2014),
"Semi-supervised learning with deep generative models", NeurIPS, eq. (6)-(9):

    p(y) = Cat(1/C),  p(z) = N(0, I),  p_theta(x|y, z);
    q_phi(z|x, y) = N(mu_phi(x, y), diag sigma_phi(x, y)^2),  q_phi(y|x) = Cat(pi_phi(x)).

With L and U written as bounds (the paper's -L and -U, in nats, higher is better):

    L(x, y) = E_q(z|x,y)[log p(x|y, z) + log p(y) + log p(z) - log q(z|x, y)]     (eq. 6)
    U(x)    = sum_y q(y|x) L(x, y) + H(q(y|x))                                  (eq. 7)
    J^alpha = sum_labelled L(x, y) + sum_unlabelled U(x)
              + alpha * sum_labelled log q(y|x)                                 (eq. 8-9)

maximised with alpha = 0.1 * N_train / N_labelled by default (the paper's "alpha = 0.1 * N",
stated beside eq. 9, per labelled example).
The sum over y in U is one batched pass over C copies of the batch, not a loop.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn
from torch.distributions import Distribution

from ..callbacks import Callback
from ..data import Dataset
from ..errors import ConfigError, DataError
from ..estimators.base import Estimator, EstimatorOptions, Losses, register_estimator
from ..evaluation import (
    DEFAULT_MAX_ROWS,
    BoundEvaluation,
    Evaluation,
    _batch_and_chunk,
    importance_sampling_terms,
    mean_and_se,
    model_device,
)
from ..families import (
    BoundFamily,
    FigureContext,
    FitJob,
    LabelledBatch,
    OwnObjectiveFamily,
    register_family,
    rows_within,
)
from ..nn import build_network
from ..objectives import elbo_terms
from ..observations import observation_for
from ..options import nonnegative, option, positive
from ..posteriors import build_posterior
from ..priors import build_prior
from .base import DecoderOptions, LatentVariableModel, resolve_options, shape_of

LABELLED_SEED = 0      # the generator that picks M2's labelled examples


# --------------------------------------------------------------------------- options
def _classes(name: str, value: int) -> None:
    if value != 0 and value < 2:
        raise ConfigError(f"{name} must be 0 (from the data's labels) or at least 2, got {value}")


def _alpha(name: str, value: float | None) -> None:
    if value is not None and (value < 0 or not math.isfinite(value)):
        raise ConfigError(f"{name} must be a non-negative number (or none: 0.1 * N_train / "
                          f"N_labelled), got {value}")


@dataclass
class CVAEOptions(DecoderOptions):
    latent_dim: int = option(16, "dimension of z", check=positive)
    num_classes: int = option(0, "cvae/m2: the number of classes C of y (0: from the data's "
                                 "labels and label names; filled in)", check=_classes)

    def check(self) -> None:
        if self.net == "conv":
            raise ConfigError("the conditional models concatenate one-hot y to an MLP's "
                              "inputs: use --net mlp (auto means mlp for them)")


@dataclass
class M2Options(CVAEOptions):
    labelled: int = option(100, "m2: labelled training examples, the same number per class "
                                "(chosen with a fixed seed); the rest are used unlabelled",
                           check=positive)
    labelled_batch_size: int = option(0, "m2: labelled examples per step, drawn with "
                                         "replacement from the labelled set (0: --batch-size)",
                                      check=nonnegative)


# --------------------------------------------------------------------------- the models
class Conditioned:
    """A conditional model with the labels fixed, seen as an unconditional one: what bound
    estimators and the importance-sampled evaluation take (``prior()``, ``encoder(x)``,
    ``decoder(z)``, ``decoder_mean(z)``).

    ``y: (B,)`` int64, one label per example of the batch ``x: (B, *event_shape)`` that
    ``encoder`` receives; ``decoder(z)`` takes ``z: (..., B, latent_dim)``.
    """

    def __init__(self, model: CVAE, y: torch.Tensor) -> None:
        self.model, self.y = model, y

    def prior(self) -> Distribution:
        return self.model.prior()

    def encoder(self, x: torch.Tensor) -> Distribution:
        return self.model.encode(x, self.y)

    def decoder(self, z: torch.Tensor) -> Distribution:
        return self.model.observation(self.model.decode_output(z, self.y))

    def decoder_mean(self, z: torch.Tensor) -> torch.Tensor:
        return self.model.observation.mean(self.model.decode_output(z, self.y))


class CVAE(LatentVariableModel):
    """The conditional VAE (Sohn et al. 2015): q(z|x, y), p(x|z, y), p(z) = N(0, I).

    Args:
        data_shape: the event shape of x (``(D,)`` or ``(C, H, W)``; the MLPs flatten it).
        options: :class:`CVAEOptions` (``num_classes`` >= 2 is required here: a run fills it
            in from the data); keyword arguments override its fields.

    Raises:
        ConfigError: an option out of range, or ``num_classes`` not given.
    """

    options_class: ClassVar[type] = CVAEOptions

    def __init__(self, data_shape: int | Sequence[int], options: CVAEOptions | None = None,
                 **overrides) -> None:
        super().__init__()
        opts = resolve_options(self.options_class, options, overrides)
        if opts.num_classes < 2:
            raise ConfigError("num_classes is filled in from the data's labels when a run is "
                              "trained; build the model with num_classes=C (C >= 2)")
        self.options = opts
        self.event_shape = shape_of(data_shape)
        self.latent_dim = int(opts.latent_dim)
        self.num_classes = int(opts.num_classes)
        d, c = math.prod(self.event_shape), self.num_classes
        self.posterior_head = build_posterior("gaussian", self.latent_dim)
        observation = observation_for(opts.likelihood, self.event_shape, opts)
        self.encoder_net = build_network("mlp", (d + c,), (self.posterior_head.num_inputs,),
                                         opts)
        self.decoder_net = build_network("mlp", (self.latent_dim + c,),
                                         observation.param_shape, opts, reverse=True)
        self.latent_prior = build_prior("standard", self.latent_dim)
        self.observation = observation

    def one_hot(self, y: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """``y: (...)`` int64 -> ``(..., C)`` one-hot vectors of ``dtype``."""
        return F.one_hot(y, self.num_classes).to(dtype)

    # ------------------------------------------------------------------ distributions
    def prior(self) -> Distribution:
        """p(z) = N(0, I), the same for every y; event shape ``(latent_dim,)``."""
        return self.latent_prior()

    def encode(self, x: torch.Tensor, y: torch.Tensor) -> Distribution:
        """q(z|x, y) for ``x: (B, *event_shape)`` and ``y: (B,)``: batch shape ``(B,)``."""
        flat = x.flatten(-len(self.event_shape)).to(torch.get_default_dtype())
        return self.posterior_head(self.encoder_net(torch.cat(
            [flat, self.one_hot(y, flat.dtype)], -1)))

    def decode_output(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The observation model's parameters of p(x|z, y) for ``z: (..., B, latent_dim)`` and
        ``y: (B,)`` (broadcast over the leading sample dimensions):
        ``(..., B, *observation.param_shape)``."""
        oh = self.one_hot(y, z.dtype).expand(*z.shape[:-1], self.num_classes)
        return self.decoder_net(torch.cat([z, oh], -1))

    def given(self, y: torch.Tensor) -> Conditioned:
        """The model with labels ``y: (B,)`` fixed (:class:`Conditioned`)."""
        return Conditioned(self, y)

    def encoder(self, x: torch.Tensor) -> Distribution:
        raise TypeError(f"a {type(self).__name__} encodes (x, y): use model.given(y).encoder(x)"
                        " or model.encode(x, y)")

    def decoder_output(self, z: torch.Tensor) -> torch.Tensor:
        raise TypeError(f"a {type(self).__name__} decodes (z, y): use model.given(y).decoder(z)"
                        " or model.decode_output(z, y)")

    def inference_parameters(self) -> Iterator[nn.Parameter]:
        yield from self.encoder_net.parameters()
        yield from self.posterior_head.parameters()

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        raise TypeError("a conditional model embeds (x, y): use model.encode(x, y).mean")

    # ------------------------------------------------------------------ sampling
    def labels_for(self, num: int, label: int | None) -> torch.Tensor:
        """``(num,)`` labels: all ``label``, or the classes in turn (0, 1, ..., C-1, 0, ...:
        p(y) uniform in equal shares) when ``label`` is ``None``."""
        device = self.decoder_net.output_bias().device
        if label is None:
            return torch.arange(num, device=device) % self.num_classes
        return torch.full((num,), int(label), device=device, dtype=torch.long)

    @torch.no_grad()
    def sample(self, num: int, label: int | None = None) -> torch.Tensor:
        """``num`` means E[x|z, y] with z ~ p(z) and y = ``label`` (or the classes in turn):
        ``(num, *event_shape)``."""
        y = self.labels_for(num, label)
        return self.given(y).decoder_mean(self.prior().sample((num,)))

    @torch.no_grad()
    def draw(self, num: int, label: int | None = None) -> torch.Tensor:
        """``num`` draws x ~ p(x|z, y), z ~ p(z), y as in :meth:`sample`:
        ``(num, *event_shape)``."""
        y = self.labels_for(num, label)
        return self.given(y).decoder(self.prior().sample((num,))).sample()


class M2(CVAE):
    """The semi-supervised model M2 (Kingma et al. 2014): :class:`CVAE`'s q(z|x, y) and
    p(x|y, z), a classifier q(y|x) (an MLP with the same ``hidden_sizes``) and p(y) uniform.

    The weight alpha of the classification term is the objective's (``--objective m2
    --alpha A``, :class:`SemiSupervisedOptions`).
    """

    options_class: ClassVar[type] = M2Options

    def __init__(self, data_shape: int | Sequence[int], options: M2Options | None = None,
                 **overrides) -> None:
        super().__init__(data_shape, options, **overrides)
        self.classifier_net = build_network("mlp", self.event_shape, (self.num_classes,),
                                            self.options)

    def inference_parameters(self) -> Iterator[nn.Parameter]:
        yield from super().inference_parameters()
        yield from self.classifier_net.parameters()

    def classifier_logits(self, x: torch.Tensor) -> torch.Tensor:
        """The logits of q(y|x) for ``x: (B, *event_shape)``: ``(B, C)``."""
        return self.classifier_net(x.to(torch.get_default_dtype()))

    def labelled_bound(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """L(x, y) (the paper's -L, eq. 6) with one reparameterized z and the closed-form KL:
        E_q[log p(x|y, z)] - KL(q(z|x, y) || p(z)) + log p(y), ``(B,)`` nats, for
        ``x: (B, *event_shape)``, ``y: (B,)``."""
        rec, kl = elbo_terms(self.given(y), x, 1, "analytic")
        return rec - kl - math.log(self.num_classes)

    def all_labels_bound(self, x: torch.Tensor) -> torch.Tensor:
        """L(x, y) for every class y at once: ``(C, B)`` nats (one batched pass over C copies
        of ``x: (B, *event_shape)``, row c with y = c)."""
        b, c = x.shape[0], self.num_classes
        xr = x.unsqueeze(0).expand(c, *x.shape).reshape(c * b, *x.shape[1:])
        yr = torch.arange(c, device=x.device).repeat_interleave(b)
        return self.labelled_bound(xr, yr).view(c, b)

    def unlabelled_bound(self, x: torch.Tensor) -> torch.Tensor:
        """U(x) = sum_y q(y|x) L(x, y) + H(q(y|x)) (the paper's -U, eq. 7), a lower bound on
        log p(x): ``(B,)`` nats."""
        log_q = F.log_softmax(self.classifier_logits(x), -1)          # (B, C)
        q = log_q.exp()
        entropy = -(q * log_q).sum(-1)
        return (q.t() * self.all_labels_bound(x)).sum(0) + entropy

    def semi_supervised_losses(self, x: torch.Tensor, x_labelled: torch.Tensor,
                               y_labelled: torch.Tensor, weight: float,
                               alpha: float) -> Losses:
        """One step of J^alpha (eq. 9) divided by the number of unlabelled examples N_u:
        ``mean_u U(x) + weight * mean_l [L(x, y) + alpha * log q(y|x)]`` with ``weight`` =
        N_l / N_u, an unbiased estimate of J^alpha / N_u from an unlabelled batch
        ``x: (B, ...)`` and a labelled sub-batch ``(B_l, ...)``, ``(B_l,)``. The reported
        bound is U of the unlabelled batch, ``(B,)`` nats."""
        u = self.unlabelled_bound(x)
        supervised = self.labelled_bound(x_labelled, y_labelled)
        if alpha:
            log_q = F.log_softmax(self.classifier_logits(x_labelled), -1)
            supervised = supervised + alpha * log_q.gather(1, y_labelled[:, None])[:, 0]
        return Losses(u.detach(), -(u.mean() + weight * supervised.mean()))

    def training_losses(self, x: torch.Tensor, alpha: float | None = None) -> Losses:
        """The unsupervised part alone, U(x) (``(B,)`` nats), for unlabelled data (``alpha``
        has nothing to weigh)."""
        u = self.unlabelled_bound(x)
        return Losses(u.detach(), -u.mean())

    def validation_score(self, x: torch.Tensor) -> torch.Tensor:
        return self.unlabelled_bound(x)


class _SemiSupervisedStep:
    """An M2 with one step's labelled sub-batch: its ``training_losses(x)`` is
    :meth:`M2.semi_supervised_losses` (what the ``m2`` estimator calls)."""

    def __init__(self, model: M2, batch: LabelledBatch) -> None:
        self.model, self.batch = model, batch

    def training_losses(self, x: torch.Tensor, alpha: float | None = None) -> Losses:
        b = self.batch
        if b.x_labelled is None:
            return self.model.training_losses(x)
        if alpha is None:
            raise ValueError("alpha is not resolved: M2Family.fit fills it in from the data")
        return self.model.semi_supervised_losses(x, b.x_labelled, b.y_labelled,
                                                 b.labelled_weight, alpha)


@dataclass
class SemiSupervisedOptions(EstimatorOptions):
    alpha: float | None = option(None, "m2: weight of the classification term alpha * log "
                                       "q(y|x) (Kingma et al. 2014, eq. 9); none: 0.1 * "
                                       "N_train / N_labelled", check=_alpha)


@register_estimator("m2", SemiSupervisedOptions, kind="m2")
class SemiSupervised(Estimator):
    """M2's objective J^alpha (Kingma et al. 2014, eq. 9): the bounds L (eq. 6) of a labelled
    sub-batch and U (eq. 7) of an unlabelled batch, one sample of z each, closed-form KL,
    plus alpha times the classification log-likelihood; the reported value is U. It calls
    ``model.training_losses(x, alpha=alpha)``."""

    def __init__(self, options: SemiSupervisedOptions | None = None, data_shape=None) -> None:
        super().__init__(options, data_shape)
        self.alpha = self.opts.alpha

    def forward(self, model, x: torch.Tensor) -> Losses:
        return model.training_losses(x, alpha=self.alpha)


# --------------------------------------------------------------------------- labels
def data_classes(family: str, dataset: Dataset) -> int:
    """The number of classes of ``dataset``'s labels (the length of ``label_names``, else the
    largest label + 1), checked for a family that needs labels.

    Raises:
        DataError: a split without labels, negative labels, or fewer than 2 classes.
    """
    found = []
    for split in ("train", "valid", "test"):
        y = getattr(dataset, f"{split}_labels")
        if y is None:
            raise DataError(
                f"model {family} needs class labels, and the {split} split of {dataset.name} "
                "has none: use labelled data (mnist, an .npz with 'labels' or "
                "'<split>_labels', a folder of class subfolders, a table with --label-column)")
        y = torch.as_tensor(y)
        if y.is_floating_point() or y.is_complex():
            if not bool((y == y.round()).all()):
                raise DataError(f"model {family} needs integer class labels; the {split} "
                                f"labels of {dataset.name} are not whole numbers")
        if y.numel():
            if int(y.min()) < 0:
                raise DataError(f"model {family} needs class labels 0..C-1; the {split} labels "
                                f"of {dataset.name} include {int(y.min())}")
            found.append(int(y.max()) + 1)
    names = dataset.label_names
    classes = max([len(names) if names else 0, *found])
    if classes < 2:
        raise DataError(f"model {family} needs at least 2 classes; {dataset.name} has "
                        f"{classes}")
    return classes


def balanced_labelled(labels: torch.Tensor, n: int, num_classes: int,
                      seed: int = LABELLED_SEED) -> torch.Tensor:
    """``n`` indices into ``labels: (N,)``, ``n / num_classes`` of each class, each class's
    drawn without replacement by a generator seeded with ``seed``; sorted, int64 ``(n,)``.

    Raises:
        ConfigError: ``n`` not a multiple of ``num_classes``, or ``n >= N`` (no unlabelled
            examples left).
        DataError: a class with fewer than ``n / num_classes`` examples.
    """
    labels = torch.as_tensor(labels).long().cpu()
    total = labels.shape[0]
    if n % num_classes:
        raise ConfigError(f"--labelled {n} must be a multiple of the {num_classes} classes "
                          f"(the labelled examples are balanced per class)")
    if n >= total:
        raise ConfigError(f"--labelled {n} leaves no unlabelled examples: the training split "
                          f"has {total}")
    per = n // num_classes
    g = torch.Generator().manual_seed(seed)
    out = []
    for c in range(num_classes):
        idx = (labels == c).nonzero().squeeze(1)
        if idx.numel() < per:
            raise DataError(f"--labelled {n} takes {per} examples of each of the {num_classes} "
                            f"classes, but class {c} has {idx.numel()} in the training split")
        out.append(idx[torch.randperm(idx.numel(), generator=g)[:per]])
    return torch.cat(out).sort().values


# --------------------------------------------------------------------------- evaluation
@dataclass(kw_only=True)
class ConditionalEvaluation(BoundEvaluation):
    """A conditional model's test metrics: the fields of
    :class:`~vaekit.evaluation.BoundEvaluation` for log p(x|y) (``log_likelihood``: L_k of
    Sohn et al. 2015, eq. 5; ``elbo``: eq. 4; ``kl``: KL(q(z|x, y) || p(z)); active units
    of E_q[z|x, y]), in nats per example."""

    kind: ClassVar[str] = "conditional-bound"

    def rows(self):
        return [(f"log p(x|y) (IWAE bound, k={self.num_samples})", self.log_likelihood,
                 self.log_likelihood_se),
                ("ELBO of log p(x|y)", self.elbo, self.elbo_se),
                ("  reconstruction E_q log p(x|z,y)", self.reconstruction,
                 self.reconstruction_se),
                ("  KL(q(z|x,y) || p(z))", self.kl, self.kl_se),
                *super().rows()[4:]]


@dataclass(kw_only=True)
class SemiSupervisedEvaluation(Evaluation):
    """M2's test metrics: ``log_likelihood``, the importance-weighted bound on log p(x) with
    y enumerated, log sum_y p(y) (1/k) sum_i p(x, z_i | y) / q(z_i|x, y), z_i ~ q(z|x, y)
    (k = ``num_samples`` per class; unbiased inside the log, so a lower bound, Burda et al.
    2016, eq. 8); ``elbo``, the bound U(x) of Kingma et al. (2014), eq. 7 (nats); and the
    classifier's ``accuracy`` and ``error`` (argmax q(y|x) against the labels, fractions,
    with standard errors)."""

    kind: ClassVar[str] = "semi-supervised"
    _DENSITIES: ClassVar[tuple[str, ...]] = ("log_likelihood", "elbo")
    log_likelihood: float
    log_likelihood_se: float
    elbo: float
    elbo_se: float
    accuracy: float
    accuracy_se: float
    error: float
    num_classes: int
    num_labelled: int | None = None

    def rows(self):
        from ..evaluation import _bits_row
        return [(f"log-likelihood (IWAE bound, y enumerated, k={self.num_samples})",
                 self.log_likelihood, self.log_likelihood_se),
                ("ELBO U(x) (Kingma et al. 2014, eq. 7)", self.elbo, self.elbo_se),
                *_bits_row(self),
                ("classification accuracy (argmax q(y|x))", self.accuracy, self.accuracy_se),
                ("classification error", self.error, self.accuracy_se)]

    def comparison(self):
        return {**super().comparison(), "test_elbo": self.elbo, "test_elbo_se": self.elbo_se,
                "test_log_likelihood": self.log_likelihood,
                "test_log_likelihood_se": self.log_likelihood_se}


def _need_labels(family: str, labels: torch.Tensor | None, x: torch.Tensor) -> torch.Tensor:
    if labels is None:
        raise ConfigError(f"a {family} is evaluated with the split's class labels "
                          "(labels=...)")
    labels = torch.as_tensor(labels).long()
    if labels.shape[0] != x.shape[0]:
        raise DataError(f"{labels.shape[0]} labels for {x.shape[0]} examples")
    return labels


@torch.no_grad()
def conditional_terms(model: CVAE, x: torch.Tensor, y: torch.Tensor, num_samples: int,
                      max_rows: int = DEFAULT_MAX_ROWS) -> dict[str, torch.Tensor]:
    """Per-example ``log_likelihood`` (L_k of log p(x|y)), ``elbo``, ``reconstruction`` and
    ``kl`` (each ``(N,)`` nats, CPU) of ``x: (N, *event_shape)`` with labels ``y: (N,)``,
    streamed over k as :func:`vaekit.evaluation.importance_sampling_terms` does."""
    device = model_device(model)
    b, c = _batch_and_chunk(x.shape[0], num_samples, max_rows, None)
    parts: dict[str, list[torch.Tensor]] = {}
    for i in range(0, x.shape[0], b):
        xb, yb = x[i:i + b].to(device), y[i:i + b].to(device)
        for k, v in importance_sampling_terms(model.given(yb), xb, num_samples, c).items():
            parts.setdefault(k, []).append(v.cpu())
    return {k: torch.cat(v) for k, v in parts.items()}


@torch.no_grad()
def enumerated_log_likelihood(model: CVAE, x: torch.Tensor, num_samples: int,
                              max_rows: int = DEFAULT_MAX_ROWS) -> torch.Tensor:
    """log sum_y p(y) Lhat_k(x|y) with p(y) = 1/C, ``(N,)`` nats (CPU): each class's
    importance-sampled estimate of p(x|y) (k samples of q(z|x, y)), summed over the C
    classes, one batched pass over C copies of each batch."""
    device = model_device(model)
    cls = model.num_classes
    b, c = _batch_and_chunk(x.shape[0], num_samples, max(1, max_rows // cls), None)
    out = []
    for i in range(0, x.shape[0], b):
        xb = x[i:i + b].to(device)
        n = xb.shape[0]
        xr = xb.unsqueeze(0).expand(cls, *xb.shape).reshape(cls * n, *xb.shape[1:])
        yr = torch.arange(cls, device=device).repeat_interleave(n)
        ll = importance_sampling_terms(model.given(yr), xr, num_samples, c)["log_likelihood"]
        out.append((ll.view(cls, n).logsumexp(0) - math.log(cls)).cpu())
    return torch.cat(out)


class ValidAccuracy(Callback):
    """Records ``valid_accuracy``, the fraction of validation examples whose argmax q(y|x)
    is their label, after every epoch (no random draws: the training is unchanged)."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self.x, self.y = x, y

    @torch.no_grad()
    def on_epoch_end(self, trainer, record: dict) -> None:
        model = trainer.model
        was_training = model.training
        model.eval()
        try:
            x, y = self.x.to(trainer.device), self.y.to(trainer.device)
            hits = torch.zeros((), device=trainer.device, dtype=torch.long)
            for i in range(0, x.shape[0], 2000):
                hits += (model.classifier_logits(x[i:i + 2000]).argmax(-1)
                         == y[i:i + 2000]).sum()
            record["valid_accuracy"] = float(hits) / max(1, x.shape[0])
        finally:
            model.train(was_training)


# --------------------------------------------------------------------------- the families
class _LabelledFamilyMixin:
    """What the conditional families share: the classes from the data, sampling by class,
    a figure of samples per class."""

    name: str

    def options_for_data(self, options, dataset):
        options = super().options_for_data(options, dataset)
        classes = data_classes(self.name, dataset)
        if options.num_classes and options.num_classes < classes:
            raise DataError(f"num_classes {options.num_classes} is too few for the labels of "
                            f"{dataset.name} ({classes} classes)")
        return options.replace(num_classes=options.num_classes or classes)

    def num_classes(self, model) -> int:
        return int(model.num_classes)

    def sample(self, model, n, label=None):
        return model.sample(n, label)

    def draw(self, model, n, label=None):
        return model.draw(n, label)

    def extra_figures(self, ctx: FigureContext) -> list[tuple[str, object]]:
        """``samples-by-class.png``: one row of E[x|z, y] per class (z ~ p(z), seed
        ``ctx.seed``), for image data."""
        from .. import plotting
        shape = ctx.dataset.figure_shape
        if shape is None:
            return []
        model, per = ctx.model, 10
        device = model_device(model)
        y = torch.arange(model.num_classes, device=device).repeat_interleave(per)
        with torch.no_grad(), torch.random.fork_rng(
                devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(ctx.seed)
            images = model.given(y).decoder_mean(model.prior().sample((y.shape[0],))).cpu()
        names = ctx.dataset.label_names
        title = ("E[x|z, y], z ~ p(z): one row per class"
                 + (f" ({', '.join(names[:10])}{', ...' if len(names) > 10 else ''})"
                    if names else " (0, 1, ...)"))
        return [("samples-by-class.png", plotting.plot_samples(images, shape, ncols=per,
                                                               title=title))]


@register_family("cvae", CVAEOptions)
class CVAEFamily(_LabelledFamilyMixin, BoundFamily):
    """``--model cvae``: the conditional VAE, trained with any bound estimator on
    log p(x|y); evaluated by L_k of log p(x|y)."""

    model = CVAE
    capabilities = frozenset({"sample", "bound", "labels"})
    validation_name = "ELBO of log p(x|y)"
    result = ConditionalEvaluation

    def batch_losses(self, estimator, model, batch: LabelledBatch) -> Losses:
        return estimator(model.given(batch.y), batch.x)

    def validation_score(self, model, x, y=None):
        """The single-sample ELBO of log p(x|y) with the closed-form KL, ``(B,)`` nats."""
        from ..objectives import elbo
        if y is None:
            raise ConfigError("a cvae is validated with the labels of the validation split")
        return elbo(model.given(y), x, 1)

    def evaluate(self, model, x, num_samples=5000, *, progress=False, noise=None,
                 compile="auto", log=None, labels=None, **options):
        """L_k, the ELBO and its terms of log p(x|y) on ``x: (N, *event_shape)`` with the
        split's ``labels: (N,)`` (:class:`ConditionalEvaluation`)."""
        self._refuse_noise(noise)
        y = _need_labels(self.name, labels, x)
        start = time.perf_counter()
        was_training = model.training
        model.eval()
        try:
            t = conditional_terms(model, x, y, num_samples,
                                  options.get("max_rows",
                                              rows_within(model.observation.param_shape)))
            device = model_device(model)
            mu = torch.cat([model.encode(x[i:i + 1000].to(device), y[i:i + 1000].to(device))
                            .mean.cpu() for i in range(0, x.shape[0], 1000)])
        finally:
            model.train(was_training)
        values = {}
        for key in ("log_likelihood", "elbo", "reconstruction", "kl"):
            values[key], values[f"{key}_se"] = mean_and_se(t[key])
        r = ConditionalEvaluation(**values, active_units=int((mu.var(0, unbiased=False)
                                                              > 0.01).sum()),
                                  latent_dim=model.latent_dim, num_samples=int(num_samples),
                                  num_examples=int(x.shape[0]),
                                  seconds=round(time.perf_counter() - start, 3))
        r.bits_per_dim = self.bits_per_dim(model, r.log_likelihood, math.prod(x.shape[1:]))
        return r


@register_family("m2", M2Options)
class M2Family(_LabelledFamilyMixin, OwnObjectiveFamily):
    """``--model m2``: semi-supervised learning with M2 on ``--labelled N`` labelled training
    examples (balanced per class, fixed seed) and the rest unlabelled."""

    model = M2
    objectives = ("m2",)
    capabilities = frozenset({"sample", "bound", "labels"})
    validation_name = "U(x) (ELBO of log p(x))"
    result = SemiSupervisedEvaluation

    def options_for_data(self, options, dataset):
        """:class:`_LabelledFamilyMixin`'s, then ``--labelled`` checked against the training
        labels (:func:`balanced_labelled`)."""
        options = super().options_for_data(options, dataset)
        balanced_labelled(dataset.train_labels, options.labelled, options.num_classes)
        return options

    def trainer_data(self, job: FitJob, model: nn.Module) -> dict:
        """The unlabelled training examples as ``train_x``, the labelled ones as a
        :class:`~vaekit.training.LabelledSet` (weight N_l / N_u), and a
        :class:`ValidAccuracy` callback when the validation split has labels."""
        from ..training import LabelledSet
        ds, opts = job.dataset, model.options
        raw, y = ds.raw("train"), job.labels("train")
        chosen = balanced_labelled(y, opts.labelled, model.num_classes)
        mask = torch.ones(raw.shape[0], dtype=torch.bool)
        mask[chosen] = False
        n_l, n_u = chosen.numel(), int(mask.sum())
        data = {"train_x": raw[mask], "valid_x": job.values("valid"),
                "labelled": LabelledSet(raw[chosen], y[chosen],
                                        opts.labelled_batch_size or job.train.batch_size,
                                        n_l / n_u)}
        if ds.valid_labels is not None:
            data["callbacks"] = [ValidAccuracy(data["valid_x"], job.labels("valid"))]
        return data

    def fit(self, model, job: FitJob):
        """Fit with the objective's ``alpha``, by default 0.1 * N_train / N_labelled (Kingma
        et al. 2014, beside eq. 9: "alpha = 0.1 * N")."""
        opts = job.estimator if isinstance(job.estimator, SemiSupervisedOptions) \
            else SemiSupervisedOptions()
        if opts.alpha is None:
            n = int(job.dataset.raw("train").shape[0])
            opts = opts.replace(alpha=0.1 * n / model.options.labelled)
            job.log(f"m2: alpha = 0.1 * {n} / {model.options.labelled} = {opts.alpha:g}, "
                    f"{model.options.labelled} labelled and "
                    f"{n - model.options.labelled} unlabelled training examples")
        return super().fit(model, dataclasses.replace(job, estimator=opts))

    def batch_losses(self, estimator, model, batch: LabelledBatch) -> Losses:
        return estimator(_SemiSupervisedStep(model, batch), batch.x)

    def validation_score(self, model, x):
        """U(x), ``(B,)`` nats (no labels: model selection uses no more labels than
        training)."""
        return model.unlabelled_bound(x)

    def evaluate(self, model, x, num_samples=5000, *, progress=False, noise=None,
                 compile="auto", log=None, labels=None, **options):
        """:class:`SemiSupervisedEvaluation` of ``x: (N, *event_shape)`` with the split's
        ``labels: (N,)``."""
        self._refuse_noise(noise)
        y = _need_labels(self.name, labels, x)
        start = time.perf_counter()
        device = model_device(model)
        was_training = model.training
        model.eval()
        try:
            ll = enumerated_log_likelihood(model, x, num_samples,
                                           options.get("max_rows",
                                                       rows_within(model.observation
                                                                   .param_shape)))
            u, hits = [], []
            with torch.no_grad():
                for i in range(0, x.shape[0], 500):
                    xb = x[i:i + 500].to(device)
                    u.append(model.unlabelled_bound(xb).cpu())
                    hits.append((model.classifier_logits(xb).argmax(-1).cpu()
                                 == y[i:i + 500]).double())
        finally:
            model.train(was_training)
        values = {}
        values["log_likelihood"], values["log_likelihood_se"] = mean_and_se(ll)
        values["elbo"], values["elbo_se"] = mean_and_se(torch.cat(u))
        acc, acc_se = mean_and_se(torch.cat(hits))
        r = SemiSupervisedEvaluation(**values, accuracy=acc, accuracy_se=acc_se,
                                     error=1.0 - acc, num_classes=model.num_classes,
                                     num_labelled=int(model.options.labelled),
                                     latent_dim=model.latent_dim,
                                     num_samples=int(num_samples),
                                     num_examples=int(x.shape[0]),
                                     seconds=round(time.perf_counter() - start, 3))
        r.bits_per_dim = self.bits_per_dim(model, r.log_likelihood, math.prod(x.shape[1:]))
        return r


__all__ = ["CVAE", "M2", "CVAEFamily", "CVAEOptions", "ConditionalEvaluation", "Conditioned",
           "M2Family", "M2Options", "SemiSupervisedEvaluation", "balanced_labelled",
           "conditional_terms", "data_classes", "enumerated_log_likelihood"]
