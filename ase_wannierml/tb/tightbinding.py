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

from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np
import scipy.sparse as sp

from .basis import OrbitalTable, _lattice_vector_index, unique_lattice_vectors  # noqa: F401  (re-exported)
from .kmesh import DOS_NPTS, DOS_WIDTH, FERMI_WIDTH
from .progress import progress

if TYPE_CHECKING:  # pragma: no cover
    import ase

HERMITIAN_TOL = 1e-6  # eV
_CHUNK_ELEMENTS = 2**23  # complex entries per dense H(k) batch (128 MB)


def _as_kpts(kpts: Any) -> np.ndarray:
    """k-points (nk, 3) fractional; a single (3,) point is an error here (use [k])."""
    k_k3 = np.asarray(kpts, dtype=float)
    if k_k3.ndim != 2 or k_k3.shape[1] != 3:
        raise ValueError(f"kpts must have shape (nk, 3) in fractional coordinates, got shape {k_k3.shape}")
    return k_k3


def _as_index(x: Any, name: str) -> np.ndarray:
    """1-D integer index array without copying integer input (floats must be integral)."""
    a = np.asarray(x).ravel()
    if a.dtype.kind in "iu":
        return a
    if a.size and (a.dtype.kind not in "fb" or np.any(a != np.round(a))):
        raise ValueError(f"{name} must hold integer orbital indices, got dtype {a.dtype}")
    return a.astype(np.int64)


def _lattice_vector_lookup(R_r3: np.ndarray, query_q3: np.ndarray) -> np.ndarray:
    """Index of each query vector in the (small) table R_r3, -1 where absent."""
    table = {tuple(r): i for i, r in enumerate(R_r3.tolist())}
    return np.array([table.get(tuple(q), -1) for q in query_q3.tolist()], dtype=np.int64)


