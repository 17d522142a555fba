"""Small helpers for example scripts: stage timing with peak memory, and band structures drawn as points."""
from __future__ import annotations

import os
import resource
import threading
import time

from ase_wannierml.plotting import plot_bands


def peak_memory_gb() -> float:
    """Peak resident memory of this process so far (GB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2


def rss_gb() -> float:
    """Current resident memory of this process (GB; NaN where /proc is missing)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024**2
    except OSError:
        pass
    return float("nan")


class Stage:
    """Context manager that prints a stage's name, then records into ``log[name]`` its wall time (s), the peak
    resident memory *during the stage* (GB, sampled every 0.2 s in a background thread; the process-wide peak
    where /proc is missing) and the 1-min load average (a loaded 2-core machine is several times slower)."""

    def __init__(self, name: str, log: dict) -> None:
        self.name, self.log = name, log

    def _sample(self) -> None:
        while not self._stop.wait(0.2):
            self.peak = max(self.peak, rss_gb())

    def __enter__(self) -> "Stage":
        print(f"== {self.name} ...", flush=True)
        self.peak, self._stop = rss_gb(), threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        dt = time.perf_counter() - self.t0
        self._stop.set()
        self._thread.join()
        peak = max(self.peak, rss_gb())
        if peak != peak:                       # NaN: no /proc
            peak = peak_memory_gb()
        load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
        self.log[self.name] = {"wall_s": round(dt, 2), "peak_memory_GB": round(peak, 3),
                               "load_average_1min": round(load, 2)}
        print(f"   {self.name}: {dt:.1f} s, peak memory {peak:.2f} GB, load {load:.1f}", flush=True)


def plot_band_points(ax, bs, color: str, label: str, window: float | None = None, ylabel: str = "E − E_F (eV)",
                     markersize: float = 2.5) -> None:
    """Bands of an ASE ``BandStructure`` (relative to its reference, eV) as points: with only the ``num`` states
    nearest an energy the set of bands changes along the path, so joining them by index would draw false lines."""
    plot_bands(bs, ax=ax, emin=None if window is None else -window, emax=None if window is None else window,
               points=True, color=color, label=label, ylabel=ylabel, markersize=markersize)
