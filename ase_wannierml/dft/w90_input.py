"""Wannier90 ``.win`` and ``pw2wannier90`` inputs.

Projections are species-wide standard real spherical harmonics (``C:pz``, ``Mo:d``, ``S:p``) in the GLOBAL
Cartesian frame (no local axes), so the resulting gauge rotates with the structure.  ``num_iter = 0``: after
disentanglement the Wannier functions are the Löwdin-orthonormalised projections (no maximal localisation).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from ase import Atoms

from .materials import DFTSettings


def num_wann_for(atoms: Atoms, dft: DFTSettings) -> int:
    """Number of Wannier functions: sum of the per-species orbital counts."""
    return int(sum(dft.n_orbitals[s] for s in atoms.get_chemical_symbols()))


def num_excluded_for(atoms: Atoms, dft: DFTSettings) -> int:
    """Number of semicore bands excluded at the bottom of the spectrum."""
    return int(sum(dft.excluded_bands_per_atom[s] for s in atoms.get_chemical_symbols()))


def nscf_nbnd_for(atoms: Atoms, dft: DFTSettings) -> int:
    """Bands in the NSCF run: excluded + Wannier + extra (graphene: 6 per atom, pitfall 1)."""
    extra = sum(dft.extra_bands_per_atom[s] for s in atoms.get_chemical_symbols())
    return num_excluded_for(atoms, dft) + num_wann_for(atoms, dft) + int(round(extra))


def win_text(atoms: Atoms, dft: DFTSettings, mp_grid: tuple[int, int, int], kpts_crystal: np.ndarray,
             num_bands: int, frozen_window: tuple[float, float] | None = None,
             dis_num_iter: int | None = None) -> str:
    """``.win`` text.  ``frozen_window`` (eV, absolute QE energy zero) or None (no frozen window);
    ``dis_num_iter`` overrides the material's disentanglement iterations (e.g. more for twisted cells)."""
    num_wann = num_wann_for(atoms, dft)
    n_excl = num_excluded_for(atoms, dft)
    lines = [f"num_wann  = {num_wann}", f"num_bands = {num_bands}"]
    if n_excl:
        lines.append(f"exclude_bands = 1-{n_excl}")
    if num_bands > num_wann:
        n_iter = dft.dis_num_iter if dis_num_iter is None else dis_num_iter
        lines += [f"dis_num_iter = {n_iter}", "dis_conv_tol = 1e-10"]
        if frozen_window is not None:
            lines += [f"dis_froz_min = {frozen_window[0]:.6f}", f"dis_froz_max = {frozen_window[1]:.6f}"]
    lines += [
        "num_iter  = 0",
        "write_hr  = .true.",
        "write_xyz = .true.",
        "translate_home_cell = .false.",
        "use_ws_distance = .true.",
        "",
        "begin projections",
    ]
    species = list(dict.fromkeys(atoms.get_chemical_symbols()))
    for s in species:
        lines.append(f"{s}:{';'.join(dft.projections[s])}")
    lines += ["end projections", "", "begin unit_cell_cart", "ang"]
    lines += ["  " + " ".join(f"{x:16.10f}" for x in row) for row in atoms.cell.array]
    lines += ["end unit_cell_cart", "", "begin atoms_cart", "ang"]
    lines += [f"{s:2s} " + " ".join(f"{x:16.10f}" for x in p)
              for s, p in zip(atoms.get_chemical_symbols(), atoms.positions)]
    lines += ["end atoms_cart", "", f"mp_grid = {mp_grid[0]} {mp_grid[1]} {mp_grid[2]}", "begin kpoints"]
    lines += [f"{x:14.10f} {y:14.10f} {z:14.10f}" for x, y, z in np.asarray(kpts_crystal)]
    lines += ["end kpoints"]
    return "\n".join(lines) + "\n"


def pw2wan_text(prefix: str, seedname: str, outdir: str = "./tmp") -> str:
    """``pw2wannier90.x`` input writing .amn, .mmn, .eig (no UNK files)."""
    return (f"&inputpp\n  outdir = '{outdir}'\n  prefix = '{prefix}'\n  seedname = '{seedname}'\n"
            "  write_mmn = .true.\n  write_amn = .true.\n  write_unk = .false.\n/\n")


def write_text(path: str | Path, text: str) -> Path:
    path = Path(path)
    path.write_text(text)
    return path
