"""Cost of one model against another on the same structures, measured in one run: energy + forces + Hamiltonian of
k × k supercells of the material's reference bilayer, calls interleaved (a, b, a, b, …) so that machine load hits
both alike. Reports median wall and CPU seconds per call and the ratio to the first model.

Usage::

    OMP_NUM_THREADS=1 python benchmarks/model_cost_compare.py --material mos2-bilayer \\
        --model stage8=mos2-bilayer stage9=benchmarks/results/mos2_stage9/mos2-bilayer-stage9.pt \\
        --supercells 3 6 --repeats 5 --out benchmarks/results/model_cost_mos2_stage9.json
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import torch


def one_call(model, atoms) -> tuple[float, float]:
    """(wall s, CPU s) of energy + forces + Hamiltonian blocks for ``atoms``."""
    from ase_wannierml.model import atoms_to_graph

    w0, c0 = time.perf_counter(), time.process_time()
    graph = atoms_to_graph(atoms, model.config, dtype=model.dtype)
    out = model(graph, compute_forces=True, compute_hamiltonian=True)
    float(out["energy"].sum()), float(out["ham_blocks"].abs().sum())
    return time.perf_counter() - w0, time.process_time() - c0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--material", choices=["graphene-bilayer", "mos2-bilayer"], required=True)
    ap.add_argument("--model", nargs="+", required=True, help="tag=model (file or shipped name); first = baseline")
    ap.add_argument("--supercells", type=int, nargs="+", default=[3, 6])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    if args.repeats < 1 or min(args.supercells) < 1:
        ap.error("--repeats and --supercells must be >= 1")

    from ase_wannierml.cli import atomic_write_text
    from ase_wannierml.model import load_model
    from ase_wannierml.structures import bilayer

    models = {}
    for spec in args.model:
        tag, sep, name = spec.partition("=")
        if not sep or not tag or not name:
            ap.error(f"--model takes tag=model, got {spec!r}")
        models[tag] = load_model(name)
    base = "graphene" if args.material.startswith("graphene") else "mos2"
    rows = []
    load = os.getloadavg()[0]
    print(f"{'cell':>6s} {'atoms':>6s} " + " ".join(f"{t + ' wall/CPU (s)':>22s}" for t in models) + "   CPU ratio")
    for k in args.supercells:
        atoms = bilayer(base).repeat((k, k, 1))
        for m in models.values():
            one_call(m, atoms)                                  # warm-up: e3nn code generation
        times: dict[str, list[tuple[float, float]]] = {t: [] for t in models}
        for _ in range(args.repeats):
            for tag, m in models.items():
                times[tag].append(one_call(m, atoms))
        med = {t: (statistics.median(w for w, _ in v), statistics.median(c for _, c in v)) for t, v in times.items()}
        first = next(iter(med))
        row = {"supercell": k, "n_atoms": len(atoms),
               "median_wall_s": {t: v[0] for t, v in med.items()}, "median_cpu_s": {t: v[1] for t, v in med.items()},
               "cpu_ratio_to_" + first: {t: v[1] / med[first][1] for t, v in med.items()}}
        rows.append(row)
        print(f"{k}x{k:<4d} {len(atoms):6d} " + " ".join(f"{w:10.3f} / {c:<9.3f}" for w, c in med.values())
              + "   " + " ".join(f"{t} {r:.2f}" for t, r in row["cpu_ratio_to_" + first].items()))
    result = {"material": args.material, "models": {t: s.partition("=")[2] for t, s in zip(models, args.model)},
              "repeats": args.repeats, "torch_threads": torch.get_num_threads(), "load_average_start": load,
              "rows": rows}
    if args.out:
        atomic_write_text(args.out, json.dumps(result, indent=1))
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
