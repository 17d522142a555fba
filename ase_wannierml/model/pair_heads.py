"""Pair (hopping) heads: Hamiltonian blocks of atom pairs from pair features, cheap enough for 12 Å pair lists.

No message passing on pairs: a pair (i, j, r_ij) sees both atoms' backbone features x_i, x_j (projected to
``ham_irreps``), the spherical harmonics Y(r̂_ij) and invariants (Bessel basis of |r_ij|, scalars of x_i, x_j).
For every path p = (role ∈ {i, j}, irrep entry l1 of x, l2 of Y, block irrep L)::

    c_L(pair) = Σ_k ρ_k(invariants) Σ_p [ (W_kp x_role)^{l1} ⊗ Y^{l2}(r̂) ]_L / sqrt(n_paths(L) · rank)

(W_kp mixes channels of one irrep; ρ is an MLP), and the block is ``Σ_L c_L M_L`` (Clebsch–Gordan assembly,
``irreps_basis.block_basis``). The Wigner 3j symbols and M are folded into one constant tensor, the path features
W x are computed once per atom, so a pair costs a gather and two small matrix products. One network per ordered
species pair (like WANDER's per-element-pair networks). The block of an unordered pair is symmetrised over its two
orientations, ``H_ij(r) = ½ [B(i, j, r) + B(j, i, -r)ᵀ]``: independent of which orientation is stored
(permutation equivariance) and exactly ``H_ji(-r) = H_ij(r)ᵀ``.
"""
from __future__ import annotations

from collections import Counter
from typing import NamedTuple, Sequence

import torch
from e3nn import o3
from e3nn.nn import FullyConnectedNet
from torch import nn

from .heads import scalar_index
from .irreps_basis import block_basis
from .radial import BesselBasis

_SILU = torch.nn.functional.silu


