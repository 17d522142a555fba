"""Hermitian eigen-solvers for tight-binding Hamiltonians: batched dense, and a few eigenvalues near an energy.

Sparse route ("sparse", the default above ``DENSE_MAX_ORBITALS`` orbitals): Davidson iteration whose
preconditioner is an MKL PARDISO factorisation of H − σ (``pardiso_backend.py``: METIS ordering, supernodal
Bunch–Kaufman LDLᴴ; complex Hermitian or real symmetric), i.e. shift-invert accuracy; single precision first (half
the factorisation time), double precision if that is too inaccurate for a shift. Rayleigh–Ritz and residuals use H
in double precision, so the eigenpairs are exact to ``tol``. Real arithmetic where H is real (time-reversal-invariant
k). The library was chosen by measurement against our former multifrontal code, MUMPS and SLEPc
(``benchmarks/solver_libraries.py``, ``docs/solvers.md``).

Many k-points (a band path, a mesh): :class:`NearSolver` keeps the factorisation of an earlier H(k₀) − σ as the
preconditioner and starts Davidson from the previous eigenvectors, refactorising (numerical phase only: the METIS
ordering is kept per sparsity pattern) when the extra iterations would have paid for a new factorisation;
``TightBinding.eigenvalues``/``band_structure`` use it. Exactness is unchanged (residuals in double precision).
The single-precision preconditioner is not H − σ itself but P − σ, P = H without its entries below
``PRECONDITIONER_DROP`` (10 meV; :func:`default_preconditioner`): the long-range hoppings cause most of the fill,
so P factorises several times faster and Davidson needs a few more, cheap solves; the eigenpairs are still those of
H. ``NearSolver.solve(H, preconditioner=P)`` takes another P (e.g. H(k) of ``TightBinding.pruned``).

Exact band counts (:func:`count_eigenvalues_below`): Sylvester's law of inertia on the double-precision LDLᴴ
(PARDISO's pivot signs; complex H through its real 2n embedding, whose eigenvalues are those of H twice).

Threads: PARDISO's OpenMP threads = ``workers`` (default ``$ASE_WANNIERML_NUM_THREADS`` or ``min(2,
os.cpu_count())``, 1 on a busy machine: :func:`resolve_workers`); results agree to rounding for any number.

Energies in eV; matrices (norb, norb); eigenvalues returned sorted ascending.

Example:
    >>> import numpy as np, scipy.sparse as sp
    >>> H = sp.diags([np.arange(10.0)], [0], format="csr")
    >>> eigvalsh_near(H, 3, near=4.2).tolist()
    [3.0, 4.0, 5.0]
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.linalg
import scipy.sparse as sp

from ..memory import MEMORY_ENV, available_memory_bytes  # noqa: F401  (re-exported)
from .pardiso_backend import PardisoFactor, upper_csr

__all__ = ["DENSE_MAX_ORBITALS", "DenseMemoryError", "NearResult", "NearSolver", "available_memory_bytes",
           "check_dense_memory", "count_eigenvalues_below", "dense_memory_bytes", "eigvalsh_dense", "eigvalsh_near",
           "default_preconditioner", "resolve_workers", "shifted_csr", "solve_near_auto"]

#: Up to this many orbitals, ``solve_near_auto`` diagonalises densely (measured crossover ≈ 500 for TBG).
DENSE_MAX_ORBITALS = 500
#: Davidson block size (new preconditioned residuals per iteration) and iteration limit. One PARDISO solve call
#: streams the factor once for all its right-hand sides: 8 cost 2-4x less per vector than 1-4 (learned 1.05° H),
#: and Davidson needs about as many vectors in total with blocks of 8 as of 4, in half the iterations.
BLOCK_SIZE = 8
#: Davidson subspace: up to ``num + MAX_BASIS_EXTRA`` vectors before a thick restart (to the ``(num +
#: MAX_BASIS_EXTRA) // 2`` Ritz vectors nearest σ). 88 (96 for 8 states) instead of 40: 12 instead of 29
#: iterations for a fresh learned 1.05° k-point, 5-30 % fewer solves along a path (benchmarks, docs/solvers.md).
MAX_BASIS_EXTRA = 88
MAX_ITER = 400
START_EXTRA = 16
#: Solves allowed with a factor kept from an earlier matrix, at most this many times those a fresh factor needed
#: (a far-away k-point on a coarse path otherwise spends hundreds of iterations with a poor preconditioner).
STALE_MAX_SOLVES_FACTOR = 3.0
_HERMITIAN_TOL = 1e-8  # eV, relative to max |H|

#: Bytes held at once per matrix entry of a dense diagonalisation, per element size s (16 complex, 8 real):
#: H(k) as assembled plus its transposed copy (2 s) and LAPACK's working copy (s); eigenvectors add 2 s (the
#: vectors and the divide-and-conquer workspace).
_DENSE_COPIES, _DENSE_VECTOR_COPIES = 3, 2


class DenseMemoryError(MemoryError):
    """A dense matrix request that would not fit in memory (raised before allocating anything)."""


def dense_memory_bytes(norb: int, nk: int = 1, vectors: bool = False, complex_: bool = True) -> float:
    """Estimated peak bytes of diagonalising ``nk`` dense (norb, norb) matrices at once (see ``_DENSE_COPIES``)."""
    itemsize = 16 if complex_ else 8
    copies = _DENSE_COPIES + (_DENSE_VECTOR_COPIES if vectors else 0)
    return float(copies) * itemsize * float(nk) * float(norb) ** 2


def check_dense_memory(norb: int, nk: int = 1, vectors: bool = False, complex_: bool = True,
                       what: str = "dense diagonalisation") -> float:
    """Raise :class:`DenseMemoryError` naming the estimated memory (GB) if a dense ``what`` of ``nk`` matrices of
    ``norb`` orbitals would not fit in :func:`available_memory_bytes`; otherwise return the estimate (bytes)."""
    need = dense_memory_bytes(norb, nk, vectors, complex_)
    have = available_memory_bytes()
    if need > have:
        raise DenseMemoryError(
            f"{what} of {norb:,} orbitals ({nk} k-point{'s' if nk != 1 else ''} at once) needs about "
            f"{need / 1e9:,.1f} GB but only {have / 1e9:,.1f} GB is available; ask for the bands near an energy "
            f"with the sparse solver instead (eigenvalues(kpts, num=..., near=...), band_structure(num=...)), or "
            f"the DOS by the kernel polynomial method (dos(method='kpm'))"
        )
    return need


# ---------------------------------------------------------------------------------------------------- dense
def eigvalsh_dense(H_kij: np.ndarray) -> np.ndarray:
    """Eigenvalues (eV) of a batch of Hermitian matrices ``H_kij`` (nk, n, n) → ``e_kn`` (nk, n), ascending.

    Raises ValueError if a matrix is not Hermitian (beyond 1e-8 relative), since LAPACK would silently read
    only one triangle.
    """
    H_kij = np.asarray(H_kij)
    if H_kij.ndim != 3 or H_kij.shape[1] != H_kij.shape[2]:
        raise ValueError(f"H_kij must have shape (nk, n, n), got {H_kij.shape}")
    for k in range(len(H_kij)):
        _check_hermitian_dense(H_kij[k], f"H_kij[{k}]")
    return np.linalg.eigvalsh(H_kij)


def _check_hermitian_dense(H: np.ndarray, name: str) -> None:
    if not np.all(np.isfinite(H)):
        raise ValueError(f"{name} has non-finite entries")
    dev = np.abs(H - H.conj().T)
    worst = np.unravel_index(int(np.argmax(dev)), dev.shape) if dev.size else (0, 0)
    if dev.size and dev[worst] > _HERMITIAN_TOL * max(1.0, float(np.abs(H).max())):
        raise ValueError(f"{name} is not Hermitian: |H[{worst[0]},{worst[1]}] - conj(H[{worst[1]},{worst[0]}])| "
                         f"= {dev[worst]:.3g} eV")


def _eigh_near_dense(H: np.ndarray, num: int, near: float, return_vectors: bool):
    _check_hermitian_dense(H, "H")
    if return_vectors:
        e, v = scipy.linalg.eigh(H)
    else:
        e, v = scipy.linalg.eigh(H, eigvals_only=True), None
    pick = np.sort(np.argsort(np.abs(e - near), kind="stable")[:num])
    return (e[pick], v[:, pick]) if return_vectors else e[pick]


# ---------------------------------------------------------------------------------------------------- eigen
@dataclass
class NearResult:
    """Eigenpairs nearest an energy: ``values`` (num,) eV ascending, ``vectors`` (norb, num) or None,
    ``method`` used, ``solves`` (right-hand sides solved), ``residual`` max ‖H y − λ y‖ (eV, NaN if dense)."""

    values: np.ndarray
    vectors: np.ndarray | None
    method: str
    solves: int = 0
    residual: float = float("nan")
    subspace: np.ndarray | None = None


_TRANSPOSES: dict = {}  # pattern digest → permutation p with (Aᵀ).data = A.data[p] (symmetric canonical patterns)


def _check_hermitian_sparse(H: sp.csr_matrix) -> float:
    """ValueError naming the worst element unless H = Hᴴ to 1e-8 × max(1, max|H|); returns max(1, max|H|) (eV).

    For a canonical CSR with a symmetric pattern (every H(k) of a TightBinding) the comparison is one gather
    with a transpose permutation cached per pattern (a sparse H − Hᴴ cost 0.3 s per k-point at 3 M entries)."""
    if not np.all(np.isfinite(H.data)):
        raise ValueError("H has non-finite entries")
    scale = max(1.0, float(np.abs(H.data).max())) if H.nnz else 1.0
    if H.nnz and H.has_canonical_format:
        key = _pattern_key(H, "T")
        if key not in _TRANSPOSES:
            T = sp.csr_matrix((np.arange(H.nnz, dtype=np.int64), H.indices, H.indptr), shape=H.shape).T.tocsr()
            T.sort_indices()
            symmetric = np.array_equal(T.indptr, H.indptr) and np.array_equal(T.indices, H.indices)
            if len(_TRANSPOSES) >= _ORDERINGS_SIZE:
                _TRANSPOSES.pop(next(iter(_TRANSPOSES)))
            _TRANSPOSES[key] = T.data if symmetric else None
        perm = _TRANSPOSES[key]
        if perm is not None:
            dev = np.abs(H.data - np.conj(H.data[perm]))
            worst = int(np.argmax(dev))
            if dev[worst] > _HERMITIAN_TOL * scale:
                i = int(np.searchsorted(H.indptr, worst, side="right") - 1)
                j = int(H.indices[worst])
                raise ValueError(f"H is not Hermitian: |H[{i},{j}] - conj(H[{j},{i}])| = {dev[worst]:.3g} eV")
            return scale
    D = abs(H - H.conj().T)
    if D.nnz and D.max() > _HERMITIAN_TOL * scale:
        i, j = np.unravel_index(int(D.argmax()), D.shape)
        raise ValueError(f"H is not Hermitian: |H[{i},{j}] - conj(H[{j},{i}])| = {D.max():.3g} eV")
    return scale


#: Environment variable overriding the default number of PARDISO threads, ``min(2, os.cpu_count())``.
WORKERS_ENV = "ASE_WANNIERML_NUM_THREADS"
#: Method names: "sparse" (PARDISO-preconditioned Davidson); "multifrontal" is accepted as its former name.
_SPARSE_NAMES = ("sparse", "multifrontal")


def resolve_workers(workers: int | None = None) -> int:
    """Threads of the sparse factorisations: ``workers`` if given, else ``$ASE_WANNIERML_NUM_THREADS``, else
    ``min(2, os.cpu_count())``, or 1 while the load average leaves no core free (``threads.machine_is_busy``:
    PARDISO's OpenMP threads then wait for each other; learned 1.05° factor at load 6, 8 right-hand sides: 8.7 ms
    per vector on 1 thread, 19.6 on 2); ValueError if not a positive integer."""
    import os

    from ..threads import machine_is_busy

    if workers is None:
        env = os.environ.get(WORKERS_ENV, "").strip()
        if env:
            try:
                workers = int(env)
            except ValueError:
                raise ValueError(f"{WORKERS_ENV} must be a positive integer, got {env!r}") from None
        else:
            workers = 1 if machine_is_busy() else min(2, os.cpu_count() or 1)
    workers = int(workers)
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    return workers


def shifted_csr(H: sp.spmatrix, sigma: float) -> sp.csr_matrix:
    """Canonical CSR of H − σ I (eV) with the full diagonal stored (the pattern is σ-independent)."""
    n = H.shape[0]
    A = sp.csr_matrix(H, copy=True)
    A = (A + sp.identity(n, dtype=A.dtype, format="csr") * (1.0 - sigma)).tocsr()
    A = A - sp.identity(n, dtype=A.dtype, format="csr")  # keeps explicit diagonal entries
    A.sum_duplicates()
    A.sort_indices()
    return A


_ORDERINGS: dict = {}  # METIS orderings by (pattern digest, arithmetic): the k-points of a TightBinding share one
_ORDERINGS_SIZE = 8


def _pardiso_factor(A: sp.csr_matrix, single: bool, workers: int | None, inertia: bool = False,
                    reuse: PardisoFactor | None = None) -> PardisoFactor:
    """PARDISO factor of the Hermitian ``A``: ``reuse``'s analysis if it was made for the same pattern, arithmetic
    and precision (numerical phase only), else a new analysis with the cached METIS ordering of the pattern."""
    workers = resolve_workers(workers)
    embedded = bool(inertia and np.iscomplexobj(A.data))
    if (reuse is not None and reuse.single == bool(single) and reuse.embedded == embedded
            and reuse.workers == workers and reuse.n == A.shape[0]):
        try:
            reuse.refactor(A)
            return reuse
        except ValueError:  # another pattern or arithmetic: analyse afresh
            pass
    U = upper_csr(A)
    key = _pattern_key(U, np.iscomplexobj(U.data), bool(inertia and np.iscomplexobj(U.data)))
    perm = _ORDERINGS.get(key)
    factor = PardisoFactor(A, workers=workers, inertia=inertia, perm=perm, single=single)
    if perm is None:
        if len(_ORDERINGS) >= _ORDERINGS_SIZE:
            _ORDERINGS.pop(next(iter(_ORDERINGS)))
        _ORDERINGS[key] = factor.perm
    return factor


def _factor_near(H: sp.csr_matrix, near: float, scale: float, single: bool, workers: int | None = None,
                 reuse: PardisoFactor | None = None) -> tuple[PardisoFactor, float]:
    """Factorise H − σ with σ = near, nudged by 1e-7 × ``scale`` if H − near is singular to working precision
    (PARDISO error, or a solve growth ‖(H − σ)⁻¹ b‖/‖b‖ above 1/(``SINGULAR_SHIFT_RTOL`` × scale): the rounding of
    a near-zero pivot then decides the result); ``workers`` threads (None: :func:`resolve_workers`). A
    single-precision factor that solves too inaccurately raises LinAlgError (the caller refactorises in double
    precision)."""
    for nudge in (0.0, 1e-7, -3e-7):
        sigma = near + nudge * scale
        A = shifted_csr(H, sigma)
        try:
            factor = _pardiso_factor(A, single, workers, reuse=reuse)
        except np.linalg.LinAlgError:
            continue
        if _check_factor(factor, A, single, scale):
            return factor, sigma
    raise np.linalg.LinAlgError(f"H - {near} eV stays singular after shifting; is the matrix degenerate?")


#: The shift is nudged when a random right-hand side grows by more than 1/(SINGULAR_SHIFT_RTOL × max|H|) under
#: (H − σ)⁻¹, i.e. σ lies within about that relative distance of an eigenvalue (the growth overestimates the
#: distance by ~√n, so this is conservative). At an exact eigenvalue the measured growth is ~1e11/eV; the nudge
#: (1e-7 × max|H|) keeps it below 1e9.
SINGULAR_SHIFT_RTOL = 1e-9


#: A single-precision factor whose solve of a random right-hand side leaves a larger relative residual is not
#: used (the caller refactorises in double precision): with flat bands, fronts restricted to a region where the
#: states are localised can be nearly singular at σ, and without pivoting across fronts the single-precision
#: factor of the learned 1.05° TBG Hamiltonian gave residuals ~100 (Davidson then stalls for hundreds of
#: iterations before falling back), where double precision still gives ~1e-5. Residuals up to ~0.15 (the
#: single-precision factor of the learned 1.05° H at k = (0.1, 0.2, 0) with entries < 10 meV dropped) precondition
#: as well as the double-precision factor (105 vs 96 solves) at half the factorisation time, hence 0.3.
SINGLE_FACTOR_MAX_RESIDUAL = 0.3


def _check_factor(factor: PardisoFactor, A: sp.csr_matrix, single: bool, scale: float) -> bool:
    """One solve x = factor⁻¹ b (b random): False if the shift must be nudged (growth ‖x‖/‖b‖ above
    1/(SINGULAR_SHIFT_RTOL × ``scale``), or a double-precision overflow); LinAlgError if a single-precision
    factor overflows or leaves ‖A x − b‖/‖b‖ > SINGLE_FACTOR_MAX_RESIDUAL; otherwise True."""
    b = np.random.default_rng(12345).standard_normal(A.shape[0]).astype(A.dtype)
    x = factor.solve(b).astype(A.dtype)
    finite = bool(np.all(np.isfinite(x)))
    if single and not finite:
        raise np.linalg.LinAlgError("single-precision factor too inaccurate (the solve overflowed)")
    nb = np.linalg.norm(b)
    if not (finite and np.linalg.norm(x) / nb * SINGULAR_SHIFT_RTOL * scale < 1.0):
        return False
    residual = float(np.linalg.norm(A @ x - b) / nb)
    if single and not residual <= SINGLE_FACTOR_MAX_RESIDUAL:
        raise np.linalg.LinAlgError(f"single-precision factor too inaccurate (relative residual {residual:.2g})")
    return True


def _orthonormalize(W: np.ndarray, Q: np.ndarray | None) -> np.ndarray:
    """Columns of W orthogonalised against the orthonormal Q (twice) and orthonormalised; dependent ones dropped."""
    norm0 = np.linalg.norm(W, axis=0).max(initial=0.0)
    for _ in range(2):
        if Q is not None and Q.shape[1]:
            W = W - Q @ (Q.conj().T @ W)
    Wq, Rw = np.linalg.qr(W)
    keep = np.abs(np.diag(Rw)) > 1e-10 * max(norm0, 1e-300)
    return Wq[:, keep]


class DavidsonNotConverged(np.linalg.LinAlgError):
    """Davidson ran out of iterations; ``subspace`` (n, m) holds its Ritz vectors nearest σ, a start for a retry
    with a better preconditioner (the work done is not lost)."""

    subspace: np.ndarray | None = None
    solves: int = 0


def _davidson_near(H: sp.csr_matrix, factor: PardisoFactor, sigma: float, num: int, block: int,
                   tol: float, max_iter: int, seed: int, start: np.ndarray | None = None,
                   max_solves: int | None = None) -> NearResult:
    """:func:`_davidson_iterate` with one BLAS thread: its dense work is small (subspace eigh, block solves of
    ≤ BLOCK_SIZE vectors), and on a busy 2-core machine OpenBLAS's spinning threads made it 30–200× slower
    (a 508-orbital Fermi-level window: 30 s → 0.2 s)."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1, user_api="blas"):
        return _davidson_iterate(H, factor, sigma, num, block, tol, max_iter, seed, start, max_solves,
                                 matmul=_row_block_matmul(H, getattr(factor, "workers", 1)))


