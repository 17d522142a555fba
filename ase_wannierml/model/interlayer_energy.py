"""Interlayer energy as a learned, registry-aware pair term (``ModelConfig.interlayer_pair_energy``).

With this option the energy path of the model sees each layer on its own: the backbone runs on the intralayer edges
only, the energy readout gives the energy of every layer as if it were alone, and the layers interact through

    E_inter = ½ Σ_{i, j in different layers, r_ij < cutoff} u(r_ij) φ(B(r_ij), g(ρ_ij), g(ρ_ji), a_i(r̂_ij), a_j(r̂_ji), s_i, s_j, Z_i, Z_j)

with u the smooth envelope, B the Bessel basis, s the scalar (0e) features of the atom's own layer environment,
a_i(r̂) = ⟨h_i^(c), Y_l(r̂)⟩ / √(2l+1) the projection of every l > 0 feature channel c of atom i on the direction to its
partner, and g(ρ) = exp(−ρ²/δ²) for a few widths δ (``TRANSVERSE_WIDTHS``) of the transverse distance of the partner
from i's sheet normal, as in the Kolmogorov–Crespi potential. ρ is defined without an explicit normal, smoothly for
any geometry, from i's covalent bond tensor T_i = Σ_b w(r_b) r̂_b r̂_bᵀ (intralayer neighbours within the covalent
radius sum, switched off smoothly up to 1.2 × that):

    ρ_ij² = r_ij² (2 r̂_ijᵀ T_i r̂_ij + ε) / (tr T_i + ε)

For a flat sheet of in-plane bonds T_i ∝ 1 − n nᵀ and ρ_ij² = r_ij² sin²θ exactly (graphene); for atoms with tilted
bonds (S in MoS2) it is a weaker function of θ, and the a_i carry the rest. Without the g features the term learned
only a third of DFT's AA − AB energy (session 15). φ is an MLP whose output weights start at zero. The Hamiltonian
heads keep the features of the full graph (both layers).

Why (session 15, docs/accuracy.md): with interlayer messages in the energy path, the shipped graphene model's
flexural (curvature) stiffness changes with the layer distance (12.2 eV/Å² at 3.10 Å, 15.3 at 3.60 Å) while DFT's
does not (14.5–14.8); the same model without interlayer edges gives 14.9 at every distance.

Units: Å, eV. Example::

    >>> from e3nn import o3
    >>> term = InterlayerPairEnergy(o3.Irreps("8x0e+4x1o+2x2e"), species=("C",), cutoff=5.0, num_radial=8)
    >>> term.num_inputs
    46
"""
from __future__ import annotations

import math

import torch
from e3nn import o3
from e3nn.nn import FullyConnectedNet
from torch import nn

from .radial import BesselBasis, polynomial_envelope, switch_off

#: Å, widths δ of the transverse-distance features exp(−ρ²/δ²) (Kolmogorov–Crespi's graphene δ is 0.578 Å).
TRANSVERSE_WIDTHS = (0.5, 0.8, 1.2, 1.8)
#: bonds of the sheet tensor: full weight up to the covalent radius sum, zero from this factor × the sum
BOND_SWITCH_FACTOR = 1.2
_EPS = 1e-4


