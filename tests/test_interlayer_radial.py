"""The ``interlayer_radial`` backbone option: separate radial inputs for interlayer edges (session 14).

Checked: it starts from a trained model without changing its function (warm start), intra- and interlayer weights
then act separately, energies stay invariant and forces rotate with the structure, bad settings are refused."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from ase.build import graphene

from ase_wannierml import WannierMLCalculator, load_model
from ase_wannierml.model.config import ModelConfig
from ase_wannierml.model.model import WannierMLModel
from ase_wannierml.structures import bilayer


def _rippled(seed: int = 0):
    atoms = bilayer("graphene").repeat((2, 2, 1))
    atoms.positions[:, 2] += np.random.default_rng(seed).normal(scale=0.05, size=len(atoms))
    atoms.positions[:, :2] += np.random.default_rng(seed + 1).normal(scale=0.03, size=(len(atoms), 2))
    return atoms


def _split_model(old: WannierMLModel) -> WannierMLModel:
    new = WannierMLModel(dataclasses.replace(old.config, interlayer_radial=True), dtype=torch.float64)
    state = {k: v for k, v in old.state_dict().items() if ".radial." not in k or not k.startswith("backbone.")}
    missing, unexpected = new.load_state_dict(state, strict=False)
    assert not unexpected and all(".radial." in k or "._compiled_" in k for k in missing)
    new.backbone.inherit_radial(old.backbone)
    return new.eval()


def _without_pair_energy(model: WannierMLModel) -> WannierMLModel:
    """The same weights with the energy path on the full graph (shipped round 6 has ``interlayer_pair_energy``, whose
    energy path has no interlayer edges for the interlayer radial weights to act on)."""
    if not model.config.interlayer_pair_energy:
        return model
    plain = WannierMLModel(dataclasses.replace(model.config, interlayer_pair_energy=False), dtype=torch.float64)
    state = {k: v for k, v in model.state_dict().items() if not k.startswith("interlayer_energy.")}
    plain.load_state_dict(state, strict=False)
    return plain.eval()


def _energy_forces(model, atoms):
    a = atoms.copy()
    a.calc = WannierMLCalculator(model)
    return a.get_potential_energy(), a.get_forces()


def test_switching_it_on_keeps_a_trained_models_energy_and_forces():
    old = load_model("graphene-bilayer", dtype=torch.float64)
    new = _split_model(old)
    atoms = _rippled()
    e0, f0 = _energy_forces(old, atoms)
    e1, f1 = _energy_forces(new, atoms)
    assert e1 == pytest.approx(e0, abs=1e-9)
    assert np.abs(f1 - f0).max() < 1e-9
    assert new.backbone.layers[0].radial.layer0.weight.shape[0] == 2 * old.backbone.layers[0].radial.layer0.weight.shape[0]


def test_interlayer_weights_act_only_on_interlayer_neighbours():
    new = _split_model(_without_pair_energy(load_model("graphene-bilayer", dtype=torch.float64)))
    sheet = graphene(a=2.46, vacuum=10.0).repeat((2, 2, 1))
    sheet.pbc = True
    sheet.positions[:, 2] += np.random.default_rng(3).normal(scale=0.05, size=len(sheet))
    two = _rippled()
    before_sheet, before_two = _energy_forces(new, sheet), _energy_forces(new, two)
    n = new.config.num_radial
    with torch.no_grad():
        for layer in new.backbone.layers:
            layer.radial.layer0.weight[n:] *= 1.5                 # change only the interlayer inputs' weights
    after_sheet, after_two = _energy_forces(new, sheet), _energy_forces(new, two)
    assert after_sheet[0] == pytest.approx(before_sheet[0], abs=1e-9)      # one layer: no interlayer edges
    assert np.abs(after_sheet[1] - before_sheet[1]).max() < 1e-9
    assert abs(after_two[0] - before_two[0]) > 1e-4
    assert np.abs(after_two[1] - before_two[1]).max() > 1e-3


def test_energy_is_invariant_and_forces_rotate_with_the_option_on():
    torch.manual_seed(0)
    cfg = ModelConfig(species=("C",), orbitals={"C": ("pz",)}, hidden_irreps="8x0e+4x1o+2x2e", cutoff=4.0,
                      interlayer_radial=True)
    model = WannierMLModel(cfg, dtype=torch.float64).eval()
    atoms = _rippled(5)
    e, f = _energy_forces(model, atoms)
    rot = atoms.copy()
    rot.rotate(37.0, "z", rotate_cell=True)
    rot.translate([0.3, -0.2, 0.1])
    e_rot, f_rot = _energy_forces(model, rot)
    c, s = np.cos(np.radians(37.0)), np.sin(np.radians(37.0))
    r = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])
    assert e_rot == pytest.approx(e, abs=1e-9)
    assert np.abs(f_rot - f @ r.T).max() < 1e-8
    flipped = atoms.copy()                                  # swap the layer labels: same physics
    flipped.arrays["layer"] = 1 - np.asarray(atoms.arrays["layer"])
    assert _energy_forces(model, flipped)[0] == pytest.approx(e, abs=1e-9)


def test_bad_settings_and_missing_layer_information_are_refused():
    with pytest.raises(ValueError, match="interlayer_radial must be true or false"):
        ModelConfig(species=("C",), orbitals={"C": ("pz",)}, interlayer_radial="yes")
    cfg = ModelConfig(species=("C",), orbitals={"C": ("pz",)}, hidden_irreps="8x0e+4x1o", interlayer_radial=True)
    model = WannierMLModel(cfg, dtype=torch.float64)
    vectors = torch.randn(6, 3, dtype=torch.float64)
    with pytest.raises(ValueError, match="needs edge_inter"):
        model.backbone.edge_radial(vectors)
    with pytest.raises(ValueError, match="inherit_radial"):
        model.backbone.inherit_radial(model.backbone)


def test_a_wider_energy_readout_starts_from_a_trained_model_without_changing_it():
    old = load_model("graphene-bilayer", dtype=torch.float64)
    new = WannierMLModel(dataclasses.replace(old.config, energy_hidden=64), dtype=torch.float64)
    state = {k: v for k, v in old.state_dict().items() if not k.startswith("energy_head.mlp.")}
    missing, unexpected = new.load_state_dict(state, strict=False)
    assert not unexpected and all(k.startswith("energy_head.mlp.") or "._compiled_" in k for k in missing)
    new.energy_head.inherit(old.energy_head)
    new.eval()
    atoms = _rippled(2)
    e0, f0 = _energy_forces(old, atoms)
    e1, f1 = _energy_forces(new, atoms)
    assert e1 == pytest.approx(e0, abs=1e-9) and np.abs(f1 - f0).max() < 1e-9
    assert new.energy_head.mlp.layer0.weight.shape[1] == 64
    assert torch.count_nonzero(new.energy_head.mlp.layer1.weight[16:]) == 0          # new units: zero output
    with pytest.raises(ValueError, match="cannot inherit an energy readout"):
        old.energy_head.inherit(new.energy_head)
    with pytest.raises(ValueError, match="energy_hidden must be an integer"):
        ModelConfig(species=("C",), orbitals={"C": ("pz",)}, energy_hidden=0)


def test_warm_start_refuses_to_shrink_the_readout_or_drop_interlayer_radial(tmp_path):
    from ase_wannierml.training.trainer import _init_model_kwargs

    class Cfg:
        class run:
            init_from = "model.pt"

    saved = dataclasses.asdict(ModelConfig(species=("C",), orbitals={"C": ("pz",)}, energy_hidden=64,
                                           interlayer_radial=True))
    Cfg.model = {"energy_hidden": 16}
    with pytest.raises(ValueError, match="energy_hidden can only grow"):
        _init_model_kwargs(Cfg, saved)
    Cfg.model = {"interlayer_radial": False}
    with pytest.raises(ValueError, match="interlayer_radial cannot be switched off"):
        _init_model_kwargs(Cfg, saved)
    Cfg.model = {"energy_hidden": 128, "interlayer_radial": True}
    assert _init_model_kwargs(Cfg, saved)["energy_hidden"] == 128
