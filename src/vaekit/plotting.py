"""Functions from arrays and training history to matplotlib figures (no model inside).

They use matplotlib's object-oriented API (``matplotlib.figure.Figure``), so no display or
pyplot state is involved; :func:`save_figure` writes a PNG atomically.
"""

from __future__ import annotations

import math
import os
import textwrap
from collections.abc import Mapping, Sequence

import numpy as np
import torch
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from .io import atomic_path


def _np(x) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def _chw(image_shape: Sequence[int]) -> tuple[int, int, int]:
    shape = tuple(int(s) for s in image_shape)
    return (1, *shape) if len(shape) == 2 else shape


def tile_images(images, image_shape: Sequence[int], ncols: int, pad: int = 1) -> np.ndarray:
    """Tile ``images: (N, ...)`` (each with the values of one image) into one array
    ``(rows*(H+pad)+pad, ncols*(W+pad)+pad)`` for grey images, with a trailing channel axis
    of 3 for colour ones. ``image_shape`` is ``(H, W)`` or ``(C, H, W)``."""
    c, h, w = _chw(image_shape)
    imgs = _np(images).reshape(-1, c, h, w).transpose(0, 2, 3, 1)      # (N, H, W, C)
    n = imgs.shape[0]
    nrows = math.ceil(n / ncols)
    out = np.ones((nrows * (h + pad) + pad, ncols * (w + pad) + pad, c), dtype=np.float32)
    for i, im in enumerate(imgs):
        r, col = divmod(i, ncols)
        out[pad + r * (h + pad):pad + r * (h + pad) + h,
            pad + col * (w + pad):pad + col * (w + pad) + w] = im
    return out[..., 0] if c == 1 else out


