"""TightBinding storage, H(k), eigenvalues and band paths; physics oracle: nearest-neighbour graphene."""
from __future__ import annotations

import numpy as np
import pytest
from ase import Atoms
from conftest import GRAPHENE_EPS, GRAPHENE_T, graphene_atoms, neighbour_model, random_hermitian_model

from ase_wannierml import TightBinding
from ase_wannierml.orbitals import element_orbitals, real_harmonics, shell_orbitals
from ase_wannierml.tb.tightbinding import OrbitalTable


def special_point(tb: TightBinding, name: str) -> np.ndarray:
    """Fractional coordinates of a special point of the 2D hexagonal lattice, from ASE (independent of our code)."""
    path = tb.atoms.cell.bandpath(pbc=[True, True, False], npoints=0)
    return np.asarray(path.special_points[name])


def test_graphene_dirac_point_and_gamma(graphene):
    k_K = special_point(graphene, "K")
    e_K = graphene.eigenvalues([k_K])[0]
    np.testing.assert_allclose(e_K, [GRAPHENE_EPS, GRAPHENE_EPS], atol=1e-10)
    e_G = graphene.eigenvalues([[0, 0, 0]])[0]
    np.testing.assert_allclose(e_G, [GRAPHENE_EPS - 3 * abs(GRAPHENE_T), GRAPHENE_EPS + 3 * abs(GRAPHENE_T)], atol=1e-12)
    e_M = graphene.eigenvalues([special_point(graphene, "M")])[0]  # saddle point: ±|t|
    np.testing.assert_allclose(e_M, [GRAPHENE_EPS - abs(GRAPHENE_T), GRAPHENE_EPS + abs(GRAPHENE_T)], atol=1e-12)


def test_hamiltonian_hermitian_and_matches_sparse():
    tb = random_hermitian_model(norb=4, seed=1)
    k_k3 = np.random.default_rng(2).random((5, 3))
    H_kij = tb.hamiltonian(k_k3)
    assert H_kij.shape == (5, 4, 4) and H_kij.dtype == complex
    np.testing.assert_allclose(H_kij, H_kij.conj().transpose(0, 2, 1), atol=1e-14)
    for k_3, H_ij in zip(k_k3, H_kij):
        np.testing.assert_allclose(tb.hamiltonian_sparse(k_3).toarray(), H_ij, atol=1e-14)
    # independent reference: the explicit Fourier sum over the stored triplets
    k_3 = k_k3[0]
    ref = np.zeros((4, 4), complex)
    for R, i, j, v in zip(tb.R, tb.rows, tb.cols, tb.values):
        ref[i, j] += v * np.exp(2j * np.pi * k_3 @ R)
    np.testing.assert_allclose(H_kij[0], ref, atol=1e-13)


def test_duplicates_are_summed(graphene):
    half = graphene.values / 2
    R = np.concatenate([graphene.R, graphene.R])
    tb = TightBinding(graphene.cell, R, np.tile(graphene.rows, 2), np.tile(graphene.cols, 2),
                      np.concatenate([half, half]), graphene.orbitals, pbc=graphene.pbc)
    assert tb.nnz == graphene.nnz
    k = [[0.1, 0.27, 0]]
    np.testing.assert_allclose(tb.hamiltonian(k), graphene.hamiltonian(k), atol=1e-14)


def test_non_hermitian_input_names_the_element(graphene):
    values = graphene.values.copy()
    i = int(np.flatnonzero((graphene.rows == 0) & (graphene.cols == 1) & np.all(graphene.R == 0, axis=1))[0])
    values[i] += 0.05
    with pytest.raises(ValueError, match=r"not Hermitian: H\[0,1\]\(R=\[0, 0, 0\]\).*0\.05"):
        TightBinding(graphene.cell, graphene.R, graphene.rows, graphene.cols, values, graphene.orbitals,
                     pbc=graphene.pbc)
    tb = TightBinding(graphene.cell, graphene.R, graphene.rows, graphene.cols, values, graphene.orbitals,
                      pbc=graphene.pbc, check_hermitian=False)
    assert tb.hermitize().check_hermitian() < 1e-15


def test_missing_partner_is_reported():
    with pytest.raises(ValueError, match="missing"):
        TightBinding(np.eye(3), [[1, 0, 0]], [0], [0], [0.1], OrbitalTable.unknown(1))


def test_bad_construction_arguments():
    orbs = OrbitalTable.unknown(2)
    with pytest.raises(ValueError, match="cols out of range"):
        TightBinding(np.eye(3), [[0, 0, 0]], [0], [2], [1.0], orbs)
    with pytest.raises(ValueError, match="non-periodic direction"):
        TightBinding(np.eye(3), [[0, 0, 1], [0, 0, -1]], [0, 0], [0, 0], [1.0, 1.0], orbs, pbc=(True, True, False))
    with pytest.raises(ValueError, match="lengths differ"):
        TightBinding(np.eye(3), [[0, 0, 0]], [0, 1], [0], [1.0], orbs)
    with pytest.raises(ValueError, match="cell must be"):
        TightBinding(np.eye(2), [[0, 0, 0]], [0], [0], [1.0], orbs)


