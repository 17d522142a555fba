"""Reference Slater–Koster pz model for carbon (Moon–Koshino form). **A test/benchmark model, not DFT.**

Every pair of carbon pz orbitals at separation d (vector from orbital i to orbital j + R, Å) is coupled by

    t(d) = V_ppπ(d) [1 − (d_z/d)²] + V_ppσ(d) (d_z/d)²                                  (eV)
    V_ppπ(d) = V_ppπ⁰ exp(−(d − a₀)/r₀),   V_ppσ(d) = V_ppσ⁰ exp(−(d − d₀)/r₀)

with the published parameters of P. Moon and M. Koshino, "Optical absorption in twisted bilayer graphene",
Phys. Rev. B 87, 205404 (2013), arXiv:1302.5218: V_ppπ⁰ = −2.7 eV, V_ppσ⁰ = 0.48 eV, a₀ = a/√3 ≈ 1.420 Å
(a = 2.46 Å), d₀ = 3.35 Å, r₀ = 0.184 a ≈ 0.453 Å (so the second-neighbour in-plane hopping is 0.1 V_ppπ⁰).
Hoppings beyond ``cutoff`` (default 6 Å, our choice; configurable) are dropped; on-site energy ``onsite`` (0 eV).

The model is Hermitian by construction: each unordered pair from a half neighbour list (vesin, O(N) cell list,
periodic images as lattice shifts R) is stored as H_ij(R) = t and H_ji(−R) = t.

Example:
    >>> from ase_wannierml.structures import bilayer
    >>> tb = moon_koshino_tb(bilayer("graphene", "AB"))
    >>> tb.norb, tb.num_electrons
    (4, 4.0)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import vesin
from ase import Atoms

from .tb.tightbinding import OrbitalTable, TightBinding

__all__ = ["MoonKoshinoParams", "moon_koshino_hamiltonian", "moon_koshino_hopping", "moon_koshino_pairs",
           "moon_koshino_tb"]

_A_GRAPHENE = 2.46  # Å, the lattice constant the published parameters refer to


@dataclass(frozen=True)
class MoonKoshinoParams:
    """Parameters of the Moon–Koshino pz model (eV, Å); defaults are the published ones (PRB 87, 205404)."""

    v_pi0: float = -2.7
    v_sigma0: float = 0.48
    a0: float = _A_GRAPHENE / np.sqrt(3.0)
    d0: float = 3.35
    r0: float = 0.184 * _A_GRAPHENE
    cutoff: float = 6.0
    onsite: float = 0.0

    def __post_init__(self) -> None:
        if self.cutoff <= 0 or self.r0 <= 0:
            raise ValueError(f"cutoff and r0 must be positive (Å), got cutoff={self.cutoff}, r0={self.r0}")


def moon_koshino_hopping(d_n3: np.ndarray, params: MoonKoshinoParams = MoonKoshinoParams()) -> np.ndarray:
    """Hopping t (eV), shape (n,), for separation vectors ``d_n3`` (n, 3) Å (z is the layer normal)."""
    d_n3 = np.asarray(d_n3, dtype=float)
    if d_n3.ndim != 2 or d_n3.shape[1] != 3:
        raise ValueError(f"separation vectors must have shape (n, 3) Å, got {d_n3.shape}")
    d = np.linalg.norm(d_n3, axis=1)
    if np.any(d < 1e-8):
        raise ValueError("zero separation between two orbitals (overlapping atoms?)")
    nz2 = (d_n3[:, 2] / d) ** 2
    v_pi = params.v_pi0 * np.exp(-(d - params.a0) / params.r0)
    v_sigma = params.v_sigma0 * np.exp(-(d - params.d0) / params.r0)
    return v_pi * (1.0 - nz2) + v_sigma * nz2


def moon_koshino_pairs(atoms: Atoms, params: MoonKoshinoParams = MoonKoshinoParams(),
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Half list of couplings: (i (n,) int32, j (n,) int32, R (n, 3) int32, t (n,) eV), each unordered pair once.

    The hermitian partner (j, i, −R, t) is implied. Uses vesin's O(N) neighbour list with the cell's pbc.
    """
    if len(atoms) == 0:
        raise ValueError("atoms is empty")
    if any(s != "C" for s in set(atoms.get_chemical_symbols())):
        raise ValueError(f"the Moon–Koshino model is for carbon only, got {sorted(set(atoms.get_chemical_symbols()))}")
    pbc = [bool(p) for p in atoms.pbc]
    cell = atoms.cell.complete() if not all(pbc) else atoms.cell[:]
    nl = vesin.NeighborList(cutoff=params.cutoff, full_list=False)
    i, j, S, D = nl.compute(atoms.positions, np.asarray(cell), pbc, "ijSD")
    t = np.empty(len(i))
    for a in range(0, len(i), 1 << 22):  # chunks keep the temporaries small for 10^6-atom cells
        t[a:a + (1 << 22)] = moon_koshino_hopping(D[a:a + (1 << 22)], params)
    del D
    itype = np.int32 if len(atoms) < 2**31 else np.int64
    return i.astype(itype), j.astype(itype), S.astype(np.int32), t