def _show(ax, grid: np.ndarray) -> None:
    if grid.ndim == 2:
        ax.imshow(grid, cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
    else:
        ax.imshow(np.clip(grid, 0, 1), interpolation="nearest")


TITLE_POINTS_PER_INCH = 1.5
"""Title font size of the image grids in points per inch of figure width (clipped to
[10, 40]): the grids are about 2000 pixels wide and shown in the README at about a third of
that, where a 17-inch figure's 25-point title is still about 14 pixels high."""


def _title_fontsize(width: float) -> float:
    return float(np.clip(TITLE_POINTS_PER_INCH * width, 10.0, 40.0))


def _wrap(title: str, width: float, fontsize: float) -> list[str]:
    """``title`` broken into lines that fit ``width`` inches at ``fontsize`` points (an
    average character taken as 0.6 em, a little wider than DejaVu Sans')."""
    chars = max(10, int(0.92 * width * 72 / (0.6 * fontsize)))
    return textwrap.wrap(title, chars) or [""]


def _grid_ticks(ax, coords, cell: int, axis: str, fontsize: float, spacing: float) -> None:
    """Ticks at the centres of the grid's cells, labelled with ``coords`` (every k-th one when
    the labels would touch: ``spacing`` is the cells' distance in inches)."""
    labels = [f"{v:.2f}" for v in coords]
    pos = [i * cell + (cell - 1) / 2 for i in range(len(coords))]
    need = (max(len(t) for t in labels) * 0.6 + 1.0) * fontsize / 72 if axis == "x" \
        else 1.6 * fontsize / 72
    step = max(1, math.ceil(need / spacing))
    shown = list(range(len(coords)))[(len(coords) - 1) % step::step]   # keep the last one
    set_ticks = ax.set_xticks if axis == "x" else ax.set_yticks
    set_ticks([pos[i] for i in shown], [labels[i] for i in shown], fontsize=fontsize)
    set_ticks(pos, minor=True)


def _image_figure(grid: np.ndarray, title: str, scale: float = 0.06,
                  axes_values: tuple | None = None) -> Figure:
    """One image grid, ``scale`` inches per pixel, with a title whose font grows with the
    figure's width (wrapped to fit it). ``axes_values``: ``(column values, row values, cell
    height, cell width, x label, y label)`` draws them as ticks at the cells' centres;
    without it the axes are off."""
    h, w = grid.shape[:2]
    width = max(3.0, w * scale)
    fontsize = _title_fontsize(width)
    lines = _wrap(title, width, fontsize)
    title_h = (1.3 * len(lines) + 1.0) * fontsize / 72 + 0.3      # lines, pad and margins
    extra_w = extra_h = 0.0
    if axes_values is not None:
        tick_fs = 0.7 * fontsize
        extra_w = 5.5 * 0.6 * tick_fs / 72 + 2.5 * fontsize / 72     # tick labels + y label
        extra_h = 2.0 * tick_fs / 72 + 1.8 * fontsize / 72
    fig = Figure(figsize=(width + extra_w, max(2.0, h * scale + title_h + extra_h)))
    ax = fig.add_subplot()
    _show(ax, grid)
    ax.set_anchor("N")          # the title stays where tight_layout put it when aspect shrinks
    ax.set_title("\n".join(lines), fontsize=fontsize)
    if axes_values is None:
        ax.axis("off")
    else:
        cols, rows, cell_h, cell_w, xlabel, ylabel = axes_values
        tick_fs = 0.7 * fontsize
        _grid_ticks(ax, cols, cell_w, "x", tick_fs, cell_w * scale)
        _grid_ticks(ax, rows, cell_h, "y", tick_fs, cell_h * scale)
        ax.tick_params(which="major", length=0.35 * tick_fs, width=max(1.0, tick_fs / 12))
        ax.tick_params(which="minor", length=0.2 * tick_fs, width=max(0.8, tick_fs / 16))
        ax.set_xlabel(xlabel, fontsize=0.85 * fontsize)
        ax.set_ylabel(ylabel, fontsize=0.85 * fontsize)
    fig.tight_layout()
    return fig


def plot_samples(samples, image_shape: Sequence[int], ncols: int = 10,
                 title: str = "samples from the prior (E[x|z], z ~ p(z))") -> Figure:
    """A grid of samples ``(N, ...)``, shown as images of ``image_shape`` ((H, W) grey,
    (C, H, W) with C = 3 in colour)."""
    return _image_figure(np.clip(tile_images(samples, image_shape, ncols), 0, 1), title)


def plot_reconstructions(x, x_rec, image_shape: Sequence[int], ncols: int = 10) -> Figure:
    """Rows of test images, each followed by a row of their reconstructions."""
    x, x_rec = _np(x).reshape(len(x), -1), _np(x_rec).reshape(len(x_rec), -1)
    rows = []
    for i in range(0, len(x), ncols):
        rows += [x[i:i + ncols], x_rec[i:i + ncols]]
    stacked = np.concatenate(rows)
    return _image_figure(np.clip(tile_images(stacked, image_shape, ncols), 0, 1),
                         "test images (odd rows) and reconstructions E[x|z=E_q z] (even rows)")


def plot_denoising(noisy, clean, reconstructed, image_shape: Sequence[int]) -> Figure:
    """Three rows: corrupted inputs, the clean images, the denoising autoencoder's output."""
    n = len(_np(clean))
    stacked = np.concatenate([_np(a).reshape(n, -1) for a in (noisy, clean, reconstructed)])
    return _image_figure(np.clip(tile_images(stacked, image_shape, len(_np(clean))), 0, 1),
                         "corrupted input (top), clean (middle), reconstruction (bottom)")


def plot_interpolations(paths, image_shape: Sequence[int]) -> Figure:
    """``paths: (P, S, ...)``: each row decodes S points from one test image's posterior mean
    to another's."""
    paths = _np(paths)
    p, s = paths.shape[:2]
    return _image_figure(np.clip(tile_images(paths.reshape(p * s, -1), image_shape, s), 0, 1),
                         "latent interpolations between pairs of test images")


def plot_interpolation_panels(panels: Sequence[tuple], image_shape: Sequence[int]) -> Figure:
    """Latent interpolations of several models side by side: ``panels`` of
    (title, paths (P, S, D)) from :func:`vaekit.sampling.interpolations` on the same pairs."""
    fig = Figure(figsize=(3.2 * len(panels), 2.4))
    for i, (title, paths) in enumerate(panels):
        paths = _np(paths)
        p, s = paths.shape[:2]
        ax = fig.add_subplot(1, len(panels), i + 1)
        _show(ax, np.clip(tile_images(paths.reshape(p * s, -1), image_shape, s), 0, 1))
        ax.set_title(title, fontsize=9)
        ax.axis("off")
    fig.tight_layout()
    return fig


def _grid_coordinates(z, n: int) -> tuple[np.ndarray, np.ndarray]:
    """The z1 values of the manifold's columns and the z2 values of its rows (top down)."""
    z = _np(z).astype(float)
    if z.ndim == 1 and z.shape[0] == n:          # the quantiles, laid out as latent_grid does
        return z, z[::-1]
    if z.ndim == 2 and z.shape == (n * n, 2):    # rows top-left to bottom-right
        return z[:n, 0], z[::n, 1]
    raise ValueError(f"plot_manifold: z must be ({n * n}, 2) or ({n},), got {z.shape}")


def plot_manifold(images, image_shape: Sequence[int], n: int, z=None) -> Figure:
    """The decoded 2-D latent manifold: ``images: (n*n, D)`` from
    :func:`vaekit.sampling.latent_grid`.

    Args:
        z: where the grid was decoded, drawn as ticks on the axes z1 (columns) and z2 (rows):
            ``(n*n, 2)`` as :func:`~vaekit.sampling.latent_grid` returns it (rows of the grid
            top-left to bottom-right), or the ``n`` quantiles as one array (z1 = q along the
            columns, z2 = q reversed down the rows, latent_grid's layout). None: no axes.
    """
    c, h, w = _chw(image_shape)
    axes = None
    if z is not None:
        cols, rows = _grid_coordinates(z, n)
        axes = (cols, rows, h, w, "$z_1$", "$z_2$")
    return _image_figure(np.clip(tile_images(images, image_shape, n, pad=0), 0, 1),
                         "decoded latent grid (N(0,1) quantiles of z1, z2)", scale=0.03,
                         axes_values=axes)


MAX_LEGEND_LABELS = 20
"""Labels with at most this many distinct integer values get one colour each and a legend;
more (or non-integer ones) a continuous colour bar."""


def _label_colours(values: np.ndarray) -> dict | None:
    """A colour for each distinct integer label value (``tab10``, ``tab20`` beyond ten); the
    value itself picks the colour when it can, so that the same label has the same colour in
    every figure. None: too many values, or not integers."""
    values = np.asarray(values)
    if values.size == 0 or not np.all(np.isfinite(values.astype(float))):
        return None
    distinct = np.unique(values)
    if not np.all(distinct == np.round(distinct)) or len(distinct) > MAX_LEGEND_LABELS:
        return None
    distinct = distinct.astype(int)
    size = 10 if len(distinct) <= 10 else 20
    from matplotlib import colormaps
    palette = colormaps["tab10" if size == 10 else "tab20"].colors
    by_value = distinct.min() >= 0 and distinct.max() < size
    return {int(v): palette[v if by_value else i] for i, v in enumerate(distinct)}


def _label_name(value: int, label_names: Sequence[str] | None) -> str:
    if label_names is not None and 0 <= value < len(label_names):
        return str(label_names[value])
    return str(value)


def _discrete_legend(ax, colours: dict, label_names, title: str, shown=None, **kw):
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], linestyle="", marker="o", markersize=6, color=c,
                      label=_label_name(v, label_names))
               for v, c in colours.items() if shown is None or v in shown]
    return ax.legend(handles=handles, title=title, fontsize=8, title_fontsize=8,
                     loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0, **kw)


