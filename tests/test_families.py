"""Model families are registry entries: a family defined in this file, outside ``src/``, runs
through ``vaekit train / evaluate / sample / compare / gradients`` like a built-in one, and
generic code asks families what they support instead of inspecting models."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from torch import nn

import vaekit
from vaekit.cli import main
from vaekit.distributions import diagonal_normal
from vaekit.errors import ConfigError
from vaekit.families import (
    CAPABILITIES,
    FAMILIES,
    BoundFamily,
    family_of,
    get_family,
    register_family,
)
from vaekit.models.base import LatentVariableModel, resolve_options, shape_of
from vaekit.nn import MLP
from vaekit.observations import BernoulliObservation
from vaekit.options import Options, option, positive

SRC = Path(vaekit.__file__).parent


# --------------------------------------------------------------------------- a toy family
@dataclass
class ToyOptions(Options):
    latent_dim: int = option(2, "dimension of z", check=positive)
    init_scale: float = option(0.1, "toy-linear: scale of the initial weights", check=positive)


class ToyLinearVAE(LatentVariableModel):
    """A linear encoder and decoder (no hidden layer) with a Bernoulli decoder."""

    def __init__(self, data_shape, options: ToyOptions | None = None, **overrides) -> None:
        super().__init__()
        opts = resolve_options(ToyOptions, options, overrides)
        self.event_shape, self.latent_dim = shape_of(data_shape), opts.latent_dim
        self.encoder_net = MLP(self.event_shape, (), 2 * self.latent_dim)
        self.decoder_net = MLP(self.latent_dim, (), self.event_shape)
        with torch.no_grad():
            for p in self.parameters():
                p.mul_(opts.init_scale / 0.1)
        self.register_buffer("zeros", torch.zeros(self.latent_dim))
        self.observation = BernoulliObservation(self.event_shape)

    def prior(self):
        return diagonal_normal(self.zeros, torch.ones_like(self.zeros))

    def encoder(self, x):
        loc, log_scale = self.encoder_net(x).chunk(2, -1)
        return diagonal_normal(loc, log_scale.exp())

    def decoder_output(self, z):
        return self.decoder_net(z)

    def inference_parameters(self):
        return self.encoder_net.parameters()


class ToyFamily(BoundFamily):
    """Everything but the model comes from BoundFamily: any bound estimator, importance-
    sampled evaluation, figures."""

    model = ToyLinearVAE
    fixed_likelihood = "bernoulli"


@pytest.fixture
def toy_family():
    register_family("toy-linear", ToyOptions)(ToyFamily)
    yield FAMILIES.get("toy-linear")
    FAMILIES.unregister("toy-linear")


TINY = ["--epochs", "2", "--batch-size", "32", "--eval-num-samples", "20", "--no-progress"]


def _run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_a_family_defined_outside_src_trains_evaluates_samples_and_compares(
        toy_family, tiny_npz, tmp_path, capsys):
    toy = tmp_path / "toy"
    code, out, err = _run(capsys, "train", "--model", "toy-linear", "--data", tiny_npz,
                          "--out", toy, "--init-scale", "0.05", "--objective", "iwae",
                          "--num-samples", "3", *TINY)
    assert code == 0, err
    assert "log-likelihood (IWAE bound, k=20)" in out
    cfg = json.loads((toy / "config.json").read_text())
    assert cfg["model"] == {"model": "toy-linear", "latent_dim": 2, "init_scale": 0.05}
    assert cfg["train"]["objective"] == "iwae" and cfg["train"]["num_samples"] == 3
    assert {"best.safetensors", "last.safetensors", "eval.json", "samples.png",
            "reconstructions.png", "interpolations.png", "manifold.png",
            "latent.png"} <= {p.name for p in toy.iterdir()}
    code, out, err = _run(capsys, "evaluate", toy, "--num-samples", "30", "--json")
    assert code == 0, err
    r = json.loads(out)
    assert r["kind"] == "bound" and r["num_samples"] == 30 and r["log_likelihood"] < 0
    assert r["log_likelihood"] >= r["elbo"] - 1.0
    (toy / "samples.png").unlink()
    assert _run(capsys, "sample", toy)[0] == 0 and (toy / "samples.png").is_file()
    code, _, err = _run(capsys, "gradients", toy, "--estimators", "elbo,iwae-dreg",
                        "--num-samples", "1,2", "--draws", "3", "--batch-size", "8")
    assert code == 0, err
    vae = tmp_path / "vae"
    assert _run(capsys, "train", "--data", tiny_npz, "--out", vae, "--latent-dim", "2",
                "--hidden-sizes", "16", *TINY)[0] == 0
    code, out, err = _run(capsys, "compare", toy, vae, "--num-samples", "20", "--out",
                          tmp_path / "cmp")
    assert code == 0, err
    rows = json.loads((tmp_path / "cmp" / "compare.json").read_text())
    assert [r["model"] for r in rows] == ["toy-linear", "vae"]
    assert all(r["test_log_likelihood"] < 0 and r["latent_dim"] == 2 for r in rows)
    assert (tmp_path / "cmp" / "compare_interpolations.png").is_file()
    # its option is a command-line option, in its own group
    code, out, _ = _run(capsys, "train", "--help")
    assert "--init-scale" in out and "toy-linear" in out
    # and the Python path is the same
    model = ToyLinearVAE((1, 8, 8), latent_dim=2)
    data = vaekit.load_dataset(str(tiny_npz))
    result = vaekit.train(model, data, vaekit.TrainConfig(epochs=1, batch_size=32),
                          progress=False)
    assert result.epochs == 1 and family_of(model) is toy_family


def test_no_generic_module_inspects_a_model_s_attributes():
    """runs, training, evaluation, cli and compare ask the family; they never guess."""
    for name in ("runs.py", "training.py", "evaluation.py", "cli.py", "compare.py"):
        text = (SRC / name).read_text()
        assert "hasattr(" not in text and "getattr(" not in text, name


def test_unknown_names_list_the_choices(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match="model must be one of vae, hierarchical-vae, "
                                          "autoencoder.*got 'nope'"):
        get_family("nope")
    for argv, expected in ((["train", "--model", "nope"], "model must be one of vae, "),
                           (["train", "--objective", "nope"], "objective must be one of elbo, "),
                           (["train", "--likelihood", "poisson"],
                            "likelihood must be one of auto, bernoulli, gaussian")):
        code, _, err = _run(capsys, *argv)
        lines = [line for line in err.splitlines() if line.strip()]
        assert code == 1 and len(lines) == 1 and expected in lines[0], err


def test_capabilities_are_declared_and_checked():
    vae, ae, gmm = (get_family(n) for n in ("vae", "autoencoder", "gmm"))
    assert vae.supports("bound") and vae.supports("monitor") and vae.supports("gradients")
    assert ae.supports("embed") and not ae.supports("sample") and not ae.supports("monitor")
    assert gmm.supports("exact_likelihood") and not gmm.supports("embed")
    assert all(set(FAMILIES.get(n).capabilities) <= set(CAPABILITIES) for n in FAMILIES)
    with pytest.raises(ValueError, match="unknown capability"):
        vae.supports("fly")
    with pytest.raises(ValueError, match="unknown capabilities"):
        register_family("bad", ToyOptions)(type("Bad", (ToyFamily,), {"capabilities": {"fly"}}))
    assert "bad" not in FAMILIES


def test_options_a_family_or_objective_does_not_take_are_refused(capsys, tiny_npz, tmp_path):
    cases = [
        (["--model", "gmm", "--latent-dim", "3"],
         "'latent_dim' is not an option of model gmm; its options are num_components"),
        (["--objective", "iwae", "--num-groups", "3"],
         "'num_groups' is not an option of the trainer or of objective iwae (its options: "
         "num_samples)"),
        (["--objective", "iwae", "--kl-warmup-epochs", "2"],
         "kl_warmup_epochs needs an objective with a KL weight"),
        (["--model", "autoencoder", "--monitor-every", "1"],
         "--monitor-every records a bound on log p(x), which model autoencoder does not have"),
        (["--model", "autoencoder", "--objective", "iwae"],
         "model autoencoder is trained with objective reconstruction"),
        (["--objective", "rws", "--num-samples", "1"], "rws and rws-dreg need --num-samples >= 2"),
        (["--objective", "rws-dreg", "--num-samples", "1"], "is exactly zero (rws-dreg)"),
    ]
    for flags, expected in cases:
        code, _, err = _run(capsys, "train", "--data", tiny_npz, "--out", tmp_path / "r",
                            *flags)
        lines = [line for line in err.splitlines() if line.strip()]
        assert code == 1 and len(lines) == 1 and expected in lines[0], (flags, err)
        assert not (tmp_path / "r").exists()


def test_the_python_and_command_line_paths_are_one(mnist5k, tmp_path):
    """vaekit.train() pre-trains a stacked autoencoder, fits a VQ-VAE's code prior and fits a
    mixture by EM, as 'vaekit train' does (in 0.1 only the command line did)."""
    small = vaekit.Dataset("small", mnist5k.raw_train[:300], mnist5k.raw_valid[:100],
                           mnist5k.raw_test[:100], divisor=mnist5k.divisor)
    cfg = vaekit.TrainConfig(epochs=1, batch_size=50, device="cpu")
    logs = []
    sae = vaekit.StackedAutoencoder(small.event_shape, 8, (32, 16), pretrain_epochs=1)
    vaekit.train(sae, small, cfg, progress=False, log=logs.append)
    assert any("pre-trained layer 2" in m for m in logs)
    vq = vaekit.VQVAE(small.event_shape, num_latents=4, embedding_dim=2, codebook_size=8)
    uniform = vq.prior_log_probs.clone()
    vaekit.train(vq, small, cfg, progress=False)
    assert not torch.allclose(vq.prior_log_probs, uniform)          # fitted after training
    gmm = vaekit.GaussianMixture(2, "diag")
    result = vaekit.train(gmm, vaekit.load_dataset("gaussian-mixture-2d"), cfg,
                          progress=False, log=logs.append)
    assert gmm.converged_ or gmm.n_iter_ == gmm.max_iter
    assert result.epochs == gmm.n_iter_ and math.isfinite(result.best_valid_score)


def test_vq_vae_last_checkpoint_carries_its_fitted_code_prior(tiny_npz, tmp_path, capsys):
    out = tmp_path / "vq"
    code, _, err = _run(capsys, "train", "--model", "vqvae", "--data", tiny_npz, "--out", out,
                        "--hidden-sizes", "16", "--num-latents", "4", "--embedding-dim", "2",
                        "--codebook-size", "8", *TINY)
    assert code == 0, err
    best = json.loads(_run(capsys, "evaluate", out, "--json")[1])
    last = json.loads(_run(capsys, "evaluate", out, "--checkpoint", "last", "--json")[1])
    assert best["log_prior"] > -4 * math.log(8) + 0.1      # fitted, not uniform
    assert last["log_prior"] > -4 * math.log(8) + 0.1      # 0.1 left the last one uniform
    if json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])["epoch"] == \
            load_best_epoch(out):
        assert last["log_likelihood_bound"] == pytest.approx(best["log_likelihood_bound"])


def load_best_epoch(run) -> int:
    from vaekit.io import load_tensors
    return load_tensors(Path(run) / "best.safetensors")[1]["epoch"]


def test_networks_refuse_data_of_another_shape():
    m = vaekit.VAE(784, latent_dim=2, hidden_sizes=(8,))
    with pytest.raises(ValueError, match=r"inputs of shape \(\.\.\., 784\) but got "
                                         r"\(3, 1, 28, 28\).*event shape"):
        m.encoder(torch.zeros(3, 1, 28, 28))
    image = vaekit.VAE((1, 28, 28), latent_dim=2, hidden_sizes=(8,))
    assert image.decoder_mean(torch.zeros(5, 2)).shape == (5, 1, 28, 28)
    assert image.encoder(torch.zeros(3, 1, 28, 28)).batch_shape == (3,)
    assert isinstance(image.encoder_net, nn.Sequential)       # 0.1's checkpoint keys