#: Below this many stored entries H·V runs in the calling thread (a thread hand-off costs more than it saves).
THREADED_MATMUL_MIN_NNZ = 200_000
_POOL: dict = {}


def _row_block_matmul(H: sp.csr_matrix, workers: int):
    """H @ V with the rows of H split over ``workers`` threads (scipy's sparse products release the GIL): 1.05°
    learned H (3.3 M entries) times 16 vectors, idle 2-core machine: 45 ms on 1 thread, 23 ms on 2."""
    if workers <= 1 or H.nnz < THREADED_MATMUL_MIN_NNZ:
        return H.__matmul__
    from concurrent.futures import ThreadPoolExecutor

    if _POOL.get("workers") != workers:
        if "pool" in _POOL:
            _POOL["pool"].shutdown(wait=False)
        _POOL.update(pool=ThreadPoolExecutor(workers, thread_name_prefix="ase_wannierml-matmul"), workers=workers)
    pool = _POOL["pool"]
    bounds = np.searchsorted(H.indptr, np.linspace(0, H.nnz, workers + 1)[1:-1])  # equal entries per block
    edges = np.concatenate([[0], bounds, [H.shape[0]]]).astype(int)
    blocks = [H[a:b] for a, b in zip(edges[:-1], edges[1:])]

    def matmul(V: np.ndarray) -> np.ndarray:
        return np.concatenate([f.result() for f in [pool.submit(B.__matmul__, V) for B in blocks]], axis=0)

    return matmul


