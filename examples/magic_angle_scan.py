"""Where is the magic angle? Flat-band width and Dirac velocity of twisted bilayer graphene vs twist angle.

    python examples/magic_angle_scan.py                          # m = 26..34 (1.25°–0.96°), rigid cells
    python examples/magic_angle_scan.py --m 29 31 33 --relaxed 31 --relax-steps 40

For each commensurate angle (r = 1) the learned ``graphene-bilayer`` model and the Moon–Koshino Slater–Koster
model (``slater_koster.py``: the analytic reference, not DFT) give H; the ``--num`` states nearest the Dirac energy
E_D are computed at ``--npoints`` k-points along K–Γ–M–K (sparse solver), and reported:

- flat-band width (meV): max − min of the 4 central bands over those k-points (``tb.flatbands``): a lower bound of
  the width over the whole zone (the path holds K, Γ, M);
- v_F (10⁵ m/s): Dirac velocity at the moiré K point from K + q, |q| = ``--dq`` × |KΓ|.

``--relaxed M ...`` also relaxes those cells (positions only, preconditioned L-BFGS, ``--relax-fmax``, ``--relax-steps``) with the
model and reports the learned-model bands of the relaxed cell. Writes ``--out`` (JSON) and prints a table.
"""
from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # one BLAS thread per factorisation worker

import argparse
import hashlib
import json
import time
from pathlib import Path

import numpy as np
import torch

from ase_wannierml import WannierMLCalculator, load_model, twisted_bilayer
from ase_wannierml.model.io import resolve_model_path
from ase_wannierml.relaxation import equilibrium_bilayer, relax
from ase_wannierml.slater_koster import moon_koshino_tb
from ase_wannierml.tb import solvers
from ase_wannierml.tb.flatbands import (band_indices_of, central_bands, fermi_velocity, flat_band_summary,
                                        neutrality_dirac_energy)


