"""Hermitian eigen-solvers for tight-binding Hamiltonians: batched dense, and a few eigenvalues near an energy.

Sparse route ("multifrontal", the default above ``DENSE_MAX_ORBITALS``): shift-invert block Lanczos on
(H − σ)⁻¹ with a sparse direct factorisation of H − σ of our own:

1. nested-dissection ordering of the sparsity graph (level-set separators, refined), computed once per
   sparsity pattern and cached (every k-point of a ``TightBinding`` shares the pattern);
2. multifrontal factorisation: each separator is one dense front, factorised with LAPACK LU (pivoting inside
   the front) and Hermitian Schur updates by BLAS-3 products (lower triangle only); real arithmetic when H is
   real (time-reversal-invariant k);
3. block Lanczos with full re-orthogonalisation on (H − σ)⁻¹, blocks of right-hand sides solved together,
   final Rayleigh–Ritz with H and a residual check ‖H y − λ y‖ ≤ ``tol``.

Compared with ``scipy.sparse.linalg.eigsh(H, sigma=σ)`` (SuperLU with COLAMD ordering, one vector at a time),
this cuts the fill and uses BLAS-3 throughout; see ``benchmarks/band_solver.py`` for measured timings.

Energies in eV; matrices (norb, norb); eigenvalues returned sorted ascending.

Example:
    >>> import numpy as np, scipy.sparse as sp
    >>> H = sp.diags([np.arange(10.0)], [0], format="csr")
    >>> eigvalsh_near(H, 3, near=4.2).tolist()
    [3.0, 4.0, 5.0]
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
import scipy.linalg
import scipy.sparse as sp
from scipy.linalg import lapack
from scipy.sparse.csgraph import connected_components, dijkstra

__all__ = [
    "DENSE_MAX_ORBITALS",
    "MultifrontalFactor",
    "SymbolicFactorization",
    "eigvalsh_dense",
    "eigvalsh_near",
    "nested_dissection",
    "solve_near_auto",
]

#: Up to this many orbitals, ``solve_near_auto`` diagonalises densely (measured crossover, see band_solver.py).
DENSE_MAX_ORBITALS = 500
#: Fronts up to this size are nested-dissection leaves (dense blocks).
LEAF_SIZE = 64
#: Davidson block size (new preconditioned residuals per iteration) and iteration limit.
BLOCK_SIZE = 4
MAX_ITER = 400
_HERMITIAN_TOL = 1e-8  # eV, relative to max |H|
_PLAN_CACHE: "OrderedDict[tuple, SymbolicFactorization]" = OrderedDict()  # small LRU, keyed by sparsity pattern
_PLAN_CACHE_SIZE = 4


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


# ---------------------------------------------------------------------------------------------------- ordering
def nested_dissection(G: sp.spmatrix, leaf_size: int = LEAF_SIZE) -> list[tuple[np.ndarray, list[int]]]:
    """Nested-dissection tree of the symmetric sparsity graph ``G`` (n, n).

    Returns the nodes in post-order as (own vertex indices, child node ids): leaves own at most ``leaf_size``
    vertices; an inner node owns a separator (a BFS level set from a pseudo-peripheral vertex at half the
    vertices, shrunk by moving vertices that touch only one side). Children come before their parent.
    """
    G = sp.csr_matrix((np.ones(G.nnz, dtype=np.int8), G.indices, G.indptr), shape=G.shape)
    nodes: list[tuple[np.ndarray, list[int]]] = []
    _dissect(G, np.arange(G.shape[0]), leaf_size, nodes)
    return nodes


def _dissect(G: sp.csr_matrix, idx: np.ndarray, leaf_size: int, nodes: list) -> int:
    """Append the subtree of vertex set ``idx`` to ``nodes`` (post-order); return its root id."""
    if len(idx) <= leaf_size:
        nodes.append((idx, []))
        return len(nodes) - 1
    sub = G[idx][:, idx]
    ncomp, label = connected_components(sub, directed=False)
    if ncomp > 1:
        kids = [_dissect(G, idx[label == c], leaf_size, nodes) for c in range(ncomp)]
        nodes.append((np.zeros(0, dtype=np.int64), kids))
        return len(nodes) - 1
    level = _bfs_levels(sub)
    counts = np.bincount(level)
    if len(counts) < 3:  # too dense to dissect
        nodes.append((idx, []))
        return len(nodes) - 1
    cut = int(np.clip(np.searchsorted(np.cumsum(counts), len(idx) / 2), 1, len(counts) - 2))
    side = np.sign(level - cut)  # -1 low, 0 separator, +1 high
    coo = sub.tocoo()
    for target in (-1, 1):  # separator vertices with no neighbour on the other side join this side
        other = -target
        touches = np.zeros(len(idx), bool)
        touches[coo.row[side[coo.col] == other]] = True
        side[(side == 0) & ~touches] = target
    kids = [_dissect(G, idx[side == s], leaf_size, nodes) for s in (-1, 1) if np.any(side == s)]
    nodes.append((idx[side == 0], kids))
    return len(nodes) - 1


def _bfs_levels(sub: sp.csr_matrix) -> np.ndarray:
    """BFS distance (int) from a pseudo-peripheral vertex of a connected graph."""
    start, dist = 0, None
    for _ in range(4):
        dist = dijkstra(sub, unweighted=True, indices=start)
        far = int(np.argmax(dist))
        if dist[far] == 0 or far == start:
            break
        start = far
    dist = dijkstra(sub, unweighted=True, indices=start)
    return dist.astype(np.int64)


# ---------------------------------------------------------------------------------------------------- symbolic
@dataclass(frozen=True)
class _Front:
    start: int  # own variables are start..stop-1 in the permuted order
    stop: int
    update: np.ndarray  # (u,) permuted indices of ancestor variables in the front
    flat: np.ndarray  # assembly: flat index (row * front size + own column) of each original entry
    data_pos: np.ndarray  # position of the entry in the CSR data array of H - σ
    children: tuple[int, ...]
    child_rel: tuple[np.ndarray, ...]  # each child's update variables as positions in this front


class SymbolicFactorization:
    """Ordering and front structure of a Hermitian sparsity pattern (k-independent, reused for every k).

    ``pattern`` must be the canonical CSR (sorted indices, no duplicates) of H − σ with the full diagonal.
    """

    def __init__(self, pattern: sp.csr_matrix, leaf_size: int = LEAF_SIZE) -> None:
        n = pattern.shape[0]
        nodes = nested_dissection(pattern, leaf_size)
        self.perm = np.concatenate([own for own, _ in nodes]).astype(np.int64)  # new → old
        if len(self.perm) != n:
            raise ValueError("internal error: nested dissection lost vertices")
        self.iperm = np.empty(n, np.int64)
        self.iperm[self.perm] = np.arange(n)
        self.n, self.nnz = n, pattern.nnz
        starts = np.cumsum([0] + [len(own) for own, _ in nodes])
        tagged = sp.csr_matrix((np.arange(1, pattern.nnz + 1, dtype=np.int64), pattern.indices, pattern.indptr),
                               shape=pattern.shape)
        P = tagged[self.perm][:, self.perm].tocsc()
        P.sort_indices()
        self.fronts: list[_Front] = []
        updates: list[np.ndarray] = []
        for k, (_, kids) in enumerate(nodes):
            s, e = int(starts[k]), int(starts[k + 1])
            rows = P.indices[P.indptr[s]:P.indptr[e]]
            cols = np.repeat(np.arange(e - s), np.diff(P.indptr[s:e + 1]))
            pos = P.data[P.indptr[s]:P.indptr[e]] - 1
            keep = rows >= s  # lower triangle incl. own block; the rest follows from Hermiticity
            rows, cols, pos = rows[keep], cols[keep], pos[keep]
            parts = [rows[rows >= e]] + [updates[c][updates[c] >= e] for c in kids]
            update = np.unique(np.concatenate(parts)).astype(np.int64)
            updates.append(update)
            front = np.concatenate([np.arange(s, e), update])
            flat = np.searchsorted(front, rows) * len(front) + cols
            self.fronts.append(_Front(s, e, update, flat, pos, tuple(kids),
                                      tuple(np.searchsorted(front, updates[c]) for c in kids)))

    @property
    def factor_madds(self) -> float:
        """Estimated multiply-adds of one numeric factorisation (LU of each separator + Hermitian Schur update)."""
        total = 0.0
        for f in self.fronts:
            o, u = f.stop - f.start, len(f.update)
            total += 2 * o**3 / 3 + o * o * u + u * u * o / 2
        return total


def _pattern_key(A: sp.csr_matrix) -> tuple:
    h = hashlib.blake2b(digest_size=16)
    h.update(np.ascontiguousarray(A.indptr).view(np.uint8))
    h.update(np.ascontiguousarray(A.indices).view(np.uint8))
    return (A.shape, A.nnz, h.hexdigest())


def symbolic_for(A: sp.csr_matrix) -> SymbolicFactorization:
    """Cached :class:`SymbolicFactorization` of the pattern of ``A`` (canonical CSR with full diagonal)."""
    key = _pattern_key(A)
    if key in _PLAN_CACHE:
        _PLAN_CACHE.move_to_end(key)
        return _PLAN_CACHE[key]
    plan = SymbolicFactorization(A)
    _PLAN_CACHE[key] = plan
    while len(_PLAN_CACHE) > _PLAN_CACHE_SIZE:
        _PLAN_CACHE.popitem(last=False)
    return plan


# ---------------------------------------------------------------------------------------------------- numeric
_LAPACK = {np.dtype(t): (getattr(lapack, p + "getrf"), getattr(lapack, p + "getrs"))
           for t, p in ((np.float32, "s"), (np.float64, "d"), (np.complex64, "c"), (np.complex128, "z"))}


class MultifrontalFactor:
    """Numeric factorisation of a Hermitian sparse ``A`` (canonical CSR) on a :class:`SymbolicFactorization`.

    ``single=True`` factorises in single precision (float32/complex64: half the time and memory; use it as a
    preconditioner, not as an exact inverse). Real A gives real arithmetic throughout. ``solve(B)`` returns
    A⁻¹ B for B (n,) or (n, nrhs) in the factor's precision. Raises ``np.linalg.LinAlgError`` on an exactly
    singular front.
    """

    def __init__(self, symbolic: SymbolicFactorization, A: sp.csr_matrix, single: bool = False) -> None:
        if A.nnz != symbolic.nnz or A.shape[0] != symbolic.n:
            raise ValueError("matrix does not match the symbolic factorisation's pattern")
        self.symbolic = symbolic
        cplx = np.iscomplexobj(A.data)
        self.dtype = np.dtype((np.complex64 if single else complex) if cplx else (np.float32 if single else float))
        getrf, self._getrs = _LAPACK[self.dtype]
        data = A.data.astype(self.dtype)
        self._lu: list = []
        self._X: list = []  # F11⁻¹ F12 of each front, (o, u)
        pending: dict[int, np.ndarray] = {}
        for k, f in enumerate(symbolic.fronts):
            o, m = f.stop - f.start, f.stop - f.start + len(f.update)
            F = np.zeros((m, m), dtype=self.dtype)
            F.ravel()[f.flat] = data[f.data_pos]  # lower part of the own columns
            F[:o, o:] = F[o:, :o].conj().T
            for c, rel in zip(f.children, f.child_rel):
                _extend_add(F, pending.pop(c), rel)
            if o:
                lu, piv, info = getrf(F[:o, :o], overwrite_a=True)
                if info > 0:
                    raise np.linalg.LinAlgError(f"exactly singular front {k} (pivot {info})")
                X = self._getrs(lu, piv, F[:o, o:])[0] if m > o else np.zeros((o, 0), self.dtype)
            else:
                lu, piv, X = None, None, np.zeros((0, m), self.dtype)
            self._lu.append((lu, piv))
            self._X.append(X)
            if m > o:
                pending[k] = _hermitian_schur(F[o:, o:], F[o:, :o], X)

    def solve(self, B: np.ndarray) -> np.ndarray:
        """A⁻¹ B for B (n,) or (n, nrhs), computed in the factor's precision."""
        B = np.asarray(B)
        if np.iscomplexobj(B) and self.dtype.kind == "f":
            return self.solve(B.real) + 1j * self.solve(B.imag)
        sym = self.symbolic
        Y = np.array(B[sym.perm], dtype=self.dtype)
        vec = Y.ndim == 1
        Y = Y[:, None] if vec else Y
        getrs, cplx = self._getrs, self.dtype.kind == "c"
        for f, (lu, piv), X in zip(sym.fronts, self._lu, self._X):
            if f.stop == f.start:
                continue
            b_own = Y[f.start:f.stop].copy()
            Y[f.start:f.stop] = getrs(lu, piv, b_own)[0]
            if X.shape[1]:  # Y_upd -= X^H b_own without copying X
                Y[f.update] -= (X.T @ b_own.conj()).conj() if cplx else X.T @ b_own
        for f, X in zip(reversed(sym.fronts), reversed(self._X)):
            if X.shape[1] and f.stop > f.start:
                Y[f.start:f.stop] -= X @ Y[f.update]
        X_out = Y[sym.iperm]
        return X_out[:, 0] if vec else X_out


