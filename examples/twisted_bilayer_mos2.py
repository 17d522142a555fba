"""Twisted bilayer MoS2 with the pretrained MoS2 model: relax, then the bands near the gap and the band gap.

    python examples/twisted_bilayer_mos2.py                   # 2.88° (2,382 atoms, 8,734 Wannier orbitals)
    python examples/twisted_bilayer_mos2.py --angle 6.0       # 546 atoms, quick

The cell is the 2H-like family (AA' stacking twisted by θ, i.e. 60° − θ from 3R). Positions are relaxed (ase_wannierml.relaxation)
(``--cell`` also relaxes the in-plane cell), then the ``--num`` bands nearest the gap centre (the model's Fermi
level, mid-gap) along Γ–M–K–Γ come from the sparse shift-invert solver. Writes into --outdir (default ``tmos2_output/``):
``relaxed.extxyz``, ``bands.png`` (unrelaxed vs relaxed), ``summary.json`` with wall time and peak memory per
stage. Energies in eV, lengths in Å.
"""
from __future__ import annotations

import os

# One BLAS thread per factorisation worker of the band solver (2 workers): with the OpenBLAS default of 2 threads
# each, a 2-core machine is oversubscribed (1,588 atoms, 10 k-points at load ~5: 110 s vs 17 s).
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from ase_wannierml import WannierMLCalculator, load_model, twisted_bilayer
from ase_wannierml.relaxation import relax
from _report import Stage, peak_memory_gb, plot_band_points


def gap_from_bands(bs) -> dict:
    """Band gap (eV) from bands that straddle the reference of ``bs`` (the model's Fermi level: the gap centre): lowest
    eigenvalue above it minus highest below it, with the k indices of both edges."""
    e_kn = bs.energies[0] - bs.reference
    below, above = np.where(e_kn < 0, e_kn, -np.inf), np.where(e_kn >= 0, e_kn, np.inf)
    iv, ic = int(below.max(axis=1).argmax()), int(above.min(axis=1).argmin())
    vbm, cbm = float(below.max()), float(above.min())
    if not np.isfinite(vbm) or not np.isfinite(cbm):
        raise RuntimeError("the computed bands do not straddle the gap centre; raise --num")
    return {"gap_eV": cbm - vbm, "vbm_eV": vbm, "cbm_eV": cbm, "vbm_k_index": iv, "cbm_k_index": ic}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--angle", type=float, default=2.88, help="twist angle in degrees (nearest commensurate)")
    p.add_argument("--model", default="mos2-bilayer")
    p.add_argument("--threshold", type=float, default=3e-4,
                   help="drop hoppings below this (eV, TightBinding.pruned); 0 keeps all")
    p.add_argument("--fmax", type=float, default=0.03, help="relaxation threshold, eV/Å")
    p.add_argument("--steps", type=int, default=200, help="maximum relaxation steps")
    p.add_argument("--cell", action="store_true", help="also relax the in-plane cell")
    p.add_argument("--npoints", type=int, default=45, help="k-points along Γ–M–K–Γ")
    p.add_argument("--num", type=int, default=16, help="bands nearest the gap centre (sparse solver)")
    p.add_argument("--outdir", default="tmos2_output")
    return p.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    out = Path(args.outdir)
    out.mkdir(parents=True, exist_ok=True)
    stages: dict = {}
    with Stage("build cell", stages):
        atoms = twisted_bilayer("mos2", angle=args.angle)
        print(f"   {len(atoms)} atoms, angle {atoms.info['twist_angle']:.3f}°", flush=True)
    with Stage("load model", stages):
        calc = WannierMLCalculator(load_model(args.model), hamiltonian_threshold=args.threshold)
        atoms.calc = calc
    path = atoms.cell.bandpath("GMKG", npoints=args.npoints)
    with Stage("bands (unrelaxed)", stages):
        bs0 = calc.get_band_structure(path=path, num=args.num)  # near E_F
        gap0 = gap_from_bands(bs0)
        tb0 = calc.get_hamiltonian()
        print(f"   {tb0.norb} orbitals, {tb0.nnz:,} stored hoppings ≥ {args.threshold:g} eV (pruning bound "
              f"{1e3 * tb0.pruning_bound:.1f} meV); gap {gap0['gap_eV']:.3f} eV", flush=True)
    with Stage("relax", stages):
        res = relax(atoms, fmax=args.fmax, cell=args.cell, steps=args.steps)   # preconditioned L-BFGS
        atoms.write(out / "relaxed.extxyz")
    with Stage("bands (relaxed)", stages):
        bs = calc.get_band_structure(path=path, num=args.num)  # near E_F
        gap = gap_from_bands(bs)
    with Stage("plots", stages):
        fig, ax = plt.subplots(figsize=(5, 4))
        plot_band_points(ax, bs0, "tab:gray", "unrelaxed", ylabel="E − gap centre (eV)")
        plot_band_points(ax, bs, "tab:red", "relaxed", ylabel="E − gap centre (eV)")
        ax.set_title(f"twisted MoS2 {atoms.info['twist_angle']:.2f}°, {len(atoms)} atoms")
        fig.tight_layout()
        fig.savefig(out / "bands.png", dpi=150)
    z, layer = atoms.positions[:, 2], atoms.arrays["layer"]
    mo = np.array(atoms.get_chemical_symbols()) == "Mo"
    summary = {
        "atoms": len(atoms), "orbitals": int(calc.get_hamiltonian().norb),
        "hamiltonian_threshold_eV": args.threshold, "stored_hoppings": int(calc.get_hamiltonian().nnz),
        "twist_angle_deg": float(atoms.info["twist_angle"]),
        "relax_converged": res.converged, "relax_steps": res.steps,
        "max_force_eV_A": float(np.linalg.norm(atoms.get_forces(), axis=1).max()),
        "mo_plane_corrugation_A": {"bottom": float(np.ptp(z[mo & (layer == 0)])),
                                   "top": float(np.ptp(z[mo & (layer == 1)]))},
        "gap_eV": {"unrelaxed": round(gap0["gap_eV"], 4), "relaxed": round(gap["gap_eV"], 4)},
        "band_edges_relaxed": gap,
        "stages": stages,
        "total_wall_s": round(sum(s["wall_s"] for s in stages.values()), 1),
        "peak_memory_GB": round(peak_memory_gb(), 3),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    print(json.dumps({k: v for k, v in summary.items() if k != "stages"}, indent=1))
    print(f"wrote {out}/relaxed.extxyz, bands.png, summary.json")
    return summary


if __name__ == "__main__":
    main()
