"""Derivative of the predicted Hamiltonian blocks along atomic displacement patterns (dH/dλ, eV/Å), by autograd.

For positions r + λ·u (u: an (n_atoms, 3) pattern, Å per unit λ) the blocks H_ij(S; r + λu) are differentiated
at λ = 0 *through everything that depends on positions*: the pair geometry seen by the pair heads (r_ij, its
spherical harmonics, the radial basis, the cut-off/switching weights) and the backbone features h_i that feed
both the onsite and the pair heads. The pair list (which pairs exist, their categories) is that of the reference
geometry; every block is a smooth function of the positions across the cut-offs (``hamiltonian.py``), so this is
the exact derivative.

Two ways, both without forming the 3N derivatives:

- :func:`hamiltonian_jvp`: forward mode (dual numbers, ``torch.autograd.forward_ad``) for one pattern: one forward
  pass carrying tangents, no autograd graph stored, memory ~2× a plain forward pass. Use for large cells.
- :func:`hamiltonian_jvp_batched`: many patterns (n_patterns, n_atoms, 3) with one forward and one backward pass,
  then one double-backward pass per pattern (the "double-backward trick": g(w) = Jᵀw is linear in w, so
  ∂(u·g)/∂w = J u). Cheaper per pattern than repeating the forward-mode pass when there are many patterns; keeps
  the autograd graph (memory grows with the cell).

Example::

    >>> import torch
    >>> from ase.build import graphene
    >>> from ase_wannierml.model import build_model, atoms_to_graph
    >>> model = build_model(orbitals={"C": ["pz"]}, cutoff=5.0, dtype=torch.float64, seed=0).eval()
    >>> atoms = graphene(vacuum=5.0); atoms.pbc = (True, True, False)
    >>> graph = atoms_to_graph(atoms, model.config, dtype=torch.float64)
    >>> blocks, d_blocks = hamiltonian_jvp(model, graph, torch.ones(2, 3, dtype=torch.float64))
    >>> float(d_blocks.abs().max()) < 1e-12          # a rigid translation does not change H
    True
"""
from __future__ import annotations

from typing import Dict

import torch
import torch.autograd.forward_ad as fwAD

from . import keys as K
from .backbone import EDGE_CHUNK

Graph = Dict[str, torch.Tensor]


def hamiltonian_blocks(model, graph: Graph, positions: torch.Tensor, ham_chunk_size: int = 65536,
                       edge_chunk: int = EDGE_CHUNK) -> torch.Tensor:
    """Blocks (n_pairs, max_orb, max_orb) eV of ``graph``'s pair list as a differentiable function of
    ``positions`` (n_atoms, 3) Å (the graph's own positions are ignored; cell and pair list are the graph's)."""
    if K.HAM_PAIR_INDEX not in graph:
        raise ValueError("the graph has no Hamiltonian pair list: build it with atoms_to_graph(with_hamiltonian=True)")
    cell = graph[K.CELL]
    h = model.features(graph, positions, cell, edge_chunk)
    return model.hamiltonian(h, graph, positions, cell, ham_chunk_size)


def _check_pattern(graph: Graph, displacements: torch.Tensor, batched: bool) -> torch.Tensor:
    pos = graph[K.POSITIONS]
    u = torch.as_tensor(displacements, dtype=pos.dtype, device=pos.device)
    want = ("(n_patterns, " if batched else "(") + f"{pos.shape[0]}, 3)"
    if u.shape[-2:] != pos.shape or u.dim() != (3 if batched else 2):
        raise ValueError(f"displacements must have shape {want} (Å per unit λ, one row per atom), got "
                         f"{tuple(u.shape)}")
    if not bool(torch.isfinite(u).all()):
        raise ValueError("displacements contain non-finite values")
    return u


def hamiltonian_jvp(model, graph: Graph, displacements: torch.Tensor, ham_chunk_size: int = 65536,
                    edge_chunk: int = EDGE_CHUNK) -> tuple[torch.Tensor, torch.Tensor]:
    """H blocks and their derivative along one displacement pattern, by forward-mode autograd.

    model: a ``WannierMLModel`` (use eval mode); graph: ``atoms_to_graph(..., with_hamiltonian=True)``;
    displacements: (n_atoms, 3) Å per unit λ (positions r + λ·displacements).
    Returns ``(blocks, d_blocks)``, both (n_pairs, max_orb, max_orb): H_ij(S) in eV and dH_ij(S)/dλ in eV/Å at
    λ = 0, for the pairs of ``graph["ham_pair_*"]`` (padding entries are zero; mask: ``model.hamiltonian.mask``).
    Memory: no autograd graph is kept (the pass runs under ``torch.no_grad``); pairs are processed in chunks of
    ``ham_chunk_size``.
    """
    u = _check_pattern(graph, displacements, batched=False)
    with torch.no_grad(), fwAD.dual_level():
        dual = fwAD.make_dual(graph[K.POSITIONS], u)
        out = hamiltonian_blocks(model, graph, dual, ham_chunk_size, edge_chunk)
        primal, tangent = fwAD.unpack_dual(out)
        primal = primal.clone()
        tangent = torch.zeros_like(primal) if tangent is None else tangent.clone()
    return primal, tangent


