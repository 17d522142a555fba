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
import sys
from pathlib import Path
from typing import Callable, Sequence


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


def _load(args: argparse.Namespace):
    from ase.io import read

    from ase_wannierml.calculator import WannierMLCalculator

    atoms = read(args.structure, index=args.index)
    atoms.calc = WannierMLCalculator(args.model)
    return atoms


def _relax(args: argparse.Namespace) -> int:
    from ase.io import write

    from ase_wannierml.relaxation import relax

    atoms = _load(args)
    traj = args.trajectory or str(Path(args.output).with_suffix(".traj"))
    result = relax(atoms, fmax=args.fmax, cell=args.cell, smax=args.smax, optimizer=args.optimizer,
                   steps=args.steps, trajectory=traj)
    write(args.output, atoms)
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
    traj = Trajectory(args.output, "w", atoms)
    dyn.attach(traj.write, interval=args.interval)

    def report() -> None:
        epot, ekin = atoms.get_potential_energy(), atoms.get_kinetic_energy()
        print(f"step {dyn.nsteps:6d}  Epot {epot:.6f}  Etot {epot + ekin:.6f} eV  T {atoms.get_temperature():.1f} K",
              flush=True)

    dyn.attach(report, interval=args.interval)
    dyn.run(args.steps)
    print(f"wrote {args.output}")
    return 0


def _bands(args: argparse.Namespace) -> int:
    import matplotlib

    matplotlib.use("Agg")
    atoms = _load(args)
    from ase_wannierml.plotting import plot_bands

    bs = atoms.calc.get_band_structure(path=args.path, npoints=args.npoints, num=args.num)
    plot_bands(bs, emin=args.emin, emax=args.emax, points=args.num is not None, filename=args.output)
    print(f"E_F = {bs.reference:.4f} eV (this structure's, from its electron count; plotted E − E_F); "
          f"wrote {args.output}")
    return 0


def _dos(args: argparse.Namespace) -> int:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    atoms = _load(args)
    dos = atoms.calc.get_dos(kpts=tuple(args.kpts) if args.kpts else None, width=args.width, method=args.method)
    ef = atoms.calc.get_fermi_level()
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.plot(dos.get_energies() - ef, dos.get_weights())
    ax.set_xlim(args.emin, args.emax)
    ax.set_xlabel("E − E_F (eV)")
    ax.set_ylabel("DOS (states/eV/cell)")
    fig.tight_layout()
    fig.savefig(args.output, dpi=150)
    print(f"E_F = {ef:.4f} eV; wrote {args.output}")
    return 0


def _export(args: argparse.Namespace) -> int:
    atoms = _load(args)
    tb = atoms.calc.get_hamiltonian()
    hr, centres = f"{args.output}_hr.dat", f"{args.output}_centres.xyz"
    tb.write_wannier90(hr)
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
    return func(args)


if __name__ == "__main__":
    sys.exit(main())
