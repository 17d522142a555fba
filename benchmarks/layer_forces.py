"""Benchmark: rigid-layer forces and binding energies of models against DFT frames (the interlayer binding curve).

For each frame (``structure.extxyz`` with a ``layer`` array; SCF-only frames are fine) and each model: the mean force
per atom on the top layer, F̄_top = (1/N_top) Σ_{i∈top} F_i (eV/Å; z: positive pushes the layers apart), and the
energy per atom relative to a reference frame (meV/atom), DFT next to the model. A model whose per-atom forces are
good on average can still get F̄ wrong with one sign everywhere: then its binding curve is too flat or shifted and its
MD drifts the layers apart (what the active-learning rounds saw in both bilayers). Summary per model: RMSE of F̄_z
and of F̄_xy over the frames, and the MAE of the relative energies.

    python benchmarks/layer_forces.py --material graphene-bilayer --model round4=graphene-bilayer \
        --frames 'datasets/graphene-bilayer/frames/b[cd]0*' --reference bc001-scf-t1.00-g3.35
    python benchmarks/layer_forces.py --material mos2-bilayer --model stage7b=mos2-bilayer \
        --frames 'datasets/mos2-bilayer/frames/s0*' --reference s017-scf-t1.00-g3.18

Writes ``benchmarks/results/layer_forces_<material>.json`` (``--out``). Units: eV/Å, meV/atom, Å.
"""
from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import glob  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
from datetime import datetime, timezone  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def top_layer_mean_force(atoms, forces: np.ndarray) -> np.ndarray:
    """(3,) eV/Å: mean force on the atoms of the upper layer (by mean z of the ``layer`` labels)."""
    layer = np.asarray(atoms.arrays["layer"]).astype(int)
    labels = sorted(set(layer.tolist()), key=lambda lab: atoms.positions[layer == lab, 2].mean())
    if len(labels) < 2:
        raise ValueError(f"{atoms.info.get('frame_id', 'frame')}: one layer only, no interlayer force")
    return forces[layer == labels[-1]].mean(axis=0)


def measure(model_spec: str, frames: list[Path], reference: str | None, threads: int) -> dict:
    import torch
    from ase.io import read

    from ase_wannierml import load_model
    from ase_wannierml.calculator import WannierMLCalculator

    torch.set_num_threads(threads)
    name, _, path = model_spec.partition("=")
    calc = WannierMLCalculator(load_model(path or name))
    rows = []
    for f in frames:
        a = read(f / "structure.extxyz")
        e_dft, f_dft = a.get_potential_energy(), a.get_forces()
        meta = json.loads((f / "meta.json").read_text())
        b = a.copy()
        b.calc = calc
        e_ml, f_ml = b.get_potential_energy(), b.get_forces()
        layer = np.asarray(a.arrays["layer"]).astype(int)
        z = [a.positions[layer == lab, 2].mean() for lab in sorted(set(layer.tolist()))]
        rows.append({"frame_id": f.name, "n_atoms": len(a), "layer_distance_A": float(abs(z[-1] - z[0])),
                     "gap_A": (meta.get("sampling") or {}).get("gap"),
                     "e_dft_eV_per_atom": e_dft / len(a), "e_ml_eV_per_atom": e_ml / len(a),
                     "fbar_top_dft": top_layer_mean_force(a, f_dft).tolist(),
                     "fbar_top_ml": top_layer_mean_force(a, f_ml).tolist(),
                     "force_rmse_meV_A": 1e3 * float(np.sqrt(np.mean((f_ml - f_dft) ** 2)))})
    ref = next((r for r in rows if r["frame_id"] == reference), None) if reference else None
    if reference and ref is None:
        raise ValueError(f"reference frame {reference!r} is not among the frames")
    for r in rows:
        if ref is not None:
            r["de_dft_meV_per_atom"] = 1e3 * (r["e_dft_eV_per_atom"] - ref["e_dft_eV_per_atom"])
            r["de_ml_meV_per_atom"] = 1e3 * (r["e_ml_eV_per_atom"] - ref["e_ml_eV_per_atom"])
    d = np.array([np.subtract(r["fbar_top_ml"], r["fbar_top_dft"]) for r in rows])
    summary = {"fbar_z_rmse_meV_A": 1e3 * float(np.sqrt(np.mean(d[:, 2] ** 2))),
               "fbar_xy_rmse_meV_A": 1e3 * float(np.sqrt(np.mean(d[:, :2] ** 2))),
               "fbar_z_mean_error_meV_A": 1e3 * float(d[:, 2].mean()),
               "force_rmse_meV_A": float(np.sqrt(np.mean([r["force_rmse_meV_A"] ** 2 for r in rows])))}
    if ref is not None:
        summary["de_mae_meV_per_atom"] = float(np.mean([abs(r["de_ml_meV_per_atom"] - r["de_dft_meV_per_atom"])
                                                        for r in rows]))
    return {"model": path or name, "rows": rows, "summary": summary}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--material", required=True)
    ap.add_argument("--model", action="append", required=True, help="label=name-or-path (repeatable)")
    ap.add_argument("--frames", nargs="+", required=True, help="frame directories or glob patterns")
    ap.add_argument("--reference", default=None, help="frame id whose energy is the zero of the relative energies")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    frames = sorted({Path(p) for pat in args.frames for p in (glob.glob(pat) or [pat])})
    missing = [str(f) for f in frames if not (f / "structure.extxyz").is_file()]
    if missing:
        ap.error(f"not frame directories (no structure.extxyz): {', '.join(missing[:5])}")
    results = {}
    for spec in args.model:
        label = spec.partition("=")[0]
        results[label] = measure(spec, frames, args.reference, args.threads)
    ids = [f.name for f in frames]
    labels = list(results)
    print(f"{'frame':26s} {'d (Å)':>6s} {'F̄z DFT':>8s} " + " ".join(f"{'F̄z ' + m[:8]:>13s}" for m in labels)
          + (f" {'ΔE DFT':>7s} " + " ".join(f"{'ΔE ' + m[:8]:>12s}" for m in labels) if args.reference else ""))
    for i, fid in enumerate(ids):
        r0 = results[labels[0]]["rows"][i]
        line = f"{fid[:26]:26s} {r0['layer_distance_A']:6.3f} {r0['fbar_top_dft'][2]:8.4f} "
        line += " ".join(f"{results[m]['rows'][i]['fbar_top_ml'][2]:13.4f}" for m in labels)
        if args.reference:
            line += f" {r0['de_dft_meV_per_atom']:7.2f} " + " ".join(
                f"{results[m]['rows'][i]['de_ml_meV_per_atom']:12.2f}" for m in labels)
        print(line)
    print("\nF̄z: mean force per atom on the top layer, eV/Å (> 0: apart); ΔE: meV/atom from the reference frame")
    for m in labels:
        print(f"{m}: " + ", ".join(f"{k} {v:.2f}" for k, v in results[m]["summary"].items()))
    out = args.out or REPO / "benchmarks" / "results" / f"layer_forces_{Path(args.material).stem}.json"
    from ase_wannierml.cli import atomic_write_text

    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, json.dumps({
        "benchmark": "rigid-layer forces and relative energies against DFT frames (binding curve)",
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "material": args.material,
        "reference": args.reference, "frames": ids, "models": results, "load_average": os.getloadavg()}, indent=1))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
