"""Evaluation chunks and the memory allocator: a k = 5000 evaluation of a convolutional VAE
with the discretized logistic mixture (10 components, Fashion-MNIST's 1 x 28 x 28 shape; an
untrained model on random 8-bit images, whose arithmetic is a trained one's), each setting
in a fresh process, alternated, best of ``--rounds``:

  * vaekit: decoder outputs per chunk within its budget (2M values, vaekit.families) and the
    allocator keeping freed memory (vaekit.memory.keep_freed_memory, as vaekit's commands do);
  * the budget alone, glibc's default allocator settings;
  * before: a 32M-value budget, glibc's defaults.

Prints wall, user and system seconds and minor page faults, and each one's ratio to vaekit's.

Usage:  python benchmarks/bench_eval_chunks.py [--images 4] [--num-samples 5000] [--rounds 2]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

SETTINGS = {"vaekit": (1 << 21, True), "budget alone": (1 << 21, False),
            "before (32M values)": (1 << 25, False)}


def child(budget: int, keep: bool, images: int, num_samples: int) -> None:
    import resource
    import time

    import torch

    from vaekit.families import family_of, rows_within
    from vaekit.memory import keep_freed_memory
    from vaekit.models.vae import VAE
    if keep:
        keep_freed_memory()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = VAE((1, 28, 28), net="conv", likelihood="discretized-logistic", latent_dim=32).eval()
    x = torch.randint(0, 256, (images, 1, 28, 28)).float() / 255
    rows = rows_within(model.observation.param_shape, budget)
    r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    family_of(model).evaluate(model, x, num_samples, max_rows=rows, compile=False)
    wall = time.perf_counter() - t0
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    print(json.dumps({"wall": wall, "user": r1.ru_utime - r0.ru_utime, "rows": rows,
                      "system": r1.ru_stime - r0.ru_stime, "faults": r1.ru_minflt - r0.ru_minflt}))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=4)
    p.add_argument("--num-samples", type=int, default=5000)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--child", nargs=2, type=int, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        child(args.child[0], bool(args.child[1]), args.images, args.num_samples)
        return
    best: dict[str, dict] = {}
    for _ in range(args.rounds):
        for name, (budget, keep) in SETTINGS.items():
            out = subprocess.run([sys.executable, __file__, "--child", str(budget), str(int(keep)),
                                  "--images", str(args.images), "--num-samples",
                                  str(args.num_samples)], check=True, capture_output=True,
                                 text=True).stdout
            m = json.loads(out.strip().splitlines()[-1])
            if name not in best or m["wall"] < best[name]["wall"]:
                best[name] = m
    print(f"k={args.num_samples} log-likelihood of {args.images} images, conv VAE + discretized "
          f"logistic mixture, 1 thread, best of {args.rounds}")
    for name, m in best.items():
        print(f"  {name:<20} {m['rows']:5d} rows/chunk  wall {m['wall']:6.1f} s  user "
              f"{m['user']:6.1f} s  system {m['system']:5.1f} s  {m['faults']:>10,} page faults"
              f"  {m['wall'] / best['vaekit']['wall']:5.2f}x vaekit")


if __name__ == "__main__":
    main()
