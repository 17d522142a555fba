"""Heads on the shared backbone features: per-atom energy, onsite blocks and pair (hopping) blocks.

Hamiltonian blocks are assembled from irreps coefficients with Clebsch–Gordan tensors (``irreps_basis.py``), so a
block rotates as ``D^{l1} H D^{l2}ᵀ`` by construction. Pair blocks come from *pair features*, not from deeper
message passing, so long pairs (up to 12 Å) stay cheap: both atoms' projected features x_i, x_j, the spherical
harmonics Y(r̂_ij) and a Bessel basis of |r_ij| (with both atoms' scalars) that sets per-pair tensor-product
weights::

    z_ij = [x_i ⊗ Y(r̂)]_w1 ⊕ [x_j ⊗ Y(r̂)]_w2 ⊕ [x_i ⊗ x_j]_w3,   w = MLP(bessel(|r|), scalars(x_i), scalars(x_j))
    c_ij = Linear_{species(i), species(j)}(z_ij)  →  B(i, j, r) = Σ_q c_q M_q

and the block of the unordered pair is symmetrised over its two orientations,
``H_ij(r) = ½ [B(i, j, r) + B(j, i, -r)ᵀ]``, so it does not depend on which orientation is stored (permutation
equivariance) and ``H_ji(-r) = H_ij(r)ᵀ`` holds exactly. Onsite blocks are symmetrised, ``½ (B + Bᵀ)``.
"""
from __future__ import annotations

from typing import Sequence

import torch
from e3nn import o3
from e3nn.nn import FullyConnectedNet
from torch import nn

from .backbone import uvu_instructions
from .irreps_basis import block_basis, block_irreps_union
from .radial import BesselBasis

_SILU = torch.nn.functional.silu


def scalar_index(irreps: o3.Irreps) -> torch.Tensor:
    """Indices (int64) of the 0e components of a feature vector with ``irreps``."""
    idx = [torch.arange(sl.start, sl.stop) for (_, ir), sl in zip(irreps, irreps.slices()) if ir == o3.Irrep("0e")]
    return torch.cat(idx) if idx else torch.zeros(0, dtype=torch.long)


class EnergyHead(nn.Module):
    """Per-atom energy (eV) = e0[species] + scale * MLP(0e features) + shift. ``irreps_in`` = backbone output."""

    def __init__(self, irreps_in: o3.Irreps, e0s: Sequence[float], scale: float, shift: float, hidden: int = 16) -> None:
        super().__init__()
        self.irreps_in = o3.Irreps(irreps_in)
        self.register_buffer("scalars", scalar_index(self.irreps_in), persistent=False)
        if len(self.scalars) == 0:
            raise ValueError(f"EnergyHead needs 0e features, irreps_in={self.irreps_in}")
        self.mlp = FullyConnectedNet([len(self.scalars), hidden, 1], _SILU)
        self.register_buffer("e0", torch.tensor(list(e0s), dtype=torch.get_default_dtype()))
        self.scale, self.shift = float(scale), float(shift)

    def forward(self, h: torch.Tensor, species: torch.Tensor) -> torch.Tensor:
        """h (n_atoms, irreps_in.dim), species (n_atoms,) → per-atom energies (n_atoms,) eV."""
        out = self.mlp(h[:, self.scalars]).squeeze(-1)
        return self.e0[species] + self.scale * out + self.shift


def regroup(irreps: o3.Irreps) -> tuple[o3.Irreps, torch.Tensor]:
    """Sorted, merged irreps and the column permutation (int64) taking features with ``irreps`` to that layout
    (few large irreps entries make e3nn's Linear much faster to build and run)."""
    sort = irreps.sort()
    slices = irreps.slices()
    perm = torch.cat([torch.arange(slices[k].start, slices[k].stop) for k in sort.inv])
    return sort.irreps.simplify(), perm


