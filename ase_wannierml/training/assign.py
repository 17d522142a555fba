"""Assign Wannier functions to atoms and orbital shells, and check the Wannier gauge where possible.

Supported gauge (what the model can learn, because its Hamiltonian blocks rotate with Wigner D matrices):
projection-only Wannier functions (``num_iter = 0``) onto the standard Wannier90 real spherical harmonics in the
*global* frame (no ``z=``/``x=`` local axes), disentanglement only where the manifold is entangled. Wannier90
then lists the functions atom by atom in the order of the atoms, and within an atom in the order of the
projections, which must be the order of the element's shells in the model's orbital basis (e.g. ``Mo: d`` →
dz2, dxz, dyz, dx2-y2, dxy). Maximally localised functions (``num_iter > 0``) mix orbitals in a
configuration-dependent way; they are accepted with a warning (for a single pz shell both gauges coincide).

Checks done here: every centre lies within ``max_distance`` of an atom; every atom gets exactly its element's
orbital count; on frames with crystal symmetry, onsite blocks of symmetry-equivalent atoms obey
h_b = M h_a Mᵀ with M the real-harmonic representation of the symmetry operation (a local-frame or mixed gauge
fails this); H(R) is real (projection-only Wannier functions of a time-reversal-symmetric system).

Units: Å, eV. Indices in messages are 1-based, as in Wannier90 files.
"""
from __future__ import annotations

import re
import warnings
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
from ase import Atoms

from ase_wannierml.orbitals import W90_LABELS, orbitals_per_atom, real_harmonics
from ase_wannierml.tb.wannier90 import nearest_atoms


_NUM_ITER = re.compile(r"(?im)^\s*num_iter\s*[=:]\s*(\d+)")


class FrameError(ValueError):
    """A frame cannot be used for training; the message names the frame and the problem."""


@dataclass(frozen=True)
class WannierAssignment:
    """Which atom and orbital slot each Wannier function (WF) belongs to.

    atom: (num_wann,) int, atom index of each WF.
    slot: (num_wann,) int, index of the WF among its atom's orbitals (model / Wannier90 order).
    offset: (num_wann, 3) int, lattice vector with centre ≈ positions[atom] + offset @ cell; zero along axes on
        which the Wannier functions are not periodic (k-mesh of 1 there, e.g. the vacuum axis of a slab).
    distance: (num_wann,) Å, distance of each centre from its atom's image.
    wf_index: (n_atoms, max_orb) int, WF index of each (atom, slot), -1 for padding.
    """

    atom: np.ndarray
    slot: np.ndarray
    offset: np.ndarray
    distance: np.ndarray
    wf_index: np.ndarray


def assign_wannier_functions(atoms: Atoms, centres: np.ndarray, shells: Mapping[str, Sequence[str]],
                             periodic_axes: Sequence[bool] | None = None, max_distance: float = 0.7,
                             frame: str = "?") -> WannierAssignment:
    """Map each Wannier centre to its atom (nearest periodic image) and orbital slot.

    atoms: the frame's structure (positions Å); centres: (num_wann, 3) Å, as written by Wannier90;
    shells: model orbital basis {element: [shell, ...]}; periodic_axes: axes on which Wannier functions repeat
    with the lattice (default: ``atoms.pbc``); offsets along other axes are set to 0 (pitfall 4 of
    ``shared/dft/graphene``: centres may come out shifted by c along the vacuum axis).
    Raises ``FrameError`` naming the frame, the Wannier function and the atom on any mismatch.
    """
    centres = np.asarray(centres, dtype=float)
    n_orb = [len(o) for o in _orbitals(atoms, shells, frame)]
    if centres.ndim != 2 or centres.shape[1] != 3:
        raise FrameError(f"frame {frame}: Wannier centres must have shape (num_wann, 3), got {centres.shape}")
    if len(centres) != sum(n_orb):
        raise FrameError(f"frame {frame}: {len(centres)} Wannier functions, but the orbital basis {dict(shells)} "
                         f"gives {sum(n_orb)} for its {len(atoms)} atoms ({atoms.get_chemical_formula()})")
    periodic = np.asarray(atoms.pbc if periodic_axes is None else periodic_axes, dtype=bool)
    atom, shift, dist = _nearest_images(atoms, centres)
    far = np.flatnonzero(dist > max_distance)
    if len(far):
        w = far[np.argmax(dist[far])]
        raise FrameError(f"frame {frame}: Wannier function {w + 1} (centre {np.round(centres[w], 3).tolist()} Å) "
                         f"is {dist[w]:.3f} Å from the nearest atom ({atoms.symbols[atom[w]]} {atom[w] + 1}); "
                         f"limit {max_distance} Å ({len(far)} function(s) too far)")
    wf_index = np.full((len(atoms), max(n_orb, default=0)), -1, dtype=np.int64)
    slot = np.zeros(len(centres), dtype=np.int64)
    for a in range(len(atoms)):
        mine = np.flatnonzero(atom == a)
        if len(mine) != n_orb[a]:
            raise FrameError(f"frame {frame}: atom {a + 1} ({atoms.symbols[a]}) has {len(mine)} Wannier functions "
                             f"{(mine + 1).tolist()}, but the orbital basis gives {atoms.symbols[a]} {n_orb[a]}")
        slot[mine] = np.arange(len(mine))
        wf_index[a, :len(mine)] = mine
    offset = np.where(periodic[None, :], shift, 0)
    return WannierAssignment(atom=atom, slot=slot, offset=offset, distance=dist, wf_index=wf_index)


