"""Interlayer binding curve of a reference bilayer from DFT (the project's settings) and from any ASE calculator.

    python -m ase_wannierml.dft.binding --material graphene-bilayer [--gaps 3.2 3.3 3.4 3.5 3.6]
    python scripts/model_binding.py --material graphene-bilayer --model graphene-bilayer   # the ML model's curve

DFT: SCF energies (eV) of the rigid reference stacking (the material's first reference: AB graphene, 2H MoS2) at
the listed interlayer gaps (Å, between the facing atomic planes) and with the layers ``separation`` Å apart,
all in one cell whose c axis is ``extra_vacuum`` Å longer than the frames' (the separated layers keep the frames'
vacuum). Results go to ``datasets/<material>/binding_dft.json``; points already there are not recomputed, so an
interrupted run continues. Binding energy E_b(d) = (E(d) − E(separated)) / N_atoms in meV/atom; the equilibrium
gap and E_b there come from a parabola through the three lowest points.

``calculator_curve``: the same curve from an ASE calculator (e.g. the ML model; this module does not import it)
plus the gap of the calculator-relaxed bilayer (BFGS on positions, fmax 1e-3 eV/Å).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path
from typing import Callable

import numpy as np
from ase import Atoms
from ase.calculators.calculator import Calculator

from . import qe_input
from .codes import Runner, check_codes
from .materials import MaterialSpec, get_material
from .parse import parse_scf
from .sampling import build_structure, reference_frames
from .workflow import PREFIX

REPO = Path(__file__).resolve().parents[2]


def reference_structure(material: MaterialSpec, gap: float, extra_vacuum: float) -> Atoms:
    """The material's first reference stacking (rigid, unstrained) with interlayer ``gap`` (Å) in a cell
    ``extra_vacuum`` Å longer along c than the frames'."""
    params = dataclasses.replace(reference_frames(material)[0], gap=float(gap), frame_id=f"binding-{gap:.3f}")
    mat = dataclasses.replace(material, dft=dataclasses.replace(material.dft,
                                                                vacuum_c=material.dft.vacuum_c + extra_vacuum))
    return build_structure(mat, params)


def equilibrium(gaps: np.ndarray, e_b: np.ndarray) -> tuple[float, float]:
    """(gap, E_b) at the minimum of a parabola through the lowest point and its two neighbours."""
    order = np.argsort(gaps)
    g, e = np.asarray(gaps, float)[order], np.asarray(e_b, float)[order]
    i = int(np.clip(np.argmin(e), 1, len(g) - 2))
    c = np.polyfit(g[i - 1:i + 2], e[i - 1:i + 2], 2)
    if c[0] <= 0:
        return float(g[np.argmin(e)]), float(e.min())
    g0 = -c[1] / (2 * c[0])
    return float(g0), float(np.polyval(c, g0))


def dft_curve(material: MaterialSpec, gaps: list[float], separation: float, extra_vacuum: float,
              out_json: Path, scratch: Path, runner: Runner) -> dict:
    """Run (or reuse) the SCF points; returns the JSON dict written to ``out_json``."""
    check_codes()
    data = json.loads(out_json.read_text()) if out_json.is_file() else {}
    settings = {"material": material.name, "stacking": material.references[0][0], "extra_vacuum_A": extra_vacuum,
                "dft": material.to_dict()["dft"]}
    if data.get("settings") not in (None, settings):
        raise ValueError(f"{out_json} was computed with other settings; move it away to recompute")
    data["settings"] = settings
    data["separation_A"] = separation
    points = data.setdefault("energies_eV", {})
    n_scf = material.dft.kmesh_scf_1x1
    for gap in list(gaps) + [separation]:
        key = f"{gap:.3f}"
        if key in points:
            continue
        atoms = reference_structure(material, gap, extra_vacuum)
        work = scratch / material.name / f"binding-{key}"
        work.mkdir(parents=True, exist_ok=True)
        (work / "scf.in").write_text(qe_input.pw_input_text(atoms, material.dft, "scf", PREFIX,
                                                           kmesh=(n_scf, n_scf, 1)))
        dt = runner.pw("scf", "scf.in", work)
        points[key] = parse_scf(work / "scf.out")["energy"]
        data.setdefault("wall_s", {})[key] = round(dt, 1)
        data["n_atoms"] = len(atoms)
        tmp = out_json.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=1))
        tmp.replace(out_json)                                       # atomic: an interrupted run loses no point
        print(f"gap {key} Å: E = {points[key]:.6f} eV ({dt:.0f} s)", flush=True)
    return data


