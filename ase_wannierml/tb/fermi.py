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

from . import kmesh
from .kmesh import FERMI_WIDTH, SPARSE_BANDS, kpoint_mesh
from .progress import progress

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
    width: float = FERMI_WIDTH,
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
    width: float = FERMI_WIDTH,
    spin: float = 2.0,
    symmetry: bool = True,
    smearing: str = "fermi",
    method: str = "auto",
    num: int = SPARSE_BANDS,
    near: float | None = None,
) -> float:
    """Fermi level (eV) of ``tb`` from ``tb.num_electrons`` on a k-mesh (see :func:`..bandpath.kpoint_mesh`).

    ``method``:

    - "exact": dense eigenvalues, bisection (the default up to ``kmesh.EXACT_MAX_ORBITALS`` orbitals);
    - "sparse": exact as well, for large cells (the default above): the ``num`` states nearest a guess from the
      sparse solver at each k get absolute band indices from an inertia count (``TightBinding.bands_below``); bands
      below the window are full, above it empty, so E_F follows from the window alone. The guess is ``near``, else
      the TightBinding's stored ``fermi_level``, else a KPM estimate; the window is moved and widened until it
      holds E_F with a margin of 10 × ``width`` (insulators: both band edges, E_F mid-gap);
    - "kpm": integrated KPM DOS of broadening ``width``. The count is stochastic (error ~ √(occupied states / 16
      random vectors)), so for an insulator E_F can land inside a band: use "sparse" when it matters.
    """
    from .dos import dos

    if tb.num_electrons is None:
        raise ValueError("the Fermi level needs num_electrons (electrons in the Wannier manifold) on the TightBinding")
    if method not in ("auto", "exact", "sparse", "kpm"):
        raise ValueError(f"unknown Fermi-level method {method!r}; use 'auto', 'exact', 'sparse' or 'kpm'")
    if not 0 < tb.num_electrons < spin * tb.norb:
        raise ValueError(f"num_electrons = {tb.num_electrons} outside (0, {spin * tb.norb}) for {tb.norb} bands")
    if method == "auto":
        method = "sparse" if tb.norb > kmesh.EXACT_MAX_ORBITALS else "exact"
    if method == "kpm":
        d = dos(tb, kpts, width=width, npts=20001, method="kpm", symmetry=symmetry)  # ~1 meV grid for 20 eV
        return fermi_from_dos(d.get_energies(), d.get_weights(), tb.num_electrons / spin)
    k_k3, w_k = kpoint_mesh(tb, kpts, symmetry=symmetry)
    if method == "sparse":
        if near is None:
            near = tb.fermi_energy if tb.fermi_energy is not None else fermi_level(tb, kpts, width, spin, symmetry,
                                                                                   smearing, method="kpm")
        return fermi_level_windowed(tb, k_k3, w_k, tb.num_electrons, near, num=num, width=width, spin=spin,
                                    smearing=smearing)
    e_kn = tb.eigenvalues(k_k3)
    return find_fermi_level(e_kn, w_k, tb.num_electrons, width=width, spin=spin, smearing=smearing)


#: Tries of :func:`fermi_level_windowed` (each recentres the window and doubles it) before giving up.
WINDOW_TRIES = 6


def _window(tb: "TightBinding", k_3: np.ndarray, num: int, near: float) -> tuple[np.ndarray, np.ndarray]:
    """The ``num`` states nearest ``near`` at one k, sorted (eV), and their absolute band indices."""
    from .flatbands import band_indices, counting_energies

    e = np.sort(tb.eigenvalues(k_3[None], num=num, near=near), axis=1)
    e_count = counting_energies(e)
    return e[0], band_indices(e, e_count, tb.bands_below(k_3[None], e_count))[0]


