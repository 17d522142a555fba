"""Vacuum level of a slab frame: the electrostatic potential far from the layers, in the SCF's energy zero.

Why: Quantum ESPRESSO's eigenvalues (and so the Wannier Hamiltonian) are measured from the cell average of the
potential, which moves with the areal density of the slab (strain) and the vacuum thickness. The neutrality level
of each frame (``training.targets``) removes that shift but also removes the physical one: a layer stretched by
8 % has its Mo d and S p levels ~0.2 eV lower *with respect to the vacuum* than an unstrained layer, and in a
heterostrained twisted cell (the seed's 201-atom benchmark: one layer at +7.8 %) that relative alignment sets the
gap. Referencing every frame's H to its own vacuum level keeps it.

How: ``pp.x`` with ``plot_num = 11`` (bare + Hartree potential, the electrostatic potential energy of an electron,
Ry) on the SCF's charge density, written as a Gaussian cube; its average over the in-plane grid axes gives V(z);
the vacuum level is the mean of V over the grid planes farther than ``min_distance`` (Å) from every atom
(periodic in z). The exchange–correlation potential vanishes there with the density, so this is the energy of an
electron at rest in the vacuum, in the same zero as the SCF eigenvalues. Without a dipole correction a polar slab
gives a sloped V in the vacuum: the spread of V over that region is recorded (``vacuum_spread_eV``).

Backfill of frames computed before this step existed (reruns the frame's recorded SCF input, optionally with a
coarser k-mesh, and adds ``vacuum_level_eV`` / ``vacuum`` to its ``meta.json``; nothing else is changed)::

    python -m ase_wannierml.dft.vacuum --material mos2-bilayer --np 2 --kmesh 6
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
import time
from pathlib import Path

import numpy as np
from ase.io.cube import read_cube_data
from ase.units import Rydberg

from .codes import Runner
from .parse import parse_scf

PP_STEP = "pp_vacuum"
CUBE = "potential.cube"


def pp_input_text(prefix: str, outdir: str = "./tmp", filplot: str = "potential.pp", fileout: str = CUBE) -> str:
    """``pp.x`` input: bare + Hartree potential (plot_num 11) on the FFT grid, written as a Gaussian cube."""
    return (f"&INPUTPP\n  prefix = '{prefix}'\n  outdir = '{outdir}'\n  filplot = '{filplot}'\n  plot_num = 11\n/\n"
            f"&PLOT\n  nfile = 1\n  filepp(1) = '{filplot}'\n  iflag = 3\n  output_format = 6\n"
            f"  fileout = '{fileout}'\n/\n")


def planar_average(cube_path: Path) -> tuple[np.ndarray, np.ndarray, "object"]:
    """(z_g Å, V_g eV, atoms) from a ``pp.x`` potential cube (values in Ry): V averaged over the first two grid
    axes, z along the third cell vector (which must be perpendicular to the first two: a slab cell)."""
    data, atoms = read_cube_data(str(cube_path))
    cell = atoms.cell.array
    if abs(cell[2] @ cell[0]) > 1e-6 * np.linalg.norm(cell[2]) * np.linalg.norm(cell[0]) or \
            abs(cell[2] @ cell[1]) > 1e-6 * np.linalg.norm(cell[2]) * np.linalg.norm(cell[1]):
        raise ValueError(f"{cube_path}: the third cell vector is not perpendicular to the layers; a planar average "
                         "along it is not V(z)")
    v_g = data.mean(axis=(0, 1)) * Rydberg
    c = float(np.linalg.norm(cell[2]))
    z_g = np.arange(len(v_g)) * c / len(v_g)
    return z_g, v_g, atoms


def vacuum_level(z_g: np.ndarray, v_g: np.ndarray, z_atoms: np.ndarray, c: float,
                 min_distance: float = 4.0) -> dict:
    """Vacuum level (eV) from the planar average V(z) (eV on grid z_g, Å, period ``c``): the mean of V over
    planes at least ``min_distance`` Å from every atom; also the spread (max − min) there and the plane count."""
    dz = np.abs(z_g[:, None] - np.asarray(z_atoms)[None, :])
    dz = np.minimum(dz, c - dz).min(axis=1)
    far = dz >= min_distance
    if far.sum() < 3:
        raise ValueError(f"no vacuum region: fewer than 3 grid planes are {min_distance} Å from every atom "
                         f"(largest distance {dz.max():.2f} Å); the vacuum level needs a slab with vacuum")
    v = v_g[far]
    return {"vacuum_level_eV": float(v.mean()), "vacuum_spread_eV": float(v.max() - v.min()),
            "vacuum_planes": int(far.sum()), "min_distance_A": float(min_distance),
            "max_distance_A": float(dz.max())}


def run_vacuum_level(runner: Runner, work: Path, prefix: str, min_distance: float = 4.0,
                     keep_cube: bool = False) -> dict:
    """Run ``pp.x`` in ``work`` on the finished SCF ``prefix`` (outdir ./tmp) and return :func:`vacuum_level`'s
    dict plus the step's wall time. The large intermediate files are removed unless ``keep_cube``."""
    (work / "pp_vacuum.in").write_text(pp_input_text(prefix))
    runner.run(PP_STEP, ["pp.x", "-in", "pp_vacuum.in"], work, mpi=False)
    z_g, v_g, atoms = planar_average(work / CUBE)
    out = vacuum_level(z_g, v_g, atoms.positions[:, 2], float(np.linalg.norm(atoms.cell[2])), min_distance)
    out["method"] = "pp.x plot_num=11 (bare + Hartree), planar average, mean over planes >= min_distance from atoms"
    if not keep_cube:
        for name in (CUBE, "potential.pp"):
            (work / name).unlink(missing_ok=True)
    return out


