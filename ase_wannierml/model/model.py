"""``WannierMLModel``: one equivariant backbone, an energy head (conservative forces, stress) and Hamiltonian heads.

Example::

    >>> import torch
    >>> from ase.build import graphene
    >>> model = build_model(orbitals={"C": ["pz"]}, cutoff=5.0, dtype=torch.float64, seed=0)
    >>> atoms = graphene(vacuum=5.0); atoms.pbc = (True, True, False)
    >>> out = model(atoms_to_graph(atoms, model.config, dtype=torch.float64), compute_hamiltonian=True)
    >>> out["forces"].shape, out["ham_blocks"].shape[1:]
    (torch.Size([2, 3]), torch.Size([1, 1]))
"""
from __future__ import annotations

import contextlib
import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, Mapping, Optional, Sequence

import torch
from torch import nn

from . import keys as K
from .backbone import EDGE_CHUNK, Backbone
from .config import ModelConfig
from .graph import atoms_to_graph
from .hamiltonian import HamiltonianHeads
from .heads import EnergyHead
from .interlayer_energy import InterlayerPairEnergy
from .utils import default_dtype, scatter_sum

if TYPE_CHECKING:  # pragma: no cover
    from ase import Atoms

    from ase_wannierml.tb.tightbinding import TightBinding


