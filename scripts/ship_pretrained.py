"""Evaluate a trained run on its held-out frames, run the physical checks, and ship it as a pretrained model.

    OMP_NUM_THREADS=1 python scripts/ship_pretrained.py runs/graphene-bilayer-pretrained/model.pt \
        --name graphene-bilayer [--frames datasets/graphene-bilayer/frames] [--force] [--dry-run]

- held-out metrics (``wannierml evaluate`` table) on the run's test frames (ids stored in the model file by the
  trainer), plus validation and training frames for reference;
- physical checks: Fermi velocity of the AB bilayer (model bands vs the DFT Wannier Hamiltonian of frame
  ``0000-refAB``) and the AB interlayer distance minimising the model energy (rigid-layer scan);
- ships to ``ase_wannierml/pretrained/<name>.pt`` (float32) with all of that in the metadata, but only if the
  candidate is better than the file already there on the *current* held-out set (``--force`` overrides); the
  score is band MAE ±1 eV + mean H MAE over categories (meV) + 0.1 × force RMSE (meV/Å) + E MAE (meV/atom)
  (+ binding-energy and 10 × gap error of the relaxed reference bilayer when a DFT binding curve exists).
"""
from __future__ import annotations

import argparse
import datetime
import json
import math
import sys
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]

from ase_wannierml.training.trainer import energy_zero_description

torch.set_num_threads(1)

DFT_SETTINGS_GRAPHENE = {
    "code": "Quantum ESPRESSO pw.x + Wannier90 3.1 (ase_wannierml.dft workflow)",
    "functional": "PBE + D3(BJ)",
    "pseudopotential": "C.pbe-rrkjus.UPF (ultrasoft)",
    "ecutwfc_Ry": 30, "ecutrho_Ry": 240, "smearing": "Marzari-Vanderbilt 0.02 Ry",
    "k_scf": "15x15x1 (1x1), 8x8x1 (2x2)", "k_nscf": "8x8x1 (1x1), 4x4x1 (2x2), nosym/noinv",
    "vacuum_A": 20.0,
    "wannier": "C:pz projections, disentanglement (frozen window E_F +-2.5 eV shrunk by pz projectability < 0.5), "
               "num_iter = 0 (projection-only gauge)",
}


def load_run_model(path: str):
    """A model file as float32 (files written by a float32 copy made with deepcopy carry extra e3nn
    ``_compiled_*`` constants in their state dict; those are dropped)."""
    from ase_wannierml.model.config import ModelConfig
    from ase_wannierml.model.model import WannierMLModel

    payload = torch.load(path, map_location="cpu", weights_only=True)
    model = WannierMLModel(ModelConfig.from_dict(payload["config"]), dtype=torch.float32)
    state = {k: v.float() if v.is_floating_point() else v for k, v in payload["state_dict"].items()
             if "._compiled_" not in k}
    missing, unexpected = model.load_state_dict(state, strict=False)
    bad = [k for k in missing if "._compiled_" not in k] + list(unexpected)
    if bad:
        raise ValueError(f"{path}: state dict does not match the model: {bad[:5]}")
    model.metadata = dict(payload.get("metadata", {}))
    return model.eval()


def stages(path: str) -> list[dict]:
    """The chain of warm starts (training.init_from) behind a model file: steps, frames, time, date per stage."""
    out, seen = [], set()
    while path and Path(path).is_file() and path not in seen:
        seen.add(path)
        t = torch.load(path, map_location="cpu", weights_only=True).get("metadata", {}).get("training", {})
        out.append({"model_file": str(path), "step": t.get("step"), "train_frames": t.get("train_frames"),
                    "val_frames": t.get("val_frames"), "test_frames": t.get("test_frames"),
                    "training_time_s": t.get("training_time_s"), "saved_utc": t.get("saved_utc")})
        path = t.get("init_from")
    return out[::-1]


