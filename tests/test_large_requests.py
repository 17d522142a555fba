"""Large-system safeguards: magnitude pruning of H(R) (error bound, Hermiticity, on-site kept) and clear memory
errors for dense requests that cannot fit (raised before allocating; these tests allocate nothing large)."""
from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from ase_wannierml import TightBinding
from ase_wannierml.slater_koster import MoonKoshinoParams, moon_koshino_tb
from ase_wannierml.structures import twisted_bilayer
from ase_wannierml.tb import solvers
from ase_wannierml.tb.tightbinding import OrbitalTable


@pytest.fixture(scope="module")
def tbg() -> TightBinding:
    """7.34° twisted bilayer graphene, Moon–Koshino with a long 8 Å cut-off (many tiny hoppings): 244 orbitals."""
    return moon_koshino_tb(twisted_bilayer("graphene", m=4, r=1), MoonKoshinoParams(cutoff=8.0))


def test_pruned_drops_small_elements_and_respects_the_bound(tbg):
    k_k3 = np.array([[0, 0, 0], [1 / 3, 1 / 3, 0], [0.123, 0.31, 0]])
    e_ref = tbg.eigenvalues(k_k3)
    for threshold in (1e-4, 1e-3, 1e-2):
        onsite = (tbg.rows == tbg.cols) & np.all(tbg.R == 0, axis=1)  # stored zeros: kept
        small = (np.abs(tbg.values) < threshold) & ~onsite
        assert small.any()
        p = tbg.pruned(threshold)
        assert p.nnz == tbg.nnz - np.count_nonzero(small)
        p_onsite = (p.rows == p.cols) & np.all(p.R == 0, axis=1)
        assert np.count_nonzero(p_onsite) == tbg.norb and np.abs(p.values[~p_onsite]).min() >= threshold
        assert p.check_hermitian() == 0.0
        assert p.pruned_threshold == threshold and p.pruning_bound == tbg.pruning_error_bound(threshold)
        err = np.abs(p.eigenvalues(k_k3) - e_ref).max()
        assert 0 < err <= p.pruning_bound  # Weyl bound holds, and something was actually dropped
    # the bound grows with the threshold and is the max row sum of the dropped magnitudes
    drop = (np.abs(tbg.values) < 1e-3) & ~((tbg.rows == tbg.cols) & np.all(tbg.R == 0, axis=1))
    row_sum = np.bincount(tbg.rows[drop], weights=np.abs(tbg.values[drop]), minlength=tbg.norb)
    assert tbg.pruning_error_bound(1e-3) == pytest.approx(row_sum.max())
    assert tbg.pruning_error_bound(1e-4) < tbg.pruning_error_bound(1e-3) < tbg.pruning_error_bound(1e-2)
    assert tbg.pruned(0.0) is tbg and tbg.pruning_error_bound(0.0) == 0.0


def test_pruned_keeps_onsite_diagonal():
    cell = np.diag([1.0, 1.0, 10.0])
    R = [[0, 0, 0], [0, 0, 0], [0, 0, 0], [0, 0, 0], [1, 0, 0], [-1, 0, 0]]
    tb = TightBinding(cell, R, [0, 1, 0, 1, 0, 0], [0, 1, 1, 0, 0, 0], [1e-9, -2.0, 1e-5, 1e-5, 1e-5, 1e-5],
                      OrbitalTable.unknown(2), pbc=(True, True, False))
    p = tb.pruned(1e-3)
    assert p.nnz == 2  # the tiny on-site energy of orbital 0 survives, all 1e-5 eV hoppings go
    assert sorted(zip(p.rows.tolist(), p.cols.tolist())) == [(0, 0), (1, 1)]
    assert p.pruning_bound == pytest.approx(3e-5)  # row 0 lost H01(0) and H00(±x): 3 × 1e-5 eV
    np.testing.assert_allclose(p.eigenvalues([[0, 0, 0]]), [[-2.0, 1e-9]])


def test_dense_request_too_large_names_the_memory():
    n = 100_000  # 10^5 orbitals: dense H(k) alone would be 160 GB
    tb = TightBinding(np.diag([1.0, 1.0, 10.0]), np.zeros((n, 3), int), np.arange(n), np.arange(n),
                      np.linspace(-1, 1, n), OrbitalTable.unknown(n), pbc=(True, True, False))
    with pytest.raises(solvers.DenseMemoryError, match=r"100,000 orbitals.*needs about 480\.0 GB.*num="):
        tb.eigenvalues([[0, 0, 0]])
    with pytest.raises(MemoryError, match=r"GB"):
        tb.hamiltonian([[0, 0, 0]])
    with pytest.raises(MemoryError, match=r"exact DOS of 100,000 orbitals.*kpm"):
        tb.dos(kpts=[[0, 0, 0]], method="exact")
    H = sp.identity(n, format="csr")
    with pytest.raises(MemoryError, match=r"240\.0 GB"):  # real: 3 copies × 8 B × n²
        solvers.solve_near_auto(H, 4, 0.0, method="dense")


