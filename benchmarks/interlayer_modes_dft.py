"""Interlayer shear and breathing modes of AB bilayer graphene at Γ from rigid-layer displacements: DFT with the
real-space-grid ("egg-box") noise averaged out, against models.

    python benchmarks/interlayer_modes_dft.py structures            # -> scratch/interlayer_modes/rigid_layers.extxyz
    OMP_NUM_THREADS=1 nice -n 10 wannierml dft scratch/interlayer_modes/rigid_layers.extxyz \
        --material datasets/graphene-bilayer-noise/graphene-bilayer-ecutrho480.yaml --scf-only --prefix rigid480 \
        --dataset-dir datasets/graphene-bilayer-noise --ranks 1      # 28 SCF frames, ~20 min on 2 cores
    python benchmarks/interlayer_modes_dft.py compare --model round4=benchmarks/results/active_graphene/graphene-bilayer-round4.pt \
        round6=graphene-bilayer round7=benchmarks/results/active_graphene/graphene-bilayer-round7.pt
    # the same structures at the workflow's 240 Ry: --prefix rigid240 --out .../interlayer_modes_graphene_240.json

Why: a rigid translation of the AB cell at the workflow's ecutrho (240 Ry) moves the mean z force per layer by up to
8 meV/Å and the energy by 0.23 meV/atom (``dft_noise.py``), the size of the interlayer restoring forces themselves
(a 0.08 Å slide: ~0.8 meV/Å). The finite-displacement check (``phonon_dispersion_dft.py``: shear 29.0 cm⁻¹,
breathing 123 cm⁻¹) is exposed to that noise. Here: ecutrho 480 Ry (3–16× less noise, 1.3× the cost), and every
structure is computed at ``len(TRANSLATIONS)`` rigid translations whose results are averaged; their spread is the
error bar.

At Γ the interlayer modes move each layer rigidly: for a relative slide u (top layer +u, bottom fixed) the mean force
per top-layer atom is F = −K u, and ω = sqrt(2K/m) (two equal layers, m = the carbon mass). K from central
differences at ±``SLIDE`` Å along x and y (shear: two estimates; isotropic at AB by symmetry) and ±``GAP_STEP`` Å of
the gap (breathing). Prints a table, writes JSON.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from ase_wannierml.cli import atomic_output, atomic_write_text

ROOT = Path(__file__).resolve().parents[1]
SLIDE, GAP_STEP = 0.05, 0.03                    # Å
TRANSLATIONS = ((0.0, 0.0, 0.0), (0.031, 0.047, 0.019), (0.083, 0.012, 0.061), (0.052, 0.076, 0.088))   # Å
DISPLACEMENTS = {"x+": (SLIDE, 0, 0), "x-": (-SLIDE, 0, 0), "y+": (0, SLIDE, 0), "y-": (0, -SLIDE, 0),
                 "z+": (0, 0, GAP_STEP), "z-": (0, 0, -GAP_STEP), "0": (0, 0, 0)}
OUT_DIR = ROOT / "scratch/interlayer_modes"
NOISE_DIR = ROOT / "datasets/graphene-bilayer-noise"
PREFIX = "rigid480"


def reference():
    from ase_wannierml.dft.materials import get_material
    from ase_wannierml.dft.sampling import reference_structure

    return reference_structure(get_material("graphene-bilayer"))


def displaced(name: str, translation):
    atoms = reference()
    top = np.asarray(atoms.arrays["layer"]) == 1
    atoms.positions[top] += np.array(DISPLACEMENTS[name])
    atoms.positions += np.array(translation)
    atoms.info.update({"displacement": name, "translation_A": ",".join(f"{t:.3f}" for t in translation)})
    return atoms


def write_structures() -> None:
    from ase.io import write

    OUT_DIR.mkdir(parents=True, exist_ok=True)
    images = [displaced(name, t) for t in TRANSLATIONS for name in DISPLACEMENTS]
    with atomic_output(OUT_DIR / "rigid_layers.extxyz") as tmp:
        write(tmp, images, format="extxyz")
    print(f"{len(images)} structures -> {OUT_DIR / 'rigid_layers.extxyz'}")


def frequencies(top_force: dict[str, np.ndarray]) -> dict:
    """top_force[name] = mean force per top-layer atom (3,) eV/Å → K (eV/Å² per atom) and ω (cm⁻¹)."""
    from ase import units

    mass = 12.011 * units._amu
    out = {}
    for mode, (plus, minus, comp, step) in {"shear_x": ("x+", "x-", 0, SLIDE), "shear_y": ("y+", "y-", 1, SLIDE),
                                            "breathing": ("z+", "z-", 2, GAP_STEP)}.items():
        k = -(top_force[plus][comp] - top_force[minus][comp]) / (2 * step)
        # K < 0 (an unstable direction) is reported as a negative ω, the usual sign for imaginary modes
        omega = np.sign(k) * np.sqrt(abs(2 * k) * units._e * 1e20 / mass) / (2 * np.pi * units._c * 100)
        out[mode] = {"K_eV_A2_per_atom": float(k), "omega_cm": float(omega)}
    return out


def dft_forces(prefix: str = PREFIX) -> tuple[dict, dict, float]:
    """Per displacement: the (translation, mean top-layer force (3,) eV/Å, energy eV) of every frame; the
    translation-averaged force; and the frames' ecutrho (Ry)."""

    from ase_wannierml.training.frames import frame_status, load_frame_dir

    per = {name: [] for name in DISPLACEMENTS}
    ecutrho = float("nan")
    for d in sorted(NOISE_DIR.glob(f"frames/{prefix}-*")):
        if frame_status(d)[0] != "ok":
            continue
        meta = json.loads((d / "meta.json").read_text())
        info = meta["sampling"]["notes"]["source_info"]
        ecutrho = float(meta["material_spec"]["dft"]["ecutrho"])
        frame = load_frame_dir(d)
        top = np.asarray(frame.atoms.arrays["layer"]) == 1
        shift = info["translation_A"]                      # ASE may parse "0.000,0.000,0.000" into numbers
        shift = ",".join(f"{float(t):.3f}" for t in (shift if isinstance(shift, list) else str(shift).split(",")))
        per[str(info["displacement"])].append((shift, frame.forces[top].mean(0), frame.energy))
    return per, {name: np.mean([f for _, f, _ in v], axis=0) for name, v in per.items() if v}, ecutrho


