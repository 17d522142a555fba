"""Benchmark: out-of-plane (curvature) stiffness of rippled bilayer graphene against the interlayer distance, DFT vs models.

Why (session 14, docs/accuracy.md): on thermal snapshots the shipped graphene model's out-of-plane forces are ~20 %
too soft exactly in the frames whose layers are compressed below ~3.3 Å, while DFT's flexural stiffness does not
depend on the layer distance. This benchmark isolates that: one fixed ripple pattern (random out-of-plane
displacements of every atom of a 2×2 AB bilayer, rms ``--amplitude``, zero mean per layer, seeded) at several
interlayer distances, nothing else changed. For each frame: the curvature stiffness k in F_z,i ≈ −k · c_i
(c_i = z_i − mean z of i's three bonded neighbours; ``force_fit.curvature``), eV/Å², and the force RMSE.

    python benchmarks/ripple_stiffness.py structures --out scratch/ripple_gaps.extxyz          # seconds
    OMP_NUM_THREADS=1 nice -n 10 wannierml dft scratch/ripple_gaps.extxyz --material graphene-bilayer --scf-only \
        --prefix ripple --dataset-dir datasets/graphene-bilayer                               # ~5 min per frame
    python benchmarks/ripple_stiffness.py compare --model shipped=graphene-bilayer

``compare`` reads the DFT frames whose ids start with ``--prefix`` (default ``ripple``) and also evaluates every model
on the same structures at more gaps than DFT has (``--model-gaps``), to show where its stiffness departs. Writes
``benchmarks/results/ripple_stiffness.json`` (``--out``).
"""
from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
from datetime import datetime, timezone  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
BOND_CUTOFF = 1.75          # Å: graphene's three bonded neighbours (1.42 Å), not the second shell (2.46 Å)
DFT_GAPS = (3.10, 3.20, 3.30, 3.45, 3.60)


