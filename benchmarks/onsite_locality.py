"""How much of graphene's within-frame onsite variation do local geometry and our models explain?

    OMP_NUM_THREADS=1 python benchmarks/onsite_locality.py --model round6=graphene-bilayer \
        [round7=runs/graphene-round7/model.pt] [--out benchmarks/results/onsite_locality_graphene.json]

Frames: every full (Wannier) graphene frame of ≥ 16 atoms with status "ok" (thermal MD snapshots). Target: the pz
onsite energy of each atom, vacuum zero (as in training), minus the frame's mean (the per-frame offset is a separate
question, docs/accuracy.md "The onsite error"). Per atom, 12 geometric descriptors: mean / spread of the three
bond lengths, the pyramidalisation height h of the atom over its three neighbours (signed towards the other layer,
|h|, h²), the out-of-plane Laplacian over the six second neighbours, sums over the layer, the closest atom of the
other layer and two interlayer density sums. A linear least-squares fit of the centred target on centred
descriptors, scored leave-one-frame-out (LOFO), is the "local geometry" baseline; the models are scored on the same
centred targets, per frame, split into frames they trained on and frames they did not (their metadata). Last, a
linear ridge fit (LOFO) from each model's own per-atom features (backbone invariants; the scalars its onsite head
reads) to the same targets: what a read-out of those features could reach. Prints a table, writes JSON.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from ase_wannierml.cli import atomic_write_text

ROOT = Path(__file__).resolve().parents[1]
DESCRIPTORS = ("bond_mean", "bond_spread", "h_signed", "h_squared", "bond_exp_sum", "other_min_distance",
               "other_density", "inv_same_sum", "inv_other_sum", "laplacian_2nd", "h_along_z", "h_abs")
SUBSETS = {"bond lengths": ["bond_mean", "bond_spread"], "pyramidalisation |h|": ["h_abs"],
           "h, h^2": ["h_signed", "h_squared"], "interlayer": ["other_min_distance", "other_density", "inv_other_sum"],
           "all 12": list(DESCRIPTORS)}


def descriptors(atoms) -> np.ndarray:
    """(n_atoms, 12) local geometry per atom (Å-based; see module docstring)."""
    from ase.neighborlist import neighbor_list

    layer = np.asarray(atoms.arrays["layer"])
    i, j, vec, dist = neighbor_list("ijDd", atoms, 6.0)
    rows = []
    for k in range(len(atoms)):
        mine = i == k
        same, other = mine & (layer[j] == layer[k]), mine & (layer[j] != layer[k])
        order = np.argsort(dist[same])
        if same.sum() < 9 or not other.any():
            raise ValueError(f"atom {k}: needs 3 bonded and 6 second neighbours in its layer and an atom of the other "
                             f"layer within 6 Å (found {int(same.sum())} / {int(other.sum())}); graphene bilayers only")
        nn, nn_vec = dist[same][order[:3]], vec[same][order[:3]]
        normal = np.cross(nn_vec[1] - nn_vec[0], nn_vec[2] - nn_vec[0])
        normal /= np.linalg.norm(normal)
        toward = 1.0 if layer[k] == layer.min() else -1.0
        if normal[2] * toward < 0:
            normal = -normal
        h = float(np.dot(nn_vec.mean(0), normal))
        lap = -float(np.dot(vec[same][order[3:9]].mean(0), normal))
        d_same, d_other = dist[same], dist[other]
        rows.append([nn.mean(), nn.std(), h, h * h, np.exp(-(d_same - 2.46)).sum(), d_other.min(),
                     np.exp(-(d_other - 3.35) / 0.5).sum(), (1 / d_same).sum(), (1 / d_other).sum(), lap,
                     -float(np.dot(nn_vec.mean(0), [0.0, 0.0, toward])), abs(h)])
    return np.asarray(rows)


def load(frames_dir: Path) -> list[dict]:
    from ase_wannierml.training.frames import frame_status, load_frame_dir

    out = []
    for d in sorted(frames_dir.iterdir()):
        if not (d / "wannier90_centres.xyz").is_file() or frame_status(d)[0] != "ok":
            continue
        frame = load_frame_dir(d)
        if frame.tb is None or len(frame.atoms) < 16:
            continue
        onsite = np.zeros(len(frame.atoms))
        onsite[frame.tb.orbitals.atom_index] = np.real(frame.tb.onsite_energies())
        onsite -= frame.meta.get("vacuum_level_eV", 0.0)
        out.append({"id": d.name, "atoms": frame.atoms, "target": onsite - onsite.mean(),
                    "x": descriptors(frame.atoms)})
    return out


def lofo_linear(frames: list[dict], columns: list[int]) -> np.ndarray:
    """Leave-one-frame-out predictions of the centred target from centred descriptors (linear least squares)."""
    xs = [f["x"][:, columns] - f["x"][:, columns].mean(0) for f in frames]
    ys = [f["target"] for f in frames]
    pred = []
    for k in range(len(frames)):
        a = np.concatenate([x for m, x in enumerate(xs) if m != k])
        b = np.concatenate([y for m, y in enumerate(ys) if m != k])
        w, *_ = np.linalg.lstsq(a, b, rcond=None)
        pred.append(xs[k] @ w)
    return np.concatenate(pred)


def model_errors(spec: str, frames: list[dict]) -> dict:
    """Per frame: the model's centred onsite MAE (meV), correlation with the target, trained on or not."""
    from ase_wannierml import WannierMLCalculator, load_model

    model = load_model(spec)
    trained = set((((getattr(model, "metadata", None) or {}).get("training") or {}).get("frame_ids") or {})
                  .get("train", []))
    calc = WannierMLCalculator(model)
    rows = {}
    for f in frames:
        atoms = f["atoms"].copy()
        tb = calc.get_hamiltonian(atoms)
        pred = np.zeros(len(atoms))
        pred[tb.orbitals.atom_index] = np.real(tb.onsite_energies())
        pred -= pred.mean()
        rows[f["id"]] = {"trained_on": f["id"] in trained, "mae_meV": 1e3 * float(np.abs(pred - f["target"]).mean()),
                         "corr": float(np.corrcoef(pred, f["target"])[0, 1])}
    return rows