def compare(models: list[str], out: Path, prefix: str = PREFIX) -> dict:
    per, mean, ecutrho = dft_forces(prefix)
    if len(mean) < len(DISPLACEMENTS):
        raise SystemExit(f"missing DFT frames: have {sorted(mean)}, need {sorted(DISPLACEMENTS)} "
                         f"(run the structures through `wannierml dft`, see the module docstring)")
    result = {"slide_A": SLIDE, "gap_step_A": GAP_STEP, "frames": prefix, "ecutrho_Ry": ecutrho,
              "translations": len(TRANSLATIONS),
              "dft": frequencies(mean), "dft_per_translation": {}, "models": {}}
    counts = {len(v) for v in per.values()}
    for t in sorted({t for v in per.values() for t, _, _ in v}):
        forces = {name: next((f for tt, f, _ in v if tt == t), None) for name, v in per.items()}
        if all(f is not None for f in forces.values()):
            result["dft_per_translation"][t] = frequencies(forces)
    import torch

    from ase_wannierml import WannierMLCalculator, load_model

    torch.set_num_threads(1)
    for spec in models:
        tag, _, name = spec.partition("=")
        calc = WannierMLCalculator(load_model(name or tag), dtype=torch.float64)
        forces = {}
        for disp in DISPLACEMENTS:
            atoms = displaced(disp, (0.0, 0.0, 0.0))
            atoms.calc = calc
            top = np.asarray(atoms.arrays["layer"]) == 1
            forces[disp] = atoms.get_forces()[top].mean(0)
        result["models"][tag] = {"model": name or tag, **frequencies(forces)}
    spread = {mode: np.ptp([v[mode]["omega_cm"] for v in result["dft_per_translation"].values()])
              for mode in ("shear_x", "shear_y", "breathing")} if result["dft_per_translation"] else {}
    result["dft_spread_over_translations_cm"] = {k: float(v) for k, v in spread.items()}
    print(f"frames per displacement: {sorted(counts)}; ω in cm⁻¹ (K in meV/Å² per atom)")
    print(f"{'':28s} {'shear x':>16s} {'shear y':>16s} {'breathing':>16s}")
    rows = [(f"DFT {ecutrho:.0f} Ry, mean", result["dft"])] + \
        [(f"DFT translation {t}", v) for t, v in result["dft_per_translation"].items()] + \
        [(tag, v) for tag, v in result["models"].items()]
    for label, v in rows:
        print(f"{label[:28]:28s} " + " ".join(f"{v[m]['omega_cm']:7.1f} ({1e3 * v[m]['K_eV_A2_per_atom']:6.1f})"
                                              for m in ("shear_x", "shear_y", "breathing")))
    atomic_write_text(out, json.dumps(result, indent=1))
    print(f"-> {out}")
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("command", choices=["structures", "compare"])
    p.add_argument("--model", nargs="*", default=["round6=graphene-bilayer"], help="tag=name-or-file")
    p.add_argument("--prefix", default=PREFIX, help="frame-id prefix of the DFT frames (rigid480, or rigid240: the "
                   "same structures at the workflow's 240 Ry)")
    p.add_argument("--out", default=str(ROOT / "benchmarks/results/interlayer_modes_graphene.json"))
    args = p.parse_args(argv)
    if args.command == "structures":
        write_structures()
    else:
        compare(args.model, Path(args.out), args.prefix)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
