"""Small helpers for example scripts: stage timing with peak memory, and band structures drawn as points."""
from __future__ import annotations

import resource
import time

import numpy as np


def peak_memory_gb() -> float:
    """Peak resident memory of this process so far (GB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2


class Stage:
    """Context manager that prints a stage's name, then records its wall time (s) and the peak memory so far (GB)
    into ``log[name]``."""

    def __init__(self, name: str, log: dict) -> None:
        self.name, self.log = name, log

    def __enter__(self) -> "Stage":
        print(f"== {self.name} ...", flush=True)
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        dt = time.perf_counter() - self.t0
        self.log[self.name] = {"wall_s": round(dt, 2), "peak_memory_GB": round(peak_memory_gb(), 3)}
        print(f"   {self.name}: {dt:.1f} s, peak memory {peak_memory_gb():.2f} GB", flush=True)


def plot_band_points(ax, bs, color: str, label: str, window: float | None = None, ylabel: str = "E − E_F (eV)",
                     markersize: float = 2.5) -> None:
    """Bands of an ASE ``BandStructure`` (relative to its reference, eV) as points: with only the ``num`` states
    nearest an energy the set of bands changes along the path, so joining them by index would draw false lines."""
    x, label_x, labels = bs.get_labels()
    e_kn = bs.energies[0] - bs.reference
    ax.plot(np.repeat(x, e_kn.shape[1]), e_kn.ravel(), ".", ms=markersize, color=color, label=label)
    for xi in label_x:
        ax.axvline(xi, color="k", lw=0.5)
    ax.axhline(0.0, color="k", lw=0.5, ls=":")
    ax.set_xticks(label_x, [lab.replace("G", "Γ") for lab in labels])
    ax.set_xlim(x[0], x[-1])
    if window is not None:
        ax.set_ylim(-window, window)
    ax.set_ylabel(ylabel)
    ax.legend(loc="upper right", markerscale=4)
