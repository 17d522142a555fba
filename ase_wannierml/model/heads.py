"""Heads on the shared backbone features: per-atom energy and onsite Hamiltonian blocks (pair heads: pair_heads.py).

Onsite blocks are assembled from irreps coefficients with Clebsch–Gordan tensors (``irreps_basis.py``), so a block
rotates as ``D^{l1} H D^{l2}ᵀ`` by construction, and are symmetrised, ``½ (B + Bᵀ)``::

    c_i = Linear_{species(i)}([x_i, x_i ⊗ x_i]),   x_i = Linear(h_i),   B = Σ_q c_q M_q

With ``onsite_hidden`` > 0 the onsite block also gets a per-shell level shift from an MLP of the invariants of
``[x_i, x_i ⊗ x_i]`` (``ε_s(i) 1_s`` on the diagonal of each shell s; scalar, so the block still rotates correctly):
a non-linear function of the environment where the read-out above is linear and quadratic.
"""
from __future__ import annotations

from typing import Sequence

import torch
from e3nn import o3
from e3nn.nn import FullyConnectedNet
from torch import nn

from ase_wannierml.orbitals import element_orbitals

from .irreps_basis import block_basis, block_irreps_union

_SILU = torch.nn.functional.silu


def scalar_index(irreps: o3.Irreps) -> torch.Tensor:
    """Indices (int64) of the 0e components of a feature vector with ``irreps``."""
    idx = [torch.arange(sl.start, sl.stop) for (_, ir), sl in zip(irreps, irreps.slices()) if ir == o3.Irrep("0e")]
    return torch.cat(idx) if idx else torch.zeros(0, dtype=torch.long)


class EnergyHead(nn.Module):
    """Per-atom energy (eV) = e0[species] + scale * MLP(0e features) + shift. ``irreps_in`` = backbone output."""

    def __init__(self, irreps_in: o3.Irreps, e0s: Sequence[float], scale: float, shift: float,
                 hidden: int = 16) -> None:
        super().__init__()
        self.irreps_in = o3.Irreps(irreps_in)
        self.register_buffer("scalars", scalar_index(self.irreps_in), persistent=False)
        if len(self.scalars) == 0:
            raise ValueError(f"EnergyHead needs 0e features, irreps_in={self.irreps_in}")
        self.mlp = FullyConnectedNet([len(self.scalars), hidden, 1], _SILU)
        self.register_buffer("e0", torch.tensor(list(e0s), dtype=torch.get_default_dtype()))
        self.scale, self.shift = float(scale), float(shift)

    def inherit(self, old: "EnergyHead", seed: int = 0) -> None:
        """Take over a trained, narrower readout with the same function: its hidden units are kept (output weights
        rescaled for e3nn's 1/√fan-in), the new units get random input weights and zero output weights."""
        w0_old, w1_old = old.mlp.layer0.weight, old.mlp.layer1.weight
        w0, w1 = self.mlp.layer0.weight, self.mlp.layer1.weight
        if w0_old.shape[0] != w0.shape[0] or w0_old.shape[1] > w0.shape[1] or w1.shape[1] != w1_old.shape[1]:
            raise ValueError(f"cannot inherit an energy readout of width {w0_old.shape[1]} into width {w0.shape[1]}")
        n_old, n_new = w0_old.shape[1], w0.shape[1]
        gen = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            w0.copy_(torch.randn(w0.shape, generator=gen, dtype=torch.float64).to(w0.dtype))
            w0[:, :n_old] = w0_old
            w1.zero_()
            w1[:n_old] = w1_old * (n_new / n_old) ** 0.5
            self.e0.copy_(old.e0)
        self.scale, self.shift = old.scale, old.shift

    def forward(self, h: torch.Tensor, species: torch.Tensor) -> torch.Tensor:
        """h (n_atoms, irreps_in.dim), species (n_atoms,) → per-atom energies (n_atoms,) eV."""
        return self.e0[species] + self.learned(h)

    def learned(self, h: torch.Tensor) -> torch.Tensor:
        """The learned part scale * MLP + shift (n_atoms,) eV, without e0: small numbers, so float32 keeps
        ~1e-7 eV where e0 + learned (e.g. -155 eV per C atom) would keep only ~1e-5 eV."""
        return self.scale * self.mlp(h[:, self.scalars]).squeeze(-1) + self.shift


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
            blocks.index_copy_(0, sel, blk)
        return blocks


class OnsiteHead(nn.Module):
    """Onsite blocks H_ii(0) (eV) from an atom's features: Linear_a([x_i, x_i ⊗ x_i]), symmetrised, plus (``hidden``
    > 0) a per-shell level shift MLP(invariants of [x_i, x_i ⊗ x_i]) whose output weights start at zero."""

    def __init__(self, irreps_node: o3.Irreps, irreps_pair: o3.Irreps, shells: Sequence[Sequence[str]],
                 max_orb: int, hidden: int = 0) -> None:
        super().__init__()
        self.irreps_in = o3.Irreps(irreps_node)
        irreps_pair = o3.Irreps(irreps_pair)
        self.project = o3.Linear(self.irreps_in, irreps_pair)
        targets = block_irreps_union(shells)
        mul = max(m for m, _ in irreps_pair)
        self.tp = o3.FullyConnectedTensorProduct(irreps_pair, irreps_pair, o3.Irreps([(mul, ir) for _, ir in targets]))
        self.output = BlockOutput(irreps_pair + self.tp.irreps_out, shells, [(a, a) for a in range(len(shells))],
                                  max_orb)
        self.correction: nn.Module | None = None
        if hidden > 0:
            self.register_buffer("z_scalars", scalar_index(irreps_pair + self.tp.irreps_out), persistent=False)
            n_shells = max(len(s) for s in shells)
            # shell_diag[a, s, o] = 1 if orbital slot o of species a belongs to its shell s
            diag = torch.zeros(len(shells), n_shells, max_orb)
            for a, element_shells in enumerate(shells):
                start = 0
                for s_idx, shell in enumerate(element_shells):
                    n = len(element_orbitals([shell]))
                    diag[a, s_idx, start:start + n] = 1.0
                    start += n
            self.register_buffer("shell_diag", diag.to(torch.get_default_dtype()), persistent=False)
            self.correction = FullyConnectedNet([len(self.z_scalars), hidden, len(shells) * n_shells], _SILU)
            with torch.no_grad():
                self.correction.layer1.weight.zero_()     # starts as the plain head (warm starts keep their H)

    def forward(self, h: torch.Tensor, species: torch.Tensor) -> torch.Tensor:
        """h (n, irreps_in.dim) of the atoms, species (n,) → symmetric blocks (n, max_orb, max_orb)."""
        x = self.project(h)
        z = torch.cat([x, self.tp(x, x)], dim=1)
        blocks = self.output(z, species, species)
        blocks = 0.5 * (blocks + blocks.transpose(1, 2))
        if self.correction is not None:
            n_species, n_shells, _ = self.shell_diag.shape
            shift = self.correction(z[:, self.z_scalars]).view(-1, n_species, n_shells)
            shift = shift[torch.arange(len(species), device=species.device), species]      # (n, n_shells)
            level = torch.einsum("ns,nso->no", shift, self.shell_diag[species])
            blocks = blocks + torch.diag_embed(level)
        return blocks