def _orbitals(atoms: Atoms, shells: Mapping[str, Sequence[str]], frame: str) -> list[list[tuple[int, str]]]:
    try:
        return orbitals_per_atom(list(atoms.get_chemical_symbols()), shells)
    except ValueError as err:
        raise FrameError(f"frame {frame}: {err}") from None


def _nearest_images(atoms: Atoms, centres: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Nearest atom of each centre over periodic images (wrapping all 3 axes, as Wannier90 centres need):
    (atom (nw,), lattice shift (nw, 3) int with centre ≈ r_atom + shift @ cell, distance (nw,) Å)."""
    atom, dist = nearest_atoms(centres, atoms)
    frac = atoms.cell.scaled_positions(centres - atoms.positions[atom]) if len(centres) else np.zeros((0, 3))
    return atom, np.round(frac).astype(np.int64), dist


def shell_rotation(orbitals: Sequence[tuple[int, str]], rotation: np.ndarray) -> np.ndarray | None:
    """Matrix M with Y(Qᵀx) = Y(x) M for one atom's orbitals, or ``None`` if a partial shell is not closed.

    orbitals: the atom's (l, Wannier90 label) list; rotation: (3, 3) Cartesian orthogonal Q (may be improper).
    Onsite blocks of atoms a → b related by the symmetry operation x ↦ Qx + t obey h_b = M h_a Mᵀ.
    """
    rng = np.random.default_rng(7)
    x = rng.normal(size=(64, 3))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    n = len(orbitals)
    out = np.zeros((n, n))
    labels_by_l: dict[int, list[int]] = {}
    for i, (l, _) in enumerate(orbitals):
        labels_by_l.setdefault(l, []).append(i)
    for l, idx in labels_by_l.items():
        full = np.linalg.lstsq(real_harmonics(l, x), real_harmonics(l, x @ rotation), rcond=None)[0]
        cols = [W90_LABELS[l].index(orbitals[i][1]) for i in idx]
        sub = full[np.ix_(cols, cols)]
        if not np.allclose(sub @ sub.T, np.eye(len(cols)), atol=1e-8):
            return None
        out[np.ix_(idx, idx)] = sub
    return out


def onsite_symmetry_violation(atoms: Atoms, onsite: Sequence[np.ndarray],
                              orbitals: Sequence[Sequence[tuple[int, str]]],
                              symprec: float = 1e-3) -> tuple[float, str]:
    """Largest |h_b − M h_a Mᵀ| (eV) over the crystal's symmetry operations, and where it occurs.

    onsite: per atom its (n_orb, n_orb) onsite block (eV); orbitals: per atom its (l, label) list.
    Returns (0.0, "") for frames without symmetry (only the identity) or without spglib symmetry found.
    """
    import spglib

    cell = (np.asarray(atoms.cell.array), atoms.get_scaled_positions(wrap=True), atoms.numbers)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)   # spglib's notice about its error handling
        sym = spglib.get_symmetry(cell, symprec=symprec)
    if sym is None:
        return 0.0, ""
    lat = np.asarray(atoms.cell.array)
    frac = cell[1]
    worst, where = 0.0, ""
    for w_rot, trans in zip(sym["rotations"], sym["translations"]):
        q = lat.T @ w_rot @ np.linalg.inv(lat.T)
        if np.allclose(q, np.eye(3)):
            continue
        mapped = frac @ w_rot.T + trans
        diff = mapped[:, None, :] - frac[None, :, :]
        target = np.argmin(np.linalg.norm((diff - np.round(diff)) @ lat, axis=-1), axis=1)
        for a, b in enumerate(target):
            m = shell_rotation(orbitals[a], q)
            if m is None:
                continue
            err = float(np.abs(onsite[b] - m @ onsite[a] @ m.T).max())
            if err > worst:
                worst, where = err, f"atoms {a + 1} → {b + 1}"
    return worst, where


def find_num_iter(meta: object) -> int | None:
    """The Wannier90 ``num_iter`` recorded in a frame's ``meta.json``: a ``num_iter`` key anywhere, or a
    ``num_iter = N`` line in a stored ``.win`` text (None if absent)."""
    if isinstance(meta, str):
        match = _NUM_ITER.search(meta)
        return int(match.group(1)) if match else None
    values = meta.items() if isinstance(meta, dict) else enumerate(meta) if isinstance(meta, list) else []
    for key, value in values:
        if key == "num_iter" and isinstance(value, int):
            return value
        found = find_num_iter(value)
        if found is not None:
            return found
    return None
