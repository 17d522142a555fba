"""WannierMLCalculator through real ASE clients: finite differences, optimizers, MD, band structures, DOS, caching.

Uses a small untrained float64 model (deterministic seed): the physics checked here (forces = −dE/dr, stress =
dE/dε / V, energy conservation, ASE's generic band-structure path = ours) holds for any smooth model.
"""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pytest
import torch
from ase import Atoms, units
from ase.calculators.calculator import PropertyNotImplementedError
from ase.filters import FrechetCellFilter
from ase.md.velocitydistribution import MaxwellBoltzmannDistribution, Stationary
from ase.md.verlet import VelocityVerlet

from ase.optimize import BFGS

from ase_wannierml import WannierMLCalculator, build_model, load_model
from ase_wannierml.structures import bilayer


@pytest.fixture(scope="module")
def model():
    return build_model({"C": ["pz"]}, cutoff=4.0, dtype=torch.float64, seed=7, wannier_electrons={"C": 1.0},
                       ham_cutoff_near=4.0, ham_cutoff_far=5.0, ham_cutoff_inter=5.0)


@pytest.fixture(scope="module")
def pretrained():
    """The shipped graphene model in float64 (a physical potential-energy surface for relaxation and MD)."""
    return load_model("graphene-bilayer", dtype=torch.float64)


def graphene_bilayer(rattle: float = 0.02, seed: int = 1) -> Atoms:
    atoms = bilayer("graphene", stacking="AB")
    atoms.rattle(rattle, seed=seed)
    return atoms


def test_forces_equal_finite_differences(model):
    atoms = graphene_bilayer()
    atoms.calc = WannierMLCalculator(model)
    forces = atoms.get_forces()
    h = 1e-4
    fd = np.zeros_like(forces)
    for a in range(len(atoms)):
        for c in range(3):
            p = atoms.positions.copy()
            for sign in (1, -1):
                atoms.positions[a, c] = p[a, c] + sign * h
                fd[a, c] -= sign * atoms.get_potential_energy() / (2 * h)
            atoms.positions = p
    assert np.abs(forces - fd).max() < 1e-6
    assert np.abs(forces).max() > 1e-3  # not trivially zero


def test_stress_equals_finite_differences_through_frechet_filter(model):
    atoms = graphene_bilayer()
    atoms.calc = WannierMLCalculator(model)
    filt = FrechetCellFilter(atoms)
    grad = -filt.get_forces()[len(atoms):]  # dE/dx of the filter's cell coordinates (stress-based)
    x0 = filt.get_positions()
    h = 1e-5
    for row in range(3):
        for col in range(3):
            x = x0.copy()
            x[len(atoms) + row, col] += h
            filt.set_positions(x)
            ep = atoms.get_potential_energy()
            x[len(atoms) + row, col] -= 2 * h
            filt.set_positions(x)
            em = atoms.get_potential_energy()
            filt.set_positions(x0)
            fd = (ep - em) / (2 * h)  # the filter forces are -dE/dx of its own coordinates
            assert abs(fd - grad[row, col]) < 1e-5, (row, col, fd, grad[row, col])
    assert np.abs(atoms.get_stress()).max() > 1e-5


def test_results_cached_and_recomputed(model):
    atoms = graphene_bilayer()
    calc = WannierMLCalculator(model)
    atoms.calc = calc
    e0 = atoms.get_potential_energy()
    tb0 = calc.get_hamiltonian()
    assert calc.get_hamiltonian() is tb0  # same geometry: reused
    atoms.get_forces()
    assert calc.get_hamiltonian() is tb0
    atoms.positions[0, 2] += 0.05
    e1 = atoms.get_potential_energy()
    assert e1 != e0
    tb1 = calc.get_hamiltonian()
    assert tb1 is not tb0
    assert not np.allclose(tb1.hamiltonian([[0, 0, 0]]), tb0.hamiltonian([[0, 0, 0]]))
    atoms.set_cell(atoms.cell * 1.01, scale_atoms=True)
    assert calc.get_hamiltonian() is not tb1


