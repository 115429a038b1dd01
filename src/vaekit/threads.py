"""How many CPU threads a run uses when ``--threads`` is not given, and how they wait.

Two things make torch's defaults fragile on a shared machine (a laptop, a cluster node, a CI
runner): torch starts one OpenMP thread per core whether or not the cores are free, and
OpenMP threads that finish their share of an operation *spin* until the others arrive. With
one core busy elsewhere, every parallel operation waits for a thread the kernel has
descheduled, and a small model's thousands of short operations per second each pay a
scheduler time slice: measured on the 2-core development machine (README, "Threads"),
the default run took 40x longer with 2 spinning threads than with one.

vaekit therefore

* asks OpenMP to let waiting threads sleep (``OMP_WAIT_POLICY=PASSIVE``) unless the user set
  the variable; it must be in the environment before torch loads its OpenMP runtime, so it is
  set when :mod:`vaekit` is imported first (the ``vaekit`` command always is);
* starts one thread per core that is free when the command starts
  (:func:`default_threads`): the cores this process may run on (its CPU affinity, capped by a
  cgroup CPU quota) less the other runnable work on them (the larger of the one-minute load
  average and the processes runnable at this instant), at least one.

``--threads N`` overrides both the count and the estimate; ``OMP_WAIT_POLICY=ACTIVE`` in the
environment restores spinning.
"""

from __future__ import annotations

import math
import os

WAIT_POLICY_VARIABLE = "OMP_WAIT_POLICY"


def set_wait_policy() -> None:
    """``OMP_WAIT_POLICY=PASSIVE`` unless the environment already sets it. Effective only
    before torch is first imported in this process (OpenMP reads it when it loads)."""
    os.environ.setdefault(WAIT_POLICY_VARIABLE, "PASSIVE")


def usable_cores() -> int:
    """CPU cores this process may use: its affinity mask, capped by the cgroup (v2) CPU
    quota ``cpu.max`` when one is set."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    try:
        with open("/sys/fs/cgroup/cpu.max") as f:
            quota, period = f.read().split()[:2]
        if quota != "max":
            cores = min(cores, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return max(1, cores)


def busy_cores() -> int:
    """An estimate of the cores other work keeps busy: the larger of the one-minute load
    average (rounded) and the tasks runnable right now other than this one
    (``/proc/loadavg``'s fourth field). 0 where neither can be read."""
    busy = 0
    try:
        busy = round(os.getloadavg()[0])
    except (AttributeError, OSError):
        pass
    try:
        with open("/proc/loadavg") as f:
            running = int(f.read().split()[3].split("/")[0])
        busy = max(busy, running - 1)                  # this process is one of them
    except (OSError, ValueError, IndexError):
        pass
    return max(0, busy)


def default_threads() -> int:
    """Threads for a command without ``--threads``: the usable cores that other work leaves
    free, at least 1 (see the module docstring for why); under torchrun, the usable cores
    divided among the node's ``LOCAL_WORLD_SIZE`` processes."""
    cores = usable_cores()
    per_node = int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1)   # torchrun's processes here
    if per_node > 1:
        return max(1, cores // per_node)
    if cores == (os.cpu_count() or cores):     # the load is measured over the same cores
        return max(1, cores - busy_cores())
    return cores                                # a slice of a larger machine: its load says nothing


__all__ = ["busy_cores", "default_threads", "set_wait_policy", "usable_cores"]
