"""Resumable batch driver: ``python -m ase_wannierml.dft.batch --material graphene-bilayer --n-frames 300``.

Runs the frame plan of :func:`ase_wannierml.dft.sampling.frame_plan` in order, skipping frames whose directory
already exists (status ok or rejected).  Safe to kill at any time: frames are written atomically, the scratch of
an interrupted frame is removed when it is rerun.  One batch per dataset (a lock file holds the driver's pid).
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from pathlib import Path

from .codes import Runner, check_codes
from .materials import get_material
from .sampling import frame_plan, stacking_grid, strain_series
from .workflow import prepare_inputs, run_frame

REPO = Path(__file__).resolve().parents[2]


def _log(msg: str) -> None:
    print(f"[{time.strftime('%Y-%m-%d %H:%M:%S')}] {msg}", flush=True)


def _acquire_lock(dataset: Path, name: str = ".batch.lock") -> Path:
    """One driver per plan and dataset (the plan and the stacking grid have disjoint frame ids, so each has its
    own lock): ``name`` in ``dataset`` holds the driver's pid."""
    lock = dataset / name
    if lock.exists():
        try:
            pid = int(lock.read_text().strip())
            os.kill(pid, 0)
        except (ValueError, ProcessLookupError):
            pass
        except PermissionError:
            raise RuntimeError(f"another batch (pid {lock.read_text().strip()}) holds {lock}") from None
        else:
            if pid != os.getpid():
                raise RuntimeError(f"another batch (pid {pid}) is running on {dataset} (lock {lock})")
    lock.write_text(str(os.getpid()))
    return lock


def _terminate(signum, frame) -> None:  # noqa: ARG001
    """SIGTERM handler: unwind (the running code's process group is terminated, the lock released)."""
    _log("SIGTERM received: stopping (the current frame will be rerun next time)")
    raise SystemExit(143)


def frame_done(dataset: Path, frame_id: str) -> str | None:
    """Status of a finished frame ("ok" / "rejected") or None if it still has to run."""
    meta = dataset / "frames" / frame_id / "meta.json"
    if not meta.exists():
        return None
    try:
        return json.loads(meta.read_text()).get("status", "unknown")
    except json.JSONDecodeError:
        return None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--material", default="graphene-bilayer")
    ap.add_argument("--n-frames", type=int, default=None, help="length of the frame plan (required unless --stacking-grid)")
    ap.add_argument("--dataset-dir", type=Path, default=None, help="default: <repo>/datasets/<material>")
    ap.add_argument("--scratch", type=Path, default=REPO / "scratch" / "dft")
    ap.add_argument("--np", type=int, default=2, help="MPI ranks")
    ap.add_argument("--nk", type=int, default=2, help="k-point pools for pw.x")
    ap.add_argument("--master-seed", type=int, default=2024)
    ap.add_argument("--kinds", default=None, help="comma list of frame kinds to run (default: all)")
    ap.add_argument("--max-hours", type=float, default=None, help="stop starting new frames after this")
    ap.add_argument("--max-consecutive-errors", type=int, default=3,
                    help="stop when this many frames in a row fail with an error (not a quality rejection)")
    ap.add_argument("--stacking-grid", action="store_true",
                    help="run the SCF-only stacking x gap grid (sampling.stacking_grid) instead of the frame plan")
    ap.add_argument("--strain-series", action="store_true",
                    help="run the biaxially strained reference frames (sampling.strain_series) instead of the plan")
    ap.add_argument("--dry-run", action="store_true", help="write the inputs of each frame to scratch, run nothing")
    args = ap.parse_args(argv)
    if args.stacking_grid and args.strain_series:
        ap.error("--stacking-grid and --strain-series are separate batches: run one at a time per command")
    series = "stacking_grid" if args.stacking_grid else "strain_series" if args.strain_series else None
    if args.n_frames is None and series is None:
        ap.error("--n-frames is required (or --stacking-grid / --strain-series)")

    material = get_material(args.material)
    dataset = args.dataset_dir or REPO / "datasets" / material.name
    plan = stacking_grid(material) if args.stacking_grid else strain_series(material) if args.strain_series \
        else frame_plan(material, args.n_frames, args.master_seed)
    kinds = set(args.kinds.split(",")) if args.kinds else None
    if args.dry_run:
        for p in plan:
            if kinds and p.kind not in kinds:
                continue
            prep = prepare_inputs(material, p, args.scratch / "dry-run" / material.name / p.frame_id)
            _log(f"dry run {p.frame_id}: {len(prep['atoms'])} atoms, SCF k {prep['kmesh_scf']}, NSCF k "
                 f"{prep['kmesh_nscf']}, nbnd {prep['nbnd_nscf']}, num_wann {prep['num_wann']}")
        return 0

    check_codes()
    signal.signal(signal.SIGTERM, _terminate)
    (dataset / "frames").mkdir(parents=True, exist_ok=True)
    lock = _acquire_lock(dataset, f".batch_{series}.lock" if series else ".batch.lock")
    plan_name = f"plan_{series}.json" if series else "plan.json"
    (dataset / plan_name).write_text(json.dumps([p.to_dict() for p in plan], indent=1))
    runner = Runner(nprocs=args.np, npools=args.nk)
    t0 = time.time()
    n_ok = n_rej = n_skip = 0
    consecutive_errors = 0
    order = list(range(len(plan)))
    if args.stacking_grid:   # reference stacking first, then AA-type, then the rest: useful early if interrupted
        rank = {1.0: 0, 0.0: 1, 0.5: 2}
        order.sort(key=lambda i: (rank.get(plan[i].notes.get("stacking_path_fraction"), 3), i))
    try:
        for i in order:
            p = plan[i]
            if kinds and p.kind not in kinds:
                continue
            status = frame_done(dataset, p.frame_id)
            if status is not None:
                n_skip += 1
                continue
            if args.max_hours is not None and time.time() - t0 > args.max_hours * 3600:
                _log(f"stopping: --max-hours {args.max_hours} reached")
                break
            _log(f"start {p.frame_id} ({i + 1}/{len(plan)}) gap {p.gap:.3f} Å strain "
                 f"{[round(x, 4) for x in p.strain]} shift {[round(x, 3) for x in p.shift]} rattle {p.rattle:.3f} Å")
            meta = run_frame(material, p, dataset, args.scratch, runner)
            q = meta.get("quality") or {}
            if meta["status"] == "ok":
                n_ok += 1
            else:
                n_rej += 1
            consecutive_errors = consecutive_errors + 1 if meta["reason"].startswith("error") else 0
            _log(f"done  {p.frame_id}: {meta['status']} {meta['reason'][:300]} | {meta['timings_s']} | "
                 f"band max/rms {q.get('band_max_meV', float('nan')):.1f}/{q.get('band_rms_meV', float('nan')):.1f}"
                 f" meV | this run: {n_ok} ok, {n_rej} rejected, {n_skip} skipped")
            if consecutive_errors >= args.max_consecutive_errors:
                _log(f"stopping: {consecutive_errors} frames in a row failed with errors (see their meta.json); "
                     "delete those frame directories to retry them after fixing the cause")
                return 1
    finally:
        if lock.exists() and lock.read_text().strip() == str(os.getpid()):
            lock.unlink()
    _log(f"batch finished: {n_ok} ok, {n_rej} rejected, {n_skip} already done")
    return 0


if __name__ == "__main__":
    sys.exit(main())
