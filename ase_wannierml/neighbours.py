"""Checked neighbour search: structures are validated before any native code sees them.

vesin's cell lists crash the interpreter (SIGFPE) or run for minutes on inputs a user can easily make: a degenerate
cell (a1 = a2), an atom far away along a non-periodic direction (1e6 Å), NaN positions; and ASE's 2D cells (e.g.
``ase.build.graphene()``: c = 0 with pbc (T, T, F)) need a third vector. :func:`check_structure` refuses the bad
inputs with a ``ValueError`` naming the problem; :func:`neighbour_list` then searches on a copy of the positions
that is

* wrapped into the cell along periodic axes (float64), the returned integer shifts being converted back so that
  ``r_j + S @ cell - r_i`` holds for the positions *as given*;
* compressed along non-periodic directions: gaps wider than the cut-off between groups of atoms are shortened to
  the cut-off + 1 Å. Atoms of different groups can never be neighbours, so pairs, shifts and distances are exactly
  those of the original positions, but the search box stays small;
* in a box whose non-periodic vectors are replaced by orthonormal ones spanning the vacuum directions (c = 0 is
  fine).

:func:`model_positions` gives positions for float32 models: the same translation of every compressed group (one
lattice translation plus group offsets along vacuum directions; none for structures inside the cell near
the origin), so relative vectors, and with them energies,
forces, stress and H, are unchanged while the numbers stay small (a rigid shift of 1e6 Å no longer costs float32
precision).

Units: Å.
"""
from __future__ import annotations

import numpy as np

__all__ = ["check_structure", "model_positions", "neighbour_list", "search_geometry"]

#: Relative volume |det| / Π|a_i| of the periodic lattice vectors below which a cell counts as degenerate.
DEGENERATE_RELATIVE_VOLUME = 1e-6
#: Along vacuum directions the model positions are moved by whole multiples of this (Å; a power of two, so the
#: subtraction is exact): structures within ±1 km of the origin keep their coordinates bit for bit.
VACUUM_PERIOD = 1024.0
#: Refuse cells so small for their atoms that every atom would have more neighbours than this within the cut-off.
MAX_NEIGHBOURS_PER_ATOM = 100_000


def _as_arrays(positions, cell, pbc) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    pos = np.asarray(positions, dtype=float)
    if pos.ndim != 2 or pos.shape[1] != 3:
        raise ValueError(f"positions must have shape (n_atoms, 3), got {pos.shape}")
    cell = np.asarray(cell, dtype=float).reshape(3, 3)
    pbc = np.broadcast_to(np.asarray(pbc, dtype=bool), (3,)).copy()
    return pos, cell, pbc


def check_structure(positions, cell, pbc, cutoff: float | None = None) -> None:
    """Raise ``ValueError`` naming the problem for structures the neighbour search cannot handle.

    Checked: finite positions (Å) and cell; every periodic axis has a non-zero cell vector; the periodic vectors
    are linearly independent (relative volume > ``DEGENERATE_RELATIVE_VOLUME``); with ``cutoff`` (Å), the
    periodic cell is not so small that each atom would have more than ``MAX_NEIGHBOURS_PER_ATOM`` neighbours.
    """
    pos, cell, pbc = _as_arrays(positions, cell, pbc)
    bad = np.flatnonzero(~np.isfinite(pos).all(axis=1))
    if len(bad):
        raise ValueError(f"atom {bad[0]} has a non-finite position {pos[bad[0]].tolist()} Å "
                         f"({len(bad)} atom(s) with NaN/inf coordinates)")
    if not np.isfinite(cell).all():
        raise ValueError(f"the cell has non-finite entries: {cell.tolist()}")
    lengths = np.linalg.norm(cell, axis=1)
    for a in np.flatnonzero(pbc):
        if lengths[a] == 0.0:
            raise ValueError(f"axis {a} is periodic but its cell vector has zero length; set the cell "
                             f"(atoms.cell) or make the axis non-periodic (atoms.pbc)")
    periodic = cell[pbc]
    if len(periodic) > 1:
        gram = periodic @ periodic.T
        rel = np.sqrt(max(np.linalg.det(gram), 0.0)) / np.prod(lengths[pbc])
        if rel < DEGENERATE_RELATIVE_VOLUME:
            axes = np.flatnonzero(pbc).tolist()
            raise ValueError(f"degenerate cell: the periodic cell vectors {axes} are linearly dependent "
                             f"(relative volume {rel:.1e}); cell = {np.round(cell, 6).tolist()} Å")
    if cutoff is not None and pbc.any() and len(pos):
        k = int(pbc.sum())
        measure = np.sqrt(max(np.linalg.det(periodic @ periodic.T), 0.0))   # length, area or volume
        ball = {1: 2.0 * cutoff, 2: np.pi * cutoff**2, 3: 4.0 / 3.0 * np.pi * cutoff**3}[k]
        estimate = len(pos) * ball / measure
        if estimate > MAX_NEIGHBOURS_PER_ATOM:
            raise ValueError(f"the periodic cell is far too small for {len(pos)} atoms: about {estimate:.2g} "
                             f"neighbours per atom within {cutoff} Å (periodic images overlap); check atoms.cell")


