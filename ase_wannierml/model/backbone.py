"""E(3)-equivariant message-passing backbone (NequIP-style interactions), shared by every head.

Per interaction: equivariant linear, tensor product of neighbour features with the spherical harmonics of the
edge direction (``uvu`` paths, per-edge weights from a radial MLP of a Bessel basis × smooth envelope), sum over
neighbours / sqrt(avg_num_neighbors), linear, gate non-linearity, plus a species-dependent self-connection.

Example::

    >>> from ase_wannierml.model.config import ModelConfig
    >>> bb = Backbone(ModelConfig(species=("C",), orbitals={"C": ("pz",)}, hidden_irreps="8x0e+4x1o"))
    >>> str(bb.irreps_out)
    '8x0e+4x1o'
"""
from __future__ import annotations

import math

import torch
from e3nn import o3
from e3nn.nn import FullyConnectedNet, Gate
from torch import nn
from torch.utils.checkpoint import checkpoint

from ..memory import available_memory_bytes
from .config import ModelConfig
from .radial import BesselBasis, polynomial_envelope


#: In eval mode with forces, message chunks are checkpointed (recomputed in the backward pass) only when storing
#: the message activations would take more than this fraction of the available memory
#: (``memory.available_memory_bytes``). Checkpointing costs ~30 % of a force call (bilayer graphene, 400–3,600 atoms:
#: 0.53 → 0.40 s and 3.85 → 2.98 s without it) and saves ~0.27 MB per atom (3,600 atoms: 2.04 → 1.06 GB peak).
CHECKPOINT_MEMORY_FRACTION = 0.25
#: Edges per message chunk. Small chunks keep the tensor-product working set in cache: bilayer graphene E+F
#: (1 thread) 400 / 1,600 / 3,600 atoms took 0.27 / 0.94 / 1.96 s with 16,384 and 0.18 / 0.70 / 1.65 s with 2,048
#: (1,024: no better; MoS2 600 atoms 0.76 → 0.58 s).
EDGE_CHUNK = 2048


def uvu_instructions(irreps_in: o3.Irreps, irreps_sh: o3.Irreps, targets: set[o3.Irrep]
                     ) -> tuple[o3.Irreps, list[tuple[int, int, int, str, bool]]]:
    """Output irreps and ``uvu`` instructions of ``irreps_in ⊗ irreps_sh`` restricted to the ``targets`` irreps."""
    out, instr = [], []
    for i1, (mul, ir1) in enumerate(irreps_in):
        for i2, (_, ir2) in enumerate(irreps_sh):
            for ir in ir1 * ir2:
                if ir in targets:
                    instr.append((i1, i2, len(out), "uvu", True))
                    out.append((mul, ir))
    return o3.Irreps(out), instr


def make_gate(irreps_out: o3.Irreps) -> Gate:
    """Gate: silu on 0e, tanh on 0o scalars, sigmoid gates (0e) on every l > 0 irrep of ``irreps_out``."""
    scalars = o3.Irreps([(m, ir) for m, ir in irreps_out if ir.l == 0])
    gated = o3.Irreps([(m, ir) for m, ir in irreps_out if ir.l > 0])
    acts = [torch.nn.functional.silu if ir.p == 1 else torch.tanh for _, ir in scalars]
    gates = o3.Irreps(f"{gated.num_irreps}x0e") if gated.num_irreps else o3.Irreps("")
    return Gate(scalars, acts, gates, [torch.sigmoid] if gated.num_irreps else [], gated)


