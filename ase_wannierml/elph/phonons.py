"""Phonons of the model: force constants by ASE's finite-displacement ``Phonons`` (forces of the calculator, its
dispersion term included), frequencies and eigenvectors at Γ, at any q commensurate with a supercell, and along a
band path.

Conventions: frequencies in cm⁻¹ (and eV where named ``_eV``); eigenvectors ``e`` (n_modes, n_atoms, 3), complex,
orthonormal with Σ_a |e_a|² = 1 (mass-weighted: the atomic displacement of mode ν in cell L is
u_a(L) = e_a e^{2πi q·L} / sqrt(M_a), M in amu). The dynamical matrix of a commensurate q is built from the
supercell's force constants Φ (eV/Å², images folded) as
D_ab(q) = (1/N_s) Σ_{L,L'} e^{-2πi q·L} Φ(aL, bL') e^{2πi q·L'} / sqrt(M_a M_b), exact for q commensurate with the
supercell (any force-constant range, because all periodic images move together).

Example::

    from ase_wannierml import WannierMLCalculator
    from ase_wannierml.structures import bilayer
    atoms = bilayer("graphene"); atoms.calc = WannierMLCalculator("graphene-bilayer", dtype=torch.float64)
    freq_cm, e = modes_at_q(atoms, atoms.calc, q=(0, 0, 0))          # Γ, 4 atoms → 12 modes
"""
from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
from ase import Atoms
from ase.phonons import Phonons
from ase.units import _amu, _e, _hbar

#: ħ·sqrt(eV / (Å² amu)) in eV: phonon energy of ω² = 1 eV/(Å² amu)
OMEGA_EV = _hbar * 1e10 / np.sqrt(_e * _amu)
EV_TO_CM = 8065.543937  # cm⁻¹ per eV


@dataclass
class Supercell:
    """A supercell of a primitive cell: ``atoms`` (n_prim · N_s atoms), for each atom its primitive index
    ``prim`` (n,) and primitive lattice vector ``L`` (n, 3) int (position = r_prim + L @ cell, not wrapped), and
    the integer matrix ``P`` (3, 3) with supercell = P @ cell (rows)."""

    atoms: Atoms
    prim: np.ndarray
    L: np.ndarray
    P: np.ndarray

    @property
    def size(self) -> int:
        """Number of primitive cells N_s = |det P|."""
        return int(round(abs(np.linalg.det(self.P))))


def make_supercell(atoms: Atoms, P: Any) -> Supercell:
    """Supercell with cell ``P @ atoms.cell`` (P: (3, 3) integer, or (n1, n2, n3) for a diagonal one), atoms
    ordered by primitive cell then primitive atom; per-atom arrays (e.g. ``layer``) are repeated."""
    P = np.diag(P) if np.ndim(P) == 1 else np.asarray(P)
    if P.shape != (3, 3) or np.any(P != np.round(P)) or abs(np.linalg.det(P)) < 0.5:
        raise ValueError(f"supercell matrix must be a non-singular 3x3 integer matrix, got {P.tolist()}")
    P = np.round(P).astype(int)
    corners = np.array([[i, j, k] for i in (0, 1) for j in (0, 1) for k in (0, 1)]) @ P
    lo, hi = corners.min(axis=0), corners.max(axis=0)
    grid = np.stack(np.meshgrid(*[np.arange(a, b + 1) for a, b in zip(lo, hi)], indexing="ij"), -1).reshape(-1, 3)
    frac = grid @ np.linalg.inv(P)
    inside = np.all((frac > -1e-9) & (frac < 1 - 1e-9), axis=1)
    cells = grid[inside]
    n_s = int(round(abs(np.linalg.det(P))))
    if len(cells) != n_s:
        raise RuntimeError(f"found {len(cells)} lattice points in the supercell, expected {n_s}")
    n = len(atoms)
    L = np.repeat(cells, n, axis=0)
    prim = np.tile(np.arange(n), n_s)
    sc = Atoms(np.array(atoms.get_chemical_symbols())[prim].tolist(),
               positions=atoms.positions[prim] + L @ atoms.cell[:], cell=P @ atoms.cell[:], pbc=atoms.pbc)
    for name, arr in atoms.arrays.items():
        if name not in ("numbers", "positions"):
            sc.arrays[name] = np.asarray(arr)[prim]
    return Supercell(sc, prim, L, P)


