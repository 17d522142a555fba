"""Eigen-solvers and the PARDISO factorisation: batched dense, and eigenvalues near an energy (Davidson with a
PARDISO shift-invert preconditioner) against dense diagonalisation of twisted bilayer graphene (Moon–Koshino model)
at real and complex k; exact inertia counts."""
from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from ase_wannierml.slater_koster import moon_koshino_tb
from ase_wannierml.structures import twisted_bilayer
from ase_wannierml.tb import pardiso_backend, solvers

E_DIRAC = 0.787597  # eV, graphene Dirac energy in the default Moon–Koshino model


@pytest.fixture(scope="module")
def tbg():
    """5.09° twisted bilayer graphene (m=6, r=1): 508 orbitals."""
    return moon_koshino_tb(twisted_bilayer("graphene", m=6, r=1))


def nearest_dense(H: np.ndarray, num: int, near: float) -> np.ndarray:
    e = np.linalg.eigvalsh(H)
    return np.sort(e[np.argsort(np.abs(e - near), kind="stable")[:num]])


def test_eigvalsh_dense_batch_and_hermitian_check():
    rng = np.random.default_rng(0)
    M = rng.normal(size=(3, 6, 6)) + 1j * rng.normal(size=(3, 6, 6))
    H = M + M.conj().transpose(0, 2, 1)
    e = solvers.eigvalsh_dense(H)
    assert e.shape == (3, 6)
    for k in range(3):
        assert e[k] == pytest.approx(np.sort(np.linalg.eigvals(H[k]).real), abs=1e-12)
    with pytest.raises(ValueError, match=r"H_kij\[0\] is not Hermitian"):
        solvers.eigvalsh_dense(M)
    with pytest.raises(ValueError, match="shape"):
        solvers.eigvalsh_dense(H[0])


@pytest.mark.parametrize("k", [(0.0, 0.0, 0.0), (0.5, 0.0, 0.0), (0.1, 0.2, 0.0), (1 / 3, 2 / 3, 0.0),
                               (0.37, 0.21, 0.0)])
@pytest.mark.parametrize("near", [E_DIRAC, 0.0, -2.5])
def test_sparse_matches_dense(tbg, k, near):
    H = tbg.hamiltonian_sparse(np.array(k), allow_real=True)
    assert (H.dtype.kind == "f") == tbg.is_real_at(np.array(k))
    ref = nearest_dense(H.toarray(), 8, near)
    res = solvers.solve_near_auto(H, 8, near, return_vectors=True, method="sparse")
    assert res.method == "sparse"
    assert np.abs(res.values - ref).max() < 1e-8
    # the vectors are orthonormal eigenvectors
    V = res.vectors
    assert np.abs(V.conj().T @ V - np.eye(8)).max() < 1e-8
    assert np.abs(H @ V - V * res.values).max() < 1e-5


def test_auto_choice_and_return_types(tbg):
    H = tbg.hamiltonian_sparse(np.array([0.1, 0.2, 0.0]))
    e = solvers.eigvalsh_near(H, 6, E_DIRAC)
    assert e.shape == (6,) and np.all(np.diff(e) >= 0)
    e2, v = solvers.eigvalsh_near(H, 6, E_DIRAC, return_vectors=True)
    assert v.shape == (tbg.norb, 6) and np.allclose(e, e2, atol=1e-8)
    small = sp.diags([np.arange(10.0)], [0], format="csr")
    assert solvers.solve_near_auto(small, 3, 4.2).method == "dense"
    assert solvers.eigvalsh_near(small, 3, 4.2).tolist() == [3.0, 4.0, 5.0]
    assert solvers.solve_near_auto(H, 6, E_DIRAC).method == ("dense" if tbg.norb <= solvers.DENSE_MAX_ORBITALS
                                                             else "sparse")