def _point_colours(labels: np.ndarray, colours: dict) -> np.ndarray:
    return np.array([colours[int(v)] for v in labels]).reshape(-1, 3)


def plot_latent(mu, labels=None, title: str = "test set posterior means E_q[z|x]",
                label_names: Sequence[str] | None = None) -> Figure:
    """Scatter of 2-D posterior means ``mu: (N, 2)``, coloured by ``labels`` when given: one
    colour per label with a legend (``label_names[i]`` names label i; default: the integers),
    or a colour bar for more than :data:`MAX_LEGEND_LABELS` labels or non-integer ones."""
    mu = _np(mu)
    labels = None if labels is None else _np(labels).reshape(-1)
    colours = None if labels is None else _label_colours(labels)
    longest = max((len(_label_name(v, label_names)) for v in colours), default=0) \
        if colours else 0
    fig = Figure(figsize=(min(9.0, 5.0 + 0.07 * longest), 4.8))
    ax = fig.add_subplot()
    if colours is not None:
        ax.scatter(mu[:, 0], mu[:, 1], c=_point_colours(labels, colours), s=6, alpha=0.8,
                   linewidths=0)
        _discrete_legend(ax, colours, label_names, "label", markerscale=1.0)
    elif labels is not None:
        sc = ax.scatter(mu[:, 0], mu[:, 1], c=labels, cmap="viridis", s=6, alpha=0.8)
        cb = fig.colorbar(sc, ax=ax)
        cb.set_label("label")
    else:
        ax.scatter(mu[:, 0], mu[:, 1], s=6, alpha=0.6)
    ax.set_xlabel("$z_1$")
    ax.set_ylabel("$z_2$")
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return fig


def plot_curves(history: Sequence[dict], valid_name: str = "ELBO") -> Figure:
    """Training objective and validation score (nats) per epoch from ``metrics.jsonl``."""
    fig = Figure(figsize=(6, 4))
    ax = fig.add_subplot()
    epochs = [r["epoch"] for r in history]
    nan = float("nan")
    train = [r.get("train_bound", r.get("train_elbo")) for r in history]
    valid = [r.get("valid_score", r.get("valid_elbo")) for r in history]
    train, valid = ([nan if v is None else v for v in vs] for vs in (train, valid))
    ax.plot(epochs, train, label="training objective")
    ax.plot(epochs, valid, label=f"validation {valid_name}")
    if epochs and max(epochs) > 100:
        ax.set_xscale("log")
    vals = [v for v in train + valid if math.isfinite(v)]
    if vals:   # the first epochs can be far below the rest: show the informative range
        lo, hi = np.percentile(vals, 5), max(vals)
        ax.set_ylim(lo - 0.05 * (hi - lo), hi + 0.05 * (hi - lo) + 1e-6)
    ax.set_xlabel("epoch")
    ax.set_ylabel("nats per example")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    return fig


