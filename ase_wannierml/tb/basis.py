"""Orbital metadata (``OrbitalTable``) and lattice-vector indexing shared by the tight-binding modules.

The lowest layer of ``ase_wannierml.tb`` besides ``kmesh``: numpy only, imports nothing else from ``tb``, so the
readers/writers (``wannier90.py``) and ``TightBinding`` (``tightbinding.py``) can both build on it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Mapping, Sequence

import numpy as np

from ..orbitals import orbitals_per_atom

if TYPE_CHECKING:  # pragma: no cover
    import ase


@dataclass(frozen=True, eq=False)
class OrbitalTable:
    """Per-orbital metadata, all arrays of length norb.

    ``atom_index`` (norb,) int (-1: not assigned to an atom); ``element`` (norb,) str (``"X"`` if unknown);
    ``l`` (norb,) int (-1 if unknown); ``label`` (norb,) str, Wannier90 names (``pz``, ``dxy``, …; ``""`` if unknown);
    ``centres`` (norb, 3) float, Å; ``layer`` (norb,) int or None.
    """

    atom_index: np.ndarray
    element: np.ndarray
    l: np.ndarray
    label: np.ndarray
    centres: np.ndarray
    layer: np.ndarray | None = None

    def __post_init__(self) -> None:
        conv = {"atom_index": int, "element": str, "l": int, "label": str}
        for name, dtype in conv.items():
            object.__setattr__(self, name, np.asarray(getattr(self, name)).astype(dtype))
        object.__setattr__(self, "centres", np.asarray(self.centres, dtype=float))
        if self.layer is not None:
            object.__setattr__(self, "layer", np.asarray(self.layer).astype(int))
        norb = len(self.atom_index)
        for name in ("element", "l", "label", "layer"):
            arr = getattr(self, name)
            if arr is not None and arr.shape != (norb,):
                raise ValueError(f"OrbitalTable.{name} has shape {arr.shape}, expected ({norb},) like atom_index")
        if self.centres.shape != (norb, 3):
            raise ValueError(f"OrbitalTable.centres has shape {self.centres.shape}, expected ({norb}, 3)")

    @property
    def norb(self) -> int:
        """Number of orbitals."""
        return len(self.atom_index)

    @classmethod
    def unknown(cls, norb: int, centres: np.ndarray | None = None) -> "OrbitalTable":
        """Table for ``norb`` orbitals with no atom, element or label (centres at the origin unless given, Å)."""
        return cls(
            atom_index=np.full(norb, -1),
            element=np.full(norb, "X"),
            l=np.full(norb, -1),
            label=np.full(norb, ""),
            centres=np.zeros((norb, 3)) if centres is None else centres,
        )

    @classmethod
    def from_atoms(cls, atoms: "ase.Atoms", shells: Mapping[str, Sequence[str]]) -> "OrbitalTable":
        """Orbitals in Wannier90 projection order: atoms in order, each with its element's ``shells``.

        ``shells`` = {element: ["s", "p", "pz", ...]}; centres are the atom positions (Å); ``layer`` is copied from
        ``atoms.arrays["layer"]`` when present.
        """
        symbols = atoms.get_chemical_symbols()
        per_atom = orbitals_per_atom(symbols, shells)
        counts = np.array([len(orbs) for orbs in per_atom])
        atom_index = np.repeat(np.arange(len(atoms)), counts)
        flat = [orb for orbs in per_atom for orb in orbs]
        layer = atoms.arrays["layer"][atom_index] if "layer" in atoms.arrays else None
        return cls(
            atom_index=atom_index,
            element=np.array(symbols)[atom_index] if len(atoms) else np.array([], str),
            l=np.array([l for l, _ in flat], dtype=int),
            label=np.array([label for _, label in flat], dtype=str),
            centres=atoms.positions[atom_index],
            layer=layer,
        )

    def groups(self, by: str) -> tuple[list[str], np.ndarray]:
        """Group orbitals for projections: ``by`` in atom/element/orbital/layer → (names, group index (norb,))."""
        if by == "atom":
            keys = np.array([f"{e}{a}" for e, a in zip(self.element, self.atom_index)])
        elif by == "element":
            keys = self.element
        elif by == "orbital":
            keys = self.label
        elif by == "layer":
            if self.layer is None:
                raise ValueError("projection by layer needs OrbitalTable.layer (atoms.arrays['layer'])")
            keys = self.layer.astype(str)
        else:
            raise ValueError(f"unknown projection {by!r}; use 'atom', 'element', 'orbital' or 'layer'")
        if by == "atom" and np.any(self.atom_index < 0):
            raise ValueError("projection by atom needs every orbital assigned to an atom (atom_index >= 0)")
        names, first, index = np.unique(keys, return_index=True, return_inverse=True)
        order = np.argsort(first)  # keep order of first appearance
        rank = np.empty_like(order)
        rank[order] = np.arange(len(order))
        return [str(n) for n in names[order]], rank[index]


def unique_lattice_vectors(R_n3: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distinct rows of an integer (n, 3) array, sorted lexicographically, and the inverse index (n,).

    Same result as ``np.unique(R_n3, axis=0, return_inverse=True)``, via one int64 code per row (much faster)."""
    R_n3 = np.asarray(R_n3).reshape(-1, 3)
    R_r3, index = _lattice_vector_index(R_n3 if R_n3.dtype.kind in "iu" else R_n3.astype(np.int64))
    return R_r3, index.astype(np.int64)


def _lattice_vector_index(R_n3: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distinct lattice vectors (nR, 3) int64, lexicographically sorted, and each row's index (n,) int32.

    One int64 code per row; when the R range is small (always for tight-binding) the distinct codes come from a
    bincount (O(n), no sort), otherwise from np.unique."""
    n = len(R_n3)
    if n == 0:
        return np.zeros((0, 3), np.int64), np.zeros(0, np.int32)
    lo_3 = R_n3.min(axis=0).astype(np.int64)
    span_3 = R_n3.max(axis=0).astype(np.int64) - lo_3 + 1
    if np.prod(span_3, dtype=float) >= 2.0**62:
        raise ValueError(f"lattice vectors span {span_3.tolist()} cells: too large a range to index")
    code = R_n3[:, 0].astype(np.int64)
    code -= lo_3[0]
    for ax in (1, 2):
        code *= span_3[ax]
        code += R_n3[:, ax]
        code -= lo_3[ax]
    total = int(np.prod(span_3, dtype=float))
    if total <= 2**24:
        present = np.flatnonzero(np.bincount(code, minlength=total))
        lut = np.full(total, -1, np.int32 if len(present) < 2**31 else np.int64)
        lut[present] = np.arange(len(present))
        index = lut[code]
    else:
        present, index = np.unique(code, return_inverse=True)
        index = index.ravel().astype(np.int32 if len(present) < 2**31 else np.int64)
    del code
    R_r3 = np.empty((len(present), 3), np.int64)
    rest = present.astype(np.int64)
    for ax in (2, 1, 0):
        R_r3[:, ax] = rest % span_3[ax] + lo_3[ax]
        rest = rest // span_3[ax]
    return R_r3, index
