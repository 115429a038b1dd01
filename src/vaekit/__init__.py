"""vaekit: variational autoencoders and latent-variable models in PyTorch.

Log-likelihoods and bounds are in nats per example throughout.

Quick start (see README.md)::

    import vaekit
    data = vaekit.load_dataset("mnist-5k")             # (N, 1, 28, 28) images
    model = vaekit.VAE(data.event_shape, latent_dim=16)
    model.init_decoder_bias(data.train.mean(0), data.train.std(0))
    vaekit.train(model, data, vaekit.TrainConfig(epochs=20))
    x_test = vaekit.eval_split(data, "test", "dynamic")
    print(vaekit.evaluate(model, x_test, num_samples=1000)["log_likelihood"])   # nats

The axes of the library are registries: model families (:mod:`vaekit.families`), estimators
(:mod:`vaekit.estimators`), observation models (:mod:`vaekit.observations`), priors,
posteriors and networks; see ``docs/architecture.md``.
"""

from __future__ import annotations

__version__ = "0.2.0"

from .threads import set_wait_policy  # noqa: E402  (before torch loads OpenMP: vaekit.threads)

set_wait_policy()

from .config import Config, DataConfig, TrainConfig, load_config  # noqa: E402
from .data import Dataset, binarize, eval_split, load_dataset  # noqa: E402
from .errors import (  # noqa: E402
    CheckpointError,
    ConfigError,
    DataError,
    TrainingDivergedError,
    VaekitError,
    VaekitWarning,
)
from .estimators import (  # noqa: E402
    ESTIMATORS,
    Estimator,
    Losses,
    get_estimator,
    register_estimator,
)
from .evaluation import Evaluation, active_units, evaluate, log_likelihood  # noqa: E402
from .families import FAMILIES, Family, family_of, get_family, register_family  # noqa: E402
from .gradients import gradient_statistics  # noqa: E402
from .models import (  # noqa: E402
    MODELS,
    VAE,
    VQVAE,
    Autoencoder,
    HierarchicalVAE,
    LinearGaussian,
    StackedAutoencoder,
    build_model,
)
from .models.mixtures import BernoulliMixture, GaussianMixture  # noqa: E402
from .objectives import (  # noqa: E402
    elbo,
    elbo_terms,
    iwae_bound,
    log_mean_exp,
    log_terms,
    log_weights,
)
from .observations import OBSERVATIONS, register_observation  # noqa: E402
from .runs import evaluate_run, load_model, load_run, train, train_run  # noqa: E402
from .training import Trainer, TrainResult  # noqa: E402

__all__ = [
    "Autoencoder", "BernoulliMixture", "CheckpointError", "Config", "ConfigError", "DataConfig",
    "DataError", "Dataset", "ESTIMATORS", "Estimator", "Evaluation", "FAMILIES", "Family",
    "GaussianMixture", "HierarchicalVAE", "LinearGaussian", "Losses", "MODELS", "OBSERVATIONS",
    "StackedAutoencoder", "TrainConfig", "TrainResult", "Trainer", "TrainingDivergedError",
    "VAE", "VQVAE", "VaekitError", "VaekitWarning", "active_units", "binarize", "build_model",
    "elbo", "elbo_terms", "eval_split", "evaluate", "evaluate_run", "family_of", "get_estimator",
    "get_family", "gradient_statistics", "iwae_bound", "load_config", "load_dataset", "load_model",
    "load_run",
    "log_likelihood", "log_mean_exp", "log_terms", "log_weights", "register_estimator",
    "register_family", "register_observation", "train", "train_run",
]