def score(m: dict, binding: dict | None = None) -> float:
    """Lower is better; terms without held-out data (None, e.g. no Hamiltonian frame held out) are left out.

    With a DFT binding curve (``binding_check``): + |E_b(model) − E_b(DFT)| (meV/atom) + 10 × |gap error| (Å),
    both from the model's own relaxation of the reference bilayer."""
    h = [m[k] for k in m if k.startswith("H MAE") and m[k] is not None]
    terms = [m.get("band MAE ±1 eV (meV)"), float(np.mean(h)) if h else None,
             None if m.get("F RMSE (meV/Å)") is None else 0.1 * m["F RMSE (meV/Å)"], m.get("E MAE (meV/atom)")]
    if binding:
        dft, mod = binding["dft"], binding["model"]
        terms += [abs(mod["relaxed_binding_energy_meV_per_atom"] - dft["binding_energy_meV_per_atom"]),
                  10.0 * abs(mod["relaxed_gap_A"] - dft["equilibrium_gap_A"])]
    return float(sum(t for t in terms if t is not None))


def evaluate_ids(model, frames_dir: Path, ids: list[str], metadata: dict | None = None) -> dict:
    from ase_wannierml.training.cli import examples_for_model
    from ase_wannierml.training.evaluate import evaluate

    # each frame once: a training split lists a frame as often as ``data.repeat`` visits it per epoch
    dirs = [str(frames_dir / i) for i in dict.fromkeys(ids) if (frames_dir / i).is_dir()]
    if not dirs:
        return {}
    ev = evaluate(model, examples_for_model(model.config, dirs, model.metadata if metadata is None else metadata),
                  dtype=model.dtype)
    return {"metrics": {k: (None if math.isnan(v) else round(v, 3)) for k, v in ev.metrics().items()},
            "counts": ev.counts(), "table": ev.table()}


def k_point(atoms) -> np.ndarray:
    """Fractional coordinates of a K point of a hexagonal cell (the one at |k| = 4π/3a)."""
    rec = 2 * np.pi * np.linalg.inv(atoms.cell.array).T
    a = np.linalg.norm(atoms.cell[0])
    best = min(([1 / 3, 1 / 3, 0], [2 / 3, 1 / 3, 0], [1 / 3, 2 / 3, 0]),
               key=lambda k: abs(np.linalg.norm(np.array(k) @ rec) - 4 * np.pi / (3 * a)))
    return np.array(best), rec


def fermi_velocity(tb, atoms, zero: float = 0.0) -> dict:
    """ħv (eV·Å) and v (10^6 m/s) of the monolayer-like Dirac cone of an AB bilayer from its 4 pz bands:
    with E_D the mid point of the two middle bands at K, the conduction bands E1 < E2 (relative to E_D) at
    distance q from K along K→Γ give v = sqrt(E1·E2)/q (exact for the minimal γ0–γ1 model); mean over q."""
    kf, rec = k_point(atoms)
    kk = np.linalg.norm(kf @ rec)
    e_k = np.sort(np.real(tb.eigenvalues([kf])[0]))
    e_d = 0.5 * (e_k[1] + e_k[2])
    qs = np.array([0.02, 0.04, 0.06, 0.08])                 # 1/Å
    ks = np.array([kf * (1 - q / kk) for q in qs])
    e = np.sort(np.real(tb.eigenvalues(ks)), axis=1) - e_d
    v_c = np.sqrt(np.clip(e[:, 2] * e[:, 3], 0, None)) / qs
    v_v = np.sqrt(np.clip(e[:, 1] * e[:, 0], 0, None)) / qs
    hv = float(np.mean(np.concatenate([v_c, v_v])))
    return {"hbar_v_eV_A": round(hv, 4), "v_1e6_m_s": round(hv * 1e-10 / 6.582119569e-16 / 1e6, 4),
            "gamma1_eV": round(float(e_k[3] - e_k[2]), 4), "dirac_point_minus_zero_eV": round(float(e_d - zero), 4)}