def feature_lofo(spec: str, frames: list[dict], lam: float = 1.0) -> dict:
    """Do the model's own features hold the within-frame variation? Ridge (``lam``, standardised columns) from per-atom
    invariants to the centred target, leave-one-frame-out: the backbone features (0e channels and the norm of every
    l > 0 channel) and the scalars the onsite head reads (0e part of [x, x ⊗ x])."""
    import torch

    from ase_wannierml import load_model
    from ase_wannierml.model import atoms_to_graph
    from ase_wannierml.model import keys as K
    from ase_wannierml.model.heads import scalar_index

    model = load_model(spec, dtype=torch.float64)
    irreps, head = model.backbone.irreps_out, model.hamiltonian.onsite
    z_scalars = scalar_index(head.project.irreps_out + head.tp.irreps_out)
    backbone, onsite = [], []
    for f in frames:
        graph = atoms_to_graph(f["atoms"], model.config, dtype=torch.float64)
        with torch.no_grad():
            h = model.features(graph, graph[K.POSITIONS], graph[K.CELL])
            x = head.project(h)
            z = torch.cat([x, head.tp(x, x)], dim=1)
        cols = []
        for (mul, ir), sl in zip(irreps, irreps.slices()):
            block = h[:, sl].reshape(len(h), mul, ir.dim)
            cols.append(block[:, :, 0] if ir.l == 0 else block.norm(dim=2))
        backbone.append(torch.cat(cols, 1).numpy())
        onsite.append(z[:, z_scalars].numpy())
    y = [f["target"] for f in frames]
    out = {}
    for name, xs in (("backbone invariants", backbone), ("onsite-head scalars", onsite)):
        pred = []
        for k in range(len(xs)):
            a = np.concatenate([x - x.mean(0) for m, x in enumerate(xs) if m != k])
            b = np.concatenate([t for m, t in enumerate(y) if m != k])
            mu, sd = a.mean(0), a.std(0) + 1e-9
            an = (a - mu) / sd
            w = np.linalg.solve(an.T @ an + lam * np.eye(an.shape[1]), an.T @ b)
            pred.append(((xs[k] - xs[k].mean(0) - mu) / sd) @ w)
        r = np.concatenate(y) - np.concatenate(pred)
        out[name] = {"dims": int(xs[0].shape[1]), "ridge": lam, "lofo_mae_meV": 1e3 * float(np.abs(r).mean()),
                     "r2": float(1 - r.var() / np.concatenate(y).var())}
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", nargs="*", default=["round6=graphene-bilayer"], help="tag=name-or-file")
    p.add_argument("--frames", default=str(ROOT / "datasets/graphene-bilayer/frames"))
    p.add_argument("--out", default=str(ROOT / "benchmarks/results/onsite_locality_graphene.json"))
    args = p.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    t0 = time.time()
    frames = load(Path(args.frames))
    if not frames:
        print(f"error: no full frames of >= 16 atoms with status ok in {args.frames}", file=sys.stderr)
        return 2
    y = np.concatenate([f["target"] for f in frames])
    spread = 1e3 * float(np.abs(y).mean())
    print(f"{len(frames)} frames, {len(y)} atoms; within-frame onsite MAE about the frame mean {spread:.1f} meV "
          f"(std {1e3 * y.std():.1f})")
    result = {"frames": [f["id"] for f in frames], "within_frame_mae_meV": spread, "within_frame_std_meV":
              1e3 * float(y.std()), "linear_lofo": {}, "models": {}}
    print(f"{'local-geometry fit (LOFO)':32s} {'MAE meV':>8s} {'R2':>6s}")
    for name, cols in SUBSETS.items():
        pred = lofo_linear(frames, [DESCRIPTORS.index(c) for c in cols])
        r = y - pred
        mae, r2 = 1e3 * float(np.abs(r).mean()), float(1 - r.var() / y.var())
        result["linear_lofo"][name] = {"mae_meV": mae, "r2": r2, "descriptors": cols}
        print(f"{name:32s} {mae:8.1f} {r2:6.2f}")
    ids = [f["id"] for f in frames]
    per_frame_linear = lofo_linear(frames, list(range(len(DESCRIPTORS))))
    offsets = np.cumsum([0] + [len(f["target"]) for f in frames])
    linear_by_frame = {i: 1e3 * float(np.abs(y[a:b] - per_frame_linear[a:b]).mean())
                       for i, a, b in zip(ids, offsets[:-1], offsets[1:])}
    for spec in args.model:
        tag, _, name = spec.partition("=")
        rows = model_errors(name or tag, frames)
        summary = {}
        for flag, label in ((True, "trained_on"), (False, "not_trained_on")):
            sel = [i for i in ids if rows[i]["trained_on"] is flag]
            if sel:
                summary[label] = {"frames": len(sel), "model_mae_meV": float(np.mean([rows[i]["mae_meV"] for i in sel])),
                                  "linear_all12_lofo_mae_meV": float(np.mean([linear_by_frame[i] for i in sel])),
                                  "target_spread_meV": float(np.mean([1e3 * np.abs(frames[ids.index(i)]["target"]).mean()
                                                                      for i in sel]))}
                s = summary[label]
                print(f"{tag}: {label:15s} {s['frames']:3d} frames: model {s['model_mae_meV']:.1f} meV, 12-descriptor "
                      f"linear fit {s['linear_all12_lofo_mae_meV']:.1f}, target spread {s['target_spread_meV']:.1f}")
        fits = feature_lofo(name or tag, frames)
        for what, v in fits.items():
            print(f"{tag}: linear ridge on its {what} ({v['dims']} per atom), LOFO: {v['lofo_mae_meV']:.1f} meV, "
                  f"R2 {v['r2']:.2f}")
        result["models"][tag] = {"model": name or tag, "summary": summary, "feature_fit": fits, "frames": rows}
    result["seconds"] = time.time() - t0
    out = Path(args.out)
    atomic_write_text(out, json.dumps(result, indent=1))
    print(f"-> {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
