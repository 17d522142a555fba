"""Hamiltonian blocks of every pair of the graph's pair list, routed to one head per physics category.

Categories (``keys.py``): onsite, intralayer near (d < r_near), intralayer far (r_near <= d < r_far), interlayer
(d < r_inter). Smoothness across every cut-off (energies *and* H are continuous as atoms move):

- intralayer, far head enabled (r_far > r_near): ``H = s(d) H_near + (1 - s(d)) u(d / r_far) H_far`` with
  s the C² step from 1 at r_near - w to 0 at r_near (w = ``ham_switch_width``), u the polynomial envelope;
  only pairs in the window evaluate both heads;
- intralayer without far head: ``H = u(d / r_near) H_near``; interlayer: ``H = u(d / r_inter) H_inter``.

The intra/inter split follows the layer labels, which change only when covalent bonds form or break.
"""
from __future__ import annotations

from typing import Optional

import torch
from e3nn import o3
from torch import nn

from . import keys as K
from .config import ModelConfig
from .heads import OnsiteHead
from .pair_heads import PairHead, PairNodeCache
from .radial import polynomial_envelope, switch_off


class HamiltonianHeads(nn.Module):
    """Onsite + near + far + interlayer heads; ``irreps_in`` = backbone features."""

    def __init__(self, irreps_in: o3.Irreps, config: ModelConfig) -> None:
        super().__init__()
        self.irreps_in = o3.Irreps(irreps_in)
        shells = [config.orbitals[s] for s in config.species]
        self.max_orb = config.max_orbitals
        args = (self.irreps_in, config.ham_irreps, shells, self.max_orb)
        radial = (config.ham_num_radial, config.radial_hidden, config.pair_sh_lmax, config.pair_node_product)
        self.onsite = OnsiteHead(*args, hidden=config.onsite_hidden)
        self.near = PairHead(*args, config.ham_cutoff_near, *radial)
        self.has_far = config.ham_cutoff_far > config.ham_cutoff_near
        self.far: Optional[PairHead] = PairHead(*args, config.ham_cutoff_far, *radial) if self.has_far else None
        self.inter = PairHead(*args, config.ham_cutoff_inter, *radial)
        self.r_near, self.r_far, self.r_inter = config.ham_cutoff_near, config.ham_cutoff_far, config.ham_cutoff_inter
        self.width, self.p, self.scale = config.ham_switch_width, config.envelope_p, config.ham_scale
        ref = torch.zeros(len(config.species), self.max_orb)
        for a, element in enumerate(config.species):
            values = config.onsite_reference.get(element, ())
            ref[a, :len(values)] = torch.tensor(values)
        self.register_buffer("onsite_reference", ref)
        self.register_buffer("num_orbitals", torch.tensor(config.num_orbitals, dtype=torch.long))

    def mask(self, species: torch.Tensor, pair_index: torch.Tensor) -> torch.Tensor:
        """(n_pairs, max_orb, max_orb) bool: True on real (unpadded) block entries."""
        slots = torch.arange(self.max_orb, device=species.device)
        rows = slots[None, :] < self.num_orbitals[species[pair_index[0]]][:, None]
        cols = slots[None, :] < self.num_orbitals[species[pair_index[1]]][:, None]
        return rows[:, :, None] & cols[:, None, :]

    def forward(self, h: torch.Tensor, graph: dict, positions: torch.Tensor, cell: torch.Tensor,
                chunk_size: int = 65536) -> torch.Tensor:
        """Blocks (n_pairs, max_orb, max_orb) eV for ``graph[HAM_PAIR_*]``; h (n_atoms, irreps_in.dim),
        positions (n_atoms, 3) Å and cell (n_structures, 3, 3) Å (possibly strained). Pairs are evaluated in
        chunks of ``chunk_size`` to bound memory."""
        species, batch = graph[K.SPECIES], graph[K.BATCH]
        index, shift, category = graph[K.HAM_PAIR_INDEX], graph[K.HAM_PAIR_SHIFT], graph[K.HAM_PAIR_CATEGORY]
        blocks = h.new_zeros((index.shape[1], self.max_orb, self.max_orb))
        onsite = torch.nonzero(category == K.CATEGORY_ONSITE).squeeze(1)
        atoms = index[0, onsite]
        diag = torch.diag_embed(self.onsite_reference[species[atoms]])
        blocks.index_copy_(0, onsite, self.scale * self.onsite(h[atoms], species[atoms]) + diag)
        offsite = torch.nonzero(category != K.CATEGORY_ONSITE).squeeze(1)
        heads = [head for head in (self.near, self.far, self.inter) if head is not None]
        x = [head.node_features(h, species) for head in heads]
        for start in range(0, len(offsite), chunk_size):
            sel = offsite[start:start + chunk_size]
            i, j = index[0, sel], index[1, sel]
            cart = (shift[sel].to(positions.dtype).unsqueeze(-1) * cell[batch[i]]).sum(dim=1)
            vec = positions[j] - positions[i] + cart
            chunk = self._offsite(x, heads, species, i, j, vec, category[sel])
            blocks.index_copy_(0, sel, self.scale * chunk)
        return blocks

    def _weights(self, d: torch.Tensor, cat: torch.Tensor) -> list[torch.Tensor]:
        """Cut-off/switching weight (n,) of each head (near, [far], inter) for pairs at distance d, category cat."""
        intra = (cat == K.CATEGORY_INTRA_NEAR) | (cat == K.CATEGORY_INTRA_FAR)
        inter = cat == K.CATEGORY_INTER
        zero = torch.zeros_like(d)
        if not self.has_far:
            return [torch.where(intra, polynomial_envelope(d, self.r_near, self.p), zero),
                    torch.where(inter, polynomial_envelope(d, self.r_inter, self.p), zero)]
        s = switch_off(d, self.r_near - self.width, self.r_near)
        w_far = (1.0 - s) * polynomial_envelope(d, self.r_far, self.p)
        return [torch.where(intra, s, zero), torch.where(intra, w_far, zero),
                torch.where(inter, polynomial_envelope(d, self.r_inter, self.p), zero)]

    def _offsite(self, x: list[PairNodeCache], heads: list[PairHead], species: torch.Tensor, i: torch.Tensor,
                 j: torch.Tensor, vec: torch.Tensor, cat: torch.Tensor) -> torch.Tensor:
        """Weighted sum of the heads' blocks (n, max_orb, max_orb) for one chunk of off-site pairs."""
        out = vec.new_zeros((len(i), self.max_orb, self.max_orb))
        weights = self._weights(vec.norm(dim=1), cat)
        for head, x_head, w in zip(heads, x, weights):
            active = torch.nonzero(w != 0).squeeze(1)
            if len(active) == 0:
                continue
            blk = head(x_head, species, i[active], j[active], vec[active])
            out.index_add_(0, active, blk * w[active, None, None])
        return out
