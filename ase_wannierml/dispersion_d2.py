"""DFT-D2 energy, forces and stress in numpy with analytic gradients: the same numbers as ``torch-dftd``'s
``DFTD2Module`` (its C6 / R0 tables, unit constants and polynomial cut-off smoothing; half neighbour list), without
the torch graph and autograd.

E = −s6 Σ_pairs C6_ij / r⁶ · f(r) · s(r),  f = 1 / (1 + exp(−α (r / (rs6 R0_ij) − 1))).

Reference: S. Grimme, J. Comput. Chem. 27, 1787 (2006). Units in and out: Å, eV, eV/Å, eV/Å³ (ASE sign).
"""
from __future__ import annotations

import numpy as np
from ase import Atoms

from .dispersion_d3 import AUTOANG, _smooth, pair_forces_and_stress

__all__ = ["D2"]


class D2:
    """D2 with parameters ``params`` (``s6``, ``rs6``, ``alp`` as ``torch_dftd.dftd3_xc_params(old=True)``) and
    pair cut-off ``cutoff`` (Å, smoothed over its last bohr)."""

    def __init__(self, params: dict, cutoff: float) -> None:
        from ase.units import Bohr
        from torch_dftd.nn.params.dftd2_params import get_dftd2_params

        r0ab, c6ab = get_dftd2_params()
        self.r0ab, self.c6ab = np.asarray(r0ab, dtype=float), np.asarray(c6ab, dtype=float)
        self.s6, self.rs6, self.alp = (float(params[k]) for k in ("s6", "rs6", "alp"))
        self.cutoff_bohr = cutoff / Bohr

    def supports(self, numbers: np.ndarray) -> bool:
        return bool(len(numbers) == 0 or numbers.max() < self.c6ab.shape[0])

    def compute(self, atoms: Atoms, i: np.ndarray, j: np.ndarray, S: np.ndarray, periodic: bool) -> dict:
        """Energy (eV), forces (N, 3) eV/Å, stress (6,) eV/Å³ or None, from the half pair list (i, j, shifts S)."""
        Z = atoms.numbers
        cell = atoms.cell.array  # S = 0 along non-periodic axes (2D cells with c = 0 included)
        vec = (atoms.positions[j] + S @ cell - atoms.positions[i]) / AUTOANG  # bohr
        r = np.sqrt(np.einsum("ij,ij->i", vec, vec))
        c6 = self.c6ab[Z[i], Z[j]]
        scale = self.alp / (self.rs6 * self.r0ab[Z[i], Z[j]])
        f = 1.0 / (1.0 + np.exp(-(scale * r - self.alp)))
        s, ds = _smooth(r, self.cutoff_bohr)
        r6 = r**6
        g = c6 * f / r6
        pair_energy = -self.s6 * g * s
        energy = float(np.sum(pair_energy))
        dg = c6 * (f * (1.0 - f) * scale / r6 - 6.0 * f / (r6 * r))
        de_dr = -self.s6 * (dg * s + g * ds)
        return pair_forces_and_stress(atoms, i, j, vec, r, de_dr, energy, periodic, pair_energy)
