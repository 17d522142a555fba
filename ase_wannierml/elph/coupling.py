"""Electron–phonon matrix elements of the model's Wannier-interpolated bands, from dH/dR (autograd) and phonon
eigenvectors (``phonons.py``).

Definition (the EPW/Giustino convention, one primitive cell)::

    g_mn^ν(k, q) = sqrt(ħ / (2 ω_qν)) · M_mn^ν(k, q),     M_mn^ν(k, q) = ⟨m, k+q| ∂_qν H |n, k⟩,
    ∂_qν H = Σ_{a, L} e^{2πi q·L} (e_qν,a / sqrt(M_a)) · ∂H/∂u_a(L)

with |n, k⟩ the Bloch eigenstates of the model's H(k) (Wannier gauge → band basis), e_qν the mass-weighted
orthonormal eigenvector (Σ_a |e_a|² = 1) and M_a in amu. Units: M in eV/(Å·amu^½), g in eV, ω in cm⁻¹ at the API.

How: ∂_qν H is the derivative of the Hamiltonian of a supercell commensurate with q (q·P integer) along the
complex Bloch pattern u_a(L) = e_a e^{2πi q·L}/sqrt(M_a) (two real patterns, real and imaginary part, by
``get_hamiltonian_derivative``); primitive Bloch states are embedded in the supercell as
c(s, o) = e^{2πi k·L_s} c_o(k) / sqrt(N_s) (H(k) = Σ_R e^{2πik·R} H(R), no orbital positions in the phase), so
k and k+q both fold onto the supercell point K = k·Pᵀ and M = c_{k+q}† dH_sc(K) c_k.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
from ase import Atoms
from ase.units import _amu, _e, _hbar

from ase_wannierml.tb.tightbinding import OrbitalTable

from .phonons import EV_TO_CM, Supercell, make_supercell

#: ħ²/(amu·Å²) in eV
HBAR2_OVER_AMU_A2 = _hbar ** 2 / (_amu * 1e-20) / _e


def zero_point_length(freq_cm: Any) -> np.ndarray:
    """sqrt(ħ / (2ω)) in Å·amu^½ for frequencies in cm⁻¹ (> 0; ValueError otherwise): multiply M (eV/(Å·amu^½))
    to get g (eV)."""
    w = np.asarray(freq_cm, dtype=float)
    if np.any(w <= 0):
        raise ValueError(f"zero-point amplitude needs positive frequencies, got {w[w <= 0][:3].tolist()} cm⁻¹")
    return np.sqrt(HBAR2_OVER_AMU_A2 / (2.0 * w / EV_TO_CM))


def _orbital_offsets(atoms: Atoms, orbitals: OrbitalTable) -> np.ndarray:
    first = np.full(len(atoms), -1)
    idx = orbitals.atom_index
    first[idx[::-1]] = np.arange(len(idx))[::-1]
    return first


def _embedding(sc: Supercell, n_orb: np.ndarray, first_prim: np.ndarray, first_sc: np.ndarray, norb_sc: int,
               k: np.ndarray) -> np.ndarray:
    """(norb_sc, norb_prim) complex: primitive Bloch basis at k → supercell orbitals (normalised)."""
    norb = int(n_orb.sum())
    E = np.zeros((norb_sc, norb), dtype=complex)
    phase = np.exp(2j * np.pi * sc.L @ k) / np.sqrt(sc.size)
    for s, a in enumerate(sc.prim):
        o = np.arange(n_orb[a])
        E[first_sc[s] + o, first_prim[a] + o] = phase[s]
    return E


def bloch_states(tb, k: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """Eigenvalues (norb,) eV and eigenvectors (norb, norb) (columns) of ``tb.hamiltonian(k)`` (dense)."""
    h = tb.hamiltonian(np.asarray(k, dtype=float).reshape(1, 3))[0]
    return np.linalg.eigh(h)


def mode_patterns(sc: Supercell, q: Sequence[float], e: np.ndarray, masses: np.ndarray) -> np.ndarray:
    """Complex displacement patterns (n_modes, n_sc, 3) Å/(amu^½) per unit normal coordinate:
    u_s = e_{prim(s)} e^{2πi q·L_s} / sqrt(M) for modes ``e`` (n_modes, n_prim, 3)."""
    phase = np.exp(2j * np.pi * sc.L @ np.asarray(q, dtype=float))
    return e[:, sc.prim, :] * (phase / np.sqrt(masses[sc.prim]))[None, :, None]


def matrix_elements(calc: Any, atoms: Atoms, q: Sequence[float], e: np.ndarray, kpts: Any,
                    supercell: Any, bands: Sequence[int] | None = None) -> dict:
    """M_mn^ν(k, q) = ⟨m, k+q| ∂_qν H |n, k⟩ in eV/(Å·amu^½) for the model of ``calc`` (``WannierMLCalculator``).

    atoms: primitive cell (relaxed); q: (3,) fractional, commensurate with ``supercell`` ((n1, n2, n3) or a 3×3
    integer matrix); e: (n_modes, n_atoms, 3) mass-weighted eigenvectors at q (``phonons.modes_at_q``);
    kpts: (nk, 3) fractional; bands: band indices (sorted by energy at each k; default all).
    Returns ``{"M": (n_modes, nk, nb, nb) complex [ν, k, m (at k+q), n (at k)], "e_k": (nk, nb) eV,
    "e_kq": (nk, nb) eV}``. Cost: one supercell dH/dR pass per real pattern (2 per mode at q ≠ 0, 1 at Γ with real
    eigenvectors) and dense diagonalisations of the primitive H(k).
    """
    kpts = np.asarray(kpts, dtype=float).reshape(-1, 3)
    q = np.asarray(q, dtype=float)
    sc = make_supercell(atoms, supercell)
    qsc = q @ sc.P.T
    if np.abs(qsc - np.round(qsc)).max() > 1e-8:
        raise ValueError(f"q = {q.tolist()} is not commensurate with the supercell P = {sc.P.tolist()}")
    e = np.asarray(e)
    if e.ndim != 3 or e.shape[1:] != (len(atoms), 3):
        raise ValueError(f"eigenvectors must have shape (n_modes, {len(atoms)}, 3), got {e.shape}")
    tb = calc.get_hamiltonian(atoms)
    orb = tb.orbitals
    n_orb = np.bincount(orb.atom_index, minlength=len(atoms))
    first_prim = _orbital_offsets(atoms, orb)
    masses = np.asarray(atoms.get_masses(), dtype=float)
    u = mode_patterns(sc, q, e, masses)                                      # (n_modes, n_sc, 3) complex
    real_only = np.abs(u.imag).max() < 1e-14
    patterns = u.real if real_only else np.concatenate([u.real, u.imag])
    d_tbs = calc.get_hamiltonian_derivative(patterns, atoms=sc.atoms)
    norb_sc = d_tbs[0].norb
    first_sc = _orbital_offsets(sc.atoms, d_tbs[0].orbitals)
    bands = np.arange(tb.norb) if bands is None else np.asarray(bands)
    n_modes = len(e)
    M = np.zeros((n_modes, len(kpts), len(bands), len(bands)), dtype=complex)
    e_k, e_kq = np.zeros((len(kpts), len(bands))), np.zeros((len(kpts), len(bands)))
    for ik, k in enumerate(kpts):
        ek, ck = bloch_states(tb, k)
        ekq, ckq = bloch_states(tb, k + q)
        e_k[ik], e_kq[ik] = ek[bands], ekq[bands]
        left = _embedding(sc, n_orb, first_prim, first_sc, norb_sc, k + q) @ ckq[:, bands]
        right = _embedding(sc, n_orb, first_prim, first_sc, norb_sc, k) @ ck[:, bands]
        K = (k @ sc.P.T)[None]
        for nu in range(n_modes):
            dh = d_tbs[nu].hamiltonian(K)[0]
            if not real_only:
                dh = dh + 1j * d_tbs[n_modes + nu].hamiltonian(K)[0]
            M[nu, ik] = left.conj().T @ dh @ right
    return {"M": M, "e_k": e_k, "e_kq": e_kq}


def fermi_average_g2(M: np.ndarray, freq_cm: Any, normalise: int = 4) -> float:
    """⟨g²⟩ (eV²) = (1/normalise) · mean over the modes ν of Σ_{m,n} |M_mn^ν|² · ħ/(2ω_ν).

    M: (n_modes, nb_kq, nb_k) for one k (eV/(Å·amu^½)), freq_cm: (n_modes,) cm⁻¹. With the two π states at K
    and at K+q (``normalise`` = 4 pairs) and a degenerate set of modes this is Piscanec et al.'s Fermi-surface
    average for graphene (PRL 93, 185503 (2004)); for a bilayer, summing m, n over the 4 π states at K and the
    mode mean over the near-degenerate layer pair gives the value per layer (equal to the monolayer's for
    decoupled layers)."""
    M = np.asarray(M)
    amp2 = zero_point_length(freq_cm) ** 2
    per_mode = (np.abs(M) ** 2).sum(axis=(1, 2)) * amp2
    return float(per_mode.mean() / normalise)
