"""Structure builders for (twisted) bilayers of hexagonal 2D materials.

All builders return :class:`ase.Atoms` with ``pbc=(True, True, False)``, vacuum along z, lattice vectors
a1 = (a, 0, 0), a2 = (a/2, a√3/2, 0) (60° cell, rotated for twisted cells), and a per-atom integer array
``layer`` (0 = bottom, 1 = top). Lengths in Å, angles in degrees. numpy only (no torch).

Each material is a honeycomb with two sites per layer cell: site A at fractional (0, 0) and site B at (1/3, 1/3)
(distance a/√3). Graphene: C on A and B. hBN: B on A, N on B. 2H-MoS2: Mo on A, an S pair on B at ±z_S.

Commensurate twisted cells (Lopes dos Santos, Peres, Castro Neto, PRB 86, 155449 (2012); Shallcross et al.,
PRB 81, 165105 (2010)): for coprime integers (m, r) the twist angle is

    cos θ = (3m² + 3mr + r²/2) / (3m² + 3mr + r²)

and the cell holds 4(3m² + 3mr + r²) honeycomb sites if gcd(r, 3) = 1, a third of that if gcd(r, 3) = 3
(so 1.050° = (31, 1) has 11,908 carbon atoms).

Example:
    >>> atoms = twisted_bilayer("graphene", m=31, r=1)
    >>> len(atoms), round(twist_angle(31, 1), 3)
    (11908, 1.05)
"""

from __future__ import annotations

from dataclasses import dataclass
from math import gcd
from typing import Sequence

import numpy as np
from ase import Atoms

__all__ = [
    "MATERIALS",
    "Material",
    "bilayer",
    "commensurate_indices",
    "twist_angle",
    "twisted_bilayer",
    "twisted_num_sites",
]


@dataclass(frozen=True)
class Material:
    """A hexagonal monolayer: lattice constant ``a`` (Å), species on sites A/B, out-of-plane offsets of the
    B-site atoms ``b_z`` (Å, relative to the layer mid-plane) and the default interlayer distance between
    layer mid-planes ``interlayer`` (Å), and default stackings (see :func:`bilayer`)."""

    name: str
    a: float
    species_a: str
    species_b: str
    b_z: tuple[float, ...]
    interlayer: float
    bilayer_stacking: str  # natural untwisted stacking
    twist_stacking: str  # aligned stacking that twisted cells start from


MATERIALS: dict[str, Material] = {
    # graphene: a = 2.46 Å, AB interlayer 3.35 Å (graphite)
    "graphene": Material("graphene", 2.46, "C", "C", (0.0,), 3.35, "AB", "AA"),
    # hBN: a = 2.50 Å, AA' (B over N) interlayer 3.33 Å
    "hbn": Material("hbn", 2.50, "B", "N", (0.0,), 3.33, "AA'", "AA'"),
    # 2H-MoS2: a = 3.16 Å, S at ±1.585 Å from the Mo plane; Mo–Mo interlayer 6.15 Å (S–S gap ≈ 2.98 Å)
    "mos2": Material("mos2", 3.16, "Mo", "S", (-1.585, 1.585), 6.15, "AA'", "AA'"),
}

_STACKING_SHIFTS = {"AA": (0.0, 0.0), "AB": (1.0 / 3.0, 1.0 / 3.0), "BA": (2.0 / 3.0, 2.0 / 3.0)}


def _material(material: str) -> Material:
    key = material.lower()
    if key not in MATERIALS:
        raise ValueError(f"unknown material {material!r}; known: {sorted(MATERIALS)}")
    return MATERIALS[key]


def _hex_lattice(a: float) -> np.ndarray:
    """(2, 2) in-plane lattice vectors (rows), Å: a1 = (a, 0), a2 = (a/2, a√3/2)."""
    return a * np.array([[1.0, 0.0], [0.5, np.sqrt(3.0) / 2.0]])


def _rotation(theta_deg: float) -> np.ndarray:
    t = np.radians(theta_deg)
    return np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])