def test_per_atom_energies_sum_to_energy(model):
    atoms = graphene_bilayer()
    atoms.calc = WannierMLCalculator(model)
    assert np.isclose(atoms.get_potential_energies().sum(), atoms.get_potential_energy())
    assert atoms.get_potential_energy() == atoms.calc.get_property("free_energy", atoms)


def test_nve_energy_conservation(pretrained):
    atoms = bilayer("graphene", stacking="AB").repeat((2, 2, 1))
    atoms.calc = WannierMLCalculator(pretrained)
    MaxwellBoltzmannDistribution(atoms, temperature_K=300, rng=np.random.default_rng(0))
    Stationary(atoms)
    dyn = VelocityVerlet(atoms, 1.0 * units.fs)
    etot = []
    dyn.attach(lambda: etot.append(atoms.get_total_energy()), interval=10)
    dyn.run(1000)  # 1 ps
    etot = np.array(etot)
    drift_per_atom_ps = abs(np.polyfit(np.arange(len(etot)) * 1e-2, etot, 1)[0]) / len(atoms)
    assert np.ptp(etot) / len(atoms) < 1e-3  # eV/atom
    assert drift_per_atom_ps < 1e-3  # eV/atom/ps
    assert atoms.get_temperature() > 30  # it actually moved


def test_bfgs_relaxes_bilayer(pretrained):
    atoms = graphene_bilayer(rattle=0.05, seed=3)
    atoms.positions[2:, 2] += 0.2  # layers pulled apart
    atoms.calc = WannierMLCalculator(pretrained)
    assert BFGS(atoms, logfile=None).run(fmax=0.01, steps=300)
    assert np.abs(atoms.get_forces()).max() < 0.01
    gap = atoms.positions[2:, 2].mean() - atoms.positions[:2, 2].mean()
    assert 3.0 < gap < 3.8  # a bound bilayer, not collapsed or separated


def test_ase_generic_band_structure_equals_ours(model):
    atoms = graphene_bilayer(rattle=0.0)
    path = atoms.cell.bandpath("GKMG", npoints=30)
    calc = WannierMLCalculator(model, kpts=path)
    atoms.calc = calc
    ours = calc.get_band_structure(path=path)
    theirs = calc.band_structure()
    assert np.allclose(ours.energies, theirs.energies, atol=1e-10)
    assert np.isclose(ours.reference, theirs.reference)
    assert np.allclose(ours.path.kpts, theirs.path.kpts)


def test_band_plot_saves_png(model, tmp_path):
    atoms = graphene_bilayer(rattle=0.0)
    atoms.calc = WannierMLCalculator(model)
    bs = atoms.calc.get_band_structure(npoints=40)
    out = tmp_path / "bands.png"
    bs.plot(emin=-2, emax=2, filename=str(out), show=False)
    assert out.stat().st_size > 5000


def test_dos_integrates_to_orbital_count(model):
    atoms = graphene_bilayer(rattle=0.0)
    atoms.calc = WannierMLCalculator(model)
    dos = atoms.calc.get_dos(kpts=(9, 9, 1), width=0.05, npts=4000)
    e, w = dos.get_energies(), dos.get_weights()
    assert np.isclose(np.trapezoid(w, e), 4.0, rtol=2e-3)
    from ase.dft.dos import DOS

    ase_dos = DOS(atoms.calc, width=0.1, npts=2001, window=(-30, 30))
    ea = ase_dos.get_energies()
    assert np.isclose(np.trapezoid(ase_dos.get_dos(), ea), 2 * 4.0, rtol=1e-2)  # ASE counts both spins


def test_fermi_level_counts_electrons(model):
    atoms = graphene_bilayer(rattle=0.0)
    calc = WannierMLCalculator(model, kpts=(12, 12, 1))
    atoms.calc = calc
    ef = calc.get_fermi_level()
    e_kn = np.array([calc.get_eigenvalues(k) for k in range(len(calc.get_ibz_k_points()))])
    below = (e_kn < ef).sum(axis=1).mean()
    assert abs(2 * below - 4.0) < 0.2  # 4 pz electrons, 2 per band


