"""Frozen-phonon tools: a real displacement pattern from a complex Bloch mode, its frequency from forces at ±u,
and primitive-cell matrix elements from a supercell derivative dH along such a real pattern.

These are what a DFT frozen-phonon check needs (``benchmarks/elph_frozen_phonon_dft.py --mode K``): the DFT gives
forces and a Wannier H at a few displaced supercell geometries, never a complex pattern; this module turns them
into the same quantities ``coupling.matrix_elements`` gives for the model.

Conventions as in ``coupling.py``: a Bloch mode at q on a commensurate supercell has the complex pattern
u_s = e_{prim(s)} e^{2πi q·L_s} / sqrt(M) (Å/amu^½ per unit normal coordinate); its real part Re u = (u + u*)/2
is a standing wave of q and −q. Primitive Bloch states are embedded as c(s, o) = e^{2πi k·L_s} c_o(k)/sqrt(N_s).
"""
from __future__ import annotations

from typing import Any

import numpy as np

from .phonons import EV_TO_CM, OMEGA_EV, Supercell


def real_pattern(u: np.ndarray) -> tuple[np.ndarray, float, np.ndarray]:
    """Real displacement pattern of a complex Bloch pattern ``u`` (n_sc, 3) (Å/amu^½).

    The global phase is chosen so that Σ_s u_s·u_s is real and positive (the largest real part). Returns
    ``(p_hat, c, u_phased)``: p_hat (n_sc, 3) = Re u / c with c = max_s |Re u_s| (so max |p_hat_s| = 1, Å per unit
    λ of positions r + λ·p_hat), c in Å/amu^½, and the re-phased complex pattern (Re u_phased = c·p_hat).
    ValueError for a pattern that is zero or not (n, 3)."""
    u = np.asarray(u, dtype=complex)
    if u.ndim != 2 or u.shape[1] != 3:
        raise ValueError(f"pattern must have shape (n_atoms, 3), got {u.shape}")
    s = np.sum(u * u)
    u = u * np.exp(-0.5j * np.angle(s)) if abs(s) > 1e-14 * max(np.sum(np.abs(u) ** 2), 1e-300) else u
    c = float(np.linalg.norm(u.real, axis=1).max())
    if not np.isfinite(c) or c <= 0:
        raise ValueError("the real part of the pattern is zero (or not finite)")
    return u.real / c, c, u


def frozen_phonon_frequency(f_plus: np.ndarray, f_minus: np.ndarray, p_hat: np.ndarray, masses: np.ndarray,
                            step: float) -> float:
    """Frequency (cm⁻¹, negative = imaginary) along a real pattern from forces at λ = ±``step``.

    f_plus, f_minus: (n, 3) eV/Å at positions r ± step·p_hat; p_hat: (n, 3) Å per unit λ; masses: (n,) amu;
    step: Å. ω² = k/m with k = −d(F·p̂)/dλ (central difference, eV/Å²) and m = Σ_a M_a |p̂_a|² (amu): the
    Rayleigh quotient of the force constants, the mode's ω² when p̂ is an eigenvector of the dynamics (a real
    standing wave of a ±q pair is one). The even (anharmonic) part of F·p̂ cancels; the error is O(step²)."""
    f_plus, f_minus, p_hat = (np.asarray(x, dtype=float) for x in (f_plus, f_minus, p_hat))
    masses = np.asarray(masses, dtype=float)
    if p_hat.ndim != 2 or p_hat.shape[1:] != (3,) or f_plus.shape != p_hat.shape or f_minus.shape != p_hat.shape \
            or masses.shape != (len(p_hat),):
        raise ValueError(f"forces {f_plus.shape}, {f_minus.shape}, pattern {p_hat.shape} and masses {masses.shape} "
                         "must agree ((n, 3) and (n,))")
    for name, x in (("f_plus", f_plus), ("f_minus", f_minus), ("p_hat", p_hat), ("masses", masses)):
        if not np.all(np.isfinite(x)):
            raise ValueError(f"{name} has non-finite entries")
    if not np.all(masses > 0):
        raise ValueError(f"masses must be > 0 amu, got {masses.min()}")
    if not (np.isfinite(step) and step > 0):
        raise ValueError(f"step must be finite and > 0 Å, got {step}")
    k = -(np.sum(f_plus * p_hat) - np.sum(f_minus * p_hat)) / (2.0 * step)
    m = float(np.sum(masses[:, None] * p_hat ** 2))
    w2 = k / m
    return float(np.sign(w2) * np.sqrt(abs(w2)) * OMEGA_EV * EV_TO_CM)


