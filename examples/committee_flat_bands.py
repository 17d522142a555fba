"""Flat-band width of a relaxed twisted bilayer graphene cell with the committee's spread.

    OMP_NUM_THREADS=1 python examples/committee_flat_bands.py --m 13          # 2.45°, 2,188 atoms
    OMP_NUM_THREADS=1 python examples/committee_flat_bands.py --m 31          # 1.05°, 11,908 atoms (~7 GB)
    OMP_NUM_THREADS=1 python examples/committee_flat_bands.py --structure tbg_magic_output/relaxed.extxyz
                                        # a cell relaxed before (e.g. by examples/magic_angle_tbg.py): no relaxation

The cell (r = 1 commensurate, ``twisted_bilayer``) is relaxed (positions, preconditioned L-BFGS) with the
committee mean (``--relax-with single``: the shipped single model, cheaper); then the 4 flat bands are computed at
``--npoints`` k-points along K–Γ–M–K for the mean Hamiltonian and for each member's Hamiltonian
(``WannierMLCalculator.get_flat_band_width``: bands by absolute index at charge neutrality). The width is
max − min of the 4 bands over those k-points (a lower bound of the width over the zone). Prints the width of the
mean H and the members' mean ± standard deviation; JSON in benchmarks/results/committee_flat_band_m<m>.json.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from ase_wannierml import WannierMLCalculator, load_model, relax, twisted_bilayer


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--m", type=int, default=13)
    ap.add_argument("--relax-with", choices=["committee", "single"], default="committee")
    ap.add_argument("--fmax", type=float, default=0.03, help="eV/Å")
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--structure", default=None,
                    help="an already relaxed twisted bilayer (ASE-readable file with the 'layer' array, e.g. the "
                         "relaxed.extxyz of examples/magic_angle_tbg.py): skip building and relaxing")
    ap.add_argument("--npoints", type=int, default=24)
    ap.add_argument("--num", type=int, default=16)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    committee = load_model("graphene-bilayer", committee=True)
    if args.structure:
        from ase.io import read

        atoms = read(args.structure)
        if "layer" not in atoms.arrays:
            raise SystemExit(f"{args.structure}: no per-atom 'layer' array (write it with the twisted cell)")
        angle = atoms.info.get("twist_angle")
        args.m = int(atoms.info.get("twist_m", args.m))
        print(f"{args.structure}: {len(atoms)} atoms, twist {angle}, committee of {committee.size}", flush=True)
        res, t_relax = None, 0.0
    else:
        atoms = twisted_bilayer("graphene", m=args.m, r=1)
        print(f"twist {atoms.info['twist_angle']:.3f}°, {len(atoms)} atoms, committee of {committee.size}",
              flush=True)
        t0 = time.perf_counter()
        atoms.calc = WannierMLCalculator(committee if args.relax_with == "committee"
                                         else load_model("graphene-bilayer"))
        res = relax(atoms, fmax=args.fmax, steps=args.steps, logfile=None, progress_every=10)
        t_relax = time.perf_counter() - t0
    calc = WannierMLCalculator(committee)
    atoms.calc = calc
    atoms.get_forces()
    f_std = calc.results["forces_std"]
    path = atoms.cell.bandpath("KGMK", npoints=args.npoints, pbc=[True, True, False])
    t0 = time.perf_counter()
    info = calc.get_flat_band_width(path.kpts, num=args.num, k_dirac=path.special_points["K"])
    t_bands = time.perf_counter() - t0
    relax_info = ({"structure": str(args.structure)} if res is None else
                  {"steps": res.steps, "converged": res.converged, "fmax": args.fmax, "seconds": round(t_relax, 1)})
    out = {"m": args.m, "twist_deg": float(atoms.info.get("twist_angle", float("nan"))), "n_atoms": len(atoms),
           "K": committee.size, "relaxed_with": "file" if res is None else args.relax_with, "relax": relax_info,
           "forces_std_mean_meV_A": 1e3 * float(f_std.mean()), "npoints": args.npoints,
           "bands_seconds": round(t_bands, 1), **info}
    print(f"flat-band width (mean H) {info['flat_band_width_meV']:.1f} meV; members "
          f"{', '.join(f'{w:.1f}' for w in info['member_widths_meV'])} meV → {info['width_mean_meV']:.1f} ± "
          f"{info['width_std_meV']:.1f} meV; relax {res.steps if res else 0} steps ({t_relax:.0f} s), "
          f"bands {t_bands:.0f} s")
    dest = Path(__file__).resolve().parents[1] / "benchmarks" / "results" / f"committee_flat_band_m{args.m}.json"
    dest.write_text(json.dumps(out, indent=1, default=lambda o: o.tolist() if isinstance(o, np.ndarray) else str(o)))
    print(f"wrote {dest}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
