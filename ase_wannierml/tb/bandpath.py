"""Band paths (ASE ``BandPath``) and band structures of a ``TightBinding``; meshes and defaults live in ``kmesh``.

All k-points are fractional (reduced) coordinates of the reciprocal cell. A direction counts as periodic when the
cell says so (``pbc``) *and* some stored H(R) has a non-zero R along it: a slab Hamiltonian with R3 = 0 everywhere
gets a 2D path and n3 = 1 meshes even if its ``Atoms`` carry ``pbc=True``.

Example::

    >>> bs = band_structure(tb, "GMKG", npoints=200)          # doctest: +SKIP
    >>> k_k3, w_k = kpoint_mesh(tb, (24, 24, 1))             # doctest: +SKIP
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from . import kmesh
from .kmesh import default_mesh, kpoint_mesh, periodic_directions  # noqa: F401  (re-exported)

if TYPE_CHECKING:  # pragma: no cover
    from ase.dft.kpoints import BandPath
    from ase.spectrum.band_structure import BandStructure

    from .tightbinding import TightBinding


def make_bandpath(tb: "TightBinding", path: "str | BandPath | None" = None, npoints: int = 200) -> "BandPath":
    """An ASE ``BandPath`` for ``tb.cell``: ``path`` None (standard path of the lattice), a string such as
    ``"GMKG"``, or a ``BandPath`` (returned as is). No periodic direction → ValueError."""
    from ase.cell import Cell
    from ase.dft.kpoints import BandPath

    if isinstance(path, BandPath):
        return path
    pbc = periodic_directions(tb)
    if not pbc.any():
        raise ValueError(
            f"band structure needs a periodic cell: pbc = {tb.pbc.tolist()} and hoppings only within the home cell"
            f" (R vectors {tb.R_r.tolist()[:4]}); use eigenvalues([[0, 0, 0]]) for a finite system"
        )
    cell = Cell(tb.cell)
    if cell[pbc].shape[0] and np.linalg.matrix_rank(cell[pbc]) < pbc.sum():
        raise ValueError(f"cell vectors along the periodic directions {pbc.tolist()} are degenerate: {tb.cell}")
    return cell.bandpath(path, npoints=npoints, pbc=pbc)


def band_structure(
    tb: "TightBinding",
    path: "str | BandPath | None" = None,
    npoints: int = 200,
    reference: float | None = None,
    num: int | None = None,
    near: float | None = None,
    executor: Any = None,
) -> "BandStructure":
    """``BandStructure`` (energies (1, nk, nbands), eV) along ``path``.

    ``reference`` defaults to the known Fermi level, else the one computed from ``num_electrons``, else 0 (ASE
    semantics: energies stay absolute). All bands (dense) up to ``kmesh.EXACT_MAX_ORBITALS`` orbitals; beyond, or
    when ``num`` is given, only the ``num`` (default ``kmesh.SPARSE_BANDS``) bands closest to ``near`` (default: the
    reference) by the sparse solver. ``executor``: k-point chunks as tasks (``tb/distributed.py``).
    """
    from ase.spectrum.band_structure import BandStructure

    bandpath = make_bandpath(tb, path, npoints)
    if reference is None:
        reference = tb.fermi_level() if tb.fermi_energy is not None or tb.num_electrons is not None else 0.0
    if num is None and tb.norb > kmesh.EXACT_MAX_ORBITALS:
        num = kmesh.SPARSE_BANDS
    e_kn = tb.eigenvalues(bandpath.kpts, num=num, near=reference if near is None else near, executor=executor)
    return BandStructure(bandpath, e_kn[None], reference=reference)
