"""Phonons of the model (``ase_wannierml.elph.phonons``) and the electron–phonon matrix elements built on them
(``elph.coupling``), checked against physics: acoustic sum rule, the same q from two different commensurate
supercells, Bloch patterns that are eigenvectors of the supercell force constants, the rigid-layer shear
frequency from the energy curvature, Hellmann–Feynman (M_nn at q = 0 = dE_n/dλ) and the crystal-momentum
selection rule of M at q ≠ 0."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from ase_wannierml import WannierMLCalculator
from ase_wannierml.elph import coupling
from ase_wannierml.elph.phonons import (OMEGA_EV, EV_TO_CM, commensurate_supercell, force_constants, layer_character,
                                        make_supercell, modes_at_q)
from ase_wannierml.structures import bilayer

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def calc():
    return WannierMLCalculator("graphene-bilayer", dtype=torch.float64)


@pytest.fixture(scope="module")
def mono(calc):
    b = bilayer("graphene")
    atoms = b[b.arrays["layer"] == 0]
    atoms.calc = calc
    return atoms


def test_commensurate_supercell_and_errors(mono):
    K = mono.cell.bandpath().special_points["K"]
    P = commensurate_supercell(K)
    assert round(abs(np.linalg.det(P))) == 3                 # the √3×√3 cell
    assert np.allclose(K @ P.T, np.round(K @ P.T))
    with pytest.raises(ValueError, match="not commensurate"):
        modes_at_q(mono, mono.calc, q=(0.25, 0.0, 0.0), supercell=P)
    with pytest.raises(ValueError, match="integer"):
        make_supercell(mono, [[1.5, 0, 0], [0, 1, 0], [0, 0, 1]])


def test_K_point_from_two_supercells(mono, calc):
    """D(K) is exact from any supercell commensurate with K: √3×√3 and 3×3 must agree, and the Bloch pattern of
    each mode must be an eigenvector of the 3×3 supercell's force constants with the same ω²."""
    K = mono.cell.bandpath().special_points["K"]
    f_r3, e_r3 = modes_at_q(mono, calc, K, supercell=commensurate_supercell(K))
    sc = make_supercell(mono, (3, 3, 1))
    phi = force_constants(sc.atoms, calc)
    f_33, _ = modes_at_q(mono, calc, K, supercell=(3, 3, 1), phi=phi)
    assert f_r3.max() > 1000                                  # real optical modes, not a zero model
    np.testing.assert_allclose(f_r3, f_33, atol=0.5)          # cm⁻¹ (finite-difference noise only)
    masses = mono.get_masses()
    u = coupling.mode_patterns(sc, K, e_r3, masses).reshape(len(e_r3), -1)   # (modes, 3 n_sc)
    m_sc = np.repeat(masses[sc.prim], 3)
    w2 = np.sign(f_r3) * (f_r3 / EV_TO_CM / OMEGA_EV) ** 2     # eV/(Å² amu)
    for nu in range(len(f_r3)):
        resid = phi @ u[nu] - w2[nu] * m_sc * u[nu]
        assert np.linalg.norm(resid) < 1e-3 * np.linalg.norm(phi @ u[nu]) + 1e-6


def test_gamma_acoustic_and_rigid_layer_shear(calc):
    atoms = bilayer("graphene")
    atoms.calc = calc
    freq, e = modes_at_q(atoms, calc)
    assert np.sort(np.abs(freq))[:3].max() < 1.0              # three acoustic modes at 0 (sum rule)
    ch = layer_character(atoms, e)
    shear = freq[ch["shear"] > 0.9]
    assert len(shear) == 2 and np.ptp(shear) < 0.1            # the E_g shear doublet
    # independent: curvature of the energy for a rigid relative slide x of the layers, ω² = k / μ
    layer = atoms.arrays["layer"]
    h, energies = 0.01, []
    for x in (-h, 0.0, h):
        moved = atoms.copy()
        moved.positions[layer == 1, 0] += x
        moved.calc = calc
        energies.append(moved.get_potential_energy())
    k = (energies[0] - 2 * energies[1] + energies[2]) / h ** 2
    m = atoms.get_masses()
    mu = m[layer == 0].sum() * m[layer == 1].sum() / m.sum()
    w_rigid = np.sqrt(k / mu) * OMEGA_EV * EV_TO_CM
    assert abs(w_rigid - shear.mean()) < 0.02 * shear.mean(), (w_rigid, shear)


def test_hellmann_feynman_at_gamma(mono, calc):
    """M_nn(k, q = 0) along a displacement pattern equals dE_n/dλ of the model's own bands (central differences)."""
    u = np.random.default_rng(3).normal(size=(len(mono), 3))
    u[:, 2] = 0.0
    e = (u * np.sqrt(mono.get_masses())[:, None])[None]       # unnormalised "mode" whose pattern is exactly u
    k = np.array([0.13, 0.29, 0.0])                           # generic k: non-degenerate bands
    r = coupling.matrix_elements(calc, mono, (0, 0, 0), e, [k], (1, 1, 1))
    hf = np.real(np.diag(r["M"][0, 0]))
    h = 1e-4

    def bands(lam):
        moved = mono.copy()
        moved.positions += lam * u
        return np.linalg.eigvalsh(calc.model.predict_tightbinding(moved).hamiltonian(k[None])[0])

    fd = (bands(h) - bands(-h)) / (2 * h)
    assert np.abs(fd).max() > 0.05
    np.testing.assert_allclose(hf, fd, atol=1e-5 * np.abs(fd).max() + 1e-8)


