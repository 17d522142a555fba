"""Interlayer binding curve of the reference bilayer from an ML model next to the stored DFT curve.

    python scripts/model_binding.py --material graphene-bilayer --model graphene-bilayer

The DFT points come from ``datasets/<material>/binding_dft.json`` (``python -m ase_wannierml.dft.binding``); the
model's curve is computed at the same gaps (Å) in the same cell, plus the gap of the model-relaxed bilayer.
Energies in meV/atom.
"""
from __future__ import annotations

import argparse
import json
import math
import sys

import torch

from ase_wannierml import load_model
from ase_wannierml.calculator import WannierMLCalculator
from ase_wannierml.dft import binding
from ase_wannierml.dft.materials import get_material


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--material", default="graphene-bilayer")
    p.add_argument("--model", default="graphene-bilayer", help="pretrained name or model file")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default: %(default)s)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    stored = binding.stored_dft_curve(args.material)
    if stored is None:
        print(f"no DFT curve for {args.material}: run python -m ase_wannierml.dft.binding --material "
              f"{args.material} first", file=sys.stderr)
        return 2
    model = load_model(args.model, dtype=torch.float64)
    m = binding.calculator_curve(lambda: WannierMLCalculator(model), get_material(args.material), stored["gaps"],
                                 stored["separation"], stored["extra_vacuum"])
    dft = stored["dft"]
    print(f"DFT:   gap {dft['equilibrium_gap_A']:.3f} Å, E_b {dft['binding_energy_meV_per_atom']:.2f} meV/atom")
    print(f"model: parabola gap {m['equilibrium_gap_A']:.3f} Å, E_b {m['binding_energy_meV_per_atom']:.2f} "
          f"meV/atom; relaxed gap {m['relaxed_gap_A']:.3f} Å, E_b {m['relaxed_binding_energy_meV_per_atom']:.2f}")
    print(f"{'gap (Å)':>8s} {'DFT':>9s} {'model':>9s}  (meV/atom)")
    for k, v in dft["curve_meV_per_atom"].items():
        print(f"{k:>8s} {v:9.2f} {m['curve_meV_per_atom'].get(k, math.nan):9.2f}")
    print(json.dumps({"dft": dft, "model": m}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
