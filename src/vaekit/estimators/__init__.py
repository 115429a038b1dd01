"""Gradient estimators: each returns the bound to report and one surrogate loss.

An estimator is an :class:`Estimator` (``forward(model, x) -> Losses``) registered by name in
:data:`ESTIMATORS` with its options class, and chosen with ``vaekit train --objective NAME``
(its options are command-line options too, e.g. ``--num-samples K``):

=============  ==============================================================================
``elbo``        ELBO, reparameterization gradient; ``beta`` (beta-VAE) and KL warm-up
``elbo-stl``    ELBO, "sticking the landing" gradient for phi (Roeder et al. 2017)
``elbo-sf``     ELBO, score-function gradient for phi; baselines none, moving-average, NVIL
``iwae``        importance-weighted bound L_K, reparameterization gradient (Burda et al. 2016)
``iwae-stl``    L_K with STL for phi (biased for K > 1)
``iwae-dreg``   L_K with doubly reparameterized gradients for phi (Tucker et al. 2019)
``vimco``       L_K, score-function gradient with leave-one-out baselines (Mnih & Rezende 2016)
``miwae``       mean of M bounds L_K (``num_groups`` = M; Rainforth et al. 2018)
``ciwae``       ciwae_beta * ELBO_K + (1 - ciwae_beta) * L_K
``piwae``       theta on L_{MK}, phi on MIWAE(M, K)
``wake-sleep``  Hinton et al. (1995): wake-theta, sleep-phi
``rws``         reweighted wake-sleep (Bornschein & Bengio 2015), wake/sleep-phi mix
``rws-dreg``    RWS with the doubly reparameterized wake-phi gradient
``reconstruction``  autoencoders' own loss (``model.training_losses``)
``vq``          the VQ-VAE's own loss (reconstruction + commitment, EMA codebook)
=============  ==============================================================================

Mixture models are fitted by EM instead (objective ``em``, :mod:`vaekit.models.mixtures`).
"""

from __future__ import annotations

# isort: off
# The estimators register in this order (the order --help lists them in).
from . import reparameterized, score_function, wake_sleep, own_loss  # noqa: F401
# isort: on
from .base import (
    ESTIMATORS,
    Estimator,
    EstimatorOptions,
    Losses,
    PathGate,
    SampledEstimator,
    SampledOptions,
    get_estimator,
    register_estimator,
)
from .own_loss import OwnLoss, Reconstruction, VectorQuantization
from .reparameterized import (
    CIWAE,
    ELBO,
    ELBOSTL,
    IWAE,
    IWAESTL,
    MIWAE,
    PIWAE,
    CIWAEOptions,
    ELBOOptions,
    IWAEDReG,
    IWAEOptions,
    MIWAEOptions,
)
from .score_function import BASELINES, VIMCO, ScoreFunctionELBO, ScoreFunctionOptions
from .wake_sleep import RWS, RWSDReG, RWSOptions, WakeSleep, sleep_loss

__all__ = [
    "BASELINES", "CIWAE", "CIWAEOptions", "ELBO", "ELBOOptions", "ELBOSTL", "ESTIMATORS",
    "IWAE", "IWAEDReG", "IWAEOptions", "IWAESTL", "Estimator", "EstimatorOptions", "Losses",
    "MIWAE", "MIWAEOptions", "OwnLoss", "PIWAE", "PathGate", "RWS", "RWSDReG", "RWSOptions",
    "Reconstruction", "SampledEstimator", "SampledOptions", "ScoreFunctionELBO",
    "ScoreFunctionOptions", "VIMCO", "VectorQuantization", "WakeSleep", "get_estimator",
    "register_estimator", "sleep_loss",
]
