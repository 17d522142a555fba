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

from typing import NamedTuple, Sequence

import torch
from e3nn import o3
from e3nn.nn import FullyConnectedNet
from torch import nn

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


class PairBlockNet(nn.Module):
    """Blocks of one ordered species pair (a, b), factorised so that long pair lists stay cheap.

    For every path p = (irrep entry of x, l of Y, block irrep L) and both roles (atom i, atom j)::

        c_L = Σ_k ρ_k(pair) Σ_p [ (W_k,p x)^{l1} ⊗ Y^{l2}(r̂) ]_L / sqrt(n_paths(L) · rank)

    W_k,p mixes the channels of one irrep (equivariant), ρ_k is an MLP of the pair invariants (Bessel basis of
    |r|, scalars of x_i and x_j). The CG coupling and the block assembly M are folded into one constant tensor
    C (D, dim Y, n_a n_b), so a pair costs two small matrix products; partial shells (pz) only pay for their
    kept entries. ``irreps_in`` = ``irreps_pair`` (features of each atom), output (n, n_a, n_b) blocks.
    """

    def __init__(self, irreps_pair: o3.Irreps, lmax_sh: int, shells_a: Sequence[str], shells_b: Sequence[str],
                 num_invariants: int, radial_hidden: int, rank: int = 8) -> None:
        super().__init__()
        self.irreps_in = o3.Irreps(irreps_pair)
        self.irreps_out, m = block_basis(shells_a, shells_b)
        self.n_a, self.n_b = m.shape[1], m.shape[2]
        self.rank = rank
        paths = [(role, i1, l2, k) for role in (0, 1) for i1, (_, ir1) in enumerate(self.irreps_in)
                 for l2 in range(lmax_sh + 1) for k, (_, ir) in enumerate(self.irreps_out)
                 if ir in ir1 * o3.Irrep(l2, (-1) ** l2)]
        reached = {k for *_, k in paths}
        missing = sorted({str(ir) for k, (_, ir) in enumerate(self.irreps_out) if k not in reached})
        if missing:
            raise ValueError(f"block irreps {missing} cannot be reached from ham_irreps {self.irreps_in} ⊗ Y(l<={lmax_sh})")
        self.paths = paths
        self.register_buffer("coupling", self._coupling(paths, m, lmax_sh))
        self.weights = nn.ParameterList([nn.Parameter(torch.randn(rank, self.irreps_in[i1].mul)
                                                      / self.irreps_in[i1].mul ** 0.5) for _, i1, _, _ in paths])
        self.mlp = FullyConnectedNet([num_invariants, radial_hidden, rank], _SILU)
        dims = [sum(2 * self.irreps_in[i1].ir.l + 1 for r, i1, _, _ in paths if r == role) for role in (0, 1)]
        self.d_role = tuple(dims)
        self.fold = (lmax_sh + 1) ** 2 * self.n_a * self.n_b < min(dims)

    def _coupling(self, paths: list, m: torch.Tensor, lmax_sh: int) -> torch.Tensor:
        """Constant C (dim Y, D, n_a n_b): Wigner 3j of every path folded with the block assembly M."""
        dim_sh = (lmax_sh + 1) ** 2
        out_slices = self.irreps_out.slices()
        count = {k: sum(1 for *_, kk in paths if kk == k) for k in range(len(self.irreps_out))}
        blocks = []
        for _, i1, l2, k in paths:
            l1, big_l = self.irreps_in[i1].ir.l, self.irreps_out[k].ir.l
            cg = o3.wigner_3j(l1, l2, big_l, dtype=torch.float64) * (2 * big_l + 1) ** 0.5
            cg = cg / (count[k] * self.rank) ** 0.5
            c = torch.zeros(dim_sh, 2 * l1 + 1, self.n_a * self.n_b, dtype=torch.float64)
            c[l2 ** 2:(l2 + 1) ** 2] = torch.einsum("msq,qab->sm" + "ab", cg, m[out_slices[k]].double()).reshape(
                2 * l2 + 1, 2 * l1 + 1, -1)
            blocks.append(c)
        return torch.cat(blocks, dim=1).to(torch.get_default_dtype())

    def project(self, x: torch.Tensor, role: int) -> torch.Tensor:
        """Per-atom features of atoms in ``role`` (0: atom i, 1: atom j), x (n, irreps_in.dim) → (n, rank, F),
        computed once per atom and gathered per pair: the path features W_k,p x (F = D_role), or, when that is
        smaller, already contracted with the coupling tensor (F = dim Y · n_a n_b, ``self.fold``)."""
        slices = self.irreps_in.slices()
        feats = []
        for (r, i1, _, _), w in zip(self.paths, self.weights):
            if r == role:
                xi = x[:, slices[i1]].reshape(len(x), self.irreps_in[i1].mul, -1)
                feats.append(torch.einsum("nud,ku->nkd", xi, w))
        x_hat = torch.cat(feats, dim=2)
        if not self.fold:
            return x_hat
        c = self.coupling[:, :self.d_role[0]] if role == 0 else self.coupling[:, self.d_role[0]:]
        return torch.einsum("nkd,sdq->nksq", x_hat, c).flatten(2)

    def forward(self, feat_a: torch.Tensor, feat_b: torch.Tensor, sh: torch.Tensor,
                invariants: torch.Tensor) -> torch.Tensor:
        """feat_a, feat_b (n, rank, F) from :meth:`project`, sh (n, (lmax+1)²), invariants (n, num_invariants)
        → blocks (n, n_a, n_b)."""
        n = len(sh)
        if self.fold:
            e = torch.bmm((feat_a + feat_b).reshape(n * self.rank, sh.shape[1], -1).transpose(1, 2),
                          sh.repeat_interleave(self.rank, dim=0).unsqueeze(2)).reshape(n, self.rank, -1)
        else:
            t = (sh @ self.coupling.flatten(1)).reshape(n, -1, self.n_a * self.n_b)  # (n, D, n_a n_b)
            e = torch.bmm(feat_a, t[:, :self.d_role[0]]) + torch.bmm(feat_b, t[:, self.d_role[0]:])
        rho = self.mlp(invariants)  # (n, rank)
        return torch.bmm(rho.unsqueeze(1), e).reshape(n, self.n_a, self.n_b)


