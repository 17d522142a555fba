"""Map a frame's Wannier90 H_mn(R) onto the model's Hamiltonian pair list, and reference bands for the band loss.

The model predicts one block per *unordered* atom pair listed in the graph: pair p = (i, j, shift S, category),
rows = orbitals of atom i in the home cell, columns = orbitals of atom j at r_j + S @ cell (Wannier90 order within
shells). Wannier90 instead indexes by Wannier function (WF) and the lattice vector R of the WF's *home cell*, and a
WF centre may sit in another periodic image than its atom (centre_m = r_atom(m) + c_m @ cell, ``assign.py``). So

    block_p[slot(m), slot(n)] = H_mn(R)   with   (atom(m), atom(n), S) = (i, j, R + c_n − c_m).

The H(R) comes from ``TightBinding.from_wannier90`` with Wannier90's Wigner–Seitz shifts applied (``tb/wsvec.py``),
so targets, reference bands and the neutrality level all see the Hamiltonian Wannier90 itself interpolates.
Elements of the pair list that the file does not give, or gives only as part of a hopping split over several R
(degenerate R or equidistant images: ``TightBinding.wannier_weight`` < 1), are masked out, as is zero padding past an
atom's orbitals.

Energy zero: targets are H − E_0·1 (E_0 subtracted from onsite diagonals), so the model learns energies relative to
E_0 and its ``fermi_level`` is 0 by convention. E_0 is the frame's DFT Fermi level (``data.energy_zero:
dft_fermi``) or the T = 0 charge-neutrality level of the frame's own Wannier Hamiltonian on a dense k-grid
(``neutrality``, :func:`neutrality_level`). For a semimetal such as graphene the DFT Fermi level of a smeared
calculation (Marzari–Vanderbilt 0.27 eV, 15×15 k) sits −0.1…+0.3 eV away from the neutrality point of the very same
bands, depending on strain (an electron–hole asymmetric DOS under a broad smearing): a frame-to-frame offset that no
local model can predict, which shows up as onsite errors and rigid band shifts.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .assign import FrameError, WannierAssignment


@dataclass(frozen=True)
class HamiltonianTarget:
    """Target blocks on the model's pair list.

    blocks: (n_pairs, max_orb, max_orb) float, eV, relative to E_F on onsite diagonals.
    mask: (n_pairs, max_orb, max_orb) bool, True where the element is known.
    max_imag: eV, largest |Im H_mn(R)| in the file (projection-only gauge: ~0).
    max_outside: eV, largest |H_mn(R)| (off-diagonal) that falls outside the pair list (model cut-off).
    coverage: fraction of Σ|H|² (off-site elements) that the pair list carries.
    """

    blocks: np.ndarray
    mask: np.ndarray
    max_imag: float
    max_outside: float
    coverage: float


def _keys(a: np.ndarray, b: np.ndarray, s: np.ndarray, n_atoms: int, smax: int) -> np.ndarray:
    span = 2 * smax + 1
    code = ((s[:, 0] + smax) * span + (s[:, 1] + smax)) * span + (s[:, 2] + smax)
    return (code * n_atoms + a) * n_atoms + b


def _lookup(table: np.ndarray, order: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """Index into the unsorted key ``table`` of each key (-1 where absent)."""
    if len(table) == 0:
        return np.full(len(keys), -1)
    pos = np.minimum(np.searchsorted(table[order], keys), len(table) - 1)
    return np.where(table[order][pos] == keys, order[pos], -1)


def hamiltonian_targets(assignment: WannierAssignment, R: np.ndarray, rows: np.ndarray, cols: np.ndarray,
                        values: np.ndarray, pair_i: np.ndarray, pair_j: np.ndarray, pair_shift: np.ndarray,
                        n_orb: np.ndarray, max_orb: int, energy_zero: float = 0.0,
                        degeneracy: np.ndarray | None = None, frame: str = "?") -> HamiltonianTarget:
    """Target blocks for the pair list (pair_i, pair_j (n_pairs,), pair_shift (n_pairs, 3) int).

    R (nnz, 3), rows, cols (nnz,) 0-based WF indices, values (nnz,) eV: the Wannier90 H(R) (already divided by the
    Wigner–Seitz degeneracy); degeneracy: (nnz,) int weights (elements with > 1 are masked); n_orb: (n_atoms,)
    orbital count of each atom; max_orb: block size (the model's largest orbital count); energy_zero: eV,
    subtracted from onsite diagonals.
    """
    R = np.asarray(R, dtype=np.int64).reshape(-1, 3)
    values = np.asarray(values)
    max_imag = float(np.abs(values.imag).max()) if np.iscomplexobj(values) and len(values) else 0.0
    values = values.real.astype(float)
    n_atoms = len(n_orb)
    pair_i, pair_j = np.asarray(pair_i, np.int64), np.asarray(pair_j, np.int64)
    pair_shift = np.asarray(pair_shift, np.int64).reshape(-1, 3)
    n_pairs = len(pair_i)
    am, an = assignment.atom[rows], assignment.atom[cols]
    sm, sn = assignment.slot[rows], assignment.slot[cols]
    shift = R + assignment.offset[cols] - assignment.offset[rows]
    smax = int(max(np.abs(shift).max(initial=0), np.abs(pair_shift).max(initial=0)))
    table = _keys(pair_i, pair_j, pair_shift, n_atoms, smax)
    if len(np.unique(table)) != n_pairs:
        raise FrameError(f"frame {frame}: the model's Hamiltonian pair list repeats a pair")
    order = np.argsort(table)
    direct = _lookup(table, order, _keys(am, an, shift, n_atoms, smax))
    reverse = _lookup(table, order, _keys(an, am, -shift, n_atoms, smax))
    blocks = np.zeros((n_pairs, max_orb, max_orb))
    known = np.zeros((n_pairs, max_orb, max_orb), dtype=bool)
    usable = np.ones(len(values), dtype=bool) if degeneracy is None else np.asarray(degeneracy) <= 1
    sel = (reverse >= 0) & usable            # fill from the transposed partner first ...
    blocks[reverse[sel], sn[sel], sm[sel]] = values[sel]
    known[reverse[sel], sn[sel], sm[sel]] = True
    sel = (direct >= 0) & usable             # ... so the element's own listing wins where both exist
    blocks[direct[sel], sm[sel], sn[sel]] = values[sel]
    known[direct[sel], sm[sel], sn[sel]] = True
    onsite = np.flatnonzero((pair_i == pair_j) & np.all(pair_shift == 0, axis=1))
    diag = np.arange(max_orb)
    blocks[onsite[:, None], diag[None, :], diag[None, :]] -= energy_zero
    valid = (diag[None, :] < np.asarray(n_orb)[pair_i][:, None])[:, :, None] & \
            (diag[None, :] < np.asarray(n_orb)[pair_j][:, None])[:, None, :]
    mask = known & valid
    blocks[~mask] = 0.0
    offsite = ~((am == an) & np.all(shift == 0, axis=1))
    outside = offsite & (direct < 0) & (reverse < 0)
    total = float(np.sum(values[offsite] ** 2))
    return HamiltonianTarget(
        blocks=blocks, mask=mask, max_imag=max_imag,
        max_outside=float(np.abs(values[outside]).max(initial=0.0)),
        coverage=1.0 if total == 0 else 1.0 - float(np.sum(values[outside] ** 2)) / total,
    )


def wannier_periodic_axes(R: np.ndarray, pbc: np.ndarray) -> np.ndarray:
    """Axes along which the Wannier functions repeat with the lattice: periodic and with some R ≠ 0 there.

    A k-mesh of 1 along an axis (the vacuum axis of a slab) gives only R = 0 there, and the centres are then
    defined only modulo that lattice vector.
    """
    R = np.asarray(R).reshape(-1, 3)
    return np.asarray(pbc, dtype=bool) & np.any(R != 0, axis=0)


def band_kpoints(periodic: np.ndarray, n: int) -> np.ndarray:
    """Γ-centred n×n(×n) grid (fractional, (nk, 3)) over the periodic axes; n a multiple of 3 contains K."""
    axes = [np.arange(n) / n if p else np.zeros(1) for p in np.asarray(periodic, dtype=bool)]
    grid = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1)
    return grid.reshape(-1, 3)


def neutrality_level(R: np.ndarray, rows: np.ndarray, cols: np.ndarray, values: np.ndarray, norb: int,
                     periodic: np.ndarray, electrons: float, n: int = 48) -> float:
    """T = 0 Fermi level (eV, same zero as H) of ``electrons`` electrons per cell (spin-degenerate bands) on a
    Γ-centred n×n grid: midway between the highest occupied and lowest empty eigenvalue over the grid."""
    e = np.sort(reference_bands(R, rows, cols, values, norb, band_kpoints(periodic, n)).ravel())
    n_occ = int(round(electrons / 2.0 * len(e) / norb))
    n_occ = min(max(n_occ, 1), len(e) - 1)
    return float(0.5 * (e[n_occ - 1] + e[n_occ]))


def reference_bands(R: np.ndarray, rows: np.ndarray, cols: np.ndarray, values: np.ndarray, norb: int,
                    kpts: np.ndarray, energy_zero: float = 0.0) -> np.ndarray:
    """Eigenvalues (nk, norb) in eV relative to ``energy_zero`` of the full Wannier90 H at ``kpts`` (fractional),
    through ``TightBinding`` (pass the elements of ``TightBinding.from_wannier90``: Wigner–Seitz shifts applied;
    (H + H†)/2 is taken so a file's print-precision asymmetry cannot stop the solver)."""
    from ase_wannierml.tb.tightbinding import OrbitalTable, TightBinding

    tb = TightBinding(np.eye(3), R, rows, cols, values, OrbitalTable.unknown(norb), check_hermitian=False)
    return tb.hermitize().eigenvalues(np.asarray(kpts, dtype=float).reshape(-1, 3)) - energy_zero
