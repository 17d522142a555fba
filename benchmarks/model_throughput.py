"""Model throughput: time and peak memory of energy+forces and energy+forces+H versus the number of atoms.

Systems: twisted bilayer graphene (pz model, commensurate (m, 1) cells from ``structures.twisted_bilayer``) and
AA' bilayer MoS2 (Mo d + S p model, k × k supercells of ``structures.bilayer``), default ``ModelConfig``
(cutoff 5 Å; Hamiltonian cut-offs 6 / 12 / 12 Å), untrained weights (speed does not depend on training), or with
``--model graphene-bilayer`` the shipped pretrained model (its own settings: Hamiltonian cut-offs 4.5 / 12 / 10 Å,
float32; twisted bilayer graphene only).

Each (system, size, mode) runs in a fresh subprocess so that its peak resident memory (``ru_maxrss``) is its own;
a small warm-up call first excludes e3nn's one-off code generation. Reported per run: wall and CPU seconds of
graph building (neighbour lists, pair list) and of the model call, peak RSS and the growth of RSS during the timed
step (the process baseline, torch + model, is ~0.4 GB). The scaling exponent α is a least-squares fit of
log(total wall time) against log(N) over sizes >= ``--fit-min`` atoms (also for CPU time). Wall times depend
on machine load: run it on an otherwise idle machine (the CPU time column is less sensitive to other processes).

Usage::

    python benchmarks/model_throughput.py                         # all sizes 100 … 20,000, both systems
    python benchmarks/model_throughput.py --sizes 100 1000 --systems tbg --threads 1
    python benchmarks/model_throughput.py --model graphene-bilayer --systems tbg --threads 1 \
        --json benchmarks/results/model_throughput_pretrained.json      # the shipped model
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

import numpy as np

SIZES = (100, 500, 1000, 2000, 5000, 10000, 20000)
SYSTEMS = ("tbg", "mos2")
MODES = ("ef", "efh")


def tbg(n_target: int):
    """Twisted bilayer graphene (m, 1) cell with the atom count 4(3m² + 3m + 1) closest to ``n_target``."""
    from ase_wannierml.structures import twisted_bilayer

    m = min(range(1, 80), key=lambda m: abs(4 * (3 * m * m + 3 * m + 1) - n_target))
    return twisted_bilayer("graphene", m=m, r=1)


def mos2(n_target: int):
    """AA' bilayer MoS2, k × k supercell (6k² atoms) closest to ``n_target``."""
    from ase_wannierml.structures import bilayer

    k = max(1, int(round(np.sqrt(n_target / 6))))
    return bilayer("mos2").repeat((k, k, 1))


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def worker(system: str, size: int, mode: str, threads: int, model_name: str = "") -> dict:
    """One timed run in this process; returns the measurements as a dict."""
    import torch

    from ase_wannierml.model import atoms_to_graph, build_model, load_model

    if threads > 0:
        torch.set_num_threads(threads)
    orbitals = {"C": ["pz"]} if system == "tbg" else {"Mo": ["d"], "S": ["p"]}
    if model_name:
        model = load_model(model_name).eval()
        if tuple(model.config.species) != tuple(orbitals):
            raise ValueError(f"model {model_name} is for {model.config.species}, not system {system}")
    else:
        model = build_model(orbitals, seed=0).eval()
    atoms = (tbg if system == "tbg" else mos2)(size)
    with_h = mode == "efh"
    small = (tbg if system == "tbg" else mos2)(50)
    model(atoms_to_graph(small, model.config, with_hamiltonian=with_h), compute_hamiltonian=with_h)  # warm-up
    base = _rss_mb()
    t0, c0 = time.perf_counter(), time.process_time()
    graph = atoms_to_graph(atoms, model.config, with_hamiltonian=with_h)
    t1, c1 = time.perf_counter(), time.process_time()
    out = model(graph, compute_forces=True, compute_hamiltonian=with_h)
    t2, c2 = time.perf_counter(), time.process_time()
    assert torch.isfinite(out["forces"]).all()
    return {
        "system": system, "mode": mode, "atoms": len(atoms), "threads": torch.get_num_threads(),
        "model": model_name or "untrained default", "dtype": str(next(model.parameters()).dtype),
        "edges": int(graph["edge_index"].shape[1]),
        "pairs": int(graph["ham_pair_index"].shape[1]) if with_h else 0,
        "graph_s": t1 - t0, "model_s": t2 - t1, "total_s": t2 - t0, "cpu_s": c2 - c0,
        "peak_rss_mb": _rss_mb(), "rss_growth_mb": _rss_mb() - base,
    }


