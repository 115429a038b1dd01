"""Conditional VAE (Sohn et al. 2015) and semi-supervised M2 (Kingma et al. 2014): labels reach
the training step, evaluation and sampling; the bounds match explicit references; short
trainings on a 3-class synthetic dataset learn what the labels say; resume is bit-identical;
bad input is one line before anything is written."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from conftest import run_cli, whole_and_resumed

from vaekit.models.conditional import CVAE, M2, balanced_labelled
from vaekit.training import METRICS, read_metrics

SIDE = 8


def _patterns() -> np.ndarray:
    """Three fixed 8x8 binary patterns: top half, left half, a checkerboard."""
    p = np.zeros((3, SIDE, SIDE), bool)
    p[0, :SIDE // 2, :] = True
    p[1, :, :SIDE // 2] = True
    p[2, ::2, ::2] = p[2, 1::2, 1::2] = True
    return p


@pytest.fixture(scope="module")
def three_npz(tmp_path_factory):
    """300 images, class y = one of three patterns with 5% of the pixels flipped; labels in a
    random order (split 240/30/30 by vaekit's fixed permutation)."""
    rng = np.random.default_rng(0)
    y = np.arange(300) % 3
    rng.shuffle(y)
    x = _patterns()[y] ^ (rng.random((300, SIDE, SIDE)) < 0.05)
    path = tmp_path_factory.mktemp("three") / "three.npz"
    np.savez(path, x=x, labels=y)
    return path


NET = ["--latent-dim", "2", "--hidden-sizes", "32", "--batch-size", "20",
       "--eval-num-samples", "20", "--no-progress", "--threads", "1"]


def _one_line_error(code, err):
    assert code in (1, 2)
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    return lines[0]


def _nearest_pattern(x: torch.Tensor) -> torch.Tensor:
    """The class whose pattern is nearest each image ``x: (B, 1, 8, 8)`` (the 5% noise flips
    about 3 pixels; the patterns differ in at least 16)."""
    patterns = torch.tensor(_patterns(), dtype=torch.float32).flatten(1)
    return torch.cdist(x.flatten(1).float(), patterns).argmin(1)


# --------------------------------------------------------------------------- labels
def test_labels_reach_the_step_with_their_examples(three_npz, monkeypatch):
    import vaekit
    from vaekit.config import TrainConfig
    from vaekit.models.conditional import CVAEFamily, M2Family
    ds = vaekit.load_dataset(str(three_npz))
    seen = {}
    for cls in (CVAEFamily, M2Family):
        def spy(self, estimator, model, batch, _orig=cls.batch_losses, _name=cls.name):
            seen.setdefault(_name, []).append(batch)
            return _orig(self, estimator, model, batch)
        monkeypatch.setattr(cls, "batch_losses", spy)
    config = TrainConfig(epochs=2, batch_size=32, device="cpu")
    torch.manual_seed(0)
    model = CVAE(ds.event_shape, num_classes=3, likelihood="bernoulli", latent_dim=2,
                 hidden_sizes=[8])
    vaekit.train(model, ds, config, progress=False)
    batches = seen["cvae"]
    assert sum(b.x.shape[0] for b in batches) == 2 * 240 and batches[0].x_labelled is None
    for b in batches:                           # each label is its own example's class
        assert torch.equal(b.y, _nearest_pattern(b.x))
    assert not torch.equal(batches[0].y, batches[8].y[:32])   # a new permutation each epoch
    model = M2(ds.event_shape, num_classes=3, likelihood="bernoulli", latent_dim=2,
               hidden_sizes=[8], labelled=6)
    vaekit.train(model, ds, config, progress=False)
    batches = seen["m2"]
    chosen = balanced_labelled(ds.train_labels, 6, 3)
    labelled_x = ds.raw("train")[chosen].flatten(1).float()
    assert sum(b.x.shape[0] for b in batches) == 2 * 234       # the unlabelled rest
    for b in batches:
        assert b.y is None and b.x_labelled.shape[0] == 32        # drawn with replacement
        assert b.labelled_weight == pytest.approx(6 / 234)
        assert torch.equal(b.y_labelled, _nearest_pattern(b.x_labelled))
        # the sub-batch holds only the 6 labelled examples
        assert (torch.cdist(b.x_labelled.flatten(1), labelled_x).min(1).values == 0).all()


# --------------------------------------------------------------------------- CVAE
def test_cvae_likelihood_depends_on_y_and_matches_a_hand_computation():
    torch.manual_seed(0)
    m = CVAE((1, 4, 4), num_classes=3, likelihood="bernoulli", latent_dim=2, hidden_sizes=[8])
    x = torch.bernoulli(torch.full((5, 1, 4, 4), 0.5))
    z = torch.randn(7, 5, 2)                                    # (K, B, D_z)
    logps = []
    for c in range(3):
        y = torch.full((5,), c)
        lp = m.given(y).decoder(z).log_prob(x)                  # (K, B)
        # reference: Bernoulli(sigmoid(f([z, onehot(y)]))) summed over the 16 pixels
        logits = m.decoder_net.forward(torch.cat([z, torch.eye(3)[y].expand(7, 5, 3)], -1))
        ref = -torch.nn.functional.binary_cross_entropy_with_logits(
            logits, x.expand(7, *x.shape), reduction="none").flatten(2).sum(-1)
        torch.testing.assert_close(lp, ref, rtol=1e-6, atol=1e-5)
        logps.append(lp)
    assert (logps[0] - logps[1]).abs().min() > 1e-6 and (logps[1] - logps[2]).abs().min() > 1e-6
    with pytest.raises(TypeError, match="given"):
        m.encoder(x)


def test_cvae_samples_the_asked_class(three_npz, tmp_path, capsys):
    out = tmp_path / "cvae"
    code, stdout, err = run_cli(capsys, "train", "--data", three_npz, "--model", "cvae",
                                "--epochs", "150", *NET, "--out", out)
    assert code == 0, err
    r = json.loads((out / "eval.json").read_text())
    assert r["kind"] == "conditional-bound" and math.isfinite(r["log_likelihood"])
    # L_20 >= ELBO in expectation (Burda et al. 2016, Thm 1); 1 nat of slack for the noise
    assert r["log_likelihood"] >= r["elbo"] - 1.0
    assert "log p(x|y)" in stdout
    assert (out / "samples-by-class.png").is_file()
    patterns = torch.tensor(_patterns(), dtype=torch.float32).flatten(1)
    for c in range(3):
        f = tmp_path / f"label{c}.npy"
        code, _, err = run_cli(capsys, "sample", out, "--label", c, "--num", "20", "--mean",
                               "--out", f, "--threads", "1")
        assert code == 0, err
        means = torch.from_numpy(np.load(f)).flatten(1)          # (20, 64) E[x|z, y=c]
        dist = torch.cdist(means, patterns)                      # (20, 3)
        # nearest to its class's pattern: 90% of the samples (a decoder that ignored y
        # would score 1/3 on average; 18 of 20 at chance has probability < 1e-6)
        assert (dist.argmin(1) == c).float().mean() >= 0.9, dist
    code, _, err = run_cli(capsys, "sample", out, "--label", "3", "--threads", "1")
    assert "--label must be one of the model's 3 classes" in _one_line_error(code, err)
    code, stdout, err = run_cli(capsys, "sample", out, "--label", "1", "--num", "10",
                                "--out", tmp_path / "figs", "--threads", "1")
    assert code == 0 and (tmp_path / "figs" / "samples.png").is_file(), err


def test_label_on_an_unconditional_run_is_one_error(three_npz, tmp_path, capsys):
    out = tmp_path / "vae"
    code, _, err = run_cli(capsys, "train", "--data", three_npz, "--epochs", "1", *NET,
                           "--no-eval", "--out", out)
    assert code == 0, err
    code, _, err = run_cli(capsys, "sample", out, "--label", "1", "--threads", "1")
    line = _one_line_error(code, err)
    assert "needs a conditional model (cvae, m2)" in line and "vae" in line


def test_cvae_without_labels_is_one_error_and_writes_nothing(tmp_path, capsys):
    path = tmp_path / "nolabels.npz"
    np.savez(path, x=_patterns()[np.arange(60) % 3])
    for model in ("cvae", "m2"):
        out = tmp_path / f"run-{model}"
        code, _, err = run_cli(capsys, "train", "--data", path, "--model", model, *NET,
                               "--out", out)
        line = _one_line_error(code, err)
        assert f"model {model} needs class labels" in line
        assert not out.exists()


# --------------------------------------------------------------------------- M2
def test_m2_unlabelled_bound_equals_a_loop_over_y(double_precision):
    torch.manual_seed(0)
    m = M2((1, 4, 4), num_classes=3, likelihood="bernoulli", latent_dim=2, hidden_sizes=[8])
    x = torch.bernoulli(torch.full((5, 1, 4, 4), 0.5))
    torch.manual_seed(1)
    u = m.unlabelled_bound(x)                                   # batched: 3 copies of x
    torch.manual_seed(1)
    eps = torch.empty((1, 15, 2)).normal_()                     # the draws rsample makes
    log_q = torch.log_softmax(m.classifier_net(x), -1)          # (B, C)
    ref = torch.zeros(5)
    for c in range(3):                                          # eq. (7), one class at a time
        y = torch.full((5,), c)
        q = m.encode(x, y).base_dist
        z = q.loc + q.scale * eps[:, 5 * c:5 * (c + 1)]
        rec = m.given(y).decoder(z).log_prob(x)[0]
        kl = 0.5 * (q.loc ** 2 + q.scale ** 2 - 1 - 2 * q.scale.log()).sum(-1)
        L = rec - kl + math.log(1 / 3)                          # eq. (6), log p(y) = -log 3
        ref = ref + log_q[:, c].exp() * L
    ref = ref - (log_q.exp() * log_q).sum(-1)                   # + H(q(y|x))
    torch.testing.assert_close(u, ref, rtol=1e-12, atol=1e-12)


def test_m2_importance_weighted_bound_sums_over_y(double_precision):
    """log sum_y p(y) w(x, z_y, y), z_y ~ q(z|x, y), k = 1: the enumerated bound by hand."""
    from vaekit.models.conditional import enumerated_log_likelihood
    torch.manual_seed(0)
    m = M2((1, 4, 4), num_classes=3, likelihood="bernoulli", latent_dim=2, hidden_sizes=[8])
    x = torch.bernoulli(torch.full((5, 1, 4, 4), 0.5))
    torch.manual_seed(2)
    got = enumerated_log_likelihood(m, x, 1)
    torch.manual_seed(2)
    xr, yr = x.repeat(3, 1, 1, 1), torch.arange(3).repeat_interleave(5)
    with torch.no_grad():
        q = m.encode(xr, yr)
        z = q.sample((1,))[0]                                   # (15, 2), class-major
        prior = torch.distributions.Normal(0.0, 1.0).log_prob(z).sum(-1)
        log_w = m.given(yr).decoder(z).log_prob(xr) + prior - q.log_prob(z)
    ref = log_w.view(3, 5).logsumexp(0) - math.log(3)           # p(y) = 1/3
    torch.testing.assert_close(got, ref, rtol=1e-12, atol=1e-12)


def test_m2_learns_the_classes_from_six_labels(three_npz, tmp_path, capsys):
    out = tmp_path / "m2"
    code, stdout, err = run_cli(capsys, "train", "--data", three_npz, "--model", "m2",
                                "--labelled", "6", "--epochs", "30", *NET, "--out", out)
    assert code == 0, err
    r = json.loads((out / "eval.json").read_text())
    assert r["kind"] == "semi-supervised" and r["num_labelled"] == 6
    # chance is 1/3; 30 test images: 0.8 is more than 7 standard errors above chance
    assert r["accuracy"] >= 0.8, r
    assert r["error"] == pytest.approx(1 - r["accuracy"])
    assert math.isfinite(r["log_likelihood"]) and r["log_likelihood"] >= r["elbo"] - 1.0
    assert "classification accuracy" in stdout
    config = json.loads((out / "config.json").read_text())
    assert config["model"]["num_classes"] == 3 and config["train"]["objective"] == "m2"
    assert "m2: alpha = 0.1 * 240 / 6 = 4" in err           # the paper's default
    assert all("valid_accuracy" in rec for rec in read_metrics(out / METRICS))


def test_balanced_labelled_indices():
    y = torch.arange(30) % 3
    a = balanced_labelled(y, 6, 3)
    assert torch.equal(a, balanced_labelled(y, 6, 3))          # a fixed seed
    assert torch.bincount(y[a], minlength=3).tolist() == [2, 2, 2]


@pytest.mark.parametrize("labelled, labels, message", [
    ("7", None, "must be a multiple of the 3 classes"),
    ("300", None, "leaves no unlabelled examples: the training split has 240"),
    ("6", "missing", "class 1 has 0 in the training split"),
])
def test_m2_bad_labelled_is_one_error(labelled, labels, message, three_npz, tmp_path, capsys):
    data = three_npz
    if labels == "missing":                       # labels 0 and 2 only: class 1 is missing
        data = tmp_path / "missing.npz"
        y = (np.arange(300) % 2) * 2
        np.savez(data, x=_patterns()[y], labels=y)
    out = tmp_path / "run"
    code, _, err = run_cli(capsys, "train", "--data", data, "--model", "m2", "--labelled",
                           labelled, *NET, "--out", out)
    assert message in _one_line_error(code, err)
    assert not out.exists()


# --------------------------------------------------------------------------- resume
@pytest.mark.parametrize("model", [
    {"model": "cvae"},
    {"model": "m2", "labelled": 6},
])
def test_resume_is_bit_identical(model, three_npz, tmp_path):
    (a, meta_a), (b, meta_b) = whole_and_resumed(three_npz, model, tmp_path, 4, 2)
    assert sorted(a) == sorted(b) and "rng.cpu" in a
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert meta_a["step"] == meta_b["step"] and meta_a["best_epoch"] == meta_b["best_epoch"]
    timing = ("epoch_seconds", "seconds")
    ha, hb = (read_metrics(tmp_path / d / METRICS) for d in ("whole", "parts"))
    assert [{k: v for k, v in r.items() if k not in timing} for r in ha] == \
        [{k: v for k, v in r.items() if k not in timing} for r in hb]
