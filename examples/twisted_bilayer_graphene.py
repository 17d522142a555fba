"""Main job: relax a twisted bilayer graphene cell with the pretrained model, then its bands and DOS near E_F.

    python examples/twisted_bilayer_graphene.py                 # 2.88° (1,588 atoms), a few minutes on 2 cores
    python examples/twisted_bilayer_graphene.py --angle 1.05    # magic angle, 11,908 atoms (much longer)

Writes into --outdir (default ``tbg_output/``): ``relaxed.extxyz``, ``bands.png`` (unrelaxed vs relaxed),
``dos.png``, ``summary.json``. Energies in eV, lengths in Å.
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
from ase_wannierml.threads import set_threads
from _report import Stage, peak_memory_gb, plot_band_points


def central_band_width(bs, n_central: int = 4) -> float:
    """Width (eV) of the ``n_central`` bands nearest E_F along the path: max − min over those bands."""
    e_kn = bs.energies[0] - bs.reference
    order = np.argsort(np.abs(e_kn).mean(axis=0))[:n_central]
    sel = e_kn[:, np.sort(order)]
    return float(sel.max() - sel.min())


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--m", type=int, default=None, help="commensurate index m (r = 1); default from --angle")
    p.add_argument("--angle", type=float, default=2.88, help="twist angle in degrees (nearest commensurate)")
    p.add_argument("--model", default="graphene-bilayer")
    p.add_argument("--fmax", type=float, default=0.02, help="relaxation threshold, eV/Å")
    p.add_argument("--steps", type=int, default=150, help="maximum relaxation steps")
    p.add_argument("--npoints", type=int, default=60, help="k-points along K–Γ–M–K")
    p.add_argument("--num", type=int, default=8, help="bands nearest E_F from the sparse solver")
    p.add_argument("--outdir", default="tbg_output")
    p.add_argument("--threads", type=int, default=0,
                   help="torch threads (0: all cores, or 1 when other jobs keep them busy: ase_wannierml.threads)")
    return p.parse_args()


def main() -> None:
    args = parse_args()
    if args.threads:
        set_threads(args.threads)
    out = Path(args.outdir)
    out.mkdir(parents=True, exist_ok=True)
    stages: dict = {}
    with Stage("build cell", stages):
        atoms = twisted_bilayer("graphene", m=args.m, r=1) if args.m else twisted_bilayer("graphene", angle=args.angle)
        print(f"   {len(atoms)} atoms, angle {atoms.info.get('twist_angle', float('nan')):.3f}°")
    with Stage("load model", stages):
        calc = WannierMLCalculator(load_model(args.model))
        atoms.calc = calc
    path = atoms.cell.bandpath("KGMK", npoints=args.npoints)
    with Stage("bands (unrelaxed)", stages):
        bs0 = calc.get_band_structure(path=path, num=args.num)
    with Stage("relax", stages):
        res = relax(atoms, fmax=args.fmax, steps=args.steps)   # preconditioned L-BFGS (ase_wannierml.relaxation)
        atoms.write(out / "relaxed.extxyz")
    with Stage("bands (relaxed)", stages):
        bs = calc.get_band_structure(path=path, num=args.num)
    with Stage("DOS", stages):
        # 30 meV smearing: its default mesh (tb/kmesh.py dos_mesh, 11 x 11 here, 16 k-points) keeps the DOS smooth
        # at half the cost of the 20 meV default (17 x 17, 33 k-points); KPM above 2,000 orbitals
        dos = calc.get_dos(width=0.03)
    with Stage("plots", stages):
        fig, ax = plt.subplots(figsize=(5, 4))
        plot_band_points(ax, bs0, "tab:gray", "unrelaxed", window=0.3)
        plot_band_points(ax, bs, "tab:red", "relaxed", window=0.3)
        ax.set_title(f"TBG {atoms.info.get('twist_angle', 0):.2f}°, {len(atoms)} atoms")
        fig.tight_layout()
        fig.savefig(out / "bands.png", dpi=150)
        fig, ax = plt.subplots(figsize=(5, 3.5))
        ef = calc.get_fermi_level()
        e_rel, w = dos.get_energies() - ef, dos.get_weights()
        ax.plot(e_rel, w)
        ax.axvline(0.0, color="k", lw=0.8, ls=":")
        ax.set_xlim(-0.5, 0.5)
        ax.set_ylim(0.0, 1.1 * w[np.abs(e_rel) <= 0.5].max())
        ax.set_xlabel("E − E_F (eV)")
        ax.set_ylabel("DOS (states/eV/cell/spin)")
        fig.tight_layout()
        fig.savefig(out / "dos.png", dpi=150)
    z = atoms.positions[:, 2]
    layer = atoms.arrays["layer"]
    summary = {
        "atoms": len(atoms),
        "twist_angle_deg": float(atoms.info.get("twist_angle", np.nan)),
        "relax_converged": res.converged,
        "relax_steps": res.steps,
        "relax_force_calls": res.force_calls,
        "max_force_eV_A": float(np.linalg.norm(atoms.get_forces(), axis=1).max()),
        "corrugation_A": {"bottom": float(np.ptp(z[layer == 0])), "top": float(np.ptp(z[layer == 1]))},
        "mean_interlayer_distance_A": float(z[layer == 1].mean() - z[layer == 0].mean()),
        "central_bands_width_meV": {"unrelaxed": 1e3 * central_band_width(bs0),
                                    "relaxed": 1e3 * central_band_width(bs)},
        "fermi_level_eV": float(calc.get_fermi_level()),          # this cell's, from its electron count
        "model_reference_level_eV": calc.reference_level,         # the model's stored level (docs/energy_zero.md)
        "stages": stages,
        "total_wall_s": round(sum(s["wall_s"] for s in stages.values()), 1),
        "peak_memory_GB": round(peak_memory_gb(), 3),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    print(json.dumps({k: v for k, v in summary.items() if k != "stages"}, indent=1))
    print(f"wrote {out}/relaxed.extxyz, bands.png, dos.png, summary.json")


if __name__ == "__main__":
    main()
