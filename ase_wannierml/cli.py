"""The ``wannierml`` command: everyday jobs on any ASE-readable structure.

    wannierml relax  structure.xyz [--model NAME] [--fmax 0.01] [--cell] [-o relaxed.extxyz]
    wannierml md     structure.xyz [--temperature 300] [--steps 1000] [--timestep 1.0] [--ensemble nve|langevin|nvt]
    wannierml bands  structure.xyz [--path GKMG] [--npoints 200] [--num 8] [--emin -2 --emax 2] [-o bands.png]
    wannierml dos    structure.xyz [--kpts 12 12 1] [--width 0.02] [--method auto|exact|kpm] [-o dos.png]
    wannierml export structure.xyz [-o prefix]         # writes prefix_hr.dat and prefix_centres.xyz
    wannierml train  config.yaml [--resume]
    wannierml evaluate model.pt dataset_dir
    wannierml dft    structures.extxyz --material NAME|file.yaml --dataset-dir DIR [--scf-only]   # QE frames

Every command but ``dft`` takes ``--threads N`` (default: all cores, or 1 when other jobs keep them busy). Plots
show E − E_F, with E_F this structure's Fermi level from its electron count. Units: eV, Å, fs for time steps, K
for temperatures.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import sys
from pathlib import Path
from typing import Callable, Iterator, Sequence

#: Largest accepted MD time step (fs): beyond it atoms fly apart within a few steps (the usual range is 0.5-2 fs).
MAX_TIMESTEP_FS = 10.0


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("structure", help="any ASE-readable structure file (extxyz, POSCAR, cif, ...)")
    p.add_argument("--model", default="graphene-bilayer", help="pretrained name or model file (default: %(default)s)")
    p.add_argument("--index", default="-1", help="frame of a trajectory file to read (default: last)")
    add_threads_option(p)


def add_threads_option(p: argparse.ArgumentParser) -> None:
    """``--threads N`` (torch + BLAS threads); without it, 1 thread when the machine is busy (``threads.py``)."""
    p.add_argument("--threads", type=int, default=None,
                   help="torch/BLAS threads (default: all cores, or 1 when other jobs keep the cores busy)")


def apply_threads(args: argparse.Namespace) -> None:
    """Apply ``--threads`` (or the safe default) before any model runs."""
    from ase_wannierml.threads import safe_default_threads, set_threads

    if getattr(args, "threads", None) is not None:
        set_threads(args.threads)
    else:
        safe_default_threads()


class OutputError(ValueError):
    """An output file that would destroy an input or be written in the wrong format (exit code 2)."""


@contextlib.contextmanager
def atomic_output(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` (same suffix, so formats are inferred alike); on success it replaces
    ``path`` in one step (``os.replace``), on any exception or Ctrl-C it is deleted and ``path`` is untouched."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp{path.suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically (temporary file + ``os.replace``)."""
    with atomic_output(path) as tmp:
        tmp.write_text(text)


def check_outputs(inputs: Sequence[str | Path], outputs: dict[str, str | Path]) -> None:
    """OutputError if an output (``{what: path}``) is an input file or two outputs are the same file."""
    def key(p: str | Path) -> str:
        return os.path.realpath(os.path.expanduser(str(p)))

    ins = {key(p): str(p) for p in inputs}
    seen: dict[str, str] = {}
    for what, out in outputs.items():
        k = key(out)
        if k in ins:
            raise OutputError(f"the {what} {out} is the input file {ins[k]}: it would be overwritten; "
                              "choose another name")
        if k in seen:
            raise OutputError(f"the {what} and the {seen[k]} are the same file {out}; choose different names")
        seen[k] = what


