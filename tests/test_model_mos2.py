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


#: natural-parity backbone features up to l = 3 (as the shipped MoS2 model) and pair heads with more capacity
CAPACITY = dict(TINY, hidden_irreps="8x0e+4x1o+4x2e+4x3o", sh_lmax=3,
                ham_irreps="4x0e+4x1o+4x1e+4x2e+4x2o+4x3o+4x3e+4x4e")


def _capacity_model(pair_sh_lmax: int, pair_node_product: bool):
    model = build_model({"Mo": ["d"], "S": ["p"]}, dtype=torch.float64, seed=0, pair_sh_lmax=pair_sh_lmax,
                        pair_node_product=pair_node_product, **CUTS, **CAPACITY)
    with torch.no_grad():                     # NodeProduct starts at zero (warm starts); give it a value here
        for module in model.modules():
            if module.__class__.__name__ == "NodeProduct":
                module.tp.weight.normal_(0.0, 0.3)
    return model


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


class TestMoS2dpPairCapacity(ModelTestMixin):
    """The physics checks with bond harmonics up to l = 4 and the node product in the pair heads."""

    @pytest.fixture(scope="class")
    def model(self):
        return _capacity_model(4, True)

    @pytest.fixture(scope="class")
    def atoms(self, mos2_bilayer):
        return mos2_bilayer


@pytest.mark.parametrize("pair_sh_lmax, node_product, antisym, sym", [
    (0, False, False, False), (3, False, True, False), (0, True, False, True), (3, True, True, True)])
def test_pair_capacity_reaches_the_trigonal_s_s_components(mos2_bilayer, pair_sh_lmax, node_product, antisym, sym):
    """In-plane S–S hopping of the unrattled 2H bilayer (S sites C3v): its antisymmetric p∥–p⊥ part needs Y^3 of
    the bond (pair_sh_lmax 3), its symmetric pz–p⊥ part a pseudo-tensor site feature (pair_node_product); with
    natural-parity features and Y ≤ 2 both are exactly zero whatever the weights (the DFT targets of 0000-ref2H:
    66 and 45 meV)."""
    atoms = bilayer("mos2")
    del atoms.arrays["layer"]
    model = _capacity_model(pair_sh_lmax, node_product)
    res = run(model, atoms)
    graph = res["graph"]
    s_atom = int(np.flatnonzero(atoms.numbers == 16)[0])
    found = 0
    for p, (i, j) in enumerate(graph["ham_pair_index"].numpy().T):
        r = atoms.positions[j] + graph["ham_pair_shift"][p].numpy() @ atoms.cell[:] - atoms.positions[i]
        if not (i == j == s_atom and abs(np.linalg.norm(r) - atoms.cell.lengths()[0]) < 1e-6):
            continue
        u = r / np.linalg.norm(r)
        perp = np.cross([0.0, 0.0, 1.0], u)
        vz, vpar, vperp = np.array([1.0, 0, 0]), np.array([0, u[0], u[1]]), np.array([0, perp[0], perp[1]])
        block = res["ham_blocks"][p, :3, :3]                   # Wannier90 p order: pz, px, py
        a = (vpar @ block @ vperp - vperp @ block @ vpar) / 2
        s = (vz @ block @ vperp + vperp @ block @ vz) / 2
        assert (abs(a) > 1e-6) == antisym and (abs(a) < 1e-14 or antisym), a
        assert (abs(s) > 1e-6) == sym and (abs(s) < 1e-14 or sym), s
        found += 1
    assert found == 3                       # the 3 stored orientations of the 6 in-plane neighbours
