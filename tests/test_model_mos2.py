"""Model checks for a Mo d + S p model (5 + 3 orbitals, mixed block shapes) on bilayer MoS2."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from ase_wannierml.model import build_model
from ase_wannierml.structures import bilayer
from model_helpers import TINY, ModelTestMixin, run

CUTS = dict(cutoff=3.5, ham_cutoff_near=3.5, ham_cutoff_far=5.0, ham_cutoff_inter=5.0, ham_switch_width=0.5)


@pytest.fixture(scope="module")
def mos2_model():
    return build_model({"Mo": ["d"], "S": ["p"]}, dtype=torch.float64, seed=0, **CUTS, **TINY)


@pytest.fixture(scope="module")
def mos2_bilayer():
    atoms = bilayer("mos2")
    del atoms.arrays["layer"]
    atoms.rattle(0.03, seed=2)
    return atoms


class TestMoS2dp(ModelTestMixin):
    @pytest.fixture(scope="class")
    def model(self, mos2_model):
        return mos2_model

    @pytest.fixture(scope="class")
    def atoms(self, mos2_bilayer):
        return mos2_bilayer


def test_block_shapes_and_mask(mos2_model, mos2_bilayer):
    """Mo rows/cols are 5 wide, S 3 wide; padding is zero and masked out."""
    res = run(mos2_model, mos2_bilayer)
    i, j = res["graph"]["ham_pair_index"].numpy()
    n = np.where(mos2_bilayer.numbers == 42, 5, 3)
    mask, blocks = res["ham_mask"], res["ham_blocks"]
    assert blocks.shape[1:] == (5, 5)
    assert (mask.sum(axis=(1, 2)) == n[i] * n[j]).all()
    assert (blocks[~mask] == 0).all()
    assert np.abs(blocks[mask]).min() > 0
