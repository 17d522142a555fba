"""Flat bands of twisted bilayers from a few eigenvalues near charge neutrality (numpy only).

The sparse solver returns the ``num`` eigenvalues nearest an energy, not band indices. For a twisted bilayer at
charge neutrality the Dirac states at the moiré K point (4 per spin: 2 valleys × 2 Dirac cones, nearly degenerate)
fix the Dirac energy E_D; the 4 flat bands at each k are then the 2 states just below and the 2 just above E_D
(valid when the flat bands form a semimetal with no electron/hole pockets at neutrality, which holds near the
magic angle in the models tested here). Energies in eV.

Example:
    >>> import numpy as np
    >>> dirac_energy(np.array([-0.3, -0.002, 0.0, 0.001, 0.003, 0.2]))
    0.0005
    >>> dirac_energy(np.array([-0.3, 0.0, 0.0003, 0.0004, 0.0004, 0.2]))  # 1 + 3 split cluster: still 2 below
    0.00035
    >>> central_bands(np.array([[-0.3, -0.01, -0.005, 0.004, 0.02, 0.3]]), 0.0).tolist()
    [[-0.01, -0.005, 0.004, 0.02]]
"""
from __future__ import annotations

import numpy as np

__all__ = ["central_bands", "dirac_energy", "flat_band_summary", "fermi_velocity"]

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


def central_bands(e_kn: np.ndarray, e_ref: float, n_below: int = 2, n_above: int = 2) -> np.ndarray:
    """The ``n_below`` states below and ``n_above`` at or above ``e_ref`` at each k → (nk, n_below + n_above) eV,
    sorted; a row is NaN where the computed window does not hold that many states on one side."""
    e_kn = np.sort(np.atleast_2d(np.asarray(e_kn, dtype=float)), axis=1)
    out = np.full((len(e_kn), n_below + n_above), np.nan)
    for k, e in enumerate(e_kn):
        n = int(np.searchsorted(e, e_ref))
        if n - n_below >= 0 and n + n_above <= len(e):
            out[k] = e[n - n_below:n + n_above]
    return out


def flat_band_summary(e_kn: np.ndarray, e_ref: float) -> dict:
    """Width (meV) of the 4 central bands (max − min over all k), of each pair, and the gaps (meV) from them to the
    remote bands inside the computed window (None if the window holds no remote state on that side; negative =
    overlap). ``e_kn`` (nk, num) eV, ``e_ref`` = E_D eV."""
    flat = central_bands(e_kn, e_ref)
    if np.isnan(flat).all():
        raise ValueError("no k-point has 2 states on each side of e_ref: widen the window (num) or check e_ref")
    e_kn = np.sort(np.atleast_2d(e_kn), axis=1)
    below = [e[e < lo].max() for e, lo in zip(e_kn, flat[:, 0]) if np.any(e < lo)]
    above = [e[e > hi].min() for e, hi in zip(e_kn, flat[:, 3]) if np.any(e > hi)]
    return {
        "flat_band_width_meV": 1e3 * float(np.nanmax(flat) - np.nanmin(flat)),
        "lower_pair_width_meV": 1e3 * float(np.nanmax(flat[:, :2]) - np.nanmin(flat[:, :2])),
        "upper_pair_width_meV": 1e3 * float(np.nanmax(flat[:, 2:]) - np.nanmin(flat[:, 2:])),
        "gap_below_meV": 1e3 * float(np.nanmin(flat[:, 0]) - max(below)) if below else None,
        "gap_above_meV": 1e3 * float(min(above) - np.nanmax(flat[:, 3])) if above else None,
        "kpoints_incomplete": int(np.isnan(flat[:, 0]).sum()),
        "E_D_eV": float(e_ref),
    }


def fermi_velocity(e_K: np.ndarray, e_q: np.ndarray, dk: float) -> float:
    """Dirac velocity (m/s) from the 4 central states at K (``e_K``) and at K + q (``e_q``), |q| = ``dk`` (1/Å):
    half the mean splitting of the outer pair over ħ|q| (the 4 states are two nearly degenerate Dirac cones)."""
    c_q = central_bands(np.atleast_2d(e_q), dirac_energy(e_K))[0]
    slope = 0.5 * (np.mean(c_q[2:]) - np.mean(c_q[:2]))  # eV: (E₊ − E₋)/2 averaged over the two cones
    return float(slope / (HBAR_EV_S * dk * 1e10))
