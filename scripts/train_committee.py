"""Train the shipped committees: K members fine-tuned from the shipped model, then one committee file.

    OMP_NUM_THREADS=1 nice -n 5 python scripts/train_committee.py --name graphene-bilayer \
        --config configs/graphene-bilayer-stage7.yaml --members 4 --steps 400
    OMP_NUM_THREADS=1 nice -n 5 python scripts/train_committee.py --name mos2-bilayer \
        --config configs/mos2-bilayer-stage6.yaml --members 4 --steps 250 \
        --freeze hamiltonian.near.nets hamiltonian.far.nets hamiltonian.inter.nets

Member k (k = 0 … K−1) is the stage config of the shipped model with: ``run.init_from`` = the shipped model file,
``run.seed`` = k, ``run.init_noise`` (relative Gaussian perturbation of every trainable weight before training, so
the members start apart), ``data.bootstrap_seed`` = k (bootstrap resample of the training split: different data per
member), ``optim.max_steps`` = ``--steps``, ``run.freeze`` (tensors kept at the shipped values, so the committee file
stores only what each member trained). The test split (hash of the frame id, plus ``*-test-*`` ids and frames whose
meta says split "test") is the same for every member and never trained on. Runs go to ``runs/committee/<name>/m<k>``
(resumable: a finished member is skipped and an interrupted one continues with ``--resume``, but only if its run
was made from the same member config and the same shipped model file, recorded as ``FINGERPRINT``; a run from another
base, e.g. the previous shipped model, is moved aside to ``m<k>.stale-<time>`` and retrained); the committee is
written (atomically) to ``ase_wannierml/pretrained/committee/<name>.pt`` with ``save_committee(base=<name>)``.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import yaml

from ase_wannierml.cli import atomic_write_text

REPO = Path(__file__).resolve().parents[1]


def member_config(base_cfg: dict, name: str, k: int, steps: int, noise: float, freeze: list[str],
                  lr: float | None, out_root: Path) -> dict:
    cfg = json.loads(json.dumps(base_cfg))
    out = out_root / f"m{k}"
    cfg["data"]["cache"] = str(out_root / "dataset_cache.pt")
    cfg["data"]["bootstrap_seed"] = k
    cfg["optim"]["max_steps"] = steps
    cfg["optim"]["warmup_steps"] = min(cfg["optim"].get("warmup_steps", 20), max(steps // 10, 1))
    if lr is not None:
        cfg["optim"]["lr"] = lr
    run = cfg["run"]
    run.update(output=str(out), init_from=str(REPO / "ase_wannierml" / "pretrained" / f"{name}.pt"), seed=k,
               init_noise=noise, freeze=list(freeze), progress=False,
               checkpoint_every=max(steps // 4, 1), eval_every=max(steps // 4, 1), log_every=max(steps // 20, 1),
               patience=0)
    return cfg


def member_fingerprint(cfg: dict) -> str:
    """SHA-256 of the member config and of the model file it starts from (``run.init_from``)."""
    digest = hashlib.sha256(json.dumps(cfg, sort_keys=True).encode())
    digest.update(hashlib.sha256(Path(cfg["run"]["init_from"]).read_bytes()).digest())
    return digest.hexdigest()


def prepare_member_dir(run_dir: Path, fingerprint: str) -> str:
    """"done" (finished run of this fingerprint), "resume" (interrupted run of it) or "new". A run made from another
    config or base model (or before fingerprints were recorded) is moved aside, never reused or deleted."""
    if run_dir.exists() and any(run_dir.iterdir()):
        recorded = (run_dir / "FINGERPRINT").read_text().strip() if (run_dir / "FINGERPRINT").is_file() else None
        if recorded == fingerprint:
            if (run_dir / "model.pt").exists() and (run_dir / "DONE").exists():
                return "done"
            return "resume" if (run_dir / "checkpoints").exists() else "new"
        stale = run_dir.with_name(f"{run_dir.name}.stale-{time.strftime('%Y%m%d-%H%M%S')}")
        run_dir.rename(stale)
        print(f"{run_dir.name}: run made from another config or base model, moved aside to {stale}", flush=True)
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(run_dir / "FINGERPRINT", fingerprint + "\n")
    return "new"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--name", required=True, help="shipped model name (graphene-bilayer, mos2-bilayer)")
    ap.add_argument("--config", required=True, help="stage YAML the shipped model was trained with")
    ap.add_argument("--members", type=int, default=4)
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--noise", type=float, default=0.05, help="relative weight perturbation before fine-tuning")
    ap.add_argument("--lr", type=float, default=None)
    ap.add_argument("--freeze", nargs="*", default=[])
    ap.add_argument("--heldout-pattern", nargs="*", default=[],
                    help="extra frame-id globs kept out of every member's training (added to data.test_patterns)")
    ap.add_argument("--calibration-frames", nargs="*", default=[],
                    help="frame-id globs of held-out frames (never trained on) set aside to calibrate forces_std "
                         "together with the members' validation frames; the calibration benchmark then leaves "
                         "them out of its held-out groups (e.g. 'md2x2-*-test-r1-*': thermal snapshots)")
    ap.add_argument("--calibration-power", choices=["1", "fit"], default="1",
                    help="forces_std = s·σ_raw ('1') or s·σ_ref·(σ_raw/σ_ref)^b with b fitted ('fit')")
    ap.add_argument("--out", default=None, help="committee file (default pretrained/committee/<name>.pt)")
    args = ap.parse_args(argv)
    import fnmatch

    names = [p.name for p in (REPO / "datasets" / args.name / "frames").glob("*") if p.is_dir()]
    unmatched = [g for g in args.calibration_frames if not any(fnmatch.fnmatchcase(f, g) for f in names)]
    if unmatched:     # checked before any training: a typo would otherwise calibrate on nothing extra
        ap.error(f"--calibration-frames {unmatched} matched no frame in datasets/{args.name}/frames")

    import torch

    torch.set_num_threads(1)
    base_cfg = yaml.safe_load(Path(args.config).read_text())
    out_root = REPO / "runs" / "committee" / args.name
    out_root.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    timings = {}
    for k in range(args.members):
        cfg = member_config(base_cfg, args.name, k, args.steps, args.noise, args.freeze, args.lr, out_root)
        cfg["data"]["test_patterns"] = ["*-test-*", *args.heldout_pattern]
        run_dir = Path(cfg["run"]["output"])
        state = prepare_member_dir(run_dir, member_fingerprint(cfg))
        if state == "done":
            print(f"member {k}: finished run of this config and base model, reused", flush=True)
            continue
        cfg_path = run_dir / "config.yaml"
        atomic_write_text(cfg_path, yaml.safe_dump(cfg, sort_keys=False))
        resume = ["--resume"] if state == "resume" else []
        t0 = time.time()
        print(f"[{time.strftime('%H:%M:%S')}] member {k}: training {cfg_path}", flush=True)
        subprocess.run([sys.executable, "-m", "ase_wannierml.training.cli", "train", str(cfg_path), *resume],
                       check=True, cwd=REPO, env=env)
        atomic_write_text(run_dir / "DONE", "ok\n")
        timings[k] = round(time.time() - t0, 1)
        print(f"[{time.strftime('%H:%M:%S')}] member {k}: done in {timings[k]} s", flush=True)

    from ase_wannierml.model import load_model
    from ase_wannierml.model.committee import CommitteeModel, save_committee

    members = [load_model(out_root / f"m{k}" / "model.pt") for k in range(args.members)]
    meta = {"members": args.members, "made_by": "scripts/train_committee.py",
            "recipe": {"base": args.name, "stage_config": str(Path(args.config)), "steps": args.steps,
                       "init_noise": args.noise, "bootstrap": "data.bootstrap_seed = member index",
                       "seeds": list(range(args.members)), "freeze": args.freeze, "lr": args.lr},
            "member_training": [{"step": m.metadata.get("training", {}).get("step"),
                                 "train_frames": m.metadata.get("training", {}).get("train_frames"),
                                 "test_frames": m.metadata.get("training", {}).get("frame_ids", {}).get("test")}
                                for m in members]}
    committee = CommitteeModel(members, meta)
    val = sorted({f for m in members for f in m.metadata.get("training", {}).get("frame_ids", {}).get("val", [])})
    frames_dir = REPO / "datasets" / args.name / "frames"
    trained = {f for m in members for f in m.metadata.get("training", {}).get("frame_ids", {}).get("train", [])}
    extra = sorted(p.name for p in frames_dir.iterdir() if p.is_dir()
                   and any(fnmatch.fnmatchcase(p.name, g) for g in args.calibration_frames))
    leaked = [f for f in extra if f in trained]
    if leaked:
        raise SystemExit(f"--calibration-frames must be held out, but members trained on {leaked[:5]}")
    fit = [frames_dir / f for f in [*val, *extra] if (frames_dir / f).is_dir()]
    if fit:      # forces_std calibration from frames no member trained on (validation + set-aside held-out frames)
        from ase_wannierml.model.committee import calibrate_forces

        cal = calibrate_forces(committee, fit, power=None if args.calibration_power == "fit" else 1.0)
        print(f"calibration on {len(cal['fit_frames'])} frames ({len(extra)} set aside): raw within 1σ "
              f"{cal['raw_within_1sigma']:.2f}, 2σ {cal['raw_within_2sigma']:.2f}; forces_std scale "
              f"{cal['forces_std_scale']:.2f}, power {cal['forces_std_power']:.2f}")
    out = Path(args.out) if args.out else REPO / "ase_wannierml" / "pretrained" / "committee" / f"{args.name}.pt"
    out.parent.mkdir(parents=True, exist_ok=True)
    save_committee(committee, out, base=args.name)
    print(f"committee of {args.members} written to {out} ({out.stat().st_size / 1e6:.2f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
