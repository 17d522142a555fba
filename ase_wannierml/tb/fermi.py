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


def _mid_gap(e_kn: np.ndarray, target: float) -> float | None:
    """Middle of the gap above band ``target`` if ``target`` is a whole number of bands and they are separated."""
    nocc = int(round(target))
    if abs(target - nocc) > 1e-9 or not 0 < nocc < e_kn.shape[1]:
        return None
    e_sorted = np.sort(e_kn, axis=1)
    vbm, cbm = e_sorted[:, nocc - 1].max(), e_sorted[:, nocc].min()
    return 0.5 * (vbm + cbm) if cbm > vbm else None


def fermi_level(
    tb: "TightBinding",
    kpts: Any = None,
    width: float = 0.01,
    spin: float = 2.0,
    symmetry: bool = True,
    smearing: str = "fermi",
) -> float:
    """Fermi level (eV) of ``tb`` from ``tb.num_electrons`` on a k-mesh (see :func:`..bandpath.kpoint_mesh`)."""
    if tb.num_electrons is None:
        raise ValueError("the Fermi level needs num_electrons (electrons in the Wannier manifold) on the TightBinding")
    k_k3, w_k = kpoint_mesh(tb, kpts, symmetry=symmetry)
    e_kn = tb.eigenvalues(k_k3)
    return find_fermi_level(e_kn, w_k, tb.num_electrons, width=width, spin=spin, smearing=smearing)
