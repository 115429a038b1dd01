"""vaekit: variational autoencoders and latent-variable models in PyTorch.

Log-likelihoods and bounds are in nats per example throughout.

Quick start (see README.md)::

    import vaekit
    data = vaekit.load_dataset("mnist-5k")
    model = vaekit.VAE(data.dim, latent_dim=16)
    model.init_decoder_bias(data.train.mean(0))
    vaekit.train(model, data, vaekit.TrainConfig(epochs=20))
    x_test = vaekit.eval_split(data, "test", "dynamic")
    print(vaekit.evaluate(model, x_test, num_samples=1000)["log_likelihood"])   # nats
"""

from __future__ import annotations

__version__ = "0.1.0"

from .config import Config, DataConfig, ModelConfig, TrainConfig, load_config  # noqa: E402
from .data import Dataset, binarize, eval_split, load_dataset  # noqa: E402
from .errors import (  # noqa: E402
    CheckpointError,
    ConfigError,
    DataError,
    TrainingDivergedError,
    VaekitError,
)
from .estimators import ESTIMATORS, Estimator, Losses, get_estimator, register_estimator  # noqa
from .evaluation import active_units, evaluate, log_likelihood  # noqa: E402
from .gradients import gradient_statistics  # noqa: E402
from .mixtures import BernoulliMixture, GaussianMixture  # noqa: E402
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
from .objectives import elbo, elbo_terms, iwae_bound, log_mean_exp, log_weights  # noqa: E402
from .runs import evaluate_run, load_run, train_run  # noqa: E402
from .training import Trainer, TrainResult  # noqa: E402


def train(model, data: Dataset, config: TrainConfig | None = None, *,
          binarization: str = "auto", run_dir=None, progress: bool = True) -> TrainResult:
    """Train ``model`` on ``data`` with ``config`` (default :class:`TrainConfig`).

    ``binarization`` as in :class:`DataConfig`; the model ends with its best-validation weights.
    """
    from .data import eval_split, resolve_binarization

    config = config or TrainConfig()
    b = resolve_binarization(binarization, data, getattr(model, "likelihood", "gaussian"))
    trainer = Trainer(model, config, data.train, eval_split(data, "valid", b),
                      dynamic_binarization=b == "dynamic", run_dir=run_dir, progress=progress)
    return trainer.fit()


__all__ = [
    "Autoencoder", "BernoulliMixture", "CheckpointError", "Config", "ConfigError", "DataConfig",
    "DataError", "Dataset", "ESTIMATORS", "Estimator", "GaussianMixture", "HierarchicalVAE",
    "LinearGaussian", "Losses", "MODELS", "ModelConfig", "StackedAutoencoder", "TrainConfig",
    "TrainResult", "Trainer", "TrainingDivergedError", "VAE", "VQVAE", "VaekitError",
    "active_units", "binarize", "build_model", "get_estimator", "gradient_statistics",
    "elbo", "elbo_terms", "eval_split", "evaluate", "evaluate_run", "iwae_bound", "load_config",
    "load_dataset", "load_run", "log_likelihood", "log_mean_exp", "log_weights",
    "register_estimator", "train", "train_run",
]
