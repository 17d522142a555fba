"""Reference Moon–Koshino pz model: hopping law, graphene Dirac point and bandwidth, AB-bilayer dimer splitting,
Hermiticity by construction, neighbour list against ASE, the direct sparse builder."""
from __future__ import annotations

import numpy as np
import pytest
from ase import Atoms
from ase.neighborlist import neighbor_list

from ase_wannierml.slater_koster import (MoonKoshinoParams, moon_koshino_hamiltonian, moon_koshino_hopping,
                                         moon_koshino_pairs, moon_koshino_tb)
from ase_wannierml.structures import bilayer, twisted_bilayer

A = 2.46


def graphene(a: float = A) -> Atoms:
    cell = [[a, 0, 0], [a / 2, a * np.sqrt(3) / 2, 0], [0, 0, 20.0]]
    return Atoms("C2", scaled_positions=[[0, 0, 0], [1 / 3, 1 / 3, 0]], cell=cell, pbc=[True, True, False])


def k_point(atoms: Atoms) -> np.ndarray:
    return atoms.cell.bandpath("GK", npoints=2).kpts[-1]


def test_hopping_law():
    p = MoonKoshinoParams()
    t = moon_koshino_hopping(np.array([[A / np.sqrt(3), 0, 0], [0, 0, 3.35], [A, 0, 0], [1.0, 0, 3.35]]))
    assert t[0] == pytest.approx(-2.7, abs=1e-12)  # in-plane nearest neighbour: V_ppπ⁰
    assert t[1] == pytest.approx(0.48, abs=1e-12)  # vertical at d₀: V_ppσ⁰
    assert t[2] == pytest.approx(-0.27, rel=1e-2)  # r₀ = 0.184 a makes the 2nd neighbour ≈ 0.1 V_ppπ⁰
    d = np.hypot(1.0, 3.35)
    n2 = (3.35 / d) ** 2
    expected = -2.7 * np.exp(-(d - p.a0) / p.r0) * (1 - n2) + 0.48 * np.exp(-(d - 3.35) / p.r0) * n2
    assert t[3] == pytest.approx(expected, rel=1e-12)
    with pytest.raises(ValueError, match="shape"):
        moon_koshino_hopping(np.zeros(3))


def test_graphene_nearest_neighbour_dirac_point_and_bandwidth():
    atoms = graphene()
    tb = moon_koshino_tb(atoms, MoonKoshinoParams(cutoff=1.5), check_hermitian=True)
    e_K = tb.eigenvalues([k_point(atoms)])[0]
    assert np.abs(e_K).max() < 1e-10  # Dirac point at the on-site energy
    e_G = tb.eigenvalues([[0, 0, 0]])[0]
    assert e_G == pytest.approx([-8.1, 8.1], abs=1e-12)  # ±3|t|: bandwidth 6|t| = 16.2 eV
    assert tb.num_electrons == 2 and list(tb.orbitals.label) == ["pz", "pz"]


def test_graphene_full_model_dirac_degeneracy_is_exact():
    """With all hoppings to 6 Å the K-point degeneracy is protected by C3 symmetry: split < 1e-10 eV."""
    atoms = graphene()
    tb = moon_koshino_tb(atoms, check_hermitian=True)
    e_K = tb.eigenvalues([k_point(atoms)])[0]
    assert e_K[1] - e_K[0] < 1e-10
    # next-nearest neighbours (6 at a, t₂ ≈ −0.27 eV) shift the Dirac point up by about −3 t₂
    assert 0.7 < e_K.mean() < 0.9
    e = tb.eigenvalues(np.random.default_rng(0).random((50, 3)) * [1, 1, 0])
    assert e.min() > -10.5 and e.max() < 7.5


def test_ab_bilayer_dimer_splitting():
    """AB bilayer at K with interlayer coupling only between vertical neighbours: E_D ± γ₁ and E_D twice."""
    atoms = bilayer("graphene", "AB")
    tb = moon_koshino_tb(atoms, MoonKoshinoParams(cutoff=3.36), check_hermitian=True)
    e = tb.eigenvalues([k_point(atoms)])[0]
    e_d = np.median(e)
    assert e - e_d == pytest.approx([-0.48, 0.0, 0.0, 0.48], abs=1e-10)


def test_pairs_match_ase_neighbour_list_and_hermitian():
    atoms = twisted_bilayer("graphene", m=2, r=1)
    i, j, R, t = moon_koshino_pairs(atoms)
    i_ase = neighbor_list("i", atoms, 6.0)
    assert 2 * len(i) == len(i_ase)  # half list
    tb = moon_koshino_tb(atoms)
    assert tb.check_hermitian() == 0.0
    assert np.array_equal(tb.orbitals.layer, atoms.arrays["layer"])
    assert tb.num_electrons == len(atoms)


def test_direct_sparse_builder_matches_tightbinding():
    atoms = twisted_bilayer("graphene", m=3, r=1)
    tb = moon_koshino_tb(atoms)
    for k in ([0, 0, 0], [0.1, 0.3, 0], [0.5, 0.5, 0]):
        H = moon_koshino_hamiltonian(atoms, np.array(k, float))
        assert abs(H - tb.hamiltonian_sparse(np.array(k, float))).max() < 1e-14
    assert moon_koshino_hamiltonian(atoms).dtype == np.float64


def test_rejects_non_carbon():
    with pytest.raises(ValueError, match="carbon"):
        moon_koshino_tb(bilayer("hbn"))