def test_memory_estimate_and_override(monkeypatch):
    assert solvers.dense_memory_bytes(1000) == 3 * 16 * 1000**2
    assert solvers.dense_memory_bytes(1000, nk=2, vectors=True, complex_=False) == 5 * 8 * 2 * 1000**2
    monkeypatch.setenv(solvers.MEMORY_ENV, "0.01")  # 10 MB
    assert solvers.available_memory_bytes() == 10_000_000
    solvers.check_dense_memory(400)  # 7.7 MB fits
    with pytest.raises(solvers.DenseMemoryError, match=r"1,000 orbitals .* 0\.0 GB|1,000 orbitals"):
        solvers.check_dense_memory(1000)
    monkeypatch.delenv(solvers.MEMORY_ENV)
    assert solvers.available_memory_bytes() > 10_000_000


def test_calculator_hamiltonian_threshold():
    import torch

    from ase_wannierml import WannierMLCalculator, build_model
    from ase_wannierml.structures import bilayer

    model = build_model({"C": ["pz"]}, cutoff=4.0, dtype=torch.float64, seed=7, wannier_electrons={"C": 1.0},
                        ham_cutoff_near=4.0, ham_cutoff_far=6.0, ham_cutoff_inter=6.0)
    atoms = bilayer("graphene", stacking="AB")
    full = WannierMLCalculator(model).get_hamiltonian(atoms)
    threshold = float(np.quantile(np.abs(full.values), 0.3))  # drops about 30 % of the elements
    calc = WannierMLCalculator(model, hamiltonian_threshold=threshold)
    pruned = calc.get_hamiltonian(atoms)
    assert pruned.nnz < 0.8 * full.nnz and pruned.pruned_threshold == threshold
    k_k3 = atoms.cell.bandpath("GKM", npoints=7, pbc=[True, True, False]).kpts
    err = np.abs(pruned.eigenvalues(k_k3) - full.eigenvalues(k_k3)).max()
    assert 0 < err <= pruned.pruning_bound
    with pytest.raises(ValueError, match="hamiltonian_threshold"):
        WannierMLCalculator(model, hamiltonian_threshold=-1.0)


def test_flat_bands_of_a_twisted_bilayer():
    """Central-band bookkeeping on 5.09° TBG (Moon–Koshino, dense reference): E_D from the K-point cluster, 2 + 2
    central bands per k, and a Dirac velocity close to the slope of the dense bands."""
    from ase_wannierml.tb.flatbands import central_bands, dirac_energy, fermi_velocity, flat_band_summary

    atoms = twisted_bilayer("graphene", m=6, r=1)
    tb = moon_koshino_tb(atoms)
    path = atoms.cell.bandpath("KGMK", npoints=9, pbc=[True, True, False])
    e_all = tb.eigenvalues(path.kpts)  # dense, all 508 bands
    half = tb.norb // 2  # half filling: bands half-2 .. half+1 are the central four
    k_K = np.asarray(path.special_points["K"])
    near = np.sort(e_all[0][np.argsort(np.abs(e_all[0] - 0.8))[:8]])
    e_d = dirac_energy(near)
    assert e_all[0][half - 1] <= e_d <= e_all[0][half]
    window = np.array([np.sort(e[np.argsort(np.abs(e - e_d))[:8]]) for e in e_all])
    np.testing.assert_allclose(central_bands(window, e_d), e_all[:, half - 2:half + 2], atol=1e-12)
    info = flat_band_summary(window, e_d)
    central = e_all[:, half - 2:half + 2]
    assert info["flat_band_width_meV"] == pytest.approx(1e3 * (central.max() - central.min()))
    assert info["kpoints_incomplete"] == 0
    q = 0.01 * -k_K
    e_q = tb.eigenvalues([k_K + q])[0]
    dk = np.linalg.norm(q @ (2 * np.pi * np.linalg.inv(atoms.cell.array).T))
    v = fermi_velocity(near, np.sort(e_q[np.argsort(np.abs(e_q - e_d))[:8]]), dk)
    v_dense = 0.5 * (e_q[half:half + 2].mean() - e_q[half - 2:half].mean()) / (6.582119569e-16 * dk * 1e10)
    assert v == pytest.approx(v_dense, rel=1e-9) and 4e5 < v < 9e5  # m/s, renormalised below graphene's


