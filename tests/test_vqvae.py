"""VQ-VAE: quantisation, straight-through gradients, EMA codebook, dead-code restarts, priors,
the log-likelihood bound, and a short training on mnist-5k."""

from __future__ import annotations

import itertools
import math
from types import SimpleNamespace

import pytest
import torch

from vaekit.data import eval_split
from vaekit.estimators.base import Losses
from vaekit.evaluation import evaluate
from vaekit.models.vqvae import VQVAE


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """One intra-op thread: these small matrices gain nothing from more, and on a loaded
    machine with 2 cores a second thread made a training step ~100x slower (1.2 s vs 13 ms)."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def tiny(**kw) -> VQVAE:
    args = dict(data_dim=6, num_latents=3, embedding_dim=2, codebook_size=5, hidden_sizes=(8,),
                seed=0)
    args.update(kw)
    return VQVAE(**args)


def binary(n: int, d: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.bernoulli(torch.full((n, d), 0.4), generator=g)


def buffers(model: VQVAE) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.named_buffers()}


# --------------------------------------------------------------------------- quantisation
def test_quantize_picks_the_nearest_code_like_a_brute_force_loop():
    model = tiny()
    g = torch.Generator().manual_seed(1)
    model.codebook.copy_(torch.randn(5, 2, generator=g))
    z_e = torch.randn(7, 3, 2, generator=g)
    z_q, codes = model.quantize(z_e)
    assert codes.shape == (7, 3) and codes.dtype == torch.long
    for b in range(7):
        for m in range(3):
            d = [float(((z_e[b, m] - model.codebook[k]) ** 2).sum()) for k in range(5)]
            assert codes[b, m] == min(range(5), key=d.__getitem__)
            assert torch.equal(z_q[b, m], model.codebook[codes[b, m]])
    # encode/embed of x agree with quantize of the encoder output
    x = binary(4, 6)
    z_q, codes = model.quantize(model.encode_continuous(x))
    assert torch.equal(model.encode(x), codes)
    assert torch.equal(model.embed(x), z_q.flatten(1))
    assert torch.equal(model.codes_to_embedding(codes), z_q.flatten(1))


def test_straight_through_gradient_reaches_the_encoder_unchanged():
    model = tiny(commitment_cost=0.25)
    assert "codebook" not in dict(model.named_parameters())      # a buffer: no gradient
    x = binary(4, 6)
    out = model(x, update=False)
    out.z_e.retain_grad()
    out.z_q.retain_grad()
    (-out.log_px.sum()).backward()
    assert out.z_q.grad.abs().sum() > 0
    assert torch.equal(out.z_e.grad, out.z_q.grad)               # copied exactly (eq. 3)
    for p in model.inference_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0
    # the decoder saw the quantised value
    assert torch.allclose(out.z_q.detach(), model.embed(x).view(4, 3, 2), atol=1e-6)

    # with the commitment term the encoder also gets 2 beta (z_e - e_c)
    model.zero_grad()
    out = model(x, update=False)
    out.z_e.retain_grad()
    out.z_q.retain_grad()
    (out.commitment - out.log_px).sum().backward()
    e_c = model.codebook[out.codes]
    expected = out.z_q.grad + 2 * 0.25 * (out.z_e.detach() - e_c)
    torch.testing.assert_close(out.z_e.grad, expected, atol=1e-6, rtol=1e-5)


# --------------------------------------------------------------------------- EMA codebook
def test_ema_update_equals_the_hand_computed_formula():
    gamma, eps = 0.9, 1e-5
    model = tiny(ema_decay=gamma, dead_code_threshold=0.0, laplace_eps=eps)
    g = torch.Generator().manual_seed(2)
    model.codebook.copy_(torch.randn(5, 2, generator=g) * 0.3)
    n0 = torch.tensor([1.0, 2.0, 0.5, 3.0, 1.5])
    m0 = model.codebook * n0[:, None]
    model.ema_cluster_size.copy_(n0)
    model.ema_embed_sum.copy_(m0)
    x = binary(8, 6, seed=3)
    with torch.no_grad():
        z_e = model.encode_continuous(x).reshape(-1, 2)          # (24, 2)
    old = model.codebook.clone()
    codes = torch.tensor([min(range(5), key=lambda k: float(((z - old[k]) ** 2).sum()))
                          for z in z_e])

    model.train()
    out = model(x)
    assert torch.equal(out.codes.reshape(-1), codes)               # assigned before the update

    N = torch.empty(5)
    m = torch.empty(5, 2)
    for k in range(5):
        sel = codes == k
        N[k] = gamma * n0[k] + (1 - gamma) * sel.sum()
        m[k] = gamma * m0[k] + (1 - gamma) * z_e[sel].sum(0)
    total = N.sum()
    smoothed = (N + eps) / (total + 5 * eps) * total
    torch.testing.assert_close(model.ema_cluster_size, N, atol=1e-6, rtol=0)
    torch.testing.assert_close(model.ema_embed_sum, m, atol=1e-6, rtol=0)
    torch.testing.assert_close(model.codebook, m / smoothed[:, None], atol=1e-6, rtol=1e-6)
    assert not torch.allclose(model.codebook, old)


def test_codebook_does_not_change_in_eval_mode_or_in_evaluation_calls():
    model = tiny()
    x = binary(8, 6)
    before = buffers(model)
    model.eval()
    model(x)
    model.training_losses(x)
    model.train()                        # evaluation helpers update nothing even in train mode
    model.validation_score(x)
    model.encode(x)
    model.embed(x)
    model.log_likelihood_bound(x)
    model.codebook_stats(x)
    for k, v in model.named_buffers():
        assert torch.equal(v, before[k]), k
    model.training_losses(x)             # while a training-mode forward does
    assert not torch.equal(model.ema_cluster_size, before["quantizer.ema_cluster_size"])


def test_dead_code_restart_revives_unreachable_codes():
    torch.manual_seed(0)
    model = tiny(num_latents=4, codebook_size=8, ema_decay=0.5, dead_code_threshold=0.3)
    x = binary(16, 6, seed=4)                                     # 64 encoder vectors
    with torch.no_grad():
        z_e = model.encode_continuous(x).reshape(-1, 2)
    model.codebook[4:] = 1000.0                                   # far from every z_e
    model.ema_embed_sum.copy_(model.codebook)                     # N_k = 1, m_k = e_k
    model.train()
    assert model(x).codes.max() < 4                               # unreachable
    # step 2: N_k = 0.25 < 0.3 for the unused codes -> restarted (step 1 left N_k = 0.5)
    assert (model.codebook[4:] > 500).all()
    model(x)
    for k in range(4, 8):
        dist = ((z_e - model.codebook[k]) ** 2).sum(1)
        assert dist.min() < 1e-10                                 # moved onto an encoder output
        assert model.ema_cluster_size[k] == pytest.approx(0.3)
        torch.testing.assert_close(model.ema_embed_sum[k], 0.3 * model.codebook[k])
    # the encoder is unchanged, so each revived code is nearest to the vector it sits on (two
    # codes restarted on the same vector tie, and the lower index wins)
    used = set(model(x, update=False).codes.reshape(-1).tolist()) & set(range(4, 8))
    assert len(used) == len(torch.unique(model.codebook[4:], dim=0)) >= 2


def test_no_restart_when_threshold_is_zero():
    model = tiny(codebook_size=8, ema_decay=0.5, dead_code_threshold=0.0)
    model.codebook[4:] = 1000.0
    model.ema_embed_sum.copy_(model.codebook)
    model.train()
    for _ in range(5):
        model(binary(16, 6))
    assert (model.codebook[4:] > 500).all()


# --------------------------------------------------------------------------- priors and bound
def test_fit_prior_gives_add_one_smoothed_frequencies_and_samples_from_them():
    model = tiny(num_latents=2, codebook_size=3)
    assert torch.allclose(model.prior_log_probs, torch.full((2, 3), -math.log(3)))   # uniform
    codes = torch.tensor([[0, 2], [0, 2], [1, 2], [0, 1], [0, 2]])
    assert model.fit_prior(codes) is model
    expected = torch.tensor([[4 + 1, 1 + 1, 0 + 1], [0 + 1, 1 + 1, 4 + 1]]) / (5 + 3)
    torch.testing.assert_close(model.prior_log_probs.exp(), expected)
    test = torch.tensor([[0, 2], [2, 0]])
    torch.testing.assert_close(model.prior_log_prob(test),
                               torch.log(torch.tensor([5 / 8 * 5 / 8, 1 / 8 * 1 / 8])))
    drawn = model.sample_codes(20000, seed=0)
    assert drawn.shape == (20000, 2)
    freq = torch.stack([torch.bincount(drawn[:, m], minlength=3) for m in range(2)]) / 20000
    assert (freq - expected).abs().max() < 0.02                    # sd <= 0.0035 each
    assert torch.equal(drawn, model.sample_codes(20000, seed=0))
    images = model.sample(5, seed=1)
    assert images.shape == (5, 6) and ((images > 0) & (images < 1)).all()
    with pytest.raises(ValueError):
        model.fit_prior(torch.zeros(4, 3, dtype=torch.long))


def test_log_likelihood_bound_is_reconstruction_plus_log_prior_and_below_log_px():
    model = tiny(num_latents=2, codebook_size=3)
    x = binary(6, 6, seed=5)
    model.fit_prior(torch.tensor([[0, 1], [2, 1], [0, 0]]))
    codes = model.encode(x)
    logits = model.decoder_net(model.codebook[codes].flatten(1))
    p = torch.sigmoid(logits)
    log_px_z = (x * torch.log(p) + (1 - x) * torch.log1p(-p)).sum(1)   # by hand
    log_pc = sum(model.prior_log_probs[m, codes[:, m]] for m in range(2))
    bound = model.log_likelihood_bound(x)
    torch.testing.assert_close(model.validation_score(x), log_px_z, atol=1e-5, rtol=0)
    torch.testing.assert_close(bound, log_px_z + log_pc, atol=1e-5, rtol=0)
    assert (bound <= 0).all()
    # exact log p(x) = logsumexp_c [log p(x|e_c) + log p(c)] over all 9 code pairs
    terms = []
    for c in itertools.product(range(3), repeat=2):
        cc = torch.tensor(c).expand(6, 2)
        z = model.codes_to_embedding(cc)
        terms.append(model.decoder(z).log_prob(x) + model.prior_log_prob(cc))
    exact = torch.stack(terms).logsumexp(0)
    assert (bound <= exact + 1e-5).all() and (exact <= 0).all()
    assert (exact - bound).min() > 0                               # strict: other codes count


def test_training_losses_values():
    model = tiny(commitment_cost=0.5).eval()                      # eval: no codebook update
    x = binary(5, 6, seed=6)
    losses = model.training_losses(x)
    assert isinstance(losses, Losses) and losses.loss.dim() == 0
    assert not losses.bound.requires_grad and losses.bound.shape == (5,)
    torch.testing.assert_close(losses.bound, model.validation_score(x))
    with torch.no_grad():
        z_e = model.encode_continuous(x)
    z_q = model.codebook[model.encode(x)]
    commit = 0.5 * ((z_e - z_q) ** 2).sum((1, 2))
    torch.testing.assert_close(losses.loss.detach(), (commit - losses.bound).mean())


def test_gaussian_decoder():
    model = tiny(likelihood="gaussian", decoder_std=0.3)
    x = torch.rand(4, 6)
    z = model.embed(x)
    mean = model.decode_mean(z)
    torch.testing.assert_close(model.decoder(z).mean, mean)
    expected = torch.distributions.Normal(mean, 0.3).log_prob(x).sum(1)
    torch.testing.assert_close(model.validation_score(x), expected.detach())


def test_autoregressive_prior_is_autoregressive():
    model = tiny(num_latents=4, codebook_size=3, prior="autoregressive", prior_hidden_size=16)
    codes = torch.tensor([[0, 1, 2, 0], [2, 2, 1, 1]])
    torch.testing.assert_close(model.prior_log_prob(codes),
                               torch.full((2,), -4 * math.log(3)))          # starts uniform
    with torch.no_grad():
        torch.nn.init.normal_(model.ar_prior.out.weight)
    base = model.ar_prior.logits(codes)
    for j in range(4):
        changed = codes.clone()
        changed[:, j] = (changed[:, j] + 1) % 3
        diff = (model.ar_prior.logits(changed) - base).abs().amax((0, 2))  # (M,)
        assert (diff[:j + 1] == 0).all()                          # p(c_m | c_<m) ignores c_>=m
        if j < 3:
            assert diff[j + 1:].max() > 0


def test_autoregressive_prior_learns_dependencies_between_positions():
    g = torch.Generator().manual_seed(0)
    c0 = torch.randint(0, 4, (2000,), generator=g)
    codes = torch.stack([c0, c0, (c0 + 1) % 4], 1)                  # entropy log 4 nats
    model = tiny(num_latents=3, codebook_size=4, prior="autoregressive", prior_hidden_size=32)
    model.fit_prior(codes, steps=300, batch_size=128, lr=1e-2)
    ar = model.prior_log_prob(codes).mean().item()
    independent = model.prior_log_probs[torch.arange(3), codes].sum(1).mean().item()
    assert ar > -math.log(4) - 0.1                                 # measured -1.39
    assert independent < -3 * math.log(4) + 0.05                   # about -4.16
    drawn = model.sample_codes(500, seed=0)
    assert (drawn[:, 1] == drawn[:, 0]).float().mean() > 0.95
    assert (drawn[:, 2] == (drawn[:, 0] + 1) % 4).float().mean() > 0.95


def test_from_config_and_errors():
    cfg = SimpleNamespace(num_latents=4, embedding_dim=3, codebook_size=10, hidden_sizes=[7],
                          activation="relu", likelihood="gaussian", decoder_std=0.2,
                          commitment_cost=0.1, ema_decay=0.9, latent_dim=99)
    model = VQVAE.from_config(cfg, data_dim=6)
    assert (model.latent_dim, model.embedding_dim, model.codebook_size) == (4, 3, 10)
    assert model.codebook.shape == (10, 3) and model.likelihood == "gaussian"
    assert model.encoder_net[0].out_features == 7 and model.encoder_net[-1].out_features == 12
    assert model.decoder_log_std.exp().item() == pytest.approx(0.2)
    assert (model.commitment_cost, model.ema_decay) == (0.1, 0.9)
    assert VQVAE.from_config(SimpleNamespace(), data_dim=6).codebook.shape == (128, 16)
    torch.testing.assert_close(tiny(seed=3).codebook, tiny(seed=3).codebook)
    with pytest.raises(ValueError):
        tiny(likelihood="poisson")
    with pytest.raises(ValueError):
        tiny(prior="gmm")
    with pytest.raises(ValueError):
        tiny(ema_decay=1.0)
    with pytest.raises(ValueError):
        tiny().encode(torch.zeros(2, 5))


# --------------------------------------------------------------------------- mnist-5k
def _train(data, steps: int, threshold: float) -> VQVAE:
    torch.manual_seed(0)
    model = VQVAE(data.event_shape, dead_code_threshold=threshold, seed=0)   # M=16, d=16, K=128
    model.init_decoder_bias(data.train.mean(0))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(0)
    model.train()
    for _ in range(steps):
        idx = torch.randint(0, data.train.shape[0], (100,), generator=g)
        x = torch.bernoulli(data.train[idx], generator=g)          # dynamic binarization
        loss = model.training_losses(x).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return model.eval()


@pytest.mark.slow
def test_short_training_on_mnist5k(mnist5k):
    """Measured (500 Adam steps of 100 dynamically binarized images, lr 1e-3, one CPU thread,
    ~4 s a run), on the test split (binarized once, seed 0):
    -log p(x|z_q): 209.6 nats at the start (decoder bias = data mean) -> 113.8;
    squared error of E[x|z_q]: 68.7 -> 35.8 per image;
    codebook usage 0.984, perplexity 105.9 of 128 (at the start: 0.305, 6.2);
    fitted categorical prior: log p(c) -45.6 nats (uniform: -77.6), bound -159.3 nats;
    without restarts (threshold 0): -log p(x|z_q) 111.5, usage 0.820, perplexity 67.9."""
    x_test = eval_split(mnist5k, "test", "dynamic")
    model = _train(mnist5k, 0, 1.0)
    nll_before = -model.validation_score(x_test).mean().item()
    se_before = (model.decode_mean(model.embed(x_test)) - x_test).pow(2).sum(1).mean().item()

    model = _train(mnist5k, 500, 1.0)
    nll = -model.validation_score(x_test).mean().item()
    se = (model.decode_mean(model.embed(x_test)) - x_test).pow(2).sum(1).mean().item()
    stats = model.codebook_stats(x_test)
    assert nll_before > 190
    assert nll < 0.65 * nll_before and nll < 130
    assert se < 0.6 * se_before
    assert stats["usage"] > 0.9 and stats["perplexity"] > 80
    assert int(stats["counts"].sum()) == x_test.shape[0] * 16

    codes = model.encode(mnist5k.train)
    model.fit_prior(codes)
    bound = model.log_likelihood_bound(x_test)
    log_prior = model.prior_log_prob(model.encode(x_test))
    assert (bound <= 0).all()
    torch.testing.assert_close(bound, model.validation_score(x_test) + log_prior)
    assert -16 * math.log(128) < log_prior.mean() < -20        # fitted beats uniform (-77.6)
    metrics = evaluate(model, x_test)
    assert metrics["log_likelihood_bound"] == pytest.approx(bound.mean().item(), abs=1e-3)
    assert metrics["reconstruction"] == pytest.approx(-nll, abs=1e-3)
    assert metrics["codebook_perplexity"] == pytest.approx(stats["perplexity"])
    samples = model.sample(16, seed=0)
    assert samples.shape == (16, 1, 28, 28) and samples.min() >= 0 and samples.max() <= 1

    no_restart = _train(mnist5k, 500, 0.0).codebook_stats(x_test)
    assert stats["perplexity"] > no_restart["perplexity"] + 20
