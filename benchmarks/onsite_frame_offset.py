"""Frame-wide onsite offset of graphene models against the interlayer distance.

    OMP_NUM_THREADS=1 python benchmarks/onsite_frame_offset.py --model round9=graphene-bilayer \
        --model round11=runs/graphene-round11/model.pt [--out benchmarks/results/onsite_frame_offset.json]

For every graphene frame with a Wannier Hamiltonian (status ok, vacuum level known): the mean pz onsite energy of
the frame relative to its vacuum level (DFT) and the model's mean onsite energy for the same structure (the shipped
models' zero is the vacuum level), with the frame's mean interlayer distance d (mean z of layer 1 − mean z of layer
0, Å) and in-plane lattice constant a (Å). Per group (small cells; ≥ 16-atom training / held-out frames; the AB gap
scan ``gapH-*``): least-squares slopes of the frame mean onsite against d and a, for DFT and model, the rms of the
model's frame offset (model − DFT frame mean) and its correlation with d. Energies in meV.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

from ase_wannierml.cli import atomic_write_text

ROOT = Path(__file__).resolve().parents[1]
FRAMES = ROOT / "datasets" / "graphene-bilayer" / "frames"


def mean_onsite(tb) -> float:
    """eV, mean of the R = 0 diagonal of a ``TightBinding``."""
    return float(tb.onsite_energies().mean())


def frame_rows(models: dict) -> list[dict]:
    from ase_wannierml.training.frames import load_frame_dir

    rows = []
    for d in sorted(FRAMES.iterdir()):
        meta_file = d / "meta.json"
        if not (d / "wannier90_hr.dat.gz").exists() or not meta_file.exists():
            continue
        meta = json.loads(meta_file.read_text())
        if meta.get("status") != "ok" or "vacuum_level_eV" not in meta:
            continue
        frame = load_frame_dir(d)
        atoms = frame.atoms
        z = atoms.positions[:, 2]
        layer = np.asarray(atoms.arrays["layer"]) if "layer" in atoms.arrays else (z > z.mean()).astype(int)
        row = {"frame": d.name, "n_atoms": len(atoms), "test": "-test-" in d.name,
               "gap_A": float(z[layer == 1].mean() - z[layer == 0].mean()),
               "a_A": float(np.linalg.norm(atoms.cell[0]) / np.sqrt(len(atoms) / 4)),
               "dft_meV": 1e3 * (mean_onsite(frame.tb) - float(meta["vacuum_level_eV"]))}
        for tag, model in models.items():
            row[f"{tag}_meV"] = 1e3 * mean_onsite(model.predict_tightbinding(atoms))
        rows.append(row)
    return rows


def group_fit(rows: list[dict], tags: list[str]) -> dict:
    gap = np.array([r["gap_A"] for r in rows])
    a = np.array([r["a_A"] for r in rows])
    X = np.c_[np.ones_like(gap), gap - 3.35] if np.ptp(a) < 1e-3 else np.c_[np.ones_like(gap), gap - 3.35, a - 2.46]
    out = {"n_frames": len(rows), "gap_range_A": [float(gap.min()), float(gap.max())]}
    dft = np.array([r["dft_meV"] for r in rows])
    out["dft_slope_meV_per_A"] = float(np.linalg.lstsq(X, dft, rcond=None)[0][1])
    for tag in tags:
        pred = np.array([r[f"{tag}_meV"] for r in rows])
        off = pred - dft
        out[tag] = {"slope_meV_per_A": float(np.linalg.lstsq(X, pred, rcond=None)[0][1]),
                    "offset_rms_meV": float(np.sqrt(np.mean(off ** 2))),
                    "offset_gap_correlation": float(np.corrcoef(off, gap)[0, 1]) if len(rows) > 2 else None}
    return out


def main(argv: list[str] | None = None) -> int:
    from ase_wannierml import load_model

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", action="append", required=True, help="tag=model (file or shipped name)")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "onsite_frame_offset.json")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    models = {}
    for spec in args.model:
        tag, _, name = spec.partition("=")
        if not name:
            p.error(f"--model {spec!r}: expected tag=model")
        models[tag] = load_model(name, dtype=torch.float64)
    rows = frame_rows(models)
    tags = list(models)
    groups = {"small cells (< 16 atoms, no gapH)": [r for r in rows if r["n_atoms"] < 16 and not r["frame"].startswith("gapH")],
              "AB gap scan (gapH-*)": [r for r in rows if r["frame"].startswith("gapH")],
              ">= 16 atoms, training": [r for r in rows if r["n_atoms"] >= 16 and not r["test"]],
              ">= 16 atoms, held out": [r for r in rows if r["n_atoms"] >= 16 and r["test"]]}
    result = {"models": {t: s.partition("=")[2] for t, s in zip(tags, args.model)},
              "groups": {g: group_fit(rs, tags) for g, rs in groups.items() if len(rs) >= 3}, "frames": rows}
    print(f"{'group':34s} {'n':>3s} {'d range (Å)':>12s} {'DFT dE/dd':>10s} " +
          " ".join(f"{t + ' dE/dd':>14s} {t + ' off rms':>14s} {'corr(off,d)':>11s}" for t in tags))
    for g, f in result["groups"].items():
        print(f"{g:34s} {f['n_frames']:3d} {f['gap_range_A'][0]:5.2f}–{f['gap_range_A'][1]:5.2f} "
              f"{f['dft_slope_meV_per_A']:10.1f} " + " ".join(
                  f"{f[t]['slope_meV_per_A']:14.1f} {f[t]['offset_rms_meV']:14.1f} {f[t]['offset_gap_correlation']:11.2f}"
                  for t in tags))
    gap_rows = sorted(groups["AB gap scan (gapH-*)"] + [r for r in rows if r["frame"] == "0000-refAB"],
                      key=lambda r: r["gap_A"])
    if gap_rows:
        print("\nAB bilayer, a = 2.46 Å: frame mean onsite (meV, vacuum zero)")
        print(f"{'d (Å)':>7s} {'DFT':>9s} " + " ".join(f"{t:>9s}" for t in tags))
        for r in gap_rows:
            print(f"{r['gap_A']:7.3f} {r['dft_meV']:9.1f} " + " ".join(f"{r[t + '_meV']:9.1f}" for t in tags))
    atomic_write_text(args.out, json.dumps(result, indent=1))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
