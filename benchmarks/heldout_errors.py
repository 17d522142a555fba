"""Held-out errors of models and committees (before/after an active-learning round), onsite analysis, MD drift.

    export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1
    python benchmarks/heldout_errors.py evaluate --model before=graphene-bilayer \
        --committee before_committee=graphene-bilayer          # the shipped model and committee
    python benchmarks/heldout_errors.py evaluate --model after=runs/active1-graphene/model.pt
    python benchmarks/heldout_errors.py evaluate --material mos2-bilayer --model shipped=mos2-bilayer \
        stage7=runs/mos2-bilayer-pretrained-7/model.pt              # -> benchmarks/results/heldout_mos2.json
    python benchmarks/heldout_errors.py md --model before=graphene-bilayer --supercell 2 --steps 500
    python benchmarks/heldout_errors.py md --material mos2-bilayer --model shipped=mos2-bilayer --supercell 2
    python benchmarks/heldout_errors.py table [--material mos2-bilayer]   # before/after table from the JSON
    python benchmarks/heldout_errors.py record --model runs/active1b-graphene/model.pt  # graphene round-1 log

Held-out frames (never trained on by the shipped model nor by the evaluated models, checked): the shipped model's
hash test split (``metadata.training.frame_ids.test``), frame ids matching ``*-test-*`` and frames whose
``meta.json`` says split "test"; frames with status "ok" only. Two groups, reported apart: **md16** (≥ 16 atoms: MD
snapshots of a model's own Langevin MD, e.g. graphene ``md2x2-T*-test-*``, MoS2 18-atom ``md3x1-T*-test-*``) and
**small** (< 16 atoms: 1×1 / reference / SCF stacking frames). Per group and model:

- forces (calculator = what users get, dispersion included): RMSE of all components, of z (out of plane) and of
  x, y (in plane), meV/Å;
- energy relative to the reference cell per atom: err = [E_model(f)/N − E_model(ref)/N_ref] − [E_DFT(f)/N −
  E_DFT(ref)/N_ref], ref = frame ``0000-refAB`` for graphene (AB bilayer, a = 2.46 Å, d = 3.35 Å, DFT max force
  18 meV/Å), ``0000-ref2H`` for MoS2; mean signed and MAE, meV/atom;
- H and bands (full Wannier frames only) through ``training.evaluate`` (``wannierml evaluate`` metrics, the model's
  own energy zero = vacuum): H MAE per category incl. onsite, band MAE within ±0.5 / ±1 eV of the frame's
  neutrality level, band mean error;
- onsite analysis (per frame): mean signed onsite error (a rigid per-frame offset), onsite MAE after subtracting it,
  onsite and band errors when prediction and target are each referenced to their own charge-neutrality level (T =
  0, 48×48 grid, filling from the model's ``wannier_electrons``, Wigner–Seitz-shifted Wannier H for the target as in
  the dataset), and the frame's vacuum level.
- committee (``--committee``): the committee mean for forces/energies/H (mean of the members' H blocks) and the
  fraction of force components within 1σ / 2σ of their atom's calibrated ``forces_std``.

``md``: Langevin MD (1 fs, friction 0.01 /fs) of the n×n supercell of the reference bilayer (AB graphene, 2H MoS2)
with a single model, after relaxing the primitive bilayer with the same model (``relaxation.equilibrium_bilayer``:
in-plane cell + positions): mean interlayer distance (mean z of layer 1 − mean z of layer 0) over the second half of
the run vs the relaxed one.

Results (merged: each run adds or replaces its tag): ``benchmarks/results/active_round1_graphene.json`` (graphene;
the name of its first use) and ``benchmarks/results/heldout_mos2.json``.
"""
from __future__ import annotations

import argparse
import datetime
import fnmatch
import json
import os
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
# material -> (reference frame of the relative energies, structures.bilayer name, default results file)
MATERIALS = {"graphene-bilayer": ("0000-refAB", "graphene", "active_round1_graphene.json"),
             "mos2-bilayer": ("0000-ref2H", "mos2", "heldout_mos2.json")}
NEUTRALITY_KGRID = 48


def frames_dir(material: str) -> Path:
    return REPO / "datasets" / material / "frames"