def test_inaccurate_single_precision_factor_falls_back_to_double(monkeypatch):
    """A single-precision factor failing the residual check is replaced by a double-precision one, at once and for
    the rest of the path (flat-band Hamiltonians: near-singular fronts); results stay exact."""
    tb = moon_koshino_tb(twisted_bilayer("graphene", m=6, r=1))
    k_k3 = np.array([[1 / 3, 1 / 3, 0], [0.3, 0.3, 0], [0.27, 0.27, 0]])
    e_ref = np.array([np.sort(e[np.argsort(np.abs(e - 0.79))[:6]]) for e in tb.eigenvalues(k_k3)])
    monkeypatch.setattr(solvers, "SINGLE_FACTOR_MAX_RESIDUAL", 0.0)  # reject every single-precision factor
    solver = solvers.NearSolver(6, 0.79, method="multifrontal")
    e = np.array([solver.solve(tb.hamiltonian_sparse(k, allow_real=True)).values for k in k_k3])
    np.testing.assert_allclose(e, e_ref, atol=1e-8)
    assert not solver._single_ok and solver._last.dtype in (np.float64, np.complex128)  # the last factor made
    r = solvers.solve_near_auto(tb.hamiltonian_sparse(k_k3[1]), 6, 0.79, method="multifrontal")
    np.testing.assert_allclose(r.values, e_ref[1], atol=1e-8)

    class Garbage:
        def solve(self, b):
            return np.full_like(b, np.nan)

    with pytest.raises(np.linalg.LinAlgError, match="too inaccurate"):
        solvers._check_factor(Garbage(), sp.identity(5, format="csr"), single=True, scale=1.0)
    assert not solvers._check_factor(Garbage(), sp.identity(5, format="csr"), single=False, scale=1.0)  # nudge


def test_flat_bands_by_band_index_where_the_energy_rule_fails():
    """With the inertia count, the sparse window's states get absolute band indices and the central bands are
    exactly bands N/2 − 2 … N/2 + 1 of the dense spectrum (5.09° TBG, Moon–Koshino), also for a window centred
    off neutrality. Taking '2 below / 2 above' a reference inside the upper flat pair (what a flat band crossing
    E_D does) picks a remote band instead: the index rule must not."""
    from ase_wannierml.tb.flatbands import band_indices, central_bands, counting_energies, flat_band_summary

    atoms = twisted_bilayer("graphene", m=6, r=1)
    tb = moon_koshino_tb(atoms)
    path = atoms.cell.bandpath("KGMK", npoints=7, pbc=[True, True, False])
    e_all = tb.eigenvalues(path.kpts)
    half = tb.norb // 2
    central = e_all[:, half - 2:half + 2]
    # a reference just inside the upper flat pair and clear of every eigenvalue on the path: the pair's minima
    # are degenerate at K, so their midpoint would sit on an eigenvalue (to rounding, BLAS-dependent)
    grid = np.linspace(central[:, 2].min(), central[:, 2].min() + 0.05, 501)   # its lowest 50 meV
    gap_to_states = np.abs(grid[:, None] - e_all.ravel()[None]).min(axis=1)
    e_ref = float(grid[np.argmax(gap_to_states >= 4e-3)])   # the lowest energy 4 meV clear of every state
    assert np.abs(e_all - e_ref).min() >= 4e-3
    e_kn = tb.eigenvalues(path.kpts, num=10, near=e_ref)  # sparse window
    e_count = counting_energies(e_kn)
    index_kn = band_indices(e_kn, e_count, tb.bands_below(path.kpts, e_count))
    np.testing.assert_allclose(np.take_along_axis(e_all, index_kn, axis=1), e_kn, atol=1e-9)
    by_index = central_bands(e_kn, e_ref, index_kn=index_kn, n_occupied=half)
    np.testing.assert_allclose(by_index, central, atol=1e-9)
    assert not np.allclose(central_bands(e_kn, e_ref), central, atol=1e-6)  # the energy rule fails here
    info = flat_band_summary(e_kn, e_ref, index_kn=index_kn, n_occupied=half)
    assert info["identified_by"] == "band index" and info["kpoints_incomplete"] == 0
    assert info["flat_band_width_meV"] == pytest.approx(1e3 * (central.max() - central.min()), abs=1e-6)
    assert info["gap_below_meV"] == pytest.approx(1e3 * (central[:, 0].min() - e_all[:, half - 3].max()), abs=1e-6)
    assert info["gap_above_meV"] == pytest.approx(1e3 * (e_all[:, half + 2].min() - central[:, 3].max()), abs=1e-6)
    with pytest.raises(ValueError, match="at the counting energy"):  # e_ref sits on the degenerate K states
        band_indices(e_kn[:1], e_kn[0, 5], [0])


def test_neutrality_dirac_energy_moves_its_window_to_the_neutral_bands():
    """From a guess 0.5 eV above neutrality (where the tightest 4-state cluster is a remote one), E_D by band index
    is still halfway between bands N/2 − 1 and N/2 at K (5.09° TBG, Moon–Koshino, sparse route)."""
    from ase_wannierml.tb.flatbands import neutrality_dirac_energy

    atoms = twisted_bilayer("graphene", m=6, r=1)
    tb = moon_koshino_tb(atoms)
    k_K = np.asarray(atoms.cell.bandpath("KGMK", npoints=3, pbc=[True, True, False]).special_points["K"])
    e = tb.eigenvalues([k_K])[0]
    half = tb.norb // 2
    for guess in (e[half] + 0.5, e[half] - 0.7, e[half]):
        e_d, window = neutrality_dirac_energy(tb, k_K, guess, num=6)
        assert e_d == pytest.approx(0.5 * (e[half - 1] + e[half]), abs=1e-9)
        assert np.any(np.abs(window - e[half - 2]) < 1e-9) and np.any(np.abs(window - e[half + 1]) < 1e-9)
