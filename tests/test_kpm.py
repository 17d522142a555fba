"""Kernel polynomial DOS against exact diagonalisation of twisted bilayer graphene (Moon–Koshino model)."""
from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from scipy.integrate import trapezoid
from scipy.special import erf

from ase_wannierml.slater_koster import moon_koshino_tb
from ase_wannierml.structures import twisted_bilayer
from ase_wannierml.tb import kpm


@pytest.fixture(scope="module")
def tbg():
    """5.09° twisted bilayer graphene (m=6, r=1): 508 orbitals."""
    return moon_koshino_tb(twisted_bilayer("graphene", m=6, r=1))


def exact_moments(e_n: np.ndarray, w_n: np.ndarray, like: kpm.KPMMoments) -> kpm.KPMMoments:
    """Moments Σ_n w_n T_m(x_n) from exact eigenvalues (same scaling as ``like``)."""
    x = (e_n - like.center) / like.half_width
    m = np.arange(len(like.mu))[:, None]
    return kpm.KPMMoments(np.cos(m * np.arccos(x)[None, :]) @ w_n, like.center, like.half_width)


@pytest.mark.parametrize("k", [(0.0, 0.0, 0.0), (0.1, 0.3, 0.0)])
def test_kpm_matches_exact_dos(tbg, k):
    H = tbg.hamiltonian_sparse(np.array(k), allow_real=True)
    e = np.linalg.eigvalsh(H.toarray())
    E = np.linspace(e[0] - 1.0, e[-1] + 1.0, 6001)
    mom = kpm.kpm_moments(H, 512, num_random=32, seed=3)
    dos = kpm.kpm_reconstruct(mom, E)
    # normalisation: μ_0 = norb exactly, and the reconstructed DOS integrates to norb
    assert mom.mu[0] == pytest.approx(tbg.norb, rel=1e-12)
    assert trapezoid(dos, E) == pytest.approx(tbg.norb, rel=1e-4)
    # stochastic trace error only: same kernel with exact moments; L1 difference / norb
    dos_exact_kpm = kpm.kpm_reconstruct(exact_moments(e, np.ones_like(e), mom), E)
    l1 = trapezoid(np.abs(dos - dos_exact_kpm), E) / tbg.norb
    assert l1 < 0.08  # measured 0.06 with 32 random vectors
    # against the exact spectrum, each level Gaussian-smeared with the Jackson width σ_n = (π a / N) √(1 − x_n²):
    # DOS within 10 % in L1 (measured 6–7 %), integrated DOS within 1.2 % of norb everywhere (measured 0.8 %)
    sigma_n = mom.resolution * np.sqrt(1.0 - ((e - mom.center) / mom.half_width) ** 2)
    z = (E[:, None] - e[None, :]) / sigma_n[None, :]
    smeared = (np.exp(-0.5 * z**2) / (np.sqrt(2 * np.pi) * sigma_n)).sum(axis=1)
    assert trapezoid(np.abs(dos - smeared), E) / tbg.norb < 0.10
    ids = np.concatenate([[0.0], np.cumsum(0.5 * (dos[1:] + dos[:-1]) * np.diff(E))])
    ids_exact = (0.5 * (1.0 + erf(z / np.sqrt(2)))).sum(axis=1)
    assert np.abs(ids - ids_exact).max() < 0.012 * tbg.norb


def test_flat_spectrum_and_bounds():
    n = 3000
    H = sp.diags([np.linspace(-2.0, 2.0, n)], [0], format="csr")
    lo, hi = kpm.spectral_bounds(H)
    assert lo <= -2.0 and hi >= 2.0 and hi - lo < 4.2
    E = np.linspace(-1.5, 1.5, 301)
    dos = kpm.kpm_dos(H, E, num_moments=256, num_random=2, seed=0)
    assert dos == pytest.approx(np.full_like(E, n / 4.0), rel=0.02)  # 3000 states over 4 eV
    assert np.all(kpm.kpm_dos(H, np.array([-5.0, 5.0]), 64) == 0.0)  # outside the bounds


def test_projected_dos(tbg):
    H = tbg.hamiltonian_sparse(np.array([0.1, 0.3, 0.0]))
    e, U = np.linalg.eigh(H.toarray())
    E = np.linspace(-12.0, 8.0, 2001)
    bottom = (tbg.orbitals.layer == 0).astype(float)
    # layer projection, stochastic: integrates to the number of bottom-layer orbitals
    d0 = kpm.kpm_dos(H, E, 256, num_random=16, weights=bottom)
    assert trapezoid(d0, E) == pytest.approx(bottom.sum(), rel=1e-3)
    # a few orbitals: exact trace with unit vectors = Σ_n |U_in|² smeared by the same kernel
    w = np.zeros(tbg.norb)
    w[[0, 17, 300]] = [1.0, 0.5, 2.0]
    mom = kpm.kpm_moments(H, 256, num_random=8, weights=w)
    ref = exact_moments(e, (np.abs(U) ** 2).T @ w, mom)
    assert mom.mu == pytest.approx(ref.mu, abs=1e-10)
    with pytest.raises(ValueError, match="weights"):
        kpm.kpm_dos(H, E, 64, weights=np.ones(3))
    with pytest.raises(ValueError, match="all zero"):
        kpm.kpm_dos(H, E, 64, weights=np.zeros(tbg.norb))


def test_graphene_dirac_point_dos_vanishes():
    """Large graphene supercell at Γ (folds K in): DOS at the Dirac energy ≪ DOS at the van Hove energy."""
    from ase.build import make_supercell

    from ase_wannierml.structures import bilayer

    single = bilayer("graphene", "AA")[:2]
    atoms = make_supercell(single, np.diag([60, 60, 1]))
    tb = moon_koshino_tb(atoms)
    H = tb.hamiltonian_sparse(np.zeros(3), allow_real=True)
    e_dirac = 0.787597
    E = np.array([e_dirac, e_dirac - 2.0])  # van Hove singularity near E_D − |t|
    dos = kpm.kpm_dos(H, E, num_moments=512, num_random=4, seed=0)
    assert dos[0] < 0.1 * dos[1]


def test_errors():
    H = sp.identity(5, format="csr")
    with pytest.raises(ValueError, match="num_moments"):
        kpm.kpm_dos(H, np.zeros(3), num_moments=1)
    with pytest.raises(ValueError, match="kernel"):
        kpm.kpm_dos(H, np.zeros(3), 16, kernel="gauss")
    with pytest.raises(ValueError, match="lo < hi"):
        kpm.kpm_dos(H, np.zeros(3), 16, bounds=(1.0, 1.0))
    wide = sp.diags([np.linspace(-3.0, 3.0, 50)], [0], format="csr")
    with pytest.raises(ValueError, match="do not enclose"):
        kpm.kpm_dos(wide, np.zeros(3), 64, bounds=(-1.0, 1.0))
