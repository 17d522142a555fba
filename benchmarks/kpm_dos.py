"""Benchmark: KPM density of states of twisted bilayer graphene (Moon–Koshino pz model) at 10⁵ and 10⁶ orbitals.

Each size runs in its own subprocess so its peak memory is its own. Both sizes go through the ``TightBinding``:
``moon_koshino_tb`` (pair list + constructor) → ``hamiltonian_sparse(Γ)`` → ``kpm``. Reported separately: the
building of the ``TightBinding`` (time, peak RSS during the build, bytes it keeps), H(Γ), and the KPM step (time,
tracemalloc peak of its numpy buffers, H excluded), plus the whole process's peak RSS. Table + JSON in
``benchmarks/results/kpm_dos.json``. Targets (shared/anchors.md): 10⁶ orbitals in ≤ 5 min and ≤ 8 GB.

    python benchmarks/kpm_dos.py                 # both sizes (≈ 5–10 min on 2 shared cores)
    python benchmarks/kpm_dos.py --sizes 1e5
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import resource  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import tracemalloc  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
from scipy.integrate import trapezoid  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
SIZES = {"1e5": 91, "1e6": 288}  # twisted_bilayer (m, 1): 100,468 and 998,788 orbitals (θ = 0.364°, 0.115°)


def _rss_GB() -> float:
    """Current resident set size (GB) from /proc (max RSS is reported separately)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e9


def _maxrss_GB() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6


def run_one(m: int, num_moments: int, num_random: int) -> dict:
    from ase_wannierml.slater_koster import moon_koshino_tb
    from ase_wannierml.structures import twisted_bilayer
    from ase_wannierml.tb import kpm

    out: dict = {"m": m, "num_moments": num_moments, "num_random": num_random,
                 "hamiltonian_route": "moon_koshino_tb -> TightBinding.hamiltonian_sparse(Γ) -> kpm"}
    t0 = time.perf_counter()
    atoms = twisted_bilayer("graphene", m=m, r=1)
    out["structure_s"] = time.perf_counter() - t0
    out["rss_after_structure_GB"] = _rss_GB()
    t0 = time.perf_counter()
    tb = moon_koshino_tb(atoms)  # pair list (vesin) + TightBinding constructor
    out["build_tightbinding_s"] = time.perf_counter() - t0
    out["maxrss_build_GB"] = _maxrss_GB()  # peak so far: the TightBinding build
    out["tightbinding_GB"] = tb.nbytes / 1e9
    out["tightbinding_bytes_per_element"] = tb.nbytes / tb.nnz
    out["rss_after_build_GB"] = _rss_GB()
    t0 = time.perf_counter()
    H = tb.hamiltonian_sparse(np.zeros(3), allow_real=True)
    out["hamiltonian_k_s"] = time.perf_counter() - t0
    out.update(norb=H.shape[0], nnz=int(H.nnz), dtype=str(H.dtype), angle_deg=atoms.info["twist_angle"])
    out["H_bytes_GB"] = (H.data.nbytes + H.indices.nbytes + H.indptr.nbytes) / 1e9
    del atoms
    tracemalloc.start()
    t0, c0 = time.perf_counter(), time.process_time()
    bounds = kpm.spectral_bounds(H)
    moments = kpm.kpm_moments(H, num_moments, num_random=num_random, seed=0, bounds=bounds)
    E = np.linspace(bounds[0], bounds[1], 4001)
    dos = kpm.kpm_reconstruct(moments, E)
    out["kpm_s"] = time.perf_counter() - t0
    out["kpm_cpu_s"] = time.process_time() - c0
    out["kpm_peak_traced_GB"] = tracemalloc.get_traced_memory()[1] / 1e9
    tracemalloc.stop()
    out["maxrss_GB"] = _maxrss_GB()
    out.update(bounds_eV=list(bounds), resolution_eV=moments.resolution,
               integral_over_norb=float(trapezoid(dos, E) / H.shape[0]),
               dos_at_0p7876_per_eV_per_orbital=float(np.interp(0.787597, E, dos) / H.shape[0]))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", default=list(SIZES), choices=list(SIZES))
    parser.add_argument("--moments", type=int, default=1024)
    parser.add_argument("--random", type=int, default=4)
    parser.add_argument("--out", type=Path, default=RESULTS / "kpm_dos.json")
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)  # child process: twist index m
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_one(args.one, args.moments, args.random)))
        return
    load0 = os.getloadavg()
    rows = []
    for size in args.sizes:
        cmd = [sys.executable, __file__, "--one", str(SIZES[size]), "--moments", str(args.moments),
               "--random", str(args.random)]
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, check=True)
        row = json.loads(proc.stdout.strip().splitlines()[-1])
        row["total_wall_s"] = time.perf_counter() - t0
        rows.append(row)
        print(f"{size}: {row['norb']} orbitals, build {row['build_tightbinding_s']:.1f} s "
              f"(peak {row['maxrss_build_GB']:.2f} GB), KPM {row['kpm_s']:.1f} s, peak {row['maxrss_GB']:.2f} GB",
              flush=True)
    print("\n| orbitals | nnz | build TightBinding (s) | peak RSS of build (GB) | TightBinding (GB, B/element) "
          "| H(Γ) (s) | H (GB) | KPM N, R | KPM wall (s) | cpu (s) | KPM peak traced (GB) | process peak RSS (GB) "
          "| ∫DOS/norb |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['norb']:,} | {r['nnz']:,} | {r['build_tightbinding_s']:.1f} | {r['maxrss_build_GB']:.2f} "
              f"| {r['tightbinding_GB']:.2f} ({r['tightbinding_bytes_per_element']:.0f}) | {r['hamiltonian_k_s']:.1f} "
              f"| {r['H_bytes_GB']:.2f} | {r['num_moments']}, {r['num_random']} | {r['kpm_s']:.1f} "
              f"| {r['kpm_cpu_s']:.1f} | {r['kpm_peak_traced_GB']:.2f} | {r['maxrss_GB']:.2f} "
              f"| {r['integral_over_norb']:.5f} |")
    out = {"benchmark": "kpm_dos", "results": rows, "load_average_start": load0,
           "load_average_end": os.getloadavg(), "threads": os.environ.get("OMP_NUM_THREADS"),
           "date": time.strftime("%Y-%m-%d %H:%M:%S")}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1))
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