def gap_scan(model, atoms, around: float, half_width: float = 0.6) -> dict:
    """Distance between the layers' mean heights (Å) of the rigid bilayer minimising the model energy (parabola
    through the grid minimum, grid ``around`` ± ``half_width``), its binding curve, and the model's z-force on
    the top layer at the given (DFT) geometry. Through the calculator, so a model's dispersion term counts."""
    from ase_wannierml.calculator import WannierMLCalculator

    calc = WannierMLCalculator(model)
    layer = atoms.arrays["layer"]
    z0 = atoms.positions[layer == 0, 2].mean()
    gaps = np.round(np.arange(around - half_width, around + half_width + 1e-9, 0.025), 4)
    energies = []
    for d in gaps:
        a = atoms.copy()
        a.positions[layer == 1, 2] += z0 + d - a.positions[layer == 1, 2].mean()
        a.calc = calc
        energies.append(float(a.get_potential_energy()))
    energies = np.array(energies)
    i = int(np.clip(np.argmin(energies), 1, len(gaps) - 2))
    c = np.polyfit(gaps[i - 1:i + 2], energies[i - 1:i + 2], 2)
    d_min = float(-c[1] / (2 * c[0])) if c[0] > 0 else float(gaps[np.argmin(energies)])
    a = atoms.copy()
    a.calc = calc
    fz = float(a.get_forces()[layer == 1, 2].sum())
    return {"relaxed_layer_distance_A": round(d_min, 4), "binding_curve_meV_per_atom": {
        f"{g:.3f}": round(1e3 * (e - energies.min()) / len(atoms), 3) for g, e in zip(gaps[::4], energies[::4])},
            "model_top_layer_Fz_at_DFT_geometry_eV_A": round(fz, 4)}


def _reference(model, frames_dir: Path, frame_id: str):
    """(frame, DFT layer distance (Å), DFT top-layer Fz (eV/Å), frame H energy zero (eV)) of a reference frame."""
    from ase_wannierml.training.frames import load_frame_dir
    from ase_wannierml.training.targets import neutrality_level

    frame = load_frame_dir(frames_dir / frame_id)
    atoms = frame.atoms
    layer = atoms.arrays["layer"]
    dist = float(atoms.positions[layer == 1, 2].mean() - atoms.positions[layer == 0, 2].mean())
    fz = float(np.asarray(frame.forces)[layer == 1, 2].sum())
    tb = frame.tb
    data_cfg = model.metadata.get("training", {}).get("config", {}).get("data", {})
    zero = frame.fermi_level
    if data_cfg.get("energy_zero") == "vacuum" and "vacuum_level_eV" in frame.meta:
        zero = float(frame.meta["vacuum_level_eV"])
    elif data_cfg.get("energy_zero") == "neutrality":
        electrons = sum(model.config.wannier_electrons.get(s, 0.0) for s in atoms.get_chemical_symbols())
        zero = neutrality_level(tb.R, tb.rows, tb.cols, tb.values, tb.norb, np.array([1, 1, 0], bool),
                                float(electrons), int(data_cfg.get("neutrality_kgrid", 48)))
    return frame, dist, fz, zero


def graphene_checks(model, frames_dir: Path) -> dict:
    if not (frames_dir / "0000-refAB").is_dir():
        return {}
    frame, dist, fz, zero = _reference(model, frames_dir, "0000-refAB")
    return {"frame": "0000-refAB (AB stacking, DFT geometry)",
            "fermi_velocity_dft_wannier": fermi_velocity(frame.tb, frame.atoms, zero),
            "fermi_velocity_model": fermi_velocity(model.predict_tightbinding(frame.atoms), frame.atoms),
            "ab_interlayer": {"dft_protocol_distance_A": round(dist, 4), "dft_top_layer_Fz_eV_A": round(fz, 4),
                              **gap_scan(model, frame.atoms, 3.5, 0.5)}}