def _layer_basis(mat: Material, swap: bool) -> tuple[list[str], np.ndarray]:
    """Species and (natoms, 3) positions of one layer cell in (fractional a1, fractional a2, z Å).

    ``swap`` exchanges the contents of sites A and B (the 180°-rotated layer: AA' of hBN, 2H of MoS2).
    """
    site_a, site_b = np.array([0.0, 0.0]), np.array([1.0, 1.0]) / 3.0
    if swap:
        site_a, site_b = site_b, site_a
    symbols = [mat.species_a] + [mat.species_b] * len(mat.b_z)
    pos = [[*site_a, 0.0]] + [[*site_b, z] for z in mat.b_z]
    return symbols, np.array(pos)


def twist_angle(m: int, r: int) -> float:
    """Commensurate twist angle θ(m, r) in degrees (cos θ = (3m²+3mr+r²/2)/(3m²+3mr+r²))."""
    _check_indices(m, r)
    n = 3 * m * m + 3 * m * r + r * r
    return float(np.degrees(np.arccos((3 * m * m + 3 * m * r + 0.5 * r * r) / n)))


def twisted_num_sites(m: int, r: int) -> int:
    """Honeycomb sites (both layers) in the commensurate (m, r) cell: 4(3m²+3mr+r²), divided by 3 if 3 | r."""
    _check_indices(m, r)
    n = 4 * (3 * m * m + 3 * m * r + r * r)
    return n // 3 if r % 3 == 0 else n


def _check_indices(m: int, r: int) -> None:
    if int(m) != m or int(r) != r or m < 1 or r < 1:
        raise ValueError(f"commensurate indices must be positive integers, got m={m}, r={r}")
    if gcd(int(m), int(r)) != 1:
        raise ValueError(f"commensurate indices must be coprime, got m={m}, r={r} (gcd {gcd(int(m), int(r))})")


def commensurate_indices(angle: float, r_max: int = 1, tol: float = 1e-12) -> tuple[int, int]:
    """(m, r) whose twist angle is nearest to ``angle`` (degrees, 0 < angle ≤ 60) with 1 ≤ r ≤ r_max.

    Ties are broken by the smaller cell. With the default ``r_max=1`` only the (m, 1) family is searched.
    """
    if not 0.0 < angle <= 60.0:
        raise ValueError(f"twist angle must be in (0, 60] degrees, got {angle}")
    best: tuple[float, int, tuple[int, int]] | None = None
    for r in range(1, int(r_max) + 1):
        # θ ≈ r / (√3 m) rad for m ≫ r; scan a window around that estimate
        m_est = r / (np.sqrt(3.0) * np.radians(angle))
        lo, hi = max(1, int(m_est) - 3 * r - 3), int(m_est) + 3 * r + 4
        for m in range(lo, hi):
            if gcd(m, r) != 1:
                continue
            key = (abs(twist_angle(m, r) - angle), twisted_num_sites(m, r), (m, r))
            if best is None or key[0] < best[0] - tol or (abs(key[0] - best[0]) <= tol and key[1] < best[1]):
                best = key
    if best is None:
        raise ValueError(f"no commensurate cell found near {angle}° with r ≤ {r_max}")
    return best[2]


def _supercell_2d(a: float, m: int, r: int) -> np.ndarray:
    """(2, 2) superlattice vectors (rows, Å) of the commensurate (m, r) cell in the frame where the bottom layer
    is rotated by −θ/2 and the top layer by +θ/2."""
    theta = twist_angle(m, r)
    lat = _hex_lattice(a)
    t1 = np.array([m, m + r]) @ lat  # maps onto (m + r, m) under a rotation by −θ
    cell = np.array([t1, _rotation(60.0) @ t1])
    if r % 3 == 0:
        # the primitive coincidence cell is 3x smaller: find a shorter common vector among (i t1 + j t2)/3
        cell = _reduce_by_three(cell, lat, theta)
    return cell @ _rotation(-theta / 2.0).T