def _pair_key(rows: np.ndarray, cols: np.ndarray, r_index: np.ndarray, norb: int, nR: int) -> np.ndarray:
    """int64 key (row·norb + col)·nR + R index: sorts by row, then col, then R (one transient int64 array)."""
    key = rows.astype(np.int64)
    key *= norb
    key += cols
    key *= nR
    key += r_index
    return key


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
        self.pruned_threshold = 0.0  # eV: elements below it were dropped by pruned() (0: none)
        self.pruning_bound = 0.0  # eV: bound on the eigenvalue change that pruning caused
        self._store(R, rows, cols, values)
        if check_hermitian:
            self.check_hermitian()
        self._build_fourier()  # drops the construction key

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
    def nbytes(self) -> int:
        """Bytes held by the stored elements and the H(k) Fourier matrix (orbital metadata excluded)."""
        arrays = [self.values, self.rows, self.cols, self._r_index, self._cols_f, self._indptr,
                  self._A_fR.indptr, self.R_r] + ([] if self._R_cache is None else [self._R_cache])
        return int(sum(a.nbytes for a in arrays))  # _A_fR shares values and the R index

    @property
    def nnz(self) -> int:
        """Number of stored (R, row, col) elements after summing duplicates."""
        return len(self.values)

    def _store(self, R: Any, rows: Any, cols: Any, values: Any) -> None:
        """Validate, sum duplicates and store in canonical order (row, col, R) with compact indices.

        Memory: per stored element values (8 or 16 B) + rows, cols, R index (int32: 12 B) + the Fourier matrix's
        column index (int32, 4 B, it shares ``values``); transients stay ~40 B per input element (one int64 key,
        one sort permutation). ``R`` (nnz, 3) is materialised from ``R_r`` on first access only."""
        norb = self.norb
        R_n3 = np.asarray(R)
        if R_n3.size and R_n3.dtype.kind == "f" and np.any(R_n3 != np.round(R_n3)):
            raise ValueError("R must hold integer lattice vectors (in units of the cell), got non-integers")
        if R_n3.dtype.kind not in "iu":
            R_n3 = R_n3.astype(np.int64)
        R_n3 = R_n3.reshape(-1, 3)
        rows, cols = (_as_index(x, name) for x, name in ((rows, "rows"), (cols, "cols")))
        v_n = np.asarray(values).ravel()
        n = len(R_n3)
        if not (len(rows) == len(cols) == len(v_n) == n):
            raise ValueError(f"R, rows, cols, values lengths differ: {n}, {len(rows)}, {len(cols)}, {len(v_n)}")
        for name, idx in (("rows", rows), ("cols", cols)):
            if n and (idx.min() < 0 or idx.max() >= norb):
                raise ValueError(f"{name} out of range [0, {norb}): min {idx.min()}, max {idx.max()}")
        for ax in np.flatnonzero(~self.pbc):
            off = np.flatnonzero(R_n3[:, ax]) if n else []
            if len(off):
                raise ValueError(f"R = {R_n3[off[0]].tolist()} is non-zero along a non-periodic direction "
                                 f"(pbc={self.pbc})")
        if not np.all(np.isfinite(v_n)):
            raise ValueError(f"values contain {np.count_nonzero(~np.isfinite(v_n))} non-finite entries")
        cplx = np.iscomplexobj(v_n)
        self.R_r, r_index = _lattice_vector_index(R_n3)
        nR = max(1, len(self.R_r))
        if float(norb) ** 2 * nR >= 2.0**62:
            raise ValueError(f"{nR} lattice vectors with {norb} orbitals are too many to index")
        key = _pair_key(rows, cols, r_index, norb, nR)
        del r_index
        order = None
        if n > 1 and not np.all(key[1:] > key[:-1]):  # not already canonical: sort, then sum duplicates
            order = np.argsort(key, kind="stable")
            key = key[order]
            new = np.empty(n, bool)
            new[0] = True
            np.not_equal(key[1:], key[:-1], out=new[1:])
            if not new.all():
                starts = np.flatnonzero(new)
                del new
                v_n = np.add.reduceat(v_n[order].astype(complex if cplx else float), starts)
                key = key[starts]
                order = None
        if order is not None:
            v_n = v_n[order].astype(complex if cplx else float, copy=False)
            del order
        else:
            v_n = np.array(v_n, dtype=complex if cplx else float)  # own copy (a value object)
        itype = np.int32 if max(norb, nR) < 2**31 else np.int64
        self._r_index = (key % nR).astype(itype)
        pair = key // nR
        self.rows = (pair // norb).astype(itype)
        self.cols = (pair % norb).astype(itype)
        del pair
        self.values = v_n
        self._R_cache: np.ndarray | None = None
        self._key_tmp = key  # used by the Hermiticity check in __init__, then dropped
        for arr in (self._r_index, self.rows, self.cols, self.values):
            arr.flags.writeable = False

    @property
    def R(self) -> np.ndarray:
        """(nnz, 3) int lattice vector of each stored element (materialised from ``R_r`` on first access)."""
        if self._R_cache is None:
            R = self.R_r.astype(np.int32 if np.abs(self.R_r).max(initial=0) < 2**31 else np.int64)[self._r_index]
            R.flags.writeable = False
            self._R_cache = R
        return self._R_cache

    def _key(self) -> np.ndarray:
        """Sorted int64 key of each element, (row·norb + col)·nR + R index (canonical storage order)."""
        key = getattr(self, "_key_tmp", None)
        return key if key is not None else _pair_key(self.rows, self.cols, self._r_index, self.norb,
                                                      max(1, len(self.R_r)))

    def onsite_energies(self) -> np.ndarray:
        """Onsite energies (eV), the diagonal of H(R = 0): shape (norb,), 0 where none is stored."""
        out = np.zeros(self.norb)
        home = np.flatnonzero(np.all(self.R_r == 0, axis=1))
        if len(home):
            keep = (self._r_index == home[0]) & (self.rows == self.cols)
            out[self.rows[keep]] = np.real(self.values[keep])
        return out

    def check_hermitian(self, tol: float = HERMITIAN_TOL) -> float:
        """Largest |H_ij(R) - conj(H_ji(-R))| in eV; ValueError naming the worst element if it exceeds ``tol``."""
        if self.nnz == 0:
            return 0.0
        nR = max(1, len(self.R_r))
        key = self._key()
        neg_r = _lattice_vector_lookup(self.R_r, -self.R_r)  # index of -R for each R (-1: absent)
        partner_r = neg_r[self._r_index]
        has_r = partner_r >= 0
        partner = _pair_key(self.cols, self.rows, np.maximum(partner_r, 0), self.norb, nR)
        del partner_r
        pos = np.minimum(np.searchsorted(key, partner), self.nnz - 1)
        found = has_r & (key[pos] == partner)
        del partner
        v_partner = np.where(found, self.values[pos], 0.0)
        dev_n = np.abs(self.values - np.conj(v_partner))
        worst = int(np.argmax(dev_n))
        if dev_n[worst] > tol:
            i, j, R = self.rows[worst], self.cols[worst], self.R_r[self._r_index[worst]]
            raise ValueError(
                f"Hamiltonian is not Hermitian: H[{i},{j}](R={R.tolist()}) = {self.values[worst]:.6g} eV but "
                f"conj(H[{j},{i}](R={(-R).tolist()}))"
                f" = {np.conj(v_partner[worst]):.6g} eV{'' if found[worst] else ' (missing)'}: "
                f"|difference| {dev_n[worst]:.3g} eV > {tol:g} eV "
                f"({np.count_nonzero(dev_n > tol)} elements; 0-based orbital indices)"
            )
        return float(dev_n[worst])

    def _build_fourier(self) -> None:
        """H(k) as one sparse-dense product: A (distinct (row, col), nR) @ phases; rows of A are runs of the
        canonical (row, col, R) order, so A shares ``values`` and the R index without sorting again."""
        self._key_tmp = None
        norb, n = self.norb, self.nnz
        new = np.ones(n, bool)
        if n > 1:
            np.not_equal(self.rows[1:], self.rows[:-1], out=new[1:])
            new[1:] |= self.cols[1:] != self.cols[:-1]
        starts = np.flatnonzero(new)
        del new
        itype = np.int32 if n < 2**31 else np.int64
        indptr = np.empty(len(starts) + 1, itype)
        indptr[:-1], indptr[-1] = starts, n
        self._A_fR = sp.csr_matrix((self.values, self._r_index, indptr), shape=(len(starts), len(self.R_r)), copy=False)
        self._cols_f = np.ascontiguousarray(self.cols[starts])
        counts = np.bincount(self.rows[starts], minlength=norb)
        del starts
        self._indptr = np.zeros(norb + 1, itype)
        np.cumsum(counts, out=self._indptr[1:])

    @property
    def _flat_f(self) -> np.ndarray:
        """Flat index row·norb + col of each distinct stored (row, col) pair (for dense H(k))."""
        rows_f = np.repeat(np.arange(self.norb, dtype=np.int64), np.diff(self._indptr))
        return rows_f * self.norb + self._cols_f

    # ------------------------------------------------------------------ H(k)
    def _phases(self, k_k3: np.ndarray) -> np.ndarray:
        """exp(+2πi R·k), shape (nR, nk)."""
        return np.exp(2j * np.pi * (self.R_r @ k_k3.T))

    def hamiltonian(self, kpts: Any) -> np.ndarray:
        """H(k) for ``kpts`` (nk, 3) fractional → (nk, norb, norb) complex, eV.

        Dense: raises ``solvers.DenseMemoryError`` (naming the estimated GB) before allocating if it cannot fit;
        use :meth:`hamiltonian_sparse` for large cells."""
        from .solvers import check_dense_memory

        k_k3 = _as_kpts(kpts)
        check_dense_memory(self.norb, len(k_k3), what="dense H(k)")
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
        phases = self._phases(k_3[None])[:, 0]
        if allow_real and self.is_real_at(k_3):  # phases are ±1: real arithmetic, no complex temporary
            data = self._A_fR @ phases.real
            if np.iscomplexobj(data):  # complex storage with zero imaginary parts
                data = data.real.copy()
        else:
            data = self._A_fR @ phases
        shape = (self.norb, self.norb)
        return sp.csr_matrix((data, self._cols_f.copy(), self._indptr.copy()), shape=shape)

    def k_chunks(self, k_k3: np.ndarray) -> list[np.ndarray]:
        """Split k-points into batches whose dense H(k) stay below ~128 MB."""
        size = max(1, _CHUNK_ELEMENTS // max(1, self.norb**2))
        return [k_k3[i:i + size] for i in range(0, len(k_k3), size)]

    # ------------------------------------------------------------------ spectra
    def eigenvalues(self, kpts: Any, num: int | None = None, near: float | None = None,
                    executor: Any = None) -> np.ndarray:
        """Band energies (eV), sorted per k.

        Dense (``num=None``): all bands, (nk, norb). Sparse: the ``num`` eigenvalues closest to ``near`` (eV;
        default: the known Fermi level), (nk, num), via a shift-invert solver on :meth:`hamiltonian_sparse`;
        consecutive k-points share one factorisation while it stays effective (``solvers.NearSolver``), so pass
        path-ordered k-points for speed. Eigenvalues are residual-checked in double precision either way.
        ``executor``: run chunks of k-points as tasks on a Dask ``Client``, ``"local"`` (embedded Dask cluster),
        a scheduler address or a ``concurrent.futures.Executor`` (``tb/distributed.py``); same results.
        """
        from . import solvers

        if near is not None and not np.isfinite(near):
            raise ValueError(f"near must be a finite energy (eV), got {near}")
        k_k3 = _as_kpts(kpts)
        if executor is not None:
            from .distributed import eigenvalues as distributed_eigenvalues

            return distributed_eigenvalues(self, k_k3, num, near, executor)
        if num is None or num >= self.norb:
            if num is not None and num > self.norb:
                raise ValueError(f"num={num} exceeds the number of orbitals {self.norb}")
            chunks = self.k_chunks(k_k3)
            e_kn = [solvers.eigvalsh_dense(self.hamiltonian(chunk))
                    for chunk in progress(chunks, len(chunks), "bands (dense, k-point chunks)")]
            return np.concatenate(e_kn, axis=0) if e_kn else np.zeros((0, self.norb))
        if num < 1:
            raise ValueError(f"num must be a positive number of eigenvalues, got {num}")
        if near is None:
            if self.fermi_energy is None:
                raise ValueError("eigenvalues(num=...) needs near= (eV) or a known fermi_level")
            near = self.fermi_energy
        solver = solvers.NearSolver(num, near)  # reuses one factorisation over neighbouring k-points
        e_kn = [solver.solve(self.hamiltonian_sparse(k_3, allow_real=True)).values
                for k_3 in progress(k_k3, len(k_k3), f"{num} bands near {near:.3f} eV")]
        return np.array(e_kn).reshape(len(k_k3), num)

    def bands_below(self, kpts: Any, energy: float | np.ndarray) -> np.ndarray:
        """Number of bands (per spin) below ``energy`` (eV; scalar or one per k, (nk,)) at each k → (nk,) int,
        exact and without computing the eigenvalues: Sylvester's law of inertia on an LDLᴴ factorisation of H(k) − energy
        (``solvers.count_eigenvalues_below``; sparse above 500 orbitals, ~one shift-invert factorisation per k).

        It turns the states from :meth:`eigenvalues` ``(num=, near=)`` into absolute band indices: the lowest
        returned state above ``energy`` has index ``bands_below(k, energy)`` (0-based; see ``flatbands``).
        """
        from . import solvers

        k_k3 = _as_kpts(kpts)
        energy_k = np.broadcast_to(np.asarray(energy, dtype=float), (len(k_k3),))
        if self.norb <= solvers.DENSE_MAX_ORBITALS:
            return np.array([solvers.count_eigenvalues_below(H, e) for H, e in zip(self.hamiltonian(k_k3), energy_k)],
                            dtype=int)
        return np.array([solvers.count_eigenvalues_below(self.hamiltonian_sparse(k_3, allow_real=True), e)
                         for k_3, e in progress(zip(k_k3, energy_k), len(k_k3), "band counts")], dtype=int)

    def band_structure(
        self,
        path: Any = None,
        npoints: int = 200,
        reference: float | None = None,
        num: int | None = None,
        near: float | None = None,
        executor: Any = None,
    ) -> Any:
        """ASE ``BandStructure`` along ``path`` (None: standard path of the cell, 2D when only in-plane hoppings;
        a string like ``"GMKG"``; or a ``BandPath``); energies absolute in eV, ``reference`` defaults to the Fermi
        level when known or computable. ``num``/``near``: only the ``num`` bands closest to ``near`` eV (sparse;
        the default above 2000 orbitals: 16 near E_F). ``executor``: k-point chunks as tasks (see
        :meth:`eigenvalues`). A non-periodic system → ValueError."""
        from .bandpath import band_structure

        return band_structure(self, path, npoints, reference, num, near, executor=executor)

    def dos(
        self,
        kpts: Any = None,
        width: float = DOS_WIDTH,
        npts: int = DOS_NPTS,
        projected: str | None = None,
        method: str = "auto",
        smearing: str = "gauss",
        emin: float | None = None,
        emax: float | None = None,
    ) -> Any:
        """Smeared DOS (states/eV/cell, one spin: integrates to norb) as ASE ``GridDOSData``, or a
        ``GridDOSCollection`` when ``projected`` is "atom", "element", "orbital" or "layer" (see ``tb/dos.py``).
        ``kpts`` None: ``kmesh.dos_mesh`` (defaults from ``tb/kmesh.py``)."""
        from .dos import dos

        return dos(self, kpts, width, npts, projected, method, smearing, emin, emax)

    def fermi_level(self, kpts: Any = None, width: float = FERMI_WIDTH, spin: float = 2.0) -> float:
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
        wsvec: Any = "auto",
        mp_grid: Any = None,
    ) -> "TightBinding":
        """Read ``prefix_hr.dat`` or ``prefix_tb.dat`` (or ``.gz``; sparse listings allowed if the header says
        ``sparse``: missing rows are zero).

        ``prefix_centres.xyz`` beside it gives the orbital centres (Å); with ``atoms`` each Wannier function is
        assigned to its nearest atom (periodic wrap in all 3 directions). ``orbitals`` may instead give the table, or
        {element: shells} in Wannier90 projection order. The cell comes from ``atoms``, else ``cell``, else the
        ``_tb.dat`` or the ``prefix.win`` beside the file. Values are divided by the Wigner–Seitz degeneracies.

        Wigner–Seitz shifts (Wannier90 ≥ 3 ``use_ws_distance``; see ``tb/wsvec.py``): ``wsvec="auto"`` applies
        ``prefix_wsvec.dat[.gz]`` beside the file, else recomputes them from the centres, the cell and the k-mesh
        (``mp_grid=`` or the ``.win``) unless the ``.win`` turns them off, else warns if they were expected;
        ``wsvec=<path>`` uses that file; ``"compute"`` insists on recomputing; ``None`` applies none. The shifted
        H(R) is stored as ordinary elements, equal to Wannier90's own interpolation at every k.
        """
        from .wannier90 import read_hr

        return read_hr(path, atoms, orbitals, cell, num_electrons, fermi_level, check_hermitian, wsvec, mp_grid,
                       tb_class=cls)

    def write_wannier90(self, path: Any, header: str | None = None, decimals: int = 6, dense: bool | None = None,
                        companions: bool = True, mp_grid: Any = None) -> list:
        """Write ``<seed>_hr.dat`` (``.gz`` by suffix; Wannier90's dense layout, or ``dense=False`` for only the
        stored elements; default: dense up to 2e7 rows) and with ``companions`` also ``<seed>_centres.xyz``, a
        minimal ``<seed>.win`` (cell, atoms, num_wann, ``mp_grid`` where known) and ``<seed>_tb.dat`` (dense only),
        each atomically; tbmodels and WannierBerri read them. Reading back gives the same elements to
        ``decimals``. Returns the paths written."""
        from .wannier90 import write_wannier90_files

        return write_wannier90_files(self, path, header=header, decimals=decimals, dense=dense,
                                     companions=companions, mp_grid=mp_grid)

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

    def pruned(self, threshold: float) -> "TightBinding":
        """A copy without the elements |H_ij(R)| < ``threshold`` (eV); on-site diagonal elements are always kept.

        Hermiticity is preserved (|H_ij(R)| = |H_ji(−R)|). Every eigenvalue of every H(k) moves by at most
        :meth:`pruning_error_bound` (``threshold``) (Weyl's inequality with ‖ΔH(k)‖₂ ≤ max row sum of the dropped
        |H_ij(R)|); the actual band shifts are usually far smaller because the dropped terms have random phases.
        ``threshold <= 0`` returns ``self``. The result records ``pruned_threshold`` and ``pruning_bound`` (eV).
        """
        threshold = float(threshold)
        if not np.isfinite(threshold):
            raise ValueError(f"pruning threshold must be a finite energy (eV), got {threshold}")
        if threshold <= 0:
            return self
        keep = self._prune_keep(threshold)
        bound = self.pruning_error_bound(threshold)
        out = TightBinding(
            self.cell, self.R[keep], self.rows[keep], self.cols[keep], self.values[keep], self.orbitals,
            pbc=self.pbc, atoms=self.atoms, num_electrons=self.num_electrons, fermi_level=self.fermi_energy,
            degeneracy=self.degeneracy, check_hermitian=False,
        )
        out.pruned_threshold, out.pruning_bound = threshold, bound
        return out

    def _prune_keep(self, threshold: float) -> np.ndarray:
        """(nnz,) bool: elements kept by :meth:`pruned` (|value| ≥ threshold, or on-site diagonal)."""
        r0 = _lattice_vector_lookup(self.R_r, np.zeros((1, 3), np.int64))[0]
        onsite = (self.rows == self.cols) & (self._r_index == r0)
        return (np.abs(self.values) >= threshold) | onsite

    def pruning_error_bound(self, threshold: float) -> float:
        """Rigorous bound (eV) on the eigenvalue change of any H(k) caused by :meth:`pruned` (``threshold``):
        max over orbitals i of Σ_{j,R} |H_ij(R)| over the dropped elements (‖ΔH(k)‖₂ ≤ ‖ΔH(k)‖_∞ for Hermitian
        ΔH, then Weyl's inequality)."""
        if threshold <= 0 or self.nnz == 0:
            return 0.0
        drop = ~self._prune_keep(float(threshold))
        row_sum = np.bincount(self.rows[drop], weights=np.abs(self.values[drop]), minlength=self.norb)
        return float(row_sum.max(initial=0.0))

    def _replace(self, R: Any, rows: Any, cols: Any, values: Any) -> "TightBinding":
        return TightBinding(
            self.cell, R, rows, cols, values, self.orbitals, pbc=self.pbc, atoms=self.atoms,
            num_electrons=self.num_electrons, fermi_level=self.fermi_energy, degeneracy=self.degeneracy,
        )

    def __repr__(self) -> str:
        return f"TightBinding(norb={self.norb}, nnz={self.nnz}, nR={len(self.R_r)}, pbc={self.pbc.tolist()})"
