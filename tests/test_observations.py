"""Observation models: each discrete likelihood of 8-bit data sums to 1 over the 256 values of
a sub-pixel (over all 256^3 colours of an RGB pixel with coupled channels), equals a direct
computation from the logistic CDF, samples with the frequencies it assigns; the dequantized
densities bound the 8-bit log-probability from below and estimate the probability itself
without bias; data of the wrong kind are refused in one line."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from vaekit.errors import DataError
from vaekit.observations import OBSERVATIONS, observation_for
from vaekit.observations.eight_bit import LEVELS, DiscretizedLogisticMixture

OPTS = SimpleNamespace(logistic_components=3, decoder_std=0.05, learn_decoder_std=True,
                       decoder_std_floor=0.0)
ALL_LEVELS = torch.arange(LEVELS, dtype=torch.float64) / 255


@pytest.fixture(autouse=True)
def _double():
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)


@pytest.mark.parametrize("name", ["categorical", "discretized-logistic"])
@pytest.mark.parametrize("event", [(1, 1, 1), (1,)])
def test_a_discrete_likelihood_sums_to_one_over_the_256_values(name, event):
    obs = observation_for(name, event, OPTS)
    g = torch.Generator().manual_seed(0)
    out = 3 * torch.randn(5, *obs.param_shape, generator=g)       # 5 parameter settings
    if name == "discretized-logistic":                           # scales from tiny to wide
        ls = slice(2 * 3, 3 * 3)
        out[:, ls] = torch.linspace(-9, 3, 5)[:, None, None].expand_as(out[:, ls]) \
            if len(event) == 1 else torch.linspace(-9, 3, 5).view(5, 1, 1, 1).expand_as(
                out[:, ls])
    x = ALL_LEVELS.view(LEVELS, 1, *event)                       # every value of the sub-pixel
    total = obs(out).log_prob(x).exp().sum(0)                    # (5,)
    torch.testing.assert_close(total, torch.ones(5), rtol=0, atol=1e-10)


@pytest.mark.slow
def test_the_colour_mixture_sums_to_one_over_every_colour_of_a_pixel():
    obs = observation_for("discretized-logistic", (3, 1, 1), SimpleNamespace(
        logistic_components=2))
    out = torch.randn(1, *obs.param_shape, generator=torch.Generator().manual_seed(1))
    dist = obs(out)
    total = 0.0
    gb = torch.cartesian_prod(ALL_LEVELS, ALL_LEVELS)             # (65536, 2)
    for r in ALL_LEVELS.split(32):                                # every (R, G, B)
        x = torch.cat([r.repeat_interleave(len(gb))[:, None], gb.repeat(len(r), 1)], 1)
        total += float(dist.log_prob(x.view(-1, 3, 1, 1)).exp().sum())
    assert total == pytest.approx(1.0, abs=1e-9)


def _logistic_mass(k: torch.Tensor, mu: float, log_s: float) -> torch.Tensor:
    """P(k) of one discretized logistic on [-1, 1] from its CDF, edge bins taking the tails."""
    x = 2 * k / 255 - 1
    cdf = lambda t: torch.sigmoid((t - mu) / math.exp(log_s))      # noqa: E731
    upper = torch.where(k == 255, torch.ones_like(x), cdf(x + 1 / 255))
    lower = torch.where(k == 0, torch.zeros_like(x), cdf(x - 1 / 255))
    return upper - lower


def test_discretized_logistic_equals_the_cdf_computation_with_coupled_channels():
    """One component, RGB: P(R, G, B) = P(R | mu_R) P(G | mu_G + a x_R) P(B | mu_B + b x_R +
    c x_G), each from the logistic CDF (Salimans et al. 2017, eq. 3)."""
    mu, ls, co = (0.2, -0.4, 0.7), (-2.0, -3.0, -1.5), (0.5, -0.3, 0.8)
    atanh = [math.atanh(c) for c in co]
    params = torch.tensor([0.0, *mu, *ls, *atanh]).view(1, 10, 1, 1)
    dist = observation_for("discretized-logistic", (3, 1, 1),
                           SimpleNamespace(logistic_components=1))(params)
    g = torch.Generator().manual_seed(2)
    k = torch.randint(0, 256, (400, 3), generator=g).double()
    k[:5] = torch.tensor([[0, 255, 3], [255, 0, 0], [128, 128, 128], [0, 0, 0],
                          [255, 255, 255]], dtype=torch.float64)
    xr, xg = 2 * k[:, 0] / 255 - 1, 2 * k[:, 1] / 255 - 1
    expected = (_logistic_mass(k[:, 0], mu[0], ls[0])
                * _logistic_mass(k[:, 1], mu[1] + co[0] * xr, ls[1])
                * _logistic_mass(k[:, 2], mu[2] + co[1] * xr + co[2] * xg, ls[2]))
    got = dist.log_prob((k / 255).view(-1, 3, 1, 1)).exp()
    torch.testing.assert_close(got, expected, rtol=1e-9, atol=1e-15)


@pytest.mark.parametrize("name", ["categorical", "discretized-logistic"])
def test_samples_follow_the_probabilities(name):
    obs = observation_for(name, (1, 1, 1), SimpleNamespace(logistic_components=2))
    out = torch.randn(1, *obs.param_shape, generator=torch.Generator().manual_seed(3))
    if name == "discretized-logistic":
        out[0, 4:6] = -2.5                                       # narrow enough to resolve
    dist = obs(out)
    p = dist.log_prob(ALL_LEVELS.view(LEVELS, 1, 1, 1, 1)).exp().squeeze(-1)   # (256,)
    torch.manual_seed(4)
    n = 40_000
    k = (dist.sample((n,)).reshape(n) * 255).round().long()
    freq = torch.bincount(k, minlength=LEVELS).double() / n
    se = (p * (1 - p) / n).sqrt()
    assert ((freq - p).abs() <= 5 * se + 1e-4).all()
    assert float((freq * ALL_LEVELS).sum()) == pytest.approx(float((p * ALL_LEVELS).sum()),
                                                             abs=0.01)


def test_colour_samples_carry_the_coupling():
    params = torch.tensor([0.0, 0.0, 0.0, 0.0, -3.0, -3.0, -3.0,
                           math.atanh(0.9), 0.0, 0.0]).view(1, 10, 1, 1)
    dist = observation_for("discretized-logistic", (3, 1, 1),
                           SimpleNamespace(logistic_components=1))(params)
    torch.manual_seed(5)
    params[0, 4] = 0.0                                           # a wide R
    dist = observation_for("discretized-logistic", (3, 1, 1),
                           SimpleNamespace(logistic_components=1))(params)
    x = dist.sample((5000,)).reshape(5000, 3)
    r, g, b = (x[:, i] - x[:, i].mean() for i in range(3))
    assert float((r * g).mean() / (r.std() * g.std())) > 0.6      # G follows R (a = 0.9)
    assert abs(float((r * b).mean() / (r.std() * b.std()))) < 0.1  # B does not (b = c = 0)


@pytest.mark.parametrize("name", ["dequantized-gaussian", "dequantized-logistic"])
def test_dequantized_densities_bound_the_8_bit_probability(name):
    """P(k) = int over [k/256, (k+1)/256) of p(y) dy; E_u[log p] - log 256 <= log P(k) (Jensen),
    and the mean of p((k + u)/256) / 256 over draws of u is P(k) itself."""
    obs = observation_for(name, (1,), OPTS)
    loc = torch.tensor([[0.3]])
    dist = obs(loc)
    s = float(obs.std().detach())
    if name == "dequantized-gaussian":
        cdf = lambda y: torch.distributions.Normal(0.3, s).cdf(y)    # noqa: E731
    else:
        cdf = lambda y: torch.sigmoid((y - 0.3) / s)                 # noqa: E731
    k = torch.tensor([70.0, 76.0, 80.0, 100.0])
    exact = cdf((k + 1) / 256) - cdf(k / 256)                            # (4,)
    u = (torch.arange(20_000) + 0.5) / 20_000                            # E_u by quadrature
    e_log = dist._log_density((k[:, None] + u) / 256).mean(1) - math.log(256)
    assert (e_log < exact.log()).all() and (exact.log() - e_log < 0.05).all()
    torch.manual_seed(6)
    draws = torch.stack([dist.log_prob((k / 255).view(4, 1)) for _ in range(4000)])  # (R, 4)
    mc = draws.exp().mean(0)
    se = draws.exp().std(0) / math.sqrt(4000)
    assert ((mc - exact).abs() < 5 * se + 1e-12).all()
    assert exact.sum() < 1


@pytest.mark.parametrize("name", ["categorical", "discretized-logistic", "dequantized-gaussian",
                                  "dequantized-logistic"])
def test_8_bit_likelihoods_refuse_data_that_are_not_8_bit(name):
    cls = OBSERVATIONS.get(name)
    assert cls.discrete and not cls.binary
    cls.check_data("digits train", 0.0, 1.0, 256)                    # uint8 grey levels: fine
    for levels, kind in ((None, "real numbers"), (2, "2 levels")):
        with pytest.raises(DataError, match=f"digits train holds {kind}, but --likelihood "
                                            f"{name} models 8-bit values"):
            cls.check_data("digits train", 0.0, 1.0, levels)
    assert cls.bits_per_dim(-100.0 * 784 * math.log(2), 784) == pytest.approx(100.0)


def test_initial_bias_starts_the_decoder_at_the_data_per_value_or_per_channel():
    """An MLP's bias has one value per output, a convolution's one per channel: the same
    target, averaged over what the bias does not resolve."""
    mean = torch.rand(3, 4, 5, generator=torch.Generator().manual_seed(7)) * 0.8 + 0.1
    bern = observation_for("bernoulli", (3, 4, 5))
    per_value, per_channel = torch.zeros(3, 4, 5), torch.zeros(3, 1, 1)
    bern.init_bias(per_value, mean)
    bern.init_bias(per_channel, mean)
    torch.testing.assert_close(per_value.sigmoid(), mean)
    torch.testing.assert_close(per_channel, per_value.mean((1, 2), keepdim=True))
    dlm = observation_for("discretized-logistic", (3, 4, 5), OPTS)
    bias = torch.zeros(dlm.param_shape)
    dlm.init_bias(bias, mean)
    dist = dlm(bias.unsqueeze(0))
    torch.testing.assert_close(dist.means[0, 0], 2 * mean - 1)          # every component
    torch.testing.assert_close(dist.means[0, 2], 2 * mean - 1)
    torch.testing.assert_close(dist.log_scales, torch.zeros_like(dist.log_scales))  # no sd


def test_initial_scale_matches_each_channels_spread():
    """With the data's per-value sd, each channel's logistics start with the sd of its values
    (pooled over the pixels): 8-bit images drawn so that the three channels spread
    differently, the mixture's own sampled values against the data's sd."""
    g = torch.Generator().manual_seed(3)
    spread = torch.tensor([10.0, 25.0, 40.0]).view(1, 3, 1, 1)
    k = (128 + spread * torch.randn(20000, 3, 4, 5, generator=g)).round().clamp(0, 255)
    x = k / 255
    dlm = observation_for("discretized-logistic", (3, 4, 5), OPTS)
    bias = torch.zeros(dlm.param_shape)
    dlm.init_bias(bias, x.mean(0), x.std(0))
    dist = dlm(bias.unsqueeze(0))
    sd_data = x.std(0).square().mean((1, 2)).sqrt()                   # (3,) pooled per channel
    # a logistic of scale s has sd s pi / sqrt(3); the scale is on [-1, 1], the data on [0, 1]
    sd_model = dist.log_scales[0, 0, :, 0, 0].exp() * math.pi / math.sqrt(3) / 2
    torch.testing.assert_close(sd_model, sd_data, rtol=1e-5, atol=0)
    torch.manual_seed(0)
    draws = dist.sample((4000,))[:, 0]                                   # (4000, 3, 4, 5)
    # sampling quantizes (and clips the far tails): the sd of the draws within 3% of the data's
    torch.testing.assert_close(draws.std(0).mean((1, 2)), sd_data, rtol=0.03, atol=0)
    tiny = torch.full((3, 4, 5), 1e-6)                # a flat channel: log s clipped at -7
    dlm.init_bias(bias, x.mean(0), tiny)
    assert torch.all(dlm(bias.unsqueeze(0)).log_scales == -7.0)


def test_gradients_are_finite_at_extreme_parameters():
    obs = observation_for("discretized-logistic", (3, 2, 2), OPTS)
    out = torch.randn(4, *obs.param_shape) * 30
    out.requires_grad_(True)
    x = torch.tensor([0.0, 1.0, 0.5]).view(1, 3, 1, 1).expand(4, 3, 2, 2)
    lp = obs(out).log_prob(x)
    lp.sum().backward()
    assert torch.isfinite(lp).all() and torch.isfinite(out.grad).all()


def test_distribution_class_reads_its_parameter_layout():
    d = DiscretizedLogisticMixture(torch.zeros(2, 4, 5), torch.zeros(2, 4, 1, 5),
                                   torch.zeros(2, 4, 1, 5), torch.zeros(2, 4, 0, 5), 1, False)
    assert d.batch_shape == (2,) and d.event_shape == (5,)
