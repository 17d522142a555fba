"""Twisted and untwisted bilayer builders: counts, angles and geometry checked against the commensuration formulas
and against the structure itself (bond directions, distances)."""
from __future__ import annotations

from math import gcd

import numpy as np
import pytest
from ase.neighborlist import neighbor_list

from ase_wannierml.structures import (bilayer, commensurate_indices, twist_angle, twisted_bilayer,
                                      twisted_num_sites)

A_C = 2.46


def formula_angle(m: int, r: int) -> float:
    n = 3 * m * m + 3 * m * r + r * r
    return float(np.degrees(np.arccos((3 * m * m + 3 * m * r + r * r / 2) / n)))


def bond_angle(atoms, layer: int) -> float:
    """In-plane direction (degrees, mod 60) of nearest-neighbour bonds within one layer."""
    i, j, D = neighbor_list("ijD", atoms, 1.6)
    keep = (atoms.arrays["layer"][i] == layer) & (atoms.arrays["layer"][j] == layer)
    phi = np.degrees(np.arctan2(D[keep, 1], D[keep, 0])) % 60.0
    # all bonds of a honeycomb share one direction mod 60°; average on the circle
    z = np.exp(2j * np.pi * phi / 60.0).mean()
    assert abs(z) > 0.999, "bonds of a layer are not all parallel mod 60°"
    return float(np.angle(z) * 60.0 / (2 * np.pi))


