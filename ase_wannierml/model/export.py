"""Model Hamiltonian blocks → ``TightBinding`` (numpy), completing each pair with its Hermitian partner."""
from __future__ import annotations

from typing import Dict

import numpy as np
import torch
from ase import Atoms

from ase_wannierml.tb.tightbinding import OrbitalTable, TightBinding

from . import keys as K
from .config import ModelConfig


def blocks_to_tightbinding(atoms: Atoms, graph: Dict[str, torch.Tensor], out: Dict[str, torch.Tensor],
                           config: ModelConfig) -> TightBinding:
    """``TightBinding`` from one structure's graph and model output (``ham_blocks``, ``ham_mask``).

    For each pair (i, j, S) with block B: H[o_i + r, o_j + c](S) = B[r, c]; for every off-site pair also
    H[o_j + c, o_i + r](-S) = B[r, c] (H_ji(-S) = H_ij(S)ᵀ), so the result is Hermitian exactly. o_i is the first
    orbital of atom i in ``OrbitalTable.from_atoms`` order. ``atoms.arrays["layer"]`` is set from the graph.
    """
    if graph[K.NUM_ATOMS].shape[0] != 1:
        raise ValueError("blocks_to_tightbinding needs the graph of a single structure")
    blocks = out[K.HAM_BLOCKS].detach().cpu().double().numpy()
    mask = out[K.HAM_MASK].cpu().numpy()
    pi, pj = graph[K.HAM_PAIR_INDEX].cpu().numpy()
    shift = graph[K.HAM_PAIR_SHIFT].cpu().numpy()
    offsite = graph[K.HAM_PAIR_CATEGORY].cpu().numpy() != K.CATEGORY_ONSITE
    n_orb = np.asarray(config.num_orbitals)[graph[K.SPECIES].cpu().numpy()]
    first = np.concatenate([[0], np.cumsum(n_orb)[:-1]])
    p, r, c = np.nonzero(mask)
    rows, cols, values, R = first[pi[p]] + r, first[pj[p]] + c, blocks[p, r, c], shift[p]
    back = offsite[p]
    rows, cols = np.concatenate([rows, cols[back]]), np.concatenate([cols, rows[back]])
    values, R = np.concatenate([values, values[back]]), np.concatenate([R, -R[back]])
    tagged = atoms.copy()
    tagged.calc = None
    tagged.arrays["layer"] = graph[K.LAYER].cpu().numpy()
    orbitals = OrbitalTable.from_atoms(tagged, config.orbitals)
    electrons = config.wannier_electrons
    symbols = atoms.get_chemical_symbols()
    num_electrons = sum(electrons[s] for s in symbols) if all(s in electrons for s in set(symbols)) else None
    return TightBinding(atoms.cell[:], R, rows, cols, values, orbitals, pbc=tuple(atoms.pbc), atoms=tagged,
                        num_electrons=num_electrons, fermi_level=config.fermi_level)
