"""Gradient estimators: each returns the bound to report and a loss per parameter group.

An estimator is an :class:`Estimator` (``forward(model, x) -> Losses``) registered by name in
:data:`ESTIMATORS` and chosen with ``vaekit train --objective NAME --num-samples K``:

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

Mixture models are fitted by EM instead (objective ``em``, :mod:`vaekit.mixtures`).
"""

from __future__ import annotations

from . import own_loss, reparameterized, score_function, wake_sleep  # noqa: F401  (register)
from .base import ESTIMATORS, Estimator, Losses, get_estimator, register_estimator
from .own_loss import OwnLoss, Reconstruction, VectorQuantization
from .reparameterized import CIWAE, ELBO, ELBOSTL, IWAE, IWAESTL, MIWAE, PIWAE, IWAEDReG
from .score_function import BASELINES, VIMCO, ScoreFunctionELBO
from .wake_sleep import RWS, RWSDReG, WakeSleep, sleep_loss

__all__ = [
    "BASELINES", "CIWAE", "ELBO", "ELBOSTL", "ESTIMATORS", "IWAE", "IWAEDReG", "IWAESTL",
    "Estimator", "Losses", "MIWAE", "OwnLoss", "PIWAE", "RWS", "RWSDReG", "Reconstruction",
    "ScoreFunctionELBO", "VIMCO", "VectorQuantization", "WakeSleep", "get_estimator",
    "register_estimator", "sleep_loss",
]
