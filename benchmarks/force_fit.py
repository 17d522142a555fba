"""Benchmark: how well models fit the forces of groups of DFT frames (training and held-out snapshots side by side).

A model that is as wrong on frames it was trained on as on held-out ones is underfitting (capacity, loss balance or
optimisation), not short of data. For each model and each group of frames (``--group label=glob``) this prints the
force RMSE of all components, of the out-of-plane (z) and in-plane components, and the *z-force slope*: the least-
squares slope of the model's z forces against DFT's, through the origin (1: right stiffness; 0.8: the model's
out-of-plane forces are 20 % too soft). Per frame also the layer distance and the error of the mean force on the top
layer (the rigid-layer force). With ``--bond-cutoff`` (Å; 1.75 for graphene) also the *curvature stiffness* of DFT and
of each model: k in F_z,i ≈ −k · c_i, where c_i = z_i − (mean z of i's bonded neighbours) is the local pyramidalisation
(eV/Å²; the flexural restoring force that dominates out-of-plane forces of a rippled sheet).

    python benchmarks/force_fit.py --material graphene-bilayer --model shipped=graphene-bilayer \
        --group 'train 2x2=datasets/graphene-bilayer/frames/md2x2-*-train-*' \
        --group 'train 3x3=datasets/graphene-bilayer/frames/md3x3-*-train-*' \
        --group 'test 2x2=datasets/graphene-bilayer/frames/md2x2-*-test-*' \
        --group 'test 3x3=datasets/graphene-bilayer/frames/md3x3-*-test-*'

Frames whose ``meta.json`` status is ``rejected`` are skipped (as training does), and listed. Writes
``benchmarks/results/force_fit_<material>.json`` (``--out``). Units: meV/Å for errors, Å for distances.
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


def z_slope(f_model_z: np.ndarray, f_dft_z: np.ndarray) -> float:
    """Least-squares slope b of f_model_z ≈ b · f_dft_z (through the origin); NaN if DFT's z forces are all zero."""
    f_model_z, f_dft_z = np.ravel(f_model_z), np.ravel(f_dft_z)
    denom = float(f_dft_z @ f_dft_z)
    return float(f_model_z @ f_dft_z / denom) if denom > 0 else float("nan")


def force_errors(f_model: np.ndarray, f_dft: np.ndarray) -> dict:
    """Force RMSE (all, z, xy components; meV/Å) and the z-force slope of one frame or of stacked frames.

    f_model, f_dft: (n, 3) eV/Å.
    """
    f_model, f_dft = np.asarray(f_model, float), np.asarray(f_dft, float)
    if f_model.shape != f_dft.shape or f_model.ndim != 2 or f_model.shape[1] != 3:
        raise ValueError(f"forces must both be (n, 3); got {f_model.shape} and {f_dft.shape}")
    if not (np.isfinite(f_model).all() and np.isfinite(f_dft).all()):
        raise ValueError("forces contain NaN or inf (model: "
                         f"{int((~np.isfinite(f_model)).sum())}, DFT: {int((~np.isfinite(f_dft)).sum())} values)")
    e = f_model - f_dft
    return {"rmse_meV_A": 1e3 * float(np.sqrt(np.mean(e ** 2))),
            "rmse_z_meV_A": 1e3 * float(np.sqrt(np.mean(e[:, 2] ** 2))),
            "rmse_xy_meV_A": 1e3 * float(np.sqrt(np.mean(e[:, :2] ** 2))),
            "dft_rms_z_meV_A": 1e3 * float(np.sqrt(np.mean(f_dft[:, 2] ** 2))),
            "z_slope": z_slope(f_model[:, 2], f_dft[:, 2])}


def curvature(atoms, bond_cutoff: float) -> np.ndarray:
    """(n_atoms,) Å: c_i = z_i − mean z of the atoms within ``bond_cutoff`` of i (periodic images included)."""
    from ase.neighborlist import neighbor_list

    i, d_vec = neighbor_list("iD", atoms, bond_cutoff)
    counts = np.bincount(i, minlength=len(atoms))
    if (counts == 0).any():
        raise ValueError(f"atoms {np.flatnonzero(counts == 0)[:5].tolist()} have no neighbour within "
                         f"--bond-cutoff {bond_cutoff} Å")
    return -np.bincount(i, weights=d_vec[:, 2], minlength=len(atoms)) / counts


def curvature_stiffness(f_z: np.ndarray, curv: np.ndarray) -> float:
    """eV/Å²: least-squares k in f_z ≈ −k · curv (NaN for a flat frame)."""
    denom = float(curv @ curv)
    return float(-(np.ravel(f_z) @ curv) / denom) if denom > 0 else float("nan")


def layer_labels(atoms) -> np.ndarray:
    """(n_atoms,) bool: True for the upper layer (the ``layer`` array if present, else z above the mean)."""
    if "layer" in atoms.arrays:
        layer = np.asarray(atoms.arrays["layer"]).astype(int)
        labels = sorted(set(layer.tolist()), key=lambda lab: atoms.positions[layer == lab, 2].mean())
        return layer == labels[-1]
    z = atoms.positions[:, 2]
    return z > z.mean()