def _structure_format(path: str | Path, frames: bool) -> str:
    """ASE format of an output path from its name; OutputError for unknown names or, with ``frames``, formats
    that hold one structure only."""
    from ase.io.formats import filetype, ioformats

    try:
        fmt = filetype(str(path), read=False)
    except Exception as err:   # ASE raises several kinds for unknown names
        raise OutputError(f"cannot tell the file format of {path} from its name ({err}); use e.g. .extxyz or .traj") \
            from None
    if frames and ioformats[fmt].single:
        raise OutputError(f"{path}: format {fmt!r} holds one structure; a trajectory needs .traj or .extxyz")
    return fmt


def _load(args: argparse.Namespace):
    from ase.io import read

    from ase_wannierml.calculator import WannierMLCalculator

    atoms = read(args.structure, index=args.index)
    atoms.calc = WannierMLCalculator(args.model)
    return atoms


def _relax(args: argparse.Namespace) -> int:
    from ase.io import write

    from ase_wannierml.relaxation import relax

    traj = args.trajectory or str(Path(args.output).with_suffix(".traj"))
    if args.trajectory is None and Path(traj) == Path(args.output):
        traj = str(Path(args.output).with_name(Path(args.output).stem + "_steps.traj"))
    check_outputs([args.structure], {"output (-o)": args.output, "trajectory (--trajectory, default: -o with "
                                     ".traj)": traj})
    fmt = _structure_format(args.output, frames=False)
    if Path(traj).suffix != ".traj":
        raise OutputError(f"--trajectory {traj}: the optimiser writes ASE trajectories; use a .traj name")
    atoms = _load(args)
    traj_tmp = Path(traj).with_name(f".{Path(traj).name}.{os.getpid()}.tmp.traj")
    try:
        result = relax(atoms, fmax=args.fmax, cell=args.cell, smax=args.smax, optimizer=args.optimizer,
                       steps=args.steps, trajectory=str(traj_tmp))
    finally:                   # also on Ctrl-C: the steps so far (whole frames) under the final name
        if traj_tmp.exists():
            os.replace(traj_tmp, traj)
    with atomic_output(args.output) as out_tmp:
        write(out_tmp, atoms, format=fmt)
    print(f"{'converged' if result.converged else 'NOT converged'} in {result.steps} steps "
          f"({result.force_calls} force calls), {result.wall_s:.1f} s; E = {result.energy:.6f} eV; "
          f"max |F| = {result.fmax:.4f} eV/Å; wrote {args.output} and {traj}")
    return 0 if result.converged else 1


def _md(args: argparse.Namespace) -> int:
    import numpy as np
    from ase import units
    from ase.io import Trajectory
    from ase.md.langevin import Langevin
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution, Stationary
    from ase.md.verlet import VelocityVerlet

    if not (np.isfinite(args.timestep) and 0 < args.timestep <= MAX_TIMESTEP_FS):
        raise OutputError(f"--timestep {args.timestep} fs: must be > 0 and <= {MAX_TIMESTEP_FS} fs (atoms would fly "
                          "apart; 0.5-2 fs is usual)")
    if not (np.isfinite(args.temperature) and args.temperature >= 0):
        raise OutputError(f"--temperature {args.temperature} K: must be a finite number >= 0")
    if args.steps < 0 or args.interval < 1:
        raise OutputError(f"--steps must be >= 0 and --interval >= 1, got {args.steps} and {args.interval}")
    check_outputs([args.structure], {"output (-o)": args.output})
    fmt = _structure_format(args.output, frames=True)
    from ase.io.formats import ioformats

    if fmt != "traj" and ioformats[fmt].isbinary:
        raise OutputError(f"{args.output}: write MD frames as .traj (ASE trajectory) or a text format (.extxyz)")
    atoms = _load(args)
    MaxwellBoltzmannDistribution(atoms, temperature_K=args.temperature, rng=np.random.default_rng(0))
    Stationary(atoms)
    dt = args.timestep * units.fs
    if args.ensemble == "nve":
        dyn = VelocityVerlet(atoms, dt)
    elif args.ensemble == "langevin":
        dyn = Langevin(atoms, dt, temperature_K=args.temperature, friction=0.01 / units.fs)
    else:
        from ase.md.nose_hoover_chain import NoseHooverChainNVT

        dyn = NoseHooverChainNVT(atoms, dt, temperature_K=args.temperature, tdamp=100 * dt)

    def report() -> None:
        epot, ekin = atoms.get_potential_energy(), atoms.get_kinetic_energy()
        print(f"step {dyn.nsteps:6d}  Epot {epot:.6f}  Etot {epot + ekin:.6f} eV  T {atoms.get_temperature():.1f} K",
              flush=True)

    out = Path(args.output)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp{out.suffix}")
    try:
        if fmt == "traj":
            writer = Trajectory(str(tmp), "w", atoms)
            dyn.attach(writer.write, interval=args.interval)
        else:                    # text formats: each frame in one write call, so the file holds whole frames only
            import io

            from ase.io import write

            writer = open(tmp, "w")

            def write_frame() -> None:
                buf = io.StringIO()
                write(buf, atoms, format=fmt)
                writer.write(buf.getvalue())
                writer.flush()

            dyn.attach(write_frame, interval=args.interval)
        dyn.attach(report, interval=args.interval)
        try:
            dyn.run(args.steps)
        finally:                 # also on Ctrl-C: keep the frames written so far, under the final name
            writer.close()
            os.replace(tmp, out)
    finally:
        if tmp.exists():
            tmp.unlink()
    print(f"wrote {args.output}")
    return 0