def fit_exponent(rows: list[dict], fit_min: int, key: str = "total_s") -> float:
    """Slope of log(time ``key``) vs log(atoms) over rows with >= fit_min atoms (nan if < 2 points)."""
    pts = [(r["atoms"], r[key]) for r in rows if r["atoms"] >= fit_min]
    if len(pts) < 2:
        return float("nan")
    n, t = np.log(np.array(pts, dtype=float)).T
    return float(np.polyfit(n, t, 1)[0])


def table(rows: list[dict], fit_min: int) -> str:
    """Markdown table of all runs plus one exponent line per (system, mode)."""
    lines = ["| system | mode | atoms | edges | H pairs | graph s | model s | total s | CPU s | µs/atom | "
             "peak RSS MB | RSS growth MB |", "|" + "---|" * 12]
    for r in rows:
        lines.append(f"| {r['system']} | {r['mode']} | {r['atoms']} | {r['edges']} | {r['pairs']} | "
                     f"{r['graph_s']:.2f} | {r['model_s']:.2f} | {r['total_s']:.2f} | {r['cpu_s']:.2f} | "
                     f"{1e6 * r['total_s'] / r['atoms']:.0f} | {r['peak_rss_mb']:.0f} | {r['rss_growth_mb']:.0f} |")
    lines.append("")
    for system in dict.fromkeys(r["system"] for r in rows):
        for mode in dict.fromkeys(r["mode"] for r in rows):
            sel = [r for r in rows if r["system"] == system and r["mode"] == mode]
            if sel:
                lines.append(f"scaling exponent {system} {mode} (N >= {fit_min}): wall time "
                             f"{fit_exponent(sel, fit_min):.2f}, CPU time {fit_exponent(sel, fit_min, 'cpu_s'):.2f}")
        ef = {r["atoms"]: r for r in rows if r["system"] == system and r["mode"] == "ef"}
        diff = [{"atoms": r["atoms"], "h_cpu_s": r["cpu_s"] - ef[r["atoms"]]["cpu_s"]} for r in rows
                if r["system"] == system and r["mode"] == "efh" and r["atoms"] in ef]
        if diff:
            lines.append(f"Hamiltonian part {system} (CPU efh - ef): " + ", ".join(
                f"N={d['atoms']}: {d['h_cpu_s']:.2f} s" for d in diff if d["atoms"] >= fit_min)
                + f"; exponent {fit_exponent(diff, fit_min, 'h_cpu_s'):.2f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=list(SIZES))
    parser.add_argument("--systems", nargs="+", default=list(SYSTEMS), choices=SYSTEMS)
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch default)")
    parser.add_argument("--model", default="", help="pretrained name or model file (default: untrained default model)")
    parser.add_argument("--fit-min", type=int, default=1000, help="smallest size in the exponent fit")
    parser.add_argument("--json", help="also write the raw measurements to this JSON file")
    parser.add_argument("--load", help="only print the table of measurements saved earlier with --json")
    parser.add_argument("--worker", nargs=3, metavar=("SYSTEM", "SIZE", "MODE"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        system, size, mode = args.worker
        print(json.dumps(worker(system, int(size), mode, args.threads, args.model)))
        return
    if args.load:
        with open(args.load) as fh:
            print(table(json.load(fh), args.fit_min))
        return
    rows = []
    for system in args.systems:
        for mode in args.modes:
            for size in args.sizes:
                cmd = [sys.executable, __file__, "--worker", system, str(size), mode, "--threads", str(args.threads),
                       "--model", args.model]
                res = subprocess.run(cmd, capture_output=True, text=True)
                if res.returncode != 0:
                    print(f"{system} {mode} {size}: failed\n{res.stderr[-2000:]}", file=sys.stderr)
                    continue
                rows.append(json.loads(res.stdout.strip().splitlines()[-1]))
                r = rows[-1]
                print(f"{system:5s} {mode:4s} N={r['atoms']:6d} total {r['total_s']:8.2f} s  CPU {r['cpu_s']:8.2f} s"
                      f"  peak {r['peak_rss_mb']:7.0f} MB", flush=True)
    print()
    print(table(rows, args.fit_min))
    print(f"load average at the end: {[round(x, 2) for x in os.getloadavg()]}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rows, fh, indent=1)


if __name__ == "__main__":
    main()