def default_out(material: str) -> Path:
    return REPO / "benchmarks" / "results" / MATERIALS[material][2]


def _load_json(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}


def _save_json(path: Path, data: dict) -> None:
    from ase_wannierml.cli import atomic_write_text

    atomic_write_text(str(path), json.dumps(data, indent=1, default=float))


def heldout_groups(test_ids: set[str], frames: Path) -> dict[str, list[Path]]:
    """{"md16": [...], "small": [...]}: frame dirs held out from training (see the module docstring)."""
    from ase.io import read

    from ase_wannierml.training.frames import find_frames, frame_status

    groups: dict[str, list[Path]] = {"md16": [], "small": []}
    for p in find_frames([frames]):
        meta = p / "meta.json"
        notes = ((json.loads(meta.read_text()).get("sampling") or {}).get("notes") or {}) if meta.is_file() else {}
        held = p.name in test_ids or fnmatch.fnmatchcase(p.name, "*-test-*") or \
            (isinstance(notes, dict) and notes.get("split") == "test")
        if not held or frame_status(p)[0] != "ok":
            continue
        n = len(read(p / "structure.extxyz"))
        groups["md16" if n >= 16 else "small"].append(p)
    return groups


class MeanOfMembers(torch.nn.Module):
    """The committee mean as a single-model-like module for ``training.evaluate`` (members run one by one)."""

    def __init__(self, committee) -> None:
        super().__init__()
        self.members = committee.members
        self.config = committee.config

    def forward(self, graph, **flags):
        outs = [m(graph, **flags) for m in self.members]
        mean = {}
        for k, v in outs[0].items():
            if torch.is_tensor(v) and v.is_floating_point():
                mean[k] = torch.stack([o[k].detach() for o in outs]).mean(0)
            else:
                mean[k] = v
        return mean


def label_errors(model, paths: list[Path], ref_path: Path) -> dict:
    """Forces (all / z / xy) and energy-relative-to-reference errors of ``model`` (single or committee)."""
    from ase_wannierml import WannierMLCalculator
    from ase_wannierml.training.frames import load_frame_dir

    ref = load_frame_dir(ref_path)
    a = ref.atoms.copy()
    a.calc = WannierMLCalculator(model)
    e_ref_model, e_ref_dft = a.get_potential_energy() / len(a), ref.energy / len(a)
    comps, zs, xys, de, within1, within2, per = [], [], [], [], [], [], {}
    for p in paths:
        fr = load_frame_dir(p)
        if fr.forces is None:
            continue
        b = fr.atoms.copy()
        b.calc = WannierMLCalculator(model)
        d = b.get_forces() - fr.forces
        comps.append(d.ravel()); zs.append(d[:, 2]); xys.append(d[:, :2].ravel())
        rec = {"n_atoms": len(b), "force_rmse_meV_A": 1e3 * float(np.sqrt(np.mean(d ** 2))),
               "force_rmse_z_meV_A": 1e3 * float(np.sqrt(np.mean(d[:, 2] ** 2))),
               "dft_force_rms_z_meV_A": 1e3 * float(np.sqrt(np.mean(fr.forces[:, 2] ** 2)))}
        if "forces_std" in b.calc.results:
            s = np.repeat(b.calc.results["forces_std"], 3)
            within1.append(np.abs(d.ravel()) <= s); within2.append(np.abs(d.ravel()) <= 2 * s)
            rec["forces_std_mean_meV_A"] = 1e3 * float(np.mean(b.calc.results["forces_std"]))
        if fr.energy is not None:
            err = (b.get_potential_energy() / len(b) - e_ref_model) - (fr.energy / len(b) - e_ref_dft)
            de.append(err)
            rec["energy_rel_err_meV_atom"] = 1e3 * float(err)
            rec["dft_energy_rel_meV_atom"] = 1e3 * float(fr.energy / len(b) - e_ref_dft)
        per[p.name] = rec
    if not comps:
        return {"n_frames": 0}
    c, z, xy = np.concatenate(comps), np.concatenate(zs), np.concatenate(xys)
    out = {"n_frames": len(per), "n_force_components": int(c.size),
           "force_rmse_meV_A": 1e3 * float(np.sqrt(np.mean(c ** 2))),
           "force_rmse_z_meV_A": 1e3 * float(np.sqrt(np.mean(z ** 2))),
           "force_rmse_xy_meV_A": 1e3 * float(np.sqrt(np.mean(xy ** 2))),
           "frames": per}
    if de:
        out["energy_rel_mean_err_meV_atom"] = 1e3 * float(np.mean(de))
        out["energy_rel_mae_meV_atom"] = 1e3 * float(np.mean(np.abs(de)))
    if within1:
        out["within_1sigma"] = float(np.mean(np.concatenate(within1)))
        out["within_2sigma"] = float(np.mean(np.concatenate(within2)))
    return out


