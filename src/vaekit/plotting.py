"""Functions from arrays and training history to matplotlib figures (no model inside).

They use matplotlib's object-oriented API (``matplotlib.figure.Figure``), so no display or
pyplot state is involved; :func:`save_figure` writes a PNG atomically.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence

import numpy as np
import torch
from matplotlib.figure import Figure

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


def _image_figure(grid: np.ndarray, title: str, scale: float = 0.06) -> Figure:
    h, w = grid.shape[:2]
    fig = Figure(figsize=(max(3.0, w * scale), max(2.0, h * scale + 0.5)))
    ax = fig.add_subplot()
    _show(ax, grid)
    ax.set_title(title, fontsize=10)
    ax.axis("off")
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
                    fitted_mixture: object | None = None, n_std: float = 2.0) -> Figure:
    """Points in R^2 coloured by label, with the ``n_std``-standard-deviation ellipses of the
    true (solid black) and fitted (dashed red) Gaussian components.

    Args:
        x: ``(N, 2)`` points.
        labels: ``(N,)`` integer labels (e.g. the true components) or None.
        true_mixture, fitted_mixture: :class:`~vaekit.mixtures.GaussianMixture` with D = 2
            (full or diagonal), or None.
        n_std: ellipse half-axes in standard deviations (2: about 86% of a 2-D Gaussian's mass).

    Raises:
        ValueError: ``x`` is not ``(N, 2)``, or a mixture is not a 2-D Gaussian mixture.
    """
    from matplotlib.lines import Line2D

    x = _np(x)
    if x.ndim != 2 or x.shape[1] != 2:
        raise ValueError(f"plot_mixture_2d needs x of shape (N, 2), got {x.shape}")
    fig = Figure(figsize=(6.5, 5.5))
    ax = fig.add_subplot()
    c = None if labels is None else _np(labels)
    ax.scatter(x[:, 0], x[:, 1], c=c, cmap="tab10" if c is not None else None, s=5, alpha=0.5,
               vmin=0 if c is not None else None, vmax=9 if c is not None else None,
               linewidths=0)
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
        ax.legend(handles=handles, fontsize=8, title=f"{n_std:g}-sd ellipses", title_fontsize=8)
    ax.set_aspect("equal", adjustable="datalim")
    ax.set_xlabel("$x_1$")
    ax.set_ylabel("$x_2$")
    ax.set_title("mixture of Gaussians: data coloured by component", fontsize=10)
    fig.tight_layout()
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
    ax.set_xlabel("EM iteration (0 = initialisation)")
    ax.set_ylabel("mean log p(x) per point (nats)")
    ax.set_title("EM never decreases the log-likelihood", fontsize=10)
    ax.grid(True, alpha=0.3)
    if len(runs) > 1:
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig
