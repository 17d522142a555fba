"""DOS normalisation and projections, k-mesh reduction, Fermi level from the electron count."""
from __future__ import annotations

import numpy as np
import pytest
from ase.spectrum.doscollection import DOSCollection
from ase.spectrum.dosdata import GridDOSData
from conftest import GRAPHENE_EPS, GRAPHENE_T, graphene_atoms, neighbour_model

from ase_wannierml.tb.bandpath import default_mesh, kpoint_mesh
from ase_wannierml.tb.dos import smear
from ase_wannierml.tb.fermi import find_fermi_level, occupations


def integral(d) -> float:
    return float(np.trapezoid(d.get_weights(), d.get_energies()))


@pytest.mark.parametrize("smearing, window", [("gauss", None), ("lorentz", 200.0)])
def test_dos_integrates_to_number_of_orbitals(graphene, smearing, window):
    kw = {} if window is None else {"emin": -window, "emax": window, "npts": 40001}
    d = graphene.dos(kpts=(12, 12, 1), width=0.05, smearing=smearing, **kw)
    assert isinstance(d, GridDOSData)
    # Lorentzian tails beyond ±200 eV hold 2·(2/π)(0.05/200) ≈ 3e-4 states
    assert integral(d) == pytest.approx(2.0, abs=1e-6 if smearing == "gauss" else 1e-3)


def test_graphene_dos_physics(graphene):
    d = graphene.dos(kpts=(60, 60, 1), width=0.08, npts=3001)
    e, w = d.get_energies(), d.get_weights()
    upper = e > GRAPHENE_EPS + 0.3
    e_peak = e[upper][np.argmax(w[upper])]
    assert e_peak == pytest.approx(GRAPHENE_EPS + abs(GRAPHENE_T), abs=0.1)  # van Hove singularity at +|t|
    w_dirac = np.interp(GRAPHENE_EPS, e, w)
    assert w_dirac < 0.1 * w[upper].max()  # semimetal: DOS vanishes at the Dirac point (up to smearing)
    np.testing.assert_allclose(w, np.interp(2 * GRAPHENE_EPS - e, e, w), atol=2e-3 * w.max())  # e-h symmetric


@pytest.mark.parametrize("projected", ["atom", "element", "orbital", "layer"])
def test_projected_dos_sums_to_total(projected):
    atoms = graphene_atoms().repeat((2, 1, 1))
    atoms.arrays["layer"] = np.array([0, 0, 1, 1])
    atoms.numbers[[1, 3]] = 5  # make a BC3-like lattice: two elements, no sublattice symmetry
    tb = neighbour_model(atoms, GRAPHENE_T, 0.0, 1.6)
    values = tb.values + np.where((tb.rows == tb.cols) & (tb.orbitals.element[tb.rows] == "B"), 1.0, 0.0)
    tb = tb._replace(tb.R, tb.rows, tb.cols, values)
    total = tb.dos(kpts=(8, 8, 1), width=0.1, npts=500, emin=-10, emax=10)
    parts = tb.dos(kpts=(8, 8, 1), width=0.1, npts=500, emin=-10, emax=10, projected=projected)
    assert isinstance(parts, DOSCollection)
    expected = {"atom": 4, "element": 2, "orbital": 1, "layer": 2}[projected]
    assert len(parts) == expected
    np.testing.assert_allclose(parts.sum_all().get_weights(), total.get_weights(), atol=1e-10)
    if projected == "element":  # each C / B site carries 2 of the 4 orbitals
        for p in parts:
            assert integral(p) == pytest.approx(2.0, abs=1e-4)
        assert {p.info["symbol"] for p in parts} == {"C", "B"}


def test_sublattice_projections_are_equal_in_graphene(graphene):
    a, b = graphene.dos(kpts=(12, 12, 1), width=0.1, projected="atom")
    np.testing.assert_allclose(a.get_weights(), b.get_weights(), atol=1e-10)


def test_symmetry_reduced_mesh_gives_same_dos(graphene):
    k_full, w_full = kpoint_mesh(graphene, (12, 12, 1), symmetry=False)
    k_irr, w_irr = kpoint_mesh(graphene, (12, 12, 1))
    assert len(k_full) == 144 and len(k_irr) < 30 and w_irr.sum() == pytest.approx(1.0)
    full = graphene.dos(kpts=k_full, width=0.05, emin=-9, emax=9)
    irr = graphene.dos(kpts=(12, 12, 1), width=0.05, emin=-9, emax=9)
    np.testing.assert_allclose(irr.get_weights(), full.get_weights(), atol=1e-10)
    graphene.atoms = None  # time-reversal-only reduction
    k_tr, w_tr = kpoint_mesh(graphene, (12, 12, 1))
    assert len(k_tr) == 74
    np.testing.assert_allclose(graphene.dos(kpts=(12, 12, 1), width=0.05, emin=-9, emax=9).get_weights(),
                               full.get_weights(), atol=1e-10)


def test_default_mesh(graphene):
    assert default_mesh(graphene) == (24, 24, 1)


def test_smear_matches_direct_sum():
    rng = np.random.default_rng(0)
    e_N, w_N = rng.normal(size=50), rng.random(50)
    grid = np.linspace(-4, 4, 801)
    for kind, kernel in (
        ("gauss", lambda x, s: np.exp(-0.5 * (x / s) ** 2) / (s * np.sqrt(2 * np.pi))),
        ("lorentz", lambda x, s: s / np.pi / (x**2 + s**2)),
    ):
        ref = (w_N[:, None] * kernel(grid[None] - e_N[:, None], 0.1)).sum(axis=0)
        np.testing.assert_allclose(smear(e_N, w_N[:, None], grid, 0.1, kind)[0], ref, atol=1e-12)
    with pytest.raises(ValueError, match="unknown smearing"):
        smear(e_N, w_N[:, None], grid, 0.1, "box")


def test_graphene_fermi_level_at_dirac_point(graphene):
    assert graphene.fermi_level(kpts=(24, 24, 1)) == pytest.approx(GRAPHENE_EPS, abs=1e-6)
    # a mesh without K still gives the Dirac energy by electron-hole symmetry
    assert graphene.fermi_level(kpts=(10, 10, 1)) == pytest.approx(GRAPHENE_EPS, abs=1e-6)


@pytest.mark.parametrize("num_electrons", [1.2, 2.5])
def test_fermi_level_counts_electrons(graphene, num_electrons):
    graphene.num_electrons = num_electrons
    width = 0.02
    mu = graphene.fermi_level(kpts=(24, 24, 1), width=width)
    assert (mu < GRAPHENE_EPS) == (num_electrons < 2)
    k_k3, w_k = kpoint_mesh(graphene, (24, 24, 1), symmetry=False)
    e_kn = graphene.eigenvalues(k_k3)
    count = 2 * w_k @ occupations(e_kn, mu, width).sum(axis=1)
    assert count == pytest.approx(num_electrons, abs=1e-8)


def test_insulator_fermi_level_is_mid_gap():
    e_kn = np.array([[-2.0, -1.0, 1.5], [-1.8, -0.5, 2.5]])
    assert find_fermi_level(e_kn, np.array([0.5, 0.5]), 4.0) == pytest.approx(0.5)  # (VBM -0.5 + CBM 1.5) / 2
    with pytest.raises(ValueError, match="num_electrons = 7"):
        find_fermi_level(e_kn, np.array([0.5, 0.5]), 7.0)


def test_fermi_level_needs_electron_count(graphene):
    graphene.num_electrons = None
    with pytest.raises(ValueError, match="needs num_electrons"):
        graphene.fermi_level()


@pytest.fixture
def graphene_supercell():
    """12×12 graphene supercell (288 pz orbitals), on-site 0.3 eV, half filled."""
    return neighbour_model(graphene_atoms().repeat((12, 12, 1)), GRAPHENE_T, GRAPHENE_EPS, 1.6, num_electrons=288.0)


def test_kpm_dos_matches_exact_and_counts_orbitals(graphene_supercell):
    tb = graphene_supercell
    kw = dict(kpts=(6, 6, 1), width=0.2, npts=600, emin=-12, emax=12)
    kpm, exact = tb.dos(method="kpm", **kw), tb.dos(method="exact", **kw)
    assert kpm.info["method"] == "kpm"
    e, w_kpm, w_ex = kpm.get_energies(), kpm.get_weights(), exact.get_weights()
    assert integral(kpm) == pytest.approx(tb.norb, rel=1e-4)  # μ0 is exact for unit-modulus random vectors
    # Jackson broadening equals `width` at the band centre, narrower towards the spectral edges
    centre = np.abs(e - GRAPHENE_EPS) < 5
    assert np.abs(w_kpm - w_ex)[centre].max() < 0.1 * w_ex[centre].max()
    assert np.interp(GRAPHENE_EPS, e, w_kpm) < 0.1 * w_kpm.max()  # vanishing DOS at the Dirac point


def test_kpm_projected_and_auto_route(graphene_supercell, monkeypatch):
    from ase_wannierml.tb import kmesh

    tb = graphene_supercell
    tb.orbitals.layer[: tb.norb // 2] = 1  # two fake "layers" of 144 orbitals
    monkeypatch.setattr(kmesh, "EXACT_MAX_ORBITALS", 100)  # auto → KPM for 288 orbitals
    parts = tb.dos(kpts=(2, 2, 1), width=0.2, npts=400, projected="layer", emin=-12, emax=12)
    assert [p.info["method"] for p in parts] == ["kpm", "kpm"]
    for p in parts:
        assert integral(p) == pytest.approx(144, rel=1e-3)  # exact μ0; grid quadrature error


def test_kpm_fermi_level_counts_electrons(graphene_supercell):
    from ase_wannierml.tb.fermi import fermi_level

    tb = graphene_supercell
    tb.num_electrons = 360.0  # electron doped: 180 of 288 states per spin
    mu_exact = fermi_level(tb, kpts=(3, 3, 1), width=0.05, method="exact")
    mu_kpm = fermi_level(tb, kpts=(3, 3, 1), width=0.05, method="kpm")
    k_k3, w_k = kpoint_mesh(tb, (3, 3, 1))
    e_kn = tb.eigenvalues(k_k3)
    count = lambda mu: w_k @ occupations(e_kn, mu, 0.05).sum(axis=1)  # noqa: E731  (states per spin below mu)
    assert count(mu_exact) == pytest.approx(180, abs=1e-8)
    # KPM counts are stochastic (≈ √(states / random vectors) ~ 3 states here); a spin-factor error would give 90
    assert count(mu_kpm) == pytest.approx(180, abs=8)


def test_kpm_kmesh_moments_are_k_weighted_sums_and_match_exact():
    """Per-k moments on common bounds summed with the k-weights equal the exact k-averaged moments when the trace
    is exact (projection on ≤ 16 orbitals: unit vectors), and the reconstructed DOS then matches the exact one."""
    from ase_wannierml.tb import kpm
    from ase_wannierml.tb.dos import kpm_moments_kmesh

    tb = neighbour_model(graphene_atoms().repeat((3, 3, 1)), GRAPHENE_T, GRAPHENE_EPS, 1.6)  # 18 orbitals
    k_k3, w_k = kpoint_mesh(tb, (4, 4, 1))
    assert len(k_k3) > 2 and w_k.sum() == pytest.approx(1.0)
    wts = np.zeros(tb.norb)
    wts[[0, 1, 5, 11]] = [1.0, 0.5, 1.0, 2.0]
    mom_tot, mom_p = kpm_moments_kmesh(tb, k_k3, w_k, num_moments=200, weights=[None, wts], num_random=64)
    e_kn, U_kin = np.linalg.eigh(tb.hamiltonian(k_k3))
    x_kn = (e_kn - mom_p.center) / mom_p.half_width
    assert np.abs(x_kn).max() < 1.0
    T_kmn = np.cos(np.arange(200)[None, :, None] * np.arccos(x_kn)[:, None, :])
    p_kn = np.einsum("i,kin->kn", wts, np.abs(U_kin) ** 2)
    mu_exact = np.einsum("k,kmn,kn->m", w_k, T_kmn, p_kn)
    np.testing.assert_allclose(mom_p.mu, mu_exact, atol=1e-10)
    assert mom_tot.mu[0] == pytest.approx(tb.norb, rel=1e-12)
    # through tb.dos: atom projections (1 orbital each: exact traces) add up to the exact k-averaged KPM DOS
    d = tb.dos(kpts=(4, 4, 1), method="kpm", projected="atom", width=0.3, npts=300, emin=-10, emax=10)
    e = d[0].get_energies()
    total = sum(p.get_weights() for p in d)
    k2, w2 = kpoint_mesh(tb, (4, 4, 1), symmetry=False)
    e2 = tb.eigenvalues(k2)
    ref = kpm_moments_kmesh(tb, k2, w2, width=0.3, num_random=1)[0]  # only for center, half width, N
    x2 = (e2 - ref.center) / ref.half_width
    mu2 = np.einsum("k,kmn->m", w2, np.cos(np.arange(len(ref.mu))[None, :, None] * np.arccos(x2)[:, None, :]))
    exact_kpm = kpm.kpm_reconstruct(kpm.KPMMoments(mu2, ref.center, ref.half_width), e)
    np.testing.assert_allclose(total, exact_kpm, atol=1e-9 * exact_kpm.max())
    exact = tb.dos(kpts=(4, 4, 1), method="exact", width=0.3, npts=300, emin=-10, emax=10).get_weights()
    count = lambda w: np.concatenate([[0], np.cumsum((w[1:] + w[:-1]) / 2 * np.diff(e))])  # noqa: E731
    assert np.abs(count(total) - count(exact)).max() < 0.1 * tb.norb  # same states, different broadening


@pytest.mark.parametrize("case", ["neutral", "doped", "insulator"])
def test_sparse_fermi_level_equals_the_dense_one(case):
    """E_F from windows of the sparse solver with inertia-count band indices ("sparse", the default for large
    cells) equals the dense result: 5.09° twisted bilayer graphene (Moon–Koshino, 508 orbitals: sparse route) at
    neutrality and doped by 6 electrons, starting from a guess 0.3 eV off (the window must move); and a gapped
    graphene supercell (±1 eV on the two sublattices, 512 orbitals) whose E_F must sit exactly mid-gap."""
    from ase_wannierml.slater_koster import moon_koshino_tb
    from ase_wannierml.structures import twisted_bilayer
    from ase_wannierml.tb.fermi import fermi_level

    if case == "insulator":
        atoms = graphene_atoms().repeat((16, 16, 1))  # sites alternate A, B
        tb = neighbour_model(atoms, GRAPHENE_T, 0.0, 1.6)
        onsite = tb.rows == tb.cols
        stagger = np.where(tb.rows % 2 == 0, 1.0, -1.0)
        tb = tb._replace(tb.R, tb.rows, tb.cols, tb.values + np.where(onsite, stagger, 0.0))
        tb.num_electrons = float(tb.norb)
        guess = 0.3
    else:
        tb = moon_koshino_tb(twisted_bilayer("graphene", m=6, r=1))
        tb.num_electrons += 6.0 if case == "doped" else 0.0
        guess = 0.8 - 0.3
    assert tb.norb > 500
    mu_dense = fermi_level(tb, kpts=(2, 2, 1), width=0.005, method="exact")
    mu_sparse = fermi_level(tb, kpts=(2, 2, 1), width=0.005, method="sparse", near=guess, num=8)
    assert mu_sparse == pytest.approx(mu_dense, abs=1e-9)
    if case == "insulator":
        k_k3, _ = kpoint_mesh(tb, (2, 2, 1))
        e_kn = tb.eigenvalues(k_k3)
        half = tb.norb // 2
        assert mu_sparse == pytest.approx(0.5 * (e_kn[:, half - 1].max() + e_kn[:, half].min()), abs=1e-9)
        assert e_kn[:, half].min() - e_kn[:, half - 1].max() > 1.0  # a real gap (2Δ = 2 eV at K)
    with pytest.raises(ValueError, match="unknown Fermi-level method"):
        fermi_level(tb, method="lanczos")