def moon_koshino_tb(atoms: Atoms, params: MoonKoshinoParams = MoonKoshinoParams(),
                    check_hermitian: bool = False) -> TightBinding:
    """Reference (not DFT) pz tight-binding model of a carbon structure → :class:`TightBinding`.

    One pz orbital per atom (label "pz", in atom order; ``layer`` copied from ``atoms.arrays["layer"]``),
    ``num_electrons`` = number of atoms (half filling). Hermitian by construction, so the constructor's
    O(nnz log nnz) check is off unless ``check_hermitian=True``.
    """
    i, j, R, t = moon_koshino_pairs(atoms, params)
    n = len(atoms)
    diag = np.arange(n, dtype=i.dtype)
    rows = np.concatenate([i, j, diag])
    cols = np.concatenate([j, i, diag])
    R_all = np.concatenate([R, -R, np.zeros((n, 3), R.dtype)])
    values = np.concatenate([t, t, np.full(n, params.onsite)])
    del i, j, R, t
    return TightBinding(
        atoms.cell[:], R_all, rows, cols, values,
        OrbitalTable.from_atoms(atoms, {"C": ["pz"]}),
        pbc=tuple(bool(p) for p in atoms.pbc), atoms=atoms, num_electrons=float(n),
        check_hermitian=check_hermitian,
    )


def moon_koshino_hamiltonian(atoms: Atoms, k: np.ndarray = (0.0, 0.0, 0.0),
                             params: MoonKoshinoParams = MoonKoshinoParams()) -> sp.csr_matrix:
    """H(k) (norb, norb) CSR, eV, of the reference model straight from the pair list, k fractional (3,).

    Same matrix as ``moon_koshino_tb(atoms).hamiltonian_sparse(k)`` (phase exp(+2πi k·R), Wannier90 convention)
    without building the ``TightBinding`` (about 4× less memory): meant for 10⁶-orbital KPM. Real at k = 0.
    """
    k = np.asarray(k, dtype=float)
    if k.shape != (3,):
        raise ValueError(f"k must have shape (3,) in fractional coordinates, got {k.shape}")
    i, j, R, t = moon_koshino_pairs(atoms, params)
    n = len(atoms)
    if np.any(k != 0):
        t = t * np.exp(2j * np.pi * (R @ k))
    del R
    diag = np.arange(n, dtype=i.dtype)
    rows, cols = np.concatenate([i, j, diag]), np.concatenate([j, i, diag])
    del i, j
    values = np.concatenate([t, np.conj(t), np.full(n, params.onsite, dtype=t.dtype)])
    del t
    H = sp.coo_matrix((values, (rows, cols)), shape=(n, n)).tocsr()  # sums images of the same pair
    H.sort_indices()
    return H
