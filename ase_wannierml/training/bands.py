"""Differentiable band energies from Hamiltonian blocks on the model's pair list (torch).

For one structure with pair blocks B_p (rows: orbitals of atom i, cols: orbitals of atom j at r_j + S_p @ cell)

    H(k) = Σ_p w_p [ B_p e^{2πi k·S_p} ]_(i, j) + h.c.,   w_p = 1/2 for onsite pairs (i = j, S = 0), else 1,

i.e. each unordered pair contributes itself and its Hermitian partner H_ji(−S) = B_pᵀ. The orbital basis is atom
centred (phases from atom cell shifts), which differs from Wannier90's by a diagonal unitary: same eigenvalues.
"""
from __future__ import annotations

import torch


def hamiltonian_k(blocks: torch.Tensor, pair_index: torch.Tensor, pair_shift: torch.Tensor,
                  orbital_index: torch.Tensor, norb: int, kpts: torch.Tensor) -> torch.Tensor:
    """H(k) (nk, norb, norb) complex, eV.

    blocks: (n_pairs, max_orb, max_orb) real eV; pair_index: (2, n_pairs) atom indices *within the structure*;
    pair_shift: (n_pairs, 3) int; orbital_index: (n_atoms, max_orb) orbital number or -1; kpts: (nk, 3) fractional.
    """
    cdtype = torch.complex128 if blocks.dtype == torch.float64 else torch.complex64
    i, j = pair_index
    onsite = (i == j) & (pair_shift == 0).all(dim=1)
    weight = torch.where(onsite, 0.5, 1.0).to(blocks.dtype)
    rows = orbital_index[i][:, :, None].expand(-1, -1, blocks.shape[2])          # (P, mo, mo)
    cols = orbital_index[j][:, None, :].expand(-1, blocks.shape[1], -1)
    valid = (rows >= 0) & (cols >= 0)
    phase = torch.exp(2j * torch.pi * (kpts.to(blocks.dtype) @ pair_shift.to(blocks.dtype).T)).to(cdtype)  # (nk, P)
    vals = (phase[:, :, None, None] * (weight[:, None, None] * blocks).to(cdtype)[None])[:, valid]      # (nk, nnz)
    flat = (rows[valid] * norb + cols[valid]).expand(len(kpts), -1)
    h = torch.zeros((len(kpts), norb * norb), dtype=cdtype, device=blocks.device)
    h = h.scatter_add(1, flat, vals).reshape(len(kpts), norb, norb)
    return h + h.conj().transpose(1, 2)


def band_energies(blocks: torch.Tensor, pair_index: torch.Tensor, pair_shift: torch.Tensor,
                  orbital_index: torch.Tensor, norb: int, kpts: torch.Tensor) -> torch.Tensor:
    """Sorted eigenvalues (nk, norb), eV, of :func:`hamiltonian_k` (differentiable; gradients stay finite at
    degeneracies because only eigenvalues, not eigenvectors, are differentiated)."""
    return torch.linalg.eigvalsh(hamiltonian_k(blocks, pair_index, pair_shift, orbital_index, norb, kpts))
