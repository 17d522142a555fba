"""Change of basis Wannier90 ↔ e3nn and the Clebsch–Gordan block assembly (physics oracle: real harmonics)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from e3nn import o3

from ase_wannierml.model.irreps_basis import block_basis, shell_pair_irreps, w90_from_e3nn, wigner_d_w90
from ase_wannierml.model.utils import default_dtype
from ase_wannierml.orbitals import real_harmonics


def _unit(n: int, seed: int) -> np.ndarray:
    xyz = np.random.default_rng(seed).normal(size=(n, 3))
    return xyz / np.linalg.norm(xyz, axis=1, keepdims=True)


@pytest.mark.parametrize("l", [0, 1, 2])
def test_change_of_basis_maps_e3nn_to_wannier90(l):
    xyz = _unit(20, 0)
    u = w90_from_e3nn(l)
    y_e3nn = o3.spherical_harmonics(l, torch.from_numpy(xyz), True, normalization="integral").numpy()
    np.testing.assert_allclose(y_e3nn @ u.T, real_harmonics(l, xyz), atol=1e-12)
    np.testing.assert_allclose(u @ u.T, np.eye(2 * l + 1), atol=1e-12)


def test_p_order_is_pz_px_py():
    np.testing.assert_allclose(w90_from_e3nn(1), [[0, 0, 1], [1, 0, 0], [0, 1, 0]], atol=1e-12)


@pytest.mark.parametrize("l", [1, 2])
def test_wigner_d_rotates_wannier90_harmonics(l):
    """Y_w90(R r) = D(R) Y_w90(r) for proper and improper R (parity (-1)^l)."""
    torch.manual_seed(0)
    xyz = _unit(10, 1)
    for rot in (o3.rand_matrix(dtype=torch.float64), -o3.rand_matrix(dtype=torch.float64)):
        d = wigner_d_w90(l, rot).numpy()
        np.testing.assert_allclose(real_harmonics(l, xyz @ rot.numpy().T), real_harmonics(l, xyz) @ d.T, atol=1e-12)


def test_parity_of_block_irreps():
    assert str(shell_pair_irreps(1, 1)) == "1x0e+1x1e+1x2e"
    assert str(shell_pair_irreps(2, 1)) == "1x1o+1x2o+1x3o"
    assert str(shell_pair_irreps(0, 2)) == "1x2e"


@pytest.mark.parametrize("shells", [(["s"], ["p"]), (["d"], ["p"]), (["s", "p", "d"], ["d", "s"]), (["pz"], ["p"])])
def test_block_rotates_with_wigner_d(shells):
    """c ↦ D_irreps(R) c gives block ↦ D^{a} B D^{b}ᵀ (partial shells: for rotations about z and mirrors)."""
    irreps, m = block_basis(*shells)
    c = torch.randn(irreps.dim, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    phi = 0.7
    rz = torch.tensor([[np.cos(phi), -np.sin(phi), 0], [np.sin(phi), np.cos(phi), 0], [0, 0, 1.0]],
                      dtype=torch.float64)
    partial = any("pz" in s for s in shells)
    rots = [rz, torch.diag(torch.tensor([1.0, 1.0, -1.0], dtype=torch.float64)) @ rz]
    if not partial:
        rots.append(-o3.rand_matrix(dtype=torch.float64))
    for rot in rots:
        with default_dtype(torch.float64):
            dc = irreps.D_from_matrix(rot) @ c
        d_a, d_b = (_orbital_d(s, rot) for s in shells)
        b = torch.einsum("q,qmn->mn", c, m)
        torch.testing.assert_close(torch.einsum("q,qmn->mn", dc, m), d_a @ b @ d_b.T, atol=1e-12, rtol=0)


def _orbital_d(shells, rot):
    mats = []
    for shell in shells:
        l = {"s": 0, "p": 1, "d": 2, "pz": 1}[shell]
        d = wigner_d_w90(l, rot)
        mats.append(d[:1, :1] if shell == "pz" else d)
    return torch.block_diag(*mats)


def test_sigma_bond_block_is_slater_koster():
    """A p–p block from 0e and 2e coefficients ∝ Y2(r̂) spans {1, r̂ r̂ᵀ}: the Slater–Koster V_ppσ/V_ppπ form
    (in Wannier90 order pz, px, py) — a check of the convention against geometry, independent of e3nn."""
    irreps, m = block_basis(["p"], ["p"])
    rhat = _unit(1, 5)[0]
    y2 = o3.spherical_harmonics(2, torch.from_numpy(rhat), True, normalization="component")
    c = torch.zeros(irreps.dim, dtype=torch.float64)
    c[0] = 0.3                         # 0e
    c[4:9] = 1.7 * y2                  # 2e (after the three 1e components)
    block = torch.einsum("q,qmn->mn", c, m).numpy()
    r = rhat[[2, 0, 1]]                # (z, x, y): Wannier90 p order
    basis = np.stack([np.eye(3).ravel(), np.outer(r, r).ravel()], axis=1)
    coef, *_ = np.linalg.lstsq(basis, block.ravel(), rcond=None)
    np.testing.assert_allclose(basis @ coef, block.ravel(), atol=1e-12)
    assert abs(coef[1]) > 0.1
