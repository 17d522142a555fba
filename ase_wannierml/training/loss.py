"""The joint training loss: energy per atom, forces, stress, Hamiltonian elements per category, band energies.

Every term is a mean of squared errors divided by that term's own scale² (``Scales``, from the training set), then
weighted (``LossConfig``):

    L = w_E ⟨(ΔE/N)²⟩/σ_E² + w_F ⟨ΔF²⟩/σ_F² + w_L ⟨ΔF̄_layer²⟩/σ_L² + w_S ⟨Δσ²⟩/σ_S²
        + w_H Σ_c w_c ⟨ΔH_c²⟩/σ_c² + w_b ⟨Δε²⟩/σ_b² + w_k ⟨ω_k |ΔH(k)|²⟩/σ_k²

⟨·⟩ averages over the labelled items of the batch (frames for E, force components, components of the mean force
per layer F̄_layer (the rigid-layer force per atom: what drives interlayer binding and sliding), stress components, known
Hamiltonian elements of category c, band energies within ±window of E_F at the sampled k-points). For the
Hamiltonian, σ = σ_c^(1−p) σ_{c,shell}^p mixes the RMS of the training targets of the element's category (σ_c)
and of its category *and distance shell* (σ_{c,shell}, bins of ``loss.ham_distance_bin`` Å); onsite diagonals are
measured from the mean onsite energy. So meV-scale far and interlayer hoppings are not drowned by eV-scale onsite
and nearest-neighbour terms, and inside one category a 40 meV fourth-neighbour hopping next to a 2.8 eV
first-neighbour one is not ignored (summed over its six images it moves bands near E_F by a fraction of an eV);
p = ``loss.ham_bin_power`` (0.5) keeps the eV-scale elements from being neglected in turn (p = 1 measured on our
graphene frames: nearest-neighbour errors of ~1 eV). At the start of training every term is O(1).

Terms are returned as sums with their item counts (``Term``) so that data-parallel training can divide by the
*global* count and match single-process training exactly (see ``trainer.py``).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ase_wannierml.model import keys as K

from .bands import band_energies
from .config import HAM_CATEGORIES, LossConfig

TARGET_KEYS = ("target_energy", "target_forces", "target_stress", "target_ham", "target_ham_mask",
               "has_energy", "has_forces", "has_stress", "has_ham")
TERM_NAMES = ("energy", "forces", "layer_forces", "stress") + tuple(f"ham_{c}" for c in HAM_CATEGORIES) + \
    ("bands", "hk", "onsite_centred")


@dataclass
class Scales:
    """Per-term error scales: energy eV/atom, forces eV/Å, stress eV/Å³, mean force per layer eV/Å, ham per category
    eV, bands eV.

    ham_bins[c][b]: eV, RMS target of category c's elements at pair distance in [b·w, (b+1)·w), w =
    ham_bin_width Å (bins beyond the list use ``ham[c]``); an element's scale is ham[c]^(1−p) · ham_bins[c][b]^p,
    p = ham_bin_power (0: one scale per category, 1: one per distance shell).
    """

    energy: float = 1.0
    forces: float = 1.0
    stress: float = 1.0
    layer_forces: float = 0.01     # eV/Å: error of the mean force per layer that counts as 1
    ham: list[float] = field(default_factory=lambda: [1.0] * len(HAM_CATEGORIES))
    bands: float = 0.05
    ham_bin_width: float = 0.5
    ham_bins: list[list[float]] = field(default_factory=lambda: [[] for _ in HAM_CATEGORIES])
    ham_bin_power: float = 0.5

    def pair_scales(self, category: torch.Tensor, distance: torch.Tensor) -> torch.Tensor:
        """Scale (eV) of each pair (n_pairs,) from its category and distance (Å)."""
        n_bins = max((len(b) for b in self.ham_bins), default=0)
        table = torch.tensor([[self.ham[c] ** (1 - self.ham_bin_power) * x ** self.ham_bin_power
                               for x in list(b) + [self.ham[c]] * (n_bins + 1 - len(b))]
                              for c, b in enumerate(self.ham_bins)], dtype=distance.dtype)   # (n_cat, n_bins + 1)
        index = torch.clamp((distance / self.ham_bin_width).long(), max=n_bins) if n_bins else \
            torch.zeros_like(category)
        return table[category, index]

    def of(self, term: str) -> float:
        """Scale of one term name in ``TERM_NAMES``."""
        if term.startswith("ham_"):
            return self.ham[HAM_CATEGORIES.index(term[4:])]
        if term == "onsite_centred":
            return self.ham[HAM_CATEGORIES.index("onsite")]
        return float(getattr(self, term))


@dataclass
class Term:
    """One loss term over a batch: value = Σ (error/scale)² (differentiable), count = items, sq = Σ error²
    in physical units (eV², (eV/Å)², ... for RMSE logs)."""

    value: torch.Tensor
    count: float
    sq: float


def _term(err: torch.Tensor, scale: torch.Tensor | float) -> Term:
    value = ((err / scale) ** 2).sum()
    return Term(value, float(err.numel()), float((err.detach() ** 2).sum()))


@dataclass
class FrameBands:
    """What the band term needs of one structure in a batch (pair slice in the batch's pair list)."""

    key: int                        # the example's index in the data set (seeds its k-point sample)
    pair_start: int
    pair_stop: int
    atom_start: int
    orbital_index: torch.Tensor     # (n_atoms, max_orb)
    kpts: torch.Tensor              # (nk, 3)
    bands: torch.Tensor             # (nk, norb) eV, in the targets' energy zero
    centre: float = 0.0             # eV, same zero: the frame's Fermi / neutrality level (band windows around it)


@dataclass
class Batch:
    """Collated examples: the model graph plus concatenated targets."""

    graph: dict[str, torch.Tensor]
    targets: dict[str, torch.Tensor]
    frames: list[FrameBands]
    size: int

    @property
    def needs(self) -> dict[str, bool]:
        """Which model outputs this batch has labels for."""
        t = self.targets
        return {"compute_forces": bool(t["has_forces"].any()), "compute_stress": bool(t["has_stress"].any()),
                "compute_hamiltonian": bool(t["has_ham"].any())}


def collate(examples: list[dict[str, torch.Tensor]], dtype: torch.dtype, keys: list[int] | None = None) -> Batch:
    """Batch examples (dataset.py layout) with the model's ``batch_graphs``; floats cast to ``dtype``.

    keys: data-set index of each example (default 0, 1, ...), used to seed per-frame band k-point samples so they
    do not depend on how a batch is split over processes.
    """
    from ase_wannierml.model.graph import batch_graphs

    def cast(t: torch.Tensor) -> torch.Tensor:
        return t.to(dtype) if t.is_floating_point() else t

    graph = batch_graphs([{k: cast(ex[k]) for k in K.GRAPH_KEYS if k in ex} for ex in examples])
    n_atoms = [len(ex[K.POSITIONS]) for ex in examples]
    n_pairs = [len(ex["target_ham"]) for ex in examples]
    t = {
        "pair_distance": pair_distances(graph),
        "target_energy": cast(torch.cat([ex["target_energy"] for ex in examples])),
        "num_atoms": torch.tensor(n_atoms),
        "target_forces": cast(torch.cat([ex["target_forces"] for ex in examples])),
        "target_stress": cast(torch.cat([ex["target_stress"] for ex in examples])),
        "target_ham": cast(torch.cat([ex["target_ham"] for ex in examples])),
        "target_ham_mask": torch.cat([ex["target_ham_mask"] for ex in examples]),
    }
    for key in ("has_energy", "has_forces", "has_stress", "has_ham"):
        t[key] = torch.stack([ex[key] for ex in examples])
    t["atom_has_forces"] = torch.repeat_interleave(t["has_forces"], torch.tensor(n_atoms))
    frames, p0, a0 = [], 0, 0
    keys = list(range(len(examples))) if keys is None else keys
    for ex, key, na, npair in zip(examples, keys, n_atoms, n_pairs):
        if bool(ex["has_ham"]) and len(ex["band_kpts"]):
            frames.append(FrameBands(key, p0, p0 + npair, a0, ex["orbital_index"], cast(ex["band_kpts"]),
                                     cast(ex["target_bands"]), float(ex.get("band_centre", 0.0))))
        p0, a0 = p0 + npair, a0 + na
    return Batch(graph, t, frames, len(examples))


def pair_distances(graph: dict[str, torch.Tensor]) -> torch.Tensor:
    """|r_j + S @ cell − r_i| (Å) of every Hamiltonian pair of a (batched) graph, (n_pairs,)."""
    i, j = graph[K.HAM_PAIR_INDEX]
    pos, cell = graph[K.POSITIONS].detach(), graph[K.CELL].detach()
    shift = graph[K.HAM_PAIR_SHIFT].to(pos.dtype)
    r = pos[j] - pos[i] + torch.einsum("pa,pab->pb", shift, cell[graph[K.BATCH][i]])
    return r.norm(dim=1)


def loss_terms(batch: Batch, out: dict[str, torch.Tensor], scales: Scales, cfg: LossConfig,
               band_seed: int | None = None) -> dict[str, Term]:
    """Per term name: its ``Term`` over this batch (see module docstring).

    band_seed: with it, each frame's ``cfg.band_kpoints`` k-points are drawn with seed ``band_seed + key``;
    without it, all k-points of the reference grid are used (validation).
    """
    t = batch.targets
    zero = t["target_energy"].new_zeros(())
    terms: dict[str, Term] = {}
    e_mask = t["has_energy"]
    if cfg.energy > 0 and bool(e_mask.any()) and K.ENERGY in out:
        err = (out[K.ENERGY] - t["target_energy"]) / t["num_atoms"].to(zero.dtype)
        terms["energy"] = _term(err[e_mask], scales.energy)
    f_mask = t["atom_has_forces"]
    if cfg.forces > 0 and bool(f_mask.any()) and K.FORCES in out:
        terms["forces"] = _term(out[K.FORCES][f_mask] - t["target_forces"][f_mask], scales.forces)
    if cfg.layer_forces > 0 and bool(f_mask.any()) and K.FORCES in out:
        err = layer_mean_force_errors(batch.graph, out[K.FORCES] - t["target_forces"], f_mask)
        if err.numel():
            terms["layer_forces"] = _term(err, scales.layer_forces)
    s_mask = t["has_stress"]
    if cfg.stress > 0 and bool(s_mask.any()) and K.STRESS in out:
        terms["stress"] = _term(out[K.STRESS][s_mask] - t["target_stress"][s_mask], scales.stress)
    if cfg.hamiltonian > 0 and bool(t["has_ham"].any()) and K.HAM_BLOCKS in out:
        mask = t["target_ham_mask"]
        category = batch.graph[K.HAM_PAIR_CATEGORY]
        sigma = scales.pair_scales(category, t["pair_distance"])[:, None, None].expand_as(mask)
        err = out[K.HAM_BLOCKS] - t["target_ham"]
        for c, name in enumerate(HAM_CATEGORIES):
            m = mask & (category == c)[:, None, None]
            if bool(m.any()) and cfg.hamiltonian_categories[c] > 0:
                terms[f"ham_{name}"] = _term(err[m], sigma[m])
    if getattr(cfg, "onsite_centred", 0.0) > 0 and bool(t["has_ham"].any()) and K.HAM_BLOCKS in out:
        err = onsite_centred_errors(batch.graph, out[K.HAM_BLOCKS] - t["target_ham"], t["target_ham_mask"])
        if err.numel():
            terms["onsite_centred"] = _term(err, scales.of("onsite_centred"))
    if getattr(cfg, "hk", 0.0) > 0 and batch.frames and K.HAM_BLOCKS in out:
        terms["hk"] = _hk_term(batch, out[K.HAM_BLOCKS], cfg)
    if cfg.bands > 0 and cfg.band_kpoints > 0 and batch.frames and K.HAM_BLOCKS in out:
        terms["bands"] = _band_term(batch, out[K.HAM_BLOCKS], scales, cfg, band_seed)
    return terms


def onsite_centred_errors(graph: dict[str, torch.Tensor], block_error: torch.Tensor,
                          mask: torch.Tensor) -> torch.Tensor:
    """Errors (eV) of the onsite diagonal elements minus their mean over the structure, (n_elements,): the error of
    the level pattern within a frame, blind to a frame-wide offset (``loss.onsite_centred``). ``block_error`` and
    ``mask`` are (n_pairs, max_orb, max_orb); structures with fewer than two known onsite levels give nothing."""
    category = graph[K.HAM_PAIR_CATEGORY]
    onsite = torch.nonzero(category == K.CATEGORY_ONSITE).squeeze(1)
    diag_mask = torch.diagonal(mask[onsite], dim1=1, dim2=2)                         # (n_onsite, max_orb)
    diag_err = torch.diagonal(block_error[onsite], dim1=1, dim2=2)
    structure = graph[K.BATCH][graph[K.HAM_PAIR_INDEX][0, onsite]][:, None].expand_as(diag_mask)[diag_mask]
    err = diag_err[diag_mask]
    if err.numel() == 0:
        return err
    n_struct = int(structure.max()) + 1
    count = torch.zeros(n_struct, dtype=err.dtype, device=err.device).index_add_(0, structure, torch.ones_like(err))
    total = torch.zeros(n_struct, dtype=err.dtype, device=err.device).index_add_(0, structure, err)
    keep = count[structure] >= 2
    return (err - (total / count.clamp(min=1))[structure])[keep]


def layer_mean_force_errors(graph: dict[str, torch.Tensor], force_error: torch.Tensor,
                            atom_mask: torch.Tensor) -> torch.Tensor:
    """Error of the mean force per layer (eV/Å), (n_layers_with_forces, 3), over the structures of a batch that
    have ≥ 2 layers and forces. Per-atom force errors that are small but share one sign over a layer (a binding
    curve that is too flat) add up here instead of averaging out: F̄_layer is −(1/N_layer) dE/d(rigid shift)."""
    layer, batch = graph[K.LAYER], graph[K.BATCH]
    n_layer_ids = int(layer.max()) + 1 if layer.numel() else 1
    group = batch * n_layer_ids + layer
    err, grp, bat = force_error[atom_mask], group[atom_mask], batch[atom_mask]
    if grp.numel() == 0:
        return force_error.new_zeros((0, 3))
    uniq, inv = torch.unique(grp, return_inverse=True)
    sums = force_error.new_zeros((len(uniq), 3)).index_add(0, inv, err)
    count = force_error.new_zeros(len(uniq)).index_add(0, inv, torch.ones_like(err[:, 0]))
    owner = torch.div(uniq, n_layer_ids, rounding_mode="floor")              # structure of each layer group
    layers_per_structure = torch.zeros(int(bat.max()) + 1, dtype=torch.long).index_add(
        0, owner, torch.ones_like(owner))
    keep = layers_per_structure[owner] >= 2
    return (sums / count[:, None])[keep]


def _band_term(batch: Batch, blocks: torch.Tensor, scales: Scales, cfg: LossConfig,
               band_seed: int | None) -> Term:
    """Band energies at ``cfg.band_kpoints`` random k-points of each frame's reference grid, within the window."""
    total, count, sq = blocks.new_zeros(()), 0.0, 0.0
    index, shift = batch.graph[K.HAM_PAIR_INDEX], batch.graph[K.HAM_PAIR_SHIFT]
    for fb in batch.frames:
        if band_seed is None:
            pick = torch.arange(len(fb.kpts))
        else:
            g = torch.Generator().manual_seed(band_seed + fb.key)
            pick = torch.randperm(len(fb.kpts), generator=g)[:cfg.band_kpoints]
        sl = slice(fb.pair_start, fb.pair_stop)
        pred = band_energies(blocks[sl], index[:, sl] - fb.atom_start, shift[sl], fb.orbital_index,
                             fb.bands.shape[1], fb.kpts[pick])
        ref = fb.bands[pick]
        window = (ref - fb.centre).abs() <= cfg.band_window
        part = _term((pred - ref)[window], scales.bands)
        total, count, sq = total + part.value, count + part.count, sq + part.sq
    return Term(total, count, sq)


def _hk_term(batch: Batch, blocks: torch.Tensor, cfg: LossConfig) -> Term:
    """Error of the Bloch Hamiltonian H(k) (known pair-list elements) at every k-point of each frame's grid."""
    from .bands import hamiltonian_k

    total, count, sq = blocks.new_zeros(()), 0.0, 0.0
    err = (blocks - batch.targets["target_ham"]) * batch.targets["target_ham_mask"].to(blocks.dtype)
    index, shift = batch.graph[K.HAM_PAIR_INDEX], batch.graph[K.HAM_PAIR_SHIFT]
    for fb in batch.frames:
        sl = slice(fb.pair_start, fb.pair_stop)
        dh = hamiltonian_k(err[sl], index[:, sl] - fb.atom_start, shift[sl], fb.orbital_index, fb.bands.shape[1],
                           fb.kpts)                                               # (nk, norb, norb) complex
        near = ((fb.bands - fb.centre).abs() <= cfg.band_window).any(dim=1)
        w = torch.where(near, 1.0, cfg.hk_window_weight).to(blocks.dtype)
        d2 = (dh.real ** 2 + dh.imag ** 2).sum(dim=(1, 2))                          # (nk,)
        total = total + (w * d2).sum() / cfg.hk_scale ** 2
        count += float(len(fb.kpts) * fb.bands.shape[1] ** 2)
        sq += float((w * d2).sum().detach())
    return Term(total, count, sq)


def combine(terms: dict[str, Term], counts: dict[str, float], cfg: LossConfig,
            world_size: int = 1) -> torch.Tensor:
    """Weighted loss from per-term sums; ``counts`` are the *global* item counts (summed over processes).

    Multiplying by ``world_size`` undoes DistributedDataParallel's gradient averaging, so the gradient equals that
    of one process holding the whole batch.
    """
    total = None
    for name, term in terms.items():
        n = counts.get(name, 0.0)
        if n <= 0:
            continue
        part = term_weight(name, cfg) * term.value / n * world_size
        total = part if total is None else total + part
    if total is None:
        some = next(iter(terms.values()), None)
        return torch.zeros((), dtype=torch.float64) if some is None else some.value * 0.0
    return total


def term_weight(name: str, cfg: LossConfig) -> float:
    """The weight of one term name."""
    if name.startswith("ham_"):
        return cfg.hamiltonian * cfg.hamiltonian_categories[HAM_CATEGORIES.index(name[4:])]
    return float(getattr(cfg, name))
