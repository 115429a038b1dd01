"""Configuration per family and per objective: one file (JSON or TOML) with CLI overrides;
each section takes the options of the family and objective chosen, checked in one place;
run directories of vaekit 0.1 still load."""

from __future__ import annotations

import json

import pytest

from vaekit.config import PRESETS, Config, load_config, merge
from vaekit.errors import ConfigError
from vaekit.estimators import ESTIMATORS, IWAEOptions
from vaekit.families import FAMILIES
from vaekit.models import VAEOptions, VQVAEOptions


def test_a_config_round_trips_and_holds_only_what_its_family_and_objective_take():
    cfg = Config.from_dict({"model": {"model": "vqvae", "num_latents": 4},
                            "train": {"objective": "vq", "epochs": 3}}).validate()
    assert isinstance(cfg.model, VQVAEOptions) and cfg.model.num_latents == 4
    d = cfg.to_dict()
    assert d["model"]["model"] == "vqvae" and "latent_dim" not in d["model"]
    assert "num_samples" not in d["train"] and d["train"]["epochs"] == 3
    assert Config.from_dict(json.loads(json.dumps(d))).to_dict() == d
    iwae = Config.from_dict({"train": {"objective": "iwae", "num_samples": 7}})
    assert isinstance(iwae.estimator, IWAEOptions) and iwae.estimator.num_samples == 7
    assert iwae.to_dict()["train"]["num_samples"] == 7
    auto = Config().resolved()
    assert auto.train.objective == "elbo" and auto.to_dict()["train"]["kl"] == "analytic"


def test_every_family_and_objective_declares_valid_defaults():
    for name in FAMILIES:
        FAMILIES.get(name).options().validate()
    for name in ESTIMATORS:
        options = ESTIMATORS.get(name).options
        if name != "vimco":                        # needs K >= 2: its default is 5
            options().validate()
        assert options().validate() is not None


def test_files_in_toml_and_json_with_overrides(tmp_path):
    toml = tmp_path / "c.toml"
    toml.write_text('[data]\ndataset = "binarized-mnist"\n[model]\nmodel = "hierarchical-vae"\n'
                    'latent_dims = [20, 10]\n[train]\nobjective = "iwae"\nnum_samples = 3\n')
    raw = json.loads(json.dumps(merge(load_config(str(toml)).to_dict(),
                                      {"train": {"num_samples": "9"}})))
    cfg = Config.from_dict(raw).validate()
    assert cfg.family.name == "hierarchical-vae" and cfg.model.latent_dims == [20, 10]
    assert cfg.estimator.num_samples == 9 and cfg.data.dataset == "binarized-mnist"
    bad = tmp_path / "bad.json"
    bad.write_text('{"model": {"model": "vae", "num_latents": 3}}')
    with pytest.raises(ConfigError, match="'num_latents' is not an option of model vae; its "
                                          "options are net, hidden_sizes"):
        load_config(str(bad))
    bad.write_text('{"optimizer": {}}')
    with pytest.raises(ConfigError, match="unknown configuration section 'optimizer'"):
        load_config(str(bad))
    bad.write_text('{"train": {"epochs": "many"}}')
    with pytest.raises(ConfigError, match="epochs must be an integer, got 'many'"):
        load_config(str(bad))
    bad.write_text("{not json")
    with pytest.raises(ConfigError, match="cannot be parsed"):
        load_config(str(bad))


def test_presets_build():
    for name in PRESETS:
        load_config(name).validate()
    one = load_config("iwae-paper-1layer")
    assert isinstance(one.model, VAEOptions) and one.model.latent_dim == 50
    assert one.train.schedule_stages == 8 and one.estimator.num_samples == 1
    assert load_config("iwae-paper-2layer").model.latent_dims == [100, 50]


