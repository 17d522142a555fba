"""Material definitions for the DFT data workflow: monolayer geometry, pseudopotentials, DFT and Wannier settings.

A bilayer is two copies of a hexagonal monolayer (120° cell: a1 = a (1, 0), a2 = a (-1/2, √3/2)) stacked
along z; everything the sampler and the input writers need is in :class:`MaterialSpec`.
"""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

# read-only reference material (seed pseudopotentials); override with $WANNIERML_SHARED
SHARED = Path(os.environ.get("WANNIERML_SHARED", Path(__file__).resolve().parents[3] / "shared"))
DEBIAN_PSEUDO_DIR = "/usr/share/espresso/pseudo"
MOS2_SEED_DIR = str(SHARED / "dft" / "mos2_seed_inputs")


@dataclass(frozen=True)
class Site:
    """One atom of the monolayer: species, fractional in-plane coordinates, height z (Å) from the layer centre."""

    symbol: str
    f1: float
    f2: float
    z: float


@dataclass(frozen=True)
class DFTSettings:
    """Quantum ESPRESSO + Wannier90 settings (energies in Ry where QE wants Ry, eV for Wannier windows)."""

    pseudo_dir: str
    pseudopotentials: dict[str, str]
    masses: dict[str, float]
    ecutwfc: float                    # Ry
    ecutrho: float | None             # Ry (None: QE default 4 * ecutwfc)
    smearing: str
    degauss: float                    # Ry
    vdw: dict[str, object]            # extra &system keys for the dispersion correction
    conv_thr_per_atom: float          # Ry per atom (SCF)
    mixing_beta: float
    kmesh_scf_1x1: int                # SCF Monkhorst-Pack n x n x 1 for the primitive bilayer cell
    kmesh_nscf_1x1: int               # NSCF full uniform grid (nosym, noinv) for the primitive cell
    projections: dict[str, tuple[str, ...]]   # Wannier90 projections per species, GLOBAL frame
    n_orbitals: dict[str, int]        # Wannier functions per atom of each species
    excluded_bands_per_atom: dict[str, int]   # semicore bands below the Wannier manifold, per atom
    extra_bands_per_atom: dict[str, float]    # NSCF bands above excluded + Wannier bands, per atom
    frozen_window: tuple[float, float] | None  # eV relative to E_F; None: no disentanglement
    proj_threshold: float             # projectability below which states are kept out of the frozen window
    dis_num_iter: int
    check_window: float               # eV: band-error check within E_F ± this
    check_bands_per_atom: float       # bands in the QE 'bands' check run, per atom (plus excluded bands)
    vacuum_c: float                   # Å, cell height


@dataclass(frozen=True)
class MaterialSpec:
    """A bilayer material: monolayer, reference lattice constant and sampling ranges (Å)."""

    name: str
    a: float                                   # Å, reference in-plane lattice constant
    sites: tuple[Site, ...]
    gap_range_core: tuple[float, float]        # Å, vertical gap between facing atomic planes, typical
    gap_range_wide: tuple[float, float]        # Å, compressed ... separated
    gap_reference: float                       # Å, equilibrium-like gap of the reference stacking
    top_variants: tuple[str, ...] = ("R",)     # "R": top layer parallel, "H": rotated 180° (2H-like)
    # unperturbed reference stackings run first: (name, top variant, shift (fractional), gap - gap_reference Å)
    references: tuple[tuple[str, str, tuple[float, float], float], ...] = ()
    dft: DFTSettings = field(default=None)     # type: ignore[assignment]
    n_layers: int = 2                          # layers found by z when a given structure has no 'layer' array

    def thickness(self) -> float:
        """Vertical extent of one monolayer (Å)."""
        zs = [s.z for s in self.sites]
        return max(zs) - min(zs)

    def to_dict(self) -> dict:
        return asdict(self)


# The shipped materials are data files (material_data/*.yaml, schema in material_files.py); a user's own material
# is a file of the same form passed by path (``--material my.yaml``).
def _shipped(name: str) -> MaterialSpec:
    from .material_files import DATA_DIR, load_material

    return load_material(DATA_DIR / f"{name}.yaml")


GRAPHENE_BILAYER = _shipped("graphene-bilayer")
GRAPHENE_DFT = GRAPHENE_BILAYER.dft
MOS2_BILAYER = _shipped("mos2-bilayer")
MOS2_DFT = MOS2_BILAYER.dft

MATERIALS: dict[str, MaterialSpec] = {m.name: m for m in (GRAPHENE_BILAYER, MOS2_BILAYER)}


def get_material(name: str) -> MaterialSpec:
    """Look up a material by name (``graphene-bilayer``, ``mos2-bilayer``) or read a material file (.yaml/.json)."""
    if name in MATERIALS:
        return MATERIALS[name]
    if str(name).endswith((".yaml", ".yml", ".json")):
        from .material_files import load_material

        return load_material(name)
    raise ValueError(f"unknown material {name!r}; known: {sorted(MATERIALS)} (or give a .yaml/.json file)")