def onsite_analysis(model, examples: list[dict], frame_ids: list[str], dtype: torch.dtype,
                    electrons: list[float]) -> dict:
    """Per-frame onsite error decomposition (see the module docstring); energies in meV. ``electrons``: electrons in
    the Wannier manifold of each frame (spin-degenerate bands: electrons / 2 occupied per k)."""
    from ase_wannierml.model import keys as K
    from ase_wannierml.training.bands import band_energies
    from ase_wannierml.training.loss import collate
    from ase_wannierml.training.targets import band_kpoints

    per, raw, centred, neutral, bands_raw, bands_neutral = {}, [], [], [], [], []
    for fid, ex, n_el in zip(frame_ids, examples, electrons):
        if not bool(ex["has_ham"]):
            continue
        batch = collate([ex], dtype)
        with torch.no_grad():
            out = model(batch.graph, compute_forces=False, compute_stress=False, compute_hamiltonian=True)
        blocks = out[K.HAM_BLOCKS].detach().to(torch.float64)
        batch.targets["target_ham"] = batch.targets["target_ham"].to(torch.float64)
        err = (blocks - batch.targets["target_ham"]).numpy()
        mask = batch.targets["target_ham_mask"].numpy()
        cat = batch.graph[K.HAM_PAIR_CATEGORY].numpy()
        on = err[mask & (cat == 0)[:, None, None]]
        target_on = batch.targets["target_ham"].numpy()[mask & (cat == 0)[:, None, None]]
        fb = batch.frames[0]
        index, shift = batch.graph[K.HAM_PAIR_INDEX], batch.graph[K.HAM_PAIR_SHIFT]
        norb = fb.bands.shape[1]
        kgrid = torch.as_tensor(band_kpoints(np.array([True, True, False]), NEUTRALITY_KGRID), dtype=torch.float64)
        e_pred = np.sort(band_energies(blocks, index, shift, fb.orbital_index, norb, kgrid).numpy().ravel())
        n_occ = int(round(0.5 * n_el)) * len(kgrid)     # T = 0 filling of the Wannier bands
        level_pred = 0.5 * (e_pred[n_occ - 1] + e_pred[n_occ])
        level_ref = float(fb.centre)
        pred_b = band_energies(blocks, index, shift, fb.orbital_index, norb, fb.kpts.to(torch.float64)).numpy()
        ref_b = fb.bands.to(torch.float64).numpy()
        win = np.abs(ref_b - level_ref) <= 1.0
        shift_n = level_pred - level_ref
        raw.append(on); centred.append(on - on.mean()); neutral.append(on - shift_n)
        bands_raw.append((pred_b - ref_b)[win]); bands_neutral.append((pred_b - ref_b - shift_n)[win])
        per[fid] = {"n_onsite": int(on.size), "onsite_mae": 1e3 * float(np.abs(on).mean()),
                    "onsite_mean_err": 1e3 * float(on.mean()),
                    "onsite_mae_minus_frame_mean": 1e3 * float(np.abs(on - on.mean()).mean()),
                    "target_onsite_spread_in_frame": 1e3 * float(target_on.std()),
                    "neutrality_level_ref_eV": level_ref, "neutrality_level_pred_eV": float(level_pred),
                    "neutrality_shift": 1e3 * float(shift_n),
                    "onsite_mae_neutrality_zero": 1e3 * float(np.abs(on - shift_n).mean()),
                    "band_mae_1eV": 1e3 * float(np.abs((pred_b - ref_b)[win]).mean()),
                    "band_mae_1eV_neutrality_zero": 1e3 * float(np.abs((pred_b - ref_b - shift_n)[win]).mean())}
    if not per:
        return {"n_frames": 0}
    cat_ = lambda xs: np.concatenate([np.ravel(x) for x in xs])       # noqa: E731
    offsets = np.array([v["onsite_mean_err"] for v in per.values()])
    return {"n_frames": len(per),
            "onsite_mae": 1e3 * float(np.abs(cat_(raw)).mean()),
            "onsite_mean_err": 1e3 * float(cat_(raw).mean()),
            "frame_offset_rms": float(np.sqrt(np.mean(offsets ** 2))),
            "frame_offset_std": float(offsets.std()),
            "onsite_mae_minus_frame_mean": 1e3 * float(np.abs(cat_(centred)).mean()),
            "onsite_mae_neutrality_zero": 1e3 * float(np.abs(cat_(neutral)).mean()),
            "band_mae_1eV": 1e3 * float(np.abs(cat_(bands_raw)).mean()),
            "band_mae_1eV_neutrality_zero": 1e3 * float(np.abs(cat_(bands_neutral)).mean()),
            "frames": per}