def expand_groups(specs: list[str]) -> tuple[dict[str, list[Path]], list[str]]:
    """``label=glob`` → {label: frame dirs}; also the ids skipped because their meta.json says ``rejected``."""
    groups, rejected = {}, []
    for spec in specs:
        label, sep, pattern = spec.partition("=")
        if not sep or not label or not pattern:
            raise ValueError(f"--group {spec!r}: expected label=glob")
        paths = sorted(Path(p) for p in glob.glob(pattern))
        if not paths:
            raise ValueError(f"--group {label!r}: no frame directory matches {pattern!r}")
        kept = []
        for p in paths:
            if not (p / "structure.extxyz").is_file():
                raise ValueError(f"--group {label!r}: {p} is not a frame directory (no structure.extxyz)")
            meta = json.loads((p / "meta.json").read_text()) if (p / "meta.json").is_file() else {}
            if meta.get("status") == "rejected":
                rejected.append(p.name)
            else:
                kept.append(p)
        groups[label] = kept
    return groups, sorted(set(rejected))


def measure(model_spec: str, groups: dict[str, list[Path]], threads: int, bond_cutoff: float | None = None) -> dict:
    import torch
    from ase.io import read

    from ase_wannierml import load_model
    from ase_wannierml.calculator import WannierMLCalculator

    torch.set_num_threads(threads)
    name, _, path = model_spec.partition("=")
    calc = WannierMLCalculator(load_model(path or name))
    out = {"model": path or name, "groups": {}}
    for label, frames in groups.items():
        rows, fm_all, fd_all = [], [], []
        for f in frames:
            a = read(f / "structure.extxyz")
            f_dft = a.get_forces()
            b = a.copy()
            b.calc = calc
            f_ml = b.get_forces()
            top = layer_labels(a)
            row = {"frame_id": f.name, "n_atoms": len(a),
                   "layer_distance_A": float(a.positions[top, 2].mean() - a.positions[~top, 2].mean()),
                   "top_layer_fz_error_meV_A": 1e3 * float((f_ml[top, 2] - f_dft[top, 2]).mean())}
            row.update(force_errors(f_ml, f_dft))
            if bond_cutoff:
                curv = curvature(a, bond_cutoff)
                row["curvature_rms_A"] = float(np.sqrt(np.mean(curv ** 2)))
                row["k_curv_dft_eV_A2"] = curvature_stiffness(f_dft[:, 2], curv)
                row["k_curv_model_eV_A2"] = curvature_stiffness(f_ml[:, 2], curv)
            rows.append(row)
            fm_all.append(f_ml)
            fd_all.append(f_dft)
            print(f"  {label:10s} {f.name:34s} F {row['rmse_meV_A']:7.1f}  z {row['rmse_z_meV_A']:7.1f}  "
                  f"slope {row['z_slope']:5.2f}  d {row['layer_distance_A']:5.2f} Å"
                  + (f"  k DFT {row['k_curv_dft_eV_A2']:5.1f} model {row['k_curv_model_eV_A2']:5.1f} eV/Å²"
                     if bond_cutoff else ""), flush=True)
        summary = force_errors(np.concatenate(fm_all), np.concatenate(fd_all)) if rows else {}
        summary["n_frames"] = len(rows)
        out["groups"][label] = {"summary": summary, "rows": rows}
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--material", required=True)
    ap.add_argument("--model", action="append", required=True, help="label=name-or-path (repeatable)")
    ap.add_argument("--group", action="append", required=True, help="label=glob of frame directories (repeatable)")
    ap.add_argument("--bond-cutoff", type=float, default=None,
                    help="Å; also report the curvature stiffness (bonded neighbours within this distance)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    try:
        groups, rejected = expand_groups(args.group)
    except ValueError as err:
        ap.error(str(err))
    if rejected:
        print(f"skipped (meta.json status 'rejected'): {', '.join(rejected)}")
    results = {}
    for spec in args.model:
        label = spec.partition("=")[0]
        print(f"model {label}")
        results[label] = measure(spec, groups, args.threads, args.bond_cutoff)
    print(f"\n{'model':14s} {'group':12s} {'frames':>6s} {'F RMSE':>8s} {'F_z':>8s} {'F_xy':>8s} {'DFT z rms':>9s} "
          f"{'z slope':>7s}   (meV/Å)")
    for m, res in results.items():
        for g, block in res["groups"].items():
            s = block["summary"]
            if s["n_frames"]:
                print(f"{m[:14]:14s} {g[:12]:12s} {s['n_frames']:6d} {s['rmse_meV_A']:8.1f} {s['rmse_z_meV_A']:8.1f} "
                      f"{s['rmse_xy_meV_A']:8.1f} {s['dft_rms_z_meV_A']:9.0f} {s['z_slope']:7.2f}")
    out = args.out or REPO / "benchmarks" / "results" / f"force_fit_{Path(args.material).stem}.json"
    from ase_wannierml.cli import atomic_write_text

    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, json.dumps({
        "benchmark": "force fit of models on groups of DFT frames (training vs held-out)",
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "material": args.material,
        "groups": {g: [p.name for p in ps] for g, ps in groups.items()}, "rejected_skipped": rejected,
        "bond_cutoff_A": args.bond_cutoff,
        "models": results, "load_average": os.getloadavg()}, indent=1))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