def summarize(energies: dict[str, float], n_atoms: int, separation: float) -> dict:
    """Binding curve (meV/atom) and its parabola minimum from {gap: energy (eV)}."""
    e_sep = energies[f"{separation:.3f}"]
    gaps = np.array(sorted(float(k) for k in energies if abs(float(k) - separation) > 1e-6))
    e_b = np.array([1e3 * (energies[f"{g:.3f}"] - e_sep) / n_atoms for g in gaps])
    g0, e0 = equilibrium(gaps, e_b)
    return {"curve_meV_per_atom": {f"{g:.3f}": round(float(e), 3) for g, e in zip(gaps, e_b)},
            "equilibrium_gap_A": round(g0, 4), "binding_energy_meV_per_atom": round(e0, 3)}


def calculator_curve(make_calculator: Callable[[], Calculator], material: MaterialSpec, gaps: list[float],
                     separation: float, extra_vacuum: float) -> dict:
    """The same curve from the ASE calculator ``make_calculator()`` returns (a new one per structure), and the gap
    after relaxing the bilayer with it."""
    from ase.optimize import BFGS

    energies = {}
    for gap in list(gaps) + [separation]:
        atoms = reference_structure(material, gap, extra_vacuum)
        atoms.calc = make_calculator()
        energies[f"{gap:.3f}"] = float(atoms.get_potential_energy())
    out = summarize(energies, len(atoms), separation)
    atoms = reference_structure(material, material.gap_reference, extra_vacuum)
    atoms.calc = make_calculator()
    BFGS(atoms, logfile=None).run(fmax=1e-3, steps=300)
    layer = atoms.arrays["layer"]
    z = atoms.positions[:, 2]
    facing_bottom, facing_top = z[layer == 0].max(), z[layer == 1].min()
    sep = reference_structure(material, separation, extra_vacuum)
    sep.calc = make_calculator()
    out["relaxed_gap_A"] = round(float(facing_top - facing_bottom), 4)
    out["relaxed_binding_energy_meV_per_atom"] = round(
        1e3 * (atoms.get_potential_energy() - sep.get_potential_energy()) / len(atoms), 3)
    return out


def stored_dft_curve(material_name: str) -> dict | None:
    """The DFT curve stored in ``datasets/<material>/binding_dft.json``, summarised, with what a calculator curve
    needs to match it (``gaps``, ``separation``, ``extra_vacuum``, Å); None if the file does not exist."""
    path = REPO / "datasets" / material_name / "binding_dft.json"
    if not path.is_file():
        return None
    data = json.loads(path.read_text())
    sep = float(data["separation_A"]) if "separation_A" in data else max(float(k) for k in data["energies_eV"])
    dft = summarize(data["energies_eV"], data["n_atoms"], sep)
    return {"dft": dft, "gaps": sorted(float(k) for k in dft["curve_meV_per_atom"]), "separation": sep,
            "extra_vacuum": float(data["settings"]["extra_vacuum_A"])}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--material", default="graphene-bilayer")
    p.add_argument("--gaps", type=float, nargs="+", default=None,
                   help="interlayer gaps in Å (default: reference gap −0.2 … +0.3 in 0.1 steps)")
    p.add_argument("--separation", type=float, default=None, help="gap of the separated layers (default ref + 8 Å)")
    p.add_argument("--extra-vacuum", type=float, default=8.0)
    p.add_argument("--np", type=int, default=2)
    p.add_argument("--nk", type=int, default=2)
    p.add_argument("--scratch", default=str(REPO / "scratch" / "dft"))
    p.add_argument("--no-dft", action="store_true", help="only use DFT points already computed")
    args = p.parse_args(argv)

    material = get_material(args.material)
    g_ref = material.gap_reference
    gaps = args.gaps or [round(g_ref + d, 3) for d in (-0.2, -0.1, 0.0, 0.1, 0.2, 0.3)]
    separation = args.separation if args.separation is not None else round(g_ref + 8.0, 3)
    out_json = REPO / "datasets" / material.name / "binding_dft.json"
    if args.no_dft:
        data = json.loads(out_json.read_text())
    else:
        data = dft_curve(material, gaps, separation, args.extra_vacuum, out_json, Path(args.scratch),
                         Runner(nprocs=args.np, npools=args.nk))
    dft = summarize(data["energies_eV"], data["n_atoms"], separation)
    result = {"dft": dft}
    print(f"DFT ({material.references[0][0]}): gap {dft['equilibrium_gap_A']:.3f} Å, "
          f"E_b {dft['binding_energy_meV_per_atom']:.2f} meV/atom")
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
