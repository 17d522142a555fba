"""DFT frames from the shipped model's own Langevin MD of bilayer supercells (active-learning seed data).

    nice -n 10 python scripts/md_snapshot_frames.py --material graphene-bilayer --supercell 2 \
        --temperatures 300 600 --snapshots 6 --heldout 3 --np 2 --nk 2

Plan (deterministic from ``--seed``): for each temperature, one training trajectory and one separate held-out
trajectory (different random seed, never trained on: ``meta.sampling.notes.split == "test"``).  Snapshots are taken
every ``--every`` steps after ``--equilibrate`` steps (1 fs).  The snapshots are written first to
``<dataset>/md_snapshots_<tag>.extxyz`` (so the plan survives a restart), then each is run through the project's
workflow (``dft.workflow.run_frame`` with the structure given) unless its frame directory exists.  Resumable: kill
and rerun with the same arguments.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def _log(msg: str) -> None:
    print(f"[{time.strftime('%Y-%m-%d %H:%M:%S')}] {msg}", flush=True)


def make_snapshots(material_name: str, repeat: tuple[int, int], temperatures: list[float], n_train: int,
                   n_test: int, every: int, equilibrate: int, seed: int, model_name: str | None = None):
    import torch
    from ase import units
    from ase.md.langevin import Langevin
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution

    from ase_wannierml import WannierMLCalculator, load_model
    from ase_wannierml.dft.materials import get_material
    from ase_wannierml.dft.sampling import build_structure, reference_frames

    torch.set_num_threads(1)
    material = get_material(material_name)
    ref = reference_frames(material)[0]
    ref.supercell = 1
    base = build_structure(material, ref).repeat((repeat[0], repeat[1], 1))     # arrays ("layer") are tiled too
    model = load_model(model_name or material_name)
    source = f"{material_name} shipped model" if model_name is None else f"model {model_name}"
    out = []
    for T in temperatures:
        for split, n, s in (("train", n_train, seed), ("test", n_test, seed + 1000)):
            atoms = base.copy()
            atoms.calc = WannierMLCalculator(model)
            rng = np.random.default_rng(s + int(T))
            MaxwellBoltzmannDistribution(atoms, temperature_K=T, rng=rng)
            dyn = Langevin(atoms, 1.0 * units.fs, temperature_K=T, friction=0.01, rng=rng)
            dyn.run(equilibrate)
            for k in range(n):
                dyn.run(every)
                snap = atoms.copy()
                snap.calc = None
                snap.info = {"md_temperature_K": float(T), "split": split, "md_seed": int(s + T),
                             "md_step": int(equilibrate + (k + 1) * every), "source": source}
                out.append(snap)
                _log(f"snapshot T={T} {split} {k}: z-spread {np.ptp(snap.positions[:, 2]):.2f} Å")
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--material", default="graphene-bilayer")
    ap.add_argument("--supercell", type=int, default=2, help="n x n repetition of the reference bilayer")
    ap.add_argument("--repeat", type=int, nargs=2, metavar=("NX", "NY"), default=None,
                    help="NX x NY repetition instead of --supercell (e.g. 2 1 for a 12-atom MoS2 cell)")
    ap.add_argument("--temperatures", type=float, nargs="+", default=[300.0, 600.0])
    ap.add_argument("--snapshots", type=int, default=6, help="training snapshots per temperature")
    ap.add_argument("--heldout", type=int, default=3, help="held-out snapshots per temperature")
    ap.add_argument("--every", type=int, default=200)
    ap.add_argument("--equilibrate", type=int, default=600)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--np", type=int, default=2)
    ap.add_argument("--nk", type=int, default=2)
    ap.add_argument("--scf-only", action="store_true", help="energy/forces/stress only (no Wannier step)")
    ap.add_argument("--model", default=None,
                    help="model (shipped name or .pt path) whose MD is sampled (default: the shipped model)")
    ap.add_argument("--tag", default=None, help="snapshot-file / frame-id tag (default: s<seed>)")
    args = ap.parse_args(argv)

    from ase.io import read, write

    from ase_wannierml.dft.codes import Runner, check_codes, unwind_on_sigterm
    from ase_wannierml.dft.materials import get_material
    from ase_wannierml.dft.sampling import FrameParams
    from ase_wannierml.dft.workflow import run_frame

    material = get_material(args.material)
    dataset = REPO / "datasets" / material.name
    run_tag = args.tag or f"s{args.seed}"
    repeat = tuple(args.repeat) if args.repeat else (args.supercell, args.supercell)
    if min(repeat) < 1:
        ap.error(f"repetitions must be >= 1, got {repeat}")
    shape = f"{repeat[0]}x{repeat[1]}"
    tag = f"{shape}_{run_tag}"
    snap_file = dataset / f"md_snapshots_{tag}.extxyz"
    if not snap_file.exists():
        snaps = make_snapshots(args.material, repeat, args.temperatures, args.snapshots, args.heldout,
                               args.every, args.equilibrate, args.seed, args.model)
        tmp = snap_file.with_suffix(".tmp.extxyz")
        write(tmp, snaps, format="extxyz")
        os.replace(tmp, snap_file)
    snaps = read(snap_file, index=":")
    # interleave: train / test of each temperature alternate so both sets grow from the start
    order = sorted(range(len(snaps)), key=lambda i: (sum(1 for j in range(i) if snaps[j].info["split"] ==
                                                             snaps[i].info["split"] and snaps[j].info["md_temperature_K"]
                                                             == snaps[i].info["md_temperature_K"]), i))
    check_codes()
    unwind_on_sigterm()     # a stopped batch terminates its running pw.x instead of orphaning it
    runner = Runner(nprocs=args.np, npools=args.nk)
    for i in order:
        a = snaps[i]
        T = int(a.info["md_temperature_K"])
        fid = f"md{shape}-T{T}-{a.info['split']}-{run_tag}-{i:03d}"
        if (dataset / "frames" / fid / "meta.json").exists():
            continue
        params = FrameParams(frame_id=fid, material=material.name, seed=int(a.info["md_seed"]),
                             kind="user-scf" if args.scf_only else "user", supercell=max(repeat),
                             notes={k: (v.item() if hasattr(v, "item") else v) for k, v in a.info.items()})
        a.set_array("layer", a.get_array("layer").astype(int))
        _log(f"start {fid} ({len(a)} atoms)")
        meta = run_frame(material, params, dataset, REPO / "scratch" / "dft", runner, atoms=a)
        q = meta.get("quality") or {}
        _log(f"done  {fid}: {meta['status']} {meta['reason'][:200]} | {meta['timings_s']} | band max/rms "
             f"{q.get('band_max_meV', float('nan'))}/{q.get('band_rms_meV', float('nan'))} meV")
    return 0


if __name__ == "__main__":
    sys.exit(main())