def band_gap(tb, atoms, n_occ: int, n: int = 24) -> dict:
    """Band gap (eV) of ``tb`` on a Γ-centred n×n grid (n multiple of 3: holds Γ, K, M) and where the edges are."""
    from ase_wannierml.training.targets import band_kpoints

    k = band_kpoints(np.array([1, 1, 0], bool), n)
    e = np.sort(np.real(tb.eigenvalues(k)), axis=1)
    iv, ic = int(e[:, n_occ - 1].argmax()), int(e[:, n_occ].argmin())
    return {"gap_eV": round(float(e[ic, n_occ] - e[iv, n_occ - 1]), 4), "vbm_k_frac": k[iv].round(4).tolist(),
            "cbm_k_frac": k[ic].round(4).tolist(), }


def mos2_checks(model, frames_dir: Path) -> dict:
    if not (frames_dir / "0000-ref2H").is_dir():
        return {}
    frame, dist, fz, zero = _reference(model, frames_dir, "0000-ref2H")
    atoms = frame.atoms
    n_occ = int(round(sum(model.config.wannier_electrons.get(s, 0.0) for s in atoms.get_chemical_symbols()) / 2))
    return {"frame": "0000-ref2H (2H stacking, DFT geometry)",
            "band_gap_dft_wannier": band_gap(frame.tb, atoms, n_occ),
            "band_gap_model": band_gap(model.predict_tightbinding(atoms), atoms, n_occ),
            "interlayer_2H": {"dft_Mo_Mo_layer_distance_A": round(dist, 4), "dft_top_layer_Fz_eV_A": round(fz, 4),
                              **gap_scan(model, atoms, dist, 0.6)}}


DESCRIPTIONS = {
    "graphene-bilayer": "ase_wannierml pretrained model for bilayer graphene (energy, forces, stress, Wannier pz "
                        "tight-binding Hamiltonian relative to the vacuum level)",
    "mos2-bilayer": "ase_wannierml pretrained model for bilayer MoS2 (energy, forces, stress, Wannier Mo d + S p "
                    "tight-binding Hamiltonian relative to the vacuum level)",
}
def binding_check(model, name: str) -> dict:
    """Binding curve and relaxed gap of the reference bilayer vs the DFT points in datasets/<name>/binding_dft.json
    (``ase_wannierml.dft.binding``), if that file exists."""
    from ase_wannierml.calculator import WannierMLCalculator
    from ase_wannierml.dft import binding
    from ase_wannierml.dft.materials import get_material

    stored = binding.stored_dft_curve(name)
    if stored is None:
        return {}
    curve = binding.calculator_curve(lambda: WannierMLCalculator(model), get_material(name), stored["gaps"],
                                     stored["separation"], stored["extra_vacuum"])
    return {"dft": stored["dft"], "model": curve}


CHECKS = {"graphene-bilayer": graphene_checks, "mos2-bilayer": mos2_checks}