def _bands(args: argparse.Namespace) -> int:
    import matplotlib

    matplotlib.use("Agg")
    check_outputs([args.structure], {"output (-o)": args.output})
    atoms = _load(args)
    from ase_wannierml.plotting import plot_bands

    bs = atoms.calc.get_band_structure(path=args.path, npoints=args.npoints, num=args.num)
    with atomic_output(args.output) as tmp:
        plot_bands(bs, emin=args.emin, emax=args.emax, points=args.num is not None, filename=str(tmp))
    print(f"E_F = {bs.reference:.4f} eV (this structure's, from its electron count; plotted E − E_F); "
          f"wrote {args.output}")
    return 0


def _dos(args: argparse.Namespace) -> int:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    check_outputs([args.structure], {"output (-o)": args.output})
    atoms = _load(args)
    dos = atoms.calc.get_dos(kpts=tuple(args.kpts) if args.kpts else None, width=args.width, method=args.method)
    ef = atoms.calc.get_fermi_level()
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.plot(dos.get_energies() - ef, dos.get_weights())
    ax.set_xlim(args.emin, args.emax)
    ax.set_xlabel("E − E_F (eV)")
    ax.set_ylabel("DOS (states/eV/cell)")
    fig.tight_layout()
    with atomic_output(args.output) as tmp:
        fig.savefig(tmp, dpi=150)
    print(f"E_F = {ef:.4f} eV; wrote {args.output}")
    return 0


def _export(args: argparse.Namespace) -> int:
    atoms = _load(args)
    tb = atoms.calc.get_hamiltonian()
    hr, centres = f"{args.output}_hr.dat", f"{args.output}_centres.xyz"
    check_outputs([args.structure], {"Hamiltonian file": hr, "centres file": centres})
    tb.write_wannier90(hr)         # atomic, with its companions (<prefix>_centres.xyz, .win, _tb.dat)
    tb.write_centres(centres)
    print(f"wrote {hr} and {centres} ({tb.num_orbitals} orbitals, {tb.nnz} elements, eV)")
    return 0