def plot_monitor_curves(rows: Sequence[dict]) -> Figure:
    """The monitored bound L_k on the test set against training examples processed, one
    line per run (rows from :func:`vaekit.compare.run_summary`)."""
    fig = Figure(figsize=(6.5, 4.2))
    ax = fig.add_subplot()
    for r in rows:
        if r["monitor"]:
            ex, ll = zip(*r["monitor"], strict=True)
            ax.plot(ex, ll, marker="o", ms=3, label=f"{r['name']} ({r['objective']}, "
                                                   f"K={r['num_samples']})")
    k = next((r["monitor_num_samples"] for r in rows if r["monitor_num_samples"]), "k")
    ax.set_xscale("log")
    ax.set_xlabel("training examples processed")
    ax.set_ylabel(f"test L_{k} (nats per example)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_latent_panels(panels: Sequence[tuple],
                       label_names: Sequence[str] | None = None) -> Figure:
    """Side-by-side scatter of 2-D posterior means: ``panels`` of (title, mu (N, 2), labels).
    Integer labels get the same colour in every panel and one legend (right of the last
    panel; ``label_names[i]`` names label i, default: the integers)."""
    given = [_np(lab).reshape(-1) for _, _, lab in panels if lab is not None]
    colours = _label_colours(np.concatenate(given)) if given else None
    longest = max((len(_label_name(v, label_names)) for v in colours), default=0) \
        if colours else 0
    fig = Figure(figsize=(4.2 * len(panels) + (0.6 + 0.07 * longest if colours else 0), 4.0))
    ax = None
    for i, (title, mu, labels) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), i + 1)
        mu = _np(mu)
        if labels is None:
            kw = {}
        elif colours is not None:
            kw = {"c": _point_colours(_np(labels).reshape(-1), colours), "linewidths": 0}
        else:
            kw = {"c": _np(labels), "cmap": "viridis"}
        ax.scatter(mu[:, 0], mu[:, 1], s=4, alpha=0.7, **kw)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("$z_1$")
        ax.set_ylabel("$z_2$")
    if colours is not None and ax is not None:
        _discrete_legend(ax, colours, label_names, "label")
    fig.tight_layout()
    return fig


GRADIENT_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "<", ">", "h", "p")
GRADIENT_LINESTYLES = ("-", "--", "-.", ":", (0, (5, 1, 1, 1, 1, 1)), (0, (8, 2)))


def plot_gradient_study(rows: Sequence[dict], title: str | None = None,
                        offset: float = 0.02) -> Figure:
    """SNR and variance of gradient estimators against K, for theta and phi (rows from
    :func:`vaekit.gradients.gradient_study`).

    Each estimator has its own marker (open, so that one under another shows) and line
    style, and its points are shifted sideways by a few ``offset`` decades of K, so that
    estimators with the same values (STL's theta gradient is the ELBO's) stay visible.

    Args:
        title: the figure's title (e.g. the run and checkpoint); None: none.
        offset: the sideways shift between neighbouring estimators, in decades of K (0: the
            points at K itself).
    """
    fig = Figure(figsize=(10, 7.4 if title else 7))
    rows = [r for r in rows if "skipped" not in r]
    names = list(dict.fromkeys(r["estimator"] for r in rows))
    shift = {name: 10 ** (offset * (i - (len(names) - 1) / 2)) for i, name in enumerate(names)}
    style = {name: {"marker": GRADIENT_MARKERS[i % len(GRADIENT_MARKERS)],
                    "linestyle": GRADIENT_LINESTYLES[i % len(GRADIENT_LINESTYLES)],
                    "color": f"C{i % 10}"} for i, name in enumerate(names)}
    for col, group in enumerate(("model", "inference")):
        for row, (key, label) in enumerate((("snr_mean", "mean SNR |E g| / std g"),
                                            ("variance", "mean variance of g"))):
            ax = fig.add_subplot(2, 2, 2 * row + col + 1)
            for name in names:
                pts = sorted((r["num_samples"], r[key]) for r in rows
                             if r["estimator"] == name and r["group"] == group)
                if pts:
                    ks, vs = zip(*pts, strict=True)
                    ax.plot([k * shift[name] for k in ks], vs, label=name, markersize=7,
                            markerfacecolor="none", markeredgewidth=1.5, linewidth=1.4,
                            **style[name])
            ax.set_xscale("log")
            ax.set_yscale("log")
            ks_all = sorted({r["num_samples"] for r in rows})
            ax.set_xticks(ks_all, [str(k) for k in ks_all])
            ax.minorticks_off()
            ax.set_xlabel("K (samples per example)")
            ax.set_ylabel(label)
            ax.set_title(("theta (generative)" if group == "model" else "phi (inference)"),
                         fontsize=10)
            ax.grid(alpha=0.3)
            if row == 0 and col == 0:
                ax.legend(fontsize=8, title="estimator (points shifted in K)" if offset and
                          len(names) > 1 else None, title_fontsize=8)
    if title:
        fig.suptitle("\n".join(_wrap(title, 10, 12)), fontsize=12)
    fig.tight_layout()
    return fig


# ------------------------------------------------------------------ data that are not images
DATA_STYLE = {"color": "0.55", "label": "test data"}
SAMPLE_STYLE = {"color": "C3", "label": "model samples x ~ p(x)"}