def _reduce_by_three(cell: np.ndarray, lat: np.ndarray, theta: float) -> np.ndarray:
    """Primitive coincidence cell for 3 | r, from the (non-primitive) cell of the r-not-divisible formula."""
    lat_inv = np.linalg.inv(lat)
    rot_inv = np.linalg.inv(lat @ _rotation(theta).T)  # lattice rotated by +θ (holds cell[0])

    def is_common(v: np.ndarray) -> bool:
        return bool(np.allclose(v @ lat_inv, np.round(v @ lat_inv), atol=1e-6)
                    and np.allclose(v @ rot_inv, np.round(v @ rot_inv), atol=1e-6))

    for i, j in ((1, 0), (0, 1), (1, 1), (1, 2), (2, 1), (2, 2)):
        v = (i * cell[0] + j * cell[1]) / 3.0
        if is_common(v):
            return np.array([v, _rotation(60.0) @ v])
    raise ValueError("internal error: no primitive coincidence vector found for 3 | r")


def _fill_layer(cell2: np.ndarray, lat: np.ndarray, symbols: list[str], basis: np.ndarray,
                z0: float) -> tuple[np.ndarray, list[str]]:
    """Cartesian positions (n, 3) and symbols of one layer (lattice rows ``lat``) inside the supercell ``cell2``."""
    inv_cell = np.linalg.inv(cell2)
    corners = np.array([[0, 0], [1, 0], [0, 1], [1, 1]]) @ cell2 @ np.linalg.inv(lat)
    lo = np.floor(corners.min(axis=0)).astype(int) - 1
    hi = np.ceil(corners.max(axis=0)).astype(int) + 1
    n1, n2 = np.meshgrid(np.arange(lo[0], hi[0] + 1), np.arange(lo[1], hi[1] + 1), indexing="ij")
    points = np.stack([n1.ravel(), n2.ravel()], axis=1)
    pos_all, sym_all = [], []
    for sym, b in zip(symbols, basis):
        xy = (points + b[:2]) @ lat
        frac = xy @ inv_cell
        frac = frac - np.floor(np.round(frac, 8))  # the image in [0, 1) (no rounding of the position itself)
        key = np.round(frac, 6) % 1.0  # periodic images share a key
        frac = frac[np.unique(key, axis=0, return_index=True)[1]]
        xyz = np.zeros((len(frac), 3))
        xyz[:, :2] = frac @ cell2
        xyz[:, 2] = z0 + b[2]
        pos_all.append(xyz)
        sym_all += [sym] * len(frac)
    return np.concatenate(pos_all), sym_all


def _make_atoms(cell2: np.ndarray, layers: Sequence[tuple[np.ndarray, list[str]]], vacuum: float,
                z_extent: float) -> Atoms:
    if vacuum <= 0:
        raise ValueError(f"vacuum must be positive (Å), got {vacuum}")
    cell = np.zeros((3, 3))
    cell[:2, :2] = cell2
    cell[2, 2] = z_extent + vacuum
    positions = np.concatenate([p for p, _ in layers])
    symbols = [s for _, syms in layers for s in syms]
    layer = np.concatenate([np.full(len(p), i, dtype=int) for i, (p, _) in enumerate(layers)])
    positions[:, 2] += vacuum / 2.0 - positions[:, 2].min()
    atoms = Atoms(symbols=symbols, positions=positions, cell=cell, pbc=(True, True, False))
    atoms.set_array("layer", layer)
    return atoms


def _stacking(stacking: str | Sequence[float]) -> tuple[np.ndarray, bool]:
    """Fractional in-plane shift of the top layer and whether its A/B sites are swapped."""
    if isinstance(stacking, str):
        key = stacking.upper().replace("’", "'")
        swap = key.endswith("'") or key == "2H"
        key = "AA" if key == "2H" else key.rstrip("'")
        if key not in _STACKING_SHIFTS:
            raise ValueError(f"unknown stacking {stacking!r}; use 'AA', 'AB', 'BA', 'AA'', '2H' or a shift (f1, f2)")
        return np.array(_STACKING_SHIFTS[key]), swap
    shift = np.asarray(stacking, dtype=float)
    if shift.shape != (2,):
        raise ValueError(f"stacking shift must be 2 fractional numbers, got shape {shift.shape}")
    return shift, False


