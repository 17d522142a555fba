"""What a new user meets first: this structure's Fermi level (not the model's stored level), one default k-mesh
for the calculator and the engine, the DOS mesh of moiré cells, thread defaults and progress bars."""
from __future__ import annotations

import numpy as np
import pytest

from ase_wannierml import WannierMLCalculator, bilayer, twisted_bilayer
from ase_wannierml.tb import kmesh
from ase_wannierml.tb.progress import PROGRESS_ENV, progress
from ase_wannierml.threads import machine_is_busy, safe_default_threads, set_threads


@pytest.fixture(scope="module")
def ab_calc():
    atoms = bilayer("graphene", stacking="AB")
    atoms.calc = WannierMLCalculator("graphene-bilayer")
    return atoms, atoms.calc


def test_fermi_level_is_this_structures_dirac_crossing(ab_calc):
    """AB bilayer graphene: E_F at half filling sits where the two middle bands touch at K, not at the model's
    stored reference level (the mean neutrality level of its training frames, 24 meV away)."""
    atoms, calc = ab_calc
    tb = calc.get_hamiltonian()
    k_K = atoms.cell.bandpath("GK", npoints=2, pbc=[True, True, False]).special_points["K"]
    e_K = tb.eigenvalues([k_K])[0]                           # 4 pz bands; bands 1 and 2 meet at K
    ef = calc.get_fermi_level()
    assert ef == pytest.approx(0.5 * (e_K[1] + e_K[2]), abs=3e-3)
    assert abs(ef - calc.reference_level) > 0.01             # the two levels are different numbers
    bs = calc.get_band_structure(npoints=30)
    assert bs.reference == ef
    # a denser mesh moves E_F of this semimetal by less than a few meV
    assert calc.get_fermi_level(kpts=(48, 48, 1)) == pytest.approx(ef, abs=5e-3)


def test_calculator_and_engine_share_the_default_mesh(ab_calc):
    atoms, calc = ab_calc
    tb = calc.get_hamiltonian()
    assert kmesh.default_mesh(tb) == (24, 24, 1)
    a, b = calc.get_dos(), tb.dos()
    np.testing.assert_allclose(a.get_energies(), b.get_energies())
    np.testing.assert_allclose(a.get_weights(), b.get_weights())
    assert len(calc.get_ibz_k_points()) == 24 * 24


def test_dos_mesh_resolves_moire_cells():
    from ase_wannierml.slater_koster import moon_koshino_tb

    tb = moon_koshino_tb(twisted_bilayer("graphene", m=6, r=1))      # 5.09°, 508 orbitals
    assert kmesh.default_mesh(tb)[:2] == (3, 3)
    n = kmesh.dos_mesh(tb, width=0.02)
    assert n[2] == 1 and n[0] == n[1] == 29                         # |b| = 0.26 1/Å: 6.6 · 0.26 / 0.06
    assert kmesh.dos_mesh(tb, width=0.2)[0] == 3                     # never coarser than the density mesh
    # the DOS it gives is smooth: no empty gaps inside the band continuum near E_D (a 3 × 3 mesh has them)
    e_d = float(np.median(tb.eigenvalues([[1 / 3, 1 / 3, 0]])[0][253:255]))
    for kpts, smooth in ((None, True), ((3, 3, 1), False)):
        d = tb.dos(kpts=kpts, width=0.02, emin=e_d + 0.1, emax=e_d + 0.4, npts=301)
        assert (d.get_weights().min() > 0.05 * d.get_weights().mean()) == smooth


def test_thread_helpers(monkeypatch, capsys):
    import torch

    assert machine_is_busy(cpus=2, load=2.0) and not machine_is_busy(cpus=2, load=0.3)
    with pytest.raises(ValueError, match="threads must be >= 1"):
        set_threads(0)
    set_threads(1)
    assert torch.get_num_threads() == 1
    monkeypatch.setenv("OMP_NUM_THREADS", "1")            # the user chose: the default leaves it alone
    assert safe_default_threads() == 1 and capsys.readouterr().err == ""


def test_progress_bars_follow_the_environment(monkeypatch, capsys):
    items = [1, 2, 3]
    monkeypatch.setenv(PROGRESS_ENV, "0")
    assert progress(items, 3) is items
    monkeypatch.setenv(PROGRESS_ENV, "1")
    monkeypatch.setattr("ase_wannierml.tb.progress.DELAY_S", 0.0)      # draw at once
    assert list(progress(items, 3, "k-points")) == items
    assert "k-points" in capsys.readouterr().err
