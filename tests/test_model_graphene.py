"""Model checks for a pz-only carbon model on bilayer graphene (partial shell: planar symmetry for H)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from ase_wannierml.model import build_model
from ase_wannierml.structures import bilayer
from model_helpers import TINY, ModelTestMixin, run, rotated, pair_blocks

CUTS = dict(cutoff=3.5, ham_cutoff_near=3.0, ham_cutoff_far=4.5, ham_cutoff_inter=5.0, ham_switch_width=0.5)


@pytest.fixture(scope="module")
def graphene_model():
    return build_model({"C": ["pz"]}, dtype=torch.float64, seed=0, **CUTS, **TINY)


@pytest.fixture(scope="module")
def graphene_bilayer():
    atoms = bilayer("graphene")
    del atoms.arrays["layer"]  # exercise automatic layer detection
    atoms.rattle(0.03, seed=1)  # break symmetry so every pair block differs
    return atoms


class TestGraphenePz(ModelTestMixin):
    ham_symmetry = "planar"

    @pytest.fixture(scope="class")
    def model(self, graphene_model):
        return graphene_model

    @pytest.fixture(scope="class")
    def atoms(self, graphene_bilayer):
        return graphene_bilayer


def test_pz_blocks_not_invariant_under_tilt(graphene_model, graphene_bilayer):
    """A pz shell cannot follow a rotation that tilts z: the pz-pz elements change (documented limitation),
    which also shows that the planar-group test above is not vacuous."""
    ref = pair_blocks(graphene_model, run(graphene_model, graphene_bilayer))
    c, s = np.cos(0.4), np.sin(0.4)
    tilt = np.array([[1, 0, 0], [0, c, -s], [0, s, c]])
    new = pair_blocks(graphene_model, run(graphene_model, rotated(graphene_bilayer, tilt)))
    assert max(np.abs(new[k] - ref[k]).max() for k in ref) > 1e-4


def test_layers_give_categories(graphene_model, graphene_bilayer):
    """Interlayer pairs are exactly the pairs across the two detected layers."""
    res = run(graphene_model, graphene_bilayer)
    g = res["graph"]
    layer = g["layer"].numpy()
    assert sorted(set(layer)) == [0, 1] and (layer == np.array([0, 0, 1, 1])).all()
    i, j = g["ham_pair_index"].numpy()
    cat = g["ham_pair_category"].numpy()
    assert ((cat == 3) == (layer[i] != layer[j])).all()


@pytest.mark.parametrize("memory_gb", ["1e-9", "100"])
def test_chunked_evaluation_is_exact(graphene_model, graphene_bilayer, monkeypatch, memory_gb):
    """Edge chunks (checkpointed in eval mode when memory is short: here forced by a 1-byte budget), Hamiltonian
    pair chunks and unsorted edges change nothing."""
    from ase_wannierml.memory import MEMORY_ENV
    from ase_wannierml.model import atoms_to_graph

    atoms = graphene_bilayer.repeat((2, 1, 1))
    graph = atoms_to_graph(atoms, graphene_model.config, dtype=torch.float64)
    model = graphene_model.eval()
    try:
        ref = model(graph, compute_forces=True, compute_stress=True, compute_hamiltonian=True)
        monkeypatch.setenv(MEMORY_ENV, memory_gb)
        n_edges = graph["edge_index"].shape[1]
        with torch.enable_grad():
            assert model.backbone.needs_checkpointing(n_edges, 8) == (memory_gb == "1e-9")
        perm = torch.randperm(n_edges, generator=torch.Generator().manual_seed(0))
        shuffled = dict(graph, edge_index=graph["edge_index"][:, perm], edge_shift=graph["edge_shift"][perm])
        out = model(shuffled, compute_forces=True, compute_stress=True, compute_hamiltonian=True, edge_chunk=7,
                    ham_chunk_size=5)
    finally:
        model.train()
    for key in ("energy", "forces", "stress", "ham_blocks"):
        torch.testing.assert_close(out[key], ref[key], rtol=0, atol=1e-12)


class TestGraphenePzResidualThirdInteraction(ModelTestMixin):
    """The physics battery on a model with a third, residual interaction (``residual_interactions``, session 18)
    whose weights are random (not the identity of a warm start)."""

    ham_symmetry = "planar"

    @pytest.fixture(scope="class")
    def model(self):
        model = build_model({"C": ["pz"]}, dtype=torch.float64, seed=1, **CUTS,
                            **{**TINY, "num_interactions": 3}, residual_interactions=1)
        assert [layer.residual for layer in model.backbone.layers] == [False, False, True]
        return model

    @pytest.fixture(scope="class")
    def atoms(self, graphene_bilayer):
        return graphene_bilayer
