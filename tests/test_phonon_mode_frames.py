"""scripts/phonon_mode_frames.py: structures along the model's zone-boundary modes — right supercells (M: 8 atoms,
K: 12), largest displacement = the amplitude asked for, the single-mode structure is a standing wave of the lowest
mode (its displacement is an eigenvector of the model's supercell force constants at that frequency), bad amplitudes
refused."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import load_repo_module

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def script():
    return load_repo_module("scripts/phonon_mode_frames.py")


def test_zone_boundary_mode_structures(script):
    from ase_wannierml import WannierMLCalculator
    from ase_wannierml.elph.phonons import commensurate_supercell, force_constants, make_supercell

    images = script.structures("graphene-bilayer", 0.05, 4, 1, seed=1)
    assert [len(a) for a in images] == [8, 8, 12, 12]
    ref = script.reference_cell()
    calc = WannierMLCalculator("graphene-bilayer", dtype=torch.float64)
    for a in images:
        q = script.QPOINTS[a.info["q_name"]]
        sc = make_supercell(ref, commensurate_supercell(q))
        u = a.positions - sc.atoms.positions
        assert np.linalg.norm(u, axis=1).max() == pytest.approx(0.05, rel=1e-9)
        assert a.info["amplitude_A"] == 0.05 and np.array_equal(a.arrays["layer"], sc.atoms.arrays["layer"])
        if a.info["pattern"] == "lowest mode":
            phi = force_constants(sc.atoms, calc).reshape(3 * len(a), 3 * len(a))
            m = np.repeat(sc.atoms.get_masses(), 3)
            x = (u.ravel() * np.sqrt(m))
            dx = (phi / np.sqrt(np.outer(m, m))) @ x
            w2 = x @ dx / (x @ x)
            assert np.linalg.norm(dx - w2 * x) < 1e-3 * np.linalg.norm(dx)      # an eigenvector
            freq = float(a.info["model_freq_cm"].split(",")[0])
            from ase_wannierml.elph.phonons import EV_TO_CM, OMEGA_EV
            assert np.sqrt(w2) * OMEGA_EV * EV_TO_CM == pytest.approx(freq, rel=1e-3)
    for amplitude, modes, mixtures, what in ((0.0, 4, 1, "amplitude"), (float("nan"), 4, 1, "amplitude"),
                                             (0.05, 0, 1, "modes"), (0.05, 13, 1, "modes"), (0.05, 4, -1, "mixtures")):
        with pytest.raises(ValueError, match=what):
            script.structures("graphene-bilayer", amplitude, modes, mixtures, seed=1)
