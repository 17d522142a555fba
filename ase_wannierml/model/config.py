"""``ModelConfig``: every hyper-parameter of a ``WannierMLModel`` (saved verbatim in model files).

Units: Å for lengths/cut-offs, eV for energies. Irreps strings use e3nn notation (``"32x0e+16x1o+8x2e"``).

Example::

    >>> cfg = ModelConfig(species=("Mo", "S"), orbitals={"Mo": ("d",), "S": ("p",)}, cutoff=5.0)
    >>> cfg.num_orbitals
    (5, 3)
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Mapping

from e3nn import o3

from ase_wannierml.orbitals import element_orbitals


@dataclass(frozen=True)
class ModelConfig:
    """Hyper-parameters of the model (immutable; JSON-able through :meth:`to_dict`).

    Species and orbitals:
        species: element symbols; the order defines the species index used in graphs.
        orbitals: {element: shells}, shells from ``"s"``, ``"p"``, ``"d"`` or single Wannier90 labels (``"pz"``);
            the orbitals of an atom are its shells in this order (``ase_wannierml.orbitals``).
    Backbone (message passing):
        cutoff: Å, message-passing cut-off (smooth polynomial envelope).
        num_interactions: interaction layers; hidden_irreps: node features; sh_lmax: edge spherical harmonics.
        residual_interactions: the last this-many interactions add their input to their output (h + f(h)); 0 (the
            default, and every model before session 18): none. The first interaction cannot be residual (it maps the
            scalar embedding to ``hidden_irreps``). A warm start may append residual interactions to a trained model:
            they start as the identity (``Backbone.grow``), so the saved function is kept.
        num_radial: Bessel functions; envelope_p: envelope exponent; radial_hidden: width of the radial MLP.
        avg_num_neighbors: messages are summed and divided by its square root.
        interlayer_radial: give the radial MLP of every interaction separate inputs for interlayer edges (the
            layer labels of the graph): its input is [R(d)·(1 − inter), R(d)·inter], so intra- and interlayer
            neighbours get their own radial weights (session 14: with shared weights, graphene's out-of-plane
            stiffness softens when the other layer comes closer; docs/accuracy.md). Off by default.
        interlayer_pair_energy: the energy path sees each layer alone (backbone on intralayer edges only) and the
            layers interact through a learned registry-aware pair term (``interlayer_energy.py``); the Hamiltonian
            heads keep the features of the full graph. Off by default (one backbone pass on all edges for both).
    Energy:
        e0s: eV, reference energy per element (missing elements: 0); energy_scale / energy_shift: eV,
        per-atom energy = e0 + energy_scale * readout + energy_shift.
        energy_hidden: width of the readout MLP (0e features → energy); 16 in every model before session 14.
    Hamiltonian (cut-offs in Å; see ``heads.py`` for the smooth switching):
        ham_cutoff_near: intralayer near pairs d < near; ham_cutoff_far: intralayer far pairs (near <= d < far;
            far <= near disables the far head); ham_cutoff_inter: interlayer pairs.
        ham_switch_width: Å, the near head fades out and the far head in over [near - width, near].
        ham_irreps: per-atom features the pair heads start from; ham_num_radial: Bessel functions per head.
        pair_sh_lmax: lowest l_max of the bond harmonics Y(r̂) in the pair heads; 0 (the default, and the
            setting of every model before it existed): max(2, highest irrep of the block). A p–p block of atoms
            in trigonal sites (S in MoS2) needs 3: its antisymmetric (1e) part and its M = ±1 quadrupole part
            along an in-plane bond come only from the site's l = 3 tensor ⊗ Y^3 (docs/accuracy.md, session 12).
        pair_node_product: add x ⊗ x of each atom's features to its pair features (``pair_heads.NodeProduct``):
            the pseudo-tensor channels (1e, 2o, 3e, 4e) of ``ham_irreps`` are otherwise zero when the backbone
            carries natural-parity irreps only; e.g. the symmetric pz–p⊥ part of an in-plane S–S hopping needs them.
        onsite_hidden: width of an MLP giving each shell of an atom a level shift from the invariants of its onsite
            features (``heads.OnsiteHead``); 0 (the default, and every model before session 16): none. Session 16:
            the linear + quadratic onsite read-out fitted graphene's within-frame onsite variation of thermal
            snapshots no better than a linear regression on 12 geometric descriptors (docs/accuracy.md).
        ham_scale: eV, scale of every predicted block; onsite_reference: eV, per element and orbital, added to
            onsite diagonals (e.g. mean onsite energies of the training data).
    Graph building:
        min_distance: Å, closer atoms are rejected (ValueError); layer_bond_factor: atoms closer than
            factor * (covalent radius sum) are bonded (layer detection).
    Electronic metadata:
        wannier_electrons: electrons per atom in the Wannier manifold, per element (for the Fermi level);
        fermi_level: eV, reference (Fermi) level of the predicted Hamiltonian: 0 for data referenced to E_F or the
            neutrality level; for vacuum-referenced data the mean neutrality level of the training frames.
    Long range:
        dispersion: None, or an analytic Grimme term added to the learned energy (``ase_wannierml.dispersion``,
            e.g. {"method": "d2"} or {"method": "d3", "damping": "bj"}); the model then learns DFT − dispersion.
    """

    species: tuple[str, ...]
    orbitals: Mapping[str, tuple[str, ...]]
    cutoff: float = 5.0
    num_interactions: int = 2
    residual_interactions: int = 0
    hidden_irreps: str = "32x0e+16x1o+8x2e"
    sh_lmax: int = 2
    num_radial: int = 8
    envelope_p: int = 6
    radial_hidden: int = 32
    avg_num_neighbors: float = 30.0
    e0s: Mapping[str, float] = field(default_factory=dict)
    energy_scale: float = 1.0
    energy_shift: float = 0.0
    energy_hidden: int = 16
    ham_cutoff_near: float = 6.0
    ham_cutoff_far: float = 12.0
    ham_cutoff_inter: float = 12.0
    ham_switch_width: float = 1.0
    ham_irreps: str = "16x0e+8x1o+8x1e+8x2e+8x2o"
    ham_num_radial: int = 10
    ham_scale: float = 1.0
    pair_sh_lmax: int = 0
    pair_node_product: bool = False
    interlayer_radial: bool = False
    interlayer_pair_energy: bool = False
    onsite_hidden: int = 0
    onsite_reference: Mapping[str, tuple[float, ...]] = field(default_factory=dict)
    min_distance: float = 0.5
    layer_bond_factor: float = 1.2
    wannier_electrons: Mapping[str, float] = field(default_factory=dict)
    dispersion: Mapping[str, Any] | None = None
    fermi_level: float | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "species", tuple(self.species))
        object.__setattr__(self, "orbitals", {k: _as_shells(v) for k, v in self.orbitals.items()})
        object.__setattr__(self, "onsite_reference", {k: tuple(float(x) for x in v)
                                                      for k, v in self.onsite_reference.items()})
        object.__setattr__(self, "e0s", {k: float(v) for k, v in self.e0s.items()})
        object.__setattr__(self, "wannier_electrons", {k: float(v) for k, v in self.wannier_electrons.items()})
        if self.dispersion:
            from ase_wannierml.dispersion import DispersionSpec

            object.__setattr__(self, "dispersion", DispersionSpec.from_dict(self.dispersion).to_dict())
        else:
            object.__setattr__(self, "dispersion", None)
        self._validate()

    def _validate(self) -> None:
        if not self.species or len(set(self.species)) != len(self.species):
            raise ValueError(f"species must be non-empty and unique, got {self.species}")
        missing = [s for s in self.species if s not in self.orbitals]
        extra = [s for s in self.orbitals if s not in self.species]
        if missing or extra:
            raise ValueError(f"orbitals must be given for exactly the species {list(self.species)}: "
                             f"missing {missing}, unknown {extra}")
        for element, shells in self.orbitals.items():
            element_orbitals(shells)  # raises on unknown / repeated shells
        for element, ref in self.onsite_reference.items():
            if element not in self.species or len(ref) != len(element_orbitals(self.orbitals[element])):
                raise ValueError(f"onsite_reference[{element!r}] must list one energy (eV) per orbital of a "
                                 f"species in {list(self.species)}")
        for name in ("e0s", "wannier_electrons"):
            unknown = sorted(set(getattr(self, name)) - set(self.species))
            if unknown:
                raise ValueError(f"{name} names elements {unknown} that are not species {list(self.species)}")
        for name in ("hidden_irreps", "ham_irreps"):
            irreps = o3.Irreps(getattr(self, name))
            if not any(ir == o3.Irrep("0e") for _, ir in irreps):
                raise ValueError(f"{name}={getattr(self, name)!r} must contain scalars (0e)")
        positive = ("cutoff", "ham_cutoff_near", "ham_cutoff_inter", "min_distance", "avg_num_neighbors")
        for name in positive:
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        if not 0 < self.ham_switch_width <= self.ham_cutoff_near:
            raise ValueError(f"ham_switch_width must be in (0, ham_cutoff_near], got {self.ham_switch_width}")
        if isinstance(self.pair_sh_lmax, bool) or not isinstance(self.pair_sh_lmax, int) \
                or not 0 <= self.pair_sh_lmax <= 6:
            raise ValueError(f"pair_sh_lmax must be an integer 0 (automatic) … 6, got {self.pair_sh_lmax!r}")
        if not isinstance(self.pair_node_product, bool):
            raise ValueError(f"pair_node_product must be true or false, got {self.pair_node_product!r}")
        if not isinstance(self.interlayer_pair_energy, bool):
            raise ValueError(f"interlayer_pair_energy must be true or false, got {self.interlayer_pair_energy!r}")
        if not isinstance(self.interlayer_radial, bool):
            raise ValueError(f"interlayer_radial must be true or false, got {self.interlayer_radial!r}")
        if isinstance(self.energy_hidden, bool) or not isinstance(self.energy_hidden, int) \
                or not 1 <= self.energy_hidden <= 1024:
            raise ValueError(f"energy_hidden must be an integer 1 … 1024, got {self.energy_hidden!r}")
        if isinstance(self.onsite_hidden, bool) or not isinstance(self.onsite_hidden, int) \
                or not 0 <= self.onsite_hidden <= 1024:
            raise ValueError(f"onsite_hidden must be an integer 0 (none) … 1024, got {self.onsite_hidden!r}")
        if isinstance(self.num_interactions, bool) or not isinstance(self.num_interactions, int) \
                or self.num_interactions < 1:
            raise ValueError(f"num_interactions must be an integer >= 1, got {self.num_interactions!r}")
        if isinstance(self.residual_interactions, bool) or not isinstance(self.residual_interactions, int) \
                or not 0 <= self.residual_interactions < self.num_interactions:
            raise ValueError(f"residual_interactions must be an integer 0 … num_interactions - 1 "
                             f"({self.num_interactions - 1}; the first interaction cannot be residual), "
                             f"got {self.residual_interactions!r}")

    # ------------------------------------------------------------------ derived
    @property
    def orbital_list(self) -> tuple[tuple[tuple[int, str], ...], ...]:
        """Per species (in ``species`` order), its orbitals as (l, Wannier90 label)."""
        return tuple(tuple(element_orbitals(self.orbitals[s])) for s in self.species)

    @property
    def num_orbitals(self) -> tuple[int, ...]:
        """Orbitals per species."""
        return tuple(len(o) for o in self.orbital_list)

    @property
    def max_orbitals(self) -> int:
        """Largest orbital count of any species (the padded block size)."""
        return max(self.num_orbitals)

    @property
    def ham_cutoff_max(self) -> float:
        """Å, the longest Hamiltonian pair distance."""
        return max(self.ham_cutoff_near, self.ham_cutoff_far, self.ham_cutoff_inter)

    # ------------------------------------------------------------------ serialisation
    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict (lists instead of tuples)."""
        out = dataclasses.asdict(self)
        out["species"] = list(self.species)
        out["orbitals"] = {k: list(v) for k, v in self.orbitals.items()}
        out["onsite_reference"] = {k: list(v) for k, v in self.onsite_reference.items()}
        return out

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> "ModelConfig":
        """Inverse of :meth:`to_dict`; unknown keys raise ``ValueError`` naming them."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(raw) - names)
        if unknown:
            raise ValueError(f"unknown ModelConfig fields {unknown}; known: {sorted(names)}")
        return cls(**raw)


def _as_shells(shells: Any) -> tuple[str, ...]:
    """``"p"`` or ``["s", "p"]`` → ``("s", "p")``."""
    return (shells,) if isinstance(shells, str) else tuple(shells)
