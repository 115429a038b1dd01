"""Training and evaluation speed of vaekit against a hand-written loop and GEMM-only ceilings.

Everything is measured in this one process, on this machine, alternating the contenders over
several rounds and keeping each one's best round:

training (the IWAE paper's one-layer VAE, 784-200-200-50 tanh, Bernoulli, batch 100):
  * vaekit      -- vaekit.training.Trainer (the code `vaekit train` runs), images/second;
  * hand-written -- a minimal PyTorch loop for the same network and ELBO, as a user writes it
                    (torch.optim.Adam with its defaults), and the same loop with fused Adam;
  * GEMM-only   -- the same matrix multiplications (forward and backward) timed alone.
evaluation (k = 5000 importance samples, 1,000 test images):
  * vaekit.evaluation.log_likelihood, seconds, with torch.compile (its default at this size)
    and without (compile=False); the compiled run's first call, which compiles, is not timed;
  * the decoder's GEMM-only ceiling: its three matrix products for all k x 1000 rows;
  * one softplus pass over all k x 1000 x 784 logits (the Bernoulli log-density's
    transcendental part), timed alone; the floor is the two together.

Usage:  python benchmarks/bench_core.py [--threads N] [--data-dir ../shared/data] [--quick]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from vaekit.config import load_config
from vaekit.evaluation import DEFAULT_MAX_ROWS, log_likelihood
from vaekit.models import build_model
from vaekit.training import Trainer

HIDDEN, LATENT, D, BATCH = 200, 50, 784, 100


SHAPE = (1, 28, 28)


def load_data(data_dir: str | None, n_train: int) -> tuple[torch.Tensor, torch.Tensor, str]:
    """Training images as stored (binarized MNIST: uint8 0/1, (N, 1, 28, 28)), test values."""
    try:
        from vaekit.data import load_binarized_mnist
        d = load_binarized_mnist(data_dir, download_missing=False)
        return d.raw_train[:n_train], d.test, "binarized-mnist"
    except Exception:                                 # no data: same shapes, MNIST's density
        g = torch.Generator().manual_seed(0)
        return ((torch.rand(n_train, *SHAPE, generator=g) < 0.13).to(torch.uint8),
                (torch.rand(10000, *SHAPE, generator=g) < 0.13).float(),
                "random binary (no data)")


def vaekit_training(x: torch.Tensor, epochs: int) -> float:
    cfg = load_config("iwae-paper-1layer")
    cfg.train.batch_size, cfg.train.lr_schedule, cfg.train.epochs = BATCH, "constant", epochs
    cfg.train.device = "cpu"
    torch.manual_seed(0)
    model = build_model(cfg.model, SHAPE)
    model.init_decoder_bias(x.float().mean(0))
    trainer = Trainer(model, cfg.train, x, x[:100].float(), estimator=cfg.estimator,
                      progress=False)
    start = time.perf_counter()
    trainer.fit(restore_best=False)
    return epochs * x.shape[0] / (time.perf_counter() - start)


def hand_written_training(x: torch.Tensor, epochs: int, fused: bool) -> float:
    """What a user writes: two nn.Sequential MLPs, the closed-form KL, Adam."""
    torch.manual_seed(0)
    enc = nn.Sequential(nn.Linear(D, HIDDEN), nn.Tanh(), nn.Linear(HIDDEN, HIDDEN), nn.Tanh(),
                        nn.Linear(HIDDEN, 2 * LATENT))
    dec = nn.Sequential(nn.Linear(LATENT, HIDDEN), nn.Tanh(), nn.Linear(HIDDEN, HIDDEN),
                        nn.Tanh(), nn.Linear(HIDDEN, D))
    opt = torch.optim.Adam([*enc.parameters(), *dec.parameters()], lr=1e-3, eps=1e-4,
                           **({"fused": True} if fused else {}))
    x = x.float().flatten(1)                          # (N, 784) float, as users hold it
    n = x.shape[0]
    start = time.perf_counter()
    for _ in range(epochs):
        perm = torch.randperm(n)
        for i in range(0, n, BATCH):
            xb = x[perm[i:i + BATCH]]
            mu, log_sigma = enc(xb).chunk(2, -1)
            sigma = log_sigma.exp()
            z = mu + sigma * torch.randn_like(mu)
            rec = -F.binary_cross_entropy_with_logits(dec(z), xb, reduction="none").sum(-1)
            kl = 0.5 * (mu ** 2 + sigma ** 2 - 1 - 2 * log_sigma).sum(-1)
            loss = -(rec - kl).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return epochs * n / (time.perf_counter() - start)


def gemm_ceiling_training(steps: int) -> float:
    """Images/s if a training step cost only its matrix products: for each of the six layers
    the forward product, the weight gradient and (but for the first) the input gradient."""
    layers = [(D, HIDDEN), (HIDDEN, HIDDEN), (HIDDEN, 2 * LATENT),
              (LATENT, HIDDEN), (HIDDEN, HIDDEN), (HIDDEN, D)]
    g = torch.Generator().manual_seed(0)
    w = [torch.randn(o, i, generator=g) * 0.05 for i, o in layers]
    a = [torch.randn(BATCH, i, generator=g) for i, _ in layers]
    gout = [torch.randn(BATCH, o, generator=g) for _, o in layers]
    out = [torch.empty(BATCH, o) for _, o in layers]
    gw = [torch.empty(o, i) for i, o in layers]
    gin = [torch.empty(BATCH, i) for i, _ in layers]

    def step():
        for j in range(len(layers)):
            torch.mm(a[j], w[j].T, out=out[j])
            torch.mm(gout[j].T, a[j], out=gw[j])
            if j:
                torch.mm(gout[j], w[j], out=gin[j])

    for _ in range(20):
        step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return steps * BATCH / (time.perf_counter() - start)


def vaekit_evaluation(model, x: torch.Tensor, k: int, compile: bool) -> float:
    start = time.perf_counter()
    log_likelihood(model, x, k, compile=compile)
    return time.perf_counter() - start


def gemm_ceiling_evaluation(model, rows: int, chunk: int = DEFAULT_MAX_ROWS) -> float:
    """Seconds of the decoder's three matrix products for ``rows`` latent samples, in chunks of
    the size the evaluation uses."""
    ws = [m.weight.detach() for m in model.decoder_net if isinstance(m, nn.Linear)]
    z = torch.randn(chunk, LATENT)
    outs = [torch.empty(chunk, w.shape[0]) for w in ws]

    def run():
        h = z
        for w, o in zip(ws, outs, strict=True):
            h = torch.mm(h, w.T, out=o)

    run()
    start = time.perf_counter()
    for _ in range(rows // chunk):
        run()
    return (time.perf_counter() - start) * rows / (rows // chunk * chunk)


def softplus_pass_evaluation(rows: int, chunk: int = DEFAULT_MAX_ROWS) -> float:
    """Seconds of one pass of softplus over every logit (``rows`` x 784 values, in the
    evaluation's chunks, into a preallocated buffer): the transcendental part of the Bernoulli
    log-density log p(x|z) = x * l - softplus(l), which no evaluation can skip."""
    logits = torch.randn(chunk, D)
    out = torch.empty_like(logits)
    torch._C._nn.softplus(logits, 1, 20, out=out)
    start = time.perf_counter()
    for _ in range(rows // chunk):
        torch._C._nn.softplus(logits, 1, 20, out=out)
    return (time.perf_counter() - start) * rows / (rows // chunk * chunk)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--data-dir", default=str(Path(__file__).resolve().parents[2] / "shared"
                                             / "data"))
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--num-samples", type=int, default=5000)
    p.add_argument("--eval-images", type=int, default=1000)
    p.add_argument("--quick", action="store_true", help="smaller runs, for a smoke test")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    n_train, epochs = (2000, 1) if args.quick else (20000, 1)
    k, n_eval = (100, 200) if args.quick else (args.num_samples, args.eval_images)
    x, test, source = load_data(args.data_dir, n_train)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, data: {source}")

    best = {"vaekit": 0.0, "hand": 0.0, "hand_fused": 0.0, "gemm": 0.0}
    for _ in range(args.rounds):            # alternate the contenders; keep each one's best
        best["vaekit"] = max(best["vaekit"], vaekit_training(x, epochs))
        best["hand"] = max(best["hand"], hand_written_training(x, epochs, fused=False))
        best["hand_fused"] = max(best["hand_fused"], hand_written_training(x, epochs, True))
        best["gemm"] = max(best["gemm"], gemm_ceiling_training(n_train // BATCH))
    print("\ntraining, one-layer IWAE-paper VAE, batch 100 (images/second, best of "
          f"{args.rounds})")
    for key, label in (("vaekit", "vaekit Trainer"), ("hand", "hand-written loop, default Adam"),
                       ("hand_fused", "hand-written loop, fused Adam"),
                       ("gemm", "GEMM-only ceiling")):
        print(f"  {label:<34} {best[key]:>9.0f}   {best[key] / best['gemm']:6.1%} of ceiling")
    print(f"  vaekit / hand-written (default Adam) = {best['vaekit'] / best['hand']:.2f}; "
          f"/ hand-written (fused Adam) = {best['vaekit'] / best['hand_fused']:.2f}")

    cfg = load_config("iwae-paper-1layer")
    torch.manual_seed(0)
    model = build_model(cfg.model, SHAPE).eval()
    xe = test[:n_eval]
    start = time.perf_counter()
    log_likelihood(model, xe[:10], 100, compile=True)            # compiles, once
    t_compile = time.perf_counter() - start
    t_eval, t_eager, t_gemm, t_soft = (float("inf"),) * 4
    for _ in range(max(1, args.rounds - 1)):
        t_eval = min(t_eval, vaekit_evaluation(model, xe, k, compile=True))
        t_eager = min(t_eager, vaekit_evaluation(model, xe, k, compile=False))
        t_gemm = min(t_gemm, gemm_ceiling_evaluation(model, k * n_eval))
        t_soft = min(t_soft, softplus_pass_evaluation(k * n_eval))
    floor = t_gemm + t_soft
    print(f"\nevaluation, k = {k}, {n_eval} test images (seconds, best of "
          f"{max(1, args.rounds - 1)})")
    share = "of ceiling"
    print(f"  vaekit log_likelihood, compiled    {t_eval:9.2f}   {t_gemm / t_eval:6.1%} {share}"
          f"  (+{t_compile:.1f} s to compile, once)")
    print(f"  vaekit log_likelihood, eager       {t_eager:9.2f}   {t_gemm / t_eager:6.1%} {share}")
    print(f"  decoder GEMM-only ceiling          {t_gemm:9.2f}")
    print(f"  one softplus pass over the logits  {t_soft:9.2f}")
    print(f"  floor (GEMMs + softplus pass)      {floor:9.2f}   compiled / floor = "
          f"{t_eval / floor:.2f} (target <= 1.25), eager / floor = {t_eager / floor:.2f}")


if __name__ == "__main__":
    main()
