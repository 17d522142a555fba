"""``ase.Atoms`` → graph dict (keys and shapes in ``keys.py``): neighbour lists, layers, Hamiltonian pair list.

Neighbour lists come from vesin (cell lists, O(N)), with integer cell shifts, for periodic, mixed
(``pbc=[True, True, False]`` with vacuum, also ASE's c = 0 2D cells) and non-periodic cells; shifts are relative to
the positions as given (not wrapped). Structures are checked before the native search (``ase_wannierml.neighbours``:
NaN positions, degenerate cells → ValueError). The graph's positions are the given ones moved by one lattice
translation in float64 (and far-apart groups shifted rigidly along vacuum directions), which leaves every pair
vector unchanged but keeps float32 precise. Layers are the connected components of the covalent-bond graph
(``d < layer_bond_factor * (r_cov,a + r_cov,b)``, ASE covalent radii) unless ``atoms.arrays["layer"]`` is set,
so bilayers, trilayers and molecules on surfaces are labelled without user input.

Example::

    >>> from ase.build import graphene
    >>> from ase_wannierml.model.config import ModelConfig
    >>> atoms = graphene(vacuum=5.0); atoms.pbc = (True, True, False)
    >>> graph = atoms_to_graph(atoms, ModelConfig(species=("C",), orbitals={"C": ("pz",)}))
    >>> graph["edge_index"].shape[0], graph["ham_pair_category"][:2].tolist()
    (2, [0, 0])
"""
from __future__ import annotations

from typing import Dict, Sequence

import numpy as np
import torch
from ase import Atoms
from ase.data import covalent_radii
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from ase_wannierml.neighbours import model_positions
from ase_wannierml.neighbours import neighbour_list as _checked_neighbour_list

from . import keys as K
from .config import ModelConfig

Graph = Dict[str, torch.Tensor]


