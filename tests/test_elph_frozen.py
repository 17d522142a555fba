"""Frozen-phonon tools (``ase_wannierml.elph.frozen``) against the model's own exact quantities, and the
checkpointed MD-electrons example.

Oracles: (1) the matrix elements at q = K from the supercell dH along the *real* standing-wave pattern (what a DFT
frozen-phonon run gives) equal those of ``coupling.matrix_elements`` from the complex Bloch pattern (two JVPs);
(2) the frequency from forces at ±u along the real pattern of a mode equals the mode's eigenfrequency from the
force constants (a different route: ASE ``Phonons`` + dynamical matrix), and along a non-eigenvector pattern the
Rayleigh quotient of the force constants; (3) an MD run stopped and resumed from its checkpoint is bit-identical to
one run straight through; (4) a symmetry that maps the +u frozen-phonon structure onto the −u one maps the model's
H and forces computed at +u onto those computed at −u."""
from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from ase_wannierml import WannierMLCalculator
from ase_wannierml.elph import coupling
from ase_wannierml.elph.frozen import (frozen_phonon_frequency, matrix_from_real_pattern, real_pattern,
                                       sign_reversing_symmetry)
from ase_wannierml.elph.phonons import (EV_TO_CM, OMEGA_EV, commensurate_supercell, force_constants, make_supercell,
                                        modes_at_q)
from ase_wannierml.structures import bilayer

torch.set_num_threads(1)
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def calc():
    return WannierMLCalculator("graphene-bilayer", dtype=torch.float64)


@pytest.fixture(scope="module")
def k_modes(calc):
    b = bilayer("graphene")
    atoms = b[b.arrays["layer"] == 0]
    K = np.asarray(atoms.cell.bandpath().special_points["K"], float)
    P = commensurate_supercell(K)
    sc = make_supercell(atoms, P)
    phi = force_constants(sc.atoms, calc)
    freq, e = modes_at_q(atoms, calc, K, supercell=P, phi=phi)
    return atoms, K, P, sc, phi, freq, e


def test_real_pattern_matrix_elements_equal_complex_route(calc, k_modes):
    atoms, K, P, sc, _, freq, e = k_modes
    masses = np.asarray(atoms.get_masses(), float)
    ref = coupling.matrix_elements(calc, atoms, K, e, [K], P)["M"][:, 0]            # band basis, all bands
    G = np.zeros((1, 3))
    checked = 0
    for nu in range(len(freq)):
        u = coupling.mode_patterns(sc, K, e[nu:nu + 1], masses)[0]
        p_hat, c, u_ph = real_pattern(u)
        assert np.abs(np.linalg.norm(p_hat, axis=1).max() - 1) < 1e-12
        assert np.allclose(u_ph.real, c * p_hat)
        dh = calc.get_hamiltonian_derivative(p_hat, atoms=sc.atoms).hamiltonian(G)[0] * c
        M = matrix_from_real_pattern(dh, sc, [1, 1], K, K)                          # Wannier-Bloch basis
        # Σ|M|² over all bands is basis independent; the re-phased mode only changes the phase of M
        np.testing.assert_allclose(np.sum(np.abs(M) ** 2), np.sum(np.abs(ref[nu]) ** 2), rtol=1e-8, atol=1e-10)
        checked += np.sum(np.abs(ref[nu]) ** 2) > 1.0
    assert checked >= 1                              # at least the A1' mode couples the π states at K and K'
    # the other half of the standing wave (-K) connects K to Γ only: its block onto K -> 2K vanishes
    with pytest.raises(ValueError, match="equals −q"):
        matrix_from_real_pattern(np.zeros((6, 6)), sc, [1, 1], K, np.array([0.5, 0, 0]))


