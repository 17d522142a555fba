"""Glue between the training config, the model package and the dataset cache.

``prepare_dataset`` builds (main process) or loads (others) the cache; ``build_training_model`` completes the
model settings from training-set statistics (``stats.py``) and builds the model.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
import torch

from ase_wannierml.model import keys as K
from ase_wannierml.model.config import ModelConfig

from .config import TrainConfig
from .dataset import BuildOptions, Dataset, load_cache, load_or_build
from .distributed import DistInfo, barrier
from .stats import compute_scales, data_model_settings

#: ModelConfig fields that change the graph (and so the cached examples).
GRAPH_FIELDS = ("species", "orbitals", "cutoff", "ham_cutoff_near", "ham_cutoff_far", "ham_cutoff_inter",
                "min_distance", "layer_bond_factor")


def base_model_kwargs(cfg: TrainConfig) -> dict[str, Any]:
    """The config's ``model`` section with ``species`` defaulting to the elements of ``orbitals``."""
    kwargs = dict(cfg.model)
    if "orbitals" not in kwargs:
        raise ValueError("config: model.orbitals is required, e.g. {C: [pz]} (the Wannier projections per element)")
    kwargs.setdefault("species", list(kwargs["orbitals"]))
    return kwargs


def graph_functions(model_config: ModelConfig):
    """(atoms → graph (float64), graph → (pair_i, pair_j, pair_shift)) for the dataset builder."""
    from ase_wannierml.model.graph import atoms_to_graph

    def graph_fn(atoms):
        return atoms_to_graph(atoms, model_config, dtype=torch.float64)

    def pairs_fn(graph):
        index = graph[K.HAM_PAIR_INDEX].numpy()
        return index[0], index[1], graph[K.HAM_PAIR_SHIFT].numpy()

    return graph_fn, pairs_fn


def prepare_dataset(cfg: TrainConfig, info: DistInfo = DistInfo()) -> Dataset:
    """Load the cache (building it first on the main process if missing or stale)."""
    mc = ModelConfig.from_dict(base_model_kwargs(cfg))
    opts = BuildOptions(shells=dict(mc.orbitals), max_centre_distance=cfg.data.max_centre_distance,
                        gauge_tolerance=cfg.data.gauge_tolerance, band_kgrid=cfg.data.band_kgrid,
                        on_error=cfg.data.on_error, energy_zero=cfg.data.energy_zero,
                        electrons=dict(mc.wannier_electrons), neutrality_kgrid=cfg.data.neutrality_kgrid,
                        dispersion=mc.dispersion, forces_only=tuple(cfg.data.forces_only),
                        scf_of_rejected=bool(cfg.data.scf_of_rejected))
    settings = {k: v for k, v in mc.to_dict().items() if k in GRAPH_FIELDS}
    graph_fn, pairs_fn = graph_functions(mc)
    ds = None
    if info.is_main:
        ds = load_or_build(cfg.data.frames, cfg.cache_path(), graph_fn, pairs_fn, opts, settings,
                           progress=cfg.run.progress)
        _print_data_report(ds)
    barrier(info)
    if ds is None:
        ds = load_cache(cfg.cache_path())[0]
    if len(ds) == 0:
        raise ValueError(f"no usable frames in {cfg.data.frames}")
    return ds


def _print_data_report(ds: Dataset) -> None:
    """Frames left out, and frames outside the supported gauge (maximally localised: num_iter > 0)."""
    if ds.rejected:
        print(f"dataset: {len(ds)} frames, {len(ds.rejected)} left out:")
        for fid, why in sorted(ds.rejected.items()):
            print(f"  {fid}: {why}")
    mlwf = [r["frame"] for r in ds.reports if r.get("num_iter")]
    if mlwf:
        print(f"warning: {len(mlwf)} frames have maximally localised Wannier functions (num_iter > 0), e.g. "
              f"{mlwf[:3]}; the supported gauge is projection-only (num_iter = 0), see training/assign.py")


def build_training_model(cfg: TrainConfig, train_examples: Sequence[dict], model_kwargs: Mapping | None,
                         dtype: torch.dtype):
    """(model, model kwargs, loss scales). ``model_kwargs`` from a checkpoint are used as they are (resume)."""
    from ase_wannierml.model.model import build_model

    if model_kwargs is None:
        kwargs = base_model_kwargs(cfg)
        kwargs.update(data_model_settings(train_examples, kwargs, cfg.data.energy_zero))
    else:
        kwargs = dict(model_kwargs)
    mc = ModelConfig.from_dict(kwargs)
    options = {k: v for k, v in mc.to_dict().items() if k not in ("orbitals", "cutoff")}
    model = build_model(mc.orbitals, mc.cutoff, dtype=dtype, seed=cfg.run.seed, **options)
    scales = compute_scales(train_examples, mc.e0s, mc.onsite_reference, cfg.loss.scale_floor,
                            cfg.loss.band_scale, cfg.loss.ham_distance_bin, cfg.loss.ham_bin_power)
    scales.layer_forces = float(cfg.loss.layer_forces_scale)
    return model, _plain(mc.to_dict()), scales


def _plain(obj: Any) -> Any:
    """Tuples → lists, numpy scalars → Python (weights_only-safe checkpoint content)."""
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    return obj

