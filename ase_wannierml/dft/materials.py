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

    def thickness(self) -> float:
        """Vertical extent of one monolayer (Å)."""
        zs = [s.z for s in self.sites]
        return max(zs) - min(zs)

    def to_dict(self) -> dict:
        return asdict(self)


GRAPHENE_DFT = DFTSettings(
    pseudo_dir=DEBIAN_PSEUDO_DIR,
    pseudopotentials={"C": "C.pbe-rrkjus.UPF"},
    masses={"C": 12.011},
    ecutwfc=30.0,
    ecutrho=240.0,
    smearing="mv",
    degauss=0.02,
    vdw={"vdw_corr": "dft-d3", "dftd3_version": 4},
    conv_thr_per_atom=1.0e-9,
    mixing_beta=0.5,
    kmesh_scf_1x1=15,
    kmesh_nscf_1x1=8,
    projections={"C": ("pz",)},
    n_orbitals={"C": 1},
    excluded_bands_per_atom={"C": 0},
    extra_bands_per_atom={"C": 5.0},          # 6 bands per atom in total (pitfall 1)
    frozen_window=(-2.5, 2.5),
    proj_threshold=0.5,
    dis_num_iter=400,
    check_window=2.0,
    check_bands_per_atom=3.0,
    vacuum_c=20.0,
)

GRAPHENE_BILAYER = MaterialSpec(
    name="graphene-bilayer",
    a=2.46,
    sites=(Site("C", 0.0, 0.0, 0.0), Site("C", 1.0 / 3.0, 2.0 / 3.0, 0.0)),
    gap_range_core=(3.15, 3.65),
    gap_range_wide=(3.0, 4.0),
    gap_reference=3.35,
    top_variants=("R",),
    references=(("AB", "R", (1 / 3, 2 / 3), 0.0), ("AA", "R", (0.0, 0.0), 0.25), ("SP", "R", (1 / 6, 1 / 3), 0.05)),
    dft=GRAPHENE_DFT,
)

# Seed (WANDER) settings: PAW pslibrary PBE, 50 Ry, Gaussian 0.005 Ry, Grimme-D2 ('DFT-D'); Wannier basis Mo d +
# S p with the semicore Mo 4s4p and S 3s bands excluded (4 per Mo, 1 per S) and num_bands = num_wann (the
# seed used no disentanglement).  Projections here are in the GLOBAL frame (the seed used local frames).
MOS2_DFT = DFTSettings(
    pseudo_dir=MOS2_SEED_DIR,
    pseudopotentials={"Mo": "mo.upf", "S": "s.upf"},
    masses={"Mo": 95.95, "S": 32.065},
    ecutwfc=50.0,
    ecutrho=None,
    smearing="gaussian",
    degauss=0.005,
    vdw={"vdw_corr": "dft-d"},
    conv_thr_per_atom=1.0e-9,
    mixing_beta=0.4,
    kmesh_scf_1x1=12,
    kmesh_nscf_1x1=9,
    projections={"Mo": ("d",), "S": ("p",)},
    n_orbitals={"Mo": 5, "S": 3},
    excluded_bands_per_atom={"Mo": 4, "S": 1},
    extra_bands_per_atom={"Mo": 0.0, "S": 0.0},
    frozen_window=None,
    proj_threshold=0.5,
    dis_num_iter=0,
    check_window=1.0,
    check_bands_per_atom=1.0,
    vacuum_c=25.0,
)

MOS2_BILAYER = MaterialSpec(
    name="mos2-bilayer",
    a=3.1542,          # seed's 96-atom cell: 12.6168 Å / 4
    sites=(Site("Mo", 0.0, 0.0, 0.0), Site("S", 1.0 / 3.0, 2.0 / 3.0, 1.56), Site("S", 1.0 / 3.0, 2.0 / 3.0, -1.56)),
    gap_range_core=(2.85, 3.35),
    gap_range_wide=(2.7, 3.8),
    gap_reference=3.03,
    top_variants=("H", "R"),
    references=(("2H", "H", (1 / 3, 2 / 3), 0.0), ("3R", "R", (1 / 3, 2 / 3), 0.0), ("AA", "R", (0.0, 0.0), 0.4)),
    dft=MOS2_DFT,
)

MATERIALS: dict[str, MaterialSpec] = {m.name: m for m in (GRAPHENE_BILAYER, MOS2_BILAYER)}


def get_material(name: str) -> MaterialSpec:
    """Look up a material by name (``graphene-bilayer``, ``mos2-bilayer``)."""
    try:
        return MATERIALS[name]
    except KeyError:
        raise ValueError(f"unknown material {name!r}; known: {sorted(MATERIALS)}") from None
