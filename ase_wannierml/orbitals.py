"""Orbital shells and their Wannier90 conventions (numpy only; no torch here).

A *shell* names the orbitals one atom carries for one angular momentum ``l``:

- full shells ``"s"`` (l=0), ``"p"`` (l=1), ``"d"`` (l=2);
- partial shells: any single Wannier90 label, e.g. ``"pz"`` (the graphene π orbital) or ``"dz2"``.

Within a full shell, orbitals follow the Wannier90 real-harmonic order (user guide, table "angular functions"):

- l=0: ``s``
- l=1: ``pz, px, py``
- l=2: ``dz2, dxz, dyz, dx2-y2, dxy``

The orbitals of an atom are its shells in the order given (e.g. ``["s", "p"]`` → s, pz, px, py), and atoms follow
their order in ``Atoms`` (Wannier90's projection order). The change of basis to e3nn's real spherical harmonics lives
in a separate (torch) module; :func:`real_harmonics` gives the Wannier90 functions numerically for it.

Example::

    >>> shell_orbitals("p")
    [(1, 'pz'), (1, 'px'), (1, 'py')]
    >>> element_orbitals(["s", "pz"])
    [(0, 's'), (1, 'pz')]
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

#: Wannier90 labels of each angular momentum, in Wannier90 order.
W90_LABELS: dict[int, tuple[str, ...]] = {
    0: ("s",),
    1: ("pz", "px", "py"),
    2: ("dz2", "dxz", "dyz", "dx2-y2", "dxy"),
}
#: Full shell name → angular momentum.
SHELL_L: dict[str, int] = {"s": 0, "p": 1, "d": 2}
#: Every single-orbital label → angular momentum.
LABEL_L: dict[str, int] = {label: l for l, labels in W90_LABELS.items() for label in labels}


def shell_orbitals(shell: str) -> list[tuple[int, str]]:
    """(l, Wannier90 label) of each orbital of one shell (``"s"``, ``"p"``, ``"d"`` or one label like ``"pz"``)."""
    if shell in SHELL_L:
        l = SHELL_L[shell]
        return [(l, label) for label in W90_LABELS[l]]
    if shell in LABEL_L:
        return [(LABEL_L[shell], shell)]
    known = sorted(SHELL_L) + sorted(LABEL_L)
    raise ValueError(f"unknown orbital shell {shell!r}; known shells: {known}")


def element_orbitals(shells: Sequence[str]) -> list[tuple[int, str]]:
    """(l, label) of every orbital of an atom carrying ``shells``, in order; duplicate labels are an error."""
    if isinstance(shells, str):
        shells = [shells]
    out = [orb for shell in shells for orb in shell_orbitals(shell)]
    labels = [label for _, label in out]
    if len(set(labels)) != len(labels):
        raise ValueError(f"shells {list(shells)} repeat an orbital: {labels}")
    return out


def orbitals_per_atom(symbols: Sequence[str], shells: Mapping[str, Sequence[str]]) -> list[list[tuple[int, str]]]:
    """Per atom, its (l, label) list, from ``shells`` = {element: [shell, ...]}; elements missing → ValueError."""
    missing = sorted(set(symbols) - set(shells))
    if missing:
        raise ValueError(f"no orbital shells given for elements {missing} (shells given for {sorted(shells)})")
    cache = {element: element_orbitals(s) for element, s in shells.items()}
    return [cache[symbol] for symbol in symbols]


def real_harmonics(l: int, xyz_n3: np.ndarray) -> np.ndarray:
    """Wannier90 real spherical harmonics of degree ``l`` (0–2) at unit vectors.

    ``xyz_n3`` (n, 3) unit vectors → (n, 2l+1) values, columns in Wannier90 order, orthonormal on the unit sphere
    (∫ Y_a Y_b dΩ = δ_ab).
    """
    xyz_n3 = np.asarray(xyz_n3, dtype=float)
    if xyz_n3.ndim != 2 or xyz_n3.shape[1] != 3:
        raise ValueError(f"xyz must have shape (n, 3), got {xyz_n3.shape}")
    x, y, z = xyz_n3.T
    if l == 0:
        return np.full((len(xyz_n3), 1), np.sqrt(1 / (4 * np.pi)))
    if l == 1:
        return np.sqrt(3 / (4 * np.pi)) * np.stack([z, x, y], axis=1)
    if l == 2:
        c = np.sqrt(15 / (4 * np.pi))
        return np.stack(
            [
                np.sqrt(5 / (16 * np.pi)) * (3 * z**2 - 1),
                c * x * z,
                c * y * z,
                c / 2 * (x**2 - y**2),
                c * x * y,
            ],
            axis=1,
        )
    raise ValueError(f"real harmonics implemented for l = 0, 1, 2; got l = {l}")
