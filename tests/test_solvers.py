"""Eigen-solvers and the multifrontal factorisation: batched dense, and eigenvalues near an energy (Davidson with a
multifrontal shift-invert preconditioner) against dense diagonalisation of twisted bilayer graphene (Moon–Koshino
model) at real and complex k."""
from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from threadpoolctl import threadpool_limits

from ase_wannierml.slater_koster import moon_koshino_tb
from ase_wannierml.structures import twisted_bilayer
from ase_wannierml.tb import multifrontal, solvers

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
def test_multifrontal_matches_dense(tbg, k, near):
    H = tbg.hamiltonian_sparse(np.array(k), allow_real=True)
    assert (H.dtype.kind == "f") == tbg.is_real_at(np.array(k))
    ref = nearest_dense(H.toarray(), 8, near)
    res = solvers.solve_near_auto(H, 8, near, return_vectors=True, method="multifrontal")
    assert res.method == "multifrontal"
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
                                                             else "multifrontal")


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
    for blas_threads in (None, 1):  # the rounding of the zero pivot differs with the BLAS thread count
        with threadpool_limits(limits=blas_threads, user_api="blas"):
            got = solvers.eigvalsh_near(H, 5, near, method="multifrontal")
        assert np.abs(got - ref).max() < 5e-8  # nudged singular shift: residual-limited (1e-8 measured ±round-off)


def test_factor_solves_accurately(tbg):
    for k in ([0.0, 0.0, 0.0], [0.1, 0.3, 0.0]):
        H = tbg.hamiltonian_sparse(np.array(k), allow_real=True)
        A = multifrontal.shifted_csr(H, 0.3)
        sym = multifrontal.symbolic_for(A)
        assert multifrontal.symbolic_for(multifrontal.shifted_csr(H, 0.7)) is sym  # pattern cached across shifts and k
        b = np.random.default_rng(0).normal(size=(tbg.norb, 3))
        norm_A = abs(A).sum(axis=1).max()

        def backward_error(x, b):  # normwise, ∞-norm: ‖Ax − b‖ / (‖A‖ ‖x‖ + ‖b‖)
            return np.abs(A @ x - b).max() / (norm_A * np.abs(x).max() + np.abs(b).max())

        for single, tol in ((False, 1e-12), (True, 1e-4)):  # ~300 ε: pivoting only inside fronts
            x = multifrontal.MultifrontalFactor(sym, A, single=single).solve(b)
            assert x.dtype == (np.float32 if single and H.dtype.kind == "f" else
                               np.complex64 if single else A.dtype)
            assert backward_error(x, b) < tol
        bc = b[:, 0] + 1j * b[:, 1]
        assert backward_error(multifrontal.MultifrontalFactor(sym, A).solve(bc), bc) < 1e-12  # complex rhs


def test_nested_dissection_separates(tbg):
    H = tbg.hamiltonian_sparse(np.zeros(3))
    nodes = multifrontal.nested_dissection(H, leaf_size=32)
    order = np.concatenate([own for own, _ in nodes])
    assert np.array_equal(np.sort(order), np.arange(tbg.norb))
    root_sep, kids = nodes[-1]
    assert len(kids) == 2

    def subtree(i):
        own, ch = nodes[i]
        return np.concatenate([own] + [subtree(c) for c in ch])

    a, b = subtree(kids[0]), subtree(kids[1])
    assert len(a) + len(b) + len(root_sep) == tbg.norb
    assert abs(H[a][:, b]).max() == 0  # no coupling across the root separator
    assert len(root_sep) < tbg.norb / 2


def test_errors(tbg):
    H = tbg.hamiltonian_sparse(np.array([0.1, 0.2, 0.0]))
    with pytest.raises(ValueError, match="num"):
        solvers.eigvalsh_near(H, 0, 0.0)
    with pytest.raises(ValueError, match="square"):
        solvers.eigvalsh_near(sp.csr_matrix((3, 4)), 1, 0.0)
    bad = H.tolil()
    bad[0, 1] += 0.1
    with pytest.raises(ValueError, match="not Hermitian"):
        solvers.eigvalsh_near(bad.tocsr(), 4, 0.0, method="multifrontal")
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
    solver = solvers.NearSolver(8, E_DIRAC, method="multifrontal")
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
    dense = solvers.NearSolver(3, E_DIRAC, method="dense")
    assert dense.solve(tb.hamiltonian_sparse(k_k3[0])).method == "dense"


def test_parallel_factorisation_is_bit_identical(tbg, monkeypatch):
    """Threads over independent subtrees (factorisation and solves) give exactly the serial factors and solutions,
    for real and complex H, single and double precision; the worker count comes from the argument, else
    $ASE_WANNIERML_NUM_THREADS, else min(2, cpu count)."""
    monkeypatch.setattr(multifrontal, "PARALLEL_MIN_MADDS", 0.0)  # the 508-orbital test matrix is below it
    with threadpool_limits(limits=1, user_api="blas"):  # serial at BLAS's own thread count agrees only to rounding
        _check_parallel_bit_identical(tbg)
    assert multifrontal.resolve_workers(3) == 3
    monkeypatch.setenv("ASE_WANNIERML_NUM_THREADS", "2")
    assert multifrontal.resolve_workers() == 2
    monkeypatch.delenv("ASE_WANNIERML_NUM_THREADS")
    import os

    assert multifrontal.resolve_workers() == min(2, os.cpu_count())
    with pytest.raises(ValueError, match="workers"):
        multifrontal.resolve_workers(0)
    monkeypatch.setenv("ASE_WANNIERML_NUM_THREADS", "two")
    with pytest.raises(ValueError, match="ASE_WANNIERML_NUM_THREADS"):
        multifrontal.resolve_workers()