def _with_kmesh(scf_in: str, n: int) -> str:
    """The SCF input with its automatic k-mesh replaced by n×n×1 (offsets kept)."""
    pat = re.compile(r"(K_POINTS\s+automatic\s*\n\s*)(\d+)\s+(\d+)\s+(\d+)(\s+\d\s+\d\s+\d)", re.IGNORECASE)
    if not pat.search(scf_in):
        raise ValueError("SCF input has no 'K_POINTS automatic' block to change")
    return pat.sub(lambda m: f"{m.group(1)}{n} {n} 1{m.group(5)}", scf_in, count=1)


def backfill_frame(frame_dir: Path, scratch: Path, runner: Runner, kmesh: int | None = None,
                   min_distance: float = 4.0) -> dict:
    """Rerun the frame's recorded SCF (``meta["inputs"]["scf.in"]``, k-mesh ``kmesh``×``kmesh`` if given) in
    ``scratch``, compute the vacuum level, and write it into ``meta.json`` (atomically, only new keys). The
    returned dict is the recorded ``vacuum`` entry; ``scf_fermi_level_eV`` of the rerun is stored too so the
    zero of the rerun can be compared with the frame's."""
    meta_path = frame_dir / "meta.json"
    meta = json.loads(meta_path.read_text())
    scf_in = meta.get("inputs", {}).get("scf.in")
    if not scf_in:
        raise ValueError(f"{frame_dir.name}: meta.json has no recorded scf.in")
    prefix = re.search(r"prefix\s*=\s*'([^']+)'", scf_in).group(1)
    work = scratch / frame_dir.name
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    (work / "scf.in").write_text(_with_kmesh(scf_in, kmesh) if kmesh else scf_in)
    runner.timings = {}
    t0 = time.perf_counter()
    try:
        runner.pw("scf", "scf.in", work)
        scf = parse_scf(work / "scf.out")
        out = run_vacuum_level(runner, work, prefix, min_distance)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    out.update(backfilled=True, kmesh_scf=[kmesh, kmesh, 1] if kmesh else meta.get("settings", {}).get("kmesh_scf"),
               scf_fermi_level_eV=float(scf["fermi_level"]), scf_energy_eV=float(scf["energy"]),
               frame_fermi_level_eV=meta.get("fermi_level_eV"), timings_s={**runner.timings,
                                                                            "total": round(time.perf_counter() - t0, 2)})
    meta["vacuum_level_eV"] = out["vacuum_level_eV"]
    meta["vacuum"] = out
    tmp = meta_path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(meta, indent=1))
    os.replace(tmp, meta_path)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Add the vacuum level to finished frames (reruns their SCF).")
    p.add_argument("--material", required=True, help="data set under datasets/ (e.g. mos2-bilayer)")
    p.add_argument("--datasets", default="datasets")
    p.add_argument("--frames", nargs="*", default=None, help="frame ids (default: every ok frame with a "
                                                             "Hamiltonian and no vacuum level yet)")
    p.add_argument("--kmesh", type=int, default=None, help="SCF k-mesh n×n×1 (default: the frame's own)")
    p.add_argument("--np", type=int, default=2, dest="nprocs")
    p.add_argument("--nk", type=int, default=2)
    p.add_argument("--scratch", default="scratch/dft/vacuum")
    p.add_argument("--force", action="store_true", help="recompute frames that already have a vacuum level")
    args = p.parse_args(argv)

    root = Path(args.datasets) / args.material / "frames"
    if not root.is_dir():
        print(f"no frames under {root}", file=sys.stderr)
        return 2
    todo = []
    for d in sorted(root.iterdir()):
        if args.frames is not None and d.name not in args.frames:
            continue
        meta = json.loads((d / "meta.json").read_text())
        has_h = (d / "wannier90_hr.dat.gz").exists() or (d / "wannier90_hr.dat").exists()
        if meta.get("status") != "ok" or (args.frames is None and not has_h):
            continue
        if "vacuum_level_eV" in meta and not args.force:
            continue
        todo.append(d)
    runner = Runner(nprocs=args.nprocs, npools=min(args.nk, args.nprocs))
    print(f"{len(todo)} frame(s) to do: {' '.join(d.name for d in todo)}", flush=True)
    for i, d in enumerate(todo, 1):
        out = backfill_frame(d, Path(args.scratch), runner, args.kmesh)
        print(f"[{i}/{len(todo)}] {d.name}: vacuum level {out['vacuum_level_eV']:.4f} eV (spread "
              f"{out['vacuum_spread_eV'] * 1e3:.1f} meV), rerun E_F {out['scf_fermi_level_eV']:.4f} vs frame "
              f"{out['frame_fermi_level_eV']:.4f} eV, {out['timings_s']['total']:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