def test_shift_exactly_at_an_eigenvalue():
    """H − σ exactly singular (σ an eigenvalue of a diagonal-dominated matrix): the shift is nudged, still exact."""
    n = 600
    off = sp.random(n, n, density=0.01, random_state=2)
    H = (off + off.T) * 0.01 + sp.diags(np.repeat(np.arange(n // 2, dtype=float), 2))
    H = sp.csr_matrix(H)
    H.data[np.abs(H.data) < 1e-12] = 0.0
    e_dense = np.linalg.eigvalsh(H.toarray())
    near = float(e_dense[301])  # exactly an eigenvalue
    ref = nearest_dense(H.toarray(), 5, near)
    for workers in (1, 2):  # the rounding of the zero pivot may differ with the thread count
        got = solvers.eigvalsh_near(H, 5, near, method="sparse", workers=workers)
        assert np.abs(got - ref).max() < 5e-8  # nudged singular shift: residual-limited (1e-8 measured ±round-off)


def test_factor_solves_accurately(tbg):
    """PARDISO solves of H − σ (real symmetric at Γ, complex Hermitian at general k; double and single precision;
    the real 2n embedding used for inertia) to backward error ~ε; refactor() reuses the analysis; the ordering of
    one k serves another (same pattern)."""
    for k in ([0.0, 0.0, 0.0], [0.1, 0.3, 0.0]):
        H = tbg.hamiltonian_sparse(np.array(k), allow_real=True)
        A = solvers.shifted_csr(H, 0.3)
        b = np.random.default_rng(0).normal(size=(tbg.norb, 3))
        norm_A = abs(A).sum(axis=1).max()

        def backward_error(x, b):  # normwise, ∞-norm: ‖Ax − b‖ / (‖A‖ ‖x‖ + ‖b‖)
            return np.abs(A @ x - b).max() / (norm_A * np.abs(x).max() + np.abs(b).max())

        for kw, tol in (({}, 1e-13), ({"single": True}, 1e-3), ({"inertia": True}, 1e-13)):  # single: ~400 ε
            f = pardiso_backend.PardisoFactor(A, **kw)
            x = f.solve(b)
            assert x.dtype == (np.float32 if kw.get("single") and H.dtype.kind == "f" else
                               np.complex64 if kw.get("single") else A.dtype)
            assert backward_error(x, b) < tol, kw
            bc = b[:, 0] + 1j * b[:, 1]
            assert backward_error(f.solve(bc), bc) < 10 * tol  # complex rhs
        f = pardiso_backend.PardisoFactor(A)
        A2 = solvers.shifted_csr(H, 0.7)
        f.refactor(A2)
        assert np.abs(A2 @ f.solve(b) - b).max() < 1e-9
        g = pardiso_backend.PardisoFactor(A2, perm=f.perm)
        assert np.array_equal(g.perm, f.perm) and np.abs(A2 @ g.solve(b) - b).max() < 1e-9
        with pytest.raises(ValueError, match="pattern"):
            f.refactor(solvers.shifted_csr(H[:100, :100], 0.3))
        with pytest.raises(ValueError, match="perm"):
            pardiso_backend.PardisoFactor(A, perm=np.arange(3))
        f.free()
        f.free()  # idempotent


def test_default_preconditioner_drops_small_entries_once_per_pattern(tbg, monkeypatch):
    """P = H without |H_ij| < 10 meV (diagonal kept), with the entries chosen at the first k of a pattern, so every
    k shares P's pattern; nothing is dropped when too little would go; the answer is H's either way."""
    solvers._MASKS.clear()
    H1 = tbg.hamiltonian_sparse(np.array([0.1, 0.2, 0.0]))
    P1 = solvers.default_preconditioner(H1)
    D = (H1 - P1).tocoo()
    assert P1.nnz < 0.7 * H1.nnz and np.abs(D.data).max() < solvers.PRECONDITIONER_DROP
    assert np.all(D.row != D.col) and np.array_equal(P1.diagonal(), H1.diagonal())
    P2 = solvers.default_preconditioner(tbg.hamiltonian_sparse(np.array([0.3, 0.1, 0.0])))
    assert np.array_equal(P2.indptr, P1.indptr) and np.array_equal(P2.indices, P1.indices)
    diag = sp.diags(np.arange(600.0), format="csr")
    assert solvers.default_preconditioner(diag) is diag  # nothing to drop
    monkeypatch.setattr(solvers, "PRECONDITIONER_DROP", 0.0)
    assert solvers.default_preconditioner(H1) is H1


def test_ordering_is_cached_per_pattern(tbg):
    """All k-points of a TightBinding share one sparsity pattern: METIS runs once per pattern and arithmetic."""
    solvers._ORDERINGS.clear()
    for k in ([0.1, 0.2, 0.0], [0.3, 0.1, 0.0]):
        solvers._pardiso_factor(solvers.shifted_csr(tbg.hamiltonian_sparse(np.array(k)), 0.5), False, 1)
    assert len(solvers._ORDERINGS) == 1
    solvers._pardiso_factor(solvers.shifted_csr(tbg.hamiltonian_sparse(np.zeros(3), allow_real=True), 0.5), False, 1)
    assert len(solvers._ORDERINGS) == 2
    # a factor of the same pattern and arithmetic is refactorised in place (numerical phase only), else a new one
    A1 = solvers.shifted_csr(tbg.hamiltonian_sparse(np.array([0.1, 0.2, 0.0])), 0.5)
    A2 = solvers.shifted_csr(tbg.hamiltonian_sparse(np.array([0.3, 0.1, 0.0])), 0.6)
    f = solvers._pardiso_factor(A1, False, 1)
    assert solvers._pardiso_factor(A2, False, 1, reuse=f) is f
    b = np.ones(tbg.norb)
    assert np.abs(A2 @ f.solve(b) - b).max() < 1e-9
    A0 = solvers.shifted_csr(tbg.hamiltonian_sparse(np.zeros(3), allow_real=True), 0.5)
    assert solvers._pardiso_factor(A0, False, 1, reuse=f) is not f


@pytest.mark.parametrize("workers", [1, 2])
def test_factor_of_disconnected_blocks(workers):
    """Blocks with no coupling between them (a purely diagonal H, or decoupled molecules) factorise and solve."""
    rng = np.random.default_rng(0)
    blocks = [sp.random(80, 80, density=0.08, random_state=i) for i in range(4)]
    cases = [sp.diags(np.linspace(-1.0, 1.0, 300)),
             sp.block_diag([(b + b.T) / 2 + 3 * sp.eye(80) for b in blocks])]
    for H in cases:
        A = solvers.shifted_csr(H.tocsr(), 0.01)
        b = rng.normal(size=A.shape[0])
        x = pardiso_backend.PardisoFactor(A, workers=workers).solve(b)
        np.testing.assert_allclose(A @ x, b, atol=1e-10)
    energies = np.linspace(-1.0, 1.0, 601)
    vals = solvers.eigvalsh_near(sp.diags(energies).tocsr(), 4, 0.013, method="sparse", workers=workers)
    np.testing.assert_allclose(vals, np.sort(energies[np.argsort(np.abs(energies - 0.013))[:4]]), atol=1e-10)
    assert solvers.count_eigenvalues_below(sp.diags(energies).tocsr(), 0.013, workers=workers) == 304  # exact


def test_resolve_workers(monkeypatch):
    assert solvers.resolve_workers(3) == 3
    monkeypatch.setenv("ASE_WANNIERML_NUM_THREADS", "2")
    assert solvers.resolve_workers() == 2
    monkeypatch.delenv("ASE_WANNIERML_NUM_THREADS")
    import os

    from ase_wannierml import threads

    monkeypatch.setattr(threads, "machine_is_busy", lambda *a, **k: False)
    assert solvers.resolve_workers() == min(2, os.cpu_count())
    monkeypatch.setattr(threads, "machine_is_busy", lambda *a, **k: True)   # no free core: one PARDISO thread
    assert solvers.resolve_workers() == 1
    with pytest.raises(ValueError, match="workers"):
        solvers.resolve_workers(0)
    monkeypatch.setenv("ASE_WANNIERML_NUM_THREADS", "two")
    with pytest.raises(ValueError, match="ASE_WANNIERML_NUM_THREADS"):
        solvers.resolve_workers()


def test_errors(tbg):
    H = tbg.hamiltonian_sparse(np.array([0.1, 0.2, 0.0]))
    with pytest.raises(ValueError, match="num"):
        solvers.eigvalsh_near(H, 0, 0.0)
    with pytest.raises(ValueError, match="square"):
        solvers.eigvalsh_near(sp.csr_matrix((3, 4)), 1, 0.0)
    bad = H.tolil()
    bad[0, 1] += 0.1
    with pytest.raises(ValueError, match="not Hermitian"):
        solvers.eigvalsh_near(bad.tocsr(), 4, 0.0, method="sparse")
    with pytest.raises(ValueError, match="method"):
        solvers.eigvalsh_near(H, 4, 0.0, method="lapack")


@pytest.mark.slow
def test_magic_angle_against_scipy_eigsh():
    """1.05° (11,908 orbitals): same 8 eigenvalues as scipy's eigsh(sigma=E_F) to 1e-8 eV (the slow baseline)."""
    import scipy.sparse.linalg as sla

    tb = moon_koshino_tb(twisted_bilayer("graphene", angle=1.05))
    H = tb.hamiltonian_sparse(np.array([0.1, 0.2, 0.0]))
    ours = solvers.eigvalsh_near(H, 8, E_DIRAC)
    ref = np.sort(sla.eigsh(H, k=8, sigma=E_DIRAC, return_eigenvectors=False))
    assert np.abs(ours - ref).max() < 1e-8
    # the four flat bands sit within ±30 meV of the charge-neutrality point
    assert np.sum(np.abs(ours - E_DIRAC) < 0.03) >= 4


def test_near_solver_reuses_factorisation_along_a_path(tbg):
    """Along a band path one factorisation serves several k-points (Davidson from the previous eigenvectors);
    the eigenvalues stay exact (residual-checked in double precision), including a real Γ between complex k."""
    k_k3 = np.array([[-0.02, -0.01, 0.0], [-0.01, -0.005, 0.0], [0.0, 0.0, 0.0], [0.01, 0.005, 0.0],
                     [0.02, 0.01, 0.0], [0.03, 0.015, 0.0]])
    solver = solvers.NearSolver(8, E_DIRAC, method="sparse")
    for k in k_k3:
        H = tbg.hamiltonian_sparse(k, allow_real=True)
        res = solver.solve(H)
        assert np.abs(res.values - nearest_dense(H.toarray(), 8, E_DIRAC)).max() < 1e-8
        assert np.abs(H @ res.vectors - res.vectors * res.values).max() < 1e-5
    assert 1 <= solver.factorizations < len(k_k3)
    # TightBinding.eigenvalues goes through the same solver (dense reference for the whole path)
    tb = tbg
    e_kn = tb.eigenvalues(k_k3, num=8, near=E_DIRAC)
    ref = np.array([nearest_dense(H_ij, 8, E_DIRAC) for H_ij in tb.hamiltonian(k_k3)])
    assert e_kn.shape == (len(k_k3), 8) and np.abs(e_kn - ref).max() < 1e-8
    # a cheaper preconditioner (H(k) of the model pruned at 0.1 eV: only the nearest neighbours) changes the work,
    # not the answer
    pruned = tb.pruned(0.1)
    assert pruned.nnz < tb.nnz / 3
    solver = solvers.NearSolver(8, E_DIRAC, method="sparse")
    e_pc = [solver.solve(tb.hamiltonian_sparse(k, allow_real=True), preconditioner=pruned.hamiltonian_sparse(
        k, allow_real=True)).values for k in k_k3]
    assert np.abs(np.array(e_pc) - ref).max() < 1e-8
    with pytest.raises(ValueError, match="preconditioner"):
        solver.solve(tb.hamiltonian_sparse(k_k3[0]), preconditioner=sp.identity(3, format="csr"))
    assert solvers.NearSolver(3, E_DIRAC, method="multifrontal").method == "sparse"  # the former name
    dense = solvers.NearSolver(3, E_DIRAC, method="dense")
    assert dense.solve(tb.hamiltonian_sparse(k_k3[0])).method == "dense"


@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.parametrize("k", [(0.0, 0.0, 0.0), (0.31, 0.12, 0.0)])
def test_inertia_counts_bands_below(tbg, k, workers, monkeypatch):
    """Sylvester count from PARDISO's LDLᴴ = number of dense eigenvalues below the energy, at a real (Γ) and a
    complex k (real 2n embedding), inside the flat bands, the remote bands and outside the spectrum; the sparse route
    is forced (the test matrix is at the dense threshold)."""
    monkeypatch.setattr(solvers, "DENSE_MAX_ORBITALS", 100)
    H = tbg.hamiltonian_sparse(np.array(k), allow_real=True)
    e = np.linalg.eigvalsh(H.toarray())
    for energy in (e.min() - 1.0, E_DIRAC - 0.3, E_DIRAC, 0.5 * (e[253] + e[254]), E_DIRAC + 0.2, e.max() + 1):
        got = solvers.count_eigenvalues_below(H, energy, workers=workers)
        assert got == int((e < energy).sum()), energy
    # dense route (small matrix) and a shift exactly on an eigenvalue: counted as just below it
    D = sp.diags([np.arange(10.0)], [0], format="csr")
    assert solvers.count_eigenvalues_below(D, 4.0) == 4
    assert solvers.count_eigenvalues_below(D.toarray(), 4.5) == 5
    with pytest.raises(ValueError, match="not Hermitian"):
        solvers.count_eigenvalues_below(sp.csr_matrix(np.triu(np.ones((3, 3)))), 0.0)


def test_tightbinding_bands_below(tbg):
    k_k3 = np.array([[0.0, 0.0, 0.0], [1 / 3, 1 / 3, 0.0], [0.1, 0.23, 0.0]])
    e_kn = tbg.eigenvalues(k_k3)
    for energy in (E_DIRAC - 0.5, E_DIRAC, E_DIRAC + 0.3):
        np.testing.assert_array_equal(tbg.bands_below(k_k3, energy), (e_kn < energy).sum(axis=1))


def test_davidson_out_of_solves_hands_over_its_subspace(tbg):
    """A Davidson run stopped by its solve budget raises DavidsonNotConverged carrying its best Ritz vectors and the
    solves spent; restarting from them finishes the job in fewer solves than a cold start (the work is kept)."""
    H = tbg.hamiltonian_sparse(np.array([0.13, 0.07, 0.0]))
    factor, sigma = solvers._factor_near(H, E_DIRAC, 10.0, single=False)
    cold = solvers._davidson_near(H, factor, sigma, 8, 8, 1e-9, 400, seed=0)
    with pytest.raises(solvers.DavidsonNotConverged) as info:
        solvers._davidson_near(H, factor, sigma, 8, 8, 1e-9, 400, seed=0, max_solves=cold.solves // 2)
    err = info.value
    assert isinstance(err, np.linalg.LinAlgError)
    assert err.subspace.shape == (H.shape[0], 8 + solvers.START_EXTRA)
    assert cold.solves // 2 <= err.solves < cold.solves
    warm = solvers._davidson_near(H, factor, sigma, 8, 8, 1e-9, 400, seed=0, start=err.subspace)
    assert warm.solves < cold.solves - err.solves // 2
    assert np.abs(warm.values - nearest_dense(H.toarray(), 8, E_DIRAC)).max() < 1e-8


def test_threaded_matmul_equals_serial(tbg, monkeypatch):
    """H @ V split by rows over 2 threads (Davidson's products on large H) equals the serial product exactly."""
    H = tbg.hamiltonian_sparse(np.array([0.21, 0.05, 0.0]))
    V = np.random.default_rng(3).standard_normal((H.shape[0], 5)) + 1j
    monkeypatch.setattr(solvers, "THREADED_MATMUL_MIN_NNZ", 0)
    assert np.array_equal(solvers._row_block_matmul(H, 2)(V), H @ V)
    assert solvers._row_block_matmul(H, 1) == H.__matmul__
    monkeypatch.setattr(solvers, "THREADED_MATMUL_MIN_NNZ", 10 * H.nnz)
    assert solvers._row_block_matmul(H, 2) == H.__matmul__


def test_near_solver_on_a_coarse_path_stays_exact_and_counts_failed_work(tbg):
    """k-points far apart: kept factorisations run out of their solve budget and the solver refactorises, continuing
    from the stale attempt's vectors; answers stay exact and the solve counter includes the abandoned work."""
    k_k3 = np.array([[0.0, 0.0, 0.0], [0.25, 0.1, 0.0], [0.5, 0.2, 0.0], [0.1, 0.45, 0.0], [0.33, 0.33, 0.0]])
    solver = solvers.NearSolver(8, E_DIRAC, method="sparse")
    per_k = []
    for k in k_k3:
        H = tbg.hamiltonian_sparse(k, allow_real=True)
        before = solver.solves
        res = solver.solve(H)
        per_k.append(solver.solves - before)
        assert per_k[-1] >= res.solves
        assert np.abs(res.values - nearest_dense(H.toarray(), 8, E_DIRAC)).max() < 1e-8
    assert solver.factorizations >= 2