def bilayer(material: str = "graphene", stacking: str | Sequence[float] | None = None, a: float | None = None,
            interlayer: float | None = None, vacuum: float = 20.0) -> Atoms:
    """Untwisted bilayer primitive cell.

    Args:
        material: "graphene", "hbn" or "mos2".
        stacking: "AA" (eclipsed), "AB"/"BA" (top shifted by ±(a1+a2)/3, Bernal), "AA'" (top A/B contents swapped:
            B over N for hBN; "2H" is the same for MoS2, Mo over S), or an in-plane fractional shift (f1, f2);
            ``None`` = the material's natural stacking (graphene "AB", hBN "AA'", MoS2 "2H").
        a: lattice constant (Å); default per material.
        interlayer: vertical distance between layer mid-planes (Å); default per material.
        vacuum: vacuum thickness along z (Å).
    """
    mat = _material(material)
    a = mat.a if a is None else float(a)
    d = mat.interlayer if interlayer is None else float(interlayer)
    shift, swap = _stacking(mat.bilayer_stacking if stacking is None else stacking)
    lat = _hex_lattice(a)
    layers = []
    for i, (sw, s) in enumerate(((False, np.zeros(2)), (swap, shift))):
        symbols, basis = _layer_basis(mat, sw)
        xyz = np.zeros((len(basis), 3))
        xyz[:, :2] = (basis[:, :2] + s) % 1.0 @ lat
        xyz[:, 2] = i * d + basis[:, 2]
        layers.append((xyz, symbols))
    return _make_atoms(lat, layers, vacuum, d + 2 * max(abs(z) for z in mat.b_z))


def twisted_bilayer(material: str = "graphene", m: int | None = None, r: int | None = None,
                    angle: float | None = None, a: float | None = None, interlayer: float | None = None,
                    vacuum: float = 20.0, stacking: str | None = None, r_max: int = 1) -> Atoms:
    """Commensurate twisted bilayer; bottom layer rotated by −θ/2, top by +θ/2 about a common A site.

    Give either the indices (m, r) (r defaults to 1) or ``angle`` (degrees: the nearest commensurate angle with
    1 ≤ r ≤ ``r_max`` is used). ``stacking`` is the aligned stacking that is twisted: "AA" or "AA'" (default:
    graphene "AA", hBN/MoS2 "AA'"; at θ → 60° − δ the latter is the AB/2H-like family). The chosen indices and
    the exact angle are stored in ``atoms.info`` ("twist_m", "twist_r", "twist_angle" in degrees).

    Returns ase.Atoms with arrays["layer"] (0 bottom, 1 top), pbc=(True, True, False).
    """
    mat = _material(material)
    if angle is not None:
        if m is not None or r is not None:
            raise ValueError("give either (m, r) or angle, not both")
        m, r = commensurate_indices(angle, r_max=r_max)
    elif m is None:
        raise ValueError("twisted_bilayer needs the indices (m, r) or an angle")
    r = 1 if r is None else r
    _check_indices(m, r)
    a = mat.a if a is None else float(a)
    d = mat.interlayer if interlayer is None else float(interlayer)
    shift, swap = _stacking(mat.twist_stacking if stacking is None else stacking)
    if np.any(shift != 0.0):
        raise ValueError(f"twisted cells are built from 'AA' or 'AA'' stacking, got {stacking!r}")
    theta = twist_angle(m, r)
    cell2 = _supercell_2d(a, m, r)
    layers = []
    for i, (sw, rot) in enumerate(((False, -theta / 2.0), (swap, theta / 2.0))):
        symbols, basis = _layer_basis(mat, sw)
        lat = _hex_lattice(a) @ _rotation(rot).T
        layers.append(_fill_layer(cell2, lat, symbols, basis, i * d))
    atoms = _make_atoms(cell2, layers, vacuum, d + 2 * max(abs(z) for z in mat.b_z))
    expected = twisted_num_sites(m, r) // 2 * (1 + len(mat.b_z))
    if len(atoms) != expected:
        raise ValueError(f"internal error: built {len(atoms)} atoms for (m, r) = ({m}, {r}), expected {expected}")
    atoms.info.update(twist_m=int(m), twist_r=int(r), twist_angle=theta)
    return atoms
