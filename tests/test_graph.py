"""atoms → graph: neighbour lists against ASE, canonical Hamiltonian pair list, layers, batching, bad input."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import graphene, molecule
from ase.neighborlist import neighbor_list

from ase_wannierml.model import ModelConfig, atoms_to_graph, batch_graphs, detect_layers, keys as K
from ase_wannierml.structures import bilayer

CFG = ModelConfig(species=("C", "H", "O", "Mo", "S"), orbitals={"C": ("pz",), "H": ("s",), "O": ("p",),
                  "Mo": ("d",), "S": ("p",)}, cutoff=4.0, ham_cutoff_near=3.0, ham_cutoff_far=5.0,
                  ham_cutoff_inter=4.5)


def _triples(i, j, s) -> set:
    return {(int(a), int(b), *map(int, c)) for a, b, c in zip(i, j, s)}


def _structures() -> dict[str, Atoms]:
    small = Atoms("C", positions=[[0.1, 0.2, 0.3]], cell=[[2.2, 0, 0], [0.5, 2.1, 0], [0.3, 0.2, 2.4]], pbc=True)
    slab = bilayer("graphene")
    slab.positions[0] += slab.cell[0] * 1.7 - [0, 0, 0.2]  # outside the cell: positions are used unwrapped
    mol = molecule("H2O")
    return {"3d_small_cell": small, "slab_TTF": slab, "molecule": mol}


@pytest.mark.parametrize("name", ["3d_small_cell", "slab_TTF", "molecule"])
def test_edges_match_ase(name):
    atoms = _structures()[name]
    g = atoms_to_graph(atoms, CFG, dtype=torch.float64)
    i, j = g[K.EDGE_INDEX].numpy()
    assert _triples(i, j, g[K.EDGE_SHIFT].numpy()) == _triples(*neighbor_list("ijS", atoms, CFG.cutoff))
    vec = atoms.positions[j] - atoms.positions[i] + g[K.EDGE_SHIFT].numpy() @ atoms.cell[:]
    assert 0 < np.linalg.norm(vec, axis=1).min() and np.linalg.norm(vec, axis=1).max() < CFG.cutoff


@pytest.mark.parametrize("name", ["3d_small_cell", "slab_TTF", "molecule"])
def test_hamiltonian_pairs_canonical_and_complete(name):
    atoms = _structures()[name]
    g = atoms_to_graph(atoms, CFG, dtype=torch.float64)
    pi, pj = g[K.HAM_PAIR_INDEX].numpy()
    ps, cat = g[K.HAM_PAIR_SHIFT].numpy(), g[K.HAM_PAIR_CATEGORY].numpy()
    n = len(atoms)
    assert (pi[:n] == np.arange(n)).all() and (pj[:n] == np.arange(n)).all() and (cat[:n] == 0).all()
    assert (ps[:n] == 0).all() and (cat[n:] > 0).all()
    first_nonzero = np.array([s[np.flatnonzero(s)[0]] if s.any() else 0 for s in ps[n:]])
    assert ((pi[n:] < pj[n:]) | ((pi[n:] == pj[n:]) & (first_nonzero > 0))).all()
    rows = list(zip(pi[n:], pj[n:], *ps[n:].T))
    assert rows == sorted(rows) and len(set(rows)) == len(rows)
    # oracle: ASE full list, keep the canonical orientation and apply the category rules by hand
    layer = g[K.LAYER].numpy()
    i, j, s, d = neighbor_list("ijSd", atoms, CFG.ham_cutoff_max)
    same = layer[i] == layer[j]
    keep = np.where(same, d < CFG.ham_cutoff_far, d < CFG.ham_cutoff_inter)
    expected = {t for t in _triples(i[keep], j[keep], s[keep]) if t[0] < t[1] or (t[0] == t[1] and t[2:] > (0, 0, 0))}
    assert set(map(lambda r: tuple(map(int, r)), rows)) == expected
    vec = atoms.positions[pj] - atoms.positions[pi] + ps @ atoms.cell[:]
    dist = np.linalg.norm(vec, axis=1)[n:]
    intra = layer[pi[n:]] == layer[pj[n:]]
    np.testing.assert_array_equal(cat[n:], np.where(intra, np.where(dist < CFG.ham_cutoff_near, 1, 2), 3))


def test_pair_list_is_deterministic():
    atoms = _structures()["slab_TTF"]
    a, b = (atoms_to_graph(atoms, CFG) for _ in range(2))
    for key in (K.HAM_PAIR_INDEX, K.HAM_PAIR_SHIFT, K.HAM_PAIR_CATEGORY, K.EDGE_INDEX, K.EDGE_SHIFT):
        assert torch.equal(a[key], b[key])


def test_layers_detected():
    bi = bilayer("mos2")
    expected = bi.arrays.pop("layer")
    np.testing.assert_array_equal(detect_layers(bi), expected)
    tri = graphene(size=(2, 2, 1), vacuum=4.0)
    tri.pbc = (True, True, False)
    parts = [tri.copy() for _ in range(3)]
    for k, p in enumerate(parts):
        p.positions[:, 2] += 3.35 * (2 - k)  # listed top to bottom
    stack = parts[0] + parts[1] + parts[2]
    np.testing.assert_array_equal(detect_layers(stack), np.repeat([2, 1, 0], 8))


def test_molecule_on_surface_is_its_own_layer():
    sheet = graphene(size=(3, 3, 1), vacuum=6.0)
    sheet.pbc = (True, True, False)
    water = molecule("H2O")
    water.positions += sheet.positions.mean(axis=0) + [0, 0, 3.0]
    layer = detect_layers(sheet + water)
    assert (layer[:18] == 0).all() and (layer[18:] == 1).all()


def test_layer_array_overrides_detection():
    atoms = bilayer("graphene")
    atoms.arrays["layer"] = np.array([0, 0, 0, 0])
    g = atoms_to_graph(atoms, CFG)
    assert (g[K.HAM_PAIR_CATEGORY] != 3).all()


def test_batch_offsets():
    s = _structures()
    graphs = [atoms_to_graph(s[k], CFG) for k in ("slab_TTF", "molecule", "3d_small_cell")]
    b = batch_graphs(graphs)
    n = [4, 3, 1]
    assert b[K.NUM_ATOMS].tolist() == n and b[K.CELL].shape == (3, 3, 3)
    assert b[K.BATCH].tolist() == [0] * 4 + [1] * 3 + [2]
    np.testing.assert_array_equal(b[K.EDGE_INDEX][:, graphs[0][K.EDGE_INDEX].shape[1]:][:, :1].numpy() >= 4, True)
    off = graphs[0][K.HAM_PAIR_INDEX].shape[1]
    assert torch.equal(b[K.HAM_PAIR_INDEX][:, off:off + graphs[1][K.HAM_PAIR_INDEX].shape[1]],
                       graphs[1][K.HAM_PAIR_INDEX] + 4)
    with pytest.raises(ValueError, match="same keys"):
        batch_graphs([graphs[0], atoms_to_graph(s["molecule"], CFG, with_hamiltonian=False)])


def test_without_hamiltonian_pairs():
    g = atoms_to_graph(_structures()["molecule"], CFG, with_hamiltonian=False)
    assert K.HAM_PAIR_INDEX not in g and K.EDGE_INDEX in g


def test_unknown_element_is_named():
    with pytest.raises(ValueError, match=r"element 'N' \(atom 1\) is not in the model"):
        atoms_to_graph(Atoms("CN", positions=[[0, 0, 0], [1.2, 0, 0]]), CFG)


def test_too_close_atoms_and_images():
    with pytest.raises(ValueError, match=r"atoms 0 \(C\) and 1 \(H\) are 0\.300 Å apart"):
        atoms_to_graph(Atoms("CH", positions=[[0, 0, 0], [0.3, 0, 0]]), CFG)
    tiny = Atoms("C", cell=np.diag([0.4, 3.0, 3.0]), pbc=True)
    with pytest.raises(ValueError, match=r"atoms 0 \(C\) and 0 \(C\) are 0\.400 Å apart"):
        atoms_to_graph(tiny, CFG)
