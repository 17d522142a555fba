"""Defaults of the tight-binding engine in one place, and Γ-centred k-point meshes (spglib-reduced).

Every default k-mesh, band count and size threshold used by ``ase_wannierml.tb`` and the calculator is defined
here, so ``calc.get_dos()``, ``tb.dos()`` and ``tb.fermi_level()`` sample the same mesh. All k-points are fractional
(reduced) coordinates of the reciprocal cell. A direction counts as periodic when the cell says so (``pbc``) *and*
some stored H(R) has a non-zero R along it: a slab Hamiltonian with R3 = 0 everywhere gets n3 = 1 meshes even if
its ``Atoms`` carry ``pbc=True``. This module imports nothing else from ``tb`` (the bottom of its import order).

Example::

    >>> k_k3, w_k = kpoint_mesh(tb, (24, 24, 1))             # doctest: +SKIP
"""
from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from .tightbinding import TightBinding

MESH_DENSITY = 8.0  # k-points per 2π/Å of reciprocal length along periodic directions (graphene: 24 × 24)
DOS_BAND_SLOPE = 6.6  # eV·Å, graphene's ħv_F: the steepest band slope the default DOS mesh is made for
DOS_STEP_WIDTHS = 3.0  # such a band moves by at most this many smearing widths between neighbouring mesh points
DOS_MAX_KPOINTS = 96  # cap of the default DOS mesh per periodic direction
DOS_WIDTH = 0.02  # eV, Gaussian smearing of the DOS
DOS_NPTS = 2000  # energy grid points of the DOS
FERMI_WIDTH = 0.01  # eV, Fermi–Dirac width for the electron count
EXACT_MAX_ORBITALS = 2000  # above: DOS by KPM, E_F by sparse counts, band structures SPARSE_BANDS near E_F
SPARSE_BANDS = 16  # bands near E_F computed by default above EXACT_MAX_ORBITALS


def periodic_directions(tb: "TightBinding") -> np.ndarray:
    """(3,) bool: pbc and some hopping along that direction."""
    return tb.pbc & np.any(tb.R_r != 0, axis=0)


def default_mesh(tb: "TightBinding", density: float = MESH_DENSITY) -> tuple[int, int, int]:
    """Mesh size with ≥ ``density`` points per 2π/Å of reciprocal length along periodic directions (graphene → 24)."""
    b_norm_3 = np.linalg.norm(np.linalg.pinv(tb.cell).T, axis=1)  # |b|/2π, 1/Å
    n_3 = np.maximum(1, np.ceil(2 * np.pi * b_norm_3 * density - 1e-6)).astype(int)
    n_3[~periodic_directions(tb)] = 1
    return tuple(int(n) for n in n_3)


def dos_mesh(tb: "TightBinding", width: float = DOS_WIDTH) -> tuple[int, int, int]:
    """Default DOS mesh for Gaussian smearing ``width`` (eV): fine enough that a band of slope ``DOS_BAND_SLOPE``
    moves by at most ``DOS_STEP_WIDTHS`` widths between neighbouring k-points (n ≥ slope·|b| / (steps·width)),
    at least :func:`default_mesh`, at most ``DOS_MAX_KPOINTS`` per direction. A coarser mesh draws each band as
    isolated spikes: the density mesh of a 5° moiré cell is 3 × 3; this rule gives it 29 × 29 at 20 meV."""
    if not width > 0:
        raise ValueError(f"DOS smearing width must be positive (eV), got {width}")
    b_3 = 2 * np.pi * np.linalg.norm(np.linalg.pinv(tb.cell).T, axis=1)     # |b_i|, 1/Å
    need_3 = np.ceil(DOS_BAND_SLOPE * b_3 / (DOS_STEP_WIDTHS * width) - 1e-9).astype(int)
    periodic = periodic_directions(tb)
    return tuple(int(min(max(n, need), DOS_MAX_KPOINTS)) if p else int(n)
                 for n, need, p in zip(default_mesh(tb), need_3, periodic))


