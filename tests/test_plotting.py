"""The figures of vaekit.plotting: each renders to PNG, and the specific choices hold in the
Figure objects: titles that scale with the figure and fit it, the manifold's z1 / z2 ticks,
a legend per distinct label, distinguishable gradient estimators, a mixture plot coloured by
the fitted components, whole-number EM iterations. No training (EM on 600 points aside).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from vaekit import plotting
from vaekit.models.mixtures import GaussianMixture
from vaekit.sampling import latent_grid
from vaekit.synthetic import gaussian_mixture_2d, true_gaussian_mixture_2d

TAB10 = np.array(colormaps["tab10"].colors)


def _saves(fig, tmp_path, name="fig.png") -> None:
    assert isinstance(fig, Figure)
    path = tmp_path / name
    plotting.save_figure(fig, path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _renderer(fig):
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return canvas.get_renderer()


def _inside(fig, artist, renderer) -> bool:
    box, page = artist.get_window_extent(renderer), fig.bbox
    return (box.x0 >= page.x0 - 1 and box.x1 <= page.x1 + 1 and box.y0 >= page.y0 - 1
            and box.y1 <= page.y1 + 1)


def _images(n, h=28, w=28, c=None):
    rng = np.random.default_rng(0)
    return rng.random((n, h * w * (c or 1)), dtype=np.float32)


class _Decoder(torch.nn.Module):
    """The least that :func:`latent_grid` needs: a 2-D latent space and a decoder mean."""

    latent_dim = 2

    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(2, 36)

    def decoder_mean(self, z):
        return torch.sigmoid(self.lin(z))


# ------------------------------------------------------------------ image grids
def _grids():
    x = _images(50)
    return {
        "samples": plotting.plot_samples(_images(100), (28, 28)),
        "reconstructions": plotting.plot_reconstructions(x, x[::-1], (28, 28)),
        "denoising": plotting.plot_denoising(x[:10], x[:10], x[:10], (28, 28)),
        "interpolations": plotting.plot_interpolations(_images(80).reshape(8, 10, -1),
                                                       (28, 28)),
        "manifold": plotting.plot_manifold(_images(400), (28, 28), 20),
    }


def test_image_grid_titles_scale_with_the_figure_and_fit(tmp_path):
    for name, fig in _grids().items():
        _saves(fig, tmp_path, f"{name}.png")
        ax = fig.axes[0]
        width = fig.get_figwidth()
        assert width > 15, name                                  # ~2000 pixels at 120 dpi
        # at a third of 120 dpi, 1 pt = 0.56 px: 18 pt and up is legible
        assert ax.title.get_fontsize() >= 18, name
        assert _inside(fig, ax.title, _renderer(fig)), name


def test_small_grid_keeps_a_readable_font_and_wraps_a_long_title(tmp_path):
    title = "component means of a mixture fitted by EM, ordered by their weight, " * 3
    fig = plotting.plot_samples(_images(4, 8, 8), (8, 8), ncols=4, title=title)
    _saves(fig, tmp_path)
    t = fig.axes[0].title
    assert t.get_fontsize() >= 10
    assert t.get_text().count("\n") >= 2
    assert t.get_text().replace("\n", " ").split() == title.split()
    assert _inside(fig, t, _renderer(fig))


def test_big_fonts_shrink_the_images_by_no_more_than_the_title():
    fig = plotting.plot_samples(_images(100), (28, 28))
    grid_h = 10 * 29 + 1
    assert fig.get_figheight() >= grid_h * 0.06          # the title adds height, not the images


def test_colour_images_still_work(tmp_path):
    fig = plotting.plot_samples(_images(16, 8, 8, c=3), (3, 8, 8), ncols=4)
    _saves(fig, tmp_path, "colour.png")
    assert fig.axes[0].get_images()[0].get_array().shape[-1] == 3
    fig = plotting.plot_manifold(_images(9, 6, 6, c=3), (3, 6, 6), 3,
                                 z=np.array([-1.0, 0.0, 1.0]))
    _saves(fig, tmp_path, "colour_manifold.png")
    assert fig.axes[0].get_images()[0].get_array().shape == (18, 18, 3)


# ------------------------------------------------------------------ the manifold's axes
def test_manifold_ticks_are_the_grid_coordinates(tmp_path):
    torch.manual_seed(0)
    n = 6
    images, z = latent_grid(_Decoder(), n)
    fig = plotting.plot_manifold(images, (6, 6), n, z=z)
    _saves(fig, tmp_path)
    ax = fig.axes[0]
    assert ax.axison
    assert ax.get_xlabel() == "$z_1$" and ax.get_ylabel() == "$z_2$"
    z1 = [f"{v:.2f}" for v in z[:n, 0].tolist()]          # the columns, left to right
    z2 = [f"{v:.2f}" for v in z[::n, 1].tolist()]         # the rows, top down
    xt = [t.get_text() for t in ax.get_xticklabels()]
    yt = [t.get_text() for t in ax.get_yticklabels()]
    assert xt and set(xt) <= set(z1) and xt[-1] == z1[-1]
    assert yt and set(yt) <= set(z2) and yt[-1] == z2[-1]
    assert float(z2[0]) > 0 > float(z2[-1])               # z2 decreases down the rows
    # each tick sits at its cell's centre (6-pixel cells)
    for pos, text in zip(ax.get_xticks(), xt, strict=True):
        assert z1[int(round((pos - 2.5) / 6))] == text
    for pos, text in zip(ax.get_yticks(), yt, strict=True):
        assert z2[int(round((pos - 2.5) / 6))] == text
    # the 1-D quantiles give the same axes
    q = z[:n, 0]
    same = plotting.plot_manifold(images, (6, 6), n, z=q).axes[0]
    assert [t.get_text() for t in same.get_yticklabels()] == yt
    assert _inside(fig, ax.xaxis.label, _renderer(fig))


def test_manifold_20x20_thins_its_ticks_and_without_z_has_none(tmp_path):
    n = 20
    q = torch.distributions.Normal(0.0, 1.0).icdf(torch.linspace(0.05, 0.95, n))
    fig = plotting.plot_manifold(_images(n * n), (28, 28), n, z=q)
    _saves(fig, tmp_path)
    ax = fig.axes[0]
    r = _renderer(fig)
    boxes = [t.get_window_extent(r) for t in ax.get_xticklabels()]
    assert len(boxes) >= 5
    assert all(a.x1 < b.x0 for a, b in zip(boxes, boxes[1:], strict=False))  # no overlap
    assert all(_inside(fig, t, r) for t in ax.get_xticklabels() + ax.get_yticklabels())
    plain = plotting.plot_manifold(_images(n * n), (28, 28), n).axes[0]
    assert not plain.axison
    with pytest.raises(ValueError, match="z must be"):
        plotting.plot_manifold(_images(n * n), (28, 28), n, z=np.zeros((n, 2)))


# ------------------------------------------------------------------ labels as a legend
def _legend_texts(legend):
    return [t.get_text() for t in legend.get_texts()]


def test_latent_labels_make_a_discrete_legend(tmp_path):
    rng = np.random.default_rng(1)
    values = np.array([0, 2, 3, 5, 6, 8, 9])
    labels = rng.choice(values, 500)
    mu = rng.normal(size=(500, 2))
    fig = plotting.plot_latent(torch.as_tensor(mu), torch.as_tensor(labels))
    _saves(fig, tmp_path)
    assert len(fig.axes) == 1                                     # no colour bar
    ax = fig.axes[0]
    assert _legend_texts(ax.get_legend()) == [str(v) for v in values]
    colours = ax.collections[0].get_facecolors()[:, :3]
    for v in values:                          # one colour per label, a different one for each
        assert np.allclose(colours[labels == v], TAB10[v])
    assert _inside(fig, ax.get_legend(), _renderer(fig))

    names = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
    named = plotting.plot_latent(mu, labels, label_names=names)
    assert _legend_texts(named.axes[0].get_legend()) == [names[v] for v in values]


def test_latent_without_labels_and_with_many_labels(tmp_path):
    rng = np.random.default_rng(2)
    mu = rng.normal(size=(300, 2))
    plain = plotting.plot_latent(mu)
    _saves(plain, tmp_path, "plain.png")
    assert plain.axes[0].get_legend() is None
    many = plotting.plot_latent(mu, np.arange(300) % 50)           # too many for a legend
    _saves(many, tmp_path, "many.png")
    assert len(many.axes) == 2 and many.axes[0].get_legend() is None


def test_latent_panels_share_colours_and_one_legend(tmp_path):
    rng = np.random.default_rng(3)
    a, b = rng.integers(0, 4, 200), rng.integers(2, 7, 200)   # 0..3 and 2..6: 7 in all
    fig = plotting.plot_latent_panels([("a", rng.normal(size=(200, 2)), a),
                                       ("b", rng.normal(size=(200, 2)), b)])
    _saves(fig, tmp_path)
    assert fig.axes[0].get_legend() is None
    assert len(_legend_texts(fig.axes[1].get_legend())) == len(np.unique(np.r_[a, b])) == 7
    ca = fig.axes[0].collections[0].get_facecolors()[:, :3]
    cb = fig.axes[1].collections[0].get_facecolors()[:, :3]
    for v in (2, 3):                                              # in both panels
        assert np.allclose(ca[a == v], TAB10[v]) and np.allclose(cb[b == v], TAB10[v])
    assert _inside(fig, fig.axes[1].get_legend(), _renderer(fig))
    unlabelled = plotting.plot_latent_panels([("a", rng.normal(size=(10, 2)), None)])
    _saves(unlabelled, tmp_path, "unlabelled.png")


# ------------------------------------------------------------------ gradient study
def _gradient_rows():
    rows = []
    for i, name in enumerate(["elbo", "elbo-stl", "elbo-sf", "iwae", "iwae-dreg"]):
        for k in (1, 5, 50):
            for group in ("model", "inference"):
                # theta: STL's gradient is the ELBO's, DReG's is IWAE's
                base = {"elbo-stl": 0, "iwae-dreg": 3}.get(name, i) if group == "model" else i
                rows.append({"estimator": name, "num_samples": k, "group": group,
                             "snr_mean": (base + 1) * k ** 0.3,
                             "variance": 1e-2 / (base + 1) / k})
    rows.append({"estimator": "vimco", "num_samples": 1, "skipped": "K = 1"})
    return rows


def test_gradient_study_keeps_coinciding_estimators_apart(tmp_path):
    title = "gradient estimators at runs/vae-2d (best), batch of 100, 100 draws each"
    fig = plotting.plot_gradient_study(_gradient_rows(), title=title)
    _saves(fig, tmp_path)
    assert fig.get_suptitle() == title
    assert len(fig.axes) == 4
    for ax in fig.axes:
        lines = ax.get_lines()
        assert len(lines) == 5                                    # vimco was skipped
        assert len({ln.get_marker() for ln in lines}) == 5
        assert len({str(ln.get_linestyle()) for ln in lines}) >= 4
        assert len({(ln.get_marker(), str(ln.get_linestyle())) for ln in lines}) == 5
    elbo, stl = fig.axes[0].get_lines()[:2]                      # theta SNR: the same values
    np.testing.assert_allclose(elbo.get_ydata(), stl.get_ydata())
    assert np.all(np.asarray(stl.get_xdata()) > np.asarray(elbo.get_xdata()))   # shifted
    np.testing.assert_allclose(np.asarray(stl.get_xdata()) / np.asarray(elbo.get_xdata()),
                               10 ** 0.02)
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["1", "5", "50"]
    assert len(_legend_texts(fig.axes[0].get_legend())) == 5


def test_gradient_study_defaults(tmp_path):
    fig = plotting.plot_gradient_study(_gradient_rows())        # the call cli.py made
    _saves(fig, tmp_path)
    assert fig.get_suptitle() == ""
    flat = plotting.plot_gradient_study(_gradient_rows(), offset=0)
    xs = {tuple(ln.get_xdata()) for ln in flat.axes[0].get_lines()}
    assert xs == {(1, 5, 50)}


# ------------------------------------------------------------------ mixtures and EM
@pytest.fixture(scope="module")
def fitted():
    data = gaussian_mixture_2d(600, seed=4)
    return data, GaussianMixture(3, "diag").fit(data.train.double())


def test_mixture_colours_follow_the_fitted_components_not_the_labels(tmp_path, fitted):
    data, fit = fitted
    x = data.train
    predicted = fit.predict(x).numpy()
    labels = (predicted + 1) % 3                      # every label differs from predict()
    fig = plotting.plot_mixture_2d(x, labels, true_gaussian_mixture_2d(), fit)
    _saves(fig, tmp_path)
    ax = fig.axes[0]
    colours = ax.collections[0].get_facecolors()[:, :3]
    np.testing.assert_allclose(colours, TAB10[predicted])
    assert not np.allclose(colours, TAB10[labels])
    title = ax.get_title()
    assert "most probable fitted component" in title and "label" not in title
    assert _legend_texts(ax.get_legend()) == ["true", "fitted (EM)"]
    (components,) = [a for a in ax.artists if a is not ax.get_legend()]
    assert components.get_title().get_text() == "fitted component"
    assert _legend_texts(components) == ["0", "1", "2"]
    r = _renderer(fig)
    assert _inside(fig, components, r) and _inside(fig, ax.title, r)

    by_label = plotting.plot_mixture_2d(x, labels, None, fit, color_by="labels")
    _saves(by_label, tmp_path, "labels.png")
    np.testing.assert_allclose(by_label.axes[0].collections[0].get_facecolors()[:, :3],
                               TAB10[labels])
    assert "labels" in by_label.axes[0].get_title()
    only_labels = plotting.plot_mixture_2d(x, labels)            # auto: no fit, the labels
    assert "labels" in only_labels.axes[0].get_title()
    assert len(_legend_texts(only_labels.axes[0].get_legend())) == 3
    bare = plotting.plot_mixture_2d(x)
    _saves(bare, tmp_path, "bare.png")
    assert bare.axes[0].get_legend() is None
    with pytest.raises(ValueError, match="fitted_mixture"):
        plotting.plot_mixture_2d(x, labels, color_by="fitted")
    with pytest.raises(ValueError, match="color_by"):
        plotting.plot_mixture_2d(x, labels, color_by="component")


def test_em_history_has_whole_number_iterations(tmp_path, fitted):
    _, fit = fitted
    for history in ([-3.0, -2.5, -2.4], fit.history_, {"a": [1.0, 2.0], "b": [0.5, 1.5, 1.7]}):
        fig = plotting.plot_em_history(history)
        _saves(fig, tmp_path)
        ax = fig.axes[0]
        assert isinstance(ax.xaxis.get_major_locator(), MaxNLocator)
        _renderer(fig)
        ticks = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
        assert ticks and all(float(t).is_integer() for t in ticks)
