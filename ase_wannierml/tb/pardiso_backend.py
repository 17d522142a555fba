"""Sparse LDLᴴ factorisation of Hermitian H − σ by Intel MKL PARDISO (through the ``pypardiso`` package's MKL).

``pypardiso`` finds and loads MKL's runtime (``mkl_rt``) but only exposes real unsymmetric LU; PARDISO itself
factorises real symmetric indefinite (``mtype = -2``) and complex Hermitian indefinite (``mtype = -4``) matrices by
Bunch–Kaufman pivoting inside supernodes (METIS nested-dissection ordering) and reports the inertia, so this module
calls it directly with the same MKL: one :class:`PardisoFactor` per matrix, the upper triangle in zero-based CSR.

Inertia: PARDISO returns the numbers of positive and negative pivots (``iparm[21]``, ``iparm[22]``). By Sylvester's
law of inertia these are the numbers of eigenvalues above/below σ, exactly, as long as no pivot was perturbed
(``iparm[13]`` = 0: PARDISO replaces pivots below 1e-8 × ‖A‖ by ±1e-8 × ‖A‖ instead of failing); a perturbed
factorisation is reported (:attr:`PardisoFactor.perturbed_pivots`) and the callers move the shift instead.

Reuse of the analysis: :meth:`PardisoFactor.refactor` replaces the values of a matrix with the same sparsity
pattern (H(k) − σ at another k of the same arithmetic) and redoes only the numerical factorisation (phase 22),
keeping the METIS ordering and symbolic factorisation (phase 11).

Threads: PARDISO's OpenMP threads follow MKL's thread count (``MKL_NUM_THREADS``), set per call to ``workers``.

Energies in eV; matrices (n, n); right-hand sides (n,) or (n, m).

Example:
    >>> import numpy as np, scipy.sparse as sp
    >>> f = PardisoFactor(sp.diags([np.arange(-2.0, 3.0)], [0], format="csr") - 0.5 * sp.identity(5))
    >>> f.negative_eigenvalues, f.solve(np.ones(5)).round(3).tolist()
    (3, [-0.4, -0.667, -2.0, 2.0, 0.667])
"""

from __future__ import annotations

import ctypes
import threading
import time

import numpy as np
import scipy.sparse as sp

__all__ = ["PardisoError", "PardisoFactor", "upper_csr"]


def _real_embedding(A: sp.csr_matrix) -> sp.csr_matrix:
    """Real symmetric (2n, 2n) [[Re A, −Im A], [Im A, Re A]] of Hermitian A (n, n): each eigenvalue twice."""
    return sp.bmat([[A.real, -A.imag], [A.imag, A.real]], format="csr")

_LIB = None
_LIB_LOCK = threading.Lock()

#: PARDISO error codes (MKL documentation) → message.
_ERRORS = {-1: "input inconsistent", -2: "not enough memory", -3: "reordering problem",
           -4: "zero pivot, numerical factorization or iterative refinement problem", -5: "unclassified (internal) error",
           -6: "reordering failed", -7: "diagonal matrix is singular", -8: "32-bit integer overflow problem",
           -9: "not enough memory for OOC", -10: "error opening OOC files", -11: "read/write error with OOC files",
           -12: "pardiso_64 called from 32-bit library", -13: "interrupted by the mkl_progress function"}


class PardisoError(np.linalg.LinAlgError):
    """PARDISO returned an error code (message names it)."""


def _library():
    """MKL's pardiso entry point and thread control, loaded once from the ``pypardiso`` package's MKL."""
    global _LIB
    with _LIB_LOCK:
        if _LIB is None:
            try:
                import pypardiso
            except ImportError as exc:  # pragma: no cover - a required dependency
                raise ImportError("the sparse eigen-solver needs MKL PARDISO: pip install pypardiso") from exc
            mkl = pypardiso.PyPardisoSolver().libmkl
            fn = mkl.pardiso
            i32p = ctypes.POINTER(ctypes.c_int32)
            fn.argtypes = [ctypes.POINTER(ctypes.c_int64), i32p, i32p, i32p, i32p, i32p, ctypes.c_void_p, i32p, i32p,
                           i32p, i32p, i32p, i32p, ctypes.c_void_p, ctypes.c_void_p, i32p]
            fn.restype = None
            set_local = mkl.MKL_Set_Num_Threads_Local
            set_local.argtypes, set_local.restype = [ctypes.c_int], ctypes.c_int
            _LIB = (fn, set_local)
    return _LIB


