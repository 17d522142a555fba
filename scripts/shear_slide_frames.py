"""Small rigid slides and gap changes of AB bilayer graphene around the reference geometry, for SCF-only DFT frames
that pin down the interlayer shear and breathing force constants.

    python scripts/shear_slide_frames.py --out scratch/slides.extxyz          # instant
    OMP_NUM_THREADS=1 nice -n 10 wannierml dft scratch/slides.extxyz --material graphene-bilayer --scf-only \
        --prefix slide --dataset-dir datasets/graphene-bilayer

Why: round 6's shear mode at Γ is 18.3 cm⁻¹ against DFT's 29.0 (``phonon_dispersion_dft_round6.json``), its
breathing mode 107 against 123. The stacking grid (``sampling.stacking_grid``) has no slide smaller than a quarter of
the AA–AB path (0.36 Å), so nothing in the data fixes the curvature of the stacking energy at AB. The restoring
force of a 0.1 Å slide is only a few meV/Å per atom; these frames put that signal in the training set.

What: the reference AB cell (``0000-refAB``, gap 3.35 Å); the top layer slid rigidly by each of ``--slides`` (Å) along
three in-plane directions 120° apart plus one perpendicular to them (the shear mode is isotropic at AB only to
harmonic order, so several directions also sample the anharmonic part), and the rigid AB cell at each of ``--gaps``
(Å). Deterministic; every structure records its slide vector and gap in ``atoms.info``.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

DIRECTIONS_DEG = (90.0, 210.0, 330.0, 0.0)


def structures(slides: list[float], gaps: list[float]) -> list:
    """Rigidly slid / separated AB bilayers (ASE Atoms, positions in Å)."""
    from ase_wannierml.dft.materials import get_material
    from ase_wannierml.dft.sampling import reference_structure

    bad = [s for s in slides if not (np.isfinite(s) and 0 < s <= 0.5)]
    if bad:
        raise ValueError(f"--slides must be in (0, 0.5] Å, got {bad}")
    bad = [g for g in gaps if not (np.isfinite(g) and 2.5 <= g <= 5.0)]
    if bad:
        raise ValueError(f"--gaps must be in [2.5, 5] Å, got {bad}")
    ref = reference_structure(get_material("graphene-bilayer"))
    layer = np.asarray(ref.arrays["layer"])
    top = layer == layer.max()
    ref_gap = ref.positions[top, 2].mean() - ref.positions[~top, 2].mean()
    images = []
    for s in slides:
        for deg in DIRECTIONS_DEG:
            a = ref.copy()
            v = s * np.array([np.cos(np.radians(deg)), np.sin(np.radians(deg)), 0.0])
            a.positions[top] += v
            a.info.update({"slide_A": ",".join(f"{x:.4f}" for x in v[:2]), "gap_A": round(float(ref_gap), 4),
                           "source": "scripts/shear_slide_frames.py"})
            images.append(a)
    for g in gaps:
        a = ref.copy()
        a.positions[top, 2] += g - ref_gap
        a.info.update({"slide_A": "0.0000,0.0000", "gap_A": g, "source": "scripts/shear_slide_frames.py"})
        images.append(a)
    return images


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="extxyz to write (must not exist)")
    p.add_argument("--slides", type=float, nargs="+", default=[0.08, 0.16], help="slide lengths, Å")
    p.add_argument("--gaps", type=float, nargs="*", default=[3.30, 3.42], help="extra AB gaps, Å")
    args = p.parse_args(argv)
    out = Path(args.out)
    if out.exists():
        print(f"error: {out} exists; choose a new file (frame ids come from the structures)", file=sys.stderr)
        return 2
    from ase.io import write

    images = structures(args.slides, args.gaps)
    from ase_wannierml.cli import atomic_output

    with atomic_output(out) as tmp:
        write(tmp, images, format="extxyz")
    print(f"{len(images)} structures -> {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
