"""The interface every latent-variable model offers to objectives, training and evaluation."""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch
from torch import nn
from torch.distributions import Distribution

from ..nn import init_output_bias


class LatentVariableModel(nn.Module):
    """p(x) = int p_theta(x|z) p(z) dz with an inference network q_phi(z|x).

    Subclasses set ``latent_dim`` and ``likelihood`` and implement :meth:`prior`,
    :meth:`encoder`, :meth:`decoder` and :meth:`inference_parameters`; they return
    ``torch.distributions`` objects only (no losses).
    """

    latent_dim: int
    likelihood: str     # "bernoulli" or "gaussian": what p(x|z) is
    default_objective = "elbo"       # what ``--objective auto`` trains it with
    own_objective = False            # True: only its own objective(s) apply

    def _init_observation(self, likelihood: str, decoder_std: float,
                          learn_decoder_std: bool) -> None:
        """Set ``likelihood`` and the Gaussian decoder's log sigma: a parameter when learned,
        else a buffer (unused by a Bernoulli decoder)."""
        if likelihood not in ("bernoulli", "gaussian"):
            raise ValueError(f"likelihood must be bernoulli or gaussian, got {likelihood!r}")
        self.likelihood = likelihood
        log_std = torch.tensor(math.log(decoder_std))
        if likelihood == "gaussian" and learn_decoder_std:
            self.decoder_log_std = nn.Parameter(log_std)
        else:
            self.register_buffer("decoder_log_std", log_std)

    def prior(self) -> Distribution:
        """p(z), batch shape ``()``."""
        raise NotImplementedError

    def encoder(self, x: torch.Tensor) -> Distribution:
        """q(z|x) for ``x: (B, D)``, batch shape ``(B,)``."""
        raise NotImplementedError

    def decoder(self, z: torch.Tensor) -> Distribution:
        """p(x|z) for ``z: (..., latent_dim)``, batch shape ``z.shape[:-1]``."""
        raise NotImplementedError

    def inference_parameters(self) -> Iterator[nn.Parameter]:
        """phi: the parameters of q(z|x)."""
        raise NotImplementedError

    def generative_parameters(self) -> Iterator[nn.Parameter]:
        """theta: every parameter that is not in :meth:`inference_parameters`."""
        ids = {id(p) for p in self.inference_parameters()}
        return (p for p in self.parameters() if id(p) not in ids)

    def decoder_mean(self, z: torch.Tensor) -> torch.Tensor:
        """E[x|z], shape ``(..., D)``."""
        return self.decoder(z).mean

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """A point in latent space for each ``x: (B, D)``: the posterior mean E_q[z|x]."""
        return self.encoder(x).mean

    def decode_mean(self, z: torch.Tensor) -> torch.Tensor:
        """E[x|z] as data (the inverse map of :meth:`embed` for figures)."""
        return self.decoder_mean(z)

    def init_decoder_bias(self, train_mean: torch.Tensor) -> None:
        """Start the decoder at the training-data mean ``(D,)`` when its network is an
        ``nn.Sequential`` named ``decoder_net``: the last layer's bias becomes the logit of the
        mean (Bernoulli, as the IWAE code does) or the mean (Gaussian); see
        :func:`vaekit.nn.init_output_bias`. Otherwise nothing changes."""
        net = getattr(self, "decoder_net", None)
        if isinstance(net, nn.Sequential) and isinstance(net[-1], nn.Linear):
            init_output_bias(net[-1], train_mean, self.likelihood)

    @torch.no_grad()
    def sample(self, num: int) -> torch.Tensor:
        """``num`` draws of E[x|z] with z ~ p(z): ``(num, D)``."""
        return self.decoder_mean(self.prior().sample((num,)))