def test_wrong_shape_kpts_is_a_clear_error(graphene):
    with pytest.raises(ValueError, match=r"kpts must have shape \(nk, 3\)"):
        graphene.hamiltonian([0.0, 0.0, 0.0])
    with pytest.raises(ValueError, match=r"kpts must have shape \(nk, 3\)"):
        graphene.eigenvalues(np.zeros((4, 2)))
    with pytest.raises(ValueError, match=r"k must have shape \(3,\)"):
        graphene.hamiltonian_sparse([[0.0, 0.0, 0.0]])


def test_real_symmetric_path_at_time_reversal_invariant_k():
    tb = random_hermitian_model(norb=5, seed=3, complex_values=False)
    for k_3 in ([0, 0, 0], [0.5, 0, 0], [0.5, 0.5, 0]):
        H_real = tb.hamiltonian_sparse(k_3, allow_real=True)
        assert H_real.dtype == np.float64
        np.testing.assert_allclose(H_real.toarray(), tb.hamiltonian([k_3])[0], atol=1e-14)
    assert tb.hamiltonian_sparse([0.25, 0, 0], allow_real=True).dtype == complex
    assert not random_hermitian_model(norb=5, seed=3).is_real_at([0, 0, 0])


def test_dense_and_sparse_eigenvalues_agree():
    atoms = graphene_atoms().repeat((6, 6, 1))
    tb = neighbour_model(atoms, GRAPHENE_T, GRAPHENE_EPS, 1.6)
    k_k3 = np.array([[0, 0, 0], [0.1, 0.3, 0], [0.5, 0, 0]])
    e_dense = tb.eigenvalues(k_k3)
    near = GRAPHENE_EPS + 0.35
    e_near = tb.eigenvalues(k_k3, num=8, near=near)
    assert e_near.shape == (3, 8)
    for e_n, e_all in zip(e_near, e_dense):
        expected = np.sort(e_all[np.argsort(np.abs(e_all - near), kind="stable")[:8]])
        np.testing.assert_allclose(e_n, expected, atol=1e-8)


def test_band_structure_graphene(graphene):
    bs = graphene.band_structure(npoints=60)
    assert "K" in bs.path.path and bs.energies.shape == (1, len(bs.path.kpts), 2)
    assert bs.reference == pytest.approx(GRAPHENE_EPS, abs=1e-9)  # half filling: E_F at the Dirac point
    assert np.abs(bs.energies - GRAPHENE_EPS).min() < 1e-9  # the path crosses K
    bs2 = graphene.band_structure("GMKG", npoints=30)
    np.testing.assert_allclose(bs2.energies[0, 0], [GRAPHENE_EPS - 8.1, GRAPHENE_EPS + 8.1], atol=1e-12)


def test_band_path_uses_in_plane_directions_only():
    atoms = graphene_atoms()
    atoms.pbc = True  # slab with pbc T T T but no hopping along c: still a 2D path
    tb = neighbour_model(atoms, GRAPHENE_T, GRAPHENE_EPS, 1.6)
    path = tb.band_structure(npoints=40).path
    assert np.all(path.kpts[:, 2] == 0)


def test_band_structure_of_non_periodic_system_is_a_clear_error():
    atoms = Atoms("C2", positions=[[0, 0, 0], [1.42, 0, 0]], cell=[10, 10, 10], pbc=False)
    tb = neighbour_model(atoms, GRAPHENE_T, 0.0, 1.6)
    np.testing.assert_allclose(tb.eigenvalues([[0, 0, 0]])[0], [-2.7, 2.7], atol=1e-12)
    with pytest.raises(ValueError, match="needs a periodic cell"):
        tb.band_structure()


def test_orbital_shells_and_table():
    assert shell_orbitals("d") == [(2, "dz2"), (2, "dxz"), (2, "dyz"), (2, "dx2-y2"), (2, "dxy")]
    assert element_orbitals(["s", "pz"]) == [(0, "s"), (1, "pz")]
    with pytest.raises(ValueError, match="unknown orbital shell 'q'"):
        shell_orbitals("q")
    with pytest.raises(ValueError, match="repeat"):
        element_orbitals(["p", "pz"])
    atoms = Atoms("MoS2", positions=np.zeros((3, 3)))
    table = OrbitalTable.from_atoms(atoms, {"Mo": ["d"], "S": ["p"]})
    assert table.norb == 11
    assert table.label.tolist()[:6] == ["dz2", "dxz", "dyz", "dx2-y2", "dxy", "pz"]
    assert table.atom_index.tolist() == [0] * 5 + [1] * 3 + [2] * 3
    with pytest.raises(ValueError, match=r"no orbital shells given for elements \['S'\]"):
        OrbitalTable.from_atoms(atoms, {"Mo": ["d"]})