def commensurate_supercell(q: Sequence[float], max_entry: int = 4) -> np.ndarray:
    """Smallest in-plane supercell matrix P (3, 3) int (third row (0, 0, 1), entries |P_ij| <= ``max_entry``) with
    q·Pᵀ integer, i.e. q (fractional, q_z = 0) folds onto the supercell's Γ; ValueError if none exists.
    Example: graphene K (1/3, 1/3, 0) → det P = 3 (the √3×√3 cell)."""
    q = np.asarray(q, dtype=float)
    if abs(q[2]) > 1e-12:
        raise ValueError("commensurate_supercell handles in-plane q (q_z = 0) only")
    best = None
    r = range(-max_entry, max_entry + 1)
    for a in r:
        for b in r:
            for c in r:
                for d in r:
                    det = a * d - b * c
                    if det <= 0 or (best is not None and det >= best[0]):
                        continue
                    P = np.array([[a, b, 0], [c, d, 0], [0, 0, 1]])
                    x = q @ P.T
                    if np.abs(x - np.round(x)).max() < 1e-8:
                        best = (det, P)
    if best is None:
        raise ValueError(f"no supercell with entries <= {max_entry} is commensurate with q = {q.tolist()}")
    return best[1]


def force_constants(atoms: Atoms, calc: Any, delta: float = 0.01, workdir: str | None = None) -> np.ndarray:
    """Force constants Φ (3n, 3n) eV/Å² of ``atoms`` with all periodic images moving together (ASE ``Phonons``,
    supercell (1, 1, 1), central differences with step ``delta`` Å, acoustic sum rule imposed), i.e. the
    Γ-point force constants of this cell. ``calc``: an ASE calculator (e.g. ``WannierMLCalculator`` in float64;
    its forces include any dispersion term). Cost: 6n + 1 force calls of ``atoms``."""
    if delta <= 0:
        raise ValueError(f"delta must be > 0 Å, got {delta}")
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        ph = Phonons(atoms.copy(), calc, supercell=(1, 1, 1), delta=delta, name=os.path.join(tmp, "phonon"))
        ph.run()
        ph.read(acoustic=True, symmetrize=3)
        phi = np.array(ph.get_force_constant()[0])
    return 0.5 * (phi + phi.T)


def _masses(atoms: Atoms) -> np.ndarray:
    return np.asarray(atoms.get_masses(), dtype=float)


def dynamical_matrix(sc: Supercell, phi: np.ndarray, q: Sequence[float], masses: np.ndarray) -> np.ndarray:
    """D(q) (3n, 3n) eV/(Å² amu) of the primitive cell from supercell force constants ``phi`` (3n_sc, 3n_sc);
    ``q`` fractional (primitive reciprocal lattice), commensurate with the supercell (ValueError otherwise);
    ``masses`` (n,) amu of the primitive atoms."""
    q = np.asarray(q, dtype=float)
    qsc = q @ sc.P.T
    if np.abs(qsc - np.round(qsc)).max() > 1e-8:
        raise ValueError(f"q = {q.tolist()} is not commensurate with the supercell P = {sc.P.tolist()}")
    n = len(masses)
    phase = np.exp(2j * np.pi * sc.L @ q)                                      # (n_sc,)
    proj = np.zeros((3 * len(sc.prim), 3 * n), dtype=complex)                  # Bloch pattern of each (a, c)
    for s, (a, p) in enumerate(zip(sc.prim, phase)):
        proj[3 * s:3 * s + 3, 3 * a:3 * a + 3] = np.eye(3) * p
    d = proj.conj().T @ phi @ proj / sc.size
    minv = np.repeat(1.0 / np.sqrt(masses), 3)
    d = d * minv[:, None] * minv[None, :]
    return 0.5 * (d + d.conj().T)


