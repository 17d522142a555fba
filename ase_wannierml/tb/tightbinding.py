"""``TightBinding``: a numpy value object for a Wannier tight-binding Hamiltonian H(R) (eV) plus orbital metadata.

Storage (see DEVELOPING.md, "Contract: TightBinding storage"): COO triplets ``R (nnz, 3)``, ``rows``, ``cols``,
``values`` with element = H_{rows, cols}(R) = <rows, 0|H|cols, R> (Wannier90), and

    H(k) = Σ_R exp(+2πi k·R) H(R)        (k fractional; orbital positions do not enter the phase).

Example (graphene pz, nearest neighbour, t = -2.7 eV)::

    >>> import numpy as np
    >>> cell = [[2.46, 0, 0], [-1.23, 2.130422, 0], [0, 0, 20]]
    >>> R = [[0, 0, 0], [0, 0, 0], [-1, 0, 0], [1, 0, 0], [0, -1, 0], [0, 1, 0]]
    >>> tb = TightBinding(cell, R, [0, 1, 0, 1, 0, 1], [1, 0, 1, 0, 1, 0], [-2.7] * 6,
    ...                   OrbitalTable.unknown(2), pbc=(True, True, False))
    >>> tb.eigenvalues([[0, 0, 0]]).round(6).tolist()
    [[-8.1, 8.1]]
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np
import scipy.sparse as sp

from ..orbitals import orbitals_per_atom

if TYPE_CHECKING:  # pragma: no cover
    import ase

HERMITIAN_TOL = 1e-6  # eV
_CHUNK_ELEMENTS = 2**23  # complex entries per dense H(k) batch (128 MB)


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


def _as_kpts(kpts: Any) -> np.ndarray:
    """k-points (nk, 3) fractional; a single (3,) point is an error here (use [k])."""
    k_k3 = np.asarray(kpts, dtype=float)
    if k_k3.ndim != 2 or k_k3.shape[1] != 3:
        raise ValueError(f"kpts must have shape (nk, 3) in fractional coordinates, got shape {k_k3.shape}")
    return k_k3


def unique_lattice_vectors(R_n3: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distinct rows of an integer (n, 3) array, sorted lexicographically, and the inverse index (n,).

    Same result as ``np.unique(R_n3, axis=0, return_inverse=True)``, via one int64 key (much faster)."""
    R_n3 = np.asarray(R_n3, dtype=np.int64).reshape(-1, 3)
    if len(R_n3) == 0:
        return np.zeros((0, 3), np.int64), np.zeros(0, np.int64)
    rmax_3 = np.abs(R_n3).max(axis=0)
    key_n = _encode(R_n3, np.zeros(len(R_n3), np.int64), np.zeros(len(R_n3), np.int64), rmax_3, 1)
    _, first, inverse = np.unique(key_n, return_index=True, return_inverse=True)
    return R_n3[first], inverse.ravel()


def _encode(R_n3: np.ndarray, rows: np.ndarray, cols: np.ndarray, rmax_3: np.ndarray, norb: int) -> np.ndarray:
    """One int64 key per (R, row, col), sorting by R, then row, then col; R within ±rmax_3."""
    span_3 = 2 * rmax_3 + 1
    key = (R_n3[:, 0] + rmax_3[0]) * span_3[1] + (R_n3[:, 1] + rmax_3[1])
    key = key * span_3[2] + (R_n3[:, 2] + rmax_3[2])
    return (key * norb + rows) * norb + cols


