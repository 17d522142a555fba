"""Small Quantum ESPRESSO ``pw.x`` input writer (scf / nscf / bands) for periodic slabs.

We write the namelists ourselves (a few dozen lines) so every key is explicit and recorded in ``meta.json``.
Cell and positions in Å; k-points either a Monkhorst-Pack mesh or an explicit list in crystal coordinates.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from ase import Atoms

from .materials import DFTSettings


def _fmt(value: object) -> str:
    if isinstance(value, bool):
        return ".true." if value else ".false."
    if isinstance(value, str):
        return f"'{value}'"
    if isinstance(value, float):
        return f"{value:.10g}".replace("e", "d") if ("e" in f"{value:.10g}") else f"{value:.10g}"
    return str(value)


def namelists_text(namelists: dict[str, dict[str, object]]) -> str:
    """Render ``{"control": {...}, "system": {...}, ...}`` as Fortran namelists."""
    out = []
    for name, keys in namelists.items():
        out.append(f"&{name}")
        out.extend(f"  {k} = {_fmt(v)}" for k, v in keys.items())
        out.append("/")
    return "\n".join(out) + "\n"


def uniform_kgrid(n1: int, n2: int, n3: int = 1) -> np.ndarray:
    """(n1*n2*n3, 3) crystal coordinates of the full uniform Γ-centred grid, Wannier90 order (k3 fastest)."""
    if min(n1, n2, n3) < 1:
        raise ValueError(f"k-grid sizes must be >= 1, got {(n1, n2, n3)}")
    g = np.array([(i / n1, j / n2, k / n3) for i in range(n1) for j in range(n2) for k in range(n3)])
    return g


def pw_namelists(atoms: Atoms, dft: DFTSettings, calculation: str, prefix: str, nbnd: int | None = None,
                 outdir: str = "./tmp") -> dict[str, dict[str, object]]:
    """Namelists for ``calculation`` in {"scf", "nscf", "bands"} following the material's settings."""
    if calculation not in ("scf", "nscf", "bands"):
        raise ValueError(f"calculation must be 'scf', 'nscf' or 'bands', got {calculation!r}")
    species = sorted(set(atoms.get_chemical_symbols()))
    missing = [s for s in species if s not in dft.pseudopotentials]
    if missing:
        raise ValueError(f"no pseudopotential configured for {missing}")
    control: dict[str, object] = {
        "calculation": calculation, "prefix": prefix, "outdir": outdir, "pseudo_dir": dft.pseudo_dir,
        "verbosity": "high", "disk_io": "low",
    }
    if calculation == "scf":
        control.update({"tprnfor": True, "tstress": True})
    system: dict[str, object] = {"ibrav": 0, "nat": len(atoms), "ntyp": len(species), "ecutwfc": dft.ecutwfc}
    if dft.ecutrho is not None:
        system["ecutrho"] = dft.ecutrho
    system.update({"occupations": "smearing", "smearing": dft.smearing, "degauss": dft.degauss})
    system.update(dft.vdw)
    if calculation == "nscf":
        system.update({"nosym": True, "noinv": True})
    if nbnd is not None:
        system["nbnd"] = int(nbnd)
    conv = dft.conv_thr_per_atom * len(atoms) * (1.0 if calculation == "scf" else 100.0)
    electrons = {"conv_thr": float(f"{conv:.3e}"), "mixing_beta": dft.mixing_beta}
    if calculation != "scf":
        electrons["diago_full_acc"] = True
    return {"control": control, "system": system, "electrons": electrons}


def pw_input_text(atoms: Atoms, dft: DFTSettings, calculation: str, prefix: str, *, kmesh: tuple[int, int, int]
                  | None = None, kpts_crystal: np.ndarray | None = None, nbnd: int | None = None) -> str:
    """Complete ``pw.x`` input.  Give either ``kmesh`` (automatic, unshifted) or ``kpts_crystal`` (n, 3)."""
    if (kmesh is None) == (kpts_crystal is None):
        raise ValueError("give exactly one of kmesh or kpts_crystal")
    species = sorted(set(atoms.get_chemical_symbols()))
    lines = [namelists_text(pw_namelists(atoms, dft, calculation, prefix, nbnd)).rstrip("\n")]
    lines.append("ATOMIC_SPECIES")
    lines.extend(f"{s} {dft.masses[s]} {dft.pseudopotentials[s]}" for s in species)
    lines.append("CELL_PARAMETERS angstrom")
    lines.extend("  " + " ".join(f"{x:16.10f}" for x in row) for row in atoms.cell.array)
    lines.append("ATOMIC_POSITIONS angstrom")
    lines.extend(f"{s:2s} " + " ".join(f"{x:16.10f}" for x in p)
                 for s, p in zip(atoms.get_chemical_symbols(), atoms.positions))
    if kmesh is not None:
        lines.append("K_POINTS automatic")
        lines.append(f"{kmesh[0]} {kmesh[1]} {kmesh[2]} 0 0 0")
    else:
        k = np.asarray(kpts_crystal, dtype=float)
        lines.append("K_POINTS crystal")
        lines.append(str(len(k)))
        lines.extend(f"{x:14.10f} {y:14.10f} {z:14.10f} 1.0" for x, y, z in k)
    return "\n".join(lines) + "\n"


def write_pw_input(path: str | Path, atoms: Atoms, dft: DFTSettings, calculation: str, prefix: str,
                   **kwargs) -> Path:
    """Write :func:`pw_input_text` to ``path``; returns the path."""
    path = Path(path)
    path.write_text(pw_input_text(atoms, dft, calculation, prefix, **kwargs))
    return path
