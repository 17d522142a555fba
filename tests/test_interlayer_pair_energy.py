"""The ``interlayer_pair_energy`` option: the energy path sees each layer alone, the layers interact through a learned
registry-aware pair term (session 15).

Checked: without the pair term the bilayer energy is exactly the sum of the two layers computed apart (so the
flexural stiffness cannot depend on the layer distance); the pair term acts only on interlayer pairs inside the
cut-off and sees the registry; forces are −dE/dr; energies are invariant and forces rotate; the Hamiltonian is that
of the same weights without the option; committees, model files and warm starts handle it; bad settings are refused.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from ase_wannierml import WannierMLCalculator, load_model
from ase_wannierml.model.committee import CommitteeModel
from ase_wannierml.model.config import ModelConfig
from ase_wannierml.model.io import save_model
from ase_wannierml.model.model import WannierMLModel
from ase_wannierml.structures import bilayer

from model_helpers import ModelTestMixin

SMALL = dict(species=("C",), orbitals={"C": ("pz",)}, hidden_irreps="8x0e+4x1o+2x2e", cutoff=4.5,
             interlayer_pair_energy=True)


def _rippled(seed: int = 0, gap_shift: float = 0.0):
    atoms = bilayer("graphene").repeat((2, 2, 1))
    layer = np.asarray(atoms.arrays["layer"])
    atoms.positions[layer == 1, 2] += gap_shift
    atoms.positions[:, 2] += np.random.default_rng(seed).normal(scale=0.05, size=len(atoms))
    atoms.positions[:, :2] += np.random.default_rng(seed + 1).normal(scale=0.03, size=(len(atoms), 2))
    return atoms


def _model(seed: int = 0, pair_weights: bool = True) -> WannierMLModel:
    torch.manual_seed(seed)
    model = WannierMLModel(ModelConfig(**SMALL), dtype=torch.float64)
    if pair_weights:                          # a trained pair term is not zero
        with torch.no_grad():
            model.interlayer_energy.mlp.layer2.weight.normal_()
    return model.eval()


def _energy_forces(model, atoms):
    a = atoms.copy()
    a.calc = WannierMLCalculator(model)
    return a.get_potential_energy(), a.get_forces()


def _layer(atoms, label: int):
    keep = np.asarray(atoms.arrays["layer"]) == label
    return atoms[keep]


def test_without_the_pair_term_the_energy_is_the_sum_of_the_layers_alone():
    model = _model(pair_weights=False)
    atoms = _rippled(1)
    e, f = _energy_forces(model, atoms)
    parts = [_energy_forces(model, _layer(atoms, lab)) for lab in (0, 1)]
    assert e == pytest.approx(parts[0][0] + parts[1][0], abs=1e-9)
    layer = np.asarray(atoms.arrays["layer"])
    assert np.abs(f[layer == 0] - parts[0][1]).max() < 1e-9
    assert np.abs(f[layer == 1] - parts[1][1]).max() < 1e-9
    # and so the out-of-plane forces of a ripple do not change when the other layer comes closer
    _, f_far = _energy_forces(model, _rippled(1, gap_shift=0.4))
    assert np.abs(f_far[:, 2] - f[:, 2]).max() < 1e-9


def test_the_pair_term_acts_on_interlayer_pairs_only_and_sees_the_registry():
    model = _model()
    atoms = _rippled(2)
    e = _energy_forces(model, atoms)[0]
    alone = sum(_energy_forces(model, _layer(atoms, lab))[0] for lab in (0, 1))
    assert abs(e - alone) > 1e-4                                      # the layers interact …
    apart = _rippled(2, gap_shift=model.config.cutoff)                # … only within the cut-off
    assert _energy_forces(model, apart)[0] == pytest.approx(alone, abs=1e-9)
    # registry: slide the top layer (AB -> AA) at the same distance; the term changes
    slid = _rippled(2)
    top = np.asarray(slid.arrays["layer"]) == 1
    slid.positions[top] += slid.cell[0] / 2 / 3 + slid.cell[1] / 2 / 3
    assert abs(_energy_forces(model, slid)[0] - e) > 1e-4


class TestPairEnergyModel(ModelTestMixin):
    """The shared physics battery (O(3), translation, permutation, finite differences, cut-off continuity, …) on a
    model whose pair term is switched on with non-zero weights."""

    ham_symmetry = "planar"

    @pytest.fixture(scope="class")
    def model(self):
        return _model(3)

    @pytest.fixture(scope="class")
    def atoms(self):
        atoms = bilayer("graphene")
        atoms.rattle(0.03, seed=4)
        return atoms


def test_atoms_without_bonds_in_their_layer_give_finite_energy_and_forces():
    """No covalent neighbour: the sheet tensor is zero and ρ falls back to r (no 0/0)."""
    from ase import Atoms

    model = _model(6)
    pair = Atoms("C2", positions=[[0.0, 0.0, 5.0], [0.4, 0.2, 8.3]], cell=[8.0, 8.0, 20.0], pbc=[True, True, False])
    pair.arrays["layer"] = np.array([0, 1])
    e, f = _energy_forces(model, pair)
    assert np.isfinite(e) and np.isfinite(f).all()
    assert np.abs(f).max() > 0                              # the layers still interact


def test_the_hamiltonian_is_that_of_the_same_weights_without_the_option():
    shipped = load_model("graphene-bilayer", dtype=torch.float64)          # round 6: the option is on
    assert shipped.config.interlayer_pair_energy
    plain = WannierMLModel(dataclasses.replace(shipped.config, interlayer_pair_energy=False), dtype=torch.float64)
    state = {k: v for k, v in shipped.state_dict().items() if not k.startswith("interlayer_energy.")}
    missing, unexpected = plain.load_state_dict(state, strict=False)
    assert not unexpected and all("._compiled_" in k for k in missing)
    plain.eval()
    atoms = _rippled(7)
    k = np.array([[0.0, 0.0, 0.0], [1 / 3, 1 / 3, 0.0], [0.11, 0.27, 0.0]])
    h_pair = shipped.predict_tightbinding(atoms).hamiltonian(k)
    h_plain = plain.predict_tightbinding(atoms).hamiltonian(k)
    assert np.abs(h_pair - h_plain).max() < 1e-12
    # the energies differ: the plain twin's energy path sees the other layer through messages
    assert abs(_energy_forces(shipped, atoms)[0] - _energy_forces(plain, atoms)[0]) > 1e-3
    # with the pair term switched off, the learned z forces of one ripple do not depend on the layer distance
    # (the analytic D3 term, which does see the other layer, taken out)
    from ase_wannierml.dispersion import dispersion_from_config

    with torch.no_grad():
        shipped.interlayer_energy.mlp.layer2.weight.zero_()
    d3 = dispersion_from_config(shipped.config)
    learned = []
    for shift in (-0.25, 0.25):
        ripple = _rippled(8, gap_shift=shift)
        learned.append(_energy_forces(shipped, ripple)[1][:, 2] - d3.compute(ripple)["forces"][:, 2])
    assert np.abs(learned[0] - learned[1]).max() < 1e-9


def test_committee_and_model_file_round_trip(tmp_path):
    members = [_model(10), _model(11)]
    committee = CommitteeModel(members).eval()
    atoms = _rippled(9)
    a = atoms.copy()
    a.calc = WannierMLCalculator(committee)
    e = a.get_potential_energy()
    f = a.get_forces()
    singles = [_energy_forces(m, atoms) for m in members]
    assert e == pytest.approx(np.mean([s[0] for s in singles]), abs=1e-9)
    assert np.abs(f - np.mean([s[1] for s in singles], axis=0)).max() < 1e-9
    assert a.calc.results["energy_std"] > 0
    path = tmp_path / "pair.pt"
    save_model(members[0], path)
    again = load_model(path, dtype=torch.float64)
    assert again.config.interlayer_pair_energy
    e_again, f_again = _energy_forces(again, atoms)
    assert e_again == pytest.approx(singles[0][0], abs=1e-6) and np.abs(f_again - singles[0][1]).max() < 1e-6


def test_warm_start_may_switch_it_on_never_off_and_bad_values_are_refused():
    from ase_wannierml.training.trainer import _init_model_kwargs

    class Cfg:
        class run:
            init_from = "model.pt"

    saved = dataclasses.asdict(ModelConfig(species=("C",), orbitals={"C": ("pz",)}))
    Cfg.model = {"interlayer_pair_energy": True}
    assert _init_model_kwargs(Cfg, saved)["interlayer_pair_energy"] is True
    saved_on = dataclasses.asdict(ModelConfig(species=("C",), orbitals={"C": ("pz",)}, interlayer_pair_energy=True))
    Cfg.model = {"interlayer_pair_energy": False}
    with pytest.raises(ValueError, match="interlayer_pair_energy cannot be switched off"):
        _init_model_kwargs(Cfg, saved_on)
    with pytest.raises(ValueError, match="interlayer_pair_energy must be true or false"):
        ModelConfig(species=("C",), orbitals={"C": ("pz",)}, interlayer_pair_energy=1)


def test_transverse_distance_is_the_distance_from_the_sheet_normal_for_flat_graphene():
    from ase_wannierml.model.graph import atoms_to_graph
    from ase_wannierml.model import keys as K

    model = _model(12)
    atoms = bilayer("graphene").repeat((2, 2, 1))
    g = atoms_to_graph(atoms, model.config, dtype=torch.float64)
    edge_index, vectors, _, inter = model._edges(g, g[K.POSITIONS], g[K.CELL])
    term = model.interlayer_energy
    tensors = term.sheet_tensors(len(atoms), g[K.SPECIES], edge_index[:, ~inter], vectors[~inter])
    v = vectors[inter]
    feats = term.transverse_features(tensors[edge_index[0, inter]], v)
    rho2 = (v[:, :2] ** 2).sum(dim=1)                      # flat sheets in the xy plane: ρ² = x² + y²
    expected = torch.exp(-rho2[:, None] / term.widths ** 2)
    assert torch.allclose(feats, expected, atol=5e-3)
    assert float(feats[:, 0].max()) == pytest.approx(1.0, abs=5e-3)   # an atom right above another: ρ = 0