class BlockOutput(nn.Module):
    """Per ordered species pair (a, b): Linear(irreps_z → block irreps of (a, b)) and the CG assembly to blocks."""

    def __init__(self, irreps_z: o3.Irreps, shells: Sequence[Sequence[str]], pairs: Sequence[tuple[int, int]],
                 max_orb: int) -> None:
        super().__init__()
        self.irreps_in = o3.Irreps(irreps_z)
        irreps_grouped, perm = regroup(self.irreps_in)
        self.register_buffer("perm", perm, persistent=False)
        self.pairs = list(pairs)
        self.max_orb = max_orb
        self.linears = nn.ModuleList()
        self.sizes = []
        have = {ir for _, ir in self.irreps_in}
        for k, (a, b) in enumerate(self.pairs):
            irreps_ab, m_ab = block_basis(shells[a], shells[b])
            missing = sorted({str(ir) for _, ir in irreps_ab if ir not in have})
            if missing:
                raise ValueError(f"block irreps {missing} of species pair {a}-{b} are not in the pair features "
                                 f"irreps {self.irreps_in}; add them to ham_irreps or raise its l")
            self.linears.append(o3.Linear(irreps_grouped, irreps_ab))
            self.register_buffer(f"m_{k}", m_ab.to(torch.get_default_dtype()))
            self.sizes.append((m_ab.shape[1], m_ab.shape[2]))

    def forward(self, z: torch.Tensor, spec_a: torch.Tensor, spec_b: torch.Tensor) -> torch.Tensor:
        """z (n, irreps_z.dim), species of both atoms (n,) → blocks (n, max_orb, max_orb), zero padded."""
        blocks = z.new_zeros((z.shape[0], self.max_orb, self.max_orb))
        z = z[:, self.perm]
        for k, (a, b) in enumerate(self.pairs):
            sel = torch.nonzero((spec_a == a) & (spec_b == b)).squeeze(1)
            if len(sel) == 0:
                continue
            coeff = self.linears[k](z[sel])
            blk = torch.einsum("nq,qab->nab", coeff, getattr(self, f"m_{k}"))
            n_a, n_b = self.sizes[k]
            blk = nn.functional.pad(blk, (0, self.max_orb - n_b, 0, self.max_orb - n_a))
            blocks = blocks.index_copy(0, sel, blk)
        return blocks


class OnsiteHead(nn.Module):
    """Onsite blocks H_ii(0) (eV) from an atom's features: Linear_a([x_i, x_i ⊗ x_i]), symmetrised."""

    def __init__(self, irreps_node: o3.Irreps, irreps_pair: o3.Irreps, shells: Sequence[Sequence[str]],
                 max_orb: int) -> None:
        super().__init__()
        self.irreps_in = o3.Irreps(irreps_node)
        irreps_pair = o3.Irreps(irreps_pair)
        self.project = o3.Linear(self.irreps_in, irreps_pair)
        targets = block_irreps_union(shells)
        mul = max(m for m, _ in irreps_pair)
        self.tp = o3.FullyConnectedTensorProduct(irreps_pair, irreps_pair, o3.Irreps([(mul, ir) for _, ir in targets]))
        self.output = BlockOutput(irreps_pair + self.tp.irreps_out, shells, [(a, a) for a in range(len(shells))],
                                  max_orb)

    def forward(self, h: torch.Tensor, species: torch.Tensor) -> torch.Tensor:
        """h (n, irreps_in.dim) of the atoms, species (n,) → symmetric blocks (n, max_orb, max_orb)."""
        x = self.project(h)
        z = torch.cat([x, self.tp(x, x)], dim=1)
        blocks = self.output(z, species, species)
        return 0.5 * (blocks + blocks.transpose(1, 2))


