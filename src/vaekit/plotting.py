"""Functions from arrays and training history to matplotlib figures (no model inside).

They use matplotlib's object-oriented API (``matplotlib.figure.Figure``), so no display or
pyplot state is involved; :func:`save_figure` writes a PNG atomically.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

import numpy as np
import torch
from matplotlib.figure import Figure

from .io import atomic_path


def _np(x) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def tile_images(images, image_shape: Sequence[int], ncols: int, pad: int = 1) -> np.ndarray:
    """Tile ``images: (N, H*W)`` into one ``(rows*(H+pad)+pad, ncols*(W+pad)+pad)`` array."""
    imgs = _np(images).reshape(-1, *image_shape)
    n, h, w = imgs.shape
    nrows = math.ceil(n / ncols)
    out = np.ones((nrows * (h + pad) + pad, ncols * (w + pad) + pad), dtype=np.float32)
    for i, im in enumerate(imgs):
        r, c = divmod(i, ncols)
        out[pad + r * (h + pad):pad + r * (h + pad) + h,
            pad + c * (w + pad):pad + c * (w + pad) + w] = im
    return out


def _image_figure(grid: np.ndarray, title: str, scale: float = 0.06) -> Figure:
    h, w = grid.shape
    fig = Figure(figsize=(max(3.0, w * scale), max(2.0, h * scale + 0.5)))
    ax = fig.add_subplot()
    ax.imshow(grid, cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
    ax.set_title(title, fontsize=10)
    ax.axis("off")
    fig.tight_layout()
    return fig


def plot_samples(samples, image_shape: Sequence[int], ncols: int = 10,
                 title: str = "samples from the prior (E[x|z], z ~ p(z))") -> Figure:
    """A grid of samples ``(N, D)``."""
    return _image_figure(np.clip(tile_images(samples, image_shape, ncols), 0, 1), title)


def plot_reconstructions(x, x_rec, image_shape: Sequence[int], ncols: int = 10) -> Figure:
    """Rows of test images, each followed by a row of their reconstructions."""
    x, x_rec = _np(x), _np(x_rec)
    rows = []
    for i in range(0, len(x), ncols):
        rows += [x[i:i + ncols], x_rec[i:i + ncols]]
    stacked = np.concatenate(rows)
    return _image_figure(np.clip(tile_images(stacked, image_shape, ncols), 0, 1),
                         "test images (odd rows) and reconstructions E[x|z=E_q z] (even rows)")


def plot_denoising(noisy, clean, reconstructed, image_shape: Sequence[int]) -> Figure:
    """Three rows: corrupted inputs, the clean images, the denoising autoencoder's output."""
    stacked = np.concatenate([_np(noisy), _np(clean), _np(reconstructed)])
    return _image_figure(np.clip(tile_images(stacked, image_shape, len(_np(clean))), 0, 1),
                         "corrupted input (top), clean (middle), reconstruction (bottom)")


def plot_mixture_2d(x, labels, mixture, title: str = "test data and fitted components") -> Figure:
    """2-D data (coloured by ``labels`` when given) with each Gaussian component's mean and
    2-standard-deviation ellipse."""
    from matplotlib.patches import Ellipse
    x = _np(x)
    fig = Figure(figsize=(5.5, 4.8))
    ax = fig.add_subplot()
    kw = {"c": _np(labels), "cmap": "tab10"} if labels is not None else {}
    ax.scatter(x[:, 0], x[:, 1], s=5, alpha=0.5, **kw)
    means = _np(mixture.means_)
    covs = _np(mixture.covariances_)
    for k in range(means.shape[0]):
        cov = covs[k] if covs.ndim == 3 else np.diag(covs[k])
        vals, vecs = np.linalg.eigh(cov)
        angle = np.degrees(np.arctan2(vecs[1, -1], vecs[0, -1]))
        ax.add_patch(Ellipse(means[k], 4 * np.sqrt(vals[-1]), 4 * np.sqrt(vals[0]),
                             angle=angle, fill=False, color="black", lw=1.5))
        ax.plot(*means[k], "k+", ms=10)
    ax.set_title(title, fontsize=10)
    ax.set_aspect("equal", adjustable="datalim")
    fig.tight_layout()
    return fig


def plot_interpolations(paths, image_shape: Sequence[int]) -> Figure:
    """``paths: (P, S, D)``: each row decodes S points from one test image's posterior mean
    to another's."""
    paths = _np(paths)
    p, s, d = paths.shape
    return _image_figure(np.clip(tile_images(paths.reshape(p * s, d), image_shape, s), 0, 1),
                         "latent interpolations between pairs of test images")


def plot_manifold(images, image_shape: Sequence[int], n: int) -> Figure:
    """The decoded 2-D latent manifold: ``images: (n*n, D)`` from
    :func:`vaekit.sampling.latent_grid`."""
    return _image_figure(np.clip(tile_images(images, image_shape, n, pad=0), 0, 1),
                         "decoded latent grid (N(0,1) quantiles of z1, z2)", scale=0.03)


def plot_latent(mu, labels=None, title: str = "test set posterior means E_q[z|x]") -> Figure:
    """Scatter of 2-D posterior means ``mu: (N, 2)``, coloured by ``labels`` when given."""
    mu = _np(mu)
    fig = Figure(figsize=(5.5, 4.8))
    ax = fig.add_subplot()
    if labels is not None:
        labels = _np(labels)
        sc = ax.scatter(mu[:, 0], mu[:, 1], c=labels, cmap="tab10", s=6, alpha=0.8)
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


def plot_latent_panels(panels: Sequence[tuple]) -> Figure:
    """Side-by-side scatter of 2-D posterior means: ``panels`` of (title, mu (N, 2), labels)."""
    fig = Figure(figsize=(4.2 * len(panels), 4.0))
    for i, (title, mu, labels) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), i + 1)
        mu = _np(mu)
        kw = {"c": _np(labels), "cmap": "tab10"} if labels is not None else {}
        ax.scatter(mu[:, 0], mu[:, 1], s=4, alpha=0.7, **kw)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("$z_1$")
        ax.set_ylabel("$z_2$")
    fig.tight_layout()
    return fig


def plot_gradient_study(rows: Sequence[dict]) -> Figure:
    """SNR and variance of gradient estimators against K, for theta and phi (rows from
    :func:`vaekit.gradients.gradient_study`)."""
    fig = Figure(figsize=(10, 7))
    rows = [r for r in rows if "skipped" not in r]
    names = list(dict.fromkeys(r["estimator"] for r in rows))
    for col, group in enumerate(("model", "inference")):
        for row, (key, label) in enumerate((("snr_mean", "mean SNR |E g| / std g"),
                                            ("variance", "mean variance of g"))):
            ax = fig.add_subplot(2, 2, 2 * row + col + 1)
            for name in names:
                pts = sorted((r["num_samples"], r[key]) for r in rows
                             if r["estimator"] == name and r["group"] == group)
                if pts:
                    ks, vs = zip(*pts, strict=True)
                    ax.plot(ks, vs, marker="o", label=name)
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
                ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def save_figure(fig: Figure, path: str | os.PathLike, dpi: int = 120) -> None:
    """Write ``fig`` as PNG, atomically."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi)