def test_bad_input_errors(model):
    mol = Atoms("CO", positions=[[0, 0, 0], [0, 0, 1.2]])
    with pytest.raises(ValueError, match="O"):
        mol.calc = WannierMLCalculator(model)
        mol.get_potential_energy()
    close = Atoms("C2", positions=[[0, 0, 0], [0, 0, 0.2]])
    close.calc = WannierMLCalculator(model)
    with pytest.raises(ValueError, match="close|distance"):
        close.get_potential_energy()
    molecule = Atoms("C2", positions=[[0, 0, 0], [0, 0, 1.4]])
    molecule.calc = WannierMLCalculator(model)
    assert np.isfinite(molecule.get_potential_energy())
    assert np.allclose(molecule.get_forces().sum(axis=0), 0, atol=1e-10)
    with pytest.raises(PropertyNotImplementedError):
        molecule.get_stress()
    with pytest.raises(ValueError, match="periodic"):
        molecule.calc.get_band_structure()
    atoms = graphene_bilayer()
    atoms.calc = WannierMLCalculator(model)
    with pytest.raises(ValueError, match="kpts|shape"):
        atoms.calc.get_hamiltonian().eigenvalues(np.zeros((4, 2)))


def _graphite(pretrained):
    """AB graphite-like 3D cell (two layers, c = 6.7 Å): a periodic cell for NPT with the bilayer model."""
    atoms = bilayer("graphene", stacking="AB")
    z = atoms.positions[:, 2]
    atoms.positions[:, 2] = z - z.min() + 0.5
    atoms.set_cell([atoms.cell[0], atoms.cell[1], [0, 0, 6.7]])
    atoms.pbc = True
    atoms = atoms.repeat((2, 2, 1))
    atoms.calc = WannierMLCalculator(pretrained)
    MaxwellBoltzmannDistribution(atoms, temperature_K=300, rng=np.random.default_rng(1))
    Stationary(atoms)
    return atoms


@pytest.mark.parametrize("ensemble", ["nvt", "npt"])
def test_nose_hoover_integrators_conserve_their_energy(pretrained, ensemble):
    from ase.md.nose_hoover_chain import MTKNPT, NoseHooverChainNVT

    atoms = _graphite(pretrained)
    dt = 0.5 * units.fs
    if ensemble == "nvt":
        dyn = NoseHooverChainNVT(atoms, dt, temperature_K=300, tdamp=100 * dt)
    else:
        dyn = MTKNPT(atoms, dt, temperature_K=300, pressure_au=0.0, tdamp=100 * dt, pdamp=1000 * dt)
    volume0 = atoms.get_volume()
    conserved = []
    dyn.attach(lambda: conserved.append(dyn.get_conserved_energy()), interval=5)
    dyn.run(200)
    assert np.ptp(conserved) / len(atoms) < 2e-3  # eV/atom over 100 fs
    if ensemble == "npt":
        assert atoms.get_volume() != volume0  # the cell really moves (stress is used)


def test_langevin_and_in_plane_cell_relaxation(pretrained):
    from ase.md.langevin import Langevin
    from ase.optimize import FIRE

    atoms = graphene_bilayer(rattle=0.0)
    atoms.calc = WannierMLCalculator(pretrained)
    dyn = Langevin(atoms, 1.0 * units.fs, temperature_K=300, friction=0.02 / units.fs, rng=np.random.default_rng(0))
    dyn.run(50)
    assert np.all(np.isfinite(atoms.positions))
    atoms.set_cell(atoms.cell * [1.03, 1.03, 1.0], scale_atoms=True)  # 3 % in-plane strain
    cell_z = atoms.cell[2].copy()
    filt = FrechetCellFilter(atoms, mask=[True, True, False, False, False, True])  # 2D: in-plane cell only
    assert FIRE(filt, logfile=None).run(fmax=0.01, steps=500)
    assert np.allclose(atoms.cell[2], cell_z)  # vacuum untouched
    a = np.linalg.norm(atoms.cell[0])
    assert 2.40 < a < 2.52  # back near the graphene lattice constant (DFT-PBE ~2.46-2.47 Å)
