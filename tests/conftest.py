"""Shared test fixtures: small hand-built tight-binding models and the path to ../shared reference data."""
from __future__ import annotations

import os

# One thread per process for the whole test run, set before numpy/torch load their thread pools: on a busy machine
# idle OpenMP/BLAS threads spin-wait for the cores (a 63-minute test run instead of minutes), and the band tests'
# results must not depend on the BLAS thread count. Subprocesses (torchrun, examples) inherit the variables.
for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ[_var] = "1"

from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from ase import Atoms  # noqa: E402
from threadpoolctl import threadpool_limits  # noqa: E402

from ase_wannierml.tb.tightbinding import OrbitalTable, TightBinding  # noqa: E402

torch.set_num_threads(1)
threadpool_limits(1)   # BLAS pools already loaded by an earlier import

SHARED = Path(__file__).resolve().parents[1].parent / "shared"

GRAPHENE_A = 2.46  # Å
GRAPHENE_T = -2.7  # eV, nearest-neighbour pz hopping
GRAPHENE_EPS = 0.3  # eV, on-site energy (so the Dirac point is not at 0 by accident)


def graphene_atoms(a: float = GRAPHENE_A, vacuum: float = 20.0) -> Atoms:
    """Graphene, 2 atoms (A at the origin, B at fractional (1/3, 2/3)), hexagonal cell with γ = 120°, pbc T T F."""
    cell = [[a, 0, 0], [-a / 2, a * np.sqrt(3) / 2, 0], [0, 0, vacuum]]
    atoms = Atoms("C2", scaled_positions=[[0, 0, 0], [1 / 3, 2 / 3, 0]], cell=cell, pbc=[True, True, False])
    atoms.arrays["layer"] = np.array([0, 0])
    return atoms


def neighbour_model(atoms: Atoms, hopping: float, onsite: float, cutoff: float, **kwargs) -> TightBinding:
    """One pz orbital per atom; ``hopping`` (eV) between every pair closer than ``cutoff`` (Å), found by brute force
    over the 5×5 neighbouring cells in-plane; ``onsite`` (eV) on the diagonal."""
    n = len(atoms)
    R_list, rows, cols, values = [np.zeros((n, 3), int)], [np.arange(n)], [np.arange(n)], [np.full(n, onsite)]
    for n1 in range(-2, 3):
        for n2 in range(-2, 3):
            shift = n1 * atoms.cell[0] + n2 * atoms.cell[1]
            d_ij = np.linalg.norm(atoms.positions[None] + shift - atoms.positions[:, None], axis=-1)
            i, j = np.nonzero((d_ij > 1e-6) & (d_ij < cutoff))
            R_list.append(np.tile([n1, n2, 0], (len(i), 1))), rows.append(i), cols.append(j)
            values.append(np.full(len(i), hopping))
    orbitals = OrbitalTable.from_atoms(atoms, {"C": ["pz"], "B": ["pz"], "N": ["pz"]})
    return TightBinding(atoms.cell.array, np.concatenate(R_list), np.concatenate(rows), np.concatenate(cols),
                        np.concatenate(values), orbitals, pbc=atoms.pbc, atoms=atoms, **kwargs)


@pytest.fixture
def graphene() -> TightBinding:
    """Nearest-neighbour graphene pz model, t = -2.7 eV, on-site 0.3 eV, 2 electrons (half filling)."""
    return neighbour_model(graphene_atoms(), GRAPHENE_T, GRAPHENE_EPS, 1.6, num_electrons=2.0)


def random_hermitian_model(norb: int = 3, seed: int = 0, complex_values: bool = True) -> TightBinding:
    """A random Hermitian TightBinding with R in {-1, 0, 1}² × {0}; values rounded to 1e-6 eV (file precision)."""
    rng = np.random.default_rng(seed)
    R_list, rows, cols, values = [], [], [], []
    for r in [(0, 0, 0), (1, 0, 0), (0, 1, 0), (1, 1, 0), (1, -1, 0)]:
        block = rng.normal(size=(norb, norb)) + (1j * rng.normal(size=(norb, norb)) if complex_values else 0)
        block = np.round(block.real, 6) + 1j * np.round(block.imag, 6)
        if r == (0, 0, 0):
            block = np.triu(block) + np.triu(block, 1).conj().T
            block[np.diag_indices(norb)] = block.diagonal().real
        i, j = np.nonzero(np.abs(block) > 0.3)  # sparse: drop small elements
        for sign in ((1,) if r == (0, 0, 0) else (1, -1)):
            R_list += [tuple(sign * np.array(r))] * len(i)
            rows += (i if sign == 1 else j).tolist()
            cols += (j if sign == 1 else i).tolist()
            values += (block[i, j] if sign == 1 else block[i, j].conj()).tolist()
    cell = np.diag([3.0, 3.5, 15.0])
    return TightBinding(cell, R_list, rows, cols, values, OrbitalTable.unknown(norb), pbc=(True, True, False))


@pytest.fixture
def shared_dir() -> Path:
    """../shared (read-only reference data); tests needing it are skipped when it is absent."""
    if not SHARED.is_dir():
        pytest.skip(f"reference data folder {SHARED} not found")
    return SHARED


REPO_ROOT = Path(__file__).resolve().parents[1]


def load_repo_module(relative_path: str):
    """Import a repository script or benchmark (e.g. ``"benchmarks/phonon_dispersion_dft.py"``) as a module."""
    import importlib.util

    path = REPO_ROOT / relative_path
    spec = importlib.util.spec_from_file_location(f"repo_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