def _force_fit():
    import importlib.util

    spec = importlib.util.spec_from_file_location("force_fit", Path(__file__).with_name("force_fit.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def rippled_bilayer(gap: float, amplitude: float = 0.05, seed: int = 14, repeat: int = 2):
    """The workflow's AB reference bilayer repeated ``repeat``×``repeat``, every atom displaced along z by a seeded
    normal pattern (rms ``amplitude`` Å, mean zero in each layer), the mean layer distance set to ``gap`` Å.

    Same pattern for every gap (same seed and repeat), so frames differ only in the layer distance.
    """
    from ase_wannierml.dft.materials import get_material
    from ase_wannierml.dft.sampling import reference_structure

    if not 2.5 <= gap <= 6.0:
        raise ValueError(f"gap {gap} Å is outside 2.5–6 Å (a bilayer, not two separate sheets or a collapsed one)")
    if not 0.0 <= amplitude <= 0.3:
        raise ValueError(f"amplitude {amplitude} Å is outside 0–0.3 Å (a ripple, not a broken sheet)")
    atoms = reference_structure(get_material("graphene-bilayer")).repeat((repeat, repeat, 1))
    layer = np.asarray(atoms.arrays["layer"]).astype(int)
    z = atoms.positions[:, 2].copy()
    dz = np.random.default_rng(seed).normal(scale=amplitude, size=len(atoms))
    for lab in (0, 1):
        dz[layer == lab] -= dz[layer == lab].mean()
    z_bottom, z_top = z[layer == 0].mean(), z[layer == 1].mean()
    z[layer == 1] += gap - (z_top - z_bottom)
    atoms.positions[:, 2] = z + dz
    atoms.info.update({"ripple_gap_A": float(gap), "ripple_amplitude_A": float(amplitude), "ripple_seed": int(seed)})
    return atoms


def cmd_structures(args) -> int:
    from ase.io import write

    frames = [rippled_bilayer(g, args.amplitude, args.seed) for g in args.gaps]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    write(tmp, frames, format="extxyz")
    os.replace(tmp, out)
    print(f"wrote {len(frames)} structures ({len(frames[0])} atoms, gaps {', '.join(f'{g:.2f}' for g in args.gaps)} Å) "
          f"to {out}")
    return 0


def dft_frames(prefix: str, dataset: Path) -> list[tuple[float, Path]]:
    """(gap, frame dir) of the ``<prefix>-*`` frames with status ok, sorted by gap (from ``source_info``)."""
    out = []
    for d in sorted((dataset / "frames").glob(f"{prefix}-*")):
        meta = json.loads((d / "meta.json").read_text()) if (d / "meta.json").is_file() else {}
        if meta.get("status") != "ok":
            continue
        info = ((meta.get("sampling") or {}).get("notes") or {}).get("source_info") or {}
        if "ripple_gap_A" not in info:
            raise ValueError(f"{d.name}: meta.json has no ripple_gap_A (not made by `ripple_stiffness.py structures`)")
        out.append((float(info["ripple_gap_A"]), d))
    return sorted(out)


def stiffness_row(atoms, forces: np.ndarray) -> dict:
    ff = _force_fit()
    curv = ff.curvature(atoms, BOND_CUTOFF)
    return {"k_curv_eV_A2": ff.curvature_stiffness(forces[:, 2], curv),
            "curvature_rms_A": float(np.sqrt(np.mean(curv ** 2)))}


def cmd_compare(args) -> int:
    import torch
    from ase.io import read

    from ase_wannierml import load_model
    from ase_wannierml.calculator import WannierMLCalculator

    torch.set_num_threads(args.threads)
    dataset = Path(args.dataset_dir)
    frames = dft_frames(args.prefix, dataset)
    if not frames:
        print(f"no finished DFT frames {args.prefix}-* in {dataset / 'frames'}: model curves only")
    dft_rows = []
    for gap, d in frames:
        a = read(d / "structure.extxyz")
        f = a.get_forces()
        dft_rows.append({"gap_A": gap, "frame_id": d.name, **stiffness_row(a, f), "forces": f})
    models = {}
    gaps = sorted(set(args.model_gaps) | {g for g, _ in frames})
    for spec in args.model:
        label, _, path = spec.partition("=")
        calc = WannierMLCalculator(load_model(path or label))
        rows = []
        for g in gaps:
            a = rippled_bilayer(g, args.amplitude, args.seed)
            a.calc = calc
            f = a.get_forces()
            row = {"gap_A": g, **stiffness_row(a, f)}
            ref = next((r for r in dft_rows if abs(r["gap_A"] - g) < 1e-6), None)
            if ref is not None:
                row["force_rmse_meV_A"] = 1e3 * float(np.sqrt(np.mean((f - ref["forces"]) ** 2)))
                row["force_rmse_z_meV_A"] = 1e3 * float(np.sqrt(np.mean((f[:, 2] - ref["forces"][:, 2]) ** 2)))
            rows.append(row)
        models[label] = {"model": path or label, "rows": rows}
    labels = list(models)
    print(f"\n{'gap (Å)':>8s} {'k DFT':>7s} " + " ".join(f"{'k ' + m[:10]:>13s}" for m in labels)
          + " " + " ".join(f"{'F RMSE ' + m[:8]:>16s}" for m in labels) + "   (k: eV/Å², F: meV/Å)")
    for i, g in enumerate(gaps):
        ref = next((r for r in dft_rows if abs(r["gap_A"] - g) < 1e-6), None)
        line = f"{g:8.2f} " + (f"{ref['k_curv_eV_A2']:7.2f} " if ref else f"{'–':>7s} ")
        line += " ".join(f"{models[m]['rows'][i]['k_curv_eV_A2']:13.2f}" for m in labels) + " "
        line += " ".join(f"{models[m]['rows'][i].get('force_rmse_meV_A', float('nan')):16.1f}" for m in labels)
        print(line)
    for r in dft_rows:
        r.pop("forces")
    out = args.out or REPO / "benchmarks" / "results" / "ripple_stiffness.json"
    from ase_wannierml.cli import atomic_write_text

    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, json.dumps({
        "benchmark": "curvature stiffness of a fixed ripple vs interlayer distance (graphene bilayer 2x2)",
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "amplitude_A": args.amplitude,
        "seed": args.seed, "bond_cutoff_A": BOND_CUTOFF, "dft": dft_rows, "models": models,
        "load_average": os.getloadavg()}, indent=1))
    print(f"wrote {out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("structures", help="write the rippled bilayers for DFT")
    s.add_argument("--out", required=True)
    s.add_argument("--gaps", type=float, nargs="+", default=list(DFT_GAPS))
    c = sub.add_parser("compare", help="curvature stiffness of DFT frames and models")
    c.add_argument("--model", action="append", default=[], help="label=name-or-path (repeatable)")
    c.add_argument("--model-gaps", type=float, nargs="+",
                   default=[3.05, 3.10, 3.15, 3.20, 3.25, 3.30, 3.35, 3.40, 3.45, 3.50, 3.60, 3.80, 4.00])
    c.add_argument("--prefix", default="ripple")
    c.add_argument("--dataset-dir", default=str(REPO / "datasets" / "graphene-bilayer"))
    c.add_argument("--threads", type=int, default=1)
    c.add_argument("--out", type=Path, default=None)
    for p in (s, c):
        p.add_argument("--amplitude", type=float, default=0.05, help="Å, rms of the ripple")
        p.add_argument("--seed", type=int, default=14)
    args = ap.parse_args(argv)
    try:
        return cmd_structures(args) if args.cmd == "structures" else cmd_compare(args)
    except ValueError as err:
        ap.error(str(err))


if __name__ == "__main__":
    sys.exit(main())
