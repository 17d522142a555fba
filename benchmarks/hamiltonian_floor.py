"""Where a model's Hamiltonian error comes from, on frames with crystal symmetry (e.g. the reference stackings).

Two numbers per frame, per category (onsite, intralayer near/far, interlayer), in meV:

* **symmetry floor** of the DFT + Wannier90 target: MAE between each target block and its average over the
  crystal's symmetry operations (spglib; block (i, j, S) ↦ M_i B M_jᵀ of the image pair, M the orbital rotation).
  An E(3)-equivariant model is symmetric by construction, so this part of the target is an error it cannot remove
  (the Wannier gauge's own asymmetry).
* **model residual** per pair shell (species pair, distance, vertical offset): MAE and RMSE of model − target,
  next to the target's size. A shell with a large residual on a training cell is a capacity limit, not missing
  data.

Usage::

    python benchmarks/hamiltonian_floor.py --model stage8=mos2-bilayer stage9=<file> \\
        --frames datasets/mos2-bilayer/frames/0000-ref2H datasets/mos2-bilayer/frames/0002-refAA \\
        --out benchmarks/results/hamiltonian_floor_mos2.json

Prints a table, writes JSON (atomically). Blocks are those of the model's own pair list and energy zero
(``training.cli.examples_for_model``).
"""
from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
CATEGORIES = ("onsite", "intra_near", "intra_far", "inter")


def symmetry_floor(example: dict, orbitals_of: list) -> dict[str, float | int]:
    """MAE (meV) per category of target − its symmetry average; ``ops``: symmetry operations used."""
    import spglib

    from ase_wannierml.training.assign import shell_rotation

    pos = example["positions"].numpy()
    lat = example["cell"][0].numpy()
    numbers = example["atomic_numbers"].numpy()
    frac = np.linalg.solve(lat.T, pos.T).T
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        sym = spglib.get_symmetry((lat, frac % 1.0, numbers), symprec=1e-3)
    pi, pj = example["ham_pair_index"].numpy()
    shifts = example["ham_pair_shift"].numpy()
    cat = example["ham_pair_category"].numpy()
    blocks = example["target_ham"].numpy()
    mask = example["target_ham_mask"].numpy()
    key = {(int(a), int(b), tuple(s)): k for k, (a, b, s) in enumerate(zip(pi, pj, shifts))}
    acc, count, ops = np.zeros_like(blocks), np.zeros(len(blocks)), 0
    for w_rot, trans in zip(sym["rotations"] if sym else [], sym["translations"] if sym else []):
        q = lat.T @ w_rot @ np.linalg.inv(lat.T)
        mapped = frac @ w_rot.T + trans
        diff = mapped[:, None, :] - frac[None, :, :]
        perm = np.argmin(np.linalg.norm((diff - np.round(diff)) @ lat, axis=-1), axis=1)
        offset = np.round(mapped - frac[perm]).astype(int)
        rot = [shell_rotation(orbitals_of[a], q) for a in range(len(numbers))]
        if any(m is None for m in rot):
            continue
        ops += 1
        for k in range(len(blocks)):
            a, b = int(pi[k]), int(pj[k])
            na, nb = len(orbitals_of[a]), len(orbitals_of[b])
            image = rot[a] @ blocks[k, :na, :nb] @ rot[b].T
            s2 = w_rot @ shifts[k] + offset[b] - offset[a]
            k2 = key.get((int(perm[a]), int(perm[b]), tuple(int(x) for x in s2)))
            if k2 is not None:
                acc[k2, :na, :nb] += image
            else:
                k2 = key.get((int(perm[b]), int(perm[a]), tuple(int(-x) for x in s2)))
                if k2 is None:
                    continue
                acc[k2, :nb, :na] += image.T
            count[k2] += 1
    out: dict[str, float | int] = {"ops": ops}
    seen = count > 0
    average = np.where(seen[:, None, None], acc / np.maximum(count, 1)[:, None, None], blocks)
    for c, name in enumerate(CATEGORIES):
        m = mask & ((cat == c) & seen)[:, None, None]
        out[name] = float(np.abs(blocks - average)[m].mean() * 1000) if m.any() else float("nan")
    return out