def _mesh_size(tb: "TightBinding", kpts: Any) -> tuple[int, int, int] | None:
    """Mesh size from ``kpts`` (None → default, (3,) ints → itself); None when kpts is an explicit list."""
    if kpts is None:
        return default_mesh(tb)
    arr = np.asarray(kpts)
    if arr.shape == (3,) and np.issubdtype(arr.dtype, np.integer):
        if np.any(arr < 1):
            raise ValueError(f"k-mesh sizes must be positive integers, got {arr.tolist()}")
        return tuple(int(n) for n in arr)
    return None


def kpoint_mesh(
    tb: "TightBinding", kpts: Any = None, symmetry: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """k-points (nk, 3) fractional and weights (nk,) summing to 1.

    ``kpts``: None (default mesh), a mesh size (n1, n2, n3) → Γ-centred mesh, or explicit k-points (nk, 3) (equal
    weights). With ``symmetry``, a mesh is reduced to irreducible points: by the space group of ``tb.atoms`` via
    spglib when atoms are set (assumes H shares the crystal symmetry), else by time reversal k ↔ -k when H(R) is
    real (exact).
    """
    size = _mesh_size(tb, kpts)
    if size is None:
        k_k3 = np.asarray(kpts, dtype=float)
        if k_k3.ndim != 2 or k_k3.shape[1] != 3:
            raise ValueError(f"kpts must be a mesh size (n1, n2, n3) or k-points (nk, 3), got shape {k_k3.shape}")
        return k_k3, np.full(len(k_k3), 1.0 / len(k_k3))
    grid_k3 = np.stack(np.meshgrid(*[np.arange(n) for n in size], indexing="ij"), axis=-1).reshape(-1, 3)
    if not symmetry:
        rep_k = np.arange(len(grid_k3))
    elif tb.atoms is not None:
        rep_k = _spglib_mapping(tb, size)
    elif not np.any(np.imag(tb.values)):
        rep_k = _time_reversal_mapping(grid_k3, size)
    else:
        rep_k = np.arange(len(grid_k3))
    reps, counts = np.unique(rep_k, return_counts=True)
    k_k3 = grid_k3[reps] / np.array(size)
    k_k3 -= np.round(k_k3)  # into [-1/2, 1/2]
    return k_k3, counts / counts.sum()


def _time_reversal_mapping(grid_k3: np.ndarray, size: Sequence[int]) -> np.ndarray:
    """Index of the representative of each mesh point under k ↔ -k (the smaller flat index)."""
    n_3 = np.array(size)
    minus_k3 = (-grid_k3) % n_3
    flat = np.ravel_multi_index(grid_k3.T, n_3)
    flat_minus = np.ravel_multi_index(minus_k3.T, n_3)
    return np.minimum(flat, flat_minus)


def _spglib_mapping(tb: "TightBinding", size: Sequence[int]) -> np.ndarray:
    """spglib irreducible mapping of the Γ-centred mesh, in our (i, j, k) 'ij' flat order."""
    import spglib

    atoms = tb.atoms
    cell = (atoms.cell.array, atoms.get_scaled_positions(), atoms.numbers)
    with warnings.catch_warnings():  # spglib 2.x warns about its legacy error handling (failure → None)
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            result = spglib.get_ir_reciprocal_mesh(
                list(size), cell, is_shift=[0, 0, 0], is_time_reversal=not np.any(np.imag(tb.values))
            )
        except getattr(getattr(spglib, "error", None), "SpglibError", ()):  # spglib 2.x with exceptions on
            result = None  # (phonopy turns them on for the whole process): same meaning as the legacy None
    if result is None:  # no symmetry found (e.g. a degenerate cell): every mesh point is its own representative
        return np.arange(int(np.prod(size)))
    mapping, grid = result
    n_3 = np.array(size)
    ours = np.ravel_multi_index((grid % n_3).T, n_3)  # spglib's point i is our flat index ours[i]
    rep = np.empty(len(mapping), dtype=np.int64)
    rep[ours] = ours[mapping]
    return rep