class InterlayerPairEnergy(nn.Module):
    """Per-atom interlayer energies (eV) from the intralayer features of both atoms of every interlayer edge."""

    def __init__(self, irreps_in: o3.Irreps, species: tuple[str, ...], cutoff: float, num_radial: int,
                 envelope_p: int = 6, hidden: int = 32) -> None:
        super().__init__()
        from ase.data import atomic_numbers, covalent_radii

        num_species = len(species)
        radii = torch.tensor([float(covalent_radii[atomic_numbers[s]]) for s in species])
        self.register_buffer("bond_length", radii[:, None] + radii[None, :], persistent=False)
        self.register_buffer("widths", torch.tensor(TRANSVERSE_WIDTHS), persistent=False)
        self.irreps_in = o3.Irreps(irreps_in)
        self.cutoff, self.envelope_p, self.num_species = float(cutoff), int(envelope_p), int(num_species)
        scalars, directional = [], []
        for (mul, ir), sl in zip(self.irreps_in, self.irreps_in.slices()):
            if ir == o3.Irrep("0e"):
                scalars.append(torch.arange(sl.start, sl.stop))
            elif ir.l > 0 and ir.p == (-1) ** ir.l:      # natural parity: ⟨h, Y_l(r̂)⟩ is a true scalar
                directional.append((mul, ir.l, sl.start))
        self.register_buffer("scalars", torch.cat(scalars) if scalars else torch.zeros(0, dtype=torch.long),
                             persistent=False)
        self.directional = directional
        self.lmax = max([l for _, l, _ in directional], default=0)
        self.sh = o3.SphericalHarmonics(list(range(1, self.lmax + 1)), normalize=True, normalization="component") \
            if self.lmax else None
        self.radial_basis = BesselBasis(cutoff, num_radial)
        n_dir = sum(mul for mul, _, _ in directional)
        self.num_inputs = num_radial + 2 * (len(TRANSVERSE_WIDTHS) + n_dir + len(self.scalars) + self.num_species)
        self.mlp = FullyConnectedNet([self.num_inputs, hidden, hidden, 1], torch.nn.functional.silu)
        with torch.no_grad():
            self.mlp.layer2.weight.zero_()               # starts as no interlayer energy at all

    def directional_invariants(self, h_i: torch.Tensor, h_j: torch.Tensor, unit: torch.Tensor
                               ) -> tuple[torch.Tensor, torch.Tensor]:
        """(a_i, a_j), each (n_edges, Σ mul): ⟨h^(c), Y_l(±r̂)⟩ / √(2l+1) per l > 0 channel c, for the centres'
        features h_i along r̂ and the neighbours' h_j along −r̂ (Y_l(−r̂) = (−1)^l Y_l(r̂): one evaluation of Y)."""
        if self.sh is None:
            empty = h_i.new_zeros((h_i.shape[0], 0))
            return empty, empty
        y = self.sh(unit)                                  # (n, Σ_l (2l+1)), l = 1..lmax
        out_i, out_j = [], []
        for mul, l, start in self.directional:
            y_l = y[:, l * l - 1:(l + 1) ** 2 - 1] / math.sqrt(2 * l + 1)   # l' = 1..l-1 take l² - 1 columns
            stop = start + mul * (2 * l + 1)
            out_i.append(torch.einsum("ncm,nm->nc", h_i[:, start:stop].reshape(-1, mul, 2 * l + 1), y_l))
            out_j.append((-1) ** l * torch.einsum("ncm,nm->nc", h_j[:, start:stop].reshape(-1, mul, 2 * l + 1), y_l))
        return torch.cat(out_i, dim=1), torch.cat(out_j, dim=1)

    def sheet_tensors(self, n_atoms: int, species: torch.Tensor, edge_index: torch.Tensor,
                      vectors: torch.Tensor) -> torch.Tensor:
        """T (n_atoms, 3, 3) = Σ_b w(r_b) r̂_b r̂_bᵀ over the intralayer edges (2, n) with vectors (n, 3) Å."""
        i, j = edge_index[0], edge_index[1]
        d = vectors.norm(dim=1)
        bond = self.bond_length.to(d.dtype)[species[i], species[j]]
        w = switch_off(d, bond, BOND_SWITCH_FACTOR * bond)
        unit = vectors / d.unsqueeze(-1)
        outer = w[:, None, None] * unit[:, :, None] * unit[:, None, :]
        return vectors.new_zeros((n_atoms, 3, 3)).index_add(0, i, outer)

    def transverse_features(self, tensors: torch.Tensor, vectors: torch.Tensor) -> torch.Tensor:
        """exp(−ρ²/δ²) (n_edges, len(TRANSVERSE_WIDTHS)) from the centre atoms' sheet tensors (n_edges, 3, 3) and
        the edge vectors (n_edges, 3) Å."""
        d2 = (vectors * vectors).sum(dim=1)
        along = torch.einsum("na,nab,nb->n", vectors, tensors, vectors)          # r² r̂ᵀ T r̂
        trace = tensors.diagonal(dim1=1, dim2=2).sum(dim=1)
        rho2 = (2.0 * along + _EPS * d2) / (trace + _EPS)
        return torch.exp(-rho2.unsqueeze(-1) / self.widths.to(rho2.dtype) ** 2)

    def forward(self, h: torch.Tensor, onehot: torch.Tensor, species: torch.Tensor, edge_index: torch.Tensor,
                vectors: torch.Tensor, inter: torch.Tensor) -> torch.Tensor:
        """h (n_atoms, irreps_in.dim) intralayer features, onehot (n_atoms, n_species), species (n_atoms,) int64,
        edge_index (2, n_edges) [centre, neighbour] with both directions listed, vectors r_ij (n_edges, 3) Å,
        inter (n_edges,) bool (True: i and j in different layers) → per-atom interlayer energies (n_atoms,) eV
        (each directed interlayer edge gives half its φ to its centre)."""
        out = h.new_zeros(h.shape[0])
        if not bool(inter.any()):
            return out
        tensors = self.sheet_tensors(h.shape[0], species, edge_index[:, ~inter], vectors[~inter])
        edge_index, vectors = edge_index[:, inter], vectors[inter]
        i, j = edge_index[0], edge_index[1]
        d = vectors.norm(dim=1)
        unit = vectors / d.unsqueeze(-1)
        envelope = polynomial_envelope(d, self.cutoff, self.envelope_p)
        h_i, h_j = h[i], h[j]
        x = torch.cat([self.radial_basis(d) * envelope.unsqueeze(-1),
                       self.transverse_features(tensors[i], vectors), self.transverse_features(tensors[j], -vectors),
                       *self.directional_invariants(h_i, h_j, unit),
                       h_i[:, self.scalars], h_j[:, self.scalars], onehot[i], onehot[j]], dim=1)
        pair = self.mlp(x).squeeze(-1) * envelope
        return out.index_add(0, i, 0.5 * pair)