def test_frozen_phonon_frequency_equals_eigenfrequency(calc, k_modes):
    atoms, K, _, sc, phi, freq, e = k_modes
    masses = np.asarray(atoms.get_masses(), float)
    m_sc = np.asarray(sc.atoms.get_masses(), float)
    step = 0.005
    nu = int(np.argmax(freq))                                                     # A1'-type, highest at K
    p_hat, _, _ = real_pattern(coupling.mode_patterns(sc, K, e[nu:nu + 1], masses)[0])

    def forces(p):
        out = []
        for lam in (step, -step):
            moved = sc.atoms.copy()
            moved.positions += lam * p
            moved.calc = calc
            out.append(moved.get_forces())
        return out

    w = frozen_phonon_frequency(*forces(p_hat), p_hat, m_sc, step)
    assert abs(w - freq[nu]) < 0.005 * freq[nu], (w, freq[nu])
    # a pattern that is no eigenvector: the Rayleigh quotient of the force constants
    rng = np.random.default_rng(3)
    p = rng.normal(size=p_hat.shape)
    p[:, 2] = 0.0
    p -= p.mean(axis=0)                                                          # no rigid translation
    rq = p.ravel() @ phi @ p.ravel() / np.sum(m_sc[:, None] * p ** 2)
    expected = np.sign(rq) * np.sqrt(abs(rq)) * OMEGA_EV * EV_TO_CM
    w = frozen_phonon_frequency(*forces(p), p, m_sc, step)
    assert abs(w - expected) < 0.01 * abs(expected), (w, expected)
    with pytest.raises(ValueError, match="must agree"):
        frozen_phonon_frequency(np.zeros((2, 3)), np.zeros((2, 3)), p, m_sc, step)
    with pytest.raises(ValueError, match="zero"):
        real_pattern(np.zeros((3, 3), complex))


def test_sign_reversing_symmetry_maps_model_h_and_forces(calc):
    atoms = bilayer("graphene")
    K = np.asarray(atoms.cell.bandpath().special_points["K"], float)
    P = commensurate_supercell(K)
    sc = make_supercell(atoms, P)
    freq, e = modes_at_q(atoms, calc, K, supercell=P)
    nu = int(np.argmax(freq))                                                     # A1'-derived at K
    p_hat, _, _ = real_pattern(coupling.mode_patterns(sc, K, e[nu:nu + 1], np.asarray(atoms.get_masses(), float))[0])
    step, G = 0.02, np.zeros((1, 3))
    found = sign_reversing_symmetry(sc.atoms, p_hat, step)
    assert found is not None
    perm, rot = found
    assert np.allclose(rot @ rot.T, np.eye(3)) and sorted(perm.tolist()) == list(range(len(sc.atoms)))
    h, f = {}, {}
    for lam in (step, -step):
        moved = sc.atoms.copy()
        moved.positions += lam * p_hat
        moved.calc = calc
        h[lam], f[lam] = calc.model.predict_tightbinding(moved).hamiltonian(G)[0], moved.get_forces()
    assert np.abs(h[step] - h[-step]).max() > 0.1                                  # ±u differ in the cell's frame
    h_map = np.zeros_like(h[step])
    h_map[np.ix_(perm, perm)] = h[step]
    f_map = np.zeros_like(f[step])
    f_map[perm] = f[step] @ rot.T
    assert np.abs(h_map - h[-step]).max() < 1e-6 and np.abs(f_map - f[-step]).max() < 1e-5
    rng = np.random.default_rng(0)
    assert sign_reversing_symmetry(sc.atoms, rng.normal(size=p_hat.shape), step) is None


def _load_example():
    spec = importlib.util.spec_from_file_location("ex_md_electrons", REPO / "examples" / "md_electrons.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


def test_md_electrons_resume_is_bit_identical(tmp_path):
    ex = _load_example()
    common = ["--m", "2", "--every", "2", "--relax-steps", "2", "--num", "8"]
    ex.main(common + ["--steps", "2", "--outdir", str(tmp_path / "a")])            # stopped after one MD chunk
    ex.main(common + ["--steps", "4", "--outdir", str(tmp_path / "a")])            # resumed
    ex.main(common + ["--steps", "4", "--outdir", str(tmp_path / "b")])            # straight through
    a, b = (np.load(tmp_path / d / "checkpoint.npz") for d in ("a", "b"))
    assert np.array_equal(a["positions"], b["positions"]) and np.array_equal(a["momenta"], b["momenta"])
    ja, jb = (json.loads((tmp_path / d / "md_electrons.json").read_text()) for d in ("a", "b"))
    assert [s["step"] for s in ja["series"]] == [0, 2, 4] and ja["sessions"] == 2 and jb["sessions"] == 1
    assert [s["flat_band_width_meV"] for s in ja["series"]] == [s["flat_band_width_meV"] for s in jb["series"]]
    with pytest.raises(SystemExit, match="use another --outdir"):
        ex.main(["--m", "2", "--every", "4", "--steps", "4", "--outdir", str(tmp_path / "a")])
