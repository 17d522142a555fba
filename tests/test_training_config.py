"""The YAML training config: the shipped example loads, mistakes are named."""
from __future__ import annotations

from pathlib import Path

import pytest

from ase_wannierml.training.config import TrainConfig, load_config

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "train_config.yaml"


def test_example_config_loads_and_builds_a_model_config():
    from ase_wannierml.model.config import ModelConfig
    from ase_wannierml.training.setup import base_model_kwargs

    cfg = load_config(EXAMPLE)
    assert cfg.data.frames == ["datasets/graphene-bilayer/frames"] and cfg.optim.weight_decay == 1e-6
    mc = ModelConfig.from_dict(base_model_kwargs(cfg))
    assert mc.species == ("C",) and mc.ham_cutoff_far == 8.0


@pytest.mark.parametrize("raw, message", [
    ({"data": {"frames": ["x"], "val_fraction": 0.1}, "optim": {"lr": "fast"}}, r"optim\.lr must be a number"),
    ({"data": {"frames": ["x"]}, "optim": {"learning_rate": 1e-3}}, r"unknown keys \['learning_rate'\]"),
    ({"data": {"frames": []}}, "data.frames is empty"),
    ({"data": {"frames": ["x"]}, "loss": {"hamiltonian_categories": [1, 1]}}, "needs 4 weights"),
    ({"data": {"frames": ["x"]}, "trainer": {}}, r"unknown keys \['trainer'\]"),
    ({"data": {"frames": ["x"], "on_error": "ignore"}}, "on_error must be"),
])
def test_config_mistakes_are_named(raw, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig.from_dict(raw)


def test_yaml_numbers_without_a_dot_are_read_as_floats(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("data: {frames: [f]}\noptim: {lr: 1e-3, max_steps: 10}\n")   # YAML reads 1e-3 as a string
    cfg = load_config(path)
    assert cfg.optim.lr == 1e-3 and cfg.optim.max_steps == 10


def test_init_from_takes_a_shipped_model_name_and_a_local_file_wins(tmp_path, monkeypatch):
    from ase_wannierml.model.io import resolve_model_path

    monkeypatch.chdir(tmp_path)
    path = tmp_path / "c.yaml"
    path.write_text("data: {frames: [f]}\nrun: {init_from: graphene-bilayer}\n")
    assert Path(load_config(path).run.init_from) == resolve_model_path("graphene-bilayer").resolve()
    (tmp_path / "graphene-bilayer").write_bytes(b"")          # a file of that name in the working directory wins
    assert load_config(path).run.init_from == "graphene-bilayer"
    path.write_text("data: {frames: [f]}\nrun: {init_from: no-such-model}\n")
    assert load_config(path).run.init_from == "no-such-model"      # reported by name when training starts
