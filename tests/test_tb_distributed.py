"""k-points as tasks (tb/distributed.py): a two-worker Dask LocalCluster, concurrent.futures executors and the
embedded "local" default give the serial eigenvalues, in order; the calculator's band structure too."""
from __future__ import annotations

from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor

import numpy as np
import pytest

from conftest import GRAPHENE_EPS, GRAPHENE_T, graphene_atoms, neighbour_model, random_hermitian_model

distributed = pytest.importorskip("distributed")


@pytest.fixture(scope="module")
def client():
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0")
    c = distributed.Client(cluster)
    yield c
    c.close()
    cluster.close()


@pytest.fixture(scope="module")
def supercell_model():
    """Nearest-neighbour graphene 8x8 supercell, rattled (128 pz orbitals, no symmetry left)."""
    atoms = graphene_atoms().repeat((8, 8, 1))
    atoms.rattle(0.05, seed=3)
    return neighbour_model(atoms, GRAPHENE_T, GRAPHENE_EPS, 1.75, num_electrons=128.0, fermi_level=GRAPHENE_EPS)


def _kpts(n: int = 23, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    k = rng.uniform(-0.5, 0.5, size=(n, 3))
    k[:, 2] = 0.0
    return k


def test_dask_dense_equals_serial_and_keeps_order(client, supercell_model):
    k = _kpts()
    serial = supercell_model.eigenvalues(k)
    dist = supercell_model.eigenvalues(k, executor=client)
    assert dist.shape == serial.shape == (len(k), 128)
    assert np.max(np.abs(dist - serial)) < 1e-12
    # order is the caller's: reversing the input reverses the output
    rev = supercell_model.eigenvalues(k[::-1], executor=client)
    assert np.max(np.abs(rev[::-1] - serial)) < 1e-12


def test_dask_graphene_dirac_point(client):
    """Physics check through the tasks: E(K) = ε (two-fold), E(Γ) = ε ± 3|t|."""
    tb = neighbour_model(graphene_atoms(), GRAPHENE_T, GRAPHENE_EPS, 1.6, num_electrons=2.0)
    e = tb.eigenvalues([[1 / 3, 1 / 3, 0], [0, 0, 0], [1 / 3, 1 / 3, 0]], executor=client)
    assert np.allclose(e[0], GRAPHENE_EPS, atol=1e-10) and np.allclose(e[2], GRAPHENE_EPS, atol=1e-10)
    assert np.allclose(e[1], [GRAPHENE_EPS - 3 * abs(GRAPHENE_T), GRAPHENE_EPS + 3 * abs(GRAPHENE_T)], atol=1e-10)


def test_dask_complex_model_equals_serial(client):
    tb = random_hermitian_model(norb=6, seed=4, complex_values=True)
    k = _kpts(9, seed=2)
    assert np.max(np.abs(tb.eigenvalues(k, executor=client) - tb.eigenvalues(k))) < 1e-12


def test_dask_sparse_near_equals_serial(client, supercell_model):
    """num/near (shift-invert) along a path: chunks restart the factorisation reuse, the states are the same."""
    path = np.linspace([0, 0, 0], [0.5, 0, 0], 12)
    serial = supercell_model.eigenvalues(path, num=6, near=GRAPHENE_EPS + 0.1)
    dist = supercell_model.eigenvalues(path, num=6, near=GRAPHENE_EPS + 0.1, executor=client)
    assert dist.shape == (12, 6)
    assert np.max(np.abs(dist - serial)) < 1e-9
    dense = np.sort(supercell_model.eigenvalues(path), axis=1)
    for e_n, d_n in zip(dist, dense):           # the 6 dense eigenvalues closest to the shift
        nearest = np.sort(d_n[np.argsort(np.abs(d_n - (GRAPHENE_EPS + 0.1)))[:6]])
        assert np.allclose(np.sort(e_n), nearest, atol=1e-9)


def test_concurrent_futures_executors(supercell_model):
    k = _kpts(7, seed=5)
    serial = supercell_model.eigenvalues(k)
    with ThreadPoolExecutor(2) as ex:
        assert np.max(np.abs(supercell_model.eigenvalues(k, executor=ex) - serial)) < 1e-12
    with ProcessPoolExecutor(2) as ex:
        assert np.max(np.abs(supercell_model.eigenvalues(k, executor=ex) - serial)) < 1e-12


def test_local_default_and_band_structure(monkeypatch, supercell_model):
    from ase_wannierml.tb import distributed as tbd

    monkeypatch.setenv("WANNIERML_LOCAL_WORKERS", "2")
    try:
        bs = supercell_model.band_structure("GMKG", npoints=20, executor="local")
        client = tbd.local_client()
        assert len(client.ncores()) == 2
    finally:
        tbd.close_local_client()
    ref = supercell_model.band_structure("GMKG", npoints=20)
    assert np.max(np.abs(bs.energies - ref.energies)) < 1e-12


def test_bad_executor_is_a_clear_error(supercell_model):
    with pytest.raises(ValueError, match="executor 'lokal'"):
        supercell_model.eigenvalues(_kpts(2), executor="lokal")
    with pytest.raises(TypeError, match="neither a Dask Client"):
        supercell_model.eigenvalues(_kpts(2), executor=object())


def test_calculator_band_structure_with_client(client):
    torch = pytest.importorskip("torch")
    from ase_wannierml import WannierMLCalculator, build_model
    from ase_wannierml.structures import bilayer

    model = build_model({"C": ["pz"]}, cutoff=4.0, dtype=torch.float64, seed=7, wannier_electrons={"C": 1.0},
                        ham_cutoff_near=4.0, ham_cutoff_far=5.0, ham_cutoff_inter=5.0)
    atoms = bilayer("graphene", stacking="AB")
    atoms.calc = WannierMLCalculator(model)
    ref = atoms.calc.get_band_structure(path="GKMG", npoints=40)
    dist = atoms.calc.get_band_structure(path="GKMG", npoints=40, executor=client)
    assert np.max(np.abs(dist.energies - ref.energies)) < 1e-12
    assert dist.reference == ref.reference


def strained_graphene_gap_at_k(strain: float) -> tuple[float, float]:
    """(Dirac-point energy at K, bandwidth at Γ) eV of nearest-neighbour graphene with t scaled by (1 - 3 strain)."""
    tb = neighbour_model(graphene_atoms(2.46 * (1 + strain)), GRAPHENE_T * (1 - 3 * strain), GRAPHENE_EPS, 1.75)
    e_k = tb.eigenvalues([[1 / 3, 1 / 3, 0], [0, 0, 0]])
    return float(e_k[0].mean()), float(e_k[1, 1] - e_k[1, 0])


def test_structures_as_tasks(client):
    """map_tasks: one task per structure, results in order and equal to the serial loop (bandwidth 6|t|)."""
    from ase_wannierml.tb.distributed import map_tasks

    strains = [0.0, 0.01, 0.02, -0.01]
    serial = [strained_graphene_gap_at_k(s) for s in strains]
    assert map_tasks(strained_graphene_gap_at_k, strains, client) == serial
    with ThreadPoolExecutor(2) as ex:
        assert map_tasks(strained_graphene_gap_at_k, strains, ex) == serial
    assert map_tasks(strained_graphene_gap_at_k, strains, None) == serial
    for s, (e_dirac, width) in zip(strains, serial):
        assert abs(e_dirac - GRAPHENE_EPS) < 1e-10 and abs(width - 6 * abs(GRAPHENE_T) * (1 - 3 * s)) < 1e-10
