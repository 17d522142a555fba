"""Training structures displaced along a model's zone-boundary phonons (flexural ZA/ZO and the other low modes of
AB bilayer graphene at M and K), for SCF-only DFT frames.

    python scripts/phonon_mode_frames.py --out scratch/flexural.extxyz          # seconds
    OMP_NUM_THREADS=1 nice -n 10 wannierml dft scratch/flexural.extxyz --material graphene-bilayer --scf-only \
        --prefix zbmode --dataset-dir datasets/graphene-bilayer

Why: the DFT finite-displacement check (``benchmarks/phonon_dispersion_dft.py``) puts the shipped model's ZA/ZO
branch at the zone boundary at about half the DFT frequency (K: 271–333 against 540 cm⁻¹), the softness behind its
rippling MD; no 4-atom frame holds a zone-boundary flexural wave, and MD snapshots hold them only mixed with
everything else (the round-1/2 models, trained on such snapshots and on A1'(K) frames, are already close at M and K).

What: the workflow's reference AB bilayer (``0000-refAB`` geometry) on the commensurate supercell of q (M: 2×2,
K: √3×√3); the model's modes at q (``elph.phonons.modes_at_q``, float64); for each q, one structure along the real
part of the lowest mode's Bloch pattern (``elph.frozen.real_pattern``, max displacement ``--amplitude``) and
``--mixtures`` structures with random superpositions of the ``--modes`` lowest modes (each real pattern scaled to
max ``--amplitude``, random weights normalised so the largest atomic displacement is ``--amplitude``; 0.05 Å is about
the 300 K rms amplitude of a 475 cm⁻¹ mode). Deterministic from ``--seed``. The phonon-check structures (0.02 Å
single-atom Cartesian displacements) are never produced here.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

QPOINTS = {"M": [0.5, 0.0, 0.0], "K": [1 / 3, 1 / 3, 0.0]}


def reference_cell():
    from ase_wannierml.dft.materials import get_material
    from ase_wannierml.dft.sampling import reference_structure

    return reference_structure(get_material("graphene-bilayer"))


def structures(model: str, amplitude: float, n_modes: int, mixtures: int, seed: int) -> list:
    import torch

    from ase_wannierml import WannierMLCalculator
    from ase_wannierml.elph.coupling import mode_patterns
    from ase_wannierml.elph.frozen import real_pattern
    from ase_wannierml.elph.phonons import commensurate_supercell, make_supercell, modes_at_q

    if not (0 < amplitude <= 0.2):      # also refuses NaN
        raise ValueError(f"--amplitude must be in (0, 0.2] Å, got {amplitude}")
    if not 1 <= n_modes <= 3 * 4:
        raise ValueError(f"--modes must be in [1, 12] (the AB bilayer cell has 12 modes at each q), got {n_modes}")
    if mixtures < 0:
        raise ValueError(f"--mixtures must be >= 0, got {mixtures}")
    calc = WannierMLCalculator(model, dtype=torch.float64)
    atoms = reference_cell()
    masses = np.asarray(atoms.get_masses(), float)
    rng = np.random.default_rng(seed)
    images = []
    for name, q in QPOINTS.items():
        P = commensurate_supercell(q)
        sc = make_supercell(atoms, P)
        freq, e = modes_at_q(atoms, calc, q, supercell=P)
        order = np.argsort(freq)[:n_modes]
        pats = [real_pattern(mode_patterns(sc, q, e[nu:nu + 1], masses)[0])[0] for nu in order]
        combos = [("lowest mode", np.eye(len(pats))[0])]
        combos += [("mixture", rng.standard_normal(len(pats))) for _ in range(mixtures)]
        for label, w in combos:
            disp = sum(wi * p for wi, p in zip(w, pats))
            largest = np.linalg.norm(disp, axis=1).max()
            if not np.isfinite(largest) or largest < 1e-12:
                raise ValueError(f"{name}: the {label} pattern vanishes (weights {np.round(w, 3).tolist()})")
            disp *= amplitude / largest
            a = sc.atoms.copy()
            a.positions += disp
            a.info.update({"q_name": name, "pattern": label, "amplitude_A": amplitude,
                           "model_freq_cm": ",".join(f"{freq[nu]:.1f}" for nu in order),
                           "weights": ",".join(f"{x:.3f}" for x in w), "source": "scripts/phonon_mode_frames.py"})
            images.append(a)
        print(f"{name}: {len(sc.atoms)} atoms, model's lowest {n_modes} modes "
              f"{np.round(freq[order], 1).tolist()} cm⁻¹, {1 + mixtures} structures")
    return images


def main(argv: list[str] | None = None) -> int:
    from ase.io import write

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True, help="extxyz to write")
    ap.add_argument("--model", default="graphene-bilayer", help="shipped name or .pt whose modes are used")
    ap.add_argument("--amplitude", type=float, default=0.05, help="largest atomic displacement, Å")
    ap.add_argument("--modes", type=int, default=6, help="lowest modes mixed at each q")
    ap.add_argument("--mixtures", type=int, default=2, help="random superpositions per q")
    ap.add_argument("--seed", type=int, default=20261203)
    args = ap.parse_args(argv)
    images = structures(args.model, args.amplitude, args.modes, args.mixtures, args.seed)
    from ase_wannierml.cli import atomic_output

    args.out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(args.out) as tmp:
        write(tmp, images, format="extxyz")
    print(f"wrote {len(images)} structures to {args.out}")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    sys.exit(main())