def hamiltonian_errors(model, paths: list[Path]) -> dict:
    """``training.evaluate`` metrics and the onsite analysis on the full Wannier frames of ``paths``."""
    from ase.io import read

    from ase_wannierml.training.cli import examples_for_model
    from ase_wannierml.training.evaluate import evaluate

    full = [p for p in paths if any((p / n).is_file() for n in ("wannier90_hr.dat.gz", "wannier90_hr.dat"))]
    if not full:
        return {"n_frames": 0}
    single = model.members[0] if hasattr(model, "members") else model
    examples = examples_for_model(single.config, [str(p) for p in full], single.metadata)
    ids = [p.name for p in full]
    module = MeanOfMembers(model) if hasattr(model, "members") else model
    module.eval()
    dtype = torch.float64 if single.dtype == torch.float64 else torch.float32
    ev = evaluate(module, examples, dtype=dtype, batch_size=1)
    per_atom = single.config.wannier_electrons
    electrons = [sum(per_atom[s] for s in read(p / "structure.extxyz").get_chemical_symbols()) for p in full]
    return {"metrics": ev.metrics(), "counts": ev.counts(), "frames": ids,
            "onsite": onsite_analysis(module, examples, ids, dtype, electrons)}


def _load(ref: str, committee: bool):
    from ase_wannierml.model import load_model

    m = load_model(ref, committee=committee)
    return m.eval()


def cmd_evaluate(args) -> int:
    from ase_wannierml.model import load_model

    torch.set_num_threads(1)
    frames = frames_dir(args.material)
    out = Path(args.out) if args.out else default_out(args.material)
    shipped = load_model(args.material)
    test_ids = set(shipped.metadata.get("training", {}).get("frame_ids", {}).get("test", []))
    groups = heldout_groups(test_ids, frames)
    if args.extra_frames:        # e.g. training-trajectory frames that arrived after the retraining started
        missing = [f for f in args.extra_frames if not (frames / f / "meta.json").is_file()]
        if missing:
            raise SystemExit(f"--extra-frames: no frame {missing} in {frames}")
        groups["md16_unseen_train"] = [frames / f for f in args.extra_frames]
    data = _load_json(out)
    data.setdefault("heldout_frames", {})
    data["heldout_frames"] = {g: [p.name for p in ps] for g, ps in groups.items()}
    data.setdefault("models", {})
    todo = [(t, r, False) for t, r in (s.split("=", 1) for s in args.model)] + \
           [(t, r, True) for t, r in (s.split("=", 1) for s in args.committee)]
    for tag, ref, is_committee in todo:
        t0 = time.time()
        model = _load(ref, is_committee)
        rec = {"model": ref, "committee": is_committee,
               "utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
               "load_average_start": os.getloadavg()[0]}
        if not is_committee:
            tr = model.metadata.get("training", {})
            rec["training"] = {k: tr.get(k) for k in ("step", "train_frames", "training_time_s", "init_from")}
            if model.config.orbitals and set(model.config.orbitals) != set(shipped.config.orbitals):
                raise SystemExit(f"{ref} is not a {args.material} model (elements {sorted(model.config.orbitals)})")
            overlap = set(tr.get("frame_ids", {}).get("train", [])) & {p.name for ps in groups.values() for p in ps}
            if overlap:
                raise RuntimeError(f"{ref} trained on held-out frames {sorted(overlap)}")
        for g, paths in groups.items():
            rec[g] = {"labels": label_errors(model, paths, frames / MATERIALS[args.material][0]),
                      "hamiltonian": hamiltonian_errors(model, paths)}
            print(f"[{tag}] {g}: {_summary(rec[g])}", flush=True)
        rec["seconds"] = round(time.time() - t0, 1)
        data["models"][tag] = rec
        _save_json(out, data)
    print(table(data))
    return 0


