"""Committee calibration on held-out DFT frames, and the spread on configurations unlike the training data.

    OMP_NUM_THREADS=1 flock /work/main/scratch/cpu.lock python benchmarks/committee_calibration.py \
        --material graphene-bilayer [--md-steps 120]

1. Held-out DFT frames = frames no member trained on: the hash test split recorded in the members' metadata, frame
   ids matching ``*-test-*`` and frames whose meta says split "test" (``training.trainer.heldout_frame_ids``).
   Reported in two groups: small cells (< 16 atoms) and ≥ 16-atom cells (the MD snapshots of the lead's batch,
   ``md2x2-T*-test-*``). Per group: force RMSE (all and z components) of the committee mean and of the shipped
   single model, mean ``forces_std``, the fraction of force components whose error is within 1σ / 2σ of their
   atom's ``forces_std`` (a Gaussian would give 68 % / 95 %) and the factor s that would put 68 % within s·σ.
2. Spread on configurations (no DFT needed): the committee's mean / max ``forces_std`` (eV/Å), ``energy_std`` per
   atom and band spread (eV, bands within ±1 eV, 3×3 k grid) on near-training cells and on unlike ones: committee
   MD at 300 K and 900 K, compressed interlayer distances, other twist angles.
Prints tables; JSON in benchmarks/results/committee_calibration_<material>.json.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from ase_wannierml import WannierMLCalculator
from ase_wannierml.active.loop import _shift_layers, band_disagreement, run_md_snapshots
from ase_wannierml.model import load_model
from ase_wannierml.structures import bilayer, twisted_bilayer
from ase_wannierml.training.frames import find_frames, frame_status, load_frame_dir

REPO = Path(__file__).resolve().parents[1]
SHORT = {"graphene-bilayer": "graphene", "mos2-bilayer": "mos2"}


def heldout_frames(material: str, committee) -> list[Path]:
    import fnmatch

    frames_dir = REPO / "datasets" / material / "frames"
    trained = set()
    tests = set()
    for m in committee.members:
        ids = m.metadata.get("training", {}).get("frame_ids", {})
        trained |= set(ids.get("train", [])) | set(ids.get("val", []))
        tests |= set(ids.get("test", []))
    fitted = set(committee.metadata.get("calibration", {}).get("fit_frames", []))  # calibrated on: not a judge
    out = []
    for p in find_frames([frames_dir]):
        meta = p / "meta.json"
        notes = ((json.loads(meta.read_text()).get("sampling") or {}).get("notes") or {}) if meta.is_file() else {}
        held = p.name in tests or fnmatch.fnmatchcase(p.name, "*-test-*") or \
            (isinstance(notes, dict) and notes.get("split") == "test")
        if held and p.name not in trained and p.name not in fitted and frame_status(p)[0] == "ok":
            out.append(p)
    return out


def calibration(committee, single, paths: list[Path]) -> dict:
    err, errz, sig, single_err, single_errz, names, raw = [], [], [], [], [], [], []
    for p in paths:
        fr = load_frame_dir(p)
        if fr.forces is None:
            continue
        a = fr.atoms.copy()
        a.calc = WannierMLCalculator(committee)
        d = a.get_forces() - fr.forces
        s = a.calc.results["forces_std"]                   # calibrated (committee.metadata["calibration"])
        raw.append(np.repeat(a.calc.results["forces_std_raw"], 3))
        b = fr.atoms.copy()
        b.calc = WannierMLCalculator(single)
        ds = b.get_forces() - fr.forces
        err.append(d.ravel()); errz.append(d[:, 2]); sig.append(np.repeat(s, 3))
        single_err.append(ds.ravel()); single_errz.append(ds[:, 2]); names.append(p.name)
    if not err:
        return {"n_frames": 0}
    e, s = np.abs(np.concatenate(err)), np.concatenate(sig)
    ratio = e / s
    ratio_raw = e / np.concatenate(raw)
    return {"n_frames": len(names), "frames": names, "n_components": int(e.size),
            "force_rmse_meV_A": 1e3 * float(np.sqrt(np.mean(e ** 2))),
            "force_rmse_z_meV_A": 1e3 * float(np.sqrt(np.mean(np.concatenate(errz) ** 2))),
            "single_model_force_rmse_meV_A": 1e3 * float(np.sqrt(np.mean(np.concatenate(single_err) ** 2))),
            "single_model_force_rmse_z_meV_A": 1e3 * float(np.sqrt(np.mean(np.concatenate(single_errz) ** 2))),
            "forces_std_mean_meV_A": 1e3 * float(s.mean()),
            "within_1sigma": float(np.mean(ratio <= 1)), "within_2sigma": float(np.mean(ratio <= 2)),
            "raw_within_1sigma": float(np.mean(ratio_raw <= 1)), "raw_within_2sigma": float(np.mean(ratio_raw <= 2)),
            "raw_forces_std_mean_meV_A": 1e3 * float(np.concatenate(raw).mean()),
            "scale_for_68pct_raw": float(np.quantile(ratio_raw, 0.68))}


def spread_cases(material: str, committee, md_steps: int, seed: int = 0) -> list[tuple[str, object]]:
    name = SHORT[material]
    prim = bilayer(name)
    cell3 = prim.repeat((3, 3, 1)) if name == "graphene" else prim.repeat((2, 2, 1))
    size = "3x3" if name == "graphene" else "2x2"
    cases = [(f"{size} relaxed stacking (as built)", cell3.copy())]
    r = cell3.copy()
    r.rattle(0.02, seed=seed)
    cases.append((f"{size} rattled 0.02 Å", r))
    for temp in (300.0, 900.0):
        snaps = run_md_snapshots(committee, cell3, temp, md_steps, md_steps // 2, seed=seed + int(temp),
                                 label=f"md{temp:.0f}")
        for k, s in enumerate(snaps):
            cases.append((f"{size} committee MD {temp:.0f} K, step {s.info['md_step']}", s))
    for dz in (-0.3, -0.6):
        cases.append((f"{size} interlayer {dz:+.1f} Å", _shift_layers(cell3, dz)))
    for m in ((1, 2, 3) if name == "graphene" else (1, 2)):
        t = twisted_bilayer(name, m=m, r=1)
        cases.append((f"twist {t.info['twist_angle']:.2f}° ({len(t)} atoms)", t))
    return cases


def spreads(committee, cases) -> list[dict]:
    rows = []
    for label, atoms in cases:
        a = atoms.copy()
        a.calc = WannierMLCalculator(committee)
        a.get_forces()
        r = a.calc.results
        rows.append({"case": label, "n_atoms": len(a), "forces_std_mean_meV_A": 1e3 * float(r["forces_std_raw"].mean()),
                     "forces_std_max_meV_A": 1e3 * float(r["forces_std_raw"].max()),
                     "energy_std_meV_atom": 1e3 * float(r["energy_std"]) / len(a),
                     "band_std_meV": 1e3 * band_disagreement(a.calc, a, kgrid=3)})
        print(json.dumps(rows[-1]), flush=True)
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--material", default="graphene-bilayer", choices=sorted(SHORT))
    ap.add_argument("--md-steps", type=int, default=120)
    ap.add_argument("--no-spread", action="store_true")
    ap.add_argument("--committee", default=None, help="committee file (default: the shipped one)")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    committee = load_model(args.committee or args.material, committee=True)
    single = load_model(args.material)
    paths = heldout_frames(args.material, committee)
    small = [p for p in paths if len(load_frame_dir(p).atoms) < 16]
    large = [p for p in paths if p not in small]
    result = {"material": args.material, "K": committee.size,
              "heldout_small_cells": calibration(committee, single, small),
              "heldout_16plus_atoms": calibration(committee, single, large)}
    print(f"\nheld-out DFT frames ({args.material}, committee of {committee.size})")
    cal = committee.metadata.get("calibration", {})
    result["calibration"] = cal
    print(f"forces_std scale {cal.get('forces_std_scale', 1.0):.2f}, power {cal.get('forces_std_power', 1.0):.2f} "
          f"(fitted on {len(cal.get('fit_frames', []))} "
          f"frames: the members' validation frames and any set aside)")
    print(f"{'group':22s} {'frames':>6s} {'F RMSE':>7s} {'Fz RMSE':>7s} {'single':>7s} {'<σraw>':>6s} {'<σ>':>6s} "
          f"{'≤1σraw':>6s} {'≤2σraw':>6s} {'≤1σ':>5s} {'≤2σ':>5s}   (meV/Å)")
    for key in ("heldout_small_cells", "heldout_16plus_atoms"):
        c = result[key]
        if c["n_frames"]:
            print(f"{key:22s} {c['n_frames']:6d} {c['force_rmse_meV_A']:7.1f} {c['force_rmse_z_meV_A']:7.1f} "
                  f"{c['single_model_force_rmse_meV_A']:7.1f} {c['raw_forces_std_mean_meV_A']:6.1f} "
                  f"{c['forces_std_mean_meV_A']:6.1f} {c['raw_within_1sigma']:6.2f} {c['raw_within_2sigma']:6.2f} "
                  f"{c['within_1sigma']:5.2f} {c['within_2sigma']:5.2f}")
        else:
            print(f"{key:22s} none yet")
    if not args.no_spread:
        result["spread"] = spreads(committee, spread_cases(args.material, committee, args.md_steps))
        print(f"\n{'configuration':44s} {'atoms':>5s} {'<σ_F>':>7s} {'max σ_F':>7s} {'σ_E/atom':>8s} {'σ_band':>7s}")
        for r in result["spread"]:
            print(f"{r['case']:44s} {r['n_atoms']:5d} {r['forces_std_mean_meV_A']:7.1f} "
                  f"{r['forces_std_max_meV_A']:7.1f} {r['energy_std_meV_atom']:8.2f} {r['band_std_meV']:7.1f}")
        print("(σ_F meV/Å, σ_E meV/atom, σ_band meV)")
    out = REPO / "benchmarks" / "results" / f"committee_calibration_{args.material}.json"
    out.write_text(json.dumps(result, indent=1))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
