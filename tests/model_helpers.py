"""Reusable physics checks that every ``WannierMLModel`` variant must pass (the model test mixin).

Use::

    class TestMyModel(ModelTestMixin):
        @pytest.fixture(scope="class")
        def model(self):            # a tiny float64 WannierMLModel
            ...
        @pytest.fixture(scope="class")
        def atoms(self):            # a small structure (< ~12 atoms) the model knows
            ...
        ham_symmetry = "full"       # or "planar" for partial shells such as pz (rotations about z, mirrors)

Every check compares with physics, not with stored numbers: invariance of E and covariance of F under O(3),
translations and permutations; H blocks ↦ D^{l1} H D^{l2}ᵀ with e3nn Wigner matrices; band energies invariant
under rotation of the whole cell; F and stress equal central finite differences of E; exact Hermiticity;
continuity across every cut-off; batched = single. ``assert_nontrivial`` guards against a model whose outputs
are zero (which would pass every equivariance test).
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from ase import Atoms
from e3nn import o3

from ase_wannierml.model import atoms_to_graph, batch_graphs, keys as K
from ase_wannierml.model.irreps_basis import shells_layout, wigner_d_w90

DTYPE = torch.float64

#: A tiny model: fast enough for unit tests, big enough to exercise every irrep path (l up to 2 features).
TINY = dict(hidden_irreps="8x0e+4x1o+4x2e", ham_irreps="4x0e+4x1o+4x1e+4x2e+4x2o", num_interactions=2,
            num_radial=4, radial_hidden=8, ham_num_radial=4, avg_num_neighbors=8.0)


def run(model, atoms: Atoms, forces: bool = True, stress: bool = False, ham: bool = True) -> dict:
    """Model outputs for ``atoms`` as numpy arrays (+ the graph under key ``"graph"``)."""
    graph = atoms_to_graph(atoms, model.config, dtype=DTYPE)
    out = model(graph, compute_forces=forces, compute_stress=stress, compute_hamiltonian=ham)
    res = {k: v.detach().numpy() for k, v in out.items()}
    res["graph"] = graph
    return res


def pair_blocks(model, res: dict) -> dict[tuple, np.ndarray]:
    """{(i, j, S0, S1, S2): H_ij(S) (n_i, n_j)} for every pair *and* its Hermitian partner."""
    graph, n_orb = res["graph"], np.asarray(model.config.num_orbitals)
    species = graph[K.SPECIES].numpy()
    out = {}
    for p, (i, j) in enumerate(graph[K.HAM_PAIR_INDEX].numpy().T):
        s = tuple(int(x) for x in graph[K.HAM_PAIR_SHIFT][p])
        block = res[K.HAM_BLOCKS][p, :n_orb[species[i]], :n_orb[species[j]]]
        out[(int(i), int(j)) + s] = block
        out[(int(j), int(i)) + tuple(-x for x in s)] = block.T
    return out


def orbital_rotation(model, element: str, rot: np.ndarray) -> np.ndarray:
    """(n_orb, n_orb) representation of a 3×3 (improper) rotation on one atom's orbitals (Wannier90 order).

    Partial shells: asserts the rotation does not mix kept and dropped components (else it is not a symmetry
    the partial shell can represent)."""
    blocks = []
    for l, comps, _ in shells_layout(model.config.orbitals[element]):
        d = wigner_d_w90(l, torch.as_tensor(rot)).numpy()
        others = [c for c in range(2 * l + 1) if c not in comps]
        assert np.abs(d[np.ix_(comps, others)]).max(initial=0.0) < 1e-10, "rotation mixes a partial shell"
        blocks.append(d[np.ix_(comps, comps)])
    n = sum(len(b) for b in blocks)
    out, k = np.zeros((n, n)), 0
    for b in blocks:
        out[k:k + len(b), k:k + len(b)] = b
        k += len(b)
    return out


def random_rotations(kind: str, seed: int = 0) -> list[np.ndarray]:
    """Proper and improper 3×3 rotations: ``full`` = random O(3); ``planar`` = rotations about z and mirrors
    z → −z, x → −x (the symmetry group of a pz shell in a flat layer)."""
    rng = np.random.default_rng(seed)
    if kind == "full":
        torch.manual_seed(seed)
        r = o3.rand_matrix(2, dtype=DTYPE).numpy()
        return [r[0], -r[1], np.diag([1.0, 1.0, -1.0]) @ r[0]]
    phi = rng.uniform(0, 2 * np.pi, size=2)
    rz = [np.array([[np.cos(p), -np.sin(p), 0], [np.sin(p), np.cos(p), 0], [0, 0, 1.0]]) for p in phi]
    mirror_z, mirror_x = np.diag([1.0, 1.0, -1.0]), np.diag([-1.0, 1.0, 1.0])
    return [rz[0], mirror_z @ rz[1], mirror_x, mirror_x @ rz[0]]


def rotated(atoms: Atoms, rot: np.ndarray) -> Atoms:
    """Copy of ``atoms`` with positions and cell rotated by ``rot`` (r → R r)."""
    new = atoms.copy()
    new.positions = atoms.positions @ rot.T
    new.cell = atoms.cell[:] @ rot.T
    return new


def assert_nontrivial(model, res: dict) -> None:
    """Outputs must carry signal (a zero model passes every equivariance test)."""
    assert np.abs(res[K.FORCES]).max() > 1e-5, "forces are ~0: the equivariance checks would be vacuous"
    offsite = res["graph"][K.HAM_PAIR_CATEGORY].numpy() != K.CATEGORY_ONSITE
    assert np.abs(res[K.HAM_BLOCKS][offsite]).max() > 1e-5, "off-site H blocks are ~0"


class ModelTestMixin:
    """Physics checks shared by every model variant (see the module docstring)."""

    ham_symmetry = "full"

    def test_energy_forces_rotation(self, model, atoms):
        ref = run(model, atoms, ham=False)
        for rot in random_rotations("full"):
            new = run(model, rotated(atoms, rot), ham=False)
            np.testing.assert_allclose(new[K.ENERGY], ref[K.ENERGY], rtol=0, atol=1e-10)
            np.testing.assert_allclose(new[K.NODE_ENERGY], ref[K.NODE_ENERGY], rtol=0, atol=1e-10)
            np.testing.assert_allclose(new[K.FORCES], ref[K.FORCES] @ rot.T, rtol=0, atol=1e-10)

    def test_translation(self, model, atoms):
        ref = run(model, atoms)
        moved = atoms.copy()
        moved.positions += np.array([0.37, -1.21, 0.58])
        new = run(model, moved)
        np.testing.assert_allclose(new[K.ENERGY], ref[K.ENERGY], atol=1e-10)
        np.testing.assert_allclose(new[K.FORCES], ref[K.FORCES], atol=1e-10)
        assert_blocks_close(pair_blocks(model, new), pair_blocks(model, ref))

    def test_permutation(self, model, atoms):
        ref = run(model, atoms)
        perm = np.random.default_rng(1).permutation(len(atoms))
        new = run(model, atoms[perm])
        inv = np.argsort(perm)
        np.testing.assert_allclose(new[K.ENERGY], ref[K.ENERGY], atol=1e-10)
        np.testing.assert_allclose(new[K.FORCES], ref[K.FORCES][perm], atol=1e-10)
        expected = {(int(inv[k[0]]), int(inv[k[1]])) + k[2:]: b for k, b in pair_blocks(model, ref).items()}
        assert_blocks_close(pair_blocks(model, new), expected)

    def test_hamiltonian_wigner_d(self, model, atoms):
        ref = run(model, atoms)
        assert_nontrivial(model, ref)
        symbols = atoms.get_chemical_symbols()
        for rot in random_rotations(self.ham_symmetry, seed=2):
            d = {e: orbital_rotation(model, e, rot) for e in set(symbols)}
            new = pair_blocks(model, run(model, rotated(atoms, rot)))
            expected = {k: d[symbols[k[0]]] @ b @ d[symbols[k[1]]].T for k, b in pair_blocks(model, ref).items()}
            assert_blocks_close(new, expected)

    def test_bands_invariant_under_rotation(self, model, atoms):
        kpts = np.array([[0.0, 0.0, 0.0], [0.13, 0.41, 0.0], [0.5, 0.0, 0.0]])
        e_ref = model.predict_tightbinding(atoms).eigenvalues(kpts)
        assert np.ptp(e_ref) > 1e-4
        for rot in random_rotations(self.ham_symmetry, seed=3):
            e_new = model.predict_tightbinding(rotated(atoms, rot)).eigenvalues(kpts)
            np.testing.assert_allclose(e_new, e_ref, atol=1e-9)

    def test_hermitian_exact(self, model, atoms):
        tb = model.predict_tightbinding(atoms)
        assert tb.check_hermitian() == 0.0  # H_ji(-R) == H_ij(R) bit for bit
        h_k = tb.hamiltonian(np.array([[0.1, 0.27, 0.0], [0.33, -0.2, 0.0]]))
        assert np.abs(h_k - h_k.conj().transpose(0, 2, 1)).max() < 1e-13
        res = run(model, atoms)
        onsite = res["graph"][K.HAM_PAIR_CATEGORY].numpy() == K.CATEGORY_ONSITE
        blocks = res[K.HAM_BLOCKS][onsite]
        assert np.array_equal(blocks, blocks.transpose(0, 2, 1))

    def test_forces_finite_difference(self, model, atoms):
        res = run(model, atoms, ham=False)
        h = 1e-4
        fd = np.zeros_like(res[K.FORCES])
        for a in range(len(atoms)):
            for c in range(3):
                e = []
                for sign in (1, -1):
                    moved = atoms.copy()
                    moved.positions[a, c] += sign * h
                    e.append(run(model, moved, forces=False, ham=False)[K.ENERGY][0])
                fd[a, c] = -(e[0] - e[1]) / (2 * h)
        assert np.abs(res[K.FORCES]).max() > 1e-3
        np.testing.assert_allclose(res[K.FORCES], fd, rtol=0, atol=1e-4)

    def test_stress_finite_difference(self, model, atoms):
        if abs(atoms.cell.volume) < 1e-9:
            pytest.skip("no volume")
        res = run(model, atoms, stress=True, ham=False)
        h, volume = 1e-5, atoms.cell.volume
        fd = np.zeros((3, 3))
        for a in range(3):
            for b in range(3):
                eps = np.zeros((3, 3))
                eps[a, b] += h / 2
                eps[b, a] += h / 2
                e = []
                for sign in (1, -1):
                    strained = atoms.copy()
                    strained.set_cell(atoms.cell[:] @ (np.eye(3) + sign * eps), scale_atoms=True)
                    e.append(run(model, strained, forces=False, ham=False)[K.ENERGY][0])
                fd[a, b] = (e[0] - e[1]) / (2 * h) / volume
        assert np.abs(res[K.STRESS][0]).max() > 1e-5
        np.testing.assert_allclose(res[K.STRESS][0], fd, rtol=0, atol=1e-6)

    def test_batched_equals_single(self, model, atoms):
        other = atoms.copy()
        other.rattle(0.05, seed=4)
        singles = [run(model, a, stress=abs(a.cell.volume) > 1e-9) for a in (atoms, other)]
        graph = batch_graphs([s["graph"] for s in singles])
        out = model(graph, compute_forces=True, compute_stress=abs(atoms.cell.volume) > 1e-9,
                    compute_hamiltonian=True)
        out = {k: v.detach().numpy() for k, v in out.items()}
        for key in (K.ENERGY, K.NODE_ENERGY, K.FORCES, K.HAM_BLOCKS, K.HAM_MASK) + \
                ((K.STRESS,) if K.STRESS in out else ()):
            np.testing.assert_allclose(out[key], np.concatenate([s[key] for s in singles]), atol=1e-12)

    def test_smooth_across_cutoffs(self, model, atoms):
        cfg = model.config
        element = atoms.get_chemical_symbols()[0]
        eps = 1e-6
        e_lo, e_hi = dimer(model, element, cfg.cutoff - eps, [0, 1]), dimer(model, element, cfg.cutoff + eps, [0, 1])
        assert abs(e_lo[K.ENERGY][0] - e_hi[K.ENERGY][0]) < 1e-9
        assert np.abs(e_lo[K.FORCES] - e_hi[K.FORCES]).max() < 1e-6
        inner = dimer(model, element, 0.8 * cfg.cutoff, [0, 1])  # the energy really depends on the distance
        assert abs(inner[K.ENERGY][0] - e_hi[K.ENERGY][0]) > 1e-6
        outer = [(cfg.ham_cutoff_inter, [0, 1])]
        outer.append((cfg.ham_cutoff_far if cfg.ham_cutoff_far > cfg.ham_cutoff_near else cfg.ham_cutoff_near, [0, 0]))
        for r_cut, layers in outer:
            lo, hi = dimer(model, element, r_cut - eps, layers), dimer(model, element, r_cut + eps, layers)
            assert len(hi[K.HAM_BLOCKS]) == 2 and len(lo[K.HAM_BLOCKS]) == 3
            assert np.abs(lo[K.HAM_BLOCKS][2]).max() < 1e-9
            mid = dimer(model, element, r_cut - 1.0, layers)
            assert np.abs(mid[K.HAM_BLOCKS][2]).max() > 1e-6
        if cfg.ham_cutoff_far > cfg.ham_cutoff_near:
            lo, hi = (dimer(model, element, cfg.ham_cutoff_near + s, [0, 0]) for s in (-1e-9, 1e-9))
            assert lo["graph"][K.HAM_PAIR_CATEGORY][2] == K.CATEGORY_INTRA_NEAR
            assert hi["graph"][K.HAM_PAIR_CATEGORY][2] == K.CATEGORY_INTRA_FAR
            assert np.abs(lo[K.HAM_BLOCKS][2] - hi[K.HAM_BLOCKS][2]).max() < 1e-7  # slope x 2e-9 Å << jump
            assert np.abs(hi[K.HAM_BLOCKS][2]).max() > 1e-6
            start = cfg.ham_cutoff_near - cfg.ham_switch_width  # the far head starts to contribute here
            lo, hi = (dimer(model, element, start + s, [0, 0]) for s in (-1e-9, 1e-9))
            assert np.abs(lo[K.HAM_BLOCKS][2] - hi[K.HAM_BLOCKS][2]).max() < 1e-7

    def test_bad_input(self, model, atoms):
        foreign = "Xe" if "Xe" not in model.config.species else "Kr"
        bad = atoms.copy()
        bad.symbols[0] = foreign
        with pytest.raises(ValueError, match=foreign):
            atoms_to_graph(bad, model.config)
        close = atoms.copy()
        close.positions[1] = close.positions[0] + np.array([0.2, 0.1, 0.0])
        with pytest.raises(ValueError, match=r"atoms 0 .* and 1 .*0\.224 Å apart"):
            atoms_to_graph(close, model.config)


def dimer(model, element: str, distance: float, layers: list[int]) -> dict:
    """Two ``element`` atoms ``distance`` Å apart along a generic direction, no cell, given layer labels."""
    direction = np.array([0.48, -0.6, 0.64])
    direction /= np.linalg.norm(direction)
    atoms = Atoms([element] * 2, positions=[np.zeros(3), distance * direction])
    atoms.arrays["layer"] = np.array(layers)
    return run(model, atoms)


def assert_blocks_close(actual: dict, expected: dict, atol: float = 1e-10) -> None:
    """Same pair keys and blocks equal within ``atol`` eV."""
    assert set(actual) == set(expected), f"pair lists differ: {sorted(set(actual) ^ set(expected))[:5]}"
    worst = max(np.abs(actual[k] - expected[k]).max() for k in expected)
    assert worst < atol, f"H blocks differ by {worst:.2e} eV"