def _band_edges(tb: "TightBinding", k_3: np.ndarray, nocc: int, near: float, num: int,
                tol: float = 1e-6) -> tuple[float, float]:
    """Energies (eV) of bands ``nocc`` − 1 and ``nocc`` at one k. An energy E* with exactly ``nocc`` bands below
    is bracketed and bisected with inertia counts alone (``tb.bands_below``); the ``num`` states nearest E* then
    hold both bands. If the two bands are degenerate to ``tol`` eV, E* is that energy for both."""
    count = lambda e: int(tb.bands_below(k_3[None], e)[0])  # noqa: E731
    a, step = float(near), 0.05
    c_a = count(a)
    if c_a == nocc:
        star = a
    else:
        b = a + (step if c_a < nocc else -step)
        while (count(b) < nocc) == (c_a < nocc):  # expand until the count crosses nocc
            a, step = b, 2 * step
            b = a + (step if c_a < nocc else -step)
        lo, hi = min(a, b), max(a, b)  # count(lo) < nocc <= count(hi), or count(lo) <= nocc < count(hi)
        star = None
        while hi - lo > tol:
            mid = 0.5 * (lo + hi)
            c = count(mid)
            if c == nocc:
                star = mid
                break
            lo, hi = (mid, hi) if c < nocc else (lo, mid)
        if star is None:  # bands nocc − 1 and nocc meet within tol: a degenerate point
            mid = 0.5 * (lo + hi)
            return mid, mid
    for _ in range(4):
        e, idx = _window(tb, k_3, num, star)
        if idx[0] <= nocc - 1 and idx[-1] >= nocc:
            return float(e[nocc - 1 - idx[0]]), float(e[nocc - idx[0]])
        num = min(2 * num, tb.norb)
    raise RuntimeError(f"bands {nocc - 1} and {nocc} not in the window at k = {k_3}")


def fermi_level_windowed(tb: "TightBinding", k_k3: np.ndarray, w_k: np.ndarray, num_electrons: float, near: float,
                         num: int = SPARSE_BANDS, width: float = FERMI_WIDTH, spin: float = 2.0,
                         smearing: str = "fermi", margin: float = 10.0) -> float:
    """Exact Fermi level (eV) from the ``num`` states nearest ``near`` (eV) at each k of ``k_k3`` (nk, 3) with
    weights ``w_k`` (nk,), using absolute band indices from inertia counts (see :func:`fermi_level`, "sparse").

    When ``num_electrons`` fills bands exactly, the edges (bands N_occ − 1 and N_occ) are located at every k first
    (windows stepped towards them); a gap on the mesh puts E_F mid-gap. Otherwise the smeared count (``width``,
    ``smearing``) is solved on windows around the estimate, the bands below each window counted full; the window
    is recentred and doubled until E_F lies inside every k's window with ``margin`` × ``width`` to spare
    (RuntimeError after ``WINDOW_TRIES``)."""
    from .flatbands import band_indices, counting_energies

    target = num_electrons / spin
    w_k = np.asarray(w_k, dtype=float)
    nocc = int(round(target))
    if abs(target - nocc) < 1e-9 and 0 < nocc < tb.norb:
        edges = []
        for k_3 in progress(np.asarray(k_k3, dtype=float), len(k_k3), "E_F: band edges"):
            edges.append(_band_edges(tb, k_3, nocc, near, num))
            near = 0.5 * sum(edges[-1])  # the next k starts at this k's gap centre
        vbm, cbm = max(v for v, _ in edges), min(c for _, c in edges)
        if cbm - vbm > GAP_MIN:
            return 0.5 * (vbm + cbm)
        near = 0.5 * (vbm + cbm)
    for _ in range(WINDOW_TRIES):
        num = min(num, tb.norb)
        e_kn = np.sort(tb.eigenvalues(k_k3, num=num, near=near), axis=1)
        e_count = counting_energies(e_kn)
        first = band_indices(e_kn, e_count, tb.bands_below(k_k3, e_count))[:, 0]  # index of each window's lowest
        lo, hi = float(e_kn[:, 0].max()), float(e_kn[:, -1].min())  # every k has all its states in [lo, hi]
        below = float(w_k @ first)  # states per spin under the windows, all occupied
        a, b = float(e_kn.min()) - 40 * width, float(e_kn.max()) + 40 * width
        for _ in range(200):
            mu = 0.5 * (a + b)
            count = below + w_k @ occupations(e_kn, mu, width, smearing).sum(axis=1)
            a, b = (mu, b) if count < target else (a, mu)
            if b - a < 1e-12:
                break
        mu = 0.5 * (a + b)
        if lo + margin * width <= mu <= hi - margin * width:
            return mu
        near, num = mu, 2 * num  # E_F outside the complete window: recentre and widen
    raise RuntimeError(f"no window of {num // 2} states per k-point held the Fermi level with a margin of "
                       f"{margin} x {width} eV; pass a closer near= or a larger num=")
