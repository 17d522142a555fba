"""Command-line entry points ``wannierml train`` and ``wannierml evaluate`` (wired in ``ase_wannierml/cli.py``).

    wannierml train config.yaml [--resume | --overwrite] [--no-progress]
    wannierml evaluate model.pt FRAMES_OR_CACHE [...] [--json metrics.json] [--batch-size 8]

Data-parallel training on CPU (gloo)::

    torchrun --standalone --nproc_per_node 2 -m ase_wannierml.training.cli train config.yaml
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Sequence

from ase_wannierml.cli import add_threads_option, apply_threads


def train_main(argv: Sequence[str] | None = None) -> int:
    """Train (or with --resume continue) the run described by a YAML config; returns the exit code."""
    p = argparse.ArgumentParser(prog="wannierml train", description="train a model from a YAML config "
                                "(see examples/train_config.yaml)")
    p.add_argument("config", help="YAML training config")
    p.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in run.output")
    p.add_argument("--overwrite", action="store_true",
                   help="start again in a run.output that holds a previous run (deletes its model, log, checkpoints)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_threads_option(p)
    args = p.parse_args(argv)
    apply_threads(args)

    from .config import load_config
    from .distributed import init_from_env, shutdown
    from .trainer import Trainer

    cfg = load_config(args.config)
    if args.no_progress:
        cfg.run.progress = False
    info = init_from_env()
    try:
        summary = Trainer(cfg, info, resume=args.resume, overwrite=args.overwrite).train()
    finally:
        shutdown(info)
    if info.is_main:
        best = "n/a" if summary["best_val"] is None else f"{summary['best_val']:.5g}"
        print(f"done: step {summary['step']}, best validation loss {best}"
              f"{' (stopped early)' if summary['stopped_early'] else ''}; model: {Path(cfg.run.output) / 'model.pt'}")
    return 0


def evaluate_main(argv: Sequence[str] | None = None) -> int:
    """Print the accuracy table of a model on frame folders (or a dataset cache built with the same graph)."""
    p = argparse.ArgumentParser(prog="wannierml evaluate", description="accuracy of a model on a data set")
    p.add_argument("model", help="model file (or pretrained name)")
    p.add_argument("data", nargs="+", help="frame directories, folders of frames, extxyz files, or a .pt cache")
    p.add_argument("--json", default=None, help="also write the metrics to this JSON file")
    p.add_argument("--batch-size", type=int, default=8)
    add_threads_option(p)
    args = p.parse_args(argv)
    apply_threads(args)

    import torch

    from ase_wannierml.model import load_model

    from .evaluate import evaluate

    model = load_model(args.model)
    examples = examples_for_model(model.config, args.data, model.metadata)
    if not examples:
        print(f"wannierml evaluate: no usable frames in {' '.join(args.data)} (frame folders need "
              "structure.extxyz; see the 'left out' lines above)", file=sys.stderr)
        return 1
    ev = evaluate(model, examples, dtype=model.dtype if model.dtype in (torch.float32, torch.float64)
                  else torch.float64, batch_size=args.batch_size)
    print(ev.table())
    if args.json:
        from ase_wannierml.cli import atomic_write_text

        atomic_write_text(args.json, json.dumps({"metrics": ev.metrics(), "counts": ev.counts()}, indent=1))
    return 0


def examples_for_model(model_config, data: Sequence[str], metadata: dict | None = None) -> list[dict]:
    """Examples built with the model's own graph settings (a cache must have been built with them too) and the
    energy zero of its training data (``metadata["training"]["config"]["data"]``: DFT Fermi level or neutrality
    level)."""
    from .dataset import BuildOptions, build_dataset, load_cache
    from .setup import GRAPH_FIELDS, graph_functions

    settings = {k: v for k, v in model_config.to_dict().items() if k in GRAPH_FIELDS}
    if len(data) == 1 and data[0].endswith(".pt"):
        ds, fingerprint = load_cache(data[0])
        if json.loads(fingerprint)["graph"] != json.loads(json.dumps(settings, default=str)):
            raise ValueError(f"{data[0]} was built with other graph settings than the model's; evaluate the frame "
                             "folders instead")
        return ds.examples
    data_cfg = ((metadata or {}).get("training") or {}).get("config", {}).get("data", {})
    energy_zero = {"energy_zero": data_cfg.get("energy_zero", "dft_fermi"),
                   "electrons": dict(model_config.wannier_electrons),
                   "neutrality_kgrid": int(data_cfg.get("neutrality_kgrid", 48))}
    graph_fn, pairs_fn = graph_functions(model_config)
    ds = build_dataset(data, graph_fn, pairs_fn, BuildOptions(shells=dict(model_config.orbitals),
                                                               on_error="skip", dispersion=model_config.dispersion,
                                                               **energy_zero))
    for fid, why in sorted(ds.rejected.items()):
        print(f"left out {fid}: {why}", file=sys.stderr)
    return ds.examples


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m ase_wannierml.training.cli train|evaluate ...`` (used with torchrun)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    commands = {"train": train_main, "evaluate": evaluate_main}
    if not argv or argv[0] not in commands:
        print("usage: python -m ase_wannierml.training.cli {train,evaluate} ...", file=sys.stderr)
        return 2
    return commands[argv[0]](argv[1:])


if __name__ == "__main__":
    sys.exit(main())
