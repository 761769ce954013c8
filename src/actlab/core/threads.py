"""CPU threads on a shared machine: a passive OpenMP wait policy for the CLI, and intra-op threads by problem size.

Why: with other work on every core, OpenMP workers that spin at barriers (libgomp's default) stall small
operations badly: 300 steps of a small SAE took ~100 s with 2 threads and ~1.5 s with 1 on a busy 2-core box.
libgomp reads ``OMP_WAIT_POLICY`` once, when torch loads it, so the policy must be set before ``import torch``.
"""
from __future__ import annotations

import os
import sys

SMALL_OP_FLOPS = 4e6
"""Below this many FLOPs per dense product, extra intra-op threads cost more in synchronisation than they save
(one more thread per this many FLOPs above it)."""


def started_as_cli(argv0: str | None = None) -> bool:
    """True when this process is the ``actlab`` command (console script or ``python -m actlab``)."""
    a = os.path.normpath(argv0 if argv0 is not None else (sys.argv[0] if sys.argv else ""))
    return os.path.basename(a) == "actlab" or a.endswith(os.path.join("actlab", "__main__.py"))


def passive_wait_policy(force: bool = False) -> bool:
    """Set ``OMP_WAIT_POLICY=PASSIVE`` (idle OpenMP workers sleep instead of spinning) for the ``actlab`` CLI, or
    anywhere with ``force``, unless the user set a policy or torch is already loaded (too late: it would not take
    effect). Returns True when it was set."""
    if "OMP_WAIT_POLICY" in os.environ or "torch" in sys.modules or not (force or started_as_cli()):
        return False
    os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
    return True


def all_cores() -> int:
    """Cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def passive() -> bool:
    """True when OpenMP workers sleep at barriers (``OMP_WAIT_POLICY=PASSIVE``)."""
    return os.environ.get("OMP_WAIT_POLICY", "").upper() == "PASSIVE"


def usable_cores() -> int:
    """Cores this process may run on, less the run-queue load of other processes (at least 1)."""
    cores = all_cores()
    try:
        load = os.getloadavg()[0]
    except OSError:
        load = 0.0
    return max(1, min(cores, int(cores - load + 1.0)))   # +1: this process's own thread is part of the load


def threads_for(flops_per_op: float, cores: int | None = None) -> int:
    """Intra-op threads for dense products of about ``flops_per_op``: one per ``SMALL_OP_FLOPS``, at most ``cores``
    (default: every core under a passive wait policy, where sleeping workers cost others nothing and measured
    fastest on a busy box; else only the cores the load leaves free, since spinning workers stall there)."""
    if cores is None:
        cores = all_cores() if passive() else usable_cores()
    if flops_per_op < SMALL_OP_FLOPS:
        return 1
    return max(1, min(cores, int(flops_per_op // SMALL_OP_FLOPS)))


def set_threads(threads: int, flops_per_op: float) -> int:
    """``torch.set_num_threads``: ``threads`` when > 0, else ``threads_for(flops_per_op)``; returns the count."""
    import torch
    n = threads if threads > 0 else threads_for(flops_per_op)
    torch.set_num_threads(n)
    return n
