"""Change of basis between Wannier90 real harmonics and e3nn's, and the Clebsch–Gordan assembly of H blocks.

Conventions (the one place they are fixed for the model; labels and order come from ``ase_wannierml.orbitals``):

- Orbital order within a shell is Wannier90's: l=0 ``s``; l=1 ``pz, px, py``; l=2 ``dz2, dxz, dyz, dx2-y2, dxy``,
  with Wannier90's signs (all positive prefactors, no Condon–Shortley phase: ``px ∝ +x``, ``dxy ∝ +xy``).
- e3nn's real spherical harmonics (``o3.spherical_harmonics``) use the order x, y, z for l=1 and a *y-polar* basis
  for l=2, so the change of basis for l=2 is not a permutation. ``w90_from_e3nn(l)`` is the orthogonal U with
  ``Y_w90(r̂) = U @ Y_e3nn(r̂)``, computed by least squares from both sets of functions and checked.
- An orbital of angular momentum l transforms under a rotation or improper rotation R (3×3) as the irrep
  ``Irrep(l, (-1)**l)``: ``Y_w90(R r̂) = D_w90(R) Y_w90(r̂)`` with ``D_w90 = U D_e3nn Uᵀ`` (:func:`wigner_d_w90`).
- A block ``H_ij`` with rows = orbitals (l1) of atom i and columns = orbitals (l2) of atom j transforms as
  ``H' = D^{l1} H D^{l2}ᵀ``; it is the direct sum of irreps L = |l1-l2| … l1+l2, all of parity (-1)^(l1+l2).
  :func:`block_basis` returns the constant tensor M with ``block = Σ_q c_q M[q]`` for coefficients c in those
  irreps (Wigner 3j symbols × sqrt(2L+1), so unit-variance c give unit-variance block entries).

Gauge requirement on training data: the Wannier functions must be projection-only (or otherwise covariant)
functions onto these standard real harmonics in the *global* frame, so that rotating the structure rotates the
data with D_w90. Maximally localised or local-frame Wannier functions are not covariant.

Partial shells (a single label such as ``"pz"``): the block of the whole shell is predicted and only the listed
rows/columns are kept. Such a block is equivariant only under the rotations R whose D_w90 does not mix the kept
components with the dropped ones: for ``pz`` these are rotations about z, mirrors z → −z and vertical mirrors
(the point group D∞h of a flat layer), i.e. the geometries of 2D materials, for which pz Wannier data are defined.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from e3nn import o3

from ase_wannierml.orbitals import W90_LABELS, real_harmonics, shell_orbitals

from .utils import default_dtype

_ORTHO_TOL = 1e-10


def w90_from_e3nn(l: int) -> np.ndarray:
    """Orthogonal (2l+1, 2l+1) U with ``Y_w90 = U @ Y_e3nn`` (both orthonormal on the sphere), float64."""
    rng = np.random.default_rng(1234)
    xyz = rng.normal(size=(64, 3))
    xyz /= np.linalg.norm(xyz, axis=1, keepdims=True)
    y_e3nn = o3.spherical_harmonics(l, torch.from_numpy(xyz), normalize=True, normalization="integral").numpy()
    y_w90 = real_harmonics(l, xyz)
    u_t, *_ = np.linalg.lstsq(y_e3nn, y_w90, rcond=None)  # y_w90 = y_e3nn @ U^T
    u = u_t.T
    err = max(np.abs(u @ u.T - np.eye(2 * l + 1)).max(), np.abs(y_e3nn @ u.T - y_w90).max())
    if err > _ORTHO_TOL:
        raise RuntimeError(f"change of basis for l={l} is not orthogonal (error {err:.2e}): e3nn convention changed?")
    return u


def wigner_d_w90(l: int, rotation: torch.Tensor) -> torch.Tensor:
    """Wigner D matrix (2l+1, 2l+1) of a (possibly improper) 3×3 rotation in the Wannier90 orbital basis.

    Uses e3nn's ``Irrep(l, (-1)**l).D_from_matrix`` (built in float64 for full precision), so that
    ``Y_w90(R r̂) = D @ Y_w90(r̂)``. Returns float64.
    """
    rot = torch.as_tensor(rotation, dtype=torch.float64)
    with default_dtype(torch.float64):
        d_e3nn = o3.Irrep(l, (-1) ** l).D_from_matrix(rot)
    u = torch.from_numpy(w90_from_e3nn(l))
    return u @ d_e3nn @ u.T


def shell_pair_irreps(l1: int, l2: int) -> o3.Irreps:
    """Irreps of an (l1, l2) block: L = |l1-l2| … l1+l2, each once, parity (-1)^(l1+l2)."""
    p = (-1) ** (l1 + l2)
    return o3.Irreps([(1, (L, p)) for L in range(abs(l1 - l2), l1 + l2 + 1)])


def shells_layout(shells: Sequence[str]) -> list[tuple[int, list[int], int]]:
    """Per shell: (l, kept component indices in Wannier90 order, offset of its first orbital in the atom)."""
    out, offset = [], 0
    for shell in shells:
        orbs = shell_orbitals(shell)
        l = orbs[0][0]
        comps = [W90_LABELS[l].index(label) for _, label in orbs]
        out.append((l, comps, offset))
        offset += len(comps)
    return out


def block_basis(shells_a: Sequence[str], shells_b: Sequence[str]) -> tuple[o3.Irreps, torch.Tensor]:
    """Irreps of the coefficients of an (atom a, atom b) block and the assembly tensor M (dim, n_a, n_b), float64.

    ``block[m, n] = Σ_q c[q] M[q, m, n]``: for every shell pair (in the order shells_a × shells_b) the irreps of
    :func:`shell_pair_irreps`; rows/columns in Wannier90 order (partial shells keep only their components).
    """
    lay_a, lay_b = shells_layout(shells_a), shells_layout(shells_b)
    n_a = sum(len(c) for _, c, _ in lay_a)
    n_b = sum(len(c) for _, c, _ in lay_b)
    irreps, mats = [], []
    for l1, comps1, off1 in lay_a:
        u1 = w90_from_e3nn(l1)[comps1]
        for l2, comps2, off2 in lay_b:
            u2 = w90_from_e3nn(l2)[comps2]
            for mul_ir in shell_pair_irreps(l1, l2):
                L = mul_ir.ir.l
                cg = o3.wigner_3j(l1, l2, L, dtype=torch.float64).numpy() * np.sqrt(2 * L + 1)
                m = np.zeros((2 * L + 1, n_a, n_b))
                m[:, off1:off1 + len(comps1), off2:off2 + len(comps2)] = np.einsum("am,mnq,bn->qab", u1, cg, u2)
                mats.append(m)
                irreps.append(mul_ir)
    return o3.Irreps(irreps), torch.from_numpy(np.concatenate(mats, axis=0))


def block_irreps_union(shell_sets: Sequence[Sequence[str]]) -> o3.Irreps:
    """Sorted set of the distinct irreps (multiplicity 1) any block between the given shell sets needs."""
    found = set()
    for shells_a in shell_sets:
        for shells_b in shell_sets:
            irreps, _ = block_basis(shells_a, shells_b)
            found.update(ir for _, ir in irreps)
    return o3.Irreps([(1, ir) for ir in sorted(found)])