def neighbour_list(atoms: Atoms, cutoff: float, full: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Pairs within ``cutoff`` (Å): i (n,), j (n,) int64, integer shifts S (n, 3) int64, distances d (n,) Å.

    ``r_j + S @ cell - r_i`` has length d < cutoff for the positions as given. ``full=True`` lists both
    orientations of every pair. The structure is checked first (``neighbours.check_structure``: NaN positions,
    degenerate cells, ... → ValueError naming the problem); 2D cells with c = 0 and atoms far out along vacuum
    directions are fine (see ``ase_wannierml.neighbours``).
    """
    return _checked_neighbour_list(atoms.positions, atoms.cell[:], atoms.pbc, cutoff, full)


def species_indices(atoms: Atoms, species: Sequence[str]) -> np.ndarray:
    """Index of each atom's element in ``species`` (n_atoms,) int64; unknown element → ValueError naming it."""
    lookup = {s: k for k, s in enumerate(species)}
    symbols = atoms.get_chemical_symbols()
    for a, sym in enumerate(symbols):
        if sym not in lookup:
            raise ValueError(f"element {sym!r} (atom {a}) is not in the model; the model knows {list(species)}")
    return np.array([lookup[s] for s in symbols], dtype=np.int64)


def check_min_distance(atoms: Atoms, i: np.ndarray, j: np.ndarray, d: np.ndarray, min_distance: float) -> None:
    """Raise ``ValueError`` naming the two closest atoms if any pair is closer than ``min_distance`` (Å)."""
    if len(d) and d.min() < min_distance:
        k = int(np.argmin(d))
        a, b = int(i[k]), int(j[k])
        raise ValueError(f"atoms {a} ({atoms.symbols[a]}) and {b} ({atoms.symbols[b]}) are {d[k]:.3f} Å apart "
                         f"(periodic images included), closer than the physical minimum {min_distance} Å")


def detect_layers(atoms: Atoms, bond_factor: float = 1.2) -> np.ndarray:
    """Layer label (n_atoms,) int64: connected components of the covalent-bond graph, ordered by mean z (Å).

    Two atoms are bonded if ``d < bond_factor * (r_cov(a) + r_cov(b))`` (ASE covalent radii, periodic images
    included). Labels are 0, 1, … from the lowest mean z (ties: lowest first atom index).
    """
    n = len(atoms)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    radii = covalent_radii[atoms.numbers]
    i, j, _, d = neighbour_list(atoms, bond_factor * 2.0 * radii.max(), full=False)
    bonded = d < bond_factor * (radii[i] + radii[j])
    adjacency = coo_matrix((np.ones(bonded.sum()), (i[bonded], j[bonded])), shape=(n, n))
    n_comp, comp = connected_components(adjacency, directed=False)
    mean_z = np.bincount(comp, weights=atoms.positions[:, 2], minlength=n_comp) / np.bincount(comp, minlength=n_comp)
    first = np.full(n_comp, n)
    np.minimum.at(first, comp, np.arange(n))
    order = np.lexsort((first, np.round(mean_z, 6)))
    rank = np.empty(n_comp, dtype=np.int64)
    rank[order] = np.arange(n_comp)
    return rank[comp]


#: Labels may not split pairs closer than this times the sum of covalent radii (certainly bonded: C–C 1.42 < 1.52 Å,
#: Mo–S 2.41 < 2.59 Å); looser than layer detection's 1.2 so that user labels of compressed bilayers stay valid.
LAYER_CHECK_BOND_FACTOR = 1.0


def check_layer_labels(atoms: Atoms) -> None:
    """If ``atoms.arrays["layer"]`` is set, check it (:func:`check_layer_array` with the bond test); used by the
    calculator, where the labels come from users (the model-level API accepts any integer labels, e.g. for tests
    of the interlayer terms on artificial dimers)."""
    if "layer" not in atoms.arrays or len(atoms) == 0:
        return
    reach = LAYER_CHECK_BOND_FACTOR * 2.0 * float(covalent_radii[atoms.numbers].max())
    i, j, _, d = neighbour_list(atoms, reach, full=False)
    check_layer_array(atoms, (i, j, d))


def check_layer_array(atoms: Atoms, pairs: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None) -> np.ndarray:
    """``atoms.arrays["layer"]`` as (n_atoms,) int64, checked: integer labels, one per atom, and, with ``pairs``
    (i, j, distances d Å), no covalent bond (``d < LAYER_CHECK_BOND_FACTOR * (r_cov,a + r_cov,b)``) between atoms
    of different labels: a label that splits a bonded sheet would make its bonds "interlayer" hoppings (bands off
    by eV). Different components may share a label. ValueError naming the first offending bond."""
    raw = np.asarray(atoms.arrays["layer"])
    if raw.shape != (len(atoms),):
        raise ValueError(f'atoms.arrays["layer"] has shape {raw.shape}, expected ({len(atoms)},): one label per atom')
    if raw.dtype.kind not in "iub":
        if raw.dtype.kind != "f" or not np.all(np.isfinite(raw)) or not np.all(raw == np.round(raw)):
            raise ValueError(f'atoms.arrays["layer"] must hold integer layer labels, got {raw.dtype} values '
                             f"{raw[:6].tolist()}")
    layer = raw.astype(np.int64)
    if pairs is None:
        return layer
    i, j, d = pairs
    radii = covalent_radii[atoms.numbers]
    split = (d < LAYER_CHECK_BOND_FACTOR * (radii[i] + radii[j])) & (layer[i] != layer[j])
    if split.any():
        k = int(np.flatnonzero(split)[0])
        a, b = int(i[k]), int(j[k])
        raise ValueError(f'atoms.arrays["layer"] puts bonded atoms {a} ({atoms.symbols[a]}) and {b} '
                         f"({atoms.symbols[b]}), {d[k]:.3f} Å apart, in different layers {layer[a]} and {layer[b]}; "
                         f"{int(split.sum()) // 2 or 1} bond(s) cross layers. Fix the labels or delete the array "
                         'to detect layers (del atoms.arrays["layer"])')
    return layer


def canonical_pairs(i: np.ndarray, j: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Orient each unordered pair canonically: i < j, or i == j and S lexicographically positive (keys.py)."""
    lex_neg = (s[:, 0] < 0) | ((s[:, 0] == 0) & ((s[:, 1] < 0) | ((s[:, 1] == 0) & (s[:, 2] < 0))))
    flip = (i > j) | ((i == j) & lex_neg)
    return np.where(flip, j, i), np.where(flip, i, j), np.where(flip[:, None], -s, s)


def hamiltonian_pairs(atoms: Atoms, layer: np.ndarray, config: ModelConfig
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Hamiltonian pair list: index (2, n_pairs), shift (n_pairs, 3), category (n_pairs,), all int64.

    Onsite pairs first (atom order), then off-site pairs in lexicographic (i, j, S) order, canonical orientation.
    """
    n = len(atoms)
    i, j, s, d = neighbour_list(atoms, config.ham_cutoff_max, full=False)
    i, j, s = canonical_pairs(i, j, s)
    same = layer[i] == layer[j]
    near, far = config.ham_cutoff_near, config.ham_cutoff_far
    cat = np.full(len(i), -1, dtype=np.int64)
    cat[same & (d < near)] = K.CATEGORY_INTRA_NEAR
    cat[same & (d >= near) & (d < far)] = K.CATEGORY_INTRA_FAR
    cat[~same & (d < config.ham_cutoff_inter)] = K.CATEGORY_INTER
    keep = cat >= 0
    i, j, s, cat = i[keep], j[keep], s[keep], cat[keep]
    order = np.lexsort((s[:, 2], s[:, 1], s[:, 0], j, i))
    onsite = np.arange(n, dtype=np.int64)
    index = np.stack([np.concatenate([onsite, i[order]]), np.concatenate([onsite, j[order]])])
    shift = np.concatenate([np.zeros((n, 3), dtype=np.int64), s[order]])
    category = np.concatenate([np.full(n, K.CATEGORY_ONSITE, dtype=np.int64), cat[order]])
    return index, shift, category


def atoms_to_graph(atoms: Atoms, config: ModelConfig, dtype: torch.dtype = torch.float32,
                   device: str | torch.device = "cpu", with_hamiltonian: bool = True,
                   check_layer_bonds: bool = False) -> Graph:
    """Graph of one structure (a batch of one; see ``keys.py`` for every key, shape and convention).

    atoms: positions in Å (any, not necessarily wrapped), cell rows in Å, any pbc; ``atoms.arrays["layer"]`` is
    used if present, else layers are detected. with_hamiltonian: also build the Hamiltonian pair list (up to
    ``config.ham_cutoff_max``; skip it for energy/forces-only use such as MD).
    Raises ValueError for elements not in ``config.species``, atoms closer than ``config.min_distance``, bad
    geometry (``ase_wannierml.neighbours``) and non-integer layer labels; ``check_layer_bonds``: also labels that
    split covalent bonds (:func:`check_layer_array`; the calculator sets it).
    """
    spec = species_indices(atoms, config.species)
    i, j, s, d = neighbour_list(atoms, config.cutoff, full=True)
    check_min_distance(atoms, i, j, d, config.min_distance)
    if "layer" in atoms.arrays:
        layer = check_layer_array(atoms, (i, j, d) if check_layer_bonds else None)
    else:
        layer = detect_layers(atoms, config.layer_bond_factor)
    n = len(atoms)
    as_long = dict(dtype=torch.long, device=device)
    # float64: one lattice translation of the whole structure (and rigid shifts of far-apart groups along vacuum
    # directions) before the cast, so float32 keeps its precision after a rigid shift by 1e6 Å
    reach = max(config.cutoff, config.ham_cutoff_max if with_hamiltonian else 0.0)
    positions = model_positions(atoms.positions, atoms.cell[:], atoms.pbc, reach)
    graph: Graph = {
        K.POSITIONS: torch.tensor(positions, dtype=dtype, device=device),
        K.SPECIES: torch.tensor(spec, **as_long),
        K.ATOMIC_NUMBERS: torch.tensor(atoms.numbers, **as_long),
        K.LAYER: torch.tensor(layer, **as_long),
        K.BATCH: torch.zeros(n, **as_long),
        K.NUM_ATOMS: torch.tensor([n], **as_long),
        K.CELL: torch.tensor(atoms.cell[:], dtype=dtype, device=device).unsqueeze(0),
        K.PBC: torch.tensor(np.asarray(atoms.pbc, dtype=bool), device=device).unsqueeze(0),
        K.EDGE_INDEX: torch.tensor(np.stack([i, j]), **as_long),
        K.EDGE_SHIFT: torch.tensor(s, **as_long),
    }
    if with_hamiltonian:
        index, shift, category = hamiltonian_pairs(atoms, layer, config)
        graph[K.HAM_PAIR_INDEX] = torch.tensor(index, **as_long)
        graph[K.HAM_PAIR_SHIFT] = torch.tensor(shift, **as_long)
        graph[K.HAM_PAIR_CATEGORY] = torch.tensor(category, **as_long)
    return graph


def batch_graphs(graphs: Sequence[Graph]) -> Graph:
    """Concatenate graphs of several structures into one batch (atom indices offset, ``batch`` renumbered).

    All graphs must have the same keys (build them all with or all without the Hamiltonian pair list).
    """
    if not graphs:
        raise ValueError("batch_graphs needs at least one graph")
    key_sets = {frozenset(g) for g in graphs}
    if len(key_sets) != 1:
        raise ValueError("graphs to batch must have the same keys (with_hamiltonian must agree)")
    counts = [int(g[K.NUM_ATOMS].sum()) for g in graphs]
    offsets = np.concatenate([[0], np.cumsum(counts)[:-1]]).tolist()
    n_struct = np.concatenate([[0], np.cumsum([len(g[K.NUM_ATOMS]) for g in graphs])[:-1]]).tolist()
    out: Graph = {}
    for key in graphs[0]:
        if key in (K.EDGE_INDEX, K.HAM_PAIR_INDEX):
            out[key] = torch.cat([g[key] + off for g, off in zip(graphs, offsets)], dim=1)
        elif key == K.BATCH:
            out[key] = torch.cat([g[key] + b for g, b in zip(graphs, n_struct)])
        else:
            out[key] = torch.cat([g[key] for g in graphs])
    return out