def hamiltonian_jvp_batched(model, graph: Graph, displacements: torch.Tensor, ham_chunk_size: int = 65536,
                            edge_chunk: int = EDGE_CHUNK) -> tuple[torch.Tensor, torch.Tensor]:
    """H blocks and their derivatives along many patterns (double-backward trick, one shared forward pass).

    displacements: (n_patterns, n_atoms, 3) Å per unit λ. Returns ``(blocks, d_blocks)``: (n_pairs, max_orb,
    max_orb) eV and (n_patterns, n_pairs, max_orb, max_orb) eV/Å. Memory: the autograd graph of one forward and
    one backward pass plus the output, n_patterns × n_pairs × max_orb² floats.
    """
    u = _check_pattern(graph, displacements, batched=True)
    pos = graph[K.POSITIONS].detach().requires_grad_(True)
    with torch.enable_grad():
        blocks = hamiltonian_blocks(model, graph, pos, ham_chunk_size, edge_chunk)
        w = torch.zeros_like(blocks, requires_grad=True)
        (g,) = torch.autograd.grad(blocks, pos, grad_outputs=w, create_graph=True)
        out = blocks.new_zeros((u.shape[0],) + tuple(blocks.shape))
        for p in range(u.shape[0]):
            (jd,) = torch.autograd.grad(g, w, grad_outputs=u[p], retain_graph=p + 1 < u.shape[0],
                                        allow_unused=True)
            if jd is not None:
                out[p] = jd
    return blocks.detach(), out.detach()


def tightbinding_derivative(model, atoms, displacements, threshold: float = 0.0, ham_chunk_size: int = 65536):
    """dH(R)/dλ (eV/Å) of the model's tight-binding Hamiltonian for positions r + λ·u, as ``TightBinding``.

    atoms: ``ase.Atoms`` the model knows; displacements u: (n_atoms, 3) Å per unit λ → one ``TightBinding``, or
    (n_patterns, n_atoms, 3) → a list of them (one shared forward pass, :func:`hamiltonian_jvp_batched`).
    Each result has exactly the (R, rows, cols) support of ``model.predict_tightbinding(atoms)`` (pruned like
    ``.pruned(threshold)`` of it if ``threshold`` > 0 eV: the support is chosen by |H|, not |dH|), Hermitian by
    construction; ``tb.hamiltonian(k)`` is then dH(k)/dλ. ``num_electrons`` and ``fermi_level`` are None (a
    derivative has neither).
    """
    import numpy as np

    from .export import blocks_to_tightbinding
    from .graph import atoms_to_graph

    members = list(getattr(model, "members", [model]))  # a committee: derivative of its mean H
    if not all(hasattr(m, "hamiltonian") and hasattr(m, "_energy") for m in members):
        raise TypeError(f"dH/dR needs a WannierMLModel or a committee of them, got {type(model).__name__}")
    u = np.asarray(displacements, dtype=float)
    batched = u.ndim == 3
    first = members[0]
    graph = atoms_to_graph(atoms, first.config, dtype=first.dtype, device=first.device)
    u_t = torch.as_tensor(u, dtype=first.dtype, device=first.device)
    blocks, d_blocks = 0.0, 0.0
    for member in members:
        was_training = member.training
        member.eval()
        try:
            if batched:
                b, d = hamiltonian_jvp_batched(member, graph, u_t, ham_chunk_size)
            else:
                b, d = hamiltonian_jvp(member, graph, u_t, ham_chunk_size)
                d = d.unsqueeze(0)
        finally:
            member.train(was_training)
        blocks, d_blocks = blocks + b / len(members), d_blocks + d / len(members)
    model = first
    mask = model.hamiltonian.mask(graph[K.SPECIES], graph[K.HAM_PAIR_INDEX])
    keep = None
    if threshold > 0:
        h0 = blocks_to_tightbinding(atoms, graph, {K.HAM_BLOCKS: blocks, K.HAM_MASK: mask}, model.config)
        keep = h0._prune_keep(float(threshold))
    out = []
    for d in d_blocks:
        tb = blocks_to_tightbinding(atoms, graph, {K.HAM_BLOCKS: d, K.HAM_MASK: mask}, model.config)
        if keep is not None:
            tb = type(tb)(tb.cell, tb.R[keep], tb.rows[keep], tb.cols[keep], tb.values[keep], tb.orbitals,
                          pbc=tb.pbc, atoms=tb.atoms, check_hermitian=False)
        tb.num_electrons, tb.fermi_energy = None, None
        out.append(tb)
    return out if batched else out[0]