class TightBinding:
    """Sparse tight-binding Hamiltonian H(R) in eV with orbital metadata (see the module docstring).

    Duplicate (R, row, col) entries are summed; the constructor checks H(-R) = H(R)† to 1e-6 eV (missing partners
    count as zero) unless ``check_hermitian=False``. ``degeneracy`` maps an R tuple to its Wannier90 Wigner–Seitz
    weight: it only matters for writing ``_hr.dat`` (values here are already divided by it).
    """

    def __init__(
        self,
        cell: Any,
        R: Any,
        rows: Any,
        cols: Any,
        values: Any,
        orbitals: OrbitalTable,
        pbc: Sequence[bool] = (True, True, True),
        atoms: "ase.Atoms | None" = None,
        num_electrons: float | None = None,
        fermi_level: float | None = None,
        check_hermitian: bool = True,
        degeneracy: Mapping[tuple[int, int, int], int] | None = None,
    ) -> None:
        self.cell = np.array(cell, dtype=float)
        self.pbc = np.array(np.broadcast_to(np.asarray(pbc, dtype=bool), (3,)))
        if self.cell.shape != (3, 3):
            raise ValueError(f"cell must be (3, 3) Å with lattice vectors as rows, got shape {self.cell.shape}")
        if not isinstance(orbitals, OrbitalTable):
            raise ValueError(f"orbitals must be an OrbitalTable, got {type(orbitals).__name__}")
        self.orbitals = orbitals
        self.atoms = atoms
        self.num_electrons = None if num_electrons is None else float(num_electrons)
        self.fermi_energy = None if fermi_level is None else float(fermi_level)
        self.degeneracy = {tuple(int(x) for x in r): int(n) for r, n in (degeneracy or {}).items()}
        self._store(R, rows, cols, values)
        if check_hermitian:
            self.check_hermitian()
        self._build_fourier()

    # ------------------------------------------------------------------ storage
    @property
    def norb(self) -> int:
        """Number of orbitals."""
        return self.orbitals.norb

    @property
    def num_orbitals(self) -> int:
        """Number of orbitals (same as ``norb``)."""
        return self.orbitals.norb

    @property
    def nnz(self) -> int:
        """Number of stored (R, row, col) elements after summing duplicates."""
        return len(self.values)

    def _store(self, R: Any, rows: Any, cols: Any, values: Any) -> None:
        R_raw = np.asarray(R)
        R_n3 = np.asarray(R, dtype=np.int64).reshape(-1, 3)
        if R_raw.size and R_raw.dtype.kind == "f" and np.any(R_raw != np.round(R_raw)):
            raise ValueError("R must hold integer lattice vectors (in units of the cell), got non-integers")
        rows = np.asarray(rows, dtype=np.int64).ravel()
        cols = np.asarray(cols, dtype=np.int64).ravel()
        v_n = np.asarray(values)
        v_n = v_n.astype(complex if np.iscomplexobj(v_n) else float).ravel()
        n = len(R_n3)
        if not (len(rows) == len(cols) == len(v_n) == n):
            raise ValueError(f"R, rows, cols, values lengths differ: {n}, {len(rows)}, {len(cols)}, {len(v_n)}")
        norb = self.norb
        for name, idx in (("rows", rows), ("cols", cols)):
            if n and (idx.min() < 0 or idx.max() >= norb):
                raise ValueError(f"{name} out of range [0, {norb}): min {idx.min()}, max {idx.max()}")
        off = np.flatnonzero(np.any(R_n3[:, ~self.pbc] != 0, axis=1)) if n else []
        if len(off):
            raise ValueError(f"R = {R_n3[off[0]].tolist()} is non-zero along a non-periodic direction (pbc={self.pbc})")
        if not np.all(np.isfinite(v_n)):
            raise ValueError(f"values contain {np.count_nonzero(~np.isfinite(v_n))} non-finite entries")
        self._rmax_3 = np.abs(R_n3).max(axis=0) if n else np.zeros(3, np.int64)
        if np.prod(2 * self._rmax_3 + 1, dtype=float) * float(norb) ** 2 >= 2.0**62:
            raise ValueError(f"R range {self._rmax_3.tolist()} with {norb} orbitals is too large to index")
        key_n = _encode(R_n3, rows, cols, self._rmax_3, norb)
        key_u, first, inverse = np.unique(key_n, return_index=True, return_inverse=True)
        if len(key_u) < n:  # sum duplicates
            v_u = np.bincount(inverse, weights=v_n.real, minlength=len(key_u))
            if np.iscomplexobj(v_n):
                v_u = v_u + 1j * np.bincount(inverse, weights=v_n.imag, minlength=len(key_u))
            v_n = v_u
        else:
            v_n = v_n[first]
        self._key = key_u
        self.R, self.rows, self.cols, self.values = R_n3[first], rows[first], cols[first], v_n
        for arr in (self._key, self.R, self.rows, self.cols, self.values):
            arr.flags.writeable = False

    def check_hermitian(self, tol: float = HERMITIAN_TOL) -> float:
        """Largest |H_ij(R) - conj(H_ji(-R))| in eV; ValueError naming the worst element if it exceeds ``tol``."""
        if self.nnz == 0:
            return 0.0
        partner = _encode(-self.R, self.cols, self.rows, self._rmax_3, self.norb)
        pos = np.minimum(np.searchsorted(self._key, partner), self.nnz - 1)
        found = self._key[pos] == partner
        v_partner = np.where(found, self.values[pos], 0.0)
        dev_n = np.abs(self.values - np.conj(v_partner))
        worst = int(np.argmax(dev_n))
        if dev_n[worst] > tol:
            i, j, R = self.rows[worst], self.cols[worst], self.R[worst]
            raise ValueError(
                f"Hamiltonian is not Hermitian: H[{i},{j}](R={R.tolist()}) = {self.values[worst]:.6g} eV but "
                f"conj(H[{j},{i}](R={(-R).tolist()}))"
                f" = {np.conj(v_partner[worst]):.6g} eV{'' if found[worst] else ' (missing)'}: "
                f"|difference| {dev_n[worst]:.3g} eV > {tol:g} eV "
                f"({np.count_nonzero(dev_n > tol)} elements; 0-based orbital indices)"
            )
        return float(dev_n[worst])

    def _build_fourier(self) -> None:
        """Group by unique R and by unique (row, col) so H(k) is one sparse-dense product."""
        norb = self.norb
        self.R_r, r_index = unique_lattice_vectors(self.R)
        flat = self.rows * norb + self.cols
        self._flat_f, f_index = np.unique(flat, return_inverse=True)
        self._A_fR = sp.csr_matrix(
            (self.values, (f_index.ravel(), r_index.ravel())), shape=(len(self._flat_f), len(self.R_r))
        )
        rows_f = self._flat_f // norb
        self._cols_f = (self._flat_f % norb).astype(np.int32 if norb < 2**31 else np.int64)
        self._indptr = np.concatenate([[0], np.cumsum(np.bincount(rows_f, minlength=norb))])

    # ------------------------------------------------------------------ H(k)
    def _phases(self, k_k3: np.ndarray) -> np.ndarray:
        """exp(+2πi R·k), shape (nR, nk)."""
        return np.exp(2j * np.pi * (self.R_r @ k_k3.T))

    def hamiltonian(self, kpts: Any) -> np.ndarray:
        """H(k) for ``kpts`` (nk, 3) fractional → (nk, norb, norb) complex, eV."""
        k_k3 = _as_kpts(kpts)
        H_fk = np.zeros((self.norb * self.norb, len(k_k3)), dtype=complex)
        H_fk[self._flat_f] = self._A_fR @ self._phases(k_k3)
        return np.ascontiguousarray(H_fk.T).reshape(len(k_k3), self.norb, self.norb)

    def is_real_at(self, k: Any) -> bool:
        """True if H(k) is real symmetric: real H(R) and k time-reversal invariant (2k·R integer for all R)."""
        k_3 = np.asarray(k, dtype=float)
        if np.iscomplexobj(self.values) and np.any(self.values.imag != 0):
            return False
        twice_kR = 2 * (self.R_r @ k_3)
        return bool(np.allclose(twice_kR, np.round(twice_kR), rtol=0, atol=1e-12))

    def hamiltonian_sparse(self, k: Any, allow_real: bool = False) -> sp.csr_matrix:
        """H(k) at one k (3,) fractional → scipy.sparse CSR (norb, norb), eV.

        Complex by default; with ``allow_real=True`` a real-symmetric float64 matrix is returned where
        :meth:`is_real_at` holds (time-reversal-invariant k, real H(R)), which halves the cost of sparse solvers.
        """
        k_3 = np.asarray(k, dtype=float)
        if k_3.shape != (3,):
            raise ValueError(f"k must have shape (3,) in fractional coordinates, got shape {k_3.shape}")
        data = self._A_fR @ self._phases(k_3[None])[:, 0]
        if allow_real and self.is_real_at(k_3):
            data = data.real.copy()
        shape = (self.norb, self.norb)
        return sp.csr_matrix((data, self._cols_f.copy(), self._indptr.copy()), shape=shape)

    def k_chunks(self, k_k3: np.ndarray) -> list[np.ndarray]:
        """Split k-points into batches whose dense H(k) stay below ~128 MB."""
        size = max(1, _CHUNK_ELEMENTS // max(1, self.norb**2))
        return [k_k3[i:i + size] for i in range(0, len(k_k3), size)]

    # ------------------------------------------------------------------ spectra
    def eigenvalues(self, kpts: Any, num: int | None = None, near: float | None = None) -> np.ndarray:
        """Band energies (eV), sorted per k.

        Dense (``num=None``): all bands, (nk, norb). Sparse: the ``num`` eigenvalues closest to ``near`` (eV;
        default: the known Fermi level), (nk, num), via a shift-invert solver on :meth:`hamiltonian_sparse`.
        """
        from . import solvers

        k_k3 = _as_kpts(kpts)
        if num is None or num >= self.norb:
            if num is not None and num > self.norb:
                raise ValueError(f"num={num} exceeds the number of orbitals {self.norb}")
            e_kn = [solvers.eigvalsh_dense(self.hamiltonian(chunk)) for chunk in self.k_chunks(k_k3)]
            return np.concatenate(e_kn, axis=0) if e_kn else np.zeros((0, self.norb))
        if num < 1:
            raise ValueError(f"num must be a positive number of eigenvalues, got {num}")
        if near is None:
            if self.fermi_energy is None:
                raise ValueError("eigenvalues(num=...) needs near= (eV) or a known fermi_level")
            near = self.fermi_energy
        e_kn = [solvers.eigvalsh_near(self.hamiltonian_sparse(k_3, allow_real=True), num, near) for k_3 in k_k3]
        return np.array(e_kn).reshape(len(k_k3), num)

    def band_structure(
        self,
        path: Any = None,
        npoints: int = 200,
        reference: float | None = None,
        num: int | None = None,
        near: float | None = None,
    ) -> Any:
        """ASE ``BandStructure`` along ``path`` (None: standard path of the cell, 2D when only in-plane hoppings;
        a string like ``"GMKG"``; or a ``BandPath``); energies absolute in eV, ``reference`` defaults to the Fermi
        level when known or computable. ``num``/``near``: only the ``num`` bands closest to ``near`` eV (sparse;
        the default above 2000 orbitals: 16 near E_F). A non-periodic system → ValueError."""
        from .bandpath import band_structure

        return band_structure(self, path, npoints, reference, num, near)

    def dos(
        self,
        kpts: Any = None,
        width: float = 0.02,
        npts: int = 2000,
        projected: str | None = None,
        method: str = "auto",
        smearing: str = "gauss",
        emin: float | None = None,
        emax: float | None = None,
    ) -> Any:
        """Smeared DOS (states/eV/cell, one spin: integrates to norb) as ASE ``GridDOSData``, or a
        ``GridDOSCollection`` when ``projected`` is "atom", "element", "orbital" or "layer" (see ``tb/dos.py``)."""
        from .dos import dos

        return dos(self, kpts, width, npts, projected, method, smearing, emin, emax)

    def fermi_level(self, kpts: Any = None, width: float = 0.01, spin: float = 2.0) -> float:
        """Fermi level (eV). Without ``kpts``, the known value passed to the constructor if any; otherwise computed
        from ``num_electrons`` (``spin`` electrons per band) on the k-mesh ``kpts`` (None: default mesh) by bisection
        on Fermi–Dirac occupations of width ``width`` eV (mid-gap for insulators; see ``tb/fermi.py``)."""
        if kpts is None and self.fermi_energy is not None:
            return self.fermi_energy
        from .fermi import fermi_level

        return fermi_level(self, kpts, width=width, spin=spin)

    # ------------------------------------------------------------------ Wannier90 I/O
    @classmethod
    def from_wannier90(
        cls,
        path: Any,
        atoms: "ase.Atoms | None" = None,
        orbitals: "OrbitalTable | Mapping[str, Sequence[str]] | None" = None,
        cell: Any = None,
        num_electrons: float | None = None,
        fermi_level: float | None = None,
        check_hermitian: bool = True,
    ) -> "TightBinding":
        """Read ``prefix_hr.dat`` (or ``.gz``; sparse listings allowed: missing rows are zero).

        ``prefix_centres.xyz`` beside it gives the orbital centres (Å); with ``atoms`` each Wannier function is
        assigned to its nearest atom (periodic wrap in all 3 directions). ``orbitals`` may instead give the table, or
        {element: shells} in Wannier90 projection order. The cell comes from ``atoms``, else ``cell``, else the
        ``prefix.win`` beside the file. Values are divided by the Wigner–Seitz degeneracies.
        """
        from .wannier90 import read_hr

        return read_hr(path, atoms, orbitals, cell, num_electrons, fermi_level, check_hermitian)

    def write_wannier90(self, path: Any, header: str | None = None, decimals: int = 6) -> None:
        """Write ``_hr.dat`` (``.gz`` by suffix); reading it back gives the same elements to ``decimals``."""
        from .wannier90 import write_hr

        write_hr(self, path, header=header, decimals=decimals)

    def write_centres(self, path: Any) -> None:
        """Write the orbital centres (and atoms, if any) as a Wannier90 ``_centres.xyz``."""
        from .wannier90 import write_centres_xyz

        write_centres_xyz(self, path)

    def hermitize(self) -> "TightBinding":
        """(H + H†)/2 as a new TightBinding, e.g. for independently predicted H(R) and H(-R)."""
        R = np.concatenate([self.R, -self.R])
        rows = np.concatenate([self.rows, self.cols])
        cols = np.concatenate([self.cols, self.rows])
        values = np.concatenate([self.values, np.conj(self.values)]) / 2
        return self._replace(R, rows, cols, values)

    def _replace(self, R: Any, rows: Any, cols: Any, values: Any) -> "TightBinding":
        return TightBinding(
            self.cell, R, rows, cols, values, self.orbitals, pbc=self.pbc, atoms=self.atoms,
            num_electrons=self.num_electrons, fermi_level=self.fermi_energy, degeneracy=self.degeneracy,
        )

    def __repr__(self) -> str:
        return f"TightBinding(norb={self.norb}, nnz={self.nnz}, nR={len(self.R_r)}, pbc={self.pbc.tolist()})"