@pytest.mark.parametrize("l", [0, 1, 2])
def test_real_harmonics_orthonormal_and_named_axes(l):
    # Gauss–Legendre in cos θ × uniform φ integrates these polynomials exactly
    x_c, w_c = np.polynomial.legendre.leggauss(8)
    phi = np.linspace(0, 2 * np.pi, 16, endpoint=False)
    ct, ph = np.meshgrid(x_c, phi, indexing="ij")
    st = np.sqrt(1 - ct**2)
    xyz = np.stack([st * np.cos(ph), st * np.sin(ph), ct], axis=-1).reshape(-1, 3)
    w = (w_c[:, None] * np.full(len(phi), 2 * np.pi / len(phi))[None]).ravel()
    Y = real_harmonics(l, xyz)
    np.testing.assert_allclose(Y.T @ (w[:, None] * Y), np.eye(2 * l + 1), atol=1e-12)
    if l == 1:  # pz, px, py point along z, x, y
        np.testing.assert_allclose(np.argmax(real_harmonics(1, np.eye(3)[[2, 0, 1]]), axis=1), [0, 1, 2])


def test_large_band_structure_defaults_to_bands_near_fermi_level(monkeypatch):
    from ase_wannierml.tb import kmesh

    atoms = graphene_atoms().repeat((6, 6, 1))
    tb = neighbour_model(atoms, GRAPHENE_T, GRAPHENE_EPS, 1.6, fermi_level=GRAPHENE_EPS)
    monkeypatch.setattr(kmesh, "EXACT_MAX_ORBITALS", 50)  # pretend 72 orbitals is "large"
    bs = tb.band_structure("GK", npoints=5)
    assert bs.energies.shape == (1, 5, 16) and bs.reference == GRAPHENE_EPS
    e_all = tb.eigenvalues(bs.path.kpts)
    for e_n, e_ref in zip(bs.energies[0], e_all):
        expected = np.sort(e_ref[np.argsort(np.abs(e_ref - GRAPHENE_EPS), kind="stable")[:16]])
        np.testing.assert_allclose(e_n, expected, atol=1e-8)


def test_compact_storage_and_unsorted_input(graphene):
    """int32 indices, R rebuilt from the distinct lattice vectors, any input order/dtype gives the same object."""
    rng = np.random.default_rng(1)
    perm = rng.permutation(graphene.nnz)
    tb = TightBinding(graphene.cell, graphene.R[perm].astype(np.int64), graphene.rows[perm].astype(np.int64),
                      graphene.cols[perm].astype(float), graphene.values[perm], graphene.orbitals, pbc=graphene.pbc)
    assert tb.rows.dtype == np.int32 and tb.cols.dtype == np.int32
    for name in ("R", "rows", "cols", "values"):
        np.testing.assert_array_equal(getattr(tb, name), getattr(graphene, name))
    assert tb.R.shape == (tb.nnz, 3) and not tb.R.flags.writeable
    np.testing.assert_array_equal(np.unique(tb.R, axis=0), tb.R_r)
    keys = tb.rows.astype(np.int64) * tb.norb + tb.cols  # canonical order: row, col, then R
    assert np.all(np.diff(keys) >= 0)
    k = [[0.13, -0.3, 0.0]]
    np.testing.assert_allclose(tb.hamiltonian(k), graphene.hamiltonian(k), atol=1e-14)
    np.testing.assert_allclose(tb.hamiltonian_sparse(k[0]).toarray(), graphene.hamiltonian(k)[0], atol=1e-14)
    with pytest.raises(ValueError, match="integer orbital indices"):
        TightBinding(graphene.cell, graphene.R, graphene.rows + 0.5, graphene.cols, graphene.values,
                     graphene.orbitals, pbc=graphene.pbc)


def test_onsite_energies_are_the_mean_of_the_bands_over_the_zone():
    """Σ_n ε_n(k) averaged over a uniform k-mesh equals Tr H(R=0) (the R ≠ 0 terms average out): an oracle for the
    onsite diagonal that does not read the storage."""
    tb = random_hermitian_model(norb=5, seed=3)
    n = 6
    k = np.array([[i / n, j / n, l / n] for i in range(n) for j in range(n) for l in range(n)])
    on = tb.onsite_energies()
    assert on.shape == (5,)
    np.testing.assert_allclose(tb.eigenvalues(k).sum(axis=1).mean(), on.sum(), atol=1e-10)
    H0 = tb.hamiltonian(k).mean(axis=0)           # mean H(k) over the mesh = H(R = 0)
    np.testing.assert_allclose(on, np.real(np.diag(H0)), atol=1e-10)
