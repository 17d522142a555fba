"""dH/dR by autograd (``model/derivative.py``, ``WannierMLCalculator.get_hamiltonian_derivative``) against physics:
central finite differences of the model's own H, the translation sum rule, covariance under rotations (Wigner D),
and the electron–phonon matrix elements of ``ase_wannierml.elph`` against analytic tight-binding results."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from ase_wannierml import WannierMLCalculator
from ase_wannierml.model import atoms_to_graph, load_model
from ase_wannierml.model import keys as K
from ase_wannierml.model.derivative import hamiltonian_jvp
from ase_wannierml.structures import bilayer

from model_helpers import orbital_rotation, random_rotations, rotated

torch.set_num_threads(1)

CASES = {"graphene": ("graphene-bilayer", "planar"), "mos2": ("mos2-bilayer", "full")}


@pytest.fixture(scope="module", params=list(CASES))
def case(request):
    """(name, float64 calculator of the shipped model, rattled bilayer, symmetry kind)."""
    model_name, symmetry = CASES[request.param]
    calc = WannierMLCalculator(model_name, dtype=torch.float64)
    atoms = bilayer(request.param)
    atoms.rattle(0.03, seed=3)  # generic geometry: no derivative vanishes by symmetry
    if symmetry == "planar":     # pz: keep the layers flat (rotations about z and mirrors are the pz symmetries)
        atoms.positions[:, 2] = bilayer(request.param).positions[:, 2]
    return request.param, calc, atoms, symmetry


def _pattern(n: int, seed: int = 0, planar: bool = False) -> np.ndarray:
    u = np.random.default_rng(seed).normal(size=(n, 3))
    if planar:
        u[:, 2] *= 0.0 if planar == "inplane" else 1.0
    return u


def test_equals_central_finite_differences(case):
    name, calc, atoms, _ = case
    u = _pattern(len(atoms), seed=1)
    d_tb = calc.get_hamiltonian_derivative(u, atoms=atoms)
    h0 = calc.get_hamiltonian(atoms)
    assert np.array_equal(d_tb.rows, h0.rows) and np.array_equal(d_tb.cols, h0.cols)
    assert np.array_equal(d_tb.R, h0.R)                                    # same support as get_hamiltonian()

    def values(lam: float) -> np.ndarray:
        moved = atoms.copy()
        moved.positions += lam * u
        tb = calc.model.predict_tightbinding(moved)
        assert np.array_equal(tb.rows, h0.rows) and np.array_equal(tb.R, h0.R)
        return tb.values

    h = 2e-3  # Richardson-extrapolated central differences: error O(h^4)
    d1 = (values(h) - values(-h)) / (2 * h)
    d2 = (values(h / 2) - values(-h / 2)) / h
    fd = (4 * d2 - d1) / 3
    scale = np.abs(d_tb.values).max()
    assert scale > 1e-2, f"{name}: dH/dλ is ~0 ({scale:.1e} eV/Å): the comparison would be vacuous"
    rel = np.abs(fd - d_tb.values).max() / scale
    assert rel < 1e-6, f"{name}: autograd dH/dλ differs from finite differences by {rel:.1e} (relative)"


def test_translation_sum_rule(case):
    name, calc, atoms, _ = case
    n = len(atoms)
    single = np.zeros((3 * n, n, 3))
    single[np.arange(3 * n), np.repeat(np.arange(n), 3), np.tile(np.arange(3), n)] = 1.0  # one atom, one axis
    each = calc.get_hamiltonian_derivative(single, atoms=atoms)
    stack = np.array([tb.values for tb in each])
    assert np.abs(stack).max() > 0.1                                        # individual derivatives are large
    for c in range(3):                                                      # Σ_a dH/dr_a,c = 0
        total = stack[c::3].sum(axis=0)
        assert np.abs(total).max() < 1e-9 * np.abs(stack).max(), f"{name}: sum rule violated along axis {c}"
    uniform = calc.get_hamiltonian_derivative(np.tile([0.3, -0.7, 0.2], (n, 1)), atoms=atoms)
    assert np.abs(uniform.values).max() < 1e-12
    # batched = single (the double-backward path and the forward-mode path agree)
    one = calc.get_hamiltonian_derivative(single[4], atoms=atoms)
    np.testing.assert_allclose(each[4].values, one.values, rtol=0, atol=1e-10 * np.abs(stack).max())


def _blocks(model, atoms, u) -> dict:
    graph = atoms_to_graph(atoms, model.config, dtype=torch.float64)
    _, d = hamiltonian_jvp(model, graph, torch.as_tensor(u))
    n_orb = np.asarray(model.config.num_orbitals)[graph[K.SPECIES].numpy()]
    out = {}
    for p, (i, j) in enumerate(graph[K.HAM_PAIR_INDEX].numpy().T):
        key = (int(i), int(j)) + tuple(int(x) for x in graph[K.HAM_PAIR_SHIFT][p])
        out[key] = d[p, :n_orb[i], :n_orb[j]].numpy()
    return out


def test_covariance_under_rotation(case):
    name, calc, atoms, symmetry = case
    model = calc.model
    u = _pattern(len(atoms), seed=2)
    if symmetry == "planar":
        u[:, 2] = 0.0  # pz blocks are defined for flat layers: in-plane pattern (the z-derivative is odd, tested below)
    ref = _blocks(model, atoms, u)
    scale = max(np.abs(b).max() for b in ref.values())
    assert scale > 1e-2
    symbols = atoms.get_chemical_symbols()
    for rot in random_rotations(symmetry, seed=5):
        new = _blocks(model, rotated(atoms, rot), u @ rot.T)
        d = {e: orbital_rotation(model, e, rot) for e in set(symbols)}
        assert set(new) == set(ref)
        worst = max(np.abs(new[k] - d[symbols[k[0]]] @ b @ d[symbols[k[1]]].T).max() for k, b in ref.items())
        assert worst < 1e-6 * scale, f"{name}: dH blocks do not rotate with Wigner D ({worst:.1e} eV/Å)"


def test_bad_input(case):
    _, calc, atoms, _ = case
    with pytest.raises(ValueError, match=r"shape \(\d+, 3\)"):
        calc.get_hamiltonian_derivative(np.zeros((len(atoms) + 1, 3)), atoms=atoms)
    with pytest.raises(ValueError, match="non-finite"):
        calc.get_hamiltonian_derivative(np.full((len(atoms), 3), np.nan), atoms=atoms)


def test_pruned_support_follows_hamiltonian():
    atoms = bilayer("graphene")
    calc = WannierMLCalculator(load_model("graphene-bilayer"), dtype=torch.float64, hamiltonian_threshold=1e-3)
    h0 = calc.get_hamiltonian(atoms)
    d = calc.get_hamiltonian_derivative(_pattern(len(atoms), 4), atoms=atoms)
    assert h0.nnz < WannierMLCalculator("graphene-bilayer", dtype=torch.float64).get_hamiltonian(atoms).nnz
    assert np.array_equal(d.rows, h0.rows) and np.array_equal(d.R, h0.R) and d.fermi_energy is None


def test_committee_derivative_is_that_of_the_mean():
    """For a committee the derivative is that of the committee-mean H (what ``get_hamiltonian`` returns)."""
    model = load_model("graphene-bilayer", committee=True)
    calc = WannierMLCalculator(model, dtype=torch.float64)
    atoms = bilayer("graphene")
    atoms.rattle(0.03, seed=1)
    atoms.positions[:, 2] = bilayer("graphene").positions[:, 2]
    u = _pattern(len(atoms), seed=6)
    d = calc.get_hamiltonian_derivative(u, atoms=atoms)

    def values(lam: float) -> np.ndarray:
        moved = atoms.copy()
        moved.positions += lam * u
        return calc.model.predict_tightbinding(moved).values

    h = 2e-3
    fd = (4 * (values(h / 2) - values(-h / 2)) / h - (values(h) - values(-h)) / (2 * h)) / 3
    assert np.abs(fd - d.values).max() < 1e-6 * np.abs(d.values).max()
