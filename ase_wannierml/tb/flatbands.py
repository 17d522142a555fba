"""Flat bands of twisted bilayers from a few eigenvalues near charge neutrality (numpy only).

The sparse solver returns the ``num`` eigenvalues nearest an energy, not band indices. Two ways to pick the 4 flat
bands (per spin) from them:

- by band index (exact): with the number of bands below the solver's centre at each k
  (``TightBinding.bands_below``, Sylvester inertia), every returned state gets its absolute index
  (:func:`band_indices`); at charge neutrality with ``n_occupied`` filled bands per spin the flat bands are
  indices n_occupied − 2 … n_occupied + 1 and the remote bands n_occupied − 3 and n_occupied + 2. Valid whatever
  the band shape, e.g. when relaxation makes the flat bands overlap each other or form pockets.
- by energy (heuristic, no counts): the Dirac states at the moiré K point (4 per spin: 2 valleys × 2 Dirac cones,
  nearly degenerate) fix the Dirac energy E_D and the flat bands are the 2 states just below and the 2 just above
  E_D at each k. This is wrong as soon as a flat band crosses E_D away from K (electron/hole pockets): the count
  on one side then takes a remote band, which shows up as a spurious negative gap.

Energies in eV.

Example:
    >>> import numpy as np
    >>> dirac_energy(np.array([-0.3, -0.002, 0.0, 0.001, 0.003, 0.2]))
    0.0005
    >>> dirac_energy(np.array([-0.3, 0.0, 0.0003, 0.0004, 0.0004, 0.2]))  # 1 + 3 split cluster: still 2 below
    0.00035
    >>> central_bands(np.array([[-0.3, -0.01, -0.005, 0.004, 0.02, 0.3]]), 0.0).tolist()
    [[-0.01, -0.005, 0.004, 0.02]]
    >>> band_indices(np.array([[-0.3, -0.01, 0.02]]), 0.0, np.array([7])).tolist()  # 7 bands below 0 eV
    [[5, 6, 7]]
"""
from __future__ import annotations

import numpy as np

__all__ = ["band_indices", "central_bands", "counting_energies", "dirac_energy", "flat_band_summary", "fermi_velocity",
           "band_indices_of", "neutrality_dirac_energy",
           "summarize_flat_bands"]

HBAR_EV_S = 6.582119569e-16  # ħ in eV·s