class PairBlockNet(nn.Module):
    """Blocks (n, n_a, n_b) of one ordered species pair (a, b); ``irreps_in`` = per-atom pair features.

    Paths are ordered by (role, l2, l1 entry, L) so that each (role, l2) group is a contiguous slice of the path
    features: Y^{l2} only couples to its own group (the coupling is block sparse). When dim Y · n_a n_b is smaller
    than the path features (e.g. pz: one block entry), the coupling is folded into the per-atom features instead
    (``fold``), so a pz pair costs almost nothing.
    """

    def __init__(self, irreps_in: o3.Irreps, shells_a: Sequence[str], shells_b: Sequence[str],
                 num_invariants: int, radial_hidden: int, rank: int = 8, sh_lmax_min: int = 0) -> None:
        super().__init__()
        self.irreps_in = o3.Irreps(irreps_in)
        self.irreps_out, m = block_basis(shells_a, shells_b)
        self.n_a, self.n_b, self.rank = m.shape[1], m.shape[2], rank
        self.lmax_sh = max(2, self.irreps_out.lmax, sh_lmax_min)
        self.paths = [(role, i1, l2, k) for role in (0, 1) for l2 in range(self.lmax_sh + 1)
                      for i1, (_, ir1) in enumerate(self.irreps_in) for k, (_, ir) in enumerate(self.irreps_out)
                      if ir in ir1 * o3.Irrep(l2, (-1) ** l2)]
        missing = sorted({str(ir) for k, (_, ir) in enumerate(self.irreps_out) if all(p[3] != k for p in self.paths)})
        if missing:
            raise ValueError(f"block irreps {missing} cannot be reached from ham_irreps {self.irreps_in} ⊗ "
                             f"Y(l <= {self.lmax_sh})")
        self.register_buffer("coupling", self._coupling(m))
        self.weights = nn.ParameterList([nn.Parameter(torch.randn(rank, self.irreps_in[i1].mul)
                                                      / self.irreps_in[i1].mul ** 0.5) for _, i1, _, _ in self.paths])
        self.mlp = FullyConnectedNet([num_invariants, radial_hidden, rank], _SILU)
        self.groups = self._groups()
        self.d_role = tuple(sum(g[3] - g[2] for g in self.groups if g[0] == role) for role in (0, 1))
        self.fold = (self.lmax_sh + 1) ** 2 * self.n_a * self.n_b < min(self.d_role)

    def inherit(self, old: "PairBlockNet") -> None:
        """Take over a trained net with the same features and blocks but fewer bond harmonics (lower ``lmax_sh``):
        the same function (each old path's weights rescaled by √(paths now / paths before) of its block irrep, as
        the coupling normalises by the path count), the new paths start at zero and learn from there."""
        if (old.irreps_in != self.irreps_in or old.irreps_out != self.irreps_out or old.rank != self.rank
                or not set(old.paths) <= set(self.paths)):
            raise ValueError(f"cannot inherit a pair net ({old.irreps_in} -> {old.irreps_out}, l_max(Y) "
                             f"{old.lmax_sh}) into ({self.irreps_in} -> {self.irreps_out}, l_max(Y) {self.lmax_sh})")
        count_old = Counter(p[3] for p in old.paths)
        count_new = Counter(p[3] for p in self.paths)
        index = {p: n for n, p in enumerate(old.paths)}
        self.mlp.load_state_dict(old.mlp.state_dict())
        with torch.no_grad():
            for p, w in zip(self.paths, self.weights):
                if p in index:
                    w.copy_(old.weights[index[p]] * (count_new[p[3]] / count_old[p[3]]) ** 0.5)
                else:
                    w.zero_()

    def _coupling(self, m: torch.Tensor) -> torch.Tensor:
        """Constant C (dim Y, D, n_a n_b): Wigner 3j of every path folded with the block assembly M."""
        out_slices = self.irreps_out.slices()
        count = {k: sum(1 for p in self.paths if p[3] == k) for k in range(len(self.irreps_out))}
        blocks = []
        for _, i1, l2, k in self.paths:
            l1, big_l = self.irreps_in[i1].ir.l, self.irreps_out[k].ir.l
            cg = o3.wigner_3j(l1, l2, big_l, dtype=torch.float64) * ((2 * big_l + 1) / (count[k] * self.rank)) ** 0.5
            c = torch.zeros((self.lmax_sh + 1) ** 2, 2 * l1 + 1, self.n_a * self.n_b, dtype=torch.float64)
            c[l2 ** 2:(l2 + 1) ** 2] = torch.einsum("msq,qab->smab", cg, m[out_slices[k]].double()).flatten(2)
            blocks.append(c)
        return torch.cat(blocks, dim=1).to(torch.get_default_dtype())

    def _groups(self) -> list[tuple[int, int, int, int, int]]:
        """(role, l2, start, stop, offset) of each path group: columns start:stop of the role's path features,
        offset + start:stop of the coupling tensor."""
        groups, pos = {}, {0: 0, 1: 0}
        for role, i1, l2, _ in self.paths:
            d = 2 * self.irreps_in[i1].ir.l + 1
            start = groups.get((role, l2), (pos[role],))[0]
            groups[(role, l2)] = (start, pos[role] + d)
            pos[role] += d
        return [(role, l2, a, b, 0 if role == 0 else pos[0]) for (role, l2), (a, b) in groups.items()]

    def project(self, x: torch.Tensor, role: int) -> torch.Tensor:
        """Per-atom features of atoms in ``role`` (0: atom i, 1: atom j): x (n, irreps_in.dim) → (n, rank, F):
        the path features W_kp x (F = D_role) or, if ``fold``, those contracted with the coupling (F = dim Y n_a n_b).
        """
        slices = self.irreps_in.slices()
        feats = []
        for (r, i1, _, _), w in zip(self.paths, self.weights):
            if r == role:
                mul, ir = self.irreps_in[i1]
                xi = x[:, slices[i1]].reshape(len(x), mul, ir.dim)
                feats.append(torch.einsum("nud,ku->nkd", xi, w))
        x_hat = torch.cat(feats, dim=2)
        if not self.fold:
            return x_hat
        offset = 0 if role == 0 else self.d_role[0]
        c = self.coupling[:, offset:offset + self.d_role[role]]
        return torch.einsum("nkd,sdq->nksq", x_hat, c).reshape(len(x), self.rank, -1)

    def forward(self, feat_a: torch.Tensor, feat_b: torch.Tensor, sh: torch.Tensor,
                invariants: torch.Tensor) -> torch.Tensor:
        """feat_a, feat_b (n, rank, F) from :meth:`project`, sh (n, ≥ (lmax_sh+1)²) component-normalised
        spherical harmonics, invariants (n, num_invariants) → blocks (n, n_a, n_b)."""
        n, dim_sh = len(sh), (self.lmax_sh + 1) ** 2
        if self.fold:
            summed = (feat_a + feat_b).reshape(n, self.rank, dim_sh, -1)
            e = torch.einsum("nksq,ns->nkq", summed, sh[:, :dim_sh])
        else:
            e = sh.new_zeros((n, self.rank, self.n_a * self.n_b))
            for role, l2, start, stop, offset in self.groups:
                c = self.coupling[l2 ** 2:(l2 + 1) ** 2, offset + start:offset + stop].reshape(2 * l2 + 1, -1)
                t = (sh[:, l2 ** 2:(l2 + 1) ** 2] @ c).reshape(n, stop - start, -1)
                e = e + torch.bmm((feat_a, feat_b)[role][:, :, start:stop], t)
        rho = self.mlp(invariants)  # (n, rank)
        return torch.bmm(rho.unsqueeze(1), e).reshape(n, self.n_a, self.n_b)


class PairNodeCache(NamedTuple):
    """Per-atom quantities a :class:`PairHead` gathers for its pairs (computed once per graph).

    scalars (n_atoms, n_scalars); row (n_atoms,) int64, index of each atom among the atoms of its species;
    feats: per species-pair net, (features of its first species' atoms, of its second species' atoms)."""

    scalars: torch.Tensor
    row: torch.Tensor
    feats: list[tuple[torch.Tensor, torch.Tensor]]