def test_values_are_checked_where_they_are_declared():
    cases = [({"model": {"hidden_sizes": []}}, "hidden_sizes must be one or more positive"),
             ({"model": {"model": "autoencoder", "noise": "masking", "noise_level": 1.0}},
              "masking noise_level must lie in [0, 1)"),
             ({"model": {"model": "vqvae", "ema_decay": 1.0}}, "ema_decay must lie in [0, 1)"),
             ({"model": {"model": "gmm", "reg_covar": -1}}, "reg_covar must be >= 0"),
             ({"train": {"adam_beta1": 1.0}}, "adam_beta1 must lie in [0, 1)"),
             ({"train": {"objective": "ciwae", "ciwae_beta": 2}}, "ciwae_beta must lie in"),
             ({"train": {"device": "tpu"}}, "device must be auto or a torch device"),
             ({"train": {"lr": float("inf")}}, "lr must be a positive number"),
             ({"model": {"model": "gmm"}, "train": {"objective": "elbo"}},
              "model gmm is trained with objective em (or auto), not elbo"),
             ({"model": {"model": "vae"}, "train": {"objective": "em"}},
              "objective em belongs to another model family; vae is trained with elbo"),
             ({"train": {"objective": "nope"}}, "objective must be one of elbo, ")]
    for d, expected in cases:
        with pytest.raises(ConfigError, match=expected.replace("[", r"\[").replace(")", r"\)")
                           .replace("(", r"\(")):
            Config.from_dict(d).validate()


def test_model_constructors_check_their_options_in_the_same_place():
    """0.1 validated twice, and the two disagreed (ema_decay 0 passed one check and not the
    other; ValueError against ConfigError)."""
    from vaekit.models import VQVAE, Autoencoder, GaussianMixture
    VQVAE(6, num_latents=2, embedding_dim=2, codebook_size=3, ema_decay=0.0)
    Config.from_dict({"model": {"model": "vqvae", "ema_decay": 0.0}}).validate()
    for make in (lambda: VQVAE(6, ema_decay=1.0), lambda: Autoencoder(4, 2, noise="blur"),
                 lambda: GaussianMixture(0)):
        with pytest.raises(ConfigError):
            make()


def test_a_config_json_of_vaekit_0_1_loads():
    """0.1 wrote one flat model section (every family's fields) and every estimator's fields
    in the train section; pretrain_epochs and the EM fields lived in the train section."""
    old = {"data": {"dataset": "mnist-5k", "data_dir": None, "binarization": "dynamic"},
           "model": {"model": "stacked-autoencoder", "latent_dim": 8, "hidden_sizes": [32, 16],
                     "activation": "tanh", "likelihood": "bernoulli", "decoder_std": 0.1,
                     "learn_decoder_std": True, "latent_dims": [], "noise": "none",
                     "noise_level": 0.25, "num_latents": 16, "codebook_size": 128,
                     "em_max_iter": 100, "num_components": 10},
           "train": {"objective": "reconstruction", "num_samples": 1, "kl": "analytic",
                     "beta": 1.0, "kl_warmup_epochs": 0.0, "num_groups": 1, "baseline": "nvil",
                     "rws_wake_weight": 0.5, "epochs": 5, "pretrain_epochs": 2, "em_tol": 0.001}}
    cfg = Config.from_dict(old, legacy=True).validate()
    assert cfg.family.name == "stacked-autoencoder" and cfg.model.pretrain_epochs == 2
    assert cfg.model.hidden_sizes == [32, 16] and cfg.train.epochs == 5
    with pytest.raises(ConfigError, match="is not an option"):
        Config.from_dict(old)                              # a user's file is read strictly
    em = Config.from_dict({"model": {"model": "bernoulli-mixture", "latent_dim": 16},
                           "train": {"objective": "em", "em_max_iter": 7, "em_tol": 0.5,
                                     "em_restarts": 2, "num_samples": 1}}, legacy=True)
    assert (em.model.em_max_iter, em.model.em_tol, em.model.em_restarts) == (7, 0.5, 2)


def test_a_run_s_config_json_serves_as_a_config_file(tmp_path):
    """--config runs/x/config.json, of this version or of vaekit 0.1 (flat sections)."""
    import shutil
    from pathlib import Path
    fixture = Path(__file__).parent / "fixtures" / "runs-0.1" / "vqvae" / "config.json"
    shutil.copy(fixture, tmp_path / "old.json")
    cfg = load_config(str(tmp_path / "old.json")).validate()
    assert cfg.family.name == "vqvae" and cfg.model.num_latents == 4
    (tmp_path / "new.json").write_text(cfg.to_json())
    assert load_config(str(tmp_path / "new.json")).to_dict() == cfg.to_dict()
