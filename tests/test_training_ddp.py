"""Data-parallel training: 2 processes (torchrun, gloo) give the single-process result."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
import yaml

from ase_wannierml.model import build_model
from ase_wannierml.training.checkpoint import list_checkpoints
from ase_wannierml.training.synthetic import TINY_MODEL, write_synthetic_frames


def _config(frames, output, cache) -> dict:
    return {"data": {"frames": [str(frames)], "val_fraction": 0.25, "cache": str(cache)},
            "model": TINY_MODEL,
            "loss": {"bands": 0.5, "band_kpoints": 3, "stress": 0.1},
            "optim": {"max_steps": 4, "batch_size": 3, "lr": 5e-3, "warmup_steps": 1, "ema_decay": 0.5},
            "run": {"output": str(output), "eval_every": 2, "checkpoint_every": 4, "progress": False}}


def _run(args: list[str], tmp_path) -> None:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


@pytest.mark.slow
def test_two_process_training_equals_single_process(tmp_path):
    frames = tmp_path / "frames"
    write_synthetic_frames(frames, 7, seed=21)        # 5 training frames: batches of 3 and 2, split 2+1 / 1+1
    for name in ("single", "ddp"):
        (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump(_config(frames, tmp_path / name,
                                                                       tmp_path / f"{name}_cache.pt")))
    _run([sys.executable, "-m", "ase_wannierml.training.cli", "train", "single.yaml"], tmp_path)
    _run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
          "-m", "ase_wannierml.training.cli", "train", "ddp.yaml"], tmp_path)
    a = torch.load(list_checkpoints(tmp_path / "single")[-1], weights_only=True)
    b = torch.load(list_checkpoints(tmp_path / "ddp")[-1], weights_only=True)
    assert a["step"] == b["step"] == 4
    for key, value in a["model"].items():
        torch.testing.assert_close(b["model"][key], value, rtol=1e-9, atol=1e-11, msg=f"parameter {key}")
    kwargs = dict(a["model_kwargs"])
    init = build_model(kwargs.pop("orbitals"), kwargs.pop("cutoff"), dtype=torch.float64, seed=0, **kwargs)
    moved = max(float((init.state_dict()[k] - v).abs().max()) for k, v in a["model"].items()
                if v.is_floating_point() and v.numel())
    assert moved > 1e-3                               # training moved the weights: the comparison is not trivial
    for x, y in zip(a["ema"]["shadow"], b["ema"]["shadow"]):
        torch.testing.assert_close(y, x, rtol=1e-9, atol=1e-11)
    assert a["best_val"] == pytest.approx(b["best_val"], rel=1e-9)
