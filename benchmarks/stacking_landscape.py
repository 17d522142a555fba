"""Interlayer energy landscape: a pretrained model against the DFT stacking × gap grid it was fitted to.

The SCF-only grid frames (``frames/s*``, ``dft.sampling.stacking_grid``) are rigid bilayers at stacking shift
t·(1/3, 2/3) (t = 0 AA, 0.5 saddle point, 0.75, 1 AB for graphene) and a range of interlayer gaps. Relaxation of a
twisted cell is driven by two numbers of this surface: the stacking-fault energy E(t) − E(AB) at fixed gap (in-plane
relaxation: AB domains grow, AA regions shrink) and the gap dependence of each stacking (corrugation). For every
gap the table gives E(t) − E(AB) (meV/atom) from DFT and from the model, and for AB the energy relative to the
widest gap (the binding curve). The grid frames are training data, so this measures the fit of the surface, not
transferability.

    python benchmarks/stacking_landscape.py                                   # graphene-bilayer
    python benchmarks/stacking_landscape.py --material mos2-bilayer

Writes ``benchmarks/results/stacking_landscape_<material>.json``.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
_GRID_ID = re.compile(r"^s\d+-scf-t(?P<t>[0-9.]+)-g(?P<gap>[0-9.]+)$")


def grid_frames(frames_dir: Path) -> list[tuple[float, float, Path]]:
    """(t, gap Å, structure file) of every SCF grid frame under ``frames_dir``, sorted by gap then t."""
    out = []
    for path in sorted(frames_dir.glob("s*/structure.extxyz")):
        m = _GRID_ID.match(path.parent.name)
        if m:
            out.append((float(m["t"]), float(m["gap"]), path))
    return sorted(out, key=lambda x: (x[1], x[0]))


def landscape(rows: list[dict]) -> list[dict]:
    """Add ``dft_rel_ab_meV``/``model_rel_ab_meV`` (E − E(AB, same gap), meV/atom) to each row that has an AB
    partner (t = 1) at its gap, and ``dft_rel_wide_meV``/``model_rel_wide_meV`` (E − E(AB, widest gap)) to AB rows."""
    ab = {r["gap"]: r for r in rows if r["t"] == 1.0}
    wide = ab[max(ab)] if ab else None
    for r in rows:
        if r["gap"] in ab:
            ref = ab[r["gap"]]
            r["dft_rel_ab_meV"] = 1000 * (r["dft_eV_per_atom"] - ref["dft_eV_per_atom"])
            r["model_rel_ab_meV"] = 1000 * (r["model_eV_per_atom"] - ref["model_eV_per_atom"])
        if r["t"] == 1.0 and wide is not None:
            r["dft_rel_wide_meV"] = 1000 * (r["dft_eV_per_atom"] - wide["dft_eV_per_atom"])
            r["model_rel_wide_meV"] = 1000 * (r["model_eV_per_atom"] - wide["model_eV_per_atom"])
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--material", default="graphene-bilayer")
    p.add_argument("--model", default=None, help="model name or file (default: the shipped model of --material)")
    p.add_argument("--json", default=None, help="output JSON (default benchmarks/results/stacking_landscape_<m>.json)")
    args = p.parse_args(argv)

    from ase.io import read

    from ase_wannierml import WannierMLCalculator, load_model

    frames = grid_frames(REPO / "datasets" / args.material / "frames")
    if not frames:
        print(f"no SCF grid frames (s*-scf-t*-g*) under datasets/{args.material}/frames", file=sys.stderr)
        return 2
    calc = WannierMLCalculator(load_model(args.model or args.material))
    rows = []
    for t, gap, path in frames:
        atoms = read(path)
        e_dft = atoms.get_potential_energy() / len(atoms)
        atoms.calc = calc
        rows.append({"frame": path.parent.name, "t": t, "gap": gap, "dft_eV_per_atom": e_dft,
                     "model_eV_per_atom": float(atoms.get_potential_energy()) / len(atoms)})
    landscape(rows)
    print(f"{args.material}: E(t) − E(AB) at fixed gap, meV/atom (DFT | model | model − DFT)")
    print(f"{'gap Å':>6} {'t':>5} {'DFT':>8} {'model':>8} {'diff':>7}")
    errs = []
    for r in rows:
        if "dft_rel_ab_meV" in r and r["t"] != 1.0:
            d = r["model_rel_ab_meV"] - r["dft_rel_ab_meV"]
            errs.append(abs(d))
            print(f"{r['gap']:6.2f} {r['t']:5.2f} {r['dft_rel_ab_meV']:8.2f} {r['model_rel_ab_meV']:8.2f} {d:7.2f}")
    print("AB energy relative to the widest gap, meV/atom (DFT | model)")
    for r in rows:
        if "dft_rel_wide_meV" in r:
            print(f"{r['gap']:6.2f} {'AB':>5} {r['dft_rel_wide_meV']:8.2f} {r['model_rel_wide_meV']:8.2f}")
    summary = {"material": args.material, "model": args.model or args.material, "frames": len(rows),
               "stacking_mae_meV_per_atom": sum(errs) / len(errs) if errs else None,
               "stacking_max_abs_meV_per_atom": max(errs) if errs else None, "rows": rows}
    print(f"stacking-energy error: MAE {summary['stacking_mae_meV_per_atom']:.2f}, "
          f"max {summary['stacking_max_abs_meV_per_atom']:.2f} meV/atom over {len(errs)} points")
    out = Path(args.json) if args.json else RESULTS / f"stacking_landscape_{args.material}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(summary, indent=1))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
