"""Objectives that a model family defines itself (no bound on log p(x) to estimate).

Autoencoders are trained to reconstruct their input, a VQ-VAE on reconstruction plus its
commitment term with an EMA codebook; their ``training_losses(x)`` returns the
:class:`~vaekit.estimators.base.Losses`, and these estimators hand it to the trainer. Their
``kind`` names the family objective, so only the families that take it accept them.
"""

from __future__ import annotations

import torch

from .base import Estimator, EstimatorOptions, Losses, register_estimator


class OwnLoss(Estimator):
    """Delegates to ``model.training_losses(x)``."""

    options = EstimatorOptions

    def forward(self, model, x: torch.Tensor) -> Losses:
        return model.training_losses(x)


@register_estimator("reconstruction", EstimatorOptions, kind="reconstruction")
class Reconstruction(OwnLoss):
    """Autoencoders (plain, denoising, stacked): the reconstruction error of x (from its
    corruption, for a denoising autoencoder); the reported value is minus that error."""


@register_estimator("vq", EstimatorOptions, kind="vq")
class VectorQuantization(OwnLoss):
    """VQ-VAE (van den Oord et al. 2017, eq. 3 with an EMA codebook): reconstruction
    negative log-likelihood plus beta times the commitment loss."""