def dirac_energy(e_n: np.ndarray, cluster: int = 4) -> float:
    """Dirac energy (eV) from the eigenvalues ``e_n`` at the moiré K point: the middle of the ``cluster``
    consecutive eigenvalues with the smallest spread (the Dirac states), i.e. halfway between its two central
    members, so exactly half of the cluster lies below; ValueError if fewer than ``cluster`` values are given."""
    e_n = np.sort(np.asarray(e_n, dtype=float).ravel())
    if len(e_n) < cluster:
        raise ValueError(f"need at least {cluster} eigenvalues to find the Dirac cluster, got {len(e_n)}")
    spread = e_n[cluster - 1:] - e_n[:len(e_n) - cluster + 1]
    c = e_n[int(np.argmin(spread)):][:cluster]
    return float(0.5 * (c[(cluster - 1) // 2] + c[cluster // 2]))


def counting_energies(e_kn: np.ndarray) -> np.ndarray:
    """An energy per k (eV) at which to count the bands below (``TightBinding.bands_below``): the middle of the
    widest gap between consecutive states of ``e_kn`` (nk, num ≥ 2), far from any state, so that the count and the
    window agree on which states lie below it → (nk,)."""
    e_kn = np.sort(np.atleast_2d(np.asarray(e_kn, dtype=float)), axis=1)
    if e_kn.shape[1] < 2:
        raise ValueError("counting energies need at least 2 states per k-point")
    j = np.argmax(np.diff(e_kn, axis=1), axis=1)
    rows = np.arange(len(e_kn))
    return 0.5 * (e_kn[rows, j] + e_kn[rows, j + 1])


def band_indices(e_kn: np.ndarray, energy: float | np.ndarray, below_k: np.ndarray) -> np.ndarray:
    """Absolute 0-based band index of each state in ``e_kn`` (nk, num) eV (sorted per k; the states nearest some
    energy), given ``below_k`` (nk,), the number of bands below ``energy`` (eV, scalar or (nk,)) at each k
    (``TightBinding.bands_below(kpts, energy)``) → (nk, num) int. ``energy`` must lie inside each k's window and
    not on a state (use :func:`counting_energies`); ValueError otherwise."""
    e_kn = np.sort(np.atleast_2d(np.asarray(e_kn, dtype=float)), axis=1)
    below_k = np.asarray(below_k, dtype=int).reshape(-1)
    energy_k = np.broadcast_to(np.asarray(energy, dtype=float), (len(e_kn),))
    if len(below_k) != len(e_kn):
        raise ValueError(f"below_k has {len(below_k)} entries for {len(e_kn)} k-points")
    if np.any((energy_k < e_kn[:, 0]) | (energy_k > e_kn[:, -1])):
        raise ValueError("the counting energy must lie inside every k-point's window of states")
    if np.any(np.abs(e_kn - energy_k[:, None]).min(axis=1) < 1e-9 * np.maximum(1.0, np.abs(energy_k))):
        raise ValueError("a state lies at the counting energy (ambiguous count): use counting_energies(e_kn)")
    returned_below = (e_kn < energy_k[:, None]).sum(axis=1)
    return (below_k - returned_below)[:, None] + np.arange(e_kn.shape[1])[None, :]


def _by_index(e_kn: np.ndarray, index_kn: np.ndarray, wanted: np.ndarray) -> np.ndarray:
    """Energies of the bands ``wanted`` (m,) at each k → (nk, m), NaN where the window does not hold that band."""
    out = np.full((len(e_kn), len(wanted)), np.nan)
    for k in range(len(e_kn)):
        j = wanted - index_kn[k, 0]
        ok = (j >= 0) & (j < e_kn.shape[1])
        out[k, ok] = e_kn[k, j[ok]]
    return out


def central_bands(e_kn: np.ndarray, e_ref: float, n_below: int = 2, n_above: int = 2,
                  index_kn: np.ndarray | None = None, n_occupied: int | None = None) -> np.ndarray:
    """The flat bands at each k → (nk, n_below + n_above) eV, sorted, NaN where the computed window does not hold
    them. With ``index_kn`` (absolute band indices of ``e_kn``, :func:`band_indices`) and ``n_occupied`` (bands
    per spin filled at neutrality): bands n_occupied − n_below … n_occupied + n_above − 1. Otherwise the
    ``n_below`` states below and ``n_above`` at or above ``e_ref`` (heuristic, see the module docstring)."""
    e_kn = np.sort(np.atleast_2d(np.asarray(e_kn, dtype=float)), axis=1)
    if index_kn is not None:
        if n_occupied is None:
            raise ValueError("band indices need n_occupied (filled bands per spin at neutrality)")
        return _by_index(e_kn, np.atleast_2d(index_kn), np.arange(n_occupied - n_below, n_occupied + n_above))
    out = np.full((len(e_kn), n_below + n_above), np.nan)
    for k, e in enumerate(e_kn):
        n = int(np.searchsorted(e, e_ref))
        if n - n_below >= 0 and n + n_above <= len(e):
            out[k] = e[n - n_below:n + n_above]
    return out


def flat_band_summary(e_kn: np.ndarray, e_ref: float, index_kn: np.ndarray | None = None,
                      n_occupied: int | None = None) -> dict:
    """Width (meV) of the 4 central bands (max − min over all k), of each pair, and the gaps (meV) from them to the
    remote bands inside the computed window (None if the window holds no remote state on that side, or by band
    index if it misses the remote band at some k: ``remote_band_missing_kpoints`` [below, above]; negative =
    overlap). ``e_kn`` (nk, num) eV, ``e_ref`` = E_D eV. With ``index_kn`` and ``n_occupied`` the bands are taken
    by absolute index (exact; ``"identified_by": "band index"``), otherwise around ``e_ref``."""
    e_kn = np.sort(np.atleast_2d(np.asarray(e_kn, dtype=float)), axis=1)
    flat = central_bands(e_kn, e_ref, index_kn=index_kn, n_occupied=n_occupied)
    if np.isnan(flat).all():
        raise ValueError("no k-point holds the 4 central bands: widen the window (num) or check e_ref")
    missing = [0, 0]
    if index_kn is not None:
        remote = _by_index(e_kn, np.atleast_2d(index_kn), np.array([n_occupied - 3, n_occupied + 2]))
        missing = [int(np.isnan(remote[:, 0]).sum()), int(np.isnan(remote[:, 1]).sum())]
        # a gap needs the remote band at every k: a window that misses it somewhere would overstate the gap
        below = [x for x in remote[:, 0] if np.isfinite(x)] if missing[0] == 0 else []
        above = [x for x in remote[:, 1] if np.isfinite(x)] if missing[1] == 0 else []
    else:
        below = [e[e < lo].max() for e, lo in zip(e_kn, flat[:, 0]) if np.any(e < lo)]
        above = [e[e > hi].min() for e, hi in zip(e_kn, flat[:, 3]) if np.any(e > hi)]
    return {
        "flat_band_width_meV": 1e3 * float(np.nanmax(flat) - np.nanmin(flat)),
        "lower_pair_width_meV": 1e3 * float(np.nanmax(flat[:, :2]) - np.nanmin(flat[:, :2])),
        "upper_pair_width_meV": 1e3 * float(np.nanmax(flat[:, 2:]) - np.nanmin(flat[:, 2:])),
        "gap_below_meV": 1e3 * float(np.nanmin(flat[:, 0]) - max(below)) if below else None,
        "gap_above_meV": 1e3 * float(min(above) - np.nanmax(flat[:, 3])) if above else None,
        "kpoints_incomplete": int(np.isnan(flat).any(axis=1).sum()),
        "remote_band_missing_kpoints": missing,
        "E_D_eV": float(e_ref),
        "identified_by": "band index" if index_kn is not None else "energy around E_D",
    }


def fermi_velocity(e_K: np.ndarray, e_q: np.ndarray, dk: float, central_q: np.ndarray | None = None) -> float:
    """Dirac velocity (m/s) from the 4 central states at K (``e_K``) and at K + q (``e_q``), |q| = ``dk`` (1/Å):
    half the mean splitting of the outer pair over ħ|q| (the 4 states are two nearly degenerate Dirac cones).
    ``central_q`` (4,) eV: the 4 flat bands at K + q when known by band index (then ``e_K``, ``e_q`` are unused)."""
    c_q = central_bands(np.atleast_2d(e_q), dirac_energy(e_K))[0] if central_q is None else np.sort(central_q)
    slope = 0.5 * (np.mean(c_q[2:]) - np.mean(c_q[:2]))  # eV: (E₊ − E₋)/2 averaged over the two cones
    return float(slope / (HBAR_EV_S * dk * 1e10))


def band_indices_of(tb, kpts: np.ndarray, e_kn: np.ndarray, spin: float = 2.0) -> tuple[np.ndarray, int]:
    """Absolute band indices (nk, num) of the near-solver states ``e_kn`` (eV) at ``kpts`` (nk, 3), counted with
    ``tb.bands_below`` at :func:`counting_energies` (one double-precision factorisation per k), and N_occ, the
    bands per spin filled at neutrality (``tb.num_electrons / spin``)."""
    if tb.num_electrons is None:
        raise ValueError("band indices need tb.num_electrons (electrons in the Wannier manifold)")
    n_occupied = tb.num_electrons / spin
    if abs(n_occupied - round(n_occupied)) > 1e-9:
        raise ValueError(f"{tb.num_electrons} electrons do not fill whole bands (spin {spin}): no neutrality index")
    e_count = counting_energies(e_kn)
    return band_indices(e_kn, e_count, tb.bands_below(np.asarray(kpts), e_count)), int(round(n_occupied))


def summarize_flat_bands(tb, kpts: np.ndarray, e_kn: np.ndarray, e_ref: float, spin: float = 2.0) -> dict:
    """:func:`flat_band_summary` with the bands taken by absolute index (:func:`band_indices_of`); ``e_kn``
    (nk, num) eV are the states from the near solver at ``kpts`` (nk, 3); adds ``count_s`` (wall s of the
    counts)."""
    import time

    t0 = time.perf_counter()
    index_kn, n_occupied = band_indices_of(tb, kpts, e_kn, spin)
    info = flat_band_summary(e_kn, e_ref, index_kn=index_kn, n_occupied=n_occupied)
    info["count_s"] = round(time.perf_counter() - t0, 2)
    return info


def neutrality_dirac_energy(tb, k_K: np.ndarray, near: float, num: int = 8, spin: float = 2.0,
                            tries: int = 5) -> tuple[float, np.ndarray]:
    """E_D (eV) at the moiré K point ``k_K`` (3,) by band index: halfway between bands N_occ − 1 and N_occ
    (N_occ = ``tb.num_electrons / spin``; at K these are the middle two of the 4 Dirac states), from ``num``
    states nearest ``near`` (eV), the window moved until it holds bands N_occ − 2 … N_occ + 1. Returns (E_D, the
    window's energies (num',) eV). Unlike :func:`dirac_energy` (the tightest 4-state cluster near a guess), it
    cannot lock onto a cluster of remote bands when the guess is far from neutrality."""
    from . import solvers

    if tb.num_electrons is None:
        raise ValueError("band indices need tb.num_electrons (electrons in the Wannier manifold)")
    n_occ = int(round(tb.num_electrons / spin))
    k_K = np.asarray(k_K, dtype=float)
    for _ in range(tries):
        e = np.sort(solvers.NearSolver(num, near).solve(tb.hamiltonian_sparse(k_K, allow_real=True)).values)
        e_count = counting_energies(e[None])
        index = band_indices(e[None], e_count, tb.bands_below(k_K[None], e_count))[0]
        if index[0] <= n_occ - 2 and index[-1] >= n_occ + 1:
            j = n_occ - index[0]
            return float(0.5 * (e[j - 1] + e[j])), e
        span = float(e[-1] - e[0])
        near = e[0] - span if index[0] > n_occ - 2 else e[-1] + span  # step towards neutrality
        num = min(2 * num, tb.norb)
    raise RuntimeError(f"bands {n_occ - 2}…{n_occ + 1} not found near the moiré K point after {tries} windows")