@pytest.mark.parametrize("m,r", [(1, 1), (2, 1), (3, 2), (5, 1), (1, 3), (2, 3), (4, 3), (10, 1)])
def test_twisted_graphene_counts_and_angle(m, r):
    atoms = twisted_bilayer("graphene", m=m, r=r)
    n = 4 * (3 * m * m + 3 * m * r + r * r)
    assert len(atoms) == (n // 3 if r % 3 == 0 else n) == twisted_num_sites(m, r)
    assert twist_angle(m, r) == pytest.approx(formula_angle(m, r), abs=1e-12)
    assert atoms.info["twist_angle"] == pytest.approx(formula_angle(m, r), abs=1e-12)
    # the twist measured from the structure itself: top minus bottom bond directions
    measured = (bond_angle(atoms, 1) - bond_angle(atoms, 0)) % 60.0
    assert measured == pytest.approx(formula_angle(m, r), abs=1e-6)
    # area per atom of each layer is that of graphene (√3 a²/4 per atom)
    area = abs(np.linalg.det(atoms.cell[:2, :2]))
    assert area / (len(atoms) / 2) == pytest.approx(np.sqrt(3) * A_C**2 / 4, rel=1e-10)


def test_magic_angle_cell():
    atoms = twisted_bilayer("graphene", angle=1.05)
    assert (atoms.info["twist_m"], atoms.info["twist_r"]) == (31, 1)
    assert len(atoms) == 11908
    assert atoms.info["twist_angle"] == pytest.approx(1.0501208797943464, abs=1e-10)


def test_geometry_layers_and_distances():
    atoms = twisted_bilayer("graphene", m=4, r=1, vacuum=18.0)
    layer = atoms.arrays["layer"]
    z = atoms.positions[:, 2]
    assert set(layer.tolist()) == {0, 1} and np.sum(layer == 0) == np.sum(layer == 1)
    assert np.all(z[layer == 0] < z[layer == 1].min())
    assert z[layer == 1].max() - z[layer == 0].min() == pytest.approx(3.35)
    assert tuple(atoms.pbc) == (True, True, False)
    assert atoms.cell[2, 2] == pytest.approx(3.35 + 18.0)
    i, d = neighbor_list("id", atoms, 1.6)
    assert d.min() == pytest.approx(A_C / np.sqrt(3), abs=1e-9)  # C–C bond a/√3, no overlapping atoms
    assert np.all(np.bincount(i, minlength=len(atoms)) == 3)  # perfect honeycomb in each layer
    i, j, d = neighbor_list("ijd", atoms, 3.5)
    inter = layer[i] != layer[j]
    assert d[inter].min() == pytest.approx(3.35)  # AA-stacked spot at the origin: an atom right above another


def test_angle_search_picks_nearest():
    for angle in (0.8, 1.05, 1.6, 2.0, 3.15, 5.0, 9.43, 21.0):
        m, r = commensurate_indices(angle)
        brute = min(range(1, 200), key=lambda mm: abs(formula_angle(mm, 1) - angle))
        assert (m, r) == (brute, 1)
    m, r = commensurate_indices(27.8, r_max=3)
    candidates = [(abs(formula_angle(mm, rr) - 27.8), mm, rr) for rr in (1, 2, 3) for mm in range(1, 60)
                  if gcd(mm, rr) == 1]
    assert (m, r) == min(candidates)[1:]
    assert twisted_bilayer(angle=3.15).info["twist_m"] == 10


@pytest.mark.parametrize("material,species,a", [("hbn", ("B", "N"), 2.50), ("mos2", ("Mo", "S"), 3.16)])
def test_twisted_hbn_mos2(material, species, a):
    atoms = twisted_bilayer(material, m=3, r=1)
    symbols = np.array(atoms.get_chemical_symbols())
    per_layer_cells = 3 * 9 + 3 * 3 + 1
    n_b = 2 if material == "mos2" else 1
    assert np.sum(symbols == species[0]) == 2 * per_layer_cells
    assert np.sum(symbols == species[1]) == 2 * per_layer_cells * n_b
    i, j, d = neighbor_list("ijd", atoms, 2.6)
    hetero = symbols[i] != symbols[j]
    expected = a / np.sqrt(3) if material == "hbn" else np.hypot(a / np.sqrt(3), 1.585)
    assert d[hetero].min() == pytest.approx(expected, abs=1e-9)
    assert d[~hetero].min(initial=np.inf) >= a - 1e-9  # like species no closer than the lattice constant


def test_bilayer_stackings():
    ab = bilayer("graphene", "AB")
    assert len(ab) == 4 and ab.arrays["layer"].tolist() == [0, 0, 1, 1]
    xy = ab.positions[:, :2]
    # Bernal: exactly one top atom sits vertically above a bottom atom
    dxy = np.linalg.norm((xy[2:, None] - xy[None, :2]), axis=-1)
    assert np.sum(dxy < 1e-9) == 1
    aa = bilayer("graphene", "AA")
    assert np.allclose(aa.positions[2:, :2], aa.positions[:2, :2])
    mos2 = bilayer("mos2")  # natural 2H: Mo above S and S above Mo
    sym = np.array(mos2.get_chemical_symbols())
    bottom_mo = mos2.positions[(sym == "Mo") & (mos2.arrays["layer"] == 0), :2]
    top_s = mos2.positions[(sym == "S") & (mos2.arrays["layer"] == 1), :2]
    assert np.allclose(top_s, bottom_mo)
    gap = mos2.positions[mos2.arrays["layer"] == 1, 2].min() - mos2.positions[mos2.arrays["layer"] == 0, 2].max()
    assert gap == pytest.approx(6.15 - 2 * 1.585)
    shifted = bilayer("graphene", (0.5, 0.0))
    assert np.allclose(shifted.positions[2, :2] - shifted.positions[0, :2], [A_C / 2, 0.0])


def test_errors():
    with pytest.raises(ValueError, match="coprime"):
        twisted_bilayer(m=4, r=2)
    with pytest.raises(ValueError, match="either"):
        twisted_bilayer(m=3, angle=1.0)
    with pytest.raises(ValueError, match="unknown material"):
        twisted_bilayer("wse2", m=3)
    with pytest.raises(ValueError, match="stacking"):
        bilayer("graphene", "ABC")
    with pytest.raises(ValueError, match="twist angle"):
        commensurate_indices(-1.0)