def _delegate(command: str, argv: Sequence[str]) -> int:
    """``train`` and ``evaluate`` have their own parsers (and ``--help``) in ``ase_wannierml.training.cli``."""
    if command == "dft":                   # no torch needed
        from ase_wannierml.dft import cli as dft_cli

        return int(dft_cli.main(list(argv)) or 0)
    if command == "active":
        from ase_wannierml.active.loop import main as active_main

        return int(active_main(list(argv)) or 0)
    from ase_wannierml.training import cli as training_cli

    main_func = {"train": training_cli.train_main, "evaluate": training_cli.evaluate_main}[command]
    return int(main_func(list(argv)) or 0)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``wannierml`` command."""
    from ase_wannierml.tb.kmesh import DOS_WIDTH

    parser = argparse.ArgumentParser(prog="wannierml", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("relax", help="relax positions (and the in-plane cell with --cell)")
    _add_common(p)
    p.add_argument("--fmax", type=float, default=0.01, help="force threshold, eV/Å")
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--cell", action="store_true",
                   help="also relax the cell (in-plane only when the cell has vacuum along c)")
    p.add_argument("--smax", type=float, default=1e-4, help="stress threshold with --cell, eV/Å³ (precon)")
    p.add_argument("--optimizer", choices=["precon", "fire", "bfgs", "lbfgs"], default="precon",
                   help="precon: preconditioned L-BFGS (ase_wannierml.relaxation; fastest for large cells)")
    p.add_argument("--trajectory", default=None)
    p.add_argument("-o", "--output", default="relaxed.extxyz")
    p.set_defaults(func=_relax)

    p = sub.add_parser("md", help="molecular dynamics")
    _add_common(p)
    p.add_argument("--temperature", type=float, default=300.0, help="K")
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--timestep", type=float, default=1.0, help="fs")
    p.add_argument("--ensemble", choices=["nve", "langevin", "nvt"], default="nve")
    p.add_argument("--interval", type=int, default=10)
    p.add_argument("-o", "--output", default="md.traj")
    p.set_defaults(func=_md)

    p = sub.add_parser("bands", help="band structure plot (PNG)")
    _add_common(p)
    p.add_argument("--path", default=None, help="special-point string, e.g. GKMG (default: the cell's)")
    p.add_argument("--npoints", type=int, default=200)
    p.add_argument("--num", type=int, default=None, help="only the NUM bands nearest E_F (sparse solver)")
    p.add_argument("--emin", type=float, default=-2.0, help="lower limit of E − E_F, eV")
    p.add_argument("--emax", type=float, default=2.0, help="upper limit of E − E_F, eV")
    p.add_argument("-o", "--output", default="bands.png")
    p.set_defaults(func=_bands)

    p = sub.add_parser("dos", help="density of states plot (PNG)")
    _add_common(p)
    p.add_argument("--kpts", type=int, nargs=3, default=None)
    p.add_argument("--width", type=float, default=DOS_WIDTH, help="smearing, eV (default: %(default)s)")
    p.add_argument("--method", choices=["auto", "exact", "kpm"], default="auto")
    p.add_argument("--emin", type=float, default=-2.0, help="lower limit of E − E_F, eV")
    p.add_argument("--emax", type=float, default=2.0, help="upper limit of E − E_F, eV")
    p.add_argument("-o", "--output", default="dos.png")
    p.set_defaults(func=_dos)

    p = sub.add_parser("export", help="write the predicted Hamiltonian as Wannier90 _hr.dat")
    _add_common(p)
    p.add_argument("-o", "--output", default="wannierml", help="file prefix")
    p.set_defaults(func=_export)

    sub.add_parser("train", help="train a model from a YAML config (wannierml train --help)")
    sub.add_parser("evaluate", help="accuracy table of a model on a data set (wannierml evaluate --help)")
    sub.add_parser("dft", help="QE + Wannier90 frames for your structures on Dask (wannierml dft --help)")
    sub.add_parser("active", help="active learning from the committee's MD (wannierml active --help)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``wannierml`` command."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in ("train", "evaluate", "dft", "active"):
        return _delegate(argv[0], argv[1:])
    args = build_parser().parse_args(argv)
    apply_threads(args)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except OutputError as err:
        print(f"wannierml {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