def shell_residuals(model: torch.nn.Module, example: dict) -> list[dict]:
    """Model − target per pair shell of the off-site categories (meV), sorted by category and distance."""
    from ase.data import chemical_symbols

    graph = {k: v for k, v in example.items() if not k.startswith(("target", "has_"))}
    with torch.no_grad():
        pred = model(graph, compute_forces=False, compute_hamiltonian=True)["ham_blocks"].double().numpy()
    target, mask = example["target_ham"].numpy(), example["target_ham_mask"].numpy()
    pi, pj = example["ham_pair_index"].numpy()
    cat = example["ham_pair_category"].numpy()
    pos, cell = example["positions"].numpy(), example["cell"][0].numpy()
    numbers = example["atomic_numbers"].numpy()
    vec = pos[pj] + example["ham_pair_shift"].numpy() @ cell - pos[pi]
    dist, dz = np.linalg.norm(vec, axis=1), np.abs(vec[:, 2])
    shells: dict[tuple, list[int]] = {}
    for k in range(len(target)):
        if cat[k] == 0:
            continue
        pair = "-".join(sorted((chemical_symbols[numbers[pi[k]]], chemical_symbols[numbers[pj[k]]])))
        shells.setdefault((int(cat[k]), pair, round(float(dist[k]), 2), round(float(dz[k]), 2)), []).append(k)
    rows = []
    for (c, pair, d, z), idx in sorted(shells.items(), key=lambda kv: (kv[0][0], kv[0][2], kv[0][1])):
        m = mask[idx]
        r = (pred[idx] - target[idx])[m] * 1000
        rows.append({"category": CATEGORIES[c], "pair": pair, "distance_A": d, "dz_A": z, "n_pairs": len(idx),
                     "residual_mae_meV": float(np.abs(r).mean()), "residual_rmse_meV": float(np.sqrt((r ** 2).mean())),
                     "target_rms_meV": float(np.sqrt(((target[idx][m] * 1000) ** 2).mean()))})
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", nargs="+", required=True, help="tag=model (file or shipped name)")
    ap.add_argument("--frames", nargs="+", required=True, help="frame directories with a Wannier Hamiltonian")
    ap.add_argument("--max-distance", type=float, default=6.0, help="Å, longest pair shell printed (all in JSON)")
    ap.add_argument("--out", default=None, help="results JSON")
    args = ap.parse_args(argv)

    from ase_wannierml.cli import atomic_write_text
    from ase_wannierml.model import load_model
    from ase_wannierml.orbitals import orbitals_per_atom
    from ase_wannierml.training.cli import examples_for_model

    torch.set_num_threads(1)
    models = {}
    for spec in args.model:
        tag, sep, name = spec.partition("=")
        if not sep or not tag or not name:
            ap.error(f"--model takes tag=model, got {spec!r}")
        models[tag] = load_model(name, dtype=torch.float64)
    missing = [f for f in args.frames if not (Path(f) / "meta.json").is_file()]
    if missing:
        ap.error(f"not frame directories (no meta.json): {missing}")
    first = next(iter(models.values()))
    results: dict = {"frames": {}, "models": {tag: spec.partition("=")[2] for tag, spec in zip(models, args.model)}}
    for frame in args.frames:
        fid = Path(frame).name
        examples = {tag: examples_for_model(m.config, [frame], m.metadata) for tag, m in models.items()}
        if any(len(e) != 1 or not bool(e[0]["has_ham"]) for e in examples.values()):
            print(f"{fid}: no usable Wannier Hamiltonian, skipped", file=sys.stderr)
            continue
        ex0 = examples[next(iter(models))][0]
        from ase.data import chemical_symbols

        symbols = [chemical_symbols[z] for z in ex0["atomic_numbers"].numpy()]
        floor = symmetry_floor(ex0, orbitals_per_atom(symbols, dict(first.config.orbitals)))
        entry = {"symmetry_floor_meV": floor, "residuals": {}}
        print(f"\n{fid}: symmetry floor of the target over {floor['ops']} operations (meV MAE): "
              + ", ".join(f"{c} {floor[c]:.2f}" for c in CATEGORIES))
        table = {tag: shell_residuals(m, examples[tag][0]) for tag, m in models.items()}
        for tag, rows in table.items():
            entry["residuals"][tag] = rows
        header = f"{'category':10s} {'pair':6s} {'d (Å)':>6s} {'dz':>5s} {'n':>3s} {'|target|':>9s} " + " ".join(
            f"{tag + ' MAE/RMSE':>18s}" for tag in table)
        print(header)
        base = table[next(iter(table))]
        for n, row in enumerate(base):
            if row["distance_A"] > args.max_distance:
                continue
            cells = " ".join(f"{t[n]['residual_mae_meV']:8.2f}/{t[n]['residual_rmse_meV']:<9.2f}" for t in table.values())
            print(f"{row['category']:10s} {row['pair']:6s} {row['distance_A']:6.2f} {row['dz_A']:5.2f} {row['n_pairs']:3d} "
                  f"{row['target_rms_meV']:9.1f} {cells}")
        results["frames"][fid] = entry
    if not results["frames"]:
        raise SystemExit("no frame with a usable Wannier Hamiltonian among --frames (SCF-only frames have none)")
    if args.out:
        atomic_write_text(args.out, json.dumps(results, indent=1))
        print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
