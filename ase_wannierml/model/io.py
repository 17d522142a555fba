"""Versioned model files: weights + full config + units + metadata in one ``torch.save`` file.

The file is a plain dict (loadable with ``torch.load(weights_only=True)``, no pickled classes)::

    {"format_version": 1, "package_version": "0.1.0", "config": ModelConfig.to_dict(), "dtype": "float32",
     "units": {...}, "metadata": {... JSON-able training info ...}, "state_dict": {name: Tensor}}

Files with another ``format_version`` are rejected with a ``ValueError`` that names both versions.

Example::

    >>> model = build_model({"C": ["pz"]}, hidden_irreps="8x0e+4x1o")      # doctest: +SKIP
    >>> model.save("c.pt", metadata={"trained_on": "graphene-bilayer frames 0-99"})   # doctest: +SKIP
    >>> load_model("c.pt").config.orbitals                                   # doctest: +SKIP
    {'C': ('pz',)}
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping, Optional

import torch

from .config import ModelConfig
from .model import WannierMLModel

FORMAT_VERSION = 1
PRETRAINED_DIR = Path(__file__).resolve().parent.parent / "pretrained"
UNITS = {"energy": "eV", "length": "Angstrom", "forces": "eV/Angstrom", "stress": "eV/Angstrom^3",
         "hamiltonian": "eV"}


def save_model(model: WannierMLModel, path: str | Path, metadata: Optional[Mapping[str, Any]] = None) -> None:
    """Write ``model`` to ``path``; ``metadata`` (JSON-able) is merged over ``model.metadata``."""
    from ase_wannierml import __version__

    meta = {**model.metadata, **dict(metadata or {})}
    try:
        json.dumps(meta)
    except TypeError as err:
        raise ValueError(f"model metadata must be JSON-able (str, numbers, lists, dicts): {err}") from None
    payload = {
        "format_version": FORMAT_VERSION,
        "package_version": __version__,
        "config": model.config.to_dict(),
        "dtype": str(model.dtype).replace("torch.", ""),
        "units": dict(UNITS),
        "metadata": meta,
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
    }
    torch.save(payload, Path(path))


def checked_torch_load(path: str | Path, what: str = "file") -> Any:
    """``torch.load(path, weights_only=True)`` on CPU with corrupted files refused by a ``ValueError`` naming the file.

    torch does not verify the CRC-32 of the zip records it reads, so flipped bytes inside the weights load silently
    as wrong numbers; every record is checked here first (``zipfile.testzip``: ~10 ms for a 0.5 MB model).
    Truncated or non-torch files give the same ValueError instead of torch's internal error.
    """
    import pickle
    import zipfile

    path = Path(path)
    if zipfile.is_zipfile(path):
        try:
            with zipfile.ZipFile(path) as zf:
                bad = zf.testzip()
        except (zipfile.BadZipFile, OSError, EOFError, ValueError) as err:
            raise ValueError(f"{path} is a corrupted {what} ({err}); copy or download it again") from None
        if bad is not None:
            raise ValueError(f"{path} is a corrupted {what}: the checksum of its record {bad!r} does not match "
                             "(damaged bytes); copy or download it again")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, pickle.UnpicklingError, EOFError, zipfile.BadZipFile, UnicodeDecodeError, ValueError,
            KeyError, IndexError, TypeError) as err:
        msg = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(f"{path} is not a readable {what} (truncated or corrupted?): {msg[:200]}") from None


def available_models() -> list[str]:
    """Names of the pretrained models shipped in ``ase_wannierml/pretrained/`` (``<name>.pt``)."""
    return sorted(p.stem for p in PRETRAINED_DIR.glob("*.pt"))


def resolve_model_path(name_or_path: str | Path) -> Path:
    """A model file path from a path or a pretrained name; FileNotFoundError listing the available names."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    candidate = PRETRAINED_DIR / f"{name_or_path}.pt"
    if candidate.is_file():
        return candidate
    names = available_models()
    raise FileNotFoundError(f"no model file {str(name_or_path)!r} and no pretrained model of that name; "
                            f"pretrained models: {names if names else 'none installed'} (in {PRETRAINED_DIR})")


def available_committees() -> list[str]:
    """Names of the shipped committees (``ase_wannierml/pretrained/committee/<name>.pt``)."""
    return sorted(p.stem for p in (PRETRAINED_DIR / "committee").glob("*.pt"))


def resolve_committee_path(name_or_path: str | Path) -> Path:
    """A committee file from a path or a pretrained name; FileNotFoundError listing the shipped committees."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    candidate = PRETRAINED_DIR / "committee" / f"{name_or_path}.pt"
    if candidate.is_file():
        return candidate
    names = available_committees()
    raise FileNotFoundError(f"no committee file {str(name_or_path)!r} and no shipped committee of that name; "
                            f"shipped committees: {names if names else 'none installed'} "
                            f"(in {PRETRAINED_DIR / 'committee'})")


def load_model(name_or_path: str | Path = "graphene-bilayer", dtype: Optional[torch.dtype] = None,
               device: str | torch.device = "cpu", committee: bool = False):
    """Load a model file (``torch.load(weights_only=True)``) or a pretrained model by name, in eval mode.

    dtype: default the file's dtype; device: torch device. Raises ValueError for files of another
    ``format_version`` or that are not model files.
    committee: return the shipped committee of that name (``pretrained/committee/<name>.pt``) or a committee file,
    a ``CommitteeModel`` (energy/force/Hamiltonian spread; see ``model/committee.py`` and docs/uncertainty.md).
    """
    if committee:
        from .committee import load_committee

        return load_committee(resolve_committee_path(name_or_path), dtype=dtype, device=device)
    path = resolve_model_path(name_or_path)
    payload = checked_torch_load(path, what="model file")
    if not isinstance(payload, dict) or "format_version" not in payload:
        raise ValueError(f"{path} is not an ase_wannierml model file (no format_version)")
    version = payload["format_version"]
    if version != FORMAT_VERSION:
        raise ValueError(f"{path} has model format_version {version} (written by ase_wannierml "
                         f"{payload.get('package_version', '?')}); this ase_wannierml reads format_version "
                         f"{FORMAT_VERSION}. Use a matching ase_wannierml version or re-export the model.")
    config = ModelConfig.from_dict(payload["config"])
    dtype = dtype if dtype is not None else getattr(torch, payload["dtype"])
    model = WannierMLModel(config, dtype=dtype, device=device)
    model.load_state_dict(payload["state_dict"])
    model.metadata = dict(payload.get("metadata", {}))
    return model.eval()
