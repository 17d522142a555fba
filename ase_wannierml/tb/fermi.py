"""Fermi level from an electron count: bisection on smeared occupations over a (symmetry-reduced) k-mesh.

``num_electrons`` counts the electrons in the Wannier manifold; each band holds ``spin`` = 2 electrons (spin
degenerate, no spin–orbit) unless told otherwise. When the count fills bands exactly and a gap separates occupied
from empty states on the mesh, the Fermi level is placed in the middle of that gap (deterministic, independent of
the smearing); otherwise it is the root of N(μ) = num_electrons with the given smearing.

Example::

    >>> mu = fermi_level(tb, kpts=(24, 24, 1), width=0.01)     # doctest: +SKIP
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from scipy.special import erfc, expit

from .bandpath import kpoint_mesh

if TYPE_CHECKING:  # pragma: no cover
    from .tightbinding import TightBinding


def occupations(e: np.ndarray, mu: float, width: float, smearing: str = "fermi") -> np.ndarray:
    """Occupation in [0, 1] of states at energies ``e`` (eV) for chemical potential ``mu`` and ``width`` (eV);
    ``smearing`` "fermi" (Fermi–Dirac, width = kT) or "gauss" (½ erfc)."""
    x = (np.asarray(e) - mu) / width
    if smearing == "fermi":
        return expit(-x)
    if smearing == "gauss":
        return 0.5 * erfc(x)
    raise ValueError(f"unknown occupation smearing {smearing!r}; use 'fermi' or 'gauss'")


def find_fermi_level(
    e_kn: np.ndarray,
    w_k: np.ndarray,
    num_electrons: float,
    width: float = 0.01,
    spin: float = 2.0,
    smearing: str = "fermi",
) -> float:
    """μ (eV) with spin · Σ_k w_k Σ_n f(e_kn - μ) = num_electrons; mid-gap when the count fills bands exactly.

    ``e_kn`` (nk, nbands) eV, ``w_k`` (nk,) weights summing to 1.
    """
    e_kn = np.asarray(e_kn, dtype=float)
    w_k = np.asarray(w_k, dtype=float)
    if e_kn.ndim != 2 or w_k.shape != (len(e_kn),):
        raise ValueError(f"e_kn must be (nk, nbands) and w_k (nk,), got {e_kn.shape} and {w_k.shape}")
    if width <= 0:
        raise ValueError(f"smearing width must be positive (eV), got {width}")
    capacity = spin * e_kn.shape[1]
    if not 0 < num_electrons < capacity:
        raise ValueError(f"num_electrons = {num_electrons} outside (0, {capacity}) for {e_kn.shape[1]} bands")
    target = num_electrons / spin
    gap_mu = _mid_gap(e_kn, target)
    if gap_mu is not None:
        return gap_mu
    lo, hi = e_kn.min() - 40 * width, e_kn.max() + 40 * width
    for _ in range(200):
        mu = 0.5 * (lo + hi)
        count = w_k @ occupations(e_kn, mu, width, smearing).sum(axis=1)
        lo, hi = (mu, hi) if count < target else (lo, mu)
        if hi - lo < 1e-12:
            break
    return 0.5 * (lo + hi)


GAP_MIN = 1e-6  # eV: smaller band separations are degeneracies split by round-off, not gaps


def _mid_gap(e_kn: np.ndarray, target: float) -> float | None:
    """Middle of the gap above band ``target`` if ``target`` is a whole number of bands separated by > GAP_MIN."""
    nocc = int(round(target))
    if abs(target - nocc) > 1e-9 or not 0 < nocc < e_kn.shape[1]:
        return None
    e_sorted = np.sort(e_kn, axis=1)
    vbm, cbm = e_sorted[:, nocc - 1].max(), e_sorted[:, nocc].min()
    return 0.5 * (vbm + cbm) if cbm - vbm > GAP_MIN else None


def fermi_from_dos(e_E: np.ndarray, dos_E: np.ndarray, target: float) -> float:
    """Energy (eV) where ∫ DOS reaches ``target`` states; the middle of the plateau if it is reached in a gap."""
    count_E = np.concatenate([[0.0], np.cumsum(0.5 * (dos_E[1:] + dos_E[:-1]) * np.diff(e_E))])
    count_E = np.maximum.accumulate(count_E)  # stochastic KPM noise can make it dip
    if not count_E[0] < target < count_E[-1]:
        raise ValueError(f"{target} states per spin outside the integrated DOS range (0, {count_E[-1]:.3f})")
    tol = 1e-6 * count_E[-1]
    lo = np.interp(target - tol, count_E, e_E)
    hi = e_E[np.searchsorted(count_E, target + tol) - 1]
    return float(0.5 * (lo + max(lo, hi)))


def fermi_level(
    tb: "TightBinding",
    kpts: Any = None,
    width: float = 0.01,
    spin: float = 2.0,
    symmetry: bool = True,
    smearing: str = "fermi",
    method: str = "auto",
) -> float:
    """Fermi level (eV) of ``tb`` from ``tb.num_electrons`` on a k-mesh (see :func:`..bandpath.kpoint_mesh`).

    ``method`` "exact" (dense eigenvalues, bisection; the default up to ``EXACT_MAX_ORBITALS``) or "kpm"
    (integrated KPM DOS of broadening ``width``). The KPM count is stochastic: its error grows like
    √(occupied states / 16 random vectors), so for large cells E_F is uncertain by roughly that many states
    divided by the DOS at E_F; pass a known ``fermi_level`` to the TightBinding when accuracy matters.
    """
    from .dos import EXACT_MAX_ORBITALS, dos

    if tb.num_electrons is None:
        raise ValueError("the Fermi level needs num_electrons (electrons in the Wannier manifold) on the TightBinding")
    if method not in ("auto", "exact", "kpm"):
        raise ValueError(f"unknown Fermi-level method {method!r}; use 'auto', 'exact' or 'kpm'")
    if method == "kpm" or (method == "auto" and tb.norb > EXACT_MAX_ORBITALS):
        if not 0 < tb.num_electrons < spin * tb.norb:
            raise ValueError(f"num_electrons = {tb.num_electrons} outside (0, {spin * tb.norb}) for {tb.norb} bands")
        d = dos(tb, kpts, width=width, npts=20001, method="kpm", symmetry=symmetry)  # ~1 meV grid for 20 eV
        return fermi_from_dos(d.get_energies(), d.get_weights(), tb.num_electrons / spin)
    k_k3, w_k = kpoint_mesh(tb, kpts, symmetry=symmetry)
    e_kn = tb.eigenvalues(k_k3)
    return find_fermi_level(e_kn, w_k, tb.num_electrons, width=width, spin=spin, smearing=smearing)