def plot_samples_2d(data, samples, title: str = "model samples against the test data",
                    names: Sequence[str] = ("$x_1$", "$x_2$")) -> Figure:
    """A scatter of 2-D data ``(N, 2)`` (grey) and the model's samples ``(M, 2)`` (red) on
    the same axes."""
    data, samples = _np(data).reshape(-1, 2), _np(samples).reshape(-1, 2)
    fig = Figure(figsize=(6.4, 5.6))
    ax = fig.add_subplot(1, 1, 1)
    ax.scatter(data[:, 0], data[:, 1], s=6, alpha=0.6, linewidths=0, **DATA_STYLE)
    ax.scatter(samples[:, 0], samples[:, 1], s=6, alpha=0.6, linewidths=0, **SAMPLE_STYLE)
    ax.set_xlabel(names[0])
    ax.set_ylabel(names[1])
    ax.set_title(title, fontsize=12)
    ax.legend(fontsize=9, markerscale=2.5)
    fig.tight_layout()
    return fig


def plot_marginals(data, samples, kinds: Mapping[str, str] | None = None,
                   max_columns: int = 16,
                   title: str = "each column: test data against model samples") -> Figure:
    """Per-column marginals of data and samples (pandas DataFrames with the same columns):
    overlaid histograms (as densities, shared bins) for real columns, side-by-side bars of
    the frequencies for binary and categorical ones (``kinds``: column -> ``real`` |
    ``binary`` | ``categorical``; default: all real). The first ``max_columns`` columns."""
    columns = list(data.columns)[:max_columns]
    kinds = kinds or {}
    ncols = min(4, len(columns))
    nrows = math.ceil(len(columns) / ncols)
    fig = Figure(figsize=(3.2 * ncols, 2.6 * nrows + 0.6))
    for i, name in enumerate(columns):
        ax = fig.add_subplot(nrows, ncols, i + 1)
        a, b = data[name], samples[name]
        if kinds.get(name, "real") == "real":
            a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
            lo, hi = np.nanmin(a), np.nanmax(a)
            span = (hi - lo) or 1.0
            bins = np.linspace(lo - 0.25 * span, hi + 0.25 * span, 31)
            ax.hist(a, bins=bins, density=True, alpha=0.55, **DATA_STYLE)
            ax.hist(b, bins=bins, density=True, histtype="step", linewidth=1.6,
                    **SAMPLE_STYLE)                     # samples beyond the bins: not shown
        else:
            cats = list(dict.fromkeys([*sorted(map(str, a.unique())),
                                       *sorted(map(str, b.unique()))]))
            fa = a.astype(str).value_counts(normalize=True).reindex(cats, fill_value=0)
            fb = b.astype(str).value_counts(normalize=True).reindex(cats, fill_value=0)
            pos = np.arange(len(cats))
            ax.bar(pos - 0.2, fa.to_numpy(), width=0.4, **DATA_STYLE)
            ax.bar(pos + 0.2, fb.to_numpy(), width=0.4, **SAMPLE_STYLE)
            ax.set_xticks(pos, [c[:8] for c in cats], fontsize=7,
                          rotation=45 if len(cats) > 4 else 0)
            ax.set_ylabel("frequency", fontsize=8)
        ax.set_title(str(name)[:28], fontsize=10)
        ax.tick_params(labelsize=7)
        if i == 0:
            ax.legend(fontsize=7)
    fig.suptitle(title, fontsize=12)
    fig.tight_layout()
    return fig


def plot_pairs(data, samples, max_columns: int = 5,
               title: str = "pairs of real columns: test data against model samples") -> Figure:
    """Pairwise scatter plots of the first ``max_columns`` columns of data and samples
    (pandas DataFrames of real columns), data grey and samples red on every panel; the
    diagonal shows each column's histograms."""
    columns = list(data.columns)[:max_columns]
    n = len(columns)
    fig = Figure(figsize=(2.4 * n + 0.4, 2.4 * n + 0.6))
    for i, yi in enumerate(columns):
        for j, xj in enumerate(columns):
            ax = fig.add_subplot(n, n, i * n + j + 1)
            if i == j:
                a = np.asarray(data[xj], dtype=float)
                bins = np.linspace(a.min(), a.max(), 25) if a.max() > a.min() else 10
                ax.hist(a, bins=bins, density=True, alpha=0.55, **DATA_STYLE)
                ax.hist(np.asarray(samples[xj], dtype=float), bins=bins, density=True,
                        histtype="step", linewidth=1.4, **SAMPLE_STYLE)
            else:
                ax.scatter(samples[xj], samples[yi], s=3, alpha=0.35, linewidths=0,
                           **SAMPLE_STYLE)
                ax.scatter(data[xj], data[yi], s=7, alpha=0.9, linewidths=0,
                           **{**DATA_STYLE, "color": "0.15"})
            ax.tick_params(labelsize=6)
            if i == n - 1:
                ax.set_xlabel(str(xj)[:20], fontsize=8)
            if j == 0:
                ax.set_ylabel(str(yi)[:20], fontsize=8)
            if i == 0 and j == n - 1:
                ax.legend(fontsize=6, markerscale=2)
    fig.suptitle(title, fontsize=12)
    fig.tight_layout()
    return fig


