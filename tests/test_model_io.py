"""Model files: round trip, weights_only loading, version check, pretrained-name errors, dtype."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from ase.build import molecule

from ase_wannierml.model import FORMAT_VERSION, ModelConfig, build_model, load_model
from model_helpers import TINY, run

OPTS = dict(cutoff=3.0, ham_cutoff_near=3.0, ham_cutoff_far=4.0, ham_cutoff_inter=4.0, e0s={"O": -430.1},
            onsite_reference={"H": [-1.5]}, wannier_electrons={"O": 4.0, "H": 1.0}, **TINY)


@pytest.fixture(scope="module")
def model():
    return build_model({"O": ["p"], "H": ["s"]}, dtype=torch.float64, seed=3, **OPTS)


def test_round_trip(model, tmp_path):
    path = tmp_path / "m.pt"
    model.save(path, metadata={"trained_on": "nothing", "steps": 0})
    payload = torch.load(path, weights_only=True)  # plain tensors and JSON-able values only
    assert payload["format_version"] == FORMAT_VERSION and payload["units"]["energy"] == "eV"
    loaded = load_model(path)
    assert loaded.config == model.config and loaded.metadata["steps"] == 0 and not loaded.training
    assert loaded.dtype == torch.float64
    atoms = molecule("H2O")
    a, b = run(model, atoms), run(loaded, atoms)
    for key in ("energy", "forces", "ham_blocks"):  # loaded in eval mode: same numbers up to summation order
        np.testing.assert_allclose(a[key], b[key], rtol=0, atol=1e-13)
    assert a["energy"][0] < -400  # the O reference energy is applied


def test_float32_by_default_and_override(model, tmp_path):
    assert build_model({"H": ["s"]}, **TINY).dtype == torch.float32
    path = tmp_path / "m.pt"
    model.save(path)
    assert load_model(path, dtype=torch.float32).dtype == torch.float32


def test_version_mismatch_is_rejected(model, tmp_path):
    path = tmp_path / "m.pt"
    model.save(path)
    payload = torch.load(path, weights_only=True)
    payload["format_version"] = FORMAT_VERSION + 1
    torch.save(payload, path)
    expected = rf"format_version {FORMAT_VERSION + 1}.*reads format_version {FORMAT_VERSION}"
    with pytest.raises(ValueError, match=expected):
        load_model(path)


def test_unknown_name_lists_pretrained():
    with pytest.raises(FileNotFoundError, match="pretrained models"):
        load_model("no-such-model")


def test_config_rejects_unknown_fields_and_bad_orbitals():
    with pytest.raises(ValueError, match="unknown ModelConfig fields"):
        ModelConfig.from_dict({"species": ["C"], "orbitals": {"C": ["pz"]}, "cutof": 5.0})
    with pytest.raises(ValueError, match="unknown options"):
        build_model({"C": ["pz"]}, num_interaction=2)
    with pytest.raises(ValueError, match="unknown orbital shell"):
        ModelConfig(species=("C",), orbitals={"C": ("f",)})
    for bad in ({"pair_sh_lmax": 7}, {"pair_sh_lmax": -1}, {"pair_sh_lmax": 2.5}, {"pair_sh_lmax": True}):
        with pytest.raises(ValueError, match="pair_sh_lmax must be an integer"):
            ModelConfig(species=("C",), orbitals={"C": ("pz",)}, **bad)
    with pytest.raises(ValueError, match="pair_node_product must be true or false"):
        ModelConfig(species=("C",), orbitals={"C": ("pz",)}, pair_node_product="yes")


def test_tightbinding_metadata(model):
    tb = model.predict_tightbinding(molecule("H2O"))
    assert tb.num_electrons == 6.0 and tb.norb == 5
    assert list(tb.orbitals.label) == ["pz", "px", "py", "s", "s"]
    onsite_h = tb.hamiltonian(np.zeros((1, 3)))[0, 3, 3].real
    assert onsite_h < -0.5  # onsite reference of H (-1.5 eV) enters the diagonal
