"""Flat bands of 1.05° twisted bilayer graphene from different Hamiltonian models on *the same* geometries.

Separates the electronic part of the relaxation effect from the mechanical one: the rigid cell (at the model's
bilayer lattice, as ``examples/magic_angle_tbg.py`` builds it) and one relaxed structure (an ``relaxed.extxyz``
written by that example) are fixed, and each model given predicts H on both; the 4 central bands along K–Γ–M–K
(``--npoints``) come from the sparse solver as in the example. Prints a table (flat-band width, gaps to the remote
bands, onsite spread of H) and writes JSON.

    OMP_NUM_THREADS=1 python benchmarks/moire_bands_fixed_geometry.py --relaxed tbg_magic/relaxed.extxyz \\
        --models graphene-bilayer runs/graphene-bilayer-pretrained-7/model.pt
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def _example():
    spec = importlib.util.spec_from_file_location("magic_angle_tbg", REPO / "examples" / "magic_angle_tbg.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--relaxed", required=True, help="relaxed structure (extxyz) of the same moiré cell")
    p.add_argument("--models", nargs="+", default=["graphene-bilayer"])
    p.add_argument("--m", type=int, default=31, help="commensurate index of the rigid cell (31: 1.05°)")
    p.add_argument("--npoints", type=int, default=12)
    p.add_argument("--num", type=int, default=12)
    p.add_argument("--threshold", type=float, default=3e-4, help="H pruning threshold (eV), as the example")
    p.add_argument("--json", default=str(REPO / "benchmarks" / "results" / "moire_bands_fixed_geometry.json"))
    args = p.parse_args(argv)

    from ase.io import read

    from ase_wannierml import WannierMLCalculator, load_model, twisted_bilayer
    from ase_wannierml.relaxation import equilibrium_bilayer

    ex = _example()
    relaxed = read(args.relaxed)
    rows = []
    for name in args.models:
        model = load_model(name)
        a, d = equilibrium_bilayer(WannierMLCalculator(model), "graphene")
        rigid = twisted_bilayer("graphene", m=args.m, r=1, a=a, interlayer=d)
        for label, atoms in (("rigid", rigid), ("relaxed", relaxed)):
            t0 = time.perf_counter()
            tb = model.predict_tightbinding(atoms)
            tb = tb.pruned(args.threshold) if args.threshold > 0 else tb
            on = tb.onsite_energies()
            path = atoms.cell.bandpath("KGMK", npoints=args.npoints, pbc=[True, True, False])
            _, info = ex.bands(tb, path, args.num, f"{name} {label}")
            row = {"model": name, "geometry": label, "atoms": len(atoms), "model_bilayer_a_A": a,
                   "model_bilayer_interlayer_A": d, "onsite_std_meV": 1e3 * float(on.std()),
                   "onsite_range_meV": 1e3 * float(np.ptp(on)), "wall_s": round(time.perf_counter() - t0, 1),
                   **{k: v for k, v in info.items() if not isinstance(v, np.ndarray)}}
            rows.append(row)
            print(f"{name} {label}: width {row['flat_band_width_meV']:.1f} meV, gaps {row['gap_below_meV']:.1f} / "
                  f"{row['gap_above_meV']:.1f} meV, onsite std {row['onsite_std_meV']:.1f} meV", flush=True)
    print(f"\n| model | geometry | flat-band width (meV) | gap below / above (meV) | onsite std / range (meV) |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['model']} | {r['geometry']} | {r['flat_band_width_meV']:.1f} | {r['gap_below_meV']:.1f} / "
              f"{r['gap_above_meV']:.1f} | {r['onsite_std_meV']:.1f} / {r['onsite_range_meV']:.1f} |")
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps({"relaxed_structure": args.relaxed, "rows": rows}, indent=1, default=float))
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