def upper_csr(A: sp.spmatrix) -> sp.csr_matrix:
    """Upper triangle (diagonal included and stored even where zero) of the square ``A`` as canonical CSR."""
    A = sp.csr_matrix(A)
    n = A.shape[0]
    U = sp.triu(A, format="csr") + sp.csr_matrix((np.zeros(n, A.dtype), (np.arange(n), np.arange(n))), shape=A.shape)
    U.sum_duplicates()
    U.sort_indices()
    return U


class PardisoFactor:
    """PARDISO LDLᴴ factorisation of the Hermitian sparse ``A`` (n, n) (only its upper triangle is read).

    Real ``A`` → real symmetric indefinite (mtype −2), complex → complex Hermitian indefinite (mtype −4); double
    precision (``single=True``: single precision, for a preconditioner; not with ``inertia``). ``inertia=True``
    makes the inertia available for complex A too (real 2n embedding, about twice the cost). ``perm``: the
    ordering of an earlier factor of the same pattern (its :attr:`perm`), skipping METIS. ``workers``: OpenMP
    threads of PARDISO (default 1). Attributes after factorising:
    ``negative_eigenvalues``, ``positive_eigenvalues`` (inertia of A, exact when ``perturbed_pivots`` == 0),
    ``factor_nnz`` (entries of L), ``peak_memory_kb`` (PARDISO's own peak of analysis + factorisation),
    ``t_analysis``/``t_factor`` (wall s). Free the memory with :meth:`free` (also done on garbage collection).
    """

    def __init__(self, A: sp.spmatrix, workers: int = 1, inertia: bool = False,
                 perm: np.ndarray | None = None, single: bool = False) -> None:
        U = upper_csr(A)
        if U.shape[0] != U.shape[1]:
            raise ValueError(f"A must be square, got shape {U.shape}")
        if not np.all(np.isfinite(U.data)):
            raise ValueError("A has non-finite entries")
        self.n = U.shape[0]
        self.embedded = bool(inertia and np.iscomplexobj(U.data))
        if self.embedded:  # PARDISO reports no inertia for mtype -4: real symmetric embedding, counts doubled
            U = upper_csr(_real_embedding(sp.csr_matrix(A)))
        self.single = bool(single) and not inertia
        self.dtype = np.dtype((np.complex64 if self.single else np.complex128) if np.iscomplexobj(U.data)
                              else (np.float32 if self.single else np.float64))
        self.mtype = -4 if self.dtype.kind == "c" else -2
        self.workers = int(workers)
        self._size = U.shape[0]
        self._indptr = U.indptr.astype(np.int32)
        self._indices = U.indices.astype(np.int32)
        self._data = np.ascontiguousarray(U.data, dtype=self.dtype)
        self._pt = np.zeros(64, dtype=np.int64)
        self._iparm = np.zeros(64, dtype=np.int32)
        ip = self._iparm
        ip[0] = 1    # own settings below
        ip[1] = 2    # METIS nested dissection
        ip[7] = 0    # iterative refinement: default (only when pivots were perturbed)
        ip[9] = 8    # pivot perturbation 1e-8 (reported in iparm[13])
        ip[10] = 1   # symmetric scaling and
        ip[12] = 1   # weighted matching (better 2×2 pivots for indefinite matrices)
        ip[17] = -1  # report the number of factor entries
        ip[20] = 1   # Bunch–Kaufman 1×1 and 2×2 pivots (1×1 only is inaccurate for complex Hermitian TBG)
        ip[27] = int(self.single)  # single precision (a preconditioner: half the time)
        ip[34] = 1   # zero-based indices
        if perm is not None:  # a fill-reducing ordering from an earlier factor of this pattern: no METIS
            perm = np.asarray(perm, dtype=np.int32)
            if perm.shape != (self._size,):
                raise ValueError(f"perm must have shape ({self._size},), got {perm.shape}")
            self._perm = perm.copy()
            ip[4] = 1
        else:
            self._perm = np.zeros(self._size, dtype=np.int32)
            ip[4] = 2  # return METIS's permutation in perm
        self._alive = False
        t0 = time.perf_counter()
        self._call(11)
        self._alive = True
        self.t_analysis = time.perf_counter() - t0
        self.perm = self._perm.copy()  # the ordering used (reusable for matrices of the same pattern)
        self._numeric()

    # ------------------------------------------------------------------ PARDISO calls
    def _call(self, phase: int, b: np.ndarray | None = None, x: np.ndarray | None = None) -> None:
        fn, set_threads = _library()
        c = ctypes.c_int32
        nrhs = 1 if b is None or b.ndim == 1 else b.shape[1]
        err = c(0)
        ptr = (lambda a: a.ctypes.data_as(ctypes.c_void_p)) if b is not None else (lambda a: None)
        i32 = ctypes.POINTER(c)
        previous = set_threads(self.workers)
        try:
            fn(self._pt.ctypes.data_as(ctypes.POINTER(ctypes.c_int64)), ctypes.byref(c(1)), ctypes.byref(c(1)),
               ctypes.byref(c(self.mtype)), ctypes.byref(c(phase)), ctypes.byref(c(self._size)),
               self._data.ctypes.data_as(ctypes.c_void_p), self._indptr.ctypes.data_as(i32),
               self._indices.ctypes.data_as(i32), self._perm.ctypes.data_as(i32), ctypes.byref(c(nrhs)),
               self._iparm.ctypes.data_as(i32), ctypes.byref(c(0)), ptr(b), ptr(x), ctypes.byref(err))
        finally:
            set_threads(previous)
        if err.value != 0:
            raise PardisoError(f"PARDISO phase {phase} failed: error {err.value} "
                               f"({_ERRORS.get(err.value, 'unknown')})")

    def _numeric(self) -> None:
        import time

        t0 = time.perf_counter()
        self._call(22)
        self.t_factor = time.perf_counter() - t0
        ip = self._iparm
        half = 2 if self.embedded else 1
        has = self.mtype == -2  # PARDISO's inertia: real symmetric only
        self.positive_eigenvalues = int(ip[21]) // half if has else None
        self.negative_eigenvalues = int(ip[22]) // half if has else None
        self.perturbed_pivots = int(ip[13])
        self.factor_nnz = int(ip[17])
        self.peak_memory_kb = int(max(ip[14], ip[15] + ip[16]))

    def refactor(self, A: sp.spmatrix) -> None:
        """Factorise new values ``A`` with the same sparsity pattern (upper triangle) and arithmetic, reusing the
        ordering and symbolic analysis; ValueError if the pattern or dtype differs."""
        U = upper_csr(A)
        if np.iscomplexobj(U.data) != (self.dtype.kind == "c" or self.embedded):
            raise ValueError(f"refactor needs {'complex' if self.embedded else self.dtype} values (the analysed "
                             f"arithmetic), got {U.dtype}")
        if self.embedded:
            U = upper_csr(_real_embedding(sp.csr_matrix(A)))
        if (U.shape != (self._size, self._size) or not np.array_equal(U.indptr, self._indptr)
                or not np.array_equal(U.indices, self._indices)):
            raise ValueError("refactor needs the sparsity pattern of the analysed matrix")
        if not np.all(np.isfinite(U.data)):
            raise ValueError("A has non-finite entries")
        self._data = np.ascontiguousarray(U.data, dtype=self.dtype)
        self._numeric()

    def solve(self, B: np.ndarray) -> np.ndarray:
        """A⁻¹ B for B (n,) or (n, m) (real B with a complex factor is promoted) → same shape, factor's dtype
        (complex if B is complex)."""
        B = np.asarray(B)
        if B.shape[0] != self.n:
            raise ValueError(f"right-hand side has {B.shape[0]} rows, the matrix {self.n}")
        if self.embedded:  # [[Re, -Im], [Im, Re]] [x', x''] = [b', b'']
            B = B.astype(complex)
            X = self._solve(np.concatenate([B.real, B.imag], axis=0))
            return X[:self.n] + 1j * X[self.n:]
        if self.dtype.kind == "f" and np.iscomplexobj(B):  # real factor: real and imaginary parts in one call
            m = 1 if B.ndim == 1 else B.shape[1]
            X = self._solve(np.concatenate([B.real.reshape(self.n, m), B.imag.reshape(self.n, m)], axis=1))
            return (X[:, :m] + 1j * X[:, m:]).reshape(B.shape)
        return self._solve(B)

    def _solve(self, B: np.ndarray) -> np.ndarray:
        Bf = np.asfortranarray(B, dtype=self.dtype)
        X = np.zeros_like(Bf)
        if Bf.size:
            self._call(33, Bf, X)
        return np.ascontiguousarray(X)

    def free(self) -> None:
        """Release PARDISO's memory for this factorisation."""
        if self._alive:
            self._alive = False
            self._call(-1)

    def __del__(self) -> None:  # noqa: D105
        try:
            self.free()
        except Exception:  # pragma: no cover - interpreter shutdown
            pass