def _summary(g: dict) -> str:
    lab, ham = g["labels"], g["hamiltonian"]
    m = ham.get("metrics", {})
    return (f"F {lab.get('force_rmse_meV_A', float('nan')):.1f} (z {lab.get('force_rmse_z_meV_A', float('nan')):.1f})"
            f" meV/Å, E_rel {lab.get('energy_rel_mean_err_meV_atom', float('nan')):+.2f} meV/atom, bands ±1 eV "
            f"{m.get('band MAE ±1 eV (meV)', float('nan')):.1f} meV, onsite {m.get('H MAE onsite (meV)', float('nan')):.1f}"
            f" meV")


def table(data: dict) -> str:
    rows = ["| model | held-out set | frames | F RMSE | F_z RMSE | F_xy RMSE | E_rel mean err / MAE (meV/atom) | "
            "bands ±1 eV MAE | H onsite / intra near / intra far / inter (meV) | within 1σ/2σ |",
            "|---|---|---|---|---|---|---|---|---|---|"]
    f = lambda x, p=1: "–" if x is None or (isinstance(x, float) and np.isnan(x)) else f"{x:.{p}f}"   # noqa: E731
    for tag, rec in data.get("models", {}).items():
        for g in ("md16", "small", "md16_unseen_train"):
            if g not in rec:
                continue
            lab, m = rec[g]["labels"], rec[g]["hamiltonian"].get("metrics", {})
            w = (f"{100 * lab['within_1sigma']:.0f} % / {100 * lab['within_2sigma']:.0f} %"
                 if "within_1sigma" in lab else "")
            rows.append(f"| {tag} | {g} | {lab.get('n_frames', 0)} ({rec[g]['hamiltonian'].get('n_frames', 0) or len(rec[g]['hamiltonian'].get('frames', []))} H) | "
                        f"{f(lab.get('force_rmse_meV_A'))} | {f(lab.get('force_rmse_z_meV_A'))} | "
                        f"{f(lab.get('force_rmse_xy_meV_A'))} | {f(lab.get('energy_rel_mean_err_meV_atom'), 2)} / "
                        f"{f(lab.get('energy_rel_mae_meV_atom'), 2)} | {f(m.get('band MAE ±1 eV (meV)'))} | "
                        f"{f(m.get('H MAE onsite (meV)'))} / {f(m.get('H MAE intra_near (meV)'))} / "
                        f"{f(m.get('H MAE intra_far (meV)'))} / {f(m.get('H MAE inter (meV)'))} | {w} |")
    md = data.get("md", {})
    if md:
        rows += ["", "| model | cell | T (K) | steps | relaxed d (Å) | mean d, 2nd half (Å) | std of d (Å) | drift (Å) "
                 "| s/step |", "|---|---|---|---|---|---|---|---|---|"]
        for tag, r in sorted(md.items(), key=lambda kv: (kv[1]["supercell"], kv[1]["temperature_K"], kv[0])):
            rows.append(f"| {r['model_tag']} | {r['supercell']}×{r['supercell']} ({r['n_atoms']} atoms) | "
                        f"{r['temperature_K']:.0f} | {r['steps']} | {r['relaxed_interlayer_A']:.3f} | "
                        f"{r['mean_interlayer_second_half_A']:.3f} | {r['std_interlayer_second_half_A']:.2f} | "
                        f"{r['drift_A']:+.3f} | {r['seconds_per_step']:.2f} |")
    return "\n".join(rows)