class PairHead(nn.Module):
    """Blocks of atom pairs of one category (module docstring); radial basis on [0, cutoff] Å."""

    def __init__(self, irreps_node: o3.Irreps, irreps_pair: o3.Irreps, shells: Sequence[Sequence[str]],
                 max_orb: int, cutoff: float, num_radial: int, radial_hidden: int) -> None:
        super().__init__()
        self.irreps_in = o3.Irreps(irreps_node)
        irreps_pair = o3.Irreps(irreps_pair)
        self.project = o3.Linear(self.irreps_in, irreps_pair)
        self.register_buffer("scalars", scalar_index(irreps_pair), persistent=False)
        targets = {ir for _, ir in block_irreps_union(shells)}
        self.irreps_sh = o3.Irreps.spherical_harmonics(max([2] + [ir.l for ir in targets]), p=-1)
        self.spherical_harmonics = o3.SphericalHarmonics(self.irreps_sh, normalize=True, normalization="component")
        self.radial_basis = BesselBasis(cutoff, num_radial)
        out_a, instr_a = uvu_instructions(irreps_pair, self.irreps_sh, targets)
        self.tp_i = o3.TensorProduct(irreps_pair, self.irreps_sh, out_a, instr_a, shared_weights=False,
                                     internal_weights=False)
        self.tp_j = o3.TensorProduct(irreps_pair, self.irreps_sh, out_a, instr_a, shared_weights=False,
                                     internal_weights=False)
        out_ab, instr_ab = _uuu_instructions(irreps_pair, targets)
        self.tp_ij = o3.TensorProduct(irreps_pair, irreps_pair, out_ab, instr_ab, shared_weights=False,
                                      internal_weights=False)
        self.n_weights = (self.tp_i.weight_numel, self.tp_j.weight_numel, self.tp_ij.weight_numel)
        self.radial = FullyConnectedNet([num_radial + 2 * len(self.scalars), radial_hidden, sum(self.n_weights)],
                                        _SILU)
        pairs = [(a, b) for a in range(len(shells)) for b in range(len(shells))]
        self.output = BlockOutput(out_a + out_a + out_ab, shells, pairs, max_orb)

    def node_features(self, h: torch.Tensor) -> torch.Tensor:
        """Projected per-atom features x (n_atoms, irreps_pair.dim) (computed once, gathered per pair)."""
        return self.project(h)

    def forward(self, x: torch.Tensor, species: torch.Tensor, i: torch.Tensor, j: torch.Tensor,
                vec: torch.Tensor) -> torch.Tensor:
        """x (n_atoms, irreps_pair.dim) from :meth:`node_features`, species (n_atoms,), pair atoms i, j (n,),
        vectors r_ij (n, 3) Å → symmetrised blocks (n, max_orb, max_orb) (before any cut-off weight)."""
        n = len(i)
        a, b = torch.cat([i, j]), torch.cat([j, i])
        v = torch.cat([vec, -vec])
        xa, xb = x[a], x[b]
        feats = torch.cat([self.radial_basis(v.norm(dim=1)), xa[:, self.scalars], xb[:, self.scalars]], dim=1)
        w_i, w_j, w_ij = torch.split(self.radial(feats), self.n_weights, dim=1)
        sh = self.spherical_harmonics(v)
        z = torch.cat([self.tp_i(xa, sh, w_i), self.tp_j(xb, sh, w_j), self.tp_ij(xa, xb, w_ij)], dim=1)
        blocks = self.output(z, species[a], species[b])
        return blocks[:n]


def _uuu_instructions(irreps: o3.Irreps, targets: set[o3.Irrep]) -> tuple[o3.Irreps, list]:
    """Channel-wise (``uuu``) paths of ``irreps ⊗ irreps`` between entries of equal multiplicity → targets."""
    out, instr = [], []
    for i1, (mul1, ir1) in enumerate(irreps):
        for i2, (mul2, ir2) in enumerate(irreps):
            if mul1 != mul2:
                continue
            for ir in ir1 * ir2:
                if ir in targets:
                    instr.append((i1, i2, len(out), "uuu", True))
                    out.append((mul1, ir))
    return o3.Irreps(out), instr