class Interaction(nn.Module):
    """One interaction: ``irreps_in`` node features → ``irreps_out`` (= scalars first, then gated irreps); with
    ``residual`` the input is added to the output (needs ``irreps_in == irreps_out``)."""

    def __init__(self, irreps_in: o3.Irreps, irreps_out: o3.Irreps, irreps_sh: o3.Irreps, num_species: int,
                 num_radial: int, radial_hidden: int, avg_num_neighbors: float, residual: bool = False) -> None:
        super().__init__()
        self.irreps_in = o3.Irreps(irreps_in)
        self.gate = make_gate(o3.Irreps(irreps_out))
        self.irreps_out = self.gate.irreps_out
        if self.irreps_out.simplify() != o3.Irreps(irreps_out).simplify():
            raise ValueError(f"hidden irreps {irreps_out} must list scalars (0e/0o) first, then l > 0 irreps")
        self.residual = bool(residual)
        if self.residual and self.irreps_in != self.irreps_out:
            raise ValueError(f"a residual interaction needs irreps_in == irreps_out, got {self.irreps_in} -> "
                             f"{self.irreps_out}")
        mid, instr = uvu_instructions(self.irreps_in, irreps_sh, {ir for _, ir in self.gate.irreps_in})
        unreachable = sorted({str(ir) for _, ir in self.gate.irreps_in} - {str(ir) for _, ir in mid})
        if unreachable and self.irreps_in.lmax > 0:  # after the scalar embedding, later layers fill them
            raise ValueError(f"irreps {unreachable} of {irreps_out} cannot be reached from irreps_in={self.irreps_in}"
                             f" ⊗ edge harmonics {irreps_sh}")
        self.linear_up = o3.Linear(self.irreps_in, self.irreps_in)
        self.tp = o3.TensorProduct(self.irreps_in, irreps_sh, mid, instr, shared_weights=False,
                                   internal_weights=False)
        self.radial = FullyConnectedNet([num_radial, radial_hidden, self.tp.weight_numel], torch.nn.functional.silu)
        self.linear_down = o3.Linear(self.tp.irreps_out, self.gate.irreps_in)
        self.self_connection = o3.FullyConnectedTensorProduct(self.irreps_in, f"{num_species}x0e", self.irreps_out)
        self.norm = 1.0 / math.sqrt(avg_num_neighbors)

    def forward(self, h: torch.Tensor, onehot: torch.Tensor, edge_index: torch.Tensor, edge_sh: torch.Tensor,
                edge_radial: torch.Tensor, edge_chunk: int = EDGE_CHUNK, checkpointed: bool = False) -> torch.Tensor:
        """h (n_atoms, irreps_in.dim), onehot (n_atoms, n_species), edge_index (2, n_edges) [centre, neighbour],
        edge_sh (n_edges, sh dim), edge_radial (n_edges, num_radial) → (n_atoms, irreps_out.dim).

        Edges are processed in chunks of ``edge_chunk``; with ``checkpointed`` (decided by :class:`Backbone` from the
        memory the activations would need) each chunk is recomputed in the backward pass, so memory grows with
        atoms, not with edges × features.
        """
        x = self.linear_up(h)
        n_edges = edge_index.shape[1]
        checkpointed = checkpointed and torch.is_grad_enabled() and n_edges > edge_chunk
        aggregated = x.new_zeros((h.shape[0], self.tp.irreps_out.dim))
        for start in range(0, n_edges, edge_chunk):
            receiver = edge_index[0, start:start + edge_chunk]
            first, last = int(receiver.min()), int(receiver.max())  # a narrow range: edges sorted by centre
            args = (x, receiver - first, edge_index[1, start:start + edge_chunk], edge_sh[start:start + edge_chunk],
                    edge_radial[start:start + edge_chunk], last - first + 1)
            part = checkpoint(self._aggregate, *args, use_reentrant=False) if checkpointed else self._aggregate(*args)
            aggregated.index_add_(0, torch.arange(first, last + 1, device=h.device), part)
        out = self.gate(self.linear_down(aggregated * self.norm)) + self.self_connection(h, onehot)
        return out + h if self.residual else out

    def start_as_identity(self) -> None:
        """Zero the message output and the self-connection of a residual interaction: it then returns its input
        exactly (the gate maps 0 to 0), and training moves it away from the identity."""
        if not self.residual:
            raise ValueError("only a residual interaction can start as the identity")
        with torch.no_grad():
            self.linear_down.weight.zero_()
            if self.linear_down.bias.numel():
                self.linear_down.bias.zero_()
            self.self_connection.weight.zero_()

    def activation_floats_per_edge(self) -> int:
        """Rough number of floats kept per edge for the backward pass (messages, weights, gathered features, Y);
        measured ~75 % of it for the graphene model."""
        tp = self.tp
        return 2 * tp.irreps_out.dim + tp.irreps_in1.dim + tp.weight_numel + tp.irreps_in2.dim

    def _aggregate(self, x: torch.Tensor, receiver: torch.Tensor, neighbour: torch.Tensor, sh: torch.Tensor,
                   radial: torch.Tensor, count: int) -> torch.Tensor:
        """Sum of the messages of n edges onto ``count`` receivers (n,) → (count, tp.irreps_out.dim); a message
        is the TP of the neighbour's features with Y, weighted by the radial MLP."""
        messages = self.tp(x[neighbour], sh, self.radial(radial))
        return messages.new_zeros((count, messages.shape[1])).index_add_(0, receiver, messages)