def scan_one(tb, atoms, near: float, num: int, npoints: int, dq: float) -> dict:
    """Flat-band width and v_F of one Hamiltonian (eV) with ``num`` states near ``near`` at the path's k-points."""
    path = atoms.cell.bandpath("KGMK", npoints=npoints, pbc=[True, True, False])
    k_K = np.asarray(path.special_points["K"])
    t0 = time.perf_counter()
    e_d, e_K = neutrality_dirac_energy(tb, k_K, near, num)
    solver = solvers.NearSolver(num, e_d)
    kpts = list(path.kpts)
    q = dq * (np.asarray(path.special_points["G"]) - k_K)  # towards Γ
    e_kn = [solver.solve(tb.hamiltonian_sparse(k, allow_real=True)).values for k in kpts + [k_K + q]]
    e_kn = np.array(e_kn)
    index_kn, n_occ = band_indices_of(tb, np.array(kpts + [k_K + q]), e_kn)  # absolute band indices (inertia)
    recip = 2 * np.pi * np.linalg.inv(np.asarray(atoms.cell)).T  # rows b_i, 1/Å
    dk = float(np.linalg.norm(q @ recip))
    info = flat_band_summary(e_kn[:-1], e_d, index_kn=index_kn[:-1], n_occupied=n_occ)
    central_q = central_bands(e_kn[-1:], e_d, index_kn=index_kn[-1:], n_occupied=n_occ)[0]
    info["v_F_1e5_m_s"] = fermi_velocity(e_K, e_kn[-1], dk, central_q=central_q) / 1e5
    info["solve_s"] = round(time.perf_counter() - t0, 1)
    return info


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--m", type=int, nargs="+", default=[31, 32, 30, 33, 29, 34, 28, 27, 26],
                   help="commensurate indices (r = 1), run in this order (results are saved after each)")
    p.add_argument("--model", default="graphene-bilayer")
    p.add_argument("--threshold", type=float, default=3e-4, help="prune learned hoppings below this (eV)")
    p.add_argument("--num", type=int, default=8)
    p.add_argument("--npoints", type=int, default=7, help="k-points along K–Γ–M–K per angle")
    p.add_argument("--dq", type=float, default=0.02, help="|q| / |KΓ| for the Dirac velocity")
    p.add_argument("--relaxed", type=int, nargs="*", default=[], help="also relax these m (learned model)")
    p.add_argument("--relax-fmax", type=float, default=0.03)
    p.add_argument("--relax-steps", type=int, default=60)
    p.add_argument("--reference-only", action="store_true", help="only the Moon–Koshino reference (fast)")
    p.add_argument("--lattice", choices=("equilibrium", "default"), default="equilibrium",
                   help="cells of the learned model: at its own AB-bilayer lattice constant and interlayer distance "
                        "(relax.equilibrium_bilayer), or at the default 2.46 / 3.35 Å")
    p.add_argument("--threads", type=int, default=1, help="torch threads (1: fastest on a busy machine)")
    p.add_argument("--out", default="magic_angle_scan.json")
    p.add_argument("--geometry-dir", default=None, help="write each relaxed cell here as m<m>_relaxed.extxyz")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    model_file = resolve_model_path(args.model)
    model_sha = hashlib.sha256(Path(model_file).read_bytes()).hexdigest()[:16]
    calc = WannierMLCalculator(load_model(model_file), hamiltonian_threshold=args.threshold)
    lattice = {}
    if args.lattice == "equilibrium" and not args.reference_only:
        a, d = equilibrium_bilayer(WannierMLCalculator(load_model(model_file)), "graphene")
        lattice = {"a": a, "interlayer": d}
        print(f"learned model on its AB-bilayer lattice: a = {a:.4f} Å, interlayer {d:.3f} Å", flush=True)
    rows, t_all = [], time.perf_counter()
    for m in args.m:
        atoms = twisted_bilayer("graphene", m=m, r=1)
        row = {"m": m, "angle_deg": float(atoms.info["twist_angle"]), "atoms": len(atoms)}
        t0 = time.perf_counter()
        mk = moon_koshino_tb(atoms)      # the reference's own geometry: a = 2.46 Å, interlayer 3.35 Å
        row["moon_koshino"] = scan_one(mk, atoms, near=0.8, num=args.num, npoints=args.npoints, dq=args.dq)
        del mk
        if not args.reference_only:
            t1 = time.perf_counter()
            if lattice:                  # learned model on its own bilayer lattice (no uniform misfit strain)
                atoms = twisted_bilayer("graphene", m=m, r=1, **lattice)
                row["learned_lattice_A"] = lattice
            tb = calc.get_hamiltonian(atoms)
            row["learned_H_s"] = round(time.perf_counter() - t1, 1)
            row["learned_nnz"] = int(tb.nnz)
            row["learned_rigid"] = scan_one(tb, atoms, near=tb.fermi_level(), num=args.num, npoints=args.npoints,
                                            dq=args.dq)
            del tb
        if m in args.relaxed and not args.reference_only:
            t2 = time.perf_counter()
            relaxed = atoms.copy()
            relaxed.calc = calc
            res = relax(relaxed, fmax=args.relax_fmax, steps=args.relax_steps, progress_every=5)
            row["relax"] = {"steps": res.steps, "force_calls": res.force_calls, "converged": res.converged,
                            "s": round(time.perf_counter() - t2, 1)}
            if args.geometry_dir:
                Path(args.geometry_dir).mkdir(parents=True, exist_ok=True)
                relaxed.write(Path(args.geometry_dir) / f"m{m}_relaxed.extxyz")
            tb_r = calc.get_hamiltonian(relaxed)
            row["learned_relaxed"] = scan_one(tb_r, relaxed, near=tb_r.fermi_level(), num=args.num,
                                              npoints=args.npoints, dq=args.dq)
        row["wall_s"] = round(time.perf_counter() - t0, 1)
        row["load_average"] = os.getloadavg()[0]
        rows.append(row)
        w = {k: row[k]["flat_band_width_meV"] for k in ("moon_koshino", "learned_rigid", "learned_relaxed")
             if k in row}
        v = {k: row[k]["v_F_1e5_m_s"] for k in ("moon_koshino", "learned_rigid") if k in row}
        print(f"m={m} {row['angle_deg']:.3f}° {len(atoms)} atoms: width " +
              ", ".join(f"{k} {x:.1f} meV" for k, x in w.items()) + "; v_F " +
              ", ".join(f"{k} {x:.3f}" for k, x in v.items()) + f" ×10⁵ m/s; {row['wall_s']:.0f} s", flush=True)
        result = {"rows": rows, "args": vars(args), "model": {"file": str(model_file), "sha256_16": model_sha}}
        Path(args.out).write_text(json.dumps(result, indent=1))
    print(f"\n{'m':>3} {'angle':>7} | {'MK width':>9} {'MK v_F':>7} | {'ML width':>9} {'ML v_F':>7} | "
          f"{'ML relaxed width':>16}")
    def cell(r: dict, key: str, field: str, fmt: str) -> str:
        return format(r[key][field], fmt) if key in r else "-"

    for r in sorted(rows, key=lambda r: r["angle_deg"]):
        rel = r.get("learned_relaxed", {}).get("flat_band_width_meV")
        print(f"{r['m']:>3} {r['angle_deg']:>6.3f}° | {cell(r, 'moon_koshino', 'flat_band_width_meV', '.1f'):>7}   "
              f"{cell(r, 'moon_koshino', 'v_F_1e5_m_s', '.3f'):>7} | "
              f"{cell(r, 'learned_rigid', 'flat_band_width_meV', '.1f'):>7}   "
              f"{cell(r, 'learned_rigid', 'v_F_1e5_m_s', '.3f'):>7} | {'' if rel is None else f'{rel:.1f}':>16}")
    for key in ("moon_koshino", "learned_rigid"):
        have = [r for r in rows if key in r]
        if not have:
            continue
        best = min(have, key=lambda r: r[key]["flat_band_width_meV"])
        print(f"narrowest flat bands ({key}): {best['angle_deg']:.3f}° (m={best['m']})")
    print(f"total {time.perf_counter() - t_all:.0f} s; wrote {args.out}")


if __name__ == "__main__":
    main()
