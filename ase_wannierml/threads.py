"""torch / BLAS thread counts: an explicit choice (``--threads N``) or a safe default on a busy machine.

torch starts one OpenMP thread per core. When other processes already keep the cores busy, those threads
spin-wait for each other: on a 2-core machine with one other job, a 16-atom energy + forces call took 1.9–2.9 s
with 2 threads against 0.23 s with 1 (issue 17). :func:`set_threads` applies a count; :func:`safe_default_threads`
picks 1 when the machine is oversubscribed and the user set nothing (neither ``OMP_NUM_THREADS`` nor
``torch.set_num_threads``), and says so once.
"""
from __future__ import annotations

import os
import sys

THREADS_ENV = "OMP_NUM_THREADS"
_announced = False


def machine_is_busy(cpus: int | None = None, load: float | None = None) -> bool:
    """True when the 1-minute load average leaves less than one core free (``cpus`` cores, default all)."""
    cpus = cpus or os.cpu_count() or 1
    if load is None:
        if not hasattr(os, "getloadavg"):
            return False
        load = os.getloadavg()[0]
    return load > cpus - 1 + 0.5


def set_threads(n: int) -> None:
    """Use ``n`` ≥ 1 torch intra-op threads (and as many BLAS threads, through threadpoolctl when present)."""
    if int(n) < 1:
        raise ValueError(f"threads must be >= 1, got {n}")
    import torch

    torch.set_num_threads(int(n))
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(int(n))
    except ImportError:  # pragma: no cover - threadpoolctl is a dependency
        pass


def safe_default_threads() -> int:
    """torch's thread count after applying the safe default: unchanged when the user chose (``OMP_NUM_THREADS``
    set, or ``torch.set_num_threads`` called with a value other than the core count) or the machine has a free
    core; otherwise 1, with a one-line note on stderr the first time."""
    global _announced
    import torch

    cpus = os.cpu_count() or 1
    if THREADS_ENV in os.environ or torch.get_num_threads() != cpus or cpus == 1 or not machine_is_busy(cpus):
        return torch.get_num_threads()
    set_threads(1)
    if not _announced:
        _announced = True
        print(f"ase_wannierml: load average {os.getloadavg()[0]:.1f} on {cpus} cores; using 1 torch thread (idle "
              f"threads spin-wait for busy cores). Choose with --threads N or torch.set_num_threads(N).",
              file=sys.stderr)
    return 1