def dft_settings(name: str, frames_dir: Path) -> dict:
    """DFT settings recorded in the model file: the graphene summary, or the first frame's recorded spec."""
    if name == "graphene-bilayer":
        return DFT_SETTINGS_GRAPHENE
    for meta_path in sorted(frames_dir.glob("*/meta.json")):
        meta = json.loads(meta_path.read_text())
        return {"from_frame": meta_path.parent.name, "code_versions": meta.get("code_versions"),
                **meta.get("material_spec", {}).get("dft", {})}
    return {}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model", help="trained model file (e.g. runs/graphene-bilayer-pretrained/model.pt)")
    p.add_argument("--name", default="graphene-bilayer")
    p.add_argument("--frames", default=None, help="frame folder (default: datasets/<name>/frames)")
    p.add_argument("--force", action="store_true", help="ship even if not better than the installed model")
    p.add_argument("--dry-run", action="store_true", help="evaluate and print, do not write")
    p.add_argument("--no-train-eval", action="store_true", help="skip the (slower) training-set metrics")
    args = p.parse_args(argv)

    from ase_wannierml.model import load_model
    from ase_wannierml.model.io import PRETRAINED_DIR

    frames_dir = Path(args.frames) if args.frames else REPO / "datasets" / args.name / "frames"
    if not frames_dir.is_dir():
        print(f"no frame folder {frames_dir} (pass --frames)", file=sys.stderr)
        return 2
    model = load_run_model(args.model)
    training = model.metadata.get("training", {})
    ids = training.get("frame_ids", {})
    test_ids = ids.get("test", [])
    if not test_ids:
        print("the model file lists no test frames (train with data.test_fraction > 0)", file=sys.stderr)
        return 1
    result = {"test": evaluate_ids(model, frames_dir, test_ids), "val": evaluate_ids(model, frames_dir,
                                                                                      ids.get("val", []))}
    n_test = (result["test"].get("counts") or {}).get("frames", 0)
    if n_test == 0:      # e.g. the frames of another material under the same ids: never score (and ship) on nothing
        print(f"none of the model's {len(test_ids)} test frames could be evaluated from {frames_dir} (wrong --frames "
              f"or --name for this model?); nothing shipped", file=sys.stderr)
        return 2
    if not args.no_train_eval:
        result["train"] = evaluate_ids(model, frames_dir, ids.get("train", []))
    for part in ("test", "val", "train"):
        if result.get(part):
            print(f"== {part} ({len(ids.get(part, []))} frames)\n{result[part]['table']}")
    checks = CHECKS.get(args.name, lambda *a: {})(model, frames_dir)
    checks["binding_vs_dft"] = binding_check(model, args.name)
    print(json.dumps(checks, indent=1))
    new_score = score(result["test"]["metrics"], checks["binding_vs_dft"])
    target = PRETRAINED_DIR / f"{args.name}.pt"
    old_score = None
    if target.is_file():
        old = load_model(target)
        # each model against targets in its own energy zero (dft_fermi / neutrality / vacuum): a model trained on
        # another zero would otherwise be scored on a constant offset of its onsite energies
        old_test = evaluate_ids(old, frames_dir, test_ids)
        if old_test:
            old_binding = binding_check(old, args.name)
            old_score = score(old_test["metrics"], old_binding)
            if old_binding:
                print(f"installed model, binding vs DFT: {json.dumps(old_binding['model'])}")
            print(f"installed model on the same {len(test_ids)} held-out frames:\n{old_test['table']}")
    print(f"score (lower is better): candidate {new_score:.2f}, installed "
          f"{'none' if old_score is None else f'{old_score:.2f}'}")
    if args.dry_run:
        return 0
    if old_score is not None and old_score <= new_score and not args.force:
        print("not shipped: the installed model is at least as good on the held-out frames")
        return 0
    meta = {
        "description": DESCRIPTIONS.get(args.name, f"ase_wannierml pretrained model {args.name}"),
        "shipped_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "dft_settings": dft_settings(args.name, frames_dir),
        "energy_zero": energy_zero_description(training.get("config", {}).get("data", {}).get("energy_zero",
                                                                                                "dft_fermi")),
        "data_set": {"frames": str(frames_dir), "train": ids.get("train", []), "validation": ids.get("val", []),
                     "test_held_out": test_ids,
                     "split": "hash of frame id (data.split = hash, split_seed 0), test 15 %, validation 8 %"},
        "held_out_metrics": result["test"]["metrics"], "held_out_counts": result["test"]["counts"],
        "validation_metrics": result["val"].get("metrics") if result.get("val") else None,
        "train_metrics": result["train"]["metrics"] if result.get("train") else None,
        "physical_checks": checks,
        "training_time_s": training.get("training_time_s"),
        "training_stages": stages(args.model),
        "training_config": f"configs/{args.name}.yaml",
        "source_model_file": str(args.model),
    }
    tmp = target.with_name(f".{target.name}.tmp")
    model.save(tmp, metadata=json.loads(json.dumps(meta, default=str)))
    load_model(tmp)                                               # must load before it replaces the old one
    tmp.replace(target)
    print(f"shipped {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
