"""Interlayer (stacking / gap / slide) structures of AB bilayer graphene for SCF frames at ecutrho 480 Ry.

    python scripts/stacking_frames_480.py                       # -> scratch/stacking480/stacking480.extxyz
    OMP_NUM_THREADS=1 nice -n 10 wannierml dft scratch/stacking480/stacking480.extxyz \
        --material datasets/graphene-bilayer-noise/graphene-bilayer-ecutrho480.yaml --scf-only --prefix st480 \
        --dataset-dir datasets/graphene-bilayer

Why: at the workflow's 240 Ry the real-space grid moves a flat bilayer's energy by up to 0.23 meV/atom and its mean
z force per layer by up to 8 meV/Å under a rigid translation (``benchmarks/dft_noise.py``): as large as the interlayer
restoring forces. The 240 Ry gap-scan frames (``bc*``, ``bd*``) imply a breathing stiffness of ≈ 330 meV/Å² per atom
against 175 from the clean 480 Ry reference (docs/accuracy.md, session 16). These frames carry the same interlayer
information at 480 Ry (3–16× less noise), each structure at ``len(TRANSLATIONS)`` rigid translations so a model sees
the noise average. Train on them with ``data.forces_only: [st480-*]``: their total energies carry a constant offset
(≈ +0.2 meV/atom) against the 240 Ry frames.

Structures: the stacking-path / gap frames already in the data set (``s0*``, ``bc*``, ``bd*``, the AB/AA/SP
references), re-labelled, plus rigid slides of AB by 0.10 / 0.20 Å along x and y at gaps 3.30 / 3.45 Å. Not the
0.05 Å slides and 0.03 Å gap steps of ``benchmarks/interlayer_modes_dft.py``, which stay a held-out reference.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from ase import Atoms
from ase.io import read, write

from ase_wannierml.cli import atomic_output

ROOT = Path(__file__).resolve().parents[1]
FRAMES = ROOT / "datasets/graphene-bilayer/frames"
SOURCE_PATTERNS = ("000[012]-ref*", "s0[0-9][0-9]-scf-*", "bc0*-scf-*", "bd0*-scf-*")
TRANSLATIONS = ((0.0, 0.0, 0.0), (0.037, 0.061, 0.029))          # Å, rigid, whole cell
SLIDES = tuple((d * np.array(v), g) for g in (3.30, 3.45) for d in (0.10, 0.20) for v in ((1, 0, 0), (0, 1, 0)))


def _bare(atoms: Atoms, source: str) -> Atoms:
    """Positions, cell, pbc and layer labels only (no DFT labels of the 240 Ry frame)."""
    out = Atoms(atoms.get_chemical_symbols(), positions=atoms.positions, cell=atoms.cell, pbc=atoms.pbc)
    out.arrays["layer"] = np.asarray(atoms.arrays["layer"]).copy()
    out.info["source_frame"] = source
    return out


def slid_ab(slide: np.ndarray, gap: float) -> Atoms:
    """The AB reference at interlayer distance ``gap`` Å, top layer moved rigidly by ``slide`` (3,) Å."""
    from ase_wannierml.dft.materials import get_material
    from ase_wannierml.dft.sampling import reference_structure

    atoms = reference_structure(get_material("graphene-bilayer"))
    top = np.asarray(atoms.arrays["layer"]) == 1
    atoms.positions[top, 2] += gap - (atoms.positions[top, 2].mean() - atoms.positions[~top, 2].mean())
    atoms.positions[top] += slide
    out = _bare(atoms, "AB-slide")
    out.info["slide_A"] = ",".join(f"{s:.3f}" for s in slide)
    out.info["gap_A"] = float(gap)
    return out


def structures() -> list[Atoms]:
    base = []
    for pattern in SOURCE_PATTERNS:
        for d in sorted(FRAMES.glob(pattern)):
            base.append(_bare(read(d / "structure.extxyz"), d.name))
    base += [slid_ab(s, g) for s, g in SLIDES]
    out = []
    for t in TRANSLATIONS:
        for atoms in base:
            a = atoms.copy()
            a.positions += np.asarray(t)
            a.info["translation_A"] = ",".join(f"{x:.3f}" for x in t)
            out.append(a)
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=str(ROOT / "scratch/stacking480/stacking480.extxyz"))
    args = ap.parse_args(argv)
    images = structures()
    if not images:
        raise SystemExit(f"no source frames matching {SOURCE_PATTERNS} in {FRAMES}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(args.out) as tmp:
        write(tmp, images, format="extxyz")
    print(f"{len(images)} structures ({len(images) // len(TRANSLATIONS)} × {len(TRANSLATIONS)} translations) "
          f"-> {args.out}")


if __name__ == "__main__":
    main()
