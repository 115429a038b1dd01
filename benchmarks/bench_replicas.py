"""Would R replicas trained as one stacked model beat R single runs? The training step of the
IWAE-paper one-layer VAE (784-200-200-50, tanh, Bernoulli, ELBO, fused Adam) for R replicas:

* ``stacked``: the replicas' parameters stacked (``torch.func.stack_module_state``), the
  estimator's loss of all R batches in one ``torch.func.vmap`` (each replica its own noise:
  ``randomness="different"``), one backward, one fused Adam over the stacked tensors (Adam
  is elementwise, so this is each replica's own Adam);
* ``singles``: the R models stepped one after another (what R runs one after another do).

Printed: aggregate training images per second of each, and stacked / singles (> 1: stacking
pays). Both alternate over rounds in this process; each one's best round is kept. Synthetic
binary data (the step's cost does not depend on the values).

Usage:  python benchmarks/bench_replicas.py [--replicas 8] [--batch-sizes 20 100]
        [--threads 1] [--steps 50] [--rounds 3] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import copy
import time

import torch
from torch.func import functional_call, stack_module_state, vmap

from vaekit.estimators import get_estimator
from vaekit.models.vae import VAE


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--replicas", type=int, default=8)
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[20, 100])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--steps", type=int, default=50, help="steps per round")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--device", default="cpu")
    return p.parse_args(argv)


class _Step(torch.nn.Module):
    """The estimator's loss as a module's forward, so that functional_call can swap in a
    replica's parameters."""

    def __init__(self, model, estimator) -> None:
        super().__init__()
        self.model, self.estimator = model, estimator

    def forward(self, x):
        return self.estimator(self.model, x).loss


def contenders(replicas: int, batch: int, device: torch.device):
    models = []
    for seed in range(replicas):
        torch.manual_seed(seed)
        models.append(VAE(784, latent_dim=50, hidden_sizes=(200, 200),
                          activation="tanh").to(device))
    estimator = get_estimator("elbo", None, data_shape=(784,))
    x = torch.rand(replicas, batch, 784, device=device).bernoulli()

    params, buffers = stack_module_state(copy.deepcopy(models))
    step = _Step(copy.deepcopy(models[0]).to("meta"), estimator)

    def loss_of(p, b, xb):
        return functional_call(step, ({f"model.{k}": v for k, v in p.items()},
                                      {f"model.{k}": v for k, v in b.items()}), (xb,))

    losses = vmap(loss_of, randomness="different")
    stacked_opt = torch.optim.Adam(list(params.values()), lr=1e-3, fused=True)
    single_opts = [torch.optim.Adam(m.parameters(), lr=1e-3, fused=True) for m in models]

    def stacked():
        stacked_opt.zero_grad(set_to_none=True)
        losses(params, buffers, x).sum().backward()
        stacked_opt.step()

    def singles():
        for m, opt, xb in zip(models, single_opts, x, strict=True):
            opt.zero_grad(set_to_none=True)
            estimator(m, xb).loss.backward()
            opt.step()

    return {"stacked": stacked, "singles": singles}


def main(argv=None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    print(f"{args.replicas} replicas, {args.threads} thread(s), {device}; best of "
          f"{args.rounds} rounds of {args.steps} steps")
    print("batch  stacked images/s  singles images/s  stacked / singles")
    for batch in args.batch_sizes:
        fns = contenders(args.replicas, batch, device)
        best = dict.fromkeys(fns, float("inf"))
        for fn in fns.values():          # warm-up
            fn()
        for _ in range(args.rounds):
            for name, fn in fns.items():
                sync()
                t = time.perf_counter()
                for _ in range(args.steps):
                    fn()
                sync()
                best[name] = min(best[name], time.perf_counter() - t)
        rate = {k: args.replicas * batch * args.steps / v for k, v in best.items()}
        print(f"{batch:5d}  {rate['stacked']:16,.0f}  {rate['singles']:16,.0f}  "
              f"{rate['stacked'] / rate['singles']:17.2f}")


if __name__ == "__main__":
    main()