class WannierMLModel(nn.Module):
    """Energy (eV), forces (eV/Å), stress (eV/Å³) and Wannier Hamiltonian blocks (eV) from one backbone.

    Build with :func:`build_model` or ``WannierMLModel(config, dtype, device)``; ``config`` is a
    :class:`ModelConfig`. Inputs are graph dicts (``keys.py``); see :meth:`forward` for the outputs.
    """

    def __init__(self, config: ModelConfig, dtype: torch.dtype = torch.float32,
                 device: str | torch.device = "cpu") -> None:
        super().__init__()
        self.config = config
        self.metadata: dict[str, Any] = {}
        with default_dtype(dtype):
            self.backbone = Backbone(config)
            e0s = [config.e0s.get(s, 0.0) for s in config.species]
            self.energy_head = EnergyHead(self.backbone.irreps_out, e0s, config.energy_scale, config.energy_shift,
                                          hidden=config.energy_hidden)
            self.hamiltonian = HamiltonianHeads(self.backbone.irreps_out, config)
            self.interlayer_energy = InterlayerPairEnergy(
                self.backbone.irreps_out, config.species, config.cutoff, config.num_radial,
                config.envelope_p) if config.interlayer_pair_energy else None
        self.to(device=device, dtype=dtype)

    @property
    def dtype(self) -> torch.dtype:
        """Floating dtype of the parameters."""
        return next(self.parameters()).dtype

    @property
    def device(self) -> torch.device:
        """Device of the parameters."""
        return next(self.parameters()).device

    def predict_tightbinding(self, atoms: "Atoms", chunk_size: int = 65536) -> "TightBinding":
        """Predicted Wannier tight-binding Hamiltonian (eV) of ``atoms``, Hermitian by construction.

        Every unordered pair block H_ij(S) is stored together with its partner H_ji(-S) = H_ij(S)ᵀ; orbitals follow
        ``OrbitalTable.from_atoms`` (atoms in order, shells of ``config.orbitals``); ``fermi_level`` is
        ``config.fermi_level`` and ``num_electrons`` the sum of ``config.wannier_electrons`` (None if incomplete).
        """
        from .export import blocks_to_tightbinding

        graph = atoms_to_graph(atoms, self.config, dtype=self.dtype, device=self.device)
        with torch.no_grad():
            out = self(graph, compute_forces=False, compute_hamiltonian=True, ham_chunk_size=chunk_size)
        return blocks_to_tightbinding(atoms, graph, out, self.config)

    def save(self, path: str | Path, metadata: Optional[Mapping[str, Any]] = None) -> None:
        """Write a versioned model file (weights, config, units, ``metadata`` e.g. training info); see ``io.py``."""
        from .io import save_model

        save_model(self, path, metadata)

    def forward(self, graph: Dict[str, torch.Tensor], compute_forces: bool = True, compute_stress: bool = False,
                compute_hamiltonian: bool = False, ham_chunk_size: int = 65536,
                edge_chunk: int = EDGE_CHUNK) -> Dict[str, torch.Tensor]:
        """Model outputs for a (batched) graph.

        Returns ``energy`` (n_structures,) eV, ``node_energy`` (n_atoms,) eV; with ``compute_forces``
        ``forces`` (n_atoms, 3) eV/Å = -dE/dr; with ``compute_stress`` ``stress`` (n_structures, 3, 3) eV/Å³ =
        (1/V) dE/dε (ASE sign; ValueError for a zero-volume cell); with ``compute_hamiltonian`` ``ham_blocks``
        (n_pairs, max_orb, max_orb) eV and ``ham_mask`` (same shape, bool) for the pairs in
        ``graph["ham_pair_*"]``. In training mode forces, stress and H blocks keep their autograd graphs (for
        losses); in eval mode they are computed without (H under ``torch.no_grad``, so long pair lists stay cheap).
        Memory: message-passing edges are processed in chunks of ``edge_chunk`` (checkpointed in eval mode) and
        Hamiltonian pairs in chunks of ``ham_chunk_size``; results do not depend on either.
        """
        batch, n_struct = graph[K.BATCH], graph[K.NUM_ATOMS].shape[0]
        need_grad = compute_forces or compute_stress
        with torch.enable_grad() if need_grad else contextlib.nullcontext():
            pos_leaf, positions, cell, strain = differentiable_geometry(graph, compute_forces, compute_stress, batch)
            h, node_energy, energy, learned = self._energy(graph, positions, cell, batch, n_struct, edge_chunk)
        out = {K.ENERGY: energy, K.NODE_ENERGY: node_energy, K.NODE_ENERGY_LEARNED: learned}
        if need_grad:
            leaves = ([pos_leaf] if compute_forces else []) + ([strain] if compute_stress else [])
            grads = torch.autograd.grad(energy.sum(), leaves, create_graph=self.training, allow_unused=True)
            grads = [torch.zeros_like(x) if g is None else g for g, x in zip(grads, leaves)]
            if compute_forces:
                out[K.FORCES] = -grads[0]
            if compute_stress:
                out[K.STRESS] = grads[-1] / cell_volume(graph[K.CELL])[:, None, None]
        if not self.training:  # release the autograd graph
            out = {key: value.detach() for key, value in out.items()}
            positions, cell = positions.detach(), cell.detach()
            h = None if h is None else h.detach()
        if compute_hamiltonian:
            with contextlib.nullcontext() if self.training else torch.no_grad():
                if h is None:     # interlayer_pair_energy: the energy path saw each layer alone
                    h = self.features(graph, positions, cell, edge_chunk)
                out[K.HAM_BLOCKS] = self.hamiltonian(h, graph, positions, cell, ham_chunk_size)
            out[K.HAM_MASK] = self.hamiltonian.mask(graph[K.SPECIES], graph[K.HAM_PAIR_INDEX])
        return out

    def _edges(self, graph: Dict[str, torch.Tensor], positions: torch.Tensor, cell: torch.Tensor
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Message-passing edges of a graph at ``positions``: edge_index (2, n_edges), vectors r_ij (n_edges, 3) Å,
        species one-hot (n_atoms, n_species) and inter (n_edges,) bool, True where i and j are in different layers."""
        edge_index, shift = graph[K.EDGE_INDEX], graph[K.EDGE_SHIFT]
        i, j = edge_index[0], edge_index[1]
        cart = (shift.to(positions.dtype).unsqueeze(-1) * cell[graph[K.BATCH][i]]).sum(dim=1)
        vectors = positions[j] - positions[i] + cart
        onehot = nn.functional.one_hot(graph[K.SPECIES], len(self.config.species)).to(positions.dtype)
        return edge_index, vectors, onehot, graph[K.LAYER][i] != graph[K.LAYER][j]

    def features(self, graph: Dict[str, torch.Tensor], positions: torch.Tensor, cell: torch.Tensor,
                 edge_chunk: int = EDGE_CHUNK) -> torch.Tensor:
        """Backbone features of the full graph (all edges, both layers) at ``positions`` (n_atoms, 3) Å and
        ``cell`` (n_structures, 3, 3) Å → (n_atoms, backbone.irreps_out.dim): what the Hamiltonian heads read."""
        edge_index, vectors, onehot, inter = self._edges(graph, positions, cell)
        return self.backbone(onehot, edge_index, vectors, edge_chunk,
                             inter if self.config.interlayer_radial else None)

    def _energy(self, graph: Dict[str, torch.Tensor], positions: torch.Tensor, cell: torch.Tensor,
                batch: torch.Tensor, n_struct: int, edge_chunk: int
                ) -> tuple[Optional[torch.Tensor], torch.Tensor, torch.Tensor, torch.Tensor]:
        """Full-graph features h (n_atoms, dim) or None (``interlayer_pair_energy``: the energy path ran on the
        intralayer edges only, see :meth:`features`), per-atom energies (n_atoms,), energies (n_structures,) eV and
        the per-atom energies without e0 (n_atoms,) eV."""
        species = graph[K.SPECIES]
        if self.interlayer_energy is None:
            h = self.features(graph, positions, cell, edge_chunk)
            learned = self.energy_head.learned(h)
        else:
            edge_index, vectors, onehot, inter = self._edges(graph, positions, cell)
            intra = ~inter
            h_layer = self.backbone(onehot, edge_index[:, intra], vectors[intra], edge_chunk,
                                    inter[intra] if self.config.interlayer_radial else None)
            learned = self.energy_head.learned(h_layer) + self.interlayer_energy(
                h_layer, onehot, species, edge_index, vectors, inter)
            h = None
        node_energy = self.energy_head.e0[species] + learned
        return h, node_energy, scatter_sum(node_energy, batch, n_struct), learned


def differentiable_geometry(graph: Dict[str, torch.Tensor], compute_forces: bool, compute_stress: bool,
                            batch: torch.Tensor) -> tuple:
    """(pos_leaf, positions, cell, strain) for a forward pass (call inside ``torch.enable_grad()``): ``pos_leaf``
    (n_atoms, 3) Å requires grad when forces are wanted; with stress, a zero (n_structures, 3, 3) ``strain`` leaf
    is applied to positions and cell (``apply_strain``), else ``strain`` is None and positions/cell are the graph's."""
    pos_leaf, cell, strain = graph[K.POSITIONS], graph[K.CELL], None
    if compute_forces:
        pos_leaf = pos_leaf.detach().requires_grad_(True)
    positions = pos_leaf
    if compute_stress:
        strain = torch.zeros_like(cell).requires_grad_(True)
        positions, cell = apply_strain(pos_leaf, cell, strain, batch)
    return pos_leaf, positions, cell, strain


def apply_strain(positions: torch.Tensor, cell: torch.Tensor, strain: torch.Tensor, batch: torch.Tensor
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """Deform positions (n_atoms, 3) and cells (n_structures, 3, 3) by the symmetrised strain (n_structures, 3, 3):
    r -> r (1 + ε_sym), cell -> cell (1 + ε_sym) (row vectors)."""
    sym = 0.5 * (strain + strain.transpose(1, 2))
    return positions + torch.einsum("ni,nij->nj", positions, sym[batch]), cell + torch.bmm(cell, sym)


def cell_volume(cell: torch.Tensor) -> torch.Tensor:
    """|det| of each cell (n_structures,) Å³; ValueError if any is zero (stress undefined)."""
    volume = torch.linalg.det(cell.detach()).abs()
    if bool((volume < 1e-9).any()):
        raise ValueError("stress needs a cell with non-zero volume (3 lattice vectors); got a zero-volume cell")
    return volume


def build_model(orbitals: Mapping[str, Sequence[str] | str], cutoff: float = 5.0, *,
                dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu", seed: Optional[int] = None,
                **options: Any) -> WannierMLModel:
    """Build a fresh (untrained) model.

    orbitals: Wannier orbital basis per element, e.g. ``{"Mo": ["d"], "S": ["p"]}`` or ``{"C": ["pz"]}``; its keys
        are the species (in order) unless ``species=`` is given. cutoff: Å, message-passing cut-off.
    dtype: float32 (default) or float64; device: torch device; seed: seeds the initial weights (without touching
        the global RNG state). options: any other :class:`ModelConfig` field (e.g. ``hidden_irreps``,
        ``num_interactions``, ``ham_cutoff_inter``, ``e0s``); unknown names raise ``ValueError``.
    """
    known = {f.name for f in dataclasses.fields(ModelConfig)} - {"orbitals", "cutoff"}
    unknown = sorted(set(options) - known)
    if unknown:
        raise ValueError(f"build_model got unknown options {unknown}; known: {sorted(known)}")
    species = tuple(options.pop("species", tuple(orbitals)))
    config = ModelConfig(species=species, orbitals=dict(orbitals), cutoff=cutoff, **options)
    with torch.random.fork_rng(devices=[]):
        if seed is not None:
            torch.manual_seed(seed)
        return WannierMLModel(config, dtype=dtype, device=device)
