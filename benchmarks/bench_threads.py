"""The default thread choice on a busy machine (issue 13, "threads that survive a busy machine").

Runs the README's default command (``vaekit train``, the embedded mnist-5k data) for a few
epochs as a subprocess, with one other CPU-bound process spinning on the machine, under:

  * default        -- vaekit's choice: no --threads (vaekit.threads.default_threads) and
                      OMP_WAIT_POLICY=PASSIVE (set on import);
  * 1 thread       -- --threads 1;
  * all, passive   -- --threads <cores>, OMP_WAIT_POLICY=PASSIVE;
  * all, spinning  -- --threads <cores>, OMP_WAIT_POLICY=ACTIVE (torch's behaviour before);

alternating the settings over several rounds and keeping each one's best wall time (the
whole command: start-up, training, no evaluation). Prints each time and its ratio to the best
setting. ``--no-busy`` runs without the spinning process (the idle machine).

Usage:  python benchmarks/bench_threads.py [--epochs 5] [--rounds 2] [--no-busy]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time

SPIN = "while True: pass"


def run_once(args: list[str], env_extra: dict[str, str], epochs: int) -> float:
    out = tempfile.mkdtemp(prefix="bench-threads-")
    try:
        env = {k: v for k, v in os.environ.items()
               if k not in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS")} | env_extra
        cmd = [sys.executable, "-m", "vaekit", "train", "--epochs", str(epochs), "--no-eval",
               "--no-progress", "--out", os.path.join(out, "run"), *args]
        start = time.perf_counter()
        subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL,
                       stderr=subprocess.PIPE)
        return time.perf_counter() - start
    finally:
        shutil.rmtree(out, ignore_errors=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--no-busy", action="store_true", help="no spinning process")
    a = p.parse_args()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    settings = {
        "default (vaekit's choice)": ([], {}),
        "--threads 1": (["--threads", "1"], {}),
        f"--threads {cores}, passive": (["--threads", str(cores)], {"OMP_WAIT_POLICY": "PASSIVE"}),
        f"--threads {cores}, spinning": (["--threads", str(cores)], {"OMP_WAIT_POLICY": "ACTIVE"}),
    }
    busy = None if a.no_busy else subprocess.Popen([sys.executable, "-c", SPIN])
    try:
        time.sleep(0 if busy is None else 5)     # let the load average see the spinner
        best = {name: float("inf") for name in settings}
        for _ in range(a.rounds):
            for name, (args, env) in settings.items():
                best[name] = min(best[name], run_once(args, env, a.epochs))
    finally:
        if busy is not None:
            busy.kill()
    fastest = min(best.values())
    print(f"{cores} cores, {'one other CPU-bound process' if busy else 'no other process'}; "
          f"vaekit train --epochs {a.epochs} --no-eval (best of {a.rounds})")
    for name, seconds in best.items():
        print(f"  {name:28s} {seconds:7.2f} s   {seconds / fastest:5.2f}x the best")


if __name__ == "__main__":
    main()