def test_selection_rule_at_K(mono, calc):
    """A Bloch pattern at q couples k only to k + q: ⟨k+q'|∂_q H|k⟩ vanishes for the other q' folding onto the same
    supercell, and is non-zero for q' = q (checks the phases of patterns and embedded states together)."""
    K = mono.cell.bandpath().special_points["K"]
    P = commensurate_supercell(K)
    f, e = modes_at_q(mono, calc, K, supercell=P)
    sc = make_supercell(mono, P)
    nu = int(np.argmax(f))
    u = coupling.mode_patterns(sc, K, e[nu:nu + 1], mono.get_masses())[0]
    d_re, d_im = calc.get_hamiltonian_derivative(np.stack([u.real, u.imag]), atoms=sc.atoms)
    tb = calc.get_hamiltonian(mono)
    n_orb = np.bincount(tb.orbitals.atom_index, minlength=len(mono))
    first = coupling._orbital_offsets(mono, tb.orbitals)
    first_sc = coupling._orbital_offsets(sc.atoms, d_re.orbitals)
    k = np.array([0.07, 0.19, 0.0])
    Ksc = (k @ P.T)[None]
    dh = d_re.hamiltonian(Ksc)[0] + 1j * d_im.hamiltonian(Ksc)[0]
    right = coupling._embedding(sc, n_orb, first, first_sc, d_re.norb, k) @ coupling.bloch_states(tb, k)[1]
    norms = {}
    for name, qp in (("q", K), ("0", np.zeros(3)), ("-q", -K)):
        left = coupling._embedding(sc, n_orb, first, first_sc, d_re.norb, k + qp) @ coupling.bloch_states(tb, k + qp)[1]
        norms[name] = np.abs(left.conj().T @ dh @ right).max()
    assert norms["q"] > 1e-2
    assert norms["0"] < 1e-10 * norms["q"] and norms["-q"] < 1e-10 * norms["q"], norms
    full = coupling.matrix_elements(calc, mono, K, e[nu:nu + 1], [k], P)["M"][0, 0]
    assert np.isclose(np.abs(full).max(), norms["q"], rtol=1e-10)


def test_state_coupling_hellmann_feynman_and_degenerate(calc):
    """``elph.flatband.state_coupling``: first-order shifts equal dE_n/dλ of the model's bands at a generic k, and
    inside the degenerate pair at K the eigenvalues of the coupling block equal the one-sided slopes."""
    from ase_wannierml.elph.flatband import rigid_layer_pattern, state_coupling

    atoms = bilayer("graphene")
    with pytest.raises(ValueError, match="unknown pattern"):
        rigid_layer_pattern(atoms, "twist")
    u = rigid_layer_pattern(atoms, "shear") + 0.3 * np.random.default_rng(7).normal(size=(len(atoms), 3))
    tb = calc.get_hamiltonian(atoms)
    dtb = calc.get_hamiltonian_derivative(u, atoms=atoms)
    K = atoms.cell.bandpath().special_points["K"]
    kpts = np.array([[0.11, 0.23, 0.0], K])
    res = state_coupling(tb, dtb, kpts, num=4, near=float(tb.fermi_energy))

    def bands(lam, k):
        moved = atoms.copy()
        moved.positions += lam * u
        return np.linalg.eigvalsh(calc.model.predict_tightbinding(moved).hamiltonian(k[None])[0])

    h = 1e-4
    central = (bands(h, kpts[0]) - bands(-h, kpts[0])) / (2 * h)
    np.testing.assert_allclose(res["shifts"][0], central, atol=1e-5 * np.abs(central).max())
    e0 = bands(0.0, K)
    assert abs(e0[2] - e0[1]) < 1e-4                             # the degenerate pair at K
    one_sided = (bands(1e-5, K) - e0) / 1e-5
    assert abs(one_sided[2] - one_sided[1]) > 0.05                # it splits linearly
    np.testing.assert_allclose(res["shifts"][1][1:3], one_sided[1:3], atol=2e-3 * np.abs(one_sided).max())


def test_phonon_bands_gamma_matches_modes(mono, calc):
    """The ASE band path (2×2×1 supercell) starts at Γ with the frequencies of ``modes_at_q`` (both exact at Γ)."""
    from ase_wannierml.elph.phonons import phonon_bands

    bs = phonon_bands(mono, calc, path="GMK", npoints=5, supercell=(2, 2, 1))
    gamma = np.sort(bs.energies[0, 0]) * EV_TO_CM
    freq, _ = modes_at_q(mono, calc)
    optical = np.sort(freq) > 100
    np.testing.assert_allclose(gamma[optical], np.sort(freq)[optical], atol=1.0)   # cm⁻¹
    assert gamma.max() > 1000 and np.abs(gamma[~optical]).max() < 10   # ASE's sum rule on 2×2 leaves a few cm⁻¹
