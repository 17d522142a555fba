"""Resumable batch driver: ``python -m ase_wannierml.dft.batch --material graphene-bilayer --n-frames 300``.

Runs the frame plan of :func:`ase_wannierml.dft.sampling.frame_plan` (or the stacking grid / strain series) as
tasks on the same Dask engine as ``wannierml dft`` (``dft/engine.py``): an embedded local cluster of ``--workers``
processes by default (``--np`` MPI ranks per frame), or ``--scheduler`` / ``--cluster`` (jobqueue, e.g. Slurm).
Frames whose directory exists (status ok, or rejected by the quality gate) are skipped; frames recorded with an
error are rerun unless ``--skip-failed``; a frame that fails is retried ``--retries`` times and reported.  Safe to
kill at any time: frames are written atomically, the codes of running frames are terminated, the scratch of an
interrupted frame is removed when it is rerun.  Run one driver per plan and dataset.
"""
from __future__ import annotations

import argparse
import json
import signal
import sys
from pathlib import Path

from .codes import check_codes
from .compute import _frame_task, _write_summary, frame_status
from .engine import EngineSettings, Summary, Task, log, open_client, run_tasks
from .materials import get_material
from .sampling import frame_plan, stacking_grid, strain_series
from .workflow import prepare_inputs

REPO = Path(__file__).resolve().parents[2]


def _log(msg: str) -> None:
    log(msg)


def _terminate(signum, frame) -> None:  # noqa: ARG001
    """SIGTERM handler: unwind (the running codes' process groups are terminated, the cluster closed)."""
    _log("SIGTERM received: stopping (running frames will be rerun next time)")
    raise SystemExit(143)


def frame_done(dataset: Path, frame_id: str) -> str | None:
    """Status of a finished frame ("ok" / "rejected" / "error") or None if it still has to run."""
    return frame_status(dataset, frame_id)[0]


