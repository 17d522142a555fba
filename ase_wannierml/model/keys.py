"""Keys of the graph dict (input of the model) and of the model's output dict.

A *graph* is a ``Dict[str, Tensor]`` built by :func:`ase_wannierml.model.graph.atoms_to_graph` for one
structure, or by :func:`~ase_wannierml.model.graph.batch_graphs` for several structures concatenated
(atom indices of structure ``b`` are offset by the number of atoms in structures ``0..b-1``).
Shapes use ``n_atoms`` (all structures), ``n_structures``, ``n_edges`` (message-passing edges) and
``n_pairs`` (Hamiltonian pairs). Units: Å, eV.

Edge convention (message passing, full list: both ``i->j`` and ``j->i`` are present)::

    r_ij = positions[j] - positions[i] + edge_shift @ cell[batch[i]]        # Å, (n_edges, 3)

with ``i = edge_index[0]`` the receiving (centre) atom and ``j = edge_index[1]`` the neighbour.

Hamiltonian pair convention (one row per *unordered* pair ``{(i, 0), (j, S)}``)::

    r_ij = positions[j] - positions[i] + ham_pair_shift @ cell[batch[i]]

The canonical representative of an unordered pair is the ordered ``(i, j, S)`` with ``i < j``, or ``i == j``
and ``S`` lexicographically positive (first non-zero component > 0); onsite pairs are ``(i, i, 0)``.
Per structure, pairs are ordered: all onsite pairs first (in atom order), then the off-site pairs sorted
lexicographically by ``(i, j, S0, S1, S2)``. The block of pair ``(i, j, S)`` is
``H_ij(S) = <i, 0| H |j, S>`` (Wannier90 ``_hr.dat`` convention); its partner is ``H_ji(-S) = H_ij(S)^T``.
"""

# ---- graph (inputs) -------------------------------------------------------------------------------------
POSITIONS = "positions"  # (n_atoms, 3) float, Å, Cartesian, as given (not wrapped)
SPECIES = "species"  # (n_atoms,) int64, index into ModelConfig.species
ATOMIC_NUMBERS = "atomic_numbers"  # (n_atoms,) int64
LAYER = "layer"  # (n_atoms,) int64, layer label (unique per structure), see graph.detect_layers
BATCH = "batch"  # (n_atoms,) int64, structure index of each atom
NUM_ATOMS = "num_atoms"  # (n_structures,) int64
CELL = "cell"  # (n_structures, 3, 3) float, Å, rows are lattice vectors (zero rows allowed if not periodic)
PBC = "pbc"  # (n_structures, 3) bool
EDGE_INDEX = "edge_index"  # (2, n_edges) int64, [centre i, neighbour j], full list, |r_ij| < cutoff
EDGE_SHIFT = "edge_shift"  # (n_edges, 3) int64, integer cell shift S of neighbour j
HAM_PAIR_INDEX = "ham_pair_index"  # (2, n_pairs) int64, canonical [i, j] of each unordered pair
HAM_PAIR_SHIFT = "ham_pair_shift"  # (n_pairs, 3) int64, integer cell shift S of atom j
HAM_PAIR_CATEGORY = "ham_pair_category"  # (n_pairs,) int64, see CATEGORY_* below

# Hamiltonian pair categories
CATEGORY_ONSITE = 0  # i == j, S == 0
CATEGORY_INTRA_NEAR = 1  # same layer, |r_ij| < ham_cutoff_near
CATEGORY_INTRA_FAR = 2  # same layer, ham_cutoff_near <= |r_ij| < ham_cutoff_far
CATEGORY_INTER = 3  # different layers, |r_ij| < ham_cutoff_inter
CATEGORY_NAMES = ("onsite", "intra_near", "intra_far", "inter")

GRAPH_KEYS = (
    POSITIONS, SPECIES, ATOMIC_NUMBERS, LAYER, BATCH, NUM_ATOMS, CELL, PBC,
    EDGE_INDEX, EDGE_SHIFT, HAM_PAIR_INDEX, HAM_PAIR_SHIFT, HAM_PAIR_CATEGORY,
)

# ---- model outputs ---------------------------------------------------------------------------------------
ENERGY = "energy"  # (n_structures,) eV
NODE_ENERGY = "node_energy"  # (n_atoms,) eV, per-atom energies (sum per structure = ENERGY)
NODE_ENERGY_LEARNED = "node_energy_learned"  # (n_atoms,) eV, NODE_ENERGY minus the per-element e0 (small numbers)
FORCES = "forces"  # (n_atoms, 3) eV/Å, -dE/dr
STRESS = "stress"  # (n_structures, 3, 3) eV/Å^3, ASE sign: (1/V) dE/d(strain)
HAM_BLOCKS = "ham_blocks"  # (n_pairs, max_orb, max_orb) eV, Wannier90 real-harmonic order, zero padded
HAM_MASK = "ham_mask"  # (n_pairs, max_orb, max_orb) bool, True on the real (unpadded) entries
