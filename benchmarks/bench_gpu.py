"""GPU speed of the IWAE paper's one-layer VAE (784-200-200-50 tanh, Bernoulli, ELBO), each
figure beside the device's float32 matrix-product peak measured in the same run.

Printed, on one device (``--device``, default cuda; ``cpu`` for a smoke run):
  * the peak: TFLOP/s of a large float32 matmul (and bf16 with ``--precision bf16``);
  * training images/s of vaekit's ``Trainer`` at batch 20, 100 and 1000 (one epoch of a
    training set sized to take a few seconds, after a warm-up epoch), eager and with
    ``cuda_graphs`` (the step captured once and replayed, vaekit.cuda_graphs), and the share
    of the peak that the step's matrix products (6 x parameters x batch FLOPs) reach;
  * the k = 5000 log-likelihood of 10,000 test images (``vaekit.evaluation.log_likelihood``):
    seconds, and the decoder's share of the peak (2 x decoder parameters x k x N FLOPs).
Binarized MNIST from ``--data-dir`` when present, else random binary images of the same
shape and density. Meant to finish in under 5 minutes on one GPU.

Usage:  python benchmarks/bench_gpu.py [--device cuda] [--data-dir ../shared/data]
        [--batch-sizes 20 100 1000] [--precision fp32|tf32|bf16] [--eval-images 10000]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from vaekit.config import load_config
from vaekit.evaluation import log_likelihood
from vaekit.models import build_model
from vaekit.training import Trainer

SHAPE = (1, 28, 28)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda")
    p.add_argument("--data-dir", default=str(Path(__file__).resolve().parents[2] / "shared"
                                             / "data"))
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[20, 100, 1000])
    p.add_argument("--precision", default="fp32", choices=("fp32", "tf32", "bf16"))
    p.add_argument("--eval-images", type=int, default=10000)
    p.add_argument("--eval-samples", type=int, default=5000)
    p.add_argument("--seconds", type=float, default=5.0, help="target seconds per training "
                                                              "measurement")
    return p.parse_args(argv)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_peak(device: torch.device, dtype: torch.dtype, n: int) -> float:
    """TFLOP/s of an n x n matrix product, best of 5 timed batches of calls."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    reps = 20 if device.type == "cuda" else 2
    a @ b
    best = float("inf")
    for _ in range(5):
        sync(device)
        t = time.perf_counter()
        for _ in range(reps):
            a @ b
        sync(device)
        best = min(best, time.perf_counter() - t)
    return 2 * n ** 3 * reps / best / 1e12


def load_data(data_dir: str) -> tuple[torch.Tensor, torch.Tensor, str]:
    try:
        from vaekit.data import load_binarized_mnist
        d = load_binarized_mnist(data_dir, download_missing=False)
        return d.raw_train, d.test, "binarized-mnist"
    except Exception:
        g = torch.Generator().manual_seed(0)
        return ((torch.rand(50000, *SHAPE, generator=g) < 0.13).to(torch.uint8),
                (torch.rand(10000, *SHAPE, generator=g) < 0.13).float(),
                "random binary (no data)")


def model_and_config(device: torch.device, batch: int, precision: str, x: torch.Tensor,
                     cuda_graphs: bool = False):
    cfg = load_config("iwae-paper-1layer")
    cfg.train.batch_size, cfg.train.lr_schedule = batch, "constant"
    cfg.train.cuda_graphs = cuda_graphs
    cfg.train.device, cfg.train.precision, cfg.train.tracking = str(device), precision, "none"
    torch.manual_seed(0)
    model = build_model(cfg.model, SHAPE)
    model.init_decoder_bias(x.float().mean(0))
    return model, cfg


def training_rate(x: torch.Tensor, device: torch.device, batch: int, precision: str,
                  seconds: float, cuda_graphs: bool = False,
                  log=print) -> tuple[float, int]:
    """(images/s, parameters) of one timed epoch, after a warm-up epoch sized alike (with
    ``cuda_graphs`` each epoch's trainer warms up and captures its step anew, inside the
    timing)."""
    model, cfg = model_and_config(device, batch, precision, x, cuda_graphs)
    params = sum(p.numel() for p in model.parameters())
    n = batch * 50
    rate = None
    while True:
        data = x[torch.arange(n) % x.shape[0]]
        cfg.train.epochs = 1
        trainer = Trainer(model, cfg.train, data, data[:100].float(), estimator=cfg.estimator,
                          progress=False, log=log)
        sync(device)
        t = time.perf_counter()
        trainer.fit(restore_best=False)
        sync(device)
        elapsed = time.perf_counter() - t
        if rate is not None and elapsed >= 0.5 * seconds:
            return n / elapsed, params
        rate = n / elapsed                       # this one was the warm-up (or too short)
        n = max(n, int(rate * seconds) // batch * batch)


def main(argv=None) -> None:
    args = parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda":
        print(f"device: {torch.cuda.get_device_name(device)}, torch {torch.__version__}")
        if args.precision == "tf32":
            torch.backends.cuda.matmul.allow_tf32 = True
    else:
        print(f"device: {device} ({torch.get_num_threads()} threads), torch {torch.__version__}")
    n = 8192 if device.type == "cuda" else 1024
    peak = matmul_peak(device, torch.float32, n)
    print(f"float32 matmul peak ({n}x{n}): {peak:.1f} TFLOP/s")
    if args.precision == "bf16":
        bpeak = matmul_peak(device, torch.bfloat16, n)
        print(f"bfloat16 matmul peak: {bpeak:.1f} TFLOP/s")
        peak = bpeak
    x, test, source = load_data(args.data_dir)
    print(f"data: {source}; precision {args.precision}")
    print("batch  training images/s  share of peak   with CUDA graphs  share   graphs / eager")
    notes: set[str] = set()
    for batch in args.batch_sizes:
        rate, params = training_rate(x, device, batch, args.precision, args.seconds)
        graphed, _ = training_rate(x, device, batch, args.precision, args.seconds, True,
                                   notes.add)
        share, gshare = (6 * params * r / (peak * 1e12) for r in (rate, graphed))
        print(f"{batch:5d}  {rate:17,.0f}  {share:13.2%}   {graphed:16,.0f}  {gshare:6.2%}"
              f"   {graphed / rate:6.2f}")
    for line in sorted(notes):
        print(f"  note: {line}")
    model, _ = model_and_config(device, 100, "fp32", x)
    model = model.to(device)
    xe = test[:args.eval_images].to(device)
    log_likelihood(model, xe[:100], 100)                       # warm-up (and compile)
    sync(device)
    t = time.perf_counter()
    ll = log_likelihood(model, xe, args.eval_samples)
    sync(device)
    elapsed = time.perf_counter() - t
    dec = sum(p.numel() for p in model.decoder_net.parameters())
    share = 2 * dec * args.eval_samples * xe.shape[0] / elapsed / (peak * 1e12)
    value = float(ll.mean())
    print(f"k={args.eval_samples} log-likelihood of {xe.shape[0]} images: {elapsed:.1f} s "
          f"({share:.1%} of the peak in the decoder's products; mean {value:.2f} nats, "
          "untrained model)")


if __name__ == "__main__":
    main()
