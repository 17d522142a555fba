"""Training checkpoints: everything needed to continue a run bit for bit, written atomically.

A checkpoint (``<output>/checkpoints/step_XXXXXXXX.pt``, ``torch.load(weights_only=True)``-safe) holds the model,
optimizer, LR scheduler and EMA states, the RNG states (torch, numpy, python; band k-points are drawn from
seeds derived from the step, so they need no state), the
step / epoch / position in the epoch's data order, early-stopping state, loss scales and the configs.
"""
from __future__ import annotations

import os
import random
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

_NAME = re.compile(r"step_(\d{8})\.pt$")


def rng_state() -> dict[str, Any]:
    """Global RNG states as plain tensors / lists (weights_only-safe)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    return {"torch": torch.get_rng_state(),
            "numpy": {"kind": kind, "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)), "pos": int(pos),
                      "has_gauss": int(has_gauss), "gauss": float(gauss)},
            "python": {"version": version, "internal": list(internal), "gauss_next": gauss_next}}


def set_rng_state(state: dict[str, Any]) -> None:
    """Inverse of :func:`rng_state`."""
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    p = state["python"]
    random.setstate((p["version"], tuple(p["internal"]), p["gauss_next"]))


def checkpoint_dir(output: str | Path) -> Path:
    return Path(output) / "checkpoints"


def save_checkpoint(state: dict[str, Any], output: str | Path, step: int, keep: int = 2,
                    own: list[Path] | None = None) -> Path:
    """Write ``state`` as step ``step`` (temp file + rename) and delete all but the newest ``keep`` checkpoints.

    ``own``: the checkpoints of this run (the new one is appended); only those are pruned, so files of another run
    in the same folder are never deleted in place of this run's (None: every checkpoint in the folder).
    """
    folder = checkpoint_dir(output)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"step_{step:08d}.pt"
    tmp = folder / f".{path.name}.{os.getpid()}.tmp"
    try:
        torch.save(state, tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    if own is None:
        candidates = list_checkpoints(output)
    else:
        if path not in own:
            own.append(path)
        candidates = sorted(p for p in own if p.exists())
    for old in candidates[:-max(keep, 1)]:
        old.unlink()
        if own is not None:
            own.remove(old)
    return path


def list_checkpoints(output: str | Path) -> list[Path]:
    """Checkpoint files of a run, oldest first."""
    folder = checkpoint_dir(output)
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if _NAME.search(p.name))


def load_latest(output: str | Path) -> dict[str, Any] | None:
    """The newest readable checkpoint of a run (None if there is none).

    A newest checkpoint that is truncated or corrupted (e.g. the disk filled up) is reported and the previous one
    is used; ValueError naming the files if none can be read.
    """
    from ase_wannierml.model.io import checked_torch_load

    found = list_checkpoints(output)
    problems = []
    for path in reversed(found):
        try:
            state = checked_torch_load(path, what="training checkpoint")
        except ValueError as err:
            problems.append(str(err))
            continue
        if not isinstance(state, dict) or "step" not in state:
            problems.append(f"{path} is not a training checkpoint (no 'step')")
            continue
        for msg in problems:
            print(f"--resume: skipping unreadable checkpoint: {msg}; using {path.name}")
        return state
    if problems:
        raise ValueError("no readable checkpoint in " + str(checkpoint_dir(output)) + ": " + "; ".join(problems))
    return None
