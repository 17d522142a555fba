"""Model checks for several shells per element (s+p+d on Mo, s+p on S) in a 3D periodic triclinic cell."""
from __future__ import annotations

import pytest
import torch
from ase import Atoms

from ase_wannierml.model import build_model
from model_helpers import TINY, ModelTestMixin

CUTS = dict(cutoff=3.0, ham_cutoff_near=3.0, ham_cutoff_far=4.0, ham_cutoff_inter=4.0, ham_switch_width=0.5)


@pytest.fixture(scope="module")
def spd_model():
    return build_model({"Mo": ["s", "p", "d"], "S": ["s", "p"]}, dtype=torch.float64, seed=1, **CUTS, **TINY)


@pytest.fixture(scope="module")
def bulk():
    cell = [[4.1, 0.0, 0.0], [0.7, 3.9, 0.0], [0.4, -0.5, 4.0]]
    frac = [[0.0, 0.0, 0.0], [0.52, 0.05, 0.47], [0.03, 0.49, 0.51], [0.48, 0.53, 0.02]]
    atoms = Atoms("MoSMoS", scaled_positions=frac, cell=cell, pbc=True)
    atoms.rattle(0.05, seed=3)
    return atoms


class TestSPD(ModelTestMixin):
    @pytest.fixture(scope="class")
    def model(self, spd_model):
        return spd_model

    @pytest.fixture(scope="class")
    def atoms(self, bulk):
        return bulk

    def test_orbital_counts(self, model):
        assert model.config.num_orbitals == (9, 4) and model.config.max_orbitals == 9