def _extend_add(F: np.ndarray, U: np.ndarray, rel: np.ndarray) -> None:
    """F[rel, rel] += U (rel sorted): by runs of consecutive rows for big updates (far faster than np.ix_),
    one flat scatter for small ones."""
    if len(rel) > 96:
        cuts = np.flatnonzero(np.diff(rel) != 1) + 1
        for a, b in zip(np.concatenate([[0], cuts]).tolist(), np.concatenate([cuts, [len(rel)]]).tolist()):
            r0 = int(rel[a])
            F[r0:r0 + b - a, rel] += U[a:b]
    elif len(rel):
        flat = (rel[:, None] * F.shape[1] + rel).ravel()
        Fr = F.ravel()
        Fr[flat] += U.ravel()


def _hermitian_schur(F22: np.ndarray, F21: np.ndarray, X: np.ndarray, block: int = 256) -> np.ndarray:
    """F22 − F21 @ X in place (Hermitian result): the lower block triangle is computed, the upper mirrored."""
    u = F22.shape[0]
    for j0 in range(0, u, block):
        j1 = min(u, j0 + block)
        F22[j0:, j0:j1] -= F21[j0:] @ X[:, j0:j1]
        F22[j0:j1, j1:] = F22[j1:, j0:j1].conj().T
    return F22


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