def _check_parallel_bit_identical(tbg):
    rng = np.random.default_rng(1)
    for k in ([0.0, 0.0, 0.0], [0.1, 0.3, 0.0]):
        H = tbg.hamiltonian_sparse(np.array(k), allow_real=True)
        A = multifrontal.shifted_csr(H, E_DIRAC)
        sym = multifrontal.SymbolicFactorization(A, leaf_size=16)  # a deeper tree: many subtree and top tasks
        tasks = sym.schedule(2)
        assert tasks is not None and any(t.deps for t in tasks) and sum(not t.deps for t in tasks) >= 8
        assert sorted(f for t in tasks for f in t.fronts) == list(range(len(sym.fronts)))
        b = rng.normal(size=(tbg.norb, 3))
        for single in (True, False):
            serial = multifrontal.MultifrontalFactor(sym, A, single=single, workers=1)
            assert serial._schedule is None
            for workers in (2, 3):
                par = multifrontal.MultifrontalFactor(sym, A, single=single, workers=workers)
                assert par._schedule is not None
                for (lu1, piv1), (lu2, piv2), X1, X2 in zip(serial._lu, par._lu, serial._X, par._X):
                    assert (lu1 is None and lu2 is None) or (np.array_equal(lu1, lu2) and np.array_equal(piv1, piv2))
                    assert np.array_equal(X1, X2)
                for rhs in (b, b[:, 0], b[:, 0] + 1j * b[:, 1]):
                    assert np.array_equal(par.solve(rhs), serial.solve(rhs))
        res1 = solvers.solve_near_auto(H, 8, E_DIRAC, method="multifrontal", workers=1)
        res2 = solvers.solve_near_auto(H, 8, E_DIRAC, method="multifrontal", workers=2)
        assert np.array_equal(res1.values, res2.values) and res1.solves == res2.solves


def test_parallel_factorisation_raises_on_singular_front(monkeypatch):
    """A singular front found by a worker thread surfaces as LinAlgError in the caller."""
    monkeypatch.setattr(multifrontal, "PARALLEL_MIN_MADDS", 0.0)
    n = 400
    lap = sp.diags([np.full(n - 1, -1.0), np.full(n, 2.0), np.full(n - 1, -1.0)], [-1, 0, 1], format="csr")
    A = multifrontal.shifted_csr(lap, 0.0)
    A.data[:] = 0.0  # every front exactly singular
    sym = multifrontal.SymbolicFactorization(A, leaf_size=8)
    with pytest.raises(np.linalg.LinAlgError, match="singular front"):
        multifrontal.MultifrontalFactor(sym, A, workers=2)


@pytest.mark.parametrize("workers", [1, 2])
def test_factor_of_disconnected_blocks(workers, monkeypatch):
    """Blocks with no coupling between them (a purely diagonal H, or decoupled molecules) have fronts without
    update variables; the factorisation must still solve (it used to raise KeyError)."""
    monkeypatch.setattr(multifrontal, "PARALLEL_MIN_MADDS", 0.0)
    rng = np.random.default_rng(0)
    blocks = [sp.random(80, 80, density=0.08, random_state=i) for i in range(4)]
    cases = [sp.diags(np.linspace(-1.0, 1.0, 300)),
             sp.block_diag([(b + b.T) / 2 + 3 * sp.eye(80) for b in blocks])]
    for H in cases:
        A = multifrontal.shifted_csr(H.tocsr(), 0.01)
        b = rng.normal(size=A.shape[0])
        x = multifrontal.MultifrontalFactor(multifrontal.symbolic_for(A), A, workers=workers).solve(b)
        np.testing.assert_allclose(A @ x, b, atol=1e-10)
    energies = np.linspace(-1.0, 1.0, 301)
    vals = solvers.eigvalsh_near(sp.diags(energies).tocsr(), 4, 0.013, method="multifrontal", workers=workers)
    np.testing.assert_allclose(vals, np.sort(energies[np.argsort(np.abs(energies - 0.013))[:4]]), atol=1e-10)


@pytest.mark.parametrize("dtype", [np.float64, np.complex128, np.float32, np.complex64])
def test_negative_eigenvalue_count_of_dense_blocks(dtype):
    """Bunch–Kaufman inertia (1×1 and 2×2 pivots) against the eigenvalues, for indefinite random matrices."""
    rng = np.random.default_rng(3)
    for n in (1, 2, 7, 60):
        A = rng.standard_normal((n, n))
        if np.dtype(dtype).kind == "c":
            A = A + 1j * rng.standard_normal((n, n))
        A = ((A + A.conj().T) / 2).astype(dtype)
        assert multifrontal.negative_eigenvalue_count(A) == int((np.linalg.eigvalsh(A) < 0).sum())


@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.parametrize("k", [(0.0, 0.0, 0.0), (0.31, 0.12, 0.0)])
def test_inertia_counts_bands_below(tbg, k, workers):
    """Sylvester count from the multifrontal LDLᴴ = number of dense eigenvalues below the energy, at a real (Γ)
    and a complex k, inside the flat bands, the remote bands and outside the spectrum."""
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