class Backbone(nn.Module):
    """Species embedding + ``num_interactions`` interactions; ``irreps_out`` = ``config.hidden_irreps``."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        hidden = o3.Irreps(config.hidden_irreps)
        self.num_species = len(config.species)
        self.cutoff = float(config.cutoff)
        self.envelope_p = int(config.envelope_p)
        n_scalars = sum(m for m, ir in hidden if ir == o3.Irrep("0e"))
        irreps_embed = o3.Irreps(f"{n_scalars}x0e")
        self.embedding = o3.Linear(f"{self.num_species}x0e", irreps_embed)
        self.irreps_sh = o3.Irreps.spherical_harmonics(config.sh_lmax, p=-1)
        self.spherical_harmonics = o3.SphericalHarmonics(self.irreps_sh, normalize=True, normalization="component")
        self.radial_basis = BesselBasis(config.cutoff, config.num_radial)
        self.interlayer_radial = bool(config.interlayer_radial)
        radial_in = config.num_radial * (2 if self.interlayer_radial else 1)
        layers, irreps_in = [], irreps_embed
        first_residual = config.num_interactions - config.residual_interactions
        for n in range(config.num_interactions):
            layer = Interaction(irreps_in, hidden, self.irreps_sh, self.num_species, radial_in,
                                config.radial_hidden, config.avg_num_neighbors, residual=n >= first_residual)
            layers.append(layer)
            irreps_in = layer.irreps_out
        self.layers = nn.ModuleList(layers)
        self.irreps_out = irreps_in

    def edge_radial(self, edge_vectors: torch.Tensor, edge_inter: torch.Tensor | None = None) -> torch.Tensor:
        """Radial inputs of the interactions: Bessel basis × envelope (n_edges, num_radial); with
        ``interlayer_radial``, [R·(1 − inter), R·inter] (n_edges, 2 num_radial) from ``edge_inter`` (n_edges,) bool."""
        d = edge_vectors.norm(dim=1)
        radial = self.radial_basis(d) * polynomial_envelope(d, self.cutoff, self.envelope_p).unsqueeze(-1)
        if not self.interlayer_radial:
            return radial
        if edge_inter is None or edge_inter.shape != d.shape:
            raise ValueError("interlayer_radial needs edge_inter, one bool per edge (the graph's layer labels)")
        inter = edge_inter.to(radial.dtype).unsqueeze(-1)
        return torch.cat([radial * (1 - inter), radial * inter], dim=1)

    def inherit_radial(self, old: "Backbone") -> None:
        """Take over a trained backbone without ``interlayer_radial``: the same function (each radial MLP's first
        layer becomes √2·[W, W], e3nn's 1/√fan-in normalisation included), intra- and interlayer weights then
        learn apart. Every other weight must be loaded separately (same names)."""
        if old.interlayer_radial or not self.interlayer_radial or len(old.layers) != len(self.layers):
            raise ValueError("inherit_radial: from a backbone without interlayer_radial into one with it, "
                             "same number of interactions")
        with torch.no_grad():
            for new_layer, old_layer in zip(self.layers, old.layers):
                w_old = old_layer.radial.layer0.weight
                new_layer.radial.layer0.weight.copy_(torch.cat([w_old, w_old], dim=0) * math.sqrt(2.0))
                for name, p in old_layer.radial.state_dict().items():
                    if name != "layer0.weight":
                        new_layer.radial.state_dict()[name].copy_(p)

    def grow(self, old: "Backbone") -> tuple[int, ...]:
        """Take over a trained backbone with fewer interactions: the extra (last, residual) interactions start as
        the identity, so the features are unchanged. Returns the indices of the new interactions; their weights are
        set here, every other weight must be loaded separately (same names)."""
        n_old, n_new = len(old.layers), len(self.layers)
        new = tuple(range(n_old, n_new))
        if n_new <= n_old or not all(self.layers[n].residual for n in new) \
                or any(a.residual != b.residual for a, b in zip(old.layers, self.layers)):
            raise ValueError(f"Backbone.grow: {n_old} -> {n_new} interactions; only residual interactions can be "
                             "appended (raise num_interactions and residual_interactions by the same number)")
        for n in new:
            self.layers[n].start_as_identity()
        return new

    def forward(self, onehot: torch.Tensor, edge_index: torch.Tensor, edge_vectors: torch.Tensor,
                edge_chunk: int = EDGE_CHUNK, edge_inter: torch.Tensor | None = None) -> torch.Tensor:
        """onehot (n_atoms, n_species), edge_index (2, n_edges), edge_vectors r_ij (n_edges, 3) Å
        → node features (n_atoms, irreps_out.dim); ``edge_chunk``: see :meth:`Interaction.forward`;
        ``edge_inter`` (n_edges,) bool, True for interlayer edges (needed with ``interlayer_radial``)."""
        radial = self.edge_radial(edge_vectors, edge_inter)
        sh = self.spherical_harmonics(edge_vectors)
        h = self.embedding(onehot)
        checkpointed = self.needs_checkpointing(edge_index.shape[1], edge_vectors.element_size())
        for layer in self.layers:
            h = layer(h, onehot, edge_index, sh, radial, edge_chunk, checkpointed)
        return h

    def needs_checkpointing(self, n_edges: int, itemsize: int) -> bool:
        """True in eval mode with autograd on (forces) when keeping the message activations of ``n_edges`` edges
        would exceed ``CHECKPOINT_MEMORY_FRACTION`` of the available memory."""
        if self.training or not torch.is_grad_enabled():
            return False
        need = n_edges * itemsize * sum(layer.activation_floats_per_edge() for layer in self.layers)
        return need > CHECKPOINT_MEMORY_FRACTION * available_memory_bytes()
