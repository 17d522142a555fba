"""The onsite level-shift MLP (``ModelConfig.onsite_hidden``): physics battery with non-zero weights, a shift that
is a multiple of the identity on each shell, zero at the start (warm starts keep H), and its settings."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from ase_wannierml.model import WannierMLModel, build_model, load_model
from ase_wannierml.model import keys as K
from ase_wannierml.model.config import ModelConfig
from ase_wannierml.structures import bilayer
from model_helpers import TINY, ModelTestMixin, run

CUTS = dict(cutoff=3.5, ham_cutoff_near=3.5, ham_cutoff_far=5.0, ham_cutoff_inter=5.0, ham_switch_width=0.5)


def _with_correction(model: WannierMLModel, seed: int) -> WannierMLModel:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        w = model.hamiltonian.onsite.correction.layer1.weight
        w.copy_(torch.randn(w.shape, generator=gen, dtype=w.dtype))
    return model


def _mos2_model(hidden: int, seed: int = 0) -> WannierMLModel:
    return build_model({"Mo": ["d"], "S": ["p"]}, dtype=torch.float64, seed=seed, onsite_hidden=hidden, **CUTS, **TINY)


@pytest.fixture(scope="module")
def mos2_atoms():
    atoms = bilayer("mos2")
    del atoms.arrays["layer"]
    atoms.rattle(0.03, seed=3)
    return atoms


class TestOnsiteCorrectionMoS2(ModelTestMixin):
    """Full d and p shells: the shifted blocks must still rotate with the Wigner D matrices under all of O(3)."""

    @pytest.fixture(scope="class")
    def model(self):
        return _with_correction(_mos2_model(8), seed=1)

    @pytest.fixture(scope="class")
    def atoms(self, mos2_atoms):
        return mos2_atoms


class TestOnsiteCorrectionGraphene(ModelTestMixin):
    ham_symmetry = "planar"

    @pytest.fixture(scope="class")
    def model(self):
        model = build_model({"C": ["pz"]}, dtype=torch.float64, seed=0, onsite_hidden=8, **CUTS, **TINY)
        return _with_correction(model, seed=2)

    @pytest.fixture(scope="class")
    def atoms(self):
        atoms = bilayer("graphene")
        del atoms.arrays["layer"]
        atoms.rattle(0.03, seed=4)
        return atoms


def test_the_shift_is_a_level_per_shell_and_differs_between_atoms(mos2_atoms):
    """Same weights with and without the MLP: the onsite blocks differ by ε_s · 1 on each shell (Mo d: one level
    for all five d orbitals, S p: one for the three p), ε depends on the atom's environment, off-site blocks and
    energies are unchanged."""
    plain = _mos2_model(0)
    shifted = _mos2_model(8)
    state = plain.state_dict()
    missing, unexpected = shifted.load_state_dict(state, strict=False)
    assert not unexpected and all(k.startswith("hamiltonian.onsite.correction.") or "._compiled_" in k
                                  for k in missing)
    _with_correction(shifted, seed=5)
    a, b = run(plain, mos2_atoms), run(shifted, mos2_atoms)
    np.testing.assert_allclose(b[K.ENERGY], a[K.ENERGY], atol=1e-12)
    category = a["graph"][K.HAM_PAIR_CATEGORY].numpy()
    onsite = category == K.CATEGORY_ONSITE
    np.testing.assert_allclose(b[K.HAM_BLOCKS][~onsite], a[K.HAM_BLOCKS][~onsite], atol=1e-12)
    species = a["graph"][K.SPECIES].numpy()
    atoms_of_pair = a["graph"][K.HAM_PAIR_INDEX].numpy()[0, onsite]
    levels = []
    for p, i in zip(np.flatnonzero(onsite), atoms_of_pair):
        n = 5 if mos2_atoms.numbers[i] == 42 else 3
        diff = b[K.HAM_BLOCKS][p, :n, :n] - a[K.HAM_BLOCKS][p, :n, :n]
        assert np.abs(diff - np.diag(np.diag(diff))).max() < 1e-12            # diagonal
        assert np.ptp(np.diag(diff)) < 1e-12                                   # one level for the shell
        assert abs(diff[0, 0]) > 1e-4                                          # and not zero
        assert np.all(b[K.HAM_BLOCKS][p, n:, :] == 0) and np.all(b[K.HAM_BLOCKS][p, :, n:] == 0)   # padding
        levels.append((species[i], diff[0, 0]))
    for s in set(species):
        values = [v for sp, v in levels if sp == s]
        assert np.ptp(values) > 1e-6                     # rattled atoms: the shift follows the environment


def test_a_new_onsite_mlp_starts_as_the_trained_model():
    """Warm start: a shipped model plus a fresh MLP (output weights zero) gives exactly the same H."""
    old = load_model("graphene-bilayer", dtype=torch.float64)
    new = WannierMLModel(dataclasses.replace(old.config, onsite_hidden=16), dtype=torch.float64)
    missing, unexpected = new.load_state_dict(old.state_dict(), strict=False)
    assert not unexpected
    assert torch.count_nonzero(new.hamiltonian.onsite.correction.layer1.weight) == 0
    new.eval()
    atoms = bilayer("graphene").repeat((2, 2, 1))
    atoms.rattle(0.05, seed=6)
    k = np.array([[0.0, 0.0, 0.0], [1 / 3, 1 / 3, 0.0], [0.2, 0.1, 0.0]])
    np.testing.assert_array_equal(new.predict_tightbinding(atoms).hamiltonian(k),
                                  old.predict_tightbinding(atoms).hamiltonian(k))


def test_settings_and_warm_start_rules():
    from ase_wannierml.training.trainer import _grow_pair_heads, _init_model_kwargs

    for bad in (-1, True, 1.5, 2000):
        with pytest.raises(ValueError, match="onsite_hidden must be an integer"):
            ModelConfig(species=("C",), orbitals={"C": ("pz",)}, onsite_hidden=bad)
    saved = dataclasses.asdict(ModelConfig(species=("C",), orbitals={"C": ("pz",)}, hidden_irreps="8x0e+4x1o",
                                           ham_irreps="4x0e+4x1o"))

    class Cfg:
        class run:
            init_from = "model.pt"

    Cfg.model = {"onsite_hidden": 16}
    kwargs = _init_model_kwargs(Cfg, saved)
    assert kwargs["onsite_hidden"] == 16
    model = WannierMLModel(ModelConfig.from_dict(kwargs), dtype=torch.float64)
    assert "hamiltonian.onsite.correction." in _grow_pair_heads(model, "model.pt", {"config": saved})
    resized = {**saved, "onsite_hidden": 8}
    with pytest.raises(ValueError, match="not resized"):
        _grow_pair_heads(model, "model.pt", {"config": resized})
    Cfg.model = {"onsite_hidden": 4}
    with pytest.raises(ValueError, match="onsite_hidden can only grow"):
        _init_model_kwargs(Cfg, {**saved, "onsite_hidden": 8})