def main(argv: list[str] | None = None, frame_fn=None) -> int:
    """Command-line entry point; ``frame_fn`` replaces ``workflow.run_frame`` (tests)."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--material", default="graphene-bilayer")
    ap.add_argument("--n-frames", type=int, default=None, help="length of the frame plan (required unless --stacking-grid)")
    ap.add_argument("--dataset-dir", type=Path, default=None, help="default: <repo>/datasets/<material>")
    ap.add_argument("--scratch", type=Path, default=REPO / "scratch" / "dft")
    ap.add_argument("--np", type=int, default=2, help="MPI ranks per frame")
    ap.add_argument("--nk", type=int, default=2, help="k-point pools for pw.x")
    ap.add_argument("--workers", type=int, default=1, help="frames at once on the local cluster (default: 1)")
    ap.add_argument("--retries", type=int, default=1, help="resubmissions of a failed frame (default: 1)")
    ap.add_argument("--skip-failed", action="store_true", help="do not rerun frames recorded with an error")
    ap.add_argument("--scheduler", default=None, help="address or scheduler file of a running Dask scheduler")
    ap.add_argument("--cluster", default=None, help="dask-jobqueue cluster YAML (e.g. Slurm; docs/dft.md)")
    ap.add_argument("--tasks-per-node", type=int, default=None, help="jobqueue: worker processes per job")
    ap.add_argument("--master-seed", type=int, default=2024)
    ap.add_argument("--kinds", default=None, help="comma list of frame kinds to run (default: all)")
    ap.add_argument("--max-hours", type=float, default=None, help="stop starting new frames after this")
    ap.add_argument("--max-failures", type=int, default=3,
                    help="stop starting frames once this many failed for good (errors, not quality rejections)")
    ap.add_argument("--max-consecutive-errors", dest="max_failures", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--stacking-grid", action="store_true",
                    help="run the SCF-only stacking x gap grid (sampling.stacking_grid) instead of the frame plan")
    ap.add_argument("--grid-gaps", type=float, nargs="+", default=None, metavar="GAP",
                    help="--stacking-grid on these interlayer gaps (Å) instead of the default grid; needs "
                         "--grid-prefix")
    ap.add_argument("--grid-fractions", type=float, nargs="+", default=None, metavar="T",
                    help="stacking-path fractions of the grid (0 = AA-type, 1 = the reference stacking; default "
                         "0 0.5 0.75 1)")
    ap.add_argument("--grid-prefix", default=None,
                    help="frame-id prefix of an extra grid (the default grid's ids start with 's')")
    ap.add_argument("--strain-series", action="store_true",
                    help="run the biaxially strained reference frames (sampling.strain_series) instead of the plan")
    ap.add_argument("--dry-run", action="store_true", help="write the inputs of each frame to scratch, run nothing")
    args = ap.parse_args(argv)
    if args.stacking_grid and args.strain_series:
        ap.error("--stacking-grid and --strain-series are separate batches: run one at a time per command")
    extra_grid = args.grid_gaps is not None or args.grid_fractions is not None or args.grid_prefix is not None
    if extra_grid and not args.stacking_grid:
        ap.error("--grid-gaps / --grid-fractions / --grid-prefix only apply with --stacking-grid")
    if extra_grid and (args.grid_prefix is None or args.grid_prefix == "s"):
        ap.error("an extra stacking grid needs its own --grid-prefix (not 's', the default grid's), so its frame ids "
                 "stay unique")
    series = "stacking_grid" if args.stacking_grid else "strain_series" if args.strain_series else None
    if args.n_frames is None and series is None:
        ap.error("--n-frames is required (or --stacking-grid / --strain-series)")

    material = get_material(args.material)
    dataset = args.dataset_dir or REPO / "datasets" / material.name
    if args.stacking_grid and extra_grid:
        try:
            plan = stacking_grid(material, gaps=tuple(args.grid_gaps) if args.grid_gaps else None,
                                 path_fractions=tuple(args.grid_fractions or (0.0, 0.5, 0.75, 1.0)),
                                 prefix=args.grid_prefix)
        except ValueError as exc:
            ap.error(str(exc))
        series = f"stacking_grid_{args.grid_prefix}"
    else:
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

    if frame_fn is None:
        check_codes()
    signal.signal(signal.SIGTERM, _terminate)
    (dataset / "frames").mkdir(parents=True, exist_ok=True)
    plan_name = f"plan_{series}.json" if series else "plan.json"
    (dataset / plan_name).write_text(json.dumps([p.to_dict() for p in plan], indent=1))
    settings = EngineSettings(workers=args.workers, ranks_per_task=args.np, pools=min(args.nk, args.np),
                              retries=args.retries, scheduler=args.scheduler, cluster=args.cluster,
                              tasks_per_node=args.tasks_per_node, max_failures=args.max_failures)
    order = list(range(len(plan)))
    if args.stacking_grid:   # reference stacking first, then AA-type, then the rest: useful early if interrupted
        rank = {1.0: 0, 0.0: 1, 0.5: 2}
        order.sort(key=lambda i: (rank.get(plan[i].notes.get("stacking_path_fraction"), 3), i))
    summary = Summary()
    tasks = []
    for i in order:
        p = plan[i]
        if kinds and p.kind not in kinds:
            continue
        status = frame_done(dataset, p.frame_id)
        if status in ("ok", "rejected") or (status == "error" and args.skip_failed):
            summary.skipped.append(p.frame_id)
            continue
        label = (f"({i + 1}/{len(plan)} gap {p.gap:.3f} Å strain {[round(x, 4) for x in p.strain]} shift "
                 f"{[round(x, 3) for x in p.shift]} rattle {p.rattle:.3f} Å)")
        tasks.append(Task(p.frame_id, _frame_task, (material, p, None, str(dataset), str(args.scratch), settings,
                                                   frame_fn), label))
    _log(f"plan of {len(plan)} frames: {len(tasks)} to run, {len(summary.skipped)} done; {args.workers} at once x "
         f"{args.np} MPI ranks")
    if tasks:
        with open_client(settings, n_tasks=len(tasks)) as client:
            run_tasks(tasks, client, retries=settings.retries, max_failures=settings.max_failures, summary=summary,
                      deadline_s=None if args.max_hours is None else args.max_hours * 3600.0)
    for fid, r in summary.results.items():
        q = r.get("quality") or {}
        if "band_max_meV" in q:
            _log(f"{fid}: band max/rms {q['band_max_meV']:.1f}/{q.get('band_rms_meV', float('nan')):.1f} meV, "
                 f"{r.get('timings_s')}")
    _write_summary(dataset, summary, material, settings, scf_only=bool(series and series.startswith("stacking_grid")))
    _log(f"batch finished: {summary.line()}")
    for fid, reason in summary.failed.items():
        _log(f"FAILED {fid} after {summary.attempts.get(fid, 0)} attempts: {reason[:500]} (see its meta.json)")
    return 1 if summary.failed else 0


if __name__ == "__main__":
    sys.exit(main())