def _equilibrium_fire(calc, structure: str, fmax: float = 1e-3) -> tuple[float, float]:
    """(a, d) in Å of the primitive reference bilayer relaxed with FIRE (in-plane cell + positions, forces < fmax)."""
    from ase_wannierml.relaxation import relax
    from ase_wannierml.structures import bilayer

    atoms = bilayer(structure)
    atoms.calc = calc
    result = relax(atoms, fmax=fmax, cell=True, optimizer="fire", steps=2000, logfile=None)
    if not result.converged:
        raise RuntimeError(f"the AB bilayer did not relax with FIRE either: {result}")
    layer = atoms.arrays["layer"]
    z = atoms.positions[:, 2]
    return float(atoms.cell.lengths()[0]), float(z[layer == 1].mean() - z[layer == 0].mean())


def cmd_md(args) -> int:
    from ase import units
    from ase.md.langevin import Langevin
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution

    from ase_wannierml import WannierMLCalculator
    from ase_wannierml.relaxation import equilibrium_bilayer
    from ase_wannierml.structures import bilayer

    torch.set_num_threads(1)
    tag, ref = args.model.split("=", 1)
    model = _load(ref, False)
    structure = MATERIALS[args.material][1]
    calc = WannierMLCalculator(model)
    try:
        a0, d0 = equilibrium_bilayer(calc, structure)
        relaxed_with = "equilibrium_bilayer (precon L-BFGS, cell + positions)"
    except RuntimeError as err:          # e.g. the precon line search fails on a rougher energy surface
        a0, d0 = _equilibrium_fire(calc, structure)
        relaxed_with = f"FIRE + FrechetCellFilter (in-plane cell + positions; precon failed: {str(err)[:80]})"
    atoms = bilayer(structure, a=a0, interlayer=d0).repeat((args.supercell, args.supercell, 1))
    atoms.calc = WannierMLCalculator(model)
    rng = np.random.default_rng(args.seed)
    MaxwellBoltzmannDistribution(atoms, temperature_K=args.temperature, rng=rng)
    dyn = Langevin(atoms, 1.0 * units.fs, temperature_K=args.temperature, friction=0.01 / units.fs, rng=rng)
    layer = atoms.arrays["layer"]
    dist, temps = [], []

    def record():
        z = atoms.positions[:, 2]
        dist.append(float(z[layer == 1].mean() - z[layer == 0].mean()))
        temps.append(float(atoms.get_temperature()))

    dyn.attach(record, interval=1)
    t0 = time.time()
    dyn.run(args.steps)
    sec = time.time() - t0
    half = np.array(dist[len(dist) // 2:])
    rec = {"model_tag": tag, "model": ref, "material": args.material, "supercell": args.supercell,
           "n_atoms": len(atoms),
           "temperature_K": args.temperature, "steps": args.steps, "seed": args.seed,
           "relaxed_a_A": a0, "relaxed_interlayer_A": d0, "relaxed_with": relaxed_with,
           "mean_interlayer_second_half_A": float(half.mean()), "std_interlayer_second_half_A": float(half.std()),
           "max_interlayer_A": float(max(dist)), "drift_A": float(half.mean() - d0),
           "interlayer_every_50_steps_A": dist[::50], "mean_temperature_second_half_K": float(np.mean(temps[len(temps) // 2:])),
           "seconds_per_step": sec / args.steps, "load_average_end": os.getloadavg()[0]}
    out = Path(args.out) if args.out else default_out(args.material)
    data = _load_json(out)
    data.setdefault("md", {})[f"{tag}-{args.supercell}x{args.supercell}-T{args.temperature:.0f}-{args.steps}"] = rec
    _save_json(out, data)
    print(json.dumps({k: v for k, v in rec.items() if k != "interlayer_every_50_steps_A"}, indent=1))
    return 0


def cmd_record(args) -> int:
    """Write the round to the active-learning log of ``configs/active-graphene-round1.yaml`` (replacing it)."""
    from ase_wannierml.active import load_active_config, record_round
    from ase_wannierml.model import load_model

    torch.set_num_threads(1)
    cfg = load_active_config(args.config)
    log = Path(cfg.workdir) / "active_log.json"
    if log.exists():
        log.unlink()                     # this workdir holds only this round: re-recording replaces it
    import shutil

    after = load_model(args.model)
    tr = after.metadata.get("training", {})
    frames = frames_dir("graphene-bilayer")
    new = sorted({f for f in tr.get("frame_ids", {}).get("train", []) if fnmatch.fnmatchcase(f, "md2x2-*")})
    stages, path = [], args.model
    while path and Path(path).is_file():           # the chain of warm starts behind the model file
        t = torch.load(path, map_location="cpu", weights_only=True).get("metadata", {}).get("training", {})
        if not t:
            break
        stages.append({"model_file": str(path), "config_output": t.get("config", {}).get("run", {}).get("output"),
                       "step": t.get("step"), "train_frame_visits_per_epoch": t.get("train_frames"),
                       "repeat": t.get("config", {}).get("data", {}).get("repeat"),
                       "lr": t.get("config", {}).get("optim", {}).get("lr"),
                       "training_time_s": t.get("training_time_s"), "saved_utc": t.get("saved_utc")})
        path = t.get("init_from")
    kept = Path(cfg.workdir) / args.keep_as
    Path(cfg.workdir).mkdir(parents=True, exist_ok=True)
    shutil.copyfile(args.model, kept)               # the run folder is not kept; the log's model is
    trained = {"kind": "one model, warm start from the shipped model (committee not retrained)",
               "configs": args.configs, "stages": stages[::-1], "model_file": str(kept)}
    rec = record_round(cfg, [frames / f for f in new], load_model(cfg.committee, committee=True), after,
                       str(kept), trained,
                       selection="16-atom 2x2 snapshots of the shipped model's own Langevin MD at 300 / 600 K "
                                 "(scripts/md_snapshot_frames.py, every snapshot of the training trajectories; "
                                 "not chosen by committee disagreement); their committee forces_std is recorded")
    b, a = rec["errors_before"], rec["errors_after"]
    print(f"round {rec['round']}: {len(new)} new frames; force RMSE on them {1e3 * b['new_frames']['force_rmse']:.0f}"
          f" -> {1e3 * a['new_frames']['force_rmse']:.0f} meV/Å; held-out "
          f"{1e3 * b['heldout']['force_rmse']:.0f} -> {1e3 * a['heldout']['force_rmse']:.0f} meV/Å")
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    e = sub.add_parser("evaluate")
    e.add_argument("--model", nargs="*", default=[], help="tag=model (file or pretrained name)")
    e.add_argument("--committee", nargs="*", default=[], help="tag=committee (file or pretrained name)")
    e.add_argument("--extra-frames", nargs="*", default=[],
                   help="frame ids reported as a third group (not held out by rule, but trained on by no model "
                        "evaluated here; checked)")
    e.add_argument("--out", default=None, help="results JSON (default: per material, see the module docstring)")
    m = sub.add_parser("md")
    m.add_argument("--model", required=True, help="tag=model")
    m.add_argument("--supercell", type=int, default=2)
    m.add_argument("--temperature", type=float, default=300.0)
    m.add_argument("--steps", type=int, default=500)
    m.add_argument("--seed", type=int, default=7)
    m.add_argument("--out", default=None)
    t = sub.add_parser("table")
    t.add_argument("--out", default=None)
    for p in (e, m, t):
        p.add_argument("--material", choices=sorted(MATERIALS), default="graphene-bilayer")
    r = sub.add_parser("record")
    r.add_argument("--model", required=True, help="the retrained model file")
    r.add_argument("--config", default=str(REPO / "configs" / "active-graphene-round1.yaml"))
    r.add_argument("--configs", nargs="*", default=["configs/graphene-bilayer-active1.yaml",
                                                     "configs/graphene-bilayer-active1b.yaml"],
                   help="training configs of the model's stages (recorded)")
    r.add_argument("--keep-as", default="graphene-bilayer-round1.pt",
                   help="file name of the model's copy in the log's workdir (committed with the log)")
    args = ap.parse_args(argv)
    if args.cmd == "record":
        return cmd_record(args)
    if args.cmd == "evaluate":
        return cmd_evaluate(args)
    if args.cmd == "md":
        return cmd_md(args)
    print(table(_load_json(Path(args.out) if args.out else default_out(args.material))))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