def save_figure(fig: Figure, path: str | os.PathLike, dpi: int = 120) -> None:
    """Write ``fig`` as PNG, atomically."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi)


# ------------------------------------------------------------------ mixtures and the
# importance-sampling lesson (vaekit.mixtures, vaekit.importance_sampling)
PLOT_ZERO = 1e-12
"""Plotted values below this (the posterior proposal's zeros, up to float rounding) are drawn as
downward triangles at the bottom of their panel."""


def plot_importance_sampling(rows: Sequence[Mapping]) -> Figure:
    """Bias and standard deviation against n (log-log), one line per estimator.

    Top: p_hat(x) relative to p(x): |relative bias| with its 2 standard errors dotted (for these
    unbiased estimators the bias is Monte Carlo noise), and the relative sd. Bottom: log
    p_hat(x) in nats: |bias| (biased low) and sd. Dashed grey: the theory for the prior
    proposal from ``rel_var_p_theory`` = Var[p_hat]/p^2 (sd = its square root, exact for p_hat
    and the large-n delta method for log p_hat; log-bias ~ -Var/(2 p^2), shrinking like 1/n).
    Values below :data:`PLOT_ZERO` (the posterior proposal: zero up to rounding) are
    drawn as downward triangles at the bottom of the panel.

    Args:
        rows: the output of :func:`importance_sampling_study`.
    """
    fig = Figure(figsize=(10.5, 7.5))
    axes = fig.subplots(2, 2)
    panels = (
        (axes[0, 0], "rel_bias_p", "rel_bias_p_se", r"$|$bias$|$ of $\hat p(x)/p(x)$", None),
        (axes[0, 1], "rel_std_p", None, r"sd of $\hat p(x)/p(x)$", np.sqrt),
        (axes[1, 0], "bias_log_p", "bias_log_p_se", r"$|$bias$|$ of $\log\hat p(x)$ (nats)",
         lambda v: v / 2),
        (axes[1, 1], "std_log_p", None, r"sd of $\log\hat p(x)$ (nats)", np.sqrt),
    )
    prior = sorted((r for r in rows if r["estimator"] == "prior"), key=lambda r: r["n"])
    prior_var = np.array([r["rel_var_p_theory"] for r in prior])       # Var[p_hat] / p^2
    names = list(dict.fromkeys(r["estimator"] for r in rows))
    colors = {name: f"C{i}" for i, name in enumerate(names)}
    for ax, key, se_key, title, theory in panels:
        curves = []                                       # (name, n, values, is the s.e.)
        for name in names:
            sel = sorted((r for r in rows if r["estimator"] == name), key=lambda r: r["n"])
            n = np.array([r["n"] for r in sel], dtype=float)
            curves.append((name, n, np.abs([r[key] for r in sel]), False))
            if se_key is not None:
                curves.append((name, n, 2 * np.array([r[se_key] for r in sel]), True))
        big = np.concatenate([c[2][c[2] >= PLOT_ZERO] for c in curves] + [np.ones(0)])
        bottom = big.min() / 10 if big.size else 1e-6
        any_zero = False
        for name, n, v, is_se in curves:
            ok = v >= PLOT_ZERO
            any_zero |= bool((~ok).any()) and not is_se
            if is_se:
                ax.plot(n[ok], v[ok], linestyle=":", color=colors[name], linewidth=1)
                continue
            ax.plot(n, np.where(ok, v, bottom * 1.5), color=colors[name], label=name,
                    linestyle="-" if ok.all() else "--", marker="o" if ok.all() else None)
            ax.plot(n[ok], v[ok], "o", color=colors[name])
            ax.plot(n[~ok], np.full((~ok).sum(), bottom * 1.5), "v", color=colors[name])
        handles = []
        if theory is not None and prior:       # sd = sqrt(Var), log-bias ~ -Var / 2 (large n)
            (guide,) = ax.plot([r["n"] for r in prior], theory(prior_var), color="0.5",
                               linestyle="--", linewidth=1, label="theory, prior (large n)")
            handles.append(guide)
        if any_zero:
            ax.text(0.02, 0.1, r"$\blacktriangledown$ = 0 up to float rounding",
                    transform=ax.transAxes, fontsize=7)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_ylim(bottom=bottom)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("n (samples per estimate)")
        ax.grid(True, which="major", alpha=0.3)
        if handles:
            ax.legend(handles=handles, fontsize=8, loc="upper right")
    axes[0, 0].legend(fontsize=8, title="proposal q(z|x)", title_fontsize=8)
    fig.suptitle("importance sampling of p(x) on a mixture (dotted: 2 standard errors)",
                 fontsize=11)
    fig.tight_layout()
    return fig


def _covariance_2d(mixture) -> np.ndarray:
    cov = getattr(mixture, "covariances_", None)
    cov = None if cov is None else _np(cov)
    if cov is None:
        raise ValueError("plot_mixture_2d needs Gaussian mixtures")
    return cov if cov.ndim == 3 else np.stack([np.diag(c) for c in cov])


def _ellipses(ax, mixture, n_std: float, **style) -> None:
    from matplotlib.patches import Ellipse

    means, covs = _np(mixture.means_), _covariance_2d(mixture)
    if means.shape[1] != 2:
        raise ValueError(f"plot_mixture_2d needs 2-D mixtures, got D={means.shape[1]}")
    for mu, cov in zip(means, covs, strict=True):
        vals, vecs = np.linalg.eigh(cov)                       # ascending
        angle = math.degrees(math.atan2(vecs[1, 1], vecs[0, 1]))
        ax.add_patch(Ellipse(mu, 2 * n_std * math.sqrt(vals[1]), 2 * n_std * math.sqrt(vals[0]),
                             angle=angle, fill=False, **style))
        ax.plot(*mu, marker="+", color=style.get("edgecolor", "k"), markersize=8)


def plot_mixture_2d(x, labels=None, true_mixture: object | None = None,
                    fitted_mixture: object | None = None, n_std: float = 2.0, *,
                    color_by: str = "auto", label_names: Sequence[str] | None = None) -> Figure:
    """Points in R^2 coloured by the fitted mixture's most probable component (or by label),
    with the ``n_std``-standard-deviation ellipses of the true (solid black) and fitted
    (dashed red) Gaussian components. The title says what the colours are.

    Args:
        x: ``(N, 2)`` points.
        labels: ``(N,)`` integer labels (e.g. the true components) or None.
        true_mixture, fitted_mixture: :class:`~vaekit.mixtures.GaussianMixture` with D = 2
            (full or diagonal), or None.
        n_std: ellipse half-axes in standard deviations (2: about 86% of a 2-D Gaussian's mass).
        color_by: ``"fitted"``: each point's most probable component under ``fitted_mixture``
            (``fitted_mixture.predict(x)``); ``"labels"``: ``labels``; ``"auto"``: the fitted
            components when a fitted mixture is given, else the labels when given.
        label_names: ``label_names[i]`` names label i in the legend (default: the integers).

    Raises:
        ValueError: ``x`` is not ``(N, 2)``, a mixture is not a 2-D Gaussian mixture, or
            ``color_by`` asks for what is not given.
    """
    from matplotlib.lines import Line2D

    x = _np(x)
    if x.ndim != 2 or x.shape[1] != 2:
        raise ValueError(f"plot_mixture_2d needs x of shape (N, 2), got {x.shape}")
    if color_by not in ("auto", "fitted", "labels"):
        raise ValueError(f"color_by must be auto, fitted or labels, got {color_by!r}")
    if color_by == "auto":
        color_by = ("fitted" if fitted_mixture is not None else
                    "labels" if labels is not None else "none")
    if color_by == "fitted" and fitted_mixture is None:
        raise ValueError("color_by='fitted' needs a fitted_mixture")
    if color_by == "labels" and labels is None:
        raise ValueError("color_by='labels' needs labels")
    fig = Figure(figsize=(7.2, 5.5))
    ax = fig.add_subplot()
    names, values = label_names, None
    if color_by == "fitted":
        values = _np(fitted_mixture.predict(torch.as_tensor(x))).reshape(-1)
        k = len(_np(fitted_mixture.means_))
        colours = _label_colours(np.arange(k))
        names = [f"{i}" for i in range(k)]
        title = r"colour: most probable fitted component, $\mathrm{argmax}_k\,p(k \mid x)$"
        legend_title = "fitted component"
    elif color_by == "labels":
        values = _np(labels).reshape(-1)
        colours = _label_colours(values)
        title = "colour: the points' labels"
        legend_title = "label"
    else:
        colours, title = None, ""
    colour_legend = None
    if values is not None and colours is not None:
        ax.scatter(x[:, 0], x[:, 1], c=_point_colours(values, colours), s=7, alpha=0.6,
                   linewidths=0)
        colour_legend = _discrete_legend(ax, colours, names, legend_title,
                                         shown=set(values.astype(int).tolist()))
    elif values is not None:                         # many or non-integer labels
        sc = ax.scatter(x[:, 0], x[:, 1], c=values, cmap="viridis", s=5, alpha=0.5,
                        linewidths=0)
        fig.colorbar(sc, ax=ax).set_label(legend_title)
    else:
        ax.scatter(x[:, 0], x[:, 1], s=5, alpha=0.5, linewidths=0)
    handles = []
    if true_mixture is not None:
        _ellipses(ax, true_mixture, n_std, edgecolor="k", linewidth=1.8)
        handles.append(Line2D([], [], color="k", linewidth=1.8, label="true"))
    if fitted_mixture is not None:
        _ellipses(ax, fitted_mixture, n_std, edgecolor="tab:red", linewidth=1.5,
                  linestyle="--")
        handles.append(Line2D([], [], color="tab:red", linewidth=1.5, linestyle="--",
                              label="fitted (EM)"))
    if handles:
        if colour_legend is not None:
            ax.add_artist(colour_legend)     # kept when ax.legend makes the ellipses' legend
        ax.legend(handles=handles, fontsize=8, title=f"{n_std:g}-sd ellipses", title_fontsize=8)
    ax.set_aspect("equal", adjustable="datalim")
    ax.set_xlabel("$x_1$")
    ax.set_ylabel("$x_2$")
    ax.set_title("mixture of Gaussians" + (f"\n{title}" if title else ""), fontsize=10)
    fig.tight_layout()
    if colour_legend is not None and colour_legend is not ax.get_legend():
        # tight_layout leaves out legends added as artists: make room for it right of the axes
        room = colour_legend.get_window_extent().width / fig.bbox.width
        fig.tight_layout(rect=(0.0, 0.0, 1.0 - room - 0.02, 1.0))
    return fig


def plot_em_history(history: Sequence[float] | Mapping[str, Sequence[float]]) -> Figure:
    """Mean log-likelihood per point (nats) after each EM iteration (iteration 0: the
    initialisation), e.g. a fitted mixture's ``history_``; a mapping name -> history draws
    one line per run."""
    runs = dict(history) if isinstance(history, Mapping) else {"EM": history}
    fig = Figure(figsize=(6.0, 4.0))
    ax = fig.add_subplot()
    for name, h in runs.items():
        h = np.asarray([float(v) for v in h])
        ax.plot(np.arange(len(h)), h, marker="o", markersize=3, label=name)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("EM iteration (0 = initialisation)")
    ax.set_ylabel("mean log p(x) per point (nats)")
    ax.set_title("EM never decreases the log-likelihood", fontsize=10)
    ax.grid(True, alpha=0.3)
    if len(runs) > 1:
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


# ------------------------------------------------------------------ inference gaps (vaekit.gaps)
def plot_inference_gaps(result: Mapping, title: str | None = None) -> Figure:
    """The inference gap split into approximation and amortization gaps (Cremer, Li &
    Duvenaud 2018), from a ``gaps.json`` dict (:func:`vaekit.gaps.run_gaps`; nats per point).

    Left: one stacked bar, approximation gap (log p(x) - ELBO(q*)) below and amortization gap
    (ELBO(q*) - ELBO(q)) above, each with its standard error over the points; the bar's top is
    the inference gap log p(x) - ELBO(q); with ``approximation_gap_flow`` (``vaekit gaps
    --flow``), a dashed line at the approximation gap a local planar flow leaves. Right: the two
    gaps of every point (a point on the dashed line x = y has equal parts)."""
    fig = Figure(figsize=(10, 4.4 if title else 4))
    ax = fig.add_subplot(1, 2, 1)
    approx, amort = result["approximation_gap"], result["amortization_gap"]
    ax.bar([0], [approx], width=0.5, color="C0", label="approximation gap",
           yerr=[result["approximation_gap_se"]], capsize=6)
    ax.bar([0], [amort], width=0.5, bottom=[approx], color="C1", label="amortization gap",
           yerr=[result["amortization_gap_se"]], capsize=6)
    ax.axhline(0, color="0.3", linewidth=0.8)
    if result.get("approximation_gap_flow") is not None:
        ax.axhline(result["approximation_gap_flow"], color="C3", linestyle="--", linewidth=1.2,
                   label="approximation gap left by a local flow")
    ax.set_xticks([0], [f"{result.get('num_points', '')} points"])
    ax.set_xlim(-1, 1)
    ax.set_ylabel("nats per point")
    ax.set_title(f"inference gap {result['inference_gap']:.2f} = "
                 f"{approx:.2f} + {amort:.2f}", fontsize=10)
    ax.legend(fontsize=8, loc="upper left")
    ax.grid(axis="y", alpha=0.3)
    ax = fig.add_subplot(1, 2, 2)
    points = result.get("points") or {}
    a = np.asarray(points.get("approximation_gap", []), dtype=float)
    b = np.asarray(points.get("amortization_gap", []), dtype=float)
    ax.scatter(a, b, s=14, alpha=0.7, color="C2")
    if a.size:
        lo = min(0.0, float(a.min()), float(b.min()))
        hi = max(float(a.max()), float(b.max()), lo + 1e-3)
        ax.plot([lo, hi], [lo, hi], "--", color="0.5", linewidth=1)
    ax.set_xlabel("approximation gap (nats)")
    ax.set_ylabel("amortization gap (nats)")
    ax.set_title("per point", fontsize=10)
    ax.grid(alpha=0.3)
    if title:
        fig.suptitle("\n".join(_wrap(title, 10, 12)), fontsize=12)
    fig.tight_layout()
    return fig