def modes_at_q(atoms: Atoms, calc: Any, q: Sequence[float] = (0.0, 0.0, 0.0), supercell: Any = (1, 1, 1),
               delta: float = 0.01, phi: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Phonon frequencies (n_modes,) cm⁻¹ (negative = imaginary) and eigenvectors (n_modes, n_atoms, 3) complex
    (mass-weighted, orthonormal; convention in the module docstring) at ``q`` (fractional), which must be
    commensurate with ``supercell`` (diagonal (n1, n2, n3) or a 3×3 integer matrix). ``phi``: precomputed
    supercell force constants (:func:`force_constants` of ``make_supercell(atoms, supercell).atoms``)."""
    sc = make_supercell(atoms, supercell)
    if phi is None:
        phi = force_constants(sc.atoms, calc, delta)
    d = dynamical_matrix(sc, phi, q, _masses(atoms))
    w2, vec = np.linalg.eigh(d)
    freq = np.sign(w2) * np.sqrt(np.abs(w2)) * OMEGA_EV * EV_TO_CM
    return freq, vec.T.reshape(len(w2), len(atoms), 3)


def phonon_bands(atoms: Atoms, calc: Any, path: Any = None, npoints: int = 100, supercell: Sequence[int] = (6, 6, 1),
                 delta: float = 0.01, workdir: str | None = None):
    """Phonon band structure (ASE ``BandStructure``, energies in eV; × ``EV_TO_CM`` for cm⁻¹) along ``path``
    (default: the cell's standard path) from ASE ``Phonons`` on a ``supercell`` (force constants beyond half the
    supercell are folded: choose it ≥ 2× the model's interaction range for converged bands away from Γ).
    Cost: 6n + 1 force calls of the supercell (n = atoms in ``atoms``)."""
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        ph = Phonons(atoms.copy(), calc, supercell=tuple(supercell), delta=delta, name=os.path.join(tmp, "phonon"))
        ph.run()
        ph.read(acoustic=True, symmetrize=3)
        bandpath = atoms.cell.bandpath(path, npoints=npoints) if not hasattr(path, "kpts") else path
        return ph.get_band_structure(bandpath)


def layer_character(atoms: Atoms, e: np.ndarray) -> dict[str, np.ndarray]:
    """Weights (n_modes,) in [0, 1] of the rigid-layer patterns of a bilayer in each mode ``e`` (n_modes, n, 3):
    ``shear`` (the two layers sliding against each other in-plane, mass-weighted, centre of mass fixed),
    ``breathing`` (same along z), and ``in_plane`` (Σ |e_xy|²). Needs ``atoms.arrays["layer"]`` with 2 layers."""
    layer = np.asarray(atoms.arrays["layer"])
    if set(np.unique(layer).tolist()) != {0, 1}:
        raise ValueError("layer_character needs a bilayer with atoms.arrays['layer'] in {0, 1}")
    m = _masses(atoms)
    m0, m1 = m[layer == 0].sum(), m[layer == 1].sum()
    amp = np.where(layer == 0, 1.0 / m0, -1.0 / m1) * np.sqrt(m)    # rigid relative motion, mass-weighted
    amp /= np.linalg.norm(amp)
    out = {}
    for name, axes in (("shear", (0, 1)), ("breathing", (2,))):
        w = np.zeros(len(e))
        for c in axes:
            w += np.abs(np.einsum("na,a->n", e[:, :, c], amp)) ** 2
        out[name] = w
    out["in_plane"] = (np.abs(e[:, :, :2]) ** 2).sum(axis=(1, 2))
    return out
