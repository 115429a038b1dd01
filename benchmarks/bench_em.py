"""EM for a full-covariance Gaussian mixture: vaekit against scikit-learn from the same start.

The comparison of issue 13: the first 20 principal components of the first 10,000 MNIST
training images (grey levels / 255, float64), K = 10 full covariances, reg_covar 1e-6, tol 0,
10 and 100 EM iterations. vaekit's k-means++ initialisation (seed 0) is handed to both:
``GaussianMixture.set_parameters`` + ``warm_start=True`` for vaekit, ``weights_init``,
``means_init``, ``precisions_init`` for ``sklearn.mixture.GaussianMixture`` (which then skips
its own initialisation). Both run the same number of E- and M-steps (n + 1 and n).

Everything is measured in this one process, alternating the contenders over several rounds
and keeping each one's best round; both are limited to the same number of CPU threads (torch
and the BLAS / OpenMP pools numpy and scikit-learn use, through threadpoolctl). Printed: the
seconds of each ``fit``, the speed-up (scikit-learn seconds / vaekit seconds: > 1 means vaekit
is faster) and how far apart the fits end (final mean log-likelihood, means, covariances).
With ``--device cuda`` vaekit runs on the GPU (float64) and scikit-learn on the CPU.

Usage:  python benchmarks/bench_em.py [--threads 1] [--data-dir ../shared/data] [--rounds 3]
        [--iters 10 100] [--device cpu|cuda] [--quick]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from pathlib import Path

N_POINTS, N_PCS, K = 10_000, 20, 10


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=1,
                   help="CPU threads for both contenders (torch, BLAS, OpenMP); default 1")
    p.add_argument("--data-dir", default=str(Path(__file__).resolve().parents[2] / "shared"
                                             / "data"),
                   help="where mnist/train-images-idx3-ubyte[.gz] is looked up")
    p.add_argument("--rounds", type=int, default=3, help="rounds; each contender's best kept")
    p.add_argument("--iters", type=int, nargs="+", default=[10, 100], help="EM iterations")
    p.add_argument("--device", default="cpu", help="vaekit's device: cpu or cuda")
    p.add_argument("--quick", action="store_true", help="one round of 10 iterations (smoke)")
    return p.parse_args(argv)


ARGS = parse_args() if __name__ == "__main__" else None
if ARGS is not None:             # before numpy / torch start their thread pools
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(ARGS.threads)

import numpy as np  # noqa: E402
import torch  # noqa: E402
from sklearn.exceptions import ConvergenceWarning  # noqa: E402
from sklearn.mixture import GaussianMixture as SkGaussianMixture  # noqa: E402
from threadpoolctl import threadpool_limits  # noqa: E402

from vaekit.models.mixtures import GaussianMixture  # noqa: E402


def load_points(data_dir: str) -> tuple[torch.Tensor, str]:
    """``(10000, 20)`` float64: the first 20 principal components (SVD of the centred data) of
    the first 10,000 MNIST training images in [0, 1]; synthetic data of that shape if absent."""
    try:
        from vaekit.image_data import load_mnist
        images = load_mnist(data_dir, download_missing=False).raw_train[:N_POINTS]
        x, source = images.reshape(N_POINTS, -1).double() / 255, "mnist"
    except Exception as e:                        # no data: 10 Gaussian blobs in R^784
        print(f"note: MNIST not found under {data_dir} ({type(e).__name__}); using synthetic "
              "data of the same shape (10 Gaussian clusters)", file=sys.stderr)
        g = torch.Generator().manual_seed(0)
        centres = torch.rand(K, 784, generator=g, dtype=torch.float64)
        z = torch.randint(K, (N_POINTS,), generator=g)
        x = centres[z] + 0.3 * torch.randn(N_POINTS, 784, generator=g, dtype=torch.float64)
        source = "synthetic (no MNIST)"
    xc = x - x.mean(0)
    _, _, vh = torch.linalg.svd(xc, full_matrices=False)
    return (xc @ vh[:N_PCS].T).contiguous(), source


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_vaekit(x: torch.Tensor, start, iters: int) -> tuple[float, GaussianMixture]:
    sync(x.device)
    t = time.perf_counter()
    m = GaussianMixture(K, "full", tol=0.0, max_iter=iters, reg_covar=1e-6, warm_start=True)
    m.set_parameters(*start)
    m.fit(x)
    sync(x.device)
    return time.perf_counter() - t, m


def run_sklearn(x: np.ndarray, start, iters: int) -> tuple[float, SkGaussianMixture]:
    w0, m0, p0 = start
    t = time.perf_counter()
    sk = SkGaussianMixture(K, covariance_type="full", tol=0.0, max_iter=iters, reg_covar=1e-6,
                           weights_init=w0, means_init=m0, precisions_init=p0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        sk.fit(x)
    return time.perf_counter() - t, sk


def main(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    threadpool_limits(args.threads)
    device = torch.device(args.device)
    iters_list, rounds = ([10], 1) if args.quick else (args.iters, args.rounds)
    x, source = load_points(args.data_dir)
    init = GaussianMixture(K, "full", seed=0, reg_covar=1e-6)
    init.initialize(x)                             # vaekit's k-means++ start, handed to both
    w0, m0, c0 = (t.clone() for t in (init.weights_, init.means_, init.covariances_))
    start_vk = tuple(t.to(device) for t in (w0, m0, c0))
    start_sk = (w0.numpy(), m0.numpy(), np.linalg.inv(c0.numpy()))
    xd, xn = x.to(device), x.numpy()
    print(f"torch {torch.__version__}, {args.threads} CPU thread(s), vaekit on {device}; data: "
          f"{source}, {tuple(x.shape)} float64, K={K} full covariances, tol=0")
    run_vaekit(xd, start_vk, 2)                    # warm-up (allocator, kernels)
    run_sklearn(xn, start_sk, 2)
    rows = []
    for iters in iters_list:
        best_vk = best_sk = float("inf")
        for _ in range(rounds):                    # alternate; keep each one's best
            t_vk, vk = run_vaekit(xd, start_vk, iters)
            t_sk, sk = run_sklearn(xn, start_sk, iters)
            best_vk, best_sk = min(best_vk, t_vk), min(best_sk, t_sk)
        assert vk.n_iter_ == sk.n_iter_ == iters
        # sklearn's lower_bound_ is the mean log-likelihood before its last M-step
        d_ll = abs(vk.history_[-2] - sk.lower_bound_)
        d_score = abs(vk.score(xd) - sk.score(xn))
        d_mu = float(np.abs(vk.means_.cpu().numpy() - sk.means_).max())
        d_cov = float(np.abs(vk.covariances_.cpu().numpy() - sk.covariances_).max())
        rows.append((iters, best_vk, best_sk, d_ll, d_score, d_mu, d_cov))
    print(f"\nseconds per fit, best of {rounds} round(s); speed-up = scikit-learn / vaekit")
    print(f"  {'iters':>5} {'vaekit':>9} {'sklearn':>9} {'speed-up':>9}   max |difference|: "
          "log-lik (last E-step), score, means, covariances")
    for iters, t_vk, t_sk, d_ll, d_score, d_mu, d_cov in rows:
        print(f"  {iters:>5} {t_vk:9.3f} {t_sk:9.3f} {t_sk / t_vk:8.2f}x   "
              f"{d_ll:.1e}  {d_score:.1e}  {d_mu:.1e}  {d_cov:.1e}")


if __name__ == "__main__":
    main(ARGS)
