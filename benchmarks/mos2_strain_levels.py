"""Vacuum-referenced onsite levels vs biaxial strain in our own DFT+Wannier90
frames and in the shipped model, and the top-bottom onsite offset of the seed's 201-atom cell.

    OMP_NUM_THREADS=1 nice -n 5 python benchmarks/mos2_strain_levels.py [--model mos2-bilayer]

Writes benchmarks/results/mos2_strain_levels.json. Energies in meV unless named _eV.

Per frame/layer quantity = mean of the diagonal of H(R=0) over the orbitals of that element (Mo d, S p) and orbital
sub-groups, minus the frame's vacuum level (meta.json vacuum_level_eV, exactly as training/dataset.py does for
data.energy_zero = vacuum). DFT orbitals are assigned to atoms/slots with training.assign (as the dataset does).
The per-atom mean over a full l shell is invariant under the per-atom rotation to the target's local frame, so
element means of the 201-atom target (local frame) and of our model (global frame) are directly comparable.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import time
from pathlib import Path

import numpy as np

from ase_wannierml.cli import atomic_write_text

ROOT = Path(__file__).resolve().parents[1]
FRAMES = ROOT / "datasets" / "mos2-bilayer" / "frames"
FRAME_IDS = ["b003-biax-0.040", "0000-ref2H", "b004-biax+0.020", "b001-biax+0.040", "b002-biax+0.060",
             "b000-biax+0.080"]
A0 = 3.1542  # Å, our material's reference lattice constant (strain of the b frames is relative to it)
SHELLS = {"Mo": ["d"], "S": ["p"]}
GROUPS = {"Mo d": ("Mo", None), "Mo dz2": ("Mo", ("dz2",)), "Mo dxz,dyz": ("Mo", ("dxz", "dyz")),
          "Mo dxy,dx2-y2": ("Mo", ("dxy", "dx2-y2")), "S p": ("S", None), "S pz": ("S", ("pz",)),
          "S px,py": ("S", ("px", "py"))}


def group_means(diag: np.ndarray, element: np.ndarray, label: np.ndarray, layer: np.ndarray | None = None,
                which: int | None = None) -> dict:
    """Mean (eV) of ``diag`` over each orbital group (optionally only orbitals of layer ``which``)."""
    out = {}
    for name, (el, labels) in GROUPS.items():
        sel = element == el
        if labels is not None:
            sel &= np.isin(label, labels)
        if which is not None:
            sel &= layer == which
        out[name] = float(diag[sel].mean()) if sel.any() else float("nan")
    return out


def layer_of_atoms(atoms) -> np.ndarray:
    """0 bottom / 1 top by the z of the atom's Mo plane (split at the mean z of all Mo)."""
    if "layer" in atoms.arrays:
        return np.asarray(atoms.arrays["layer"], int)
    z = atoms.positions[:, 2]
    return (z > z[np.array(atoms.get_chemical_symbols()) == "Mo"].mean()).astype(int)


def dft_frame(fid: str) -> dict:
    from ase_wannierml.orbitals import orbitals_per_atom
    from ase_wannierml.training.assign import assign_wannier_functions
    from ase_wannierml.training.frames import load_frame_dir
    from ase_wannierml.training.targets import wannier_periodic_axes

    f = load_frame_dir(FRAMES / fid)
    tb, atoms = f.tb, f.atoms
    periodic = wannier_periodic_axes(tb.R, atoms.pbc)
    asg = assign_wannier_functions(atoms, tb.orbitals.centres, SHELLS, periodic, 0.7, fid)
    per_atom = orbitals_per_atom(atoms.get_chemical_symbols(), SHELLS)
    label = np.array([per_atom[a][s][1] for a, s in zip(asg.atom, asg.slot)])
    element = np.array(atoms.get_chemical_symbols())[asg.atom]
    layer = layer_of_atoms(atoms)[asg.atom]
    diag = tb.onsite_energies()
    vac = float(f.meta["vacuum_level_eV"])
    d = diag - vac
    a = float(np.linalg.norm(atoms.cell[0]))
    return {"frame": fid, "a_A": a, "strain_pct": 100 * (a / A0 - 1), "vacuum_level_eV": vac,
            "fermi_level_eV": f.fermi_level, "dft": group_means(d, element, label),
            "dft_per_layer": [group_means(d, element, label, layer, k) for k in (0, 1)],
            "atoms": atoms}