def embedding(sc: Supercell, n_orb: Any, k: Any) -> np.ndarray:
    """(norb_sc, norb_prim) complex: the primitive Bloch basis at ``k`` (fractional) in the supercell's orbitals
    (orbitals ordered by atom, ``n_orb`` (n_prim,) orbitals per primitive atom; columns orthonormal)."""
    n_orb = np.asarray(n_orb, dtype=int)
    first_prim = np.concatenate([[0], np.cumsum(n_orb)[:-1]])
    per_sc = n_orb[sc.prim]
    first_sc = np.concatenate([[0], np.cumsum(per_sc)[:-1]])
    E = np.zeros((int(per_sc.sum()), int(n_orb.sum())), dtype=complex)
    phase = np.exp(2j * np.pi * sc.L @ np.asarray(k, dtype=float)) / np.sqrt(sc.size)
    for s, a in enumerate(sc.prim):
        o = np.arange(n_orb[a])
        E[first_sc[s] + o, first_prim[a] + o] = phase[s]
    return E


def matrix_from_real_pattern(dh_sc: np.ndarray, sc: Supercell, n_orb: Any, k: Any, q: Any) -> np.ndarray:
    """⟨k+q| ∂_q H |k⟩ (norb_prim, norb_prim) in the primitive Wannier-Bloch basis from ``dh_sc``
    (norb_sc, norb_sc), the supercell dH(K = k·Pᵀ) along the real pattern Re u (eV per unit normal coordinate of
    u, or any unit): ∂_{Re u} H = (∂_q H + ∂_{−q} H)/2 and only ∂_q H connects k to k+q (crystal momentum;
    needs 2q ≠ 0 modulo the reciprocal lattice, ValueError otherwise), so the element is 2·E(k+q)† dH E(k)."""
    q = np.asarray(q, dtype=float)
    two_q = 2 * q
    if np.abs(two_q - np.round(two_q)).max() < 1e-8:
        raise ValueError(f"q = {q.tolist()} equals −q: a real pattern does not separate q from −q there")
    E_kq, E_k = embedding(sc, n_orb, np.asarray(k, float) + q), embedding(sc, n_orb, k)
    dh_sc = np.asarray(dh_sc)
    if dh_sc.shape != (E_k.shape[0],) * 2:
        raise ValueError(f"dh_sc must be ({E_k.shape[0]}, {E_k.shape[0]}), got {dh_sc.shape}")
    if not np.all(np.isfinite(dh_sc)):
        raise ValueError("dh_sc has non-finite entries")
    return 2.0 * E_kq.conj().T @ dh_sc @ E_k


def sign_reversing_symmetry(atoms: Any, p_hat: np.ndarray, step: float, tol: float = 1e-5
                            ) -> tuple[np.ndarray, np.ndarray] | None:
    """A space-group operation g of the undisplaced ``atoms`` (spglib) that maps the structure displaced by
    +step·p_hat onto the one displaced by −step·p_hat, or None if there is none.

    Returns ``(perm, rot)``: atom a of the +step structure goes to atom perm[a] of the −step structure, and rot
    (3, 3) is the Cartesian rotation, so forces obey F(−)[perm[a]] = rot @ F(+)[a] and, for orbitals that are
    all pz (or all even under rot up to one common sign), H(−)(Γ)[perm[i], perm[j]] = H(+)(Γ)[i, j]. With such a g
    the energy is even in λ along p_hat and one displaced calculation gives both sides of a central difference.
    ``tol``: Å, position match after the operation (modulo lattice vectors)."""
    import spglib

    p_hat = np.asarray(p_hat, dtype=float)
    if p_hat.shape != (len(atoms), 3) or not np.all(np.isfinite(p_hat)):
        raise ValueError(f"p_hat must be a finite ({len(atoms)}, 3) array, got shape {p_hat.shape}")
    if not (np.isfinite(step) and step > 0):
        raise ValueError(f"step must be finite and > 0 Å, got {step}")
    cell = np.asarray(atoms.cell[:], float)
    sym = spglib.get_symmetry((cell, atoms.get_scaled_positions(wrap=False), atoms.numbers), symprec=1e-4)
    if sym is None:
        return None
    plus = atoms.positions + step * p_hat
    minus = atoms.positions - step * p_hat
    inv = np.linalg.inv(cell)
    f_minus = minus @ inv
    for W, t in zip(sym["rotations"], sym["translations"]):
        f_new = (plus @ inv) @ W.T + t                                      # fractional images of the + atoms
        d = f_new[:, None, :] - f_minus[None, :, :]
        d -= np.round(d)
        dist = np.linalg.norm(d @ cell, axis=2)                             # (n_plus, n_minus) Å
        perm = np.argmin(dist, axis=1)
        if np.all(dist[np.arange(len(perm)), perm] < tol) and len(set(perm.tolist())) == len(perm) and np.all(
                atoms.numbers[perm] == atoms.numbers):
            rot = cell.T @ W @ inv.T
            return perm, rot
    return None
