"""``wannierml dft``: first-principles frames (QE + Wannier90) for your structures, as tasks on Dask.

    wannierml dft snapshots.extxyz --material graphene-bilayer --dataset-dir data/my --scf-only
    wannierml dft relaxed.extxyz --material my-material.yaml --dataset-dir data/my --workers 2 --ranks 1
    wannierml dft snaps.extxyz --material graphene-bilayer --dataset-dir data/my --cluster slurm.yaml
    wannierml dft snaps.extxyz --material graphene-bilayer --dataset-dir data/my --scheduler tcp://node:8786
    wannierml dft --print-material graphene-bilayer > my-material.yaml     # template for a new material

Frames go to ``<dataset-dir>/frames/<prefix>[-scf]-<hash>/`` (DEVELOPING.md frame contract); rerunning the same
command skips finished frames.  See docs/dft.md.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="wannierml dft", description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="\n".join(__doc__.splitlines()[1:]))
    ap.add_argument("structures", nargs="*", help="structure files (extxyz or any ASE-readable format); every "
                                                  "image selected by --index becomes a frame")
    ap.add_argument("--material", default=None,
                    help="shipped material name (graphene-bilayer, mos2-bilayer) or a material .yaml/.json file")
    ap.add_argument("--dataset-dir", type=Path, default=None, help="frames go to DATASET_DIR/frames/")
    ap.add_argument("--index", default=":", help="images of each file (ASE syntax: ':', '-1', '0:9:3', '1,4')")
    ap.add_argument("--scf-only", action="store_true",
                    help="energy, forces, stress and eigenvalues only (no Wannier90 step, no Hamiltonian)")
    ap.add_argument("--prefix", default="user", help="frame id prefix (default: %(default)s)")
    ap.add_argument("--scratch", type=Path, default=None, help="run directory (default: DATASET_DIR/scratch_dft)")
    ap.add_argument("--workers", type=int, default=1, help="frames at once on the local cluster (default: 1)")
    ap.add_argument("--ranks", type=int, default=2, help="MPI ranks per frame (default: 2)")
    ap.add_argument("--pools", type=int, default=None, help="pw.x k-point pools (default: = ranks)")
    ap.add_argument("--retries", type=int, default=2, help="resubmissions of a failed frame (default: 2)")
    ap.add_argument("--max-failures", type=int, default=None, help="stop after this many frames failed for good")
    ap.add_argument("--skip-failed", action="store_true", help="do not rerun frames that failed in an earlier run")
    ap.add_argument("--scheduler", default=None, help="address or scheduler file of a running Dask scheduler")
    ap.add_argument("--cluster", default=None, help="dask-jobqueue cluster YAML (e.g. Slurm; docs/dft.md)")
    ap.add_argument("--tasks-per-node", type=int, default=None, help="jobqueue: worker processes per node/job")
    ap.add_argument("--jobs", type=int, default=None, help="jobqueue: batch jobs to start (default: enough)")
    ap.add_argument("--dry-run", action="store_true",
                    help="check material and structures, list frame ids, meshes and status; run nothing")
    ap.add_argument("--print-material", metavar="MATERIAL", default=None,
                    help="print a material as YAML (a template for your own) and exit")
    return ap


def main(argv: Sequence[str] | None = None) -> int:
    ap = build_parser()
    args = ap.parse_args(list(sys.argv[1:] if argv is None else argv))
    from .material_files import material_to_yaml, resolve_material

    if args.print_material:
        print(material_to_yaml(resolve_material(args.print_material)), end="")
        return 0
    if not args.structures:
        ap.error("give at least one structure file")
    if args.material is None or args.dataset_dir is None:
        ap.error("--material and --dataset-dir are required")
    from .compute import compute_frames, frame_status, plan_frames, read_structures
    from .engine import EngineSettings

    material = resolve_material(args.material)
    structures = [a for f in args.structures for a in read_structures(f, args.index)]
    settings = EngineSettings(workers=args.workers, ranks_per_task=args.ranks, pools=args.pools,
                              retries=args.retries, scheduler=args.scheduler, cluster=args.cluster,
                              tasks_per_node=args.tasks_per_node, jobs=args.jobs, max_failures=args.max_failures)
    if args.dry_run:
        from .workflow import kmeshes

        for params, atoms in plan_frames(structures, material, args.scf_only, args.prefix):
            n_scf, n_nscf = kmeshes(material, atoms, params)
            status, _ = frame_status(args.dataset_dir, params.frame_id)
            layers = [int((atoms.arrays["layer"] == k).sum()) for k in range(int(atoms.arrays["layer"].max()) + 1)]
            print(f"{params.frame_id}  {len(atoms)} atoms {atoms.get_chemical_formula()}  layers {layers} "
                  f"({params.notes['layer_source']})  SCF k {n_scf}x{n_scf}x1"
                  f"{'' if args.scf_only else f'  NSCF k {n_nscf}x{n_nscf}x1'}  "
                  f"{params.notes['source_file']}[{params.notes['source_index']}]  {status or 'to run'}")
        return 0
    from .codes import unwind_on_sigterm

    unwind_on_sigterm()                 # SIGTERM unwinds: running codes stopped, cluster closed
    summary = compute_frames(structures, material, args.dataset_dir, scf_only=args.scf_only, settings=settings,
                             scratch=args.scratch, prefix=args.prefix, rerun_failed=not args.skip_failed)
    return 1 if summary.failed else 0


if __name__ == "__main__":
    sys.exit(main())
