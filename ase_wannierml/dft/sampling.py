"""Configuration sampling for bilayers: stacking shift, interlayer gap, in-plane strain, rattles, supercells, twists.

Every frame is fully described by a :class:`FrameParams` (JSON-serialisable, includes its own RNG seed), and
:func:`build_structure` turns it into ``ase.Atoms`` deterministically.  Conventions:

* hexagonal 120° cell a1 = a (1, 0, 0), a2 = a (-1/2, √3/2, 0), a3 = c ẑ; layer 0 at the bottom;
* ``shift`` is the in-plane displacement of the top layer in fractional coordinates of the (unstrained,
  untwisted) primitive cell, relative to the aligned AA(') stacking;  for graphene AB = (1/3, 2/3);
* ``gap`` (Å) is the vertical distance between the facing atomic planes (top plane of layer 0, bottom plane of
  layer 1); for graphene it is the interlayer distance;
* ``strain`` = (e_xx, e_yy, e_xy), symmetric small-strain tensor applied to cell and atoms (positions keep their
  fractional coordinates), before the rattle;
* ``rattle`` (Å): Gaussian σ of independent Cartesian displacements (clipped at 3σ), after strain;
* ``supercell`` n: n x n in-plane repetition;  ``twist_m`` m ≥ 1: commensurate (m, m+1) twisted cell instead.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np
from ase import Atoms

from .materials import MaterialSpec


@dataclass
class FrameParams:
    """All parameters of one sampled frame (lengths in Å, strain dimensionless, shift fractional)."""

    frame_id: str
    material: str
    seed: int
    kind: str = "1x1"                      # "1x1", "2x2", "twist-m1", ...
    supercell: int = 1
    twist_m: int = 0
    top_variant: str = "R"
    shift: tuple[float, float] = (0.0, 0.0)
    gap: float = 3.35
    strain: tuple[float, float, float] = (0.0, 0.0, 0.0)
    rattle: float = 0.0
    notes: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["shift"] = list(self.shift)
        d["strain"] = list(self.strain)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "FrameParams":
        d = dict(d)
        d["shift"] = tuple(d["shift"])
        d["strain"] = tuple(d["strain"])
        return cls(**d)


def primitive_cell(a: float, c: float) -> np.ndarray:
    """(3, 3) Å, rows a1, a2, a3 of the 120° hexagonal cell."""
    return np.array([[a, 0.0, 0.0], [-0.5 * a, 0.5 * math.sqrt(3.0) * a, 0.0], [0.0, 0.0, c]])


def strain_matrix(strain: tuple[float, float, float]) -> np.ndarray:
    """(3, 3) deformation gradient F = 1 + ε with in-plane ε = [[e_xx, e_xy], [e_xy, e_yy]]."""
    exx, eyy, exy = strain
    f = np.eye(3)
    f[0, 0] += exx
    f[1, 1] += eyy
    f[0, 1] += exy
    f[1, 0] += exy
    return f


def _layer_sites(material: MaterialSpec, variant: str) -> list[tuple[str, float, float, float]]:
    """Monolayer sites (symbol, f1, f2, z); variant "H" rotates the layer by 180° about the origin."""
    out = []
    for s in material.sites:
        if variant == "R":
            out.append((s.symbol, s.f1, s.f2, s.z))
        elif variant == "H":
            out.append((s.symbol, (-s.f1) % 1.0, (-s.f2) % 1.0, s.z))
        else:
            raise ValueError(f"unknown top-layer variant {variant!r}; use 'R' or 'H'")
    return out


def _bilayer_primitive(material: MaterialSpec, params: FrameParams) -> Atoms:
    """Untwisted bilayer in the primitive cell, centred in z, with per-atom ``layer``."""
    c = material.dft.vacuum_c
    cell = primitive_cell(material.a, c)
    t = material.thickness()
    bottom = _layer_sites(material, "R")
    top = _layer_sites(material, params.top_variant)
    z_bottom = 0.5 * c - 0.5 * (params.gap + t)                 # centre of the bottom layer
    z_top = z_bottom + t + params.gap
    symbols, frac, z, layer = [], [], [], []
    for lay, sites, zc, shift in ((0, bottom, z_bottom, (0.0, 0.0)), (1, top, z_top, params.shift)):
        for sym, f1, f2, dz in sites:
            symbols.append(sym)
            frac.append([(f1 + shift[0]) % 1.0, (f2 + shift[1]) % 1.0])
            z.append(zc + dz)
            layer.append(lay)
    frac = np.array(frac)
    pos = frac @ cell[:2] + np.array(z)[:, None] * np.array([0.0, 0.0, 1.0])
    atoms = Atoms(symbols, positions=pos, cell=cell, pbc=True)
    atoms.set_array("layer", np.array(layer, dtype=int))
    return atoms


def _lattice_points_in_cell(prim2: np.ndarray, super2: np.ndarray, nexpected: int) -> np.ndarray:
    """Integer combos of the 2D lattice ``prim2`` (2, 2) inside the supercell ``super2`` (2, 2): (n, 2) Å."""
    inv = np.linalg.inv(super2)
    nmax = int(np.ceil(np.abs(np.linalg.solve(prim2.T, super2.T)).sum())) + 2
    ij = np.array([(i, j) for i in range(-nmax, nmax + 1) for j in range(-nmax, nmax + 1)], dtype=float)
    pts = ij @ prim2
    frac = pts @ inv
    frac = np.where(np.abs(frac - np.round(frac)) < 1e-8, np.round(frac), frac)
    inside = np.all((frac >= 0.0) & (frac < 1.0), axis=1)
    pts = pts[inside]
    if len(pts) != nexpected:
        raise RuntimeError(f"commensurate cell construction found {len(pts)} lattice points, expected {nexpected}")
    return pts


def twisted_cell(material: MaterialSpec, params: FrameParams) -> Atoms:
    """Commensurate twisted bilayer (m, m+1): angle cos θ = (3m² + 3m + 1/2) / (3m² + 3m + 1).

    Bottom layer: superlattice vector L1 = m a1' + (m+1) a2' of the 60° basis a1' = a1, a2' = a1 + a2; top layer
    rotated by θ about an atom of the AA-aligned bilayer so that its (m+1) a1' + m a2' lands on L1; then the top
    layer is shifted by ``params.shift`` (fractional, primitive cell).  Returns atoms with ``layer``.
    """
    m = params.twist_m
    if m < 1:
        raise ValueError(f"twist_m must be >= 1 for a twisted cell, got {m}")
    a, c = material.a, material.dft.vacuum_c
    p = primitive_cell(a, c)[:2, :2]
    b1, b2 = p[0], p[0] + p[1]                      # 60° basis
    L1 = m * b1 + (m + 1) * b2
    L1_top = (m + 1) * b1 + m * b2
    theta = math.atan2(L1[1], L1[0]) - math.atan2(L1_top[1], L1_top[0])
    rot60 = np.array([[0.5, -math.sqrt(3) / 2], [math.sqrt(3) / 2, 0.5]])
    L2 = rot60 @ L1
    sup = np.array([L1, L2])
    ncell = int(round(abs(np.linalg.det(sup)) / abs(np.linalg.det(p))))
    rot = np.array([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]])
    t = material.thickness()
    z_bottom = 0.5 * c - 0.5 * (params.gap + t)
    z_top = z_bottom + t + params.gap
    symbols, pos, layer = [], [], []
    inv = np.linalg.inv(sup)
    for lay, variant, zc in ((0, "R", z_bottom), (1, params.top_variant, z_top)):
        prim = p if lay == 0 else p @ rot.T
        pts = _lattice_points_in_cell(prim, sup, ncell)
        shift_cart = np.array(params.shift) @ p if lay == 1 else np.zeros(2)
        for sym, f1, f2, dz in _layer_sites(material, variant):
            basis = np.array([f1, f2]) @ prim
            xy = pts + basis + shift_cart
            fr = (xy @ inv) % 1.0
            xy = fr @ sup
            for v in xy:
                symbols.append(sym)
                pos.append([v[0], v[1], zc + dz])
                layer.append(lay)
    cell = np.zeros((3, 3))
    cell[:2, :2] = sup
    cell[2, 2] = c
    atoms = Atoms(symbols, positions=pos, cell=cell, pbc=True)
    atoms.set_array("layer", np.array(layer, dtype=int))
    return atoms


def twist_angle_deg(m: int) -> float:
    """Commensurate twist angle (degrees) of the (m, m+1) cell."""
    return math.degrees(math.acos((3 * m * m + 3 * m + 0.5) / (3 * m * m + 3 * m + 1)))


def build_structure(material: MaterialSpec, params: FrameParams) -> Atoms:
    """Deterministically build the frame's ``Atoms`` (with ``layer`` array) from its parameters."""
    if not material.sites:
        raise ValueError(f"material {material.name!r} has no monolayer 'sites': the sampler cannot build structures "
                         "for it (give structures to dft.compute_frames instead, or add sites to its file)")
    if params.gap <= 0:
        raise ValueError(f"interlayer gap must be positive (Å), got {params.gap}")
    if params.rattle < 0:
        raise ValueError(f"rattle σ must be >= 0 (Å), got {params.rattle}")
    if params.twist_m > 0:
        atoms = twisted_cell(material, params)
    else:
        atoms = _bilayer_primitive(material, params)
        if params.supercell > 1:
            layer = atoms.get_array("layer")
            atoms = atoms.repeat((params.supercell, params.supercell, 1))
            atoms.set_array("layer", np.tile(layer, params.supercell ** 2))
    f = strain_matrix(params.strain)
    atoms.set_cell(atoms.cell.array @ f.T, scale_atoms=True)
    if params.rattle > 0:
        rng = np.random.default_rng(params.seed)
        d = rng.normal(0.0, params.rattle, size=(len(atoms), 3))
        atoms.positions += np.clip(d, -3 * params.rattle, 3 * params.rattle)
    atoms.info["frame_id"] = params.frame_id
    return atoms