def _davidson_iterate(H: sp.csr_matrix, factor: PardisoFactor, sigma: float, num: int, block: int,
                      tol: float, max_iter: int, seed: int, start: np.ndarray | None = None,
                      max_solves: int | None = None, matmul=None) -> NearResult:
    """``num`` eigenpairs of H nearest σ: Davidson with the shift-invert preconditioner (H − σ)⁻¹ ≈ ``factor``.

    Rayleigh–Ritz and residuals use H in double precision, so the factor may be single precision: it only sets
    the convergence rate. With an exact factor this spans the same space as shift-invert Lanczos. A pair counts
    as converged when its residual r = ‖H y − θ y‖ satisfies r ≤ ``tol`` or (r ≤ 1e3·tol and r²/gap ≤ tol), gap =
    distance to the nearest Ritz value outside the wanted set (the eigenvalue error is ≲ r²/gap).
    ``start`` (n, m): initial subspace (e.g. the eigenvectors of a neighbouring k-point) instead of one
    preconditioned random block; the factor may then belong to a nearby matrix (only the rate changes).
    """
    n = H.shape[0]
    rng = np.random.default_rng(seed)
    dtype = complex if np.iscomplexobj(H.data) else float
    solves = 0
    V = None if start is None else _orthonormalize(np.asarray(start).astype(dtype), None)
    if V is None or V.shape[1] < min(num, n):
        extra = rng.standard_normal((n, block)).astype(dtype)
        if dtype is complex:
            extra += 1j * rng.standard_normal((n, block))
        extra = _orthonormalize(_apply(factor, extra, dtype), V)  # one inverse-iteration step to start
        solves += block
        V = extra if V is None else np.concatenate([V, extra], axis=1)
    matmul = H.__matmul__ if matmul is None else matmul  # H @ V (``_row_block_matmul``: threaded)
    HV = matmul(V)
    G = _herm(V.conj().T @ HV)  # projected H, kept up to date column block by column block
    max_basis = num + max(MAX_BASIS_EXTRA, 4 * block)
    for _ in range(max_iter):
        theta, S = np.linalg.eigh(G)
        order = np.argsort(np.abs(theta - sigma), kind="stable")
        want, rest = order[:num], order[num:]
        Y, HY = V @ S[:, want], HV @ S[:, want]
        R = HY - Y * theta[want]
        res = np.linalg.norm(R, axis=0)
        gap = (np.abs(theta[want][:, None] - theta[rest][None, :]).min(axis=1) if len(rest)
               else np.zeros(len(want)))
        done = (res <= tol) | ((res <= 1e3 * tol) & (res**2 <= tol * gap))
        converged = len(want) == num and (np.all(done) or V.shape[1] >= n)
        if converged:
            break
        if max_solves is not None and solves >= max_solves:
            break
        todo = np.flatnonzero(~done)[:block]
        T = _apply(factor, R[:, todo], dtype)
        solves += len(todo)
        if V.shape[1] + len(todo) > max_basis:  # thick restart on the Ritz vectors nearest σ
            keep = order[:max_basis // 2]
            V, HV, G = V @ S[:, keep], HV @ S[:, keep], np.diag(theta[keep]).astype(dtype)
        T = _orthonormalize(T, V)
        if T.shape[1] == 0:  # stagnation: enrich with a random direction
            T = _orthonormalize(rng.standard_normal((n, 1)).astype(dtype), V)
        HT = matmul(T)
        C = V.conj().T @ HT
        G = np.block([[G, C], [C.conj().T, _herm(T.conj().T @ HT)]])
        V, HV = np.concatenate([V, T], axis=1), np.concatenate([HV, HT], axis=1)
    if not converged:
        error = DavidsonNotConverged(f"Davidson did not converge in {max_iter} iterations / {solves} solves: residuals "
                                     f"{np.array2string(res, precision=2)} eV, tol {tol:.1e} eV")
        theta, S = np.linalg.eigh(G)  # V grew after the last Rayleigh–Ritz: redo it on the whole basis
        order = np.argsort(np.abs(theta - sigma), kind="stable")
        error.subspace = V @ S[:, order[:num + START_EXTRA]]  # the best vectors so far: a restart's start
        error.solves = solves
        raise error
    vals, Z = np.linalg.eigh(_herm(Y.conj().T @ HY))  # Rayleigh–Ritz on the converged vectors
    result = NearResult(vals, Y @ Z, "sparse", solves, float(np.max(res)))
    if START_EXTRA > 0 and len(rest):
        result.subspace = V @ S[:, order[:num + START_EXTRA]]
    return result


def _apply(factor: PardisoFactor, B: np.ndarray, dtype: type) -> np.ndarray:
    """factor⁻¹ B in double precision; LinAlgError on overflow (a near-singular single-precision front)."""
    X = factor.solve(B).astype(dtype)
    if not np.all(np.isfinite(X)):
        raise np.linalg.LinAlgError("the shift-invert preconditioner overflowed")
    return X


def _herm(M: np.ndarray) -> np.ndarray:
    return (M + M.conj().T) / 2


#: The preconditioner factorised by default is H without its entries |H_ij| < PRECONDITIONER_DROP (eV; the diagonal
#: is kept), if that removes at least PRECONDITIONER_MIN_REMOVED of them: long-range hoppings cause most of the fill
#: (1.05° TBG, learned model, 12 Å pairs: 3.3 M entries, L 17 M; dropped below 10 meV: 0.54 M, L 4.9 M) while
#: barely moving the spectrum, so Davidson needs a few more, much cheaper solves (the eigenpairs stay those of H).
#: The entries dropped are chosen once per sparsity pattern (at its first matrix), so every k-point of a
#: TightBinding shares the preconditioner's pattern and METIS ordering. 0 disables.
PRECONDITIONER_DROP = 1e-2
PRECONDITIONER_MIN_REMOVED = 0.3
_MASKS: dict = {}  # pattern digest → kept-entry mask (or None: factorise H itself)


def _pattern_key(A: sp.csr_matrix, *extra) -> tuple:
    import hashlib

    h = hashlib.blake2b(digest_size=16)
    indptr, indices = np.ascontiguousarray(A.indptr), np.ascontiguousarray(A.indices)
    h.update(indptr)  # the buffers themselves (no copy); their dtypes are part of the key
    h.update(indices)
    return (h.hexdigest(), A.shape, indptr.dtype.str, indices.dtype.str) + extra


def default_preconditioner(H: sp.csr_matrix) -> sp.csr_matrix:
    """The matrix factorised as the shift-invert preconditioner of ``H`` (norb, norb): H without the entries below
    ``PRECONDITIONER_DROP`` eV chosen at the first matrix of this sparsity pattern (see there), or H itself."""
    if PRECONDITIONER_DROP <= 0:
        return H
    key = _pattern_key(H, PRECONDITIONER_DROP)
    if key not in _MASKS:
        rows = np.repeat(np.arange(H.shape[0]), np.diff(H.indptr))
        mask = (np.abs(H.data) >= PRECONDITIONER_DROP) | (rows == H.indices)
        if len(_MASKS) >= _ORDERINGS_SIZE:
            _MASKS.pop(next(iter(_MASKS)))
        _MASKS[key] = mask if mask.size and 1.0 - mask.mean() >= PRECONDITIONER_MIN_REMOVED else None
    mask = _MASKS[key]
    if mask is None:
        return H
    counts = np.add.reduceat(mask.astype(np.int64), H.indptr[:-1]) if H.nnz else np.zeros(H.shape[0], np.int64)
    counts[np.diff(H.indptr) == 0] = 0  # reduceat repeats the next value for empty rows
    indptr = np.concatenate([[0], np.cumsum(counts)])
    return sp.csr_matrix((H.data[mask], H.indices[mask], indptr), shape=H.shape)


def _near_sparse(H: sp.csr_matrix, num: int, near: float, scale: float, block: int, tol: float, seed: int,
                 single: bool, workers: int | None = None, exact: bool = False) -> NearResult:
    """Fresh factorisation (of the default preconditioner, or of H if ``exact``) and Davidson."""
    factor, sigma = _factor_near(H if exact else default_preconditioner(H), near, scale, single=single,
                                 workers=workers)
    want = min(H.shape[0], num if sigma == near else num + 2)  # nudged shift: spares, then the nearest to `near`
    return _davidson_near(H, factor, sigma, want, block, tol, max_iter=MAX_ITER, seed=seed)


def _check_method(method: str) -> str:
    if method not in ("auto", "dense") + _SPARSE_NAMES:
        raise ValueError(f"unknown method {method!r}; use 'auto', 'dense' or 'sparse'")
    return "sparse" if method in _SPARSE_NAMES else method


def solve_near_auto(H: sp.spmatrix | np.ndarray, num: int, near: float, return_vectors: bool = False,
                    method: str = "auto", tol: float | None = None, seed: int = 0,
                    workers: int | None = None) -> NearResult:
    """The ``num`` eigenpairs of Hermitian ``H`` (norb, norb) nearest ``near`` (eV), with the method reported.

    ``method``: "auto" (dense up to ``DENSE_MAX_ORBITALS`` orbitals or when num > norb/4, else "sparse"),
    "dense" or "sparse" ("multifrontal", the former name, means "sparse"). ``tol`` (eV, default 1e-9 × max(1, max|H|)) bounds the residual ‖H y − λ y‖, or
    its square over the gap to the unwanted spectrum, i.e. the eigenvalue error. ``workers``: threads of the
    factorisation and its solves (:func:`resolve_workers`; the result depends on it only by rounding).
    """
    if H.ndim != 2 or H.shape[0] != H.shape[1]:
        raise ValueError(f"H must be square (norb, norb), got shape {H.shape}")
    n = H.shape[0]
    if not 1 <= num <= n:
        raise ValueError(f"num must be in [1, {n}] (number of orbitals), got {num}")
    method = _check_method(method)
    if method == "auto":
        method = "dense" if n <= DENSE_MAX_ORBITALS or 4 * num > n else "sparse"
    if method == "dense":
        check_dense_memory(n, 1, vectors=return_vectors, complex_=np.iscomplexobj(H.data if sp.issparse(H) else H))
        Hd = H.toarray() if sp.issparse(H) else np.asarray(H)
        out = _eigh_near_dense(Hd, num, near, return_vectors)
        values, vectors = (out if return_vectors else (out, None))
        return NearResult(values, vectors, "dense")
    Hs = sp.csr_matrix(H)
    scale = _check_hermitian_sparse(Hs)
    tol = 1e-9 * scale if tol is None else float(tol)
    block = min(n, BLOCK_SIZE)
    try:
        result = _near_sparse(Hs, num, near, scale, block, tol, seed, single=True, workers=workers)
    except np.linalg.LinAlgError:  # single precision too inaccurate here: redo in double precision
        try:
            result = _near_sparse(Hs, num, near, scale, block, tol, seed, single=False, workers=workers)
        except np.linalg.LinAlgError:  # and with H itself
            result = _near_sparse(Hs, num, near, scale, block, tol, seed, single=False, workers=workers,
                                  exact=True)
    pick = np.sort(np.argsort(np.abs(result.values - near), kind="stable")[:num])
    result.values = result.values[pick]
    result.vectors = result.vectors[:, pick] if return_vectors else None
    return result


class NearSolver:
    """The ``num`` eigenvalues nearest ``near`` (eV) for a sequence of related matrices, e.g. H(k) along a band path.

    Keeps the single-precision PARDISO factorisation of H(k₀) − σ and uses it as the Davidson preconditioner
    for the following matrices, starting from the previous eigenvectors. The answer stays exact (Rayleigh–Ritz and
    residuals of each H in double precision, same ``tol`` as :func:`solve_near_auto`); only the number of solves
    grows with the distance to k₀. The factorisation is renewed when the extra solves spent since it was made would
    already have paid for a new one (measured refactorisation and solve times), or when Davidson with it exceeds
    its solve budget (1.5× a warm fresh solve plus a refactorisation's worth of solves, at most
    ``STALE_MAX_SOLVES_FACTOR``×); the new factor then continues from that attempt's Ritz vectors.
    Dense (``method="auto"`` on small matrices, or "dense") solves each matrix independently.

    ``solve(H, preconditioner=None)`` → :class:`NearResult` (vectors included unless dense); counters
    ``factorizations`` and ``solves`` record the work. ``preconditioner`` (norb, norb): a Hermitian matrix P ≈ H
    with a cheaper factorisation (e.g. the same H(k) from ``TightBinding.pruned``) factorised instead of H
    (default: :func:`default_preconditioner`; pass H itself to factorise H); the eigenpairs are still H's
    (residual-checked), only the number of solves changes. If Davidson fails with it, H is factorised in double
    precision.
    ``workers``: threads of the factorisations (see :func:`solve_near_auto`).
    """

    def __init__(self, num: int, near: float, method: str = "auto", tol: float | None = None, seed: int = 0,
                 reuse: bool = True, workers: int | None = None) -> None:
        method = _check_method(method)
        self.num, self.near, self.method, self.tol, self.seed, self.reuse = num, float(near), method, tol, seed, reuse
        self.workers = workers
        self.factorizations = 0
        self.solves = 0
        self._factor: PardisoFactor | None = None
        self._last: PardisoFactor | None = None  # last factor made (kept for its analysis)
        self._sigma = self.near
        self._complex = False
        self._single_ok = True  # False once a single-precision factor failed its accuracy check
        self._vectors: np.ndarray | None = None
        self._t_factor = 0.0  # s, last factorisation
        self._t_solve = 0.0  # s per preconditioner solve, measured right after the last factorisation
        self._base_solves: int | None = None  # solves of the first warm-started solve with the current factor
        self._cold_solves = 1  # solves of the last solve with a fresh factor
        self._extra = 0.0  # s spent on solves beyond _base_solves since the last factorisation
        self._skip_stale = 0  # matrices still to factorise afresh without trying the kept factor
        self._backoff = 0  # length of the last such skip (doubles while kept factors keep failing)

    def reset(self) -> None:
        """Forget the factorisation and the previous eigenvectors (the next matrix starts afresh)."""
        self._factor, self._vectors, self._extra = None, None, 0.0
        self._skip_stale = self._backoff = 0

    def _refactor(self, H: sp.csr_matrix, scale: float, single: bool) -> None:
        """Factorise ``H`` − σ (``H``: the matrix or its preconditioner)."""
        import time

        t0 = time.perf_counter()
        single = single and self._single_ok
        try:
            self._factor, self._sigma = _factor_near(H, self.near, scale, single=single, workers=self.workers,
                                                     reuse=self._last)
        except np.linalg.LinAlgError:
            if not single:
                raise
            self._single_ok = False  # the same kind of matrix next time: go straight to double precision
            self._factor, self._sigma = _factor_near(H, self.near, scale, single=False, workers=self.workers,
                                                     reuse=self._last)
        analysed = self._factor is not self._last  # a new analysis (METIS ordering, symbolic), not a refactor
        self._last = self._factor  # its analysis serves the next factorisation of the same pattern
        # the cost of the next refactorisation: this one's, without a one-off analysis
        self._t_factor = time.perf_counter() - t0 - (self._factor.t_analysis if analysed else 0.0)
        self._complex = np.iscomplexobj(H.data)
        self.factorizations += 1
        self._extra = 0.0

    def solve(self, H: sp.spmatrix | np.ndarray, preconditioner: sp.spmatrix | None = None) -> NearResult:
        """Eigenpairs of Hermitian ``H`` (norb, norb) nearest ``near``: values (num,) ascending, vectors (norb, num);
        ``preconditioner``: see the class docstring."""
        import time

        n = H.shape[0]
        method = self.method
        if method == "auto":
            method = "dense" if n <= DENSE_MAX_ORBITALS or 4 * self.num > n else "sparse"
        if method == "dense" or not self.reuse:
            result = solve_near_auto(H, self.num, self.near, return_vectors=method != "dense", method=method,
                                     tol=self.tol, seed=self.seed, workers=self.workers)
            self.solves += result.solves
            self.factorizations += result.method == "sparse"
            return result
        if not 1 <= self.num <= n:
            raise ValueError(f"num must be in [1, {n}] (number of orbitals), got {self.num}")
        Hs = sp.csr_matrix(H)
        scale = _check_hermitian_sparse(Hs)
        tol = 1e-9 * scale if self.tol is None else float(self.tol)
        if self._vectors is not None and self._vectors.shape[0] != n:
            self.reset()
        if self._factor is not None and self._factor.n != n:
            self.reset()
        if preconditioner is not None:
            P = sp.csr_matrix(preconditioner)
            if P.shape != Hs.shape:
                raise ValueError(f"preconditioner has shape {P.shape}, H {Hs.shape}")
            if np.iscomplexobj(Hs.data) and not np.iscomplexobj(P.data):
                P = P.astype(complex)
        else:
            P = default_preconditioner(Hs)
        fresh = self._factor is None or self._skip_stale > 0
        if fresh:
            self._skip_stale = max(0, self._skip_stale - 1)
            self._refactor(P, scale, single=True)
        if self._complex or (self._vectors is not None and np.iscomplexobj(self._vectors)):
            Hs = Hs.astype(complex)  # keep one arithmetic along the path (a real Γ between complex k-points)
        want = min(n, self.num if self._sigma == self.near else self.num + 2)
        block = min(n, BLOCK_SIZE)
        # a kept factor gets 1.5x the solves a fresh one needed plus as many more as a refactorisation costs in
        # solve time (at most STALE_MAX_SOLVES_FACTOR x): beyond that a new factor is cheaper, and the work done is
        # kept (Davidson continues from its vectors with the new factor)
        base = self._base_solves if self._base_solves is not None else self._cold_solves
        budget = min(1.5 * base + self._t_factor / max(self._t_solve, 1e-12), STALE_MAX_SOLVES_FACTOR * base)
        stale_solves = max(4 * block, int(np.ceil(budget)))
        result = None
        continued = False
        for attempt in range(3):
            t0 = time.perf_counter()
            start = self._vectors
            try:
                result = _davidson_near(Hs, self._factor, self._sigma, want, block, tol, MAX_ITER, self.seed,
                                        start=start, max_solves=None if fresh else stale_solves)
                if not fresh:
                    self._backoff = 0
                break
            except np.linalg.LinAlgError as error:  # stale or too inaccurate a factor: fresh, then double precision
                self.solves += getattr(error, "solves", 0)  # the work of the failed attempt counts too
                if not fresh:  # k-points too far apart for a kept factor: skip it for 1, 2, 4, 8 matrices
                    self._backoff = min(8, 2 * self._backoff) if self._backoff else 1
                    self._skip_stale = self._backoff
                    if getattr(error, "subspace", None) is not None:  # continue from where the kept factor got
                        self._vectors, continued = error.subspace, True
                else:  # a fresh factor failed (too inaccurate): start afresh in double precision
                    self._vectors = None
                self._refactor(P if attempt == 0 else Hs, scale, single=attempt == 0)
                want = min(n, self.num if self._sigma == self.near else self.num + 2)
                fresh = True
        if result is None:
            raise np.linalg.LinAlgError("Davidson failed even with a double-precision factorisation")
        elapsed = time.perf_counter() - t0
        self.solves += result.solves
        if fresh and not continued:
            self._t_solve = elapsed / max(1, result.solves)
            self._cold_solves = max(1, result.solves)
            # the reference for a kept factor is a warm start (previous vectors) with a fresh factor; a cold
            # start (random vectors) needs ~2x more, a continuation of a failed attempt far fewer: then the first
            # solve with the kept factor (one k-step away) sets it
            self._base_solves = None if start is None else self._cold_solves
        elif fresh:  # continued a failed attempt: the next solve with this factor sets the reference
            self._base_solves = None
        elif self._base_solves is None:
            self._base_solves = max(1, result.solves)
        else:
            self._extra += max(0, result.solves - self._base_solves) * self._t_solve
            if self._extra > self._t_factor:  # refactorising would have been cheaper: do it at the next matrix
                self._factor = None
        self._vectors = result.subspace if result.subspace is not None else result.vectors
        pick = np.sort(np.argsort(np.abs(result.values - self.near), kind="stable")[:self.num])
        result.values, result.vectors = result.values[pick], result.vectors[:, pick]
        return result


_COUNT_FACTOR: dict = {}  # the last inertia factorisation (one, reused for its analysis by the next count)


def count_eigenvalues_below(H: sp.spmatrix | np.ndarray, energy: float, workers: int | None = None) -> int:
    """Number of eigenvalues of Hermitian ``H`` (norb, norb) below ``energy`` (eV), exactly, without computing them.

    Up to ``DENSE_MAX_ORBITALS`` orbitals from the dense eigenvalues (LAPACK); above, Sylvester's law of inertia
    on PARDISO's LDLᴴ factorisation of H − energy in double precision (the signs of its pivots; a complex H through
    its real 2n embedding, which has each eigenvalue of H twice; a factorisation with perturbed pivots is not
    trusted: the shift moves), about one factorisation. An eigenvalue within rounding (~1e-10 × max|H|) of
    ``energy`` may be counted on either side; if H − energy is exactly singular the count is taken 1e-10 × max|H| lower.
    With band indices from this count, the states returned by the near solver become absolute bands
    (``flatbands``) and an insulator's Fermi level can be put exactly in its gap.

    Example:
        >>> import numpy as np, scipy.sparse as sp
        >>> count_eigenvalues_below(sp.diags([np.arange(10.0)], [0], format="csr"), 4.5)
        5
    """
    if H.ndim != 2 or H.shape[0] != H.shape[1]:
        raise ValueError(f"H must be square (norb, norb), got shape {H.shape}")
    n = H.shape[0]
    if n == 0:
        return 0
    sparse = sp.issparse(H)
    if sparse:
        Hs = sp.csr_matrix(H)
        scale = _check_hermitian_sparse(Hs)
    else:
        Hd = np.asarray(H)
        _check_hermitian_dense(Hd, "H")
        scale = max(1.0, float(np.abs(Hd).max()))
    if n <= DENSE_MAX_ORBITALS:
        dense = Hs.toarray() if sparse else Hd
        e = np.linalg.eigvalsh(dense.astype(np.result_type(dense.dtype, np.float64)))
        return int(np.count_nonzero(e < float(energy)))
    for shift in (0.0, -1e-10, -3e-10):
        sigma = float(energy) + shift * scale
        try:
            A = shifted_csr(Hs, sigma)
            factor = _pardiso_factor(A, single=False, workers=workers, inertia=True, reuse=_COUNT_FACTOR.get("last"))
            _COUNT_FACTOR["last"] = factor  # its analysis serves the next count of the same pattern (other k)
            if factor.perturbed_pivots:
                continue
            return int(factor.negative_eigenvalues)
        except np.linalg.LinAlgError:
            continue
    raise np.linalg.LinAlgError(f"H - {energy} eV stays singular after shifting; is the matrix degenerate?")


def eigvalsh_near(H: sp.spmatrix | np.ndarray, num: int, near: float, return_vectors: bool = False,
                  method: str = "auto", workers: int | None = None):
    """The ``num`` eigenvalues (eV, ascending, shape (num,)) of Hermitian ``H`` (norb, norb) nearest ``near``.

    With ``return_vectors=True`` returns (values (num,), vectors (norb, num)). Dense for small matrices, otherwise
    Davidson with a PARDISO shift-invert preconditioner (see the module docstring, :func:`solve_near_auto`).
    """
    result = solve_near_auto(H, num, near, return_vectors=return_vectors, method=method, workers=workers)
    return (result.values, result.vectors) if return_vectors else result.values