def _shifted(H: sp.spmatrix, sigma: float) -> sp.csr_matrix:
    """Canonical CSR of H − σ I with the full diagonal stored (the pattern is σ-independent)."""
    n = H.shape[0]
    A = sp.csr_matrix(H, copy=True)
    A = (A + sp.identity(n, dtype=A.dtype, format="csr") * (1.0 - sigma)).tocsr()
    A = A - sp.identity(n, dtype=A.dtype, format="csr")  # keeps explicit diagonal entries
    A.sum_duplicates()
    A.sort_indices()
    return A


def _check_hermitian_sparse(H: sp.csr_matrix) -> None:
    if not np.all(np.isfinite(H.data)):
        raise ValueError("H has non-finite entries")
    D = abs(H - H.conj().T)
    scale = max(1.0, float(abs(H).max())) if H.nnz else 1.0
    if D.nnz and D.max() > _HERMITIAN_TOL * scale:
        i, j = np.unravel_index(int(D.argmax()), D.shape)
        raise ValueError(f"H is not Hermitian: |H[{i},{j}] - conj(H[{j},{i}])| = {D.max():.3g} eV")


def _factor_near(H: sp.csr_matrix, near: float, scale: float, single: bool) -> tuple[MultifrontalFactor, float]:
    """Factorise H − σ with σ = near, nudged by a tiny amount if H − near is exactly singular."""
    for nudge in (0.0, 1e-7, -3e-7):
        sigma = near + nudge * scale
        A = _shifted(H, sigma)
        try:
            return MultifrontalFactor(symbolic_for(A), A, single=single), sigma
        except np.linalg.LinAlgError:
            continue
    raise np.linalg.LinAlgError(f"H - {near} eV stays singular after shifting; is the matrix degenerate?")