# --------------------------------------------------------------------------------------------------------------
# Sampling plans
# --------------------------------------------------------------------------------------------------------------

def _frame_seed(master_seed: int, index: int) -> int:
    return int(np.random.SeedSequence([master_seed, index]).generate_state(1)[0])


def _sample_strain(rng: np.random.Generator, large: bool) -> tuple[float, float, float]:
    """Moderate: each component in ±2 %; large: e_xx, e_yy in ±8 %, shear in ±4 %."""
    if large:
        exx, eyy = rng.uniform(-0.08, 0.08, size=2)
        exy = rng.uniform(-0.04, 0.04)
    else:
        exx, eyy, exy = rng.uniform(-0.02, 0.02, size=3)
    return (float(exx), float(eyy), float(exy))


def sample_frame(material: MaterialSpec, index: int, kind: str, master_seed: int = 2024) -> FrameParams:
    """Draw the parameters of frame ``index`` of the given ``kind`` ("1x1", "2x2", "twist-m1").

    The strain amplitude and gap range alternate deterministically with the index (every 4th frame large strain,
    every 3rd wide gap range) so that any prefix of the plan is diverse.
    """
    seed = _frame_seed(master_seed, index)
    rng = np.random.default_rng(seed)
    large = index % 4 == 3
    wide = index % 3 == 2
    lo, hi = material.gap_range_wide if wide else material.gap_range_core
    params = FrameParams(
        frame_id=f"{index:04d}-{kind}",
        material=material.name,
        seed=seed,
        kind=kind,
        top_variant=str(rng.choice(material.top_variants)),
        shift=(float(rng.uniform()), float(rng.uniform())),
        gap=float(rng.uniform(lo, hi)),
        strain=_sample_strain(rng, large and kind == "1x1"),
        rattle=float(rng.uniform(0.01, 0.03)),
        notes={"strain_class": "large" if (large and kind == "1x1") else "moderate",
               "gap_range": [lo, hi], "master_seed": master_seed},
    )
    if kind == "2x2":
        params.supercell = 2
    elif kind.startswith("twist-m"):
        params.twist_m = int(kind[len("twist-m"):])
        params.rattle = float(rng.uniform(0.0, 0.02))
        params.notes["twist_deg"] = twist_angle_deg(params.twist_m)
    elif kind != "1x1":
        raise ValueError(f"unknown frame kind {kind!r}; use '1x1', '2x2' or 'twist-m<m>'")
    return params


