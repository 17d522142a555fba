"""Benchmark: why the learned 1.05° TBG Hamiltonian costs more per k than the Moon–Koshino one, and what cuts it.

Same run, same k = (0.1, 0.2, 0) (complex) and Γ: for each Hamiltonian, the stored entries of H(k), the entries
of PARDISO's factor, and one fresh 8-state solve near E_D (``solvers.NearSolver``, single-precision factor + Davidson;
ordering warm) with the preconditioner P = H without its entries below ``drop`` eV (0: P = H; the eigenvalues are H's
in every case: the max abs difference to drop = 0 is recorded). Also the learned H pruned with the rigorous bound
(``TightBinding.pruned(3e-4)``, as the magic-angle example does; its eigenvalues move by at most the bound).
Wall and CPU (process) seconds: on a loaded machine the CPU time is the better comparison. Writes
``benchmarks/results/band_solver_preconditioner.json``.

    flock /work/main/scratch/cpu.lock python benchmarks/band_solver_preconditioner.py
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import json  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

from ase_wannierml.slater_koster import moon_koshino_tb  # noqa: E402
from ase_wannierml.structures import twisted_bilayer  # noqa: E402
from ase_wannierml.tb import pardiso_backend, solvers  # noqa: E402
from ase_wannierml.cli import atomic_write_text

RESULTS = Path(__file__).resolve().parent / "results"
DROPS = (0.0, 1e-2, 3e-2)


def measure(name: str, tb, e_d: float, k, workers: int, drops=DROPS) -> list[dict]:
    H = tb.hamiltonian_sparse(np.array(k), allow_real=True)
    rows, ref = [], None
    for drop in drops:
        solvers.PRECONDITIONER_DROP = drop
        solvers._MASKS.clear()
        P = solvers.default_preconditioner(H)
        nnz_l = pardiso_backend.PardisoFactor(solvers.shifted_csr(P, e_d)).factor_nnz
        solvers.NearSolver(8, e_d, method="sparse", workers=workers).solve(H)  # warm: METIS ordering of P cached
        s = solvers.NearSolver(8, e_d, method="sparse", workers=workers)
        w, c = time.perf_counter(), time.process_time()
        r = s.solve(H)
        w, c = time.perf_counter() - w, time.process_time() - c
        ref = r.values if ref is None else ref
        row = {"model": name, "k": list(k), "real": H.dtype.kind == "f", "drop_eV": drop, "nnz_H": int(H.nnz),
               "nnz_P": int(P.nnz), "factor_nnz": nnz_l, "wall_s": w, "cpu_s": c, "factor_wall_s": s._t_factor,
               "solves": r.solves, "max_abs_diff_vs_drop0_eV": float(np.abs(r.values - ref).max()),
               "load_average": os.getloadavg()[0]}
        rows.append(row)
        print(f"{name:18s} k={k} drop {drop:6g} eV: nnz H {H.nnz:>9,} P {P.nnz:>9,} L {nnz_l:>11,}  "
              f"{w:6.2f} s wall {c:6.2f} s cpu (factor {s._t_factor:5.2f} s wall), {r.solves:3d} solves, "
              f"|Δe| {row['max_abs_diff_vs_drop0_eV']:.1e}  load {row['load_average']:.1f}", flush=True)
    solvers.PRECONDITIONER_DROP = 1e-2
    return rows


def main() -> None:
    from solver_libraries import E_D_MK, ROOT, learned_tb

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--learned-cache", type=Path, default=ROOT / "scratch" / "solvers" / "learned_1p05_rigid.npz")
    parser.add_argument("--learned-sigma", type=float, default=-4.263293960582194)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--out", type=Path, default=RESULTS / "band_solver_preconditioner.json")
    args = parser.parse_args()
    load0 = os.getloadavg()
    rows = []
    mk = moon_koshino_tb(twisted_bilayer("graphene", m=31, r=1))
    learned = learned_tb(args.learned_cache)
    for k in ((0.1, 0.2, 0.0), (0.0, 0.0, 0.0)):
        rows += measure("Moon–Koshino", mk, E_D_MK, k, args.workers)
        rows += measure("learned", learned, args.learned_sigma, k, args.workers)
        rows += measure("learned pruned 3e-4", learned.pruned(3e-4), args.learned_sigma, k, args.workers, (0.0, 1e-2))
    out = {"benchmark": "band_solver_preconditioner", "rows": rows, "workers": args.workers,
           "load_average_start": load0, "load_average_end": os.getloadavg(),
           "date": time.strftime("%Y-%m-%d %H:%M:%S")}
    atomic_write_text(args.out, json.dumps(out, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
