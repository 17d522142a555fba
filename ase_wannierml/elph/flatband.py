"""Coupling of a few states near an energy (e.g. the flat bands of a twisted bilayer) to one displacement pattern:
Hellmann–Feynman matrix ⟨ψ_m(k)| dH(k)/dλ |ψ_n(k)⟩ from the sparse solver's eigenvectors, O(nnz) memory.

No dense object of size 3N × norb² (or even norb²) is formed: dH/dλ along the pattern is one sparse
``TightBinding`` (``WannierMLCalculator.get_hamiltonian_derivative``), H(k) and dH(k) are sparse matrices, and only
the ``num`` eigenvectors near ``near`` are computed (``tb.solvers.solve_near_auto``).
"""
from __future__ import annotations

from typing import Any

import numpy as np

from ase_wannierml.tb import solvers


def rigid_layer_pattern(atoms: Any, kind: str = "breathing") -> np.ndarray:
    """(n_atoms, 3) pattern of a bilayer (``atoms.arrays["layer"]`` in {0, 1}) for λ = relative layer displacement
    in Å: ``"breathing"`` layer 0 by −λ/2 ẑ, layer 1 by +λ/2 ẑ; ``"shear"`` the same along x̂ (q = 0 modes)."""
    layer = np.asarray(atoms.arrays.get("layer", []))
    if len(layer) != len(atoms) or set(np.unique(layer).tolist()) != {0, 1}:
        raise ValueError("rigid_layer_pattern needs a bilayer with atoms.arrays['layer'] in {0, 1}")
    axis = {"breathing": 2, "shear": 0}.get(kind)
    if axis is None:
        raise ValueError(f"unknown pattern {kind!r}; use 'breathing' or 'shear'")
    u = np.zeros((len(atoms), 3))
    u[:, axis] = np.where(layer == 0, -0.5, 0.5)
    return u


def state_coupling(tb: Any, dtb: Any, kpts: Any, num: int, near: float, degenerate_tol: float = 1e-4) -> dict:
    """States near ``near`` (eV) and their coupling to dH/dλ at each k (fractional, (nk, 3)).

    Returns ``energies`` (nk, num) eV, ``matrix`` (nk, num, num) complex eV/Å = ⟨ψ_m|dH/dλ|ψ_n⟩ and ``shifts``
    (nk, num) eV/Å: first-order energy changes dE_n/dλ (Hellmann–Feynman; inside clusters of states closer than
    ``degenerate_tol`` eV the eigenvalues of the cluster's block, i.e. degenerate perturbation theory, sorted).
    """
    kpts = np.asarray(kpts, dtype=float).reshape(-1, 3)
    if num < 1 or num > tb.norb:
        raise ValueError(f"num must be in 1..{tb.norb}, got {num}")
    e_out = np.zeros((len(kpts), num))
    g_out = np.zeros((len(kpts), num, num), dtype=complex)
    s_out = np.zeros((len(kpts), num))
    for ik, k in enumerate(kpts):
        h = tb.hamiltonian_sparse(k, allow_real=True)
        res = solvers.solve_near_auto(h, num, near, return_vectors=True)
        order = np.argsort(res.values)
        e, v = res.values[order], res.vectors[:, order]
        dh = dtb.hamiltonian_sparse(k, allow_real=True)
        g = v.conj().T @ (dh @ v)
        g = 0.5 * (g + g.conj().T)
        shifts = np.real(np.diag(g)).copy()
        start = 0
        for stop in range(1, num + 1):
            if stop == num or e[stop] - e[stop - 1] > degenerate_tol:
                if stop - start > 1:
                    shifts[start:stop] = np.linalg.eigvalsh(g[start:stop, start:stop])
                start = stop
        e_out[ik], g_out[ik], s_out[ik] = e, g, shifts
    return {"energies": e_out, "matrix": g_out, "shifts": s_out}
