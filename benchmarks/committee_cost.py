"""Cost of committee inference: one committee call vs one model vs K separate single-model calls.

    OMP_NUM_THREADS=1 flock /work/main/scratch/cpu.lock python benchmarks/committee_cost.py [--repeats 5]

For each cell: wall time (median of ``--repeats``) of energy + forces (+ stress) through ``WannierMLCalculator``
with (a) the shipped single model, (b) the shipped committee (one graph, shared edge geometry and shared backbone
stages, K backward passes) and (c) K separate calculators, one per member; and of the Hamiltonian
(``predict_tightbinding`` of one model, ``predict_tightbinding_members`` of the committee, K separate
``predict_tightbinding`` calls). Each repeat moves the atoms (new graph). Prints a table; JSON in
benchmarks/results/committee_cost.json.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from ase_wannierml import WannierMLCalculator
from ase_wannierml.model import load_model
from ase_wannierml.structures import bilayer, twisted_bilayer

OUT = Path(__file__).resolve().parent / "results" / "committee_cost.json"


def timed(fn, atoms, repeats: int) -> float:
    times = []
    for k in range(repeats + 1):                       # first call warms up (e3nn codegen, caches)
        a = atoms.copy()
        a.rattle(0.01, seed=k)
        t0 = time.perf_counter()
        fn(a)
        if k:
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def forces_with(model):
    def run(a):
        a.calc = WannierMLCalculator(model)
        a.get_forces()
    return run


def forces_separately(members):
    def run(a):
        for m in members:
            b = a.copy()
            b.calc = WannierMLCalculator(m)
            b.get_forces()
    return run


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--no-hamiltonian", action="store_true")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    cells = [("graphene-bilayer", "AB 2x2", bilayer("graphene").repeat((2, 2, 1))),
             ("graphene-bilayer", "AB 6x6", bilayer("graphene").repeat((6, 6, 1))),
             ("graphene-bilayer", "twist 6.01° (m=5)", twisted_bilayer("graphene", m=5, r=1)),
             ("mos2-bilayer", "2H 2x2", bilayer("mos2").repeat((2, 2, 1))),
             ("mos2-bilayer", "2H 4x4", bilayer("mos2").repeat((4, 4, 1)))]
    rows = []
    loaded = {}
    for name, label, atoms in cells:
        if name not in loaded:
            loaded[name] = (load_model(name), load_model(name, committee=True))
        single, committee = loaded[name]
        members = list(committee.members)
        k = len(members)
        row = {"model": name, "cell": label, "n_atoms": len(atoms), "K": k,
               "shared_backbone_stages": committee.shared_depth()}
        row["forces_single_s"] = timed(forces_with(single), atoms, args.repeats)
        row["forces_committee_s"] = timed(forces_with(committee), atoms, args.repeats)
        row["forces_separate_s"] = timed(forces_separately(members), atoms, args.repeats)
        if not args.no_hamiltonian:
            row["ham_single_s"] = timed(lambda a: single.predict_tightbinding(a), atoms, max(2, args.repeats // 2))
            row["ham_committee_s"] = timed(lambda a: committee.predict_tightbinding_members(a), atoms,
                                           max(2, args.repeats // 2))
            row["ham_separate_s"] = timed(lambda a: [m.predict_tightbinding(a) for m in members], atoms,
                                          max(2, args.repeats // 2))
        rows.append(row)
        print(json.dumps(row), flush=True)
    print(f"\n{'model':17s} {'cell':18s} {'atoms':>5s} {'K':>2s} | {'E+F 1 model':>11s} {'committee':>9s} "
          f"{'K separate':>10s} {'ratio/1':>7s} {'ratio/K sep':>11s} | {'H ratio/1':>9s} {'H ratio/K sep':>13s}")
    for r in rows:
        h1 = r.get("ham_committee_s", np.nan) / r.get("ham_single_s", np.nan)
        hk = r.get("ham_committee_s", np.nan) / r.get("ham_separate_s", np.nan)
        print(f"{r['model']:17s} {r['cell']:18s} {r['n_atoms']:5d} {r['K']:2d} | {r['forces_single_s']:10.3f}s "
              f"{r['forces_committee_s']:8.3f}s {r['forces_separate_s']:9.3f}s "
              f"{r['forces_committee_s'] / r['forces_single_s']:7.2f} "
              f"{r['forces_committee_s'] / r['forces_separate_s']:11.2f} | {h1:9.2f} {hk:13.2f}")
    OUT.parent.mkdir(exist_ok=True)
    OUT.write_text(json.dumps({"rows": rows, "repeats": args.repeats, "threads": torch.get_num_threads()}, indent=1))
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