def _orthonormalize(W: np.ndarray, Q: np.ndarray | None) -> np.ndarray:
    """Columns of W orthogonalised against the orthonormal Q (twice) and orthonormalised; dependent ones dropped."""
    norm0 = np.linalg.norm(W, axis=0).max(initial=0.0)
    for _ in range(2):
        if Q is not None and Q.shape[1]:
            W = W - Q @ (Q.conj().T @ W)
    Wq, Rw = np.linalg.qr(W)
    keep = np.abs(np.diag(Rw)) > 1e-10 * max(norm0, 1e-300)
    return Wq[:, keep]


def _davidson_near(H: sp.csr_matrix, factor: MultifrontalFactor, sigma: float, num: int, block: int,
                   tol: float, max_iter: int, seed: int) -> NearResult:
    """``num`` eigenpairs of H nearest σ: Davidson with the shift-invert preconditioner (H − σ)⁻¹ ≈ ``factor``.

    Rayleigh–Ritz and residuals use H in double precision, so the factor may be single precision: it only sets
    the convergence rate. With an exact factor this spans the same space as shift-invert Lanczos. A pair counts
    as converged when its residual r = ‖H y − θ y‖ satisfies r ≤ ``tol`` or (r ≤ 1e3·tol and r²/gap ≤ tol), gap =
    distance to the nearest Ritz value outside the wanted set (the eigenvalue error is ≲ r²/gap).
    """
    n = H.shape[0]
    rng = np.random.default_rng(seed)
    dtype = complex if np.iscomplexobj(H.data) else float
    start = rng.standard_normal((n, block)).astype(dtype)
    if dtype is complex:
        start += 1j * rng.standard_normal((n, block))
    V = _orthonormalize(factor.solve(start).astype(dtype), None)  # one inverse-iteration step to start
    HV = H @ V
    G = _herm(V.conj().T @ HV)  # projected H, kept up to date column block by column block
    max_basis = max(6 * num, 4 * block + num, 48)
    solves = block
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
        if len(want) == num and (np.all(done) or V.shape[1] >= n):
            break
        todo = np.flatnonzero(~done)[:block]
        T = factor.solve(R[:, todo]).astype(dtype)
        solves += len(todo)
        if V.shape[1] + len(todo) > max_basis:  # thick restart on the Ritz vectors nearest σ
            keep = order[:max_basis // 2]
            V, HV, G = V @ S[:, keep], HV @ S[:, keep], np.diag(theta[keep]).astype(dtype)
        T = _orthonormalize(T, V)
        if T.shape[1] == 0:  # stagnation: enrich with a random direction
            T = _orthonormalize(rng.standard_normal((n, 1)).astype(dtype), V)
        HT = H @ T
        C = V.conj().T @ HT
        G = np.block([[G, C], [C.conj().T, _herm(T.conj().T @ HT)]])
        V, HV = np.concatenate([V, T], axis=1), np.concatenate([HV, HT], axis=1)
    else:
        raise np.linalg.LinAlgError(f"Davidson did not converge in {max_iter} iterations: residuals "
                                    f"{np.array2string(res, precision=2)} eV, tol {tol:.1e} eV")
    vals, Z = np.linalg.eigh(_herm(Y.conj().T @ HY))  # Rayleigh–Ritz on the converged vectors
    return NearResult(vals, Y @ Z, "multifrontal", solves, float(np.max(res)))


def _herm(M: np.ndarray) -> np.ndarray:
    return (M + M.conj().T) / 2


def _near_multifrontal(H: sp.csr_matrix, num: int, near: float, scale: float, block: int, tol: float, seed: int,
                       single: bool) -> NearResult:
    factor, sigma = _factor_near(H, near, scale, single=single)
    want = min(H.shape[0], num if sigma == near else num + 2)  # nudged shift: spares, then the nearest to `near`
    return _davidson_near(H, factor, sigma, want, block, tol, max_iter=MAX_ITER, seed=seed)


def solve_near_auto(H: sp.spmatrix | np.ndarray, num: int, near: float, return_vectors: bool = False,
                    method: str = "auto", tol: float | None = None, seed: int = 0) -> NearResult:
    """The ``num`` eigenpairs of Hermitian ``H`` (norb, norb) nearest ``near`` (eV), with the method reported.

    ``method``: "auto" (dense up to ``DENSE_MAX_ORBITALS`` orbitals or when num > norb/4, else "multifrontal"),
    "dense" or "multifrontal". ``tol`` (eV, default 1e-9 × max(1, max|H|)) bounds the residual ‖H y − λ y‖, or
    its square over the gap to the unwanted spectrum, i.e. the eigenvalue error.
    """
    if H.ndim != 2 or H.shape[0] != H.shape[1]:
        raise ValueError(f"H must be square (norb, norb), got shape {H.shape}")
    n = H.shape[0]
    if not 1 <= num <= n:
        raise ValueError(f"num must be in [1, {n}] (number of orbitals), got {num}")
    if method not in ("auto", "dense", "multifrontal"):
        raise ValueError(f"unknown method {method!r}; use 'auto', 'dense' or 'multifrontal'")
    if method == "auto":
        method = "dense" if n <= DENSE_MAX_ORBITALS or 4 * num > n else "multifrontal"
    if method == "dense":
        Hd = H.toarray() if sp.issparse(H) else np.asarray(H)
        out = _eigh_near_dense(Hd, num, near, return_vectors)
        values, vectors = (out if return_vectors else (out, None))
        return NearResult(values, vectors, "dense")
    Hs = sp.csr_matrix(H)
    _check_hermitian_sparse(Hs)
    scale = max(1.0, float(abs(Hs).max())) if Hs.nnz else 1.0
    tol = 1e-9 * scale if tol is None else float(tol)
    block = min(n, BLOCK_SIZE)
    try:
        result = _near_multifrontal(Hs, num, near, scale, block, tol, seed, single=True)
    except np.linalg.LinAlgError:  # single precision too inaccurate here: redo in double precision
        result = _near_multifrontal(Hs, num, near, scale, block, tol, seed, single=False)
    pick = np.sort(np.argsort(np.abs(result.values - near), kind="stable")[:num])
    result.values = result.values[pick]
    result.vectors = result.vectors[:, pick] if return_vectors else None
    return result


def eigvalsh_near(H: sp.spmatrix | np.ndarray, num: int, near: float, return_vectors: bool = False,
                  method: str = "auto"):
    """The ``num`` eigenvalues (eV, ascending, shape (num,)) of Hermitian ``H`` (norb, norb) nearest ``near``.

    With ``return_vectors=True`` returns (values (num,), vectors (norb, num)). Dense for small matrices, otherwise
    shift-invert block Lanczos on our multifrontal factorisation (see the module docstring, :func:`solve_near_auto`).
    """
    result = solve_near_auto(H, num, near, return_vectors=return_vectors, method=method)
    return (result.values, result.vectors) if return_vectors else result.values