def reference_frames(material: MaterialSpec, master_seed: int = 2024) -> list[FrameParams]:
    """Unperturbed high-symmetry stackings of ``material.references`` first (validation against references)."""
    out = []
    for i, (name, variant, shift, dgap) in enumerate(material.references):
        out.append(FrameParams(frame_id=f"{i:04d}-ref{name}", material=material.name, seed=_frame_seed(master_seed, i),
                               kind="1x1", top_variant=variant, shift=tuple(shift),
                               gap=material.gap_reference + dgap, notes={"reference": name}))
    return out


def reference_structure(material: MaterialSpec, index: int = 0) -> Atoms:
    """The ``index``-th unperturbed reference stacking of ``material`` (0: e.g. AB graphene, 2H MoS2), exactly the
    geometry of the workflow's ``000<index>-ref*`` frame, with an integer ``layer`` array (Å)."""
    refs = reference_frames(material)
    if not 0 <= index < len(refs):
        raise ValueError(f"material {material.name!r} has {len(refs)} reference stackings, got index {index}")
    atoms = build_structure(material, refs[index])
    atoms.set_array("layer", np.asarray(atoms.get_array("layer"), dtype=int))
    return atoms


def frame_plan(material: MaterialSpec, n_frames: int, master_seed: int = 2024) -> list[FrameParams]:
    """The ordered list of frames for a batch: references, then 1x1 frames, with 2x2 rattled frames interleaved
    (every 8th frame from index 60) and a few small twisted cells (indices 200, 320) later in the list."""
    if n_frames < 1:
        raise ValueError(f"n_frames must be >= 1, got {n_frames}")
    plan = reference_frames(material, master_seed)[:n_frames]
    for i in range(len(plan), n_frames):
        if i in (200, 320):
            kind = "twist-m1"
        elif i >= 60 and i % 8 == 4:
            kind = "2x2"
        else:
            kind = "1x1"
        plan.append(sample_frame(material, i, kind, master_seed))
    return plan