def search_geometry(positions, cell, pbc, cutoff: float, keep_first: bool = False
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(search positions (n, 3), search cell (3, 3), image offsets n_i (n, 3) int64, group offsets (n, 3)) in Å.

    search position = r_i − n_i @ cell + group offset; periodic rows of the search cell are the given ones, the
    others an orthonormal basis of the vacuum directions scaled to cover the (compressed) atoms. Group offsets move
    the lowest group along each vacuum direction to 0, or with ``keep_first`` by whole ``VACUUM_PERIOD`` s only
    (so structures at usual coordinates are not moved at all).
    """
    pos, cell, pbc = _as_arrays(positions, cell, pbc)
    n = len(pos)
    periodic = cell[pbc]
    # orthonormal basis of the directions not spanned by the periodic vectors
    if len(periodic):
        _, s, vt = np.linalg.svd(periodic, full_matrices=True)
        vacuum = vt[len(periodic):]
    else:
        vacuum = np.eye(3)
    offsets = np.zeros((n, 3))
    coords = pos @ vacuum.T                                    # (n, n_vacuum) coordinates along vacuum directions
    gap = float(cutoff) + 1.0
    extent = np.zeros(len(vacuum))
    for v in range(len(vacuum)):
        if n == 0:
            continue
        x = coords[:, v]
        order = np.argsort(x, kind="stable")
        steps = np.diff(x[order])
        new = np.concatenate([[0.0], np.cumsum(np.minimum(steps, gap))])
        delta = np.empty(n)
        delta[order] = new - (x[order] - x[order[0]])          # per-atom shift along this direction (0 for the
        if not keep_first:                                     # lowest group)
            delta -= x[order[0]]                               # lowest atom at 0
        else:                                                  # whole "virtual periods": 0 for usual coordinates
            delta -= np.floor(x[order[0]] / VACUUM_PERIOD) * VACUUM_PERIOD
        offsets += delta[:, None] * vacuum[v][None, :]
        extent[v] = new[-1]
    search_cell = np.zeros((3, 3))
    search_cell[pbc] = periodic
    search_cell[~pbc] = vacuum * (extent + gap)[:, None]
    shifted = pos + offsets
    image = np.zeros((n, 3), dtype=np.int64)
    if pbc.any():
        frac = np.linalg.solve(search_cell.T, shifted.T).T
        image[:, pbc] = np.floor(frac[:, pbc]).astype(np.int64)
        frac[:, pbc] -= image[:, pbc]
        shifted = frac @ search_cell
    return shifted, search_cell, image, offsets


def neighbour_list(positions, cell, pbc, cutoff: float, full: bool, quantities: str = "ijSd"):
    """Pairs within ``cutoff`` (Å) for positions/cell as given: i, j (n,) int64, integer shifts S (n, 3) int64 with
    ``|r_j + S @ cell - r_i| = d < cutoff`` and distances d (n,) Å. ``full=True`` lists both orientations.

    The structure is checked first (:func:`check_structure`, ``ValueError`` naming the problem). ``quantities``:
    "ijSd" (default) or "ijS".
    """
    import vesin

    pos, cell, pbc = _as_arrays(positions, cell, pbc)
    check_structure(pos, cell, pbc, cutoff)
    search_pos, search_cell, image, _ = search_geometry(pos, cell, pbc, cutoff)
    nl = vesin.NeighborList(cutoff=float(cutoff), full_list=full, sorted=full)
    i, j, s, d = nl.compute(search_pos, search_cell, pbc, quantities="ijSd")
    i, j = i.astype(np.int64), j.astype(np.int64)
    s = s.astype(np.int64) + image[i] - image[j]               # shifts for the positions as given
    s[:, ~pbc] = 0
    return (i, j, s, d) if quantities == "ijSd" else (i, j, s)


def model_positions(positions, cell, pbc, cutoff: float) -> np.ndarray:
    """Positions (n, 3) Å equal to the given ones up to one lattice translation of the whole structure and rigid
    shifts, along vacuum directions, of groups of atoms farther than ``cutoff`` apart: every vector
    r_j + S @ cell − r_i of a pair within ``cutoff`` is unchanged, but the numbers are small (float32-safe)."""
    pos, cell, pbc = _as_arrays(positions, cell, pbc)
    if len(pos) == 0:
        return pos.copy()
    _, search_cell, _, offsets = search_geometry(pos, cell, pbc, cutoff, keep_first=True)
    moved = pos + offsets
    if pbc.any():
        frac = np.linalg.solve(search_cell.T, moved.mean(axis=0))
        lattice = np.where(pbc, np.floor(frac), 0.0)
        moved = moved - lattice @ search_cell
    return moved