class NodeProduct(nn.Module):
    """x ⊗ x of an atom's features, into the pair features: z = Linear(h) (at most 4 channels per irrep of h),
    then FullyConnectedTensorProduct(z, z → irreps_pair). Gives the pair heads the pseudo-tensor channels (1e,
    2o, 3e, 4e) that a linear map of natural-parity backbone features (0e, 1o, 2e, 3o) leaves at zero. Its
    weights start at zero: a model that gains it (warm start) keeps its function."""

    def __init__(self, irreps_node: o3.Irreps, irreps_pair: o3.Irreps, channels: int = 4) -> None:
        super().__init__()
        reduced = o3.Irreps([(min(mul, channels), ir) for mul, ir in o3.Irreps(irreps_node)]).simplify()
        self.reduce = o3.Linear(irreps_node, reduced)
        self.tp = o3.FullyConnectedTensorProduct(reduced, reduced, irreps_pair)
        with torch.no_grad():
            self.tp.weight.zero_()

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        z = self.reduce(h)
        return self.tp(z, z)


class PairHead(nn.Module):
    """Blocks of atom pairs of one category; Bessel basis on [0, cutoff] Å; ``irreps_in`` = backbone features.

    sh_lmax_min: lowest l_max of the bond harmonics (``ModelConfig.pair_sh_lmax``); node_product: add
    :class:`NodeProduct` to the per-atom pair features (``ModelConfig.pair_node_product``)."""

    def __init__(self, irreps_node: o3.Irreps, irreps_pair: o3.Irreps, shells: Sequence[Sequence[str]],
                 max_orb: int, cutoff: float, num_radial: int, radial_hidden: int, sh_lmax_min: int = 0,
                 node_product: bool = False) -> None:
        super().__init__()
        self.irreps_in = o3.Irreps(irreps_node)
        irreps_pair = o3.Irreps(irreps_pair)
        self.max_orb, self.num_species = max_orb, len(shells)
        self.project = o3.Linear(self.irreps_in, irreps_pair)
        self.product = NodeProduct(self.irreps_in, irreps_pair) if node_product else None
        self.register_buffer("scalars", scalar_index(irreps_pair), persistent=False)
        self.radial_basis = BesselBasis(cutoff, num_radial)
        self.pairs = [(a, b) for a in range(len(shells)) for b in range(len(shells))]
        n_inv = num_radial + 2 * len(self.scalars)
        self.nets = nn.ModuleList([PairBlockNet(irreps_pair, shells[a], shells[b], n_inv, radial_hidden,
                                                sh_lmax_min=sh_lmax_min) for a, b in self.pairs])
        lmax = max(net.lmax_sh for net in self.nets)
        self.spherical_harmonics = o3.SphericalHarmonics(o3.Irreps.spherical_harmonics(lmax, p=-1), normalize=True,
                                                         normalization="component")

    def node_features(self, h: torch.Tensor, species: torch.Tensor) -> PairNodeCache:
        """Per-atom projections of h (n_atoms, irreps_in.dim), species (n_atoms,), gathered later per pair."""
        x = self.project(h)
        if self.product is not None:
            x = x + self.product(h)
        row = torch.zeros_like(species)
        for s in range(self.num_species):
            mask = species == s
            row[mask] = torch.arange(int(mask.sum()), device=species.device)
        feats = [(net.project(x[species == sa], 0), net.project(x[species == sb], 1))
                 for (sa, sb), net in zip(self.pairs, self.nets)]
        return PairNodeCache(x[:, self.scalars], row, feats)

    def forward(self, cache: PairNodeCache, species: torch.Tensor, i: torch.Tensor, j: torch.Tensor,
                vec: torch.Tensor) -> torch.Tensor:
        """cache from :meth:`node_features`, species (n_atoms,), pair atoms i, j (n,), vectors r_ij (n, 3) Å
        → symmetrised blocks (n, max_orb, max_orb) (before any cut-off weight)."""
        n = len(i)
        a, b = torch.cat([i, j]), torch.cat([j, i])
        v = torch.cat([vec, -vec])
        rbf = self.radial_basis(v.norm(dim=1))
        sh = self.spherical_harmonics(v)
        spec_a, spec_b = species[a], species[b]
        blocks = rbf.new_zeros((2 * n, self.max_orb, self.max_orb))
        for (sa, sb), net, (feat_a, feat_b) in zip(self.pairs, self.nets, cache.feats):
            sel = torch.nonzero((spec_a == sa) & (spec_b == sb)).squeeze(1)
            if len(sel) == 0:
                continue
            ia, ib = a[sel], b[sel]
            inv = torch.cat([rbf[sel], cache.scalars[ia], cache.scalars[ib]], dim=1)
            blk = net(feat_a[cache.row[ia]], feat_b[cache.row[ib]], sh[sel], inv)
            blk = nn.functional.pad(blk, (0, self.max_orb - blk.shape[2], 0, self.max_orb - blk.shape[1]))
            blocks.index_copy_(0, sel, blk)
        return 0.5 * (blocks[:n] + blocks[n:].transpose(1, 2))
