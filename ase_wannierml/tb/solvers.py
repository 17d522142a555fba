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
DENSE_MAX_ORBITALS = 600
#: Fronts up to this size are nested-dissection leaves (dense blocks).
LEAF_SIZE = 64
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
    rows: np.ndarray  # assembly: front row of each original entry in the own columns
    cols: np.ndarray  # own column (0..o-1) of each entry
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
            self.fronts.append(_Front(s, e, update, np.searchsorted(front, rows), cols, pos, tuple(kids),
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
class MultifrontalFactor:
    """Numeric factorisation of a Hermitian sparse ``A`` (canonical CSR) on a :class:`SymbolicFactorization`.

    ``solve(B)`` returns A⁻¹ B for B of shape (n,) or (n, nrhs). Real A gives real arithmetic throughout.
    Raises ``np.linalg.LinAlgError`` if a front is exactly singular.
    """

    def __init__(self, symbolic: SymbolicFactorization, A: sp.csr_matrix) -> None:
        if A.nnz != symbolic.nnz or A.shape[0] != symbolic.n:
            raise ValueError("matrix does not match the symbolic factorisation's pattern")
        self.symbolic = symbolic
        self.dtype = np.dtype(complex) if np.iscomplexobj(A.data) else np.dtype(float)
        cplx = self.dtype.kind == "c"
        getrf = lapack.zgetrf if cplx else lapack.dgetrf
        self._getrs = lapack.zgetrs if cplx else lapack.dgetrs
        data = A.data.astype(self.dtype, copy=False)
        self._lu: list = []
        self._X: list = []  # F11⁻¹ F12 of each front, (o, u)
        pending: dict[int, np.ndarray] = {}
        for k, f in enumerate(symbolic.fronts):
            o, u = f.stop - f.start, len(f.update)
            F = np.zeros((o + u, o + u), dtype=self.dtype)
            F[f.rows, f.cols] = data[f.data_pos]
            F[:o, o:] = F[o:, :o].conj().T
            for c, rel in zip(f.children, f.child_rel):
                Uc = pending.pop(c)
                if len(rel):
                    F[np.ix_(rel, rel)] += Uc
            if o:
                lu, piv, info = getrf(F[:o, :o], overwrite_a=True)
                if info > 0:
                    raise np.linalg.LinAlgError(f"exactly singular front {k} (pivot {info})")
                X = self._getrs(lu, piv, F[:o, o:])[0] if u else np.zeros((o, 0), self.dtype)
            else:
                lu, piv, X = None, None, np.zeros((0, u), self.dtype)
            self._lu.append((lu, piv))
            self._X.append(X)
            if u:
                pending[k] = _hermitian_schur(F[o:, o:], F[o:, :o], X)

    def solve(self, B: np.ndarray) -> np.ndarray:
        """A⁻¹ B for B (n,) or (n, nrhs)."""
        sym = self.symbolic
        Y = np.array(B[sym.perm], dtype=np.result_type(B.dtype, self.dtype))
        vec = Y.ndim == 1
        Y = Y[:, None] if vec else Y
        getrs = lapack.zgetrs if Y.dtype.kind == "c" else lapack.dgetrs
        for f, (lu, piv), X in zip(sym.fronts, self._lu, self._X):
            if f.stop == f.start:
                continue
            b_own = Y[f.start:f.stop].copy()
            Y[f.start:f.stop] = getrs(lu, piv, b_own)[0]
            if X.shape[1]:
                Y[f.update] -= X.conj().T @ b_own
        for f, X in zip(reversed(sym.fronts), reversed(self._X)):
            if X.shape[1] and f.stop > f.start:
                Y[f.start:f.stop] -= X @ Y[f.update]
        X_out = Y[sym.iperm]
        return X_out[:, 0] if vec else X_out


def _hermitian_schur(F22: np.ndarray, F21: np.ndarray, X: np.ndarray, block: int = 256) -> np.ndarray:
    """F22 − F21 @ X for Hermitian result, computing the lower block triangle only (about half the products)."""
    u = F22.shape[0]
    U = F22.copy()
    for j0 in range(0, u, block):
        j1 = min(u, j0 + block)
        U[j0:, j0:j1] -= F21[j0:] @ X[:, j0:j1]
        U[j0:j1, j1:] = U[j1:, j0:j1].conj().T
    return U


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


def _factor_near(H: sp.csr_matrix, near: float, scale: float) -> tuple[MultifrontalFactor, float]:
    """Factorise H − σ with σ = near, nudged by a tiny amount if H − near is exactly singular."""
    for nudge in (0.0, 1e-7, -3e-7):
        sigma = near + nudge * scale
        A = _shifted(H, sigma)
        try:
            return MultifrontalFactor(symbolic_for(A), A), sigma
        except np.linalg.LinAlgError:
            continue
    raise np.linalg.LinAlgError(f"H - {near} eV stays singular after shifting; is the matrix degenerate?")


def _orthonormalize(W: np.ndarray, Q: np.ndarray | None) -> np.ndarray:
    """Columns of W orthogonalised against Q (twice) and orthonormalised; near-dependent columns dropped."""
    for _ in range(2):
        if Q is not None and Q.shape[1]:
            W = W - Q @ (Q.conj().T @ W)
    Wq, Rw = np.linalg.qr(W)
    keep = np.abs(np.diag(Rw)) > 1e-10 * max(1.0, float(np.abs(np.diag(Rw)).max(initial=0.0)))
    return Wq[:, keep]


def _block_lanczos_near(H: sp.csr_matrix, factor: MultifrontalFactor, sigma: float, num: int, block: int,
                        tol: float, max_basis: int, seed: int) -> NearResult:
    """``num`` eigenpairs of H nearest σ by block Lanczos on (H − σ)⁻¹ (full re-orthogonalisation)."""
    n = H.shape[0]
    rng = np.random.default_rng(seed)
    cplx = factor.dtype.kind == "c" or np.iscomplexobj(H.data)
    V = rng.standard_normal((n, block)) + (1j * rng.standard_normal((n, block)) if cplx else 0.0)
    Q = _orthonormalize(V, None)
    W = np.zeros((n, 0), Q.dtype)
    solves, res, vals, Y = 0, np.inf, None, None
    while True:
        W_new = factor.solve(Q[:, W.shape[1]:])
        solves += W_new.shape[1]
        W = np.concatenate([W, W_new], axis=1)
        T = Q.conj().T @ W
        theta, S = np.linalg.eigh((T + T.conj().T) / 2)
        pick = np.argsort(-np.abs(theta))[:num]
        Y = Q @ S[:, pick]
        # Rayleigh–Ritz with H on the selected Ritz vectors gives accurate values and the residuals
        HY = H @ Y
        vals, Z = np.linalg.eigh(_herm(Y.conj().T @ HY))
        Y, HY = Y @ Z, HY @ Z
        res = float(np.linalg.norm(HY - Y * vals, axis=0).max())
        if res <= tol or Q.shape[1] >= min(n, max_basis):
            break
        Q_next = _orthonormalize(W_new, Q)
        if Q_next.shape[1] == 0:
            break
        Q = np.concatenate([Q, Q_next], axis=1)
    if res > tol:
        raise np.linalg.LinAlgError(f"block Lanczos did not converge: residual {res:.2e} eV > tol {tol:.1e} eV "
                                    f"with {Q.shape[1]} basis vectors")
    return NearResult(vals, Y, "multifrontal", solves, res)


def _herm(M: np.ndarray) -> np.ndarray:
    return (M + M.conj().T) / 2


def solve_near_auto(H: sp.spmatrix | np.ndarray, num: int, near: float, return_vectors: bool = False,
                    method: str = "auto", tol: float | None = None, seed: int = 0) -> NearResult:
    """The ``num`` eigenpairs of Hermitian ``H`` (norb, norb) nearest ``near`` (eV), with the method reported.

    ``method``: "auto" (dense up to ``DENSE_MAX_ORBITALS`` orbitals or when num > norb/4, else "multifrontal"),
    "dense" or "multifrontal". ``tol`` is the residual bound ‖H y − λ y‖ (eV; default 1e-9 × max(1, max|H|));
    every returned eigenvalue is then within ``tol`` of an exact one (typically ~1e-14 eV).
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
    factor, sigma = _factor_near(Hs, near, scale)
    extra = 0 if sigma == near else 2  # nudged shift: take spares, then pick the nearest to `near`
    want = min(n, num + extra)
    block = min(n, max(want, 8))
    result = _block_lanczos_near(Hs, factor, sigma, want, block, tol, max_basis=max(20 * block, 200), seed=seed)
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