#: Biaxial strains of ``strain_series`` (largest first: the seed's 201-atom benchmark has a top layer at +7.8 %).
BIAXIAL_STRAINS = (0.08, 0.04, 0.06, -0.04, 0.02)


def strain_series(material: MaterialSpec, strains: tuple[float, ...] = BIAXIAL_STRAINS,
                  master_seed: int = 2024) -> list[FrameParams]:
    """Full (Wannier) frames of the reference-stacked bilayer under biaxial strain ε (both lattice vectors scaled
    by 1 + ε, no shear), slightly rattled (0.015 Å) and at the reference gap. The random plan draws each strain
    component independently, so it almost never samples a uniformly expanded layer such as the +7.8 % top layer
    of the seed's benchmark cell; these frames cover that direction."""
    name, variant, shift, dgap = material.references[0]
    out = []
    for i, eps in enumerate(strains):
        out.append(FrameParams(frame_id=f"b{i:03d}-biax{eps:+.3f}", material=material.name,
                               seed=_frame_seed(master_seed + 11, i), kind="1x1", top_variant=variant,
                               shift=tuple(shift), gap=material.gap_reference + dgap,
                               strain=(float(eps), float(eps), 0.0), rattle=0.015,
                               notes={"strain_class": "biaxial", "stacking": name}))
    return out


GRID_GAP_OFFSETS = (-0.25, -0.10, 0.15, 0.45, 0.95)   # Å from material.gap_reference (graphene: 3.10 … 4.30)
#: Gaps (Å) of the "separated layers" frames appended to the default grid (AA-type and reference stacking): beyond
#: the backbone cut-off, so they fix the energy of two non-interacting layers (minus the analytic dispersion), the
#: zero of the binding energy. Without them E_b depends on how the network extrapolates from 4.3 Å.
SEPARATED_GAPS = (6.0, 8.0)


def stacking_grid(material: MaterialSpec, gaps: tuple[float, ...] | None = None,
                  path_fractions: tuple[float, ...] = (0.0, 0.5, 0.75, 1.0), prefix: str = "s") -> list[FrameParams]:
    """SCF-only frames (energy, forces, stress; no Wannier step) of the rigid, unstrained bilayer on a grid of
    stackings × interlayer gaps (Å; default: ``GRID_GAP_OFFSETS`` around the reference gap): the stacking shift runs along the straight line from the AA-type origin
    (fraction 0) to the material's first reference stacking (fraction 1: AB graphene, 2H MoS2), through the
    saddle point at 0.5. They pin down the interlayer energy landscape (binding curve and stacking-fault
    energies) that relaxation of twisted cells depends on. The default grid ends with ``SEPARATED_GAPS`` frames
    (AA-type and reference stacking), the zero of the binding energy. ``prefix`` starts each frame id
    (``<prefix>000-scf-t1.00-g3.35``): an extra grid on other gaps needs its own prefix so its ids stay unique."""
    if not prefix or not prefix.replace("_", "").isalnum():
        raise ValueError(f"stacking_grid: prefix must be a non-empty alphanumeric string, got {prefix!r}")
    if gaps is not None and len(gaps) == 0 or len(path_fractions) == 0:
        raise ValueError("stacking_grid: an empty list of gaps or stacking-path fractions gives no frames")
    bad = [g for g in (gaps or ()) if not (np.isfinite(g) and g > 0)]
    if bad:
        raise ValueError(f"stacking_grid: interlayer gaps must be finite and > 0 Å, got {bad}")
    if not all(np.isfinite(t) for t in path_fractions):
        raise ValueError(f"stacking_grid: stacking-path fractions must be finite, got {list(path_fractions)}")
    name, variant, shift, _ = material.references[0]
    pairs = [(t, g) for t in path_fractions for g in gaps] if gaps is not None else \
        [(t, round(material.gap_reference + d, 3)) for t in path_fractions for d in GRID_GAP_OFFSETS] + \
        [(t, g) for t in (0.0, 1.0) for g in SEPARATED_GAPS]      # appended: existing ids stay the same
    out = []
    for i, (t, gap) in enumerate(pairs):
        out.append(FrameParams(frame_id=f"{prefix}{i:03d}-scf-t{t:.2f}-g{gap:.2f}", material=material.name,
                               seed=_frame_seed(7, i), kind="scf", top_variant=variant,
                               shift=(t * shift[0], t * shift[1]), gap=float(gap),
                               notes={"stacking_path_fraction": t, "towards": name}))
    return out
