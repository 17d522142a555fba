"""Benchmark: KPM density of states of twisted bilayer graphene (Moon–Koshino pz model) at 10⁵ and 10⁶ orbitals.

Each size runs in its own subprocess so its peak memory is its own. Reported per size: time to build the structure,
the Hamiltonian (10⁵: through ``moon_koshino_tb`` → ``TightBinding.hamiltonian_sparse``; 10⁶: straight from the
pair list with ``moon_koshino_hamiltonian``, see the note printed), the KPM time, the peak memory of the KPM step
(tracemalloc of numpy buffers, H excluded) and of the whole process (max RSS). Table + JSON in
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


def run_one(m: int, num_moments: int, num_random: int, via_tightbinding: bool) -> dict:
    from ase_wannierml.slater_koster import moon_koshino_hamiltonian, moon_koshino_tb
    from ase_wannierml.structures import twisted_bilayer
    from ase_wannierml.tb import kpm

    out: dict = {"m": m, "num_moments": num_moments, "num_random": num_random}
    t0 = time.perf_counter()
    atoms = twisted_bilayer("graphene", m=m, r=1)
    out["structure_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    if via_tightbinding:
        tb = moon_koshino_tb(atoms)
        H = tb.hamiltonian_sparse(np.zeros(3), allow_real=True)
        out["hamiltonian_route"] = "moon_koshino_tb -> TightBinding.hamiltonian_sparse"
        del tb
    else:
        H = moon_koshino_hamiltonian(atoms)
        out["hamiltonian_route"] = "moon_koshino_hamiltonian (pair list -> CSR)"
    out["build_hamiltonian_s"] = time.perf_counter() - t0
    out["maxrss_after_build_GB"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
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
    out["maxrss_GB"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
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
    parser.add_argument("--via-tb", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_one(args.one, args.moments, args.random, args.via_tb)))
        return
    load0 = os.getloadavg()
    rows = []
    for size in args.sizes:
        cmd = [sys.executable, __file__, "--one", str(SIZES[size]), "--moments", str(args.moments),
               "--random", str(args.random)] + (["--via-tb"] if size == "1e5" else [])
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, check=True)
        row = json.loads(proc.stdout.strip().splitlines()[-1])
        row["total_wall_s"] = time.perf_counter() - t0
        rows.append(row)
        print(f"{size}: {row['norb']} orbitals, KPM {row['kpm_s']:.1f} s, peak {row['maxrss_GB']:.2f} GB", flush=True)
    print("\n| orbitals | nnz | H route | build H (s) | KPM N, R | KPM wall (s) | cpu (s) | KPM peak traced (GB) "
          "| H (GB) | process max RSS (GB) | ∫DOS/norb |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        route = r["hamiltonian_route"].split(" ")[0]
        print(f"| {r['norb']:,} | {r['nnz']:,} | {route} | {r['build_hamiltonian_s']:.1f} "
              f"| {r['num_moments']}, {r['num_random']} | {r['kpm_s']:.1f} | {r['kpm_cpu_s']:.1f} "
              f"| {r['kpm_peak_traced_GB']:.2f} "
              f"| {r['H_bytes_GB']:.2f} | {r['maxrss_GB']:.2f} | {r['integral_over_norb']:.5f} |")
    out = {"benchmark": "kpm_dos", "results": rows, "load_average_start": load0,
           "load_average_end": os.getloadavg(), "threads": os.environ.get("OMP_NUM_THREADS"),
           "date": time.strftime("%Y-%m-%d %H:%M:%S")}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1))
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
