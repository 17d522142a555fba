"""Trainer: exact resume, logs and files, early stopping; a 4-frame overfit (slow)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from ase_wannierml.training.checkpoint import list_checkpoints
from ase_wannierml.training.synthetic import tiny_train_config, write_synthetic_frames
from ase_wannierml.training.trainer import Trainer


@pytest.fixture(scope="module")
def frames(tmp_path_factory):
    folder = tmp_path_factory.mktemp("frames")
    write_synthetic_frames(folder, 6, seed=11)
    return folder


def _state(tr: Trainer) -> dict:
    return {"model": tr.model.state_dict(), "ema": tr.ema.state_dict()["shadow"],
            "opt": tr.opt.state_dict()["state"]}


def _assert_identical(a: dict, b: dict) -> None:
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), f"model tensor {k} differs"
    assert all(torch.equal(x, y) for x, y in zip(a["ema"], b["ema"]))
    for i in a["opt"]:
        for key in a["opt"][i]:
            assert torch.equal(torch.as_tensor(a["opt"][i][key]), torch.as_tensor(b["opt"][i][key]))


def test_resume_continues_bit_for_bit(frames, tmp_path, monkeypatch):
    opts = dict(loss={"bands": 1.0, "band_kpoints": 2, "stress": 0.1},
                optim={"max_steps": 7, "batch_size": 2, "ema_decay": 0.9})
    cache = {"cache": str(tmp_path / "cache.pt")}
    straight = Trainer(tiny_train_config(frames, tmp_path / "a", data=cache, **opts))
    straight.train()
    # interrupted run: dies during step 5, after the step-3 checkpoint (steps 4-5 are lost and redone)
    cfg_b = tiny_train_config(frames, tmp_path / "b", data=cache, **opts)
    original = Trainer.train_step

    def dying(self, batch):
        if self.step == 4:
            raise KeyboardInterrupt("simulated kill")
        return original(self, batch)

    monkeypatch.setattr(Trainer, "train_step", dying)
    with pytest.raises(KeyboardInterrupt):
        Trainer(cfg_b).train()
    monkeypatch.setattr(Trainer, "train_step", original)
    assert [p.name for p in list_checkpoints(tmp_path / "b")] == ["step_00000003.pt"]
    torch.manual_seed(999)                              # global RNG disturbed in between: must not matter
    resumed = Trainer(cfg_b, resume=True)
    assert resumed.step == 3
    resumed.train()
    _assert_identical(_state(straight), _state(resumed))
    log_a = [json.loads(x) for x in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    log_b = [json.loads(x) for x in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    assert log_a == log_b                               # one log, no duplicated steps after the resume


def test_run_writes_model_checkpoints_and_log(frames, tmp_path):
    cfg = tiny_train_config(frames, tmp_path / "run", optim={"max_steps": 4}, run={"keep_checkpoints": 1})
    summary = Trainer(cfg).train()
    assert summary["step"] == 4
    assert [p.name for p in list_checkpoints(tmp_path / "run")] == ["step_00000004.pt"]
    from ase_wannierml.model import load_model

    model = load_model(tmp_path / "run" / "model.pt")
    assert model.config.fermi_level == 0.0            # Hamiltonian learned relative to E_F
    assert model.metadata["training"]["train_frames"] + model.metadata["training"]["val_frames"] == 6
    events = [json.loads(x)["event"] for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert events.count("train") == 4 and events.count("val") == 2 and events[-1] == "done"
    assert (tmp_path / "run" / "dataset_cache.pt").is_file()


def test_early_stopping_after_patience(frames, tmp_path, monkeypatch):
    cfg = tiny_train_config(frames, tmp_path / "es", optim={"max_steps": 50}, run={"eval_every": 1, "patience": 2})
    losses = iter([1.0, 0.5, 0.7, 0.6, 0.4])          # improves, improves, worse, worse -> stop at step 4
    monkeypatch.setattr(Trainer, "evaluate_loss", lambda self, idx: {"loss": next(losses)})
    summary = Trainer(cfg).train()
    assert summary["stopped_early"] and summary["step"] == 4 and summary["best_val"] == 0.5


@pytest.mark.parametrize("save_model, step", [("best", 2), ("last", 5)])
def test_save_model_best_or_last(frames, tmp_path, monkeypatch, save_model, step):
    """run.save_model: 'best' keeps the model of lowest validation loss, 'last' the end of training (e.g. when a
    one-frame validation set cannot judge a warm start on new data); a bad value is refused."""
    cfg = tiny_train_config(frames, tmp_path / save_model, optim={"max_steps": 5},
                            run={"eval_every": 1, "patience": 0, "save_model": save_model})
    losses = iter([1.0, 0.5, 0.7, 0.6, 0.9])          # best at step 2
    monkeypatch.setattr(Trainer, "evaluate_loss", lambda self, idx: {"loss": next(losses)})
    Trainer(cfg).train()
    from ase_wannierml.model import load_model

    assert load_model(tmp_path / save_model / "model.pt").metadata["training"]["step"] == step
    with pytest.raises(ValueError, match="run.save_model"):
        tiny_train_config(frames, tmp_path / "bad", run={"save_model": "final"}).validate()


@pytest.mark.slow
def test_overfits_four_frames_to_near_zero_loss(tmp_path):
    folder = tmp_path / "frames"
    write_synthetic_frames(folder, 4, seed=3)
    cfg = tiny_train_config(folder, tmp_path / "fit", data={"val_fraction": 0.0},
                            model={"num_interactions": 2},
                            optim={"max_steps": 700, "batch_size": 4, "lr": 1e-2, "warmup_steps": 10,
                                   "ema_decay": 0.0, "min_lr_ratio": 0.1},
                            loss={"bands": 0.0},   # the tiny pair list truncates H: bands not reducible to 0
                            run={"eval_every": 1000, "checkpoint_every": 1000, "log_every": 50})
    tr = Trainer(cfg)
    start = tr.evaluate_loss(tr.train_idx)
    tr.train()
    end = tr.evaluate_loss(tr.train_idx)
    print(start, end)
    assert end["loss"] < 0.05 and end["loss"] < 1e-4 * start["loss"]
    assert end["rmse_energy"] < 0.005 and end["rmse_ham_inter"] < 0.02     # eV/atom, eV


def test_resume_keeps_the_split_when_frames_are_added_and_init_from_warm_starts(tmp_path):
    """--resume uses the checkpoint's frames (new frames wait); run.init_from starts a new run from a model file's
    weights and settings on the grown data set, saved as float32 by default."""
    import shutil

    from ase_wannierml.model import load_model

    folder = tmp_path / "frames"
    write_synthetic_frames(folder, 6, seed=11)
    opts = dict(optim={"max_steps": 2, "batch_size": 2}, run={"checkpoint_every": 1})
    cfg = tiny_train_config(folder, tmp_path / "a", data={"split": "hash", "val_fraction": 0.2}, **opts)
    first = Trainer(cfg)
    first.train()
    names = sorted(p.name for p in folder.iterdir())
    shutil.copytree(folder / names[0], folder / "zz-new")            # the data set grows
    cfg.optim.max_steps = 3
    resumed = Trainer(cfg, resume=True)
    assert [resumed.data.frame_ids[i] for i in resumed.train_idx] == \
        [first.data.frame_ids[i] for i in first.train_idx]
    assert "zz-new" not in [resumed.data.frame_ids[i] for i in resumed.train_idx + resumed.val_idx]
    model_file = tmp_path / "a" / "model.pt"
    assert load_model(model_file).dtype == torch.float32
    warm = Trainer(tiny_train_config(folder, tmp_path / "b", data={"split": "hash", "val_fraction": 0.2},
                                     run={"init_from": str(model_file)}, optim={"max_steps": 1}))
    assert "zz-new" in [warm.data.frame_ids[i] for i in warm.train_idx + warm.val_idx + warm.test_idx]
    saved = load_model(model_file).state_dict()
    for k, v in warm.model.state_dict().items():
        if "_compiled_" not in k and v.is_floating_point():
            torch.testing.assert_close(v.float(), saved[k].float())


def test_warm_start_to_another_energy_zero_refits_the_onsite_reference(tmp_path):
    """A model trained on H relative to E_F, warm-started on H relative to the vacuum level: its onsite reference
    (a buffer, not a weight) is refitted to the new targets (mean onsite shifts by E_F − E_vac), fermi_level
    becomes the mean E_F − E_vac of the training frames, and every learned weight starts from the saved model."""
    from ase_wannierml.model import load_model
    from ase_wannierml.training.frames import load_frame_dir

    folder = tmp_path / "frames"
    write_synthetic_frames(folder, 4, seed=12)
    shifts = []
    for d in sorted(folder.iterdir()):
        meta = json.loads((d / "meta.json").read_text())
        meta["vacuum_level_eV"] = load_frame_dir(d).fermi_level + 4.0 + 0.1 * len(shifts)
        shifts.append(4.0 + 0.1 * len(shifts))
        (d / "meta.json").write_text(json.dumps(meta))
    Trainer(tiny_train_config(folder, tmp_path / "a", optim={"max_steps": 1})).train()
    model_file = tmp_path / "a" / "model.pt"
    old = load_model(model_file)
    warm = Trainer(tiny_train_config(folder, tmp_path / "b", data={"energy_zero": "vacuum"},
                                     run={"init_from": str(model_file)}, optim={"max_steps": 1}))
    ref_old = old.config.onsite_reference["C"][0]
    ref_new = warm.model_kwargs["onsite_reference"]["C"][0]
    n_train = [shifts[i] for i in warm.train_idx]
    assert ref_new - ref_old == pytest.approx(-sum(n_train) / len(n_train), abs=0.15)
    centres = [float(warm.data.examples[i]["band_centre"]) for i in warm.train_idx]
    assert old.config.fermi_level == 0.0
    assert warm.model_kwargs["fermi_level"] == pytest.approx(sum(centres) / len(centres))
    assert warm.model_kwargs["fermi_level"] == pytest.approx(-sum(n_train) / len(n_train))     # E_F − E_vac
    saved = old.state_dict()
    for k, v in warm.model.state_dict().items():
        if k.endswith("onsite_reference"):
            assert not torch.allclose(v.float(), saved[k].float())
        elif "_compiled_" not in k and v.is_floating_point():
            torch.testing.assert_close(v.float(), saved[k].float())


def test_init_from_a_missing_model_is_named(frames, tmp_path):
    cfg = tiny_train_config(frames, tmp_path / "a", run={"init_from": str(tmp_path / "nothing.pt")})
    with pytest.raises(FileNotFoundError, match=r"run.init_from .*nothing.pt: no such model file .*shipped: \["):
        Trainer(cfg)


def test_warm_start_to_more_pair_capacity_keeps_the_function_then_trains_it(frames, tmp_path):
    """run.init_from a model without the pair-head options, config with pair_sh_lmax 3 and pair_node_product:
    before any step the new model predicts the saved model's energies, forces and every H block (to rounding of
    the float32 file); the new paths start at zero and do move when trained; shrinking back is refused."""
    from ase_wannierml.model import load_model
    from ase_wannierml.model.pair_heads import NodeProduct, PairBlockNet
    from ase_wannierml.structures import bilayer
    from model_helpers import run

    Trainer(tiny_train_config(frames, tmp_path / "a", optim={"max_steps": 2})).train()
    model_file = tmp_path / "a" / "model.pt"
    saved = load_model(model_file, dtype=torch.float64)
    grown_cfg = tiny_train_config(frames, tmp_path / "b", run={"init_from": str(model_file)}, optim={"max_steps": 3},
                                  model={"pair_sh_lmax": 3, "pair_node_product": True})
    warm = Trainer(grown_cfg)
    assert warm.model.config.pair_sh_lmax == 3 and warm.model.config.pair_node_product
    nets = [m for m in warm.model.modules() if isinstance(m, PairBlockNet)]
    assert nets and all(n.lmax_sh == 3 for n in nets) and len(nets[0].paths) > len(
        [m for m in saved.modules() if isinstance(m, PairBlockNet)][0].paths)
    atoms = bilayer("graphene")
    atoms.rattle(0.05, seed=3)
    ref, new = run(saved, atoms), run(warm.model.to(torch.float64), atoms)
    for key in ("energy", "forces", "ham_blocks"):
        np.testing.assert_allclose(new[key], ref[key], rtol=1e-6, atol=1e-8)   # float32 constants of the file
    warm.model.to(warm.dtype)
    warm.train()
    product = [m for m in warm.model.modules() if isinstance(m, NodeProduct)]
    assert product and any(m.tp.weight.abs().max() > 0 for m in product)
    with pytest.raises(ValueError, match="pair_sh_lmax can only grow"):
        Trainer(tiny_train_config(frames, tmp_path / "c", run={"init_from": str(tmp_path / "b" / "model.pt")},
                                  model={"pair_sh_lmax": 0, "pair_node_product": True}))
    with pytest.raises(ValueError, match="pair_node_product cannot be switched off"):
        Trainer(tiny_train_config(frames, tmp_path / "d", run={"init_from": str(tmp_path / "b" / "model.pt")},
                                  model={"pair_sh_lmax": 3, "pair_node_product": False}))


def test_warm_start_appends_a_residual_interaction_that_starts_as_the_identity(frames, tmp_path):
    """run.init_from a 1-interaction model (the tiny config), config with num_interactions 2 and residual_interactions 1: before any
    step the new model predicts the saved energies, forces and every H block; the new interaction moves when
    trained and is a message-passing layer then (its output changes with the neighbours); a non-residual extra
    layer and shrinking back are refused."""
    from ase_wannierml.model import load_model
    from ase_wannierml.structures import bilayer
    from model_helpers import run

    Trainer(tiny_train_config(frames, tmp_path / "a", optim={"max_steps": 2})).train()
    model_file = tmp_path / "a" / "model.pt"
    saved = load_model(model_file, dtype=torch.float64)
    assert saved.config.num_interactions == 1 and saved.config.residual_interactions == 0
    warm = Trainer(tiny_train_config(frames, tmp_path / "b", run={"init_from": str(model_file)},
                                     optim={"max_steps": 3}, model={"num_interactions": 2,
                                                                    "residual_interactions": 1}))
    layers = warm.model.backbone.layers
    assert len(layers) == 2 and [layer.residual for layer in layers] == [False, True]
    assert float(layers[1].linear_down.weight.detach().abs().max()) == 0.0
    atoms = bilayer("graphene")
    atoms.rattle(0.05, seed=3)
    ref, new = run(saved, atoms), run(warm.model.to(torch.float64), atoms)
    for key in ("energy", "forces", "ham_blocks"):
        np.testing.assert_allclose(new[key], ref[key], rtol=1e-6, atol=1e-8)
    warm.model.to(warm.dtype)
    warm.train()
    assert float(layers[1].linear_down.weight.detach().abs().max()) > 0.0
    grown = load_model(tmp_path / "b" / "model.pt", dtype=torch.float64)
    assert grown.config.num_interactions == 2 and grown.config.residual_interactions == 1
    moved = run(grown, atoms)
    assert np.abs(moved["energy"] - ref["energy"]).max() > 0.0
    with pytest.raises(ValueError, match="only residual interactions can be appended"):
        Trainer(tiny_train_config(frames, tmp_path / "c", run={"init_from": str(model_file)},
                                  model={"num_interactions": 2}))
    with pytest.raises(ValueError, match="num_interactions can only grow"):
        Trainer(tiny_train_config(frames, tmp_path / "d", run={"init_from": str(tmp_path / "b" / "model.pt")},
                                  model={"num_interactions": 1, "residual_interactions": 0}))


@pytest.mark.parametrize("bad", [{"residual_interactions": 2}, {"residual_interactions": -1},
                                 {"residual_interactions": True}, {"num_interactions": 0},
                                 {"num_interactions": 2.0}])
def test_residual_interactions_setting_is_checked(bad):
    from ase_wannierml.model.config import ModelConfig

    with pytest.raises(ValueError, match="interactions must be an integer"):
        ModelConfig(species=("C",), orbitals={"C": ("pz",)}, **{"num_interactions": 2, **bad})