class PairNodeCache(NamedTuple):
    """Per-atom quantities a :class:`PairHead` gathers for its pairs (computed once per structure batch).

    scalars (n_atoms, n_scalars); row (n_atoms,) int64, index of each atom among atoms of its species;
    hat: per species-pair net, (path features of its first species' atoms, of its second species' atoms)."""

    scalars: torch.Tensor
    row: torch.Tensor
    hat: list[tuple[torch.Tensor, torch.Tensor]]


class PairHead(nn.Module):
    """Blocks of atom pairs of one category (module docstring); radial basis on [0, cutoff] Å.

    One :class:`PairBlockNet` per ordered species pair (like WANDER's per-element-pair networks), all fed by the
    shared backbone features projected to ``irreps_pair``."""

    def __init__(self, irreps_node: o3.Irreps, irreps_pair: o3.Irreps, shells: Sequence[Sequence[str]],
                 max_orb: int, cutoff: float, num_radial: int, radial_hidden: int) -> None:
        super().__init__()
        self.irreps_in = o3.Irreps(irreps_node)
        irreps_pair = o3.Irreps(irreps_pair)
        self.max_orb = max_orb
        self.project = o3.Linear(self.irreps_in, irreps_pair)
        self.register_buffer("scalars", scalar_index(irreps_pair), persistent=False)
        lmax = max(ir.l for _, ir in block_irreps_union(shells))
        self.irreps_sh = o3.Irreps.spherical_harmonics(max(2, lmax), p=-1)
        self.spherical_harmonics = o3.SphericalHarmonics(self.irreps_sh, normalize=True, normalization="component")
        self.radial_basis = BesselBasis(cutoff, num_radial)
        self.shells = [tuple(sh) for sh in shells]
        self.pairs = [(a, b) for a in range(len(shells)) for b in range(len(shells))]
        n_inv = num_radial + 2 * len(self.scalars)
        self.nets = nn.ModuleList([PairBlockNet(irreps_pair, self.irreps_sh.lmax, shells[a], shells[b], n_inv,
                                                radial_hidden) for a, b in self.pairs])

    def node_features(self, h: torch.Tensor, species: torch.Tensor) -> PairNodeCache:
        """Per-atom projections (h (n_atoms, irreps_in.dim), species (n_atoms,)) gathered later per pair."""
        x = self.project(h)
        row = torch.zeros_like(species)
        for s in range(len(self.shells)):
            mask = species == s
            row[mask] = torch.arange(int(mask.sum()), device=species.device)
        hat = [(net.project(x[species == sa], 0), net.project(x[species == sb], 1))
               for (sa, sb), net in zip(self.pairs, self.nets)]
        return PairNodeCache(x[:, self.scalars], row, hat)

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
        for (sa, sb), net, (hat_a, hat_b) in zip(self.pairs, self.nets, cache.hat):
            sel = torch.nonzero((spec_a == sa) & (spec_b == sb)).squeeze(1)
            if len(sel) == 0:
                continue
            ia, ib = a[sel], b[sel]
            inv = torch.cat([rbf[sel], cache.scalars[ia], cache.scalars[ib]], dim=1)
            blk = net(hat_a[cache.row[ia]], hat_b[cache.row[ib]], sh[sel], inv)
            blk = nn.functional.pad(blk, (0, self.max_orb - blk.shape[2], 0, self.max_orb - blk.shape[1]))
            blocks = blocks.index_copy(0, sel, blk)
        return 0.5 * (blocks[:n] + blocks[n:].transpose(1, 2))