def model_levels(model, atoms) -> tuple[dict, list[dict]]:
    tb = model.predict_tightbinding(atoms)
    o = tb.orbitals
    diag = tb.onsite_energies()
    layer = layer_of_atoms(atoms)[o.atom_index]
    return (group_means(diag, o.element, o.label),
            [group_means(diag, o.element, o.label, layer, k) for k in (0, 1)])


def main(argv=None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--model", default="mos2-bilayer")
    p.add_argument("--shared", default=str(ROOT.parent / "shared"))
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "mos2_strain_levels.json"))
    args = p.parse_args(argv)

    import ase.io
    import torch

    from ase_wannierml import load_model

    model = load_model(args.model, dtype=torch.float64)
    rows = []
    for fid in FRAME_IDS:
        r = dft_frame(fid)
        r["model"], r["model_per_layer"] = model_levels(model, r.pop("atoms"))
        rows.append(r)
        print(f"{fid:18s} eps {r['strain_pct']:+6.2f} %  vac {r['vacuum_level_eV']:.3f}  "
              + "  ".join(f"{g}: DFT {r['dft'][g]:+.3f} model {r['model'][g]:+.3f}" for g in ("Mo d", "S p")))

    eps = np.array([r["strain_pct"] for r in rows])
    ref = next(r for r in rows if r["frame"] == "0000-ref2H")
    b8 = next(r for r in rows if r["frame"] == "b000-biax+0.080")
    bmask = np.array([r["frame"].startswith("b") for r in rows])

    # 201-atom cell: per-layer strain, model and target per-layer element means
    folder = Path(args.shared) / "benchmarks" / "wander_mos2_201"
    atoms201 = ase.io.read(folder / "structure.extxyz")
    info = json.loads((folder / "orbitals.json").read_text())
    eps_bot = 100 * (info["layers"]["bottom"]["lattice_A"] / A0 - 1)
    eps_top = 100 * (info["layers"]["top"]["lattice_A"] / A0 - 1)
    spec = importlib.util.spec_from_file_location("wme", ROOT / "benchmarks" / "wander_mos2_201_elements.py")
    wme = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(wme)
    t0 = time.perf_counter()
    tb = model.predict_tightbinding(atoms201)
    print(f"201-atom H predicted in {time.perf_counter() - t0:.0f} s")
    norb = tb.norb
    wfs = info["wannier_functions"]
    R_ours, H_ours = wme.dense_by_R(tb, norb)
    r0 = R_ours.index((0, 0, 0))
    T = wme.frame_transform(wfs, norb)
    diag_glob = np.diag(H_ours[r0]).copy()
    diag_loc = np.einsum("am,ab,bm->m", T, H_ours[r0], T)
    el = np.load(folder / "elements.npz")
    m, n = el["m"].astype(int) - 1, el["n"].astype(int) - 1
    R_el = np.asarray(el["R"])
    dsel = np.isfinite(el["h_target"]) & (m == n) & (R_el == 0).all(axis=1) & (el["category"] <= 1)
    diag_t = np.full(norb, np.nan)
    diag_t[m[dsel]] = el["h_target"][dsel]
    if not np.isfinite(diag_t).all():
        raise ValueError(f"{folder}/elements.npz: the target's onsite diagonal is incomplete "
                         f"({int((~np.isfinite(diag_t)).sum())} of {norb} missing)")
    lay = np.array([0 if w["layer"] == "bottom" else 1 for w in wfs])
    elem = np.array([w["element"] for w in wfs])
    if not (elem == tb.orbitals.element).all():
        raise ValueError(f"{folder}/orbitals.json: its orbital order does not match the model's")
    cell = {}
    for name, d in (("model (global frame)", diag_glob), ("model (target local frame)", diag_loc),
                    ("target", diag_t)):
        cell[name] = {}
        for e in ("Mo", "S"):
            bot, top = d[(lay == 0) & (elem == e)].mean(), d[(lay == 1) & (elem == e)].mean()
            cell[name][e] = {"bottom_eV": float(bot), "top_eV": float(top), "top_minus_bottom_meV": 1e3 * (top - bot)}
    # model sub-groups per layer in the global frame (the target's local frames have no pz/px,py split)
    glob_layer = {k: group_means(diag_glob, tb.orbitals.element, tb.orbitals.label, lay, k) for k in (0, 1)}
    model_sub_201 = {g: 1e3 * (glob_layer[1][g] - glob_layer[0][g]) for g in GROUPS}

    # DFT / model homostrain predictions of top - bottom at the 201 cell's layer strains
    groups_out, fits = {}, {}
    for g in GROUPS:
        out = {}
        for src in ("dft", "model"):
            y = np.array([r[src][g] for r in rows])
            lin_b = np.polyfit(eps[bmask], y[bmask], 1)
            lin_all = np.polyfit(eps, y, 1)
            quad = np.polyfit(eps, y, 2)
            order = np.argsort(eps)
            interp = lambda e: float(np.interp(e, eps[order], y[order]))  # noqa: E731
            out[src] = {
                "shift_0_to_8pct_meV": 1e3 * (b8[src][g] - ref[src][g]),
                "slope_b_frames_meV_per_pct": 1e3 * lin_b[0],
                "slope_all_frames_meV_per_pct": 1e3 * lin_all[0],
                "curvature_meV_per_pct2": 1e3 * quad[0],
                "rms_residual_linear_all_meV": 1e3 * float(np.sqrt(np.mean((np.polyval(lin_all, eps) - y) ** 2))),
                "pred_top_minus_bottom_201_interp_meV": 1e3 * (interp(eps_top) - interp(eps_bot)),
                "pred_top_minus_bottom_201_quadfit_meV": 1e3 * float(np.polyval(quad, eps_top) - np.polyval(quad, eps_bot)),
                "pred_top_minus_bottom_201_linfit_b_meV": 1e3 * lin_b[0] * (eps_top - eps_bot),
            }
        out["model_minus_dft_shift_0_to_8pct_meV"] = out["model"]["shift_0_to_8pct_meV"] - out["dft"]["shift_0_to_8pct_meV"]
        if g in ("Mo d", "S p"):
            e = g.split()[0]
            out["cell201_model_top_minus_bottom_meV"] = cell["model (global frame)"][e]["top_minus_bottom_meV"]
            out["cell201_target_top_minus_bottom_meV"] = cell["target"][e]["top_minus_bottom_meV"]
        else:
            out["cell201_model_top_minus_bottom_meV"] = model_sub_201[g]
        groups_out[g] = out

    result = {"model": args.model, "a0_A": A0, "frames": rows,
              "cell201": {"eps_bottom_pct": eps_bot, "eps_top_pct": eps_top, "per_layer_element_means": cell,
                          "model_subgroup_top_minus_bottom_meV": model_sub_201},
              "summary": groups_out}
    atomic_write_text(args.out, json.dumps(result, indent=1))
    print(f"\n201 cell: eps bottom {eps_bot:+.2f} %, top {eps_top:+.2f} % (rel. a0 = {A0} Å)")
    print(f"{'group':14s} {'DFT 0→8%':>9s} {'mdl 0→8%':>9s} {'DFT slope':>9s} {'mdl slope':>9s} "
          f"{'DFT pred':>9s} {'mdl pred':>9s} {'mdl 201':>8s} {'tgt 201':>8s}")
    for g, o in groups_out.items():
        print(f"{g:14s} {o['dft']['shift_0_to_8pct_meV']:9.1f} {o['model']['shift_0_to_8pct_meV']:9.1f} "
              f"{o['dft']['slope_b_frames_meV_per_pct']:9.2f} {o['model']['slope_b_frames_meV_per_pct']:9.2f} "
              f"{o['dft']['pred_top_minus_bottom_201_interp_meV']:9.1f} "
              f"{o['model']['pred_top_minus_bottom_201_interp_meV']:9.1f} "
              f"{o['cell201_model_top_minus_bottom_meV']:8.1f} {o.get('cell201_target_top_minus_bottom_meV', float('nan')):8.1f}")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
