"""data.repeat: chosen training frames visited n times per epoch; never val/test; kept on resume."""
from __future__ import annotations

import pytest

from ase_wannierml.training.config import TrainConfig
from ase_wannierml.training.synthetic import tiny_train_config, write_synthetic_frames
from ase_wannierml.training.trainer import Trainer, repeat_indices


def test_repeat_indices_lists_matching_frames_n_times():
    ids = ["0001-1x1", "md2x2-T300-train-s7-000", "md2x2-scf-abc", "0002-1x1"]
    out = repeat_indices([0, 1, 2, 3], ids, {"md2x2-*": 3, "md2x2-scf-*": 2})
    assert out == [0, 1, 1, 1, 2, 2, 2, 3]            # the largest n of the matching globs
    assert repeat_indices([0, 3], ids, {"md2x2-*": 3}) == [0, 3]     # only frames of the given split


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "2"])
def test_repeat_must_be_a_positive_integer(bad):
    with pytest.raises(ValueError, match="data.repeat"):
        TrainConfig.from_dict({"data": {"frames": ["x"], "repeat": {"md*": bad}}})


def test_trainer_repeats_training_frames_only_and_resume_keeps_them(tmp_path):
    write_synthetic_frames(tmp_path / "frames", 6, seed=3)
    data = {"cache": str(tmp_path / "cache.pt"), "repeat": {"frame_000[0-3]": 3}}
    cfg = tiny_train_config(tmp_path / "frames", tmp_path / "run", data=data,
                            optim={"max_steps": 2, "batch_size": 2}, run={"checkpoint_every": 1})
    tr = Trainer(cfg)
    ids = tr.data.frame_ids
    train = [ids[i] for i in tr.train_idx]
    for fid in set(train):
        assert train.count(fid) == (3 if fid[:-1] == "frame_000" and fid[-1] in "0123" else 1)
    assert all(train.count(ids[i]) == 0 for i in tr.val_idx + tr.test_idx)
    tr.train()
    cfg.optim.max_steps = 3
    resumed = Trainer(cfg, resume=True)
    assert resumed.train_idx == tr.train_idx          # not repeated a second time
    resumed.train()
