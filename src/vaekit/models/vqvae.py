"""VQ-VAE: the vector-quantised variational autoencoder (van den Oord, Vinyals & Kavukcuoglu
2017, "Neural Discrete Representation Learning").

Notation (shapes in brackets; B examples, D observed values, M latent positions, d embedding
dimension, K codebook entries):

* encoder:    z_e(x) = f_phi(x) reshaped to ``(B, M, d)`` (a network x -> M*d);
* quantiser:  c_m(x) = argmin_k ||z_e,m(x) - e_k||^2 (paper eq. 1), z_q,m(x) = e_{c_m(x)}
              (eq. 2), with an EMA codebook (:mod:`vaekit.models.quantizer`);
* decoder:    p_theta(x | z_q) = Bernoulli(sigmoid(g_theta(z_q)))  or  N(g_theta(z_q), s^2 I)
              with fixed s = ``decoder_std`` (a network M*d -> x);
* gradients:  the straight-through estimator z_e + sg(z_q - z_e) (Sec. 3.2, eq. 3): the decoder
              sees z_q, and dL/dz_q is copied unchanged to z_e;
* loss:       -log p(x | z_q) + beta ||z_e - sg(z_q)||^2 per example (eq. 3 without the codebook
              term, which the exponential moving averages replace);
* prior:      p(c) fitted after training on the codes of the training set
              (:mod:`vaekit.models.code_priors`), written into both checkpoints; before
              fitting it is uniform, the paper's training-time prior.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import ClassVar, NamedTuple

import torch
from torch import nn
from torch.distributions import Distribution

from ..estimators.base import Losses
from ..evaluation import Evaluation, mean_and_se, model_device
from ..families import FitJob, OwnObjectiveFamily, register_family
from ..nn import build_network
from ..observations import GaussianObservation, observation_for
from ..options import interval, nonnegative, one_of, option, positive
from .base import LegacyStateMixin, NetworkOptions, resolve_options, shape_of
from .code_priors import CODE_PRIORS
from .quantizer import VectorQuantizerEMA

PRIORS = ("categorical", "autoregressive")


@dataclass
class VQVAEOptions(NetworkOptions):
    likelihood: str = option("bernoulli", "decoder p(x|z_q): bernoulli | gaussian (fixed "
                                          "sigma = decoder_std)",
                             check=one_of(("bernoulli", "gaussian")))
    decoder_std: float = option(0.1, "Gaussian decoder: the fixed standard deviation sigma",
                                check=positive)
    num_latents: int = option(16, "number of code positions M", check=positive)
    embedding_dim: int = option(16, "dimension of each codebook vector", check=positive)
    codebook_size: int = option(128, "number of codebook vectors", check=positive)
    commitment_cost: float = option(0.25, "weight beta of the commitment loss",
                                    check=nonnegative)
    ema_decay: float = option(0.99, "decay of the codebook's moving averages",
                              check=interval(0, 1, "[)"))
    dead_code_threshold: float = option(1.0, "restart codes whose EMA cluster size falls "
                                             "below this (0: never)", check=nonnegative)
    code_prior: str = option("categorical", "prior over codes fitted after training: "
                                            "categorical | autoregressive",
                             check=one_of(CODE_PRIORS.names))
    prior_hidden_size: int = option(256, "hidden width of the autoregressive code prior",
                                    check=positive)


class VQVAEOutput(NamedTuple):
    """What :meth:`VQVAE.forward` returns for ``x: (B, *event_shape)``."""

    z_e: torch.Tensor         # (B, M, d) encoder output
    z_q: torch.Tensor         # (B, M, d) straight-through: value e_c, gradient copied to z_e
    codes: torch.Tensor       # (B, M) int64 indices into the codebook
    log_px: torch.Tensor      # (B,) log p(x | z_q) in nats
    commitment: torch.Tensor  # (B,) beta * ||z_e - sg(z_q)||^2, summed over M and d


class VQVAE(LegacyStateMixin, nn.Module):
    """A VQ-VAE with an EMA codebook.

    Args:
        data_dim: the event shape of x (``784`` or ``(1, 28, 28)``).
        options: :class:`VQVAEOptions`; keyword arguments override its fields (and
            ``prior`` is another name of ``code_prior``): ``num_latents`` M,
            ``embedding_dim`` d, ``codebook_size`` K, ``hidden_sizes`` (encoder widths; the
            decoder uses them in reverse), ``activation``, ``likelihood``, ``decoder_std``,
            ``commitment_cost`` (beta of beta ||z_e - sg(z_q)||^2, paper eq. 3; 0.25 in the
            paper), ``ema_decay`` (Appendix A.1; 0.99), ``dead_code_threshold``,
            ``code_prior``, ``prior_hidden_size``.
        laplace_eps: epsilon of the Laplace smoothing of the cluster sizes.
        seed: when given, the networks' weights and the codebook are initialised from
            ``torch.manual_seed(seed)`` inside :func:`torch.random.fork_rng` (the global RNG
            is left as it was); ``None`` draws them from the global RNG.

    Raises:
        ConfigError: an option out of range or an unknown choice.
    """

    # vaekit 0.1 kept the codebook, the code priors and sigma at the top level
    _legacy_keys = {"codebook": "quantizer.codebook",
                    "ema_cluster_size": "quantizer.ema_cluster_size",
                    "ema_embed_sum": "quantizer.ema_embed_sum",
                    "prior_log_probs": "code_prior.log_probs", "ar_prior.": "code_prior.",
                    "decoder_log_std": None}

    def __init__(self, data_dim: int | Sequence[int], options: VQVAEOptions | None = None, *,
                 laplace_eps: float = 1e-5, seed: int | None = None, **overrides) -> None:
        super().__init__()
        if "prior" in overrides:
            overrides["code_prior"] = overrides.pop("prior")
        opts = resolve_options(VQVAEOptions, options, overrides)
        self.options = opts
        self.event_shape = shape_of(data_dim)
        self.num_latents = self.latent_dim = int(opts.num_latents)
        self.embedding_dim = int(opts.embedding_dim)
        self.codebook_size = int(opts.codebook_size)
        self.commitment_cost = float(opts.commitment_cost)
        self.prior_type = opts.code_prior
        M, d, K = self.num_latents, self.embedding_dim, self.codebook_size
        with torch.random.fork_rng(devices=[], enabled=seed is not None):
            if seed is not None:
                torch.manual_seed(seed)
            ev = self.event_shape
            self.encoder_net = build_network(opts.net, ev, (M * d,), opts, event_shape=ev)
            self.decoder_net = build_network(opts.net, (M * d,), ev, opts, reverse=True,
                                             event_shape=ev)
            self.quantizer = VectorQuantizerEMA(K, d, opts.ema_decay, opts.dead_code_threshold,
                                                laplace_eps)
            self.code_prior = CODE_PRIORS.get(opts.code_prior)(
                M, K, hidden_size=opts.prior_hidden_size)
        self.observation = (GaussianObservation(self.event_shape, opts.decoder_std)
                            if opts.likelihood == "gaussian"
                            else observation_for(opts.likelihood, self.event_shape))
        self._register_legacy_hook()

    @classmethod
    def from_config(cls, config, data_dim: int | Sequence[int]) -> VQVAE:
        """Build from any object with attributes named like :class:`VQVAEOptions` fields (and
        ``prior`` for ``code_prior``, ``seed``); fields it lacks take their defaults."""
        names = [*VQVAEOptions.field_names(), "prior", "seed"]
        kwargs = {n: getattr(config, n) for n in names if getattr(config, n, None) is not None}
        return cls(data_dim, **kwargs)

    def extra_repr(self) -> str:
        return (f"M={self.num_latents}, d={self.embedding_dim}, K={self.codebook_size}, "
                f"likelihood={self.likelihood}, beta={self.commitment_cost}, "
                f"prior={self.prior_type}")

    # ------------------------------------------------------------------ names kept from 0.1
    likelihood = property(lambda self: self.observation.name)
    decoder_log_std = property(lambda self: self.observation.log_std)
    codebook = property(lambda self: self.quantizer.codebook)
    ema_cluster_size = property(lambda self: self.quantizer.ema_cluster_size)
    ema_embed_sum = property(lambda self: self.quantizer.ema_embed_sum)
    ema_decay = property(lambda self: self.quantizer.ema_decay)
    prior_log_probs = property(lambda self: self.code_prior.log_probs)
    ar_prior = property(lambda self: self.code_prior if self.prior_type == "autoregressive"
                        else None)

    # ------------------------------------------------------------------ parameter groups
    def inference_parameters(self) -> Iterator[nn.Parameter]:
        """phi: the encoder's parameters."""
        return self.encoder_net.parameters()

    def generative_parameters(self) -> Iterator[nn.Parameter]:
        """theta: the decoder's (and the autoregressive prior's, which :meth:`training_losses`
        leaves without gradient; :meth:`fit_prior` trains it). The codebook is a buffer."""
        ids = {id(p) for p in self.inference_parameters()}
        return (p for p in self.parameters() if id(p) not in ids)

    # ------------------------------------------------------------------ encoder and quantiser
    def _check_x(self, x: torch.Tensor) -> None:
        if tuple(x.shape[1:]) != self.event_shape:
            raise ValueError(f"x must have shape (B, {', '.join(map(str, self.event_shape))}), "
                             f"got {tuple(x.shape)}")

    def encode_continuous(self, x: torch.Tensor) -> torch.Tensor:
        """z_e(x), the encoder output before quantisation, for ``x: (B, *event_shape)``:
        ``(B, M, d)``.

        Raises:
            ValueError: ``x`` does not have the model's event shape.
        """
        self._check_x(x)
        return self.encoder_net(x).view(x.shape[0], self.num_latents, self.embedding_dim)

    def quantize(self, z_e: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Nearest-codebook quantisation of ``z_e: (..., d)`` (see
        :meth:`VectorQuantizerEMA.quantize`): ``(z_q, codes)``."""
        return self.quantizer.quantize(z_e)

    # ------------------------------------------------------------------ decoder
    def decoder(self, z_q: torch.Tensor) -> Distribution:
        """p(x | z_q) for flattened quantised vectors ``z_q: (..., M*d)``: batch shape
        ``z_q.shape[:-1]``, event shape ``event_shape``; Bernoulli(logits) or N(mean, s^2 I)."""
        return self.observation(self.decoder_net(z_q))

    def decode_mean(self, z_q: torch.Tensor) -> torch.Tensor:
        """E[x | z_q] for ``z_q: (..., M*d)``: ``(..., *event_shape)``, sigmoid of the logits
        (Bernoulli) or the Gaussian mean."""
        return self.observation.mean(self.decoder_net(z_q))

    decoder_mean = decode_mean      # the name the rest of vaekit (sampling, plots) calls

    def init_decoder_bias(self, train_mean: torch.Tensor,
                          train_sd: torch.Tensor | None = None) -> None:
        """Start the decoder at the training data (per-value mean and standard deviation):
        the logit of the mean (Bernoulli, as the IWAE code does) or the mean (Gaussian); see
        :meth:`vaekit.models.base.LatentVariableModel.init_decoder_bias`."""
        self.observation.init_bias(self.decoder_net.output_bias(), train_mean, train_sd)

    def forward(self, x: torch.Tensor, update: bool | None = None) -> VQVAEOutput:
        """Encode, quantise, decode ``x: (B, *event_shape)``; see :class:`VQVAEOutput`.

        The decoder receives the straight-through vectors z_e + sg(z_q - z_e) (paper eq. 3), so
        the gradient of ``log_px`` with respect to z_e equals the one with respect to z_q.
        ``commitment`` = beta ||z_e - sg(z_q)||^2 summed over the M*d coordinates.

        Args:
            update: run the EMA codebook update and dead-code restarts after quantising
                (the outputs use the codebook from before the update). ``None``: in training
                mode only.

        Raises:
            ValueError: ``x`` does not have the model's event shape.
        """
        z_e = self.encode_continuous(x)                                   # (B, M, d)
        z_q, codes = self.quantize(z_e)                                    # (B, M, d), (B, M)
        if update is None:
            update = self.training
        if update:
            self.quantizer.update(z_e.detach().reshape(-1, self.embedding_dim),
                                  codes.reshape(-1))
        commitment = self.commitment_cost * (z_e - z_q).pow(2).sum((1, 2))   # (B,)
        z_st = z_e + (z_q - z_e).detach()
        log_px = self.decoder(z_st.flatten(1)).log_prob(x)                 # (B,)
        return VQVAEOutput(z_e, z_st, codes, log_px, commitment)

    def training_losses(self, x: torch.Tensor) -> Losses:
        """One mini-batch ``x: (B, *event_shape)`` of VQ-VAE training (updates the codebook in
        training mode).

        Returns:
            :class:`~vaekit.estimators.base.Losses` with ``bound`` = log p(x | z_q(x)) per
            example ``(B,)``, nats, detached -- the reconstruction log-likelihood, *not* a bound
            on log p(x) during training (see :meth:`log_likelihood_bound` for one) -- and
            ``loss`` = mean_b [-log p(x_b | z_q) + beta ||z_e - sg(z_q)||^2].

        Raises:
            ValueError: ``x`` does not have the model's event shape.
        """
        out = self(x)
        return Losses(bound=out.log_px.detach(), loss=(out.commitment - out.log_px).mean())

    @torch.no_grad()
    def validation_score(self, x: torch.Tensor) -> torch.Tensor:
        """log p(x | z_q(x)) in nats for ``x: (B, *event_shape)``: ``(B,)``. Updates nothing,
        in any mode.

        Raises:
            ValueError: ``x`` does not have the model's event shape.
        """
        return self(x, update=False).log_px

    # ------------------------------------------------------------------ codes and embeddings
    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """The code indices c(x) of ``x: (B, *event_shape)``: ``(B, M)`` int64."""
        return self.quantize(self.encode_continuous(x))[1]

    @torch.no_grad()
    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """The quantised vectors z_q(x), flattened: ``(B, M*d)``. Updates nothing."""
        return self.quantize(self.encode_continuous(x))[0].flatten(1)

    def codes_to_embedding(self, codes: torch.Tensor) -> torch.Tensor:
        """e_codes flattened, for ``codes: (B, M)``: ``(B, M*d)``, the decoder's input."""
        return self.codebook[codes].flatten(-2)

    @torch.no_grad()
    def codebook_stats(self, x: torch.Tensor, batch_size: int = 1000) -> dict:
        """How the codes of ``x: (N, *event_shape)`` use the codebook (one sync at the end).

        Returns:
            ``{"usage": fraction of the K codes used at least once (float),
            "perplexity": exp(-sum_k p_k log p_k) with p_k the frequency of code k over all
            N*M positions (float, 1..K), "counts": (K,) int64 CPU tensor}``.
        """
        counts = torch.zeros(self.codebook_size, dtype=torch.long, device=self.codebook.device)
        for i in range(0, x.shape[0], batch_size):
            counts += self.quantizer.usage(self.encode(x[i:i + batch_size].to(
                self.codebook.device)))
        counts = counts.cpu()
        p = counts.double() / counts.sum().clamp_min(1)
        entropy = -torch.xlogy(p, p).sum()
        return {"usage": float((counts > 0).double().mean()),
                "perplexity": float(entropy.exp()), "counts": counts}

    # ------------------------------------------------------------------ prior over codes
    def fit_prior(self, codes: torch.Tensor, steps: int = 2000, batch_size: int = 256,
                  lr: float = 1e-3, weight_decay: float = 0.0, seed: int = 0) -> VQVAE:
        """Fit p(c) to the codes of the training set, ``codes: (N, M)`` int64 in [0, K).

        ``categorical``: an independent categorical per position with add-one smoothing,
        p(c_m = k) = (#{n: c_nm = k} + 1) / (N + K), stored in ``prior_log_probs`` ``(M, K)``
        (the other arguments are ignored). ``autoregressive``: the MADE prior is trained by
        Adam (``steps`` steps of ``batch_size`` codes drawn with replacement by a generator
        seeded with ``seed``; :func:`vaekit.fitting.maximize_log_likelihood`) to maximise mean
        log p(c); the categorical buffer is fitted too.

        Returns:
            ``self``.

        Raises:
            ValueError: ``codes`` is not ``(N, M)`` with N >= 1.
        """
        if codes.dim() != 2 or codes.shape[1] != self.num_latents or codes.shape[0] < 1:
            raise ValueError(f"codes must have shape (N, {self.num_latents}) with N >= 1, "
                             f"got {tuple(codes.shape)}")
        codes = codes.to(self.prior_log_probs.device, torch.long)
        self.code_prior.fit(codes, steps=steps, batch_size=batch_size, lr=lr,
                            weight_decay=weight_decay, seed=seed)
        return self

    def prior_log_prob(self, codes: torch.Tensor) -> torch.Tensor:
        """log p(c) in nats under the prior (uniform, -M log K, until :meth:`fit_prior`) for
        ``codes: (B, M)``: ``(B,)``.

        Raises:
            ValueError: ``codes`` is not ``(B, M)``.
        """
        if codes.dim() != 2 or codes.shape[1] != self.num_latents:
            raise ValueError(f"codes must have shape (B, {self.num_latents}), "
                             f"got {tuple(codes.shape)}")
        return self.code_prior.log_prob(codes)

    @torch.no_grad()
    def sample_codes(self, n: int, seed: int | None = None) -> torch.Tensor:
        """``n`` draws c ~ p(c): ``(n, M)`` int64. ``seed`` seeds a generator on the model's
        device (``None``: the global RNG)."""
        device = self.codebook.device
        g = None if seed is None else torch.Generator(device=device).manual_seed(seed)
        return self.code_prior.sample(n, generator=g)

    @torch.no_grad()
    def sample(self, n: int, seed: int | None = None) -> torch.Tensor:
        """``n`` images E[x | z_q = e_c] with c ~ p(c): ``(n, *event_shape)``."""
        return self.decode_mean(self.codes_to_embedding(self.sample_codes(n, seed)))

    @torch.no_grad()
    def draw(self, n: int, seed: int | None = None) -> torch.Tensor:
        """``n`` draws x ~ p(x | z_q = e_c) with c ~ p(c): ``(n, *event_shape)``."""
        return self.decoder(self.codes_to_embedding(self.sample_codes(n, seed))).sample()

    @torch.no_grad()
    def log_likelihood_bound(self, x: torch.Tensor) -> torch.Tensor:
        """A lower bound on log p(x) in nats for ``x: (B, *event_shape)``: ``(B,)``. Updates
        nothing.

        The generative model is p(x) = sum_c p(c) p(x | z_q = e_c) with the current codebook
        and prior. With the paper's deterministic one-hot posterior q(c | x) = 1[c = c(x)]
        (Sec. 3.2), H[q] = 0 and KL(q || p(c)) = -log p(c(x)), so the ELBO is
        E_q[log p(x | c)] - KL(q || p(c)) = log p(x | z_q(x)) + log p(c(x)) <= log p(x).
        (For a uniform prior, the paper's training-time one, the KL is the constant M log K.)
        For binary x and a Bernoulli decoder it is <= 0; for a Gaussian decoder it is a
        density bound and may be positive.

        Raises:
            ValueError: ``x`` does not have the model's event shape.
        """
        out = self(x, update=False)
        return out.log_px + self.prior_log_prob(out.codes)


# --------------------------------------------------------------------------- the family
@dataclass(kw_only=True)
class VQEvaluation(Evaluation):
    """VQ-VAEs: ``log_likelihood_bound`` (:meth:`VQVAE.log_likelihood_bound`),
    ``reconstruction`` (log p(x | z_q(x))), ``log_prior`` (log p(c(x))), and
    ``codebook_usage``, ``codebook_perplexity`` (:meth:`VQVAE.codebook_stats`)."""

    kind: ClassVar[str] = "vq"
    _DENSITIES: ClassVar[tuple[str, ...]] = ("log_likelihood_bound", "reconstruction")
    log_likelihood_bound: float
    log_likelihood_bound_se: float
    reconstruction: float
    reconstruction_se: float
    log_prior: float
    log_prior_se: float
    codebook_usage: float
    codebook_perplexity: float


    def rows(self):
        bits = ([("bits/dim (from log-likelihood)", f"{self.bits_per_dim:.4f}", None)]
                if self.bits_per_dim is not None else [])
        return [("log-likelihood lower bound", self.log_likelihood_bound,
                 self.log_likelihood_bound_se),
                ("  reconstruction log p(x|z_q)", self.reconstruction, self.reconstruction_se),
                ("  log prior of the codes log p(c)", self.log_prior, self.log_prior_se), *bits,
                ("codebook usage", f"{self.codebook_usage:.3f}", None),
                ("codebook perplexity", f"{self.codebook_perplexity:.3f}", None)]

    def comparison(self):
        # The VQ-VAE's bound log p(x|z_q(x)) + log p(c(x)) is the ELBO of a one-hot q(c|x).
        return {**super().comparison(), "test_elbo": self.log_likelihood_bound,
                "test_elbo_se": self.log_likelihood_bound_se,
                "test_reconstruction_error": -self.reconstruction,
                "test_reconstruction_error_se": self.reconstruction_se}


@register_family("vqvae", VQVAEOptions)
class VQVAEFamily(OwnObjectiveFamily):
    """``--model vqvae``: trained on its own loss (``vq``); the prior over codes is fitted
    after training, on the training set's codes, into both checkpoints."""

    model = VQVAE
    objectives = ("vq",)
    capabilities = frozenset({"sample", "embed"})
    validation_name = "log p(x|z_q)"
    result = VQEvaluation

    @torch.no_grad()
    def fit_code_prior(self, model: VQVAE, x: torch.Tensor, batch_size: int = 2000) -> None:
        """Fit the model's code prior to the codes of ``x`` (the training values)."""
        was = model.training
        model.eval()
        device = model_device(model)
        model.fit_prior(torch.cat([model.encode(xb.to(device)) for xb in x.split(batch_size)]))
        model.train(was)

    def after_fit(self, model, job: FitJob, trainer) -> None:
        """The prior over codes of the best weights (in ``model``) and of the last ones (in
        ``last.safetensors``), each written into its checkpoint."""
        from ..io import load_tensors, save_tensors
        from ..training import BEST, LAST

        x = job.values("train")
        self.fit_code_prior(model, x)
        run = job.run_dir
        if run is None:
            return
        if (run / BEST).is_file():
            _, meta = load_tensors(run / BEST)
            save_tensors(run / BEST, model.state_dict(), meta)
        if (run / LAST).is_file():
            tensors, meta = load_tensors(run / LAST)
            last = copy.deepcopy(model)
            last.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
            self.fit_code_prior(last, x)
            tensors.update({f"model.{k}": v for k, v in last.state_dict().items()})
            save_tensors(run / LAST, tensors, meta)

    @torch.no_grad()
    def evaluate(self, model, x, num_samples=None, *, progress=False, noise=None,
                 compile="auto", log=None, batch_size: int = 2000):
        """Test metrics (means over examples in nats with standard errors); ``num_samples`` is
        ignored (the encoder is deterministic). Updates nothing."""
        self._refuse_noise(noise)
        start = time.perf_counter()
        device = model_device(model)
        rec, prior = [], []
        for i in range(0, x.shape[0], batch_size):
            xb = x[i:i + batch_size].to(device)
            out = model(xb, update=False)
            rec.append(out.log_px.cpu())
            prior.append(model.prior_log_prob(out.codes).cpu())
        rec, prior = torch.cat(rec), torch.cat(prior)
        values = {}
        for key, v in (("log_likelihood_bound", rec + prior), ("reconstruction", rec),
                       ("log_prior", prior)):
            values[key], values[f"{key}_se"] = mean_and_se(v)
        stats = model.codebook_stats(x, batch_size)
        return VQEvaluation(
            **values, codebook_usage=stats["usage"], codebook_perplexity=stats["perplexity"],
            bits_per_dim=self.bits_per_dim(model, values["log_likelihood_bound"],
                                           math.prod(x.shape[1:])),
            latent_dim=model.latent_dim, num_samples=None, num_examples=int(x.shape[0]),
            seconds=round(time.perf_counter() - start, 3))
