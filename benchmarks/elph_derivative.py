"""Cost of dH/dλ by autograd against the model's own H and against finite differences.

    flock scratch/cpu.lock python benchmarks/elph_derivative.py      # table + benchmarks/results/elph_derivative.json

For AB bilayer graphene supercells (shipped model, float32 as shipped, 1 thread) and one random displacement
pattern: wall time (median of ``--repeat``) of the H blocks alone (``hamiltonian_blocks`` under no_grad, the
baseline), of one forward-mode JVP (H and dH/dλ together), and of a central finite difference (2 H evaluations);
for the smallest cell also all 3N single-atom patterns by the batched double-backward path vs 3N JVPs. Also the
largest deviation of the JVP from the finite difference (float64 copy of the model, step 1e-4 Å, relative).
"""
from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

RESULT = Path(__file__).resolve().parent / "results" / "elph_derivative.json"


def median_time(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[2, 6, 12], help="n for n×n AB bilayer supercells")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)

    from ase_wannierml.model import atoms_to_graph, load_model
    from ase_wannierml.model.derivative import hamiltonian_blocks, hamiltonian_jvp, hamiltonian_jvp_batched
    from ase_wannierml.structures import bilayer

    model = load_model("graphene-bilayer").eval()
    model64 = load_model("graphene-bilayer").double().eval()
    rows = []
    for n in args.sizes:
        atoms = bilayer("graphene") * (n, n, 1)
        atoms.rattle(0.01, seed=n)
        graph = atoms_to_graph(atoms, model.config, dtype=model.dtype)
        u = torch.as_tensor(np.random.default_rng(n).normal(size=(len(atoms), 3)), dtype=model.dtype)
        pos = graph["positions"]

        def h_only():
            with torch.no_grad():
                hamiltonian_blocks(model, graph, pos)

        def fd():
            with torch.no_grad():
                hamiltonian_blocks(model, graph, pos + 1e-3 * u)
                hamiltonian_blocks(model, graph, pos - 1e-3 * u)

        h_only(), hamiltonian_jvp(model, graph, u)  # warm-up (first calls build e3nn/torch kernels)
        t_h = median_time(h_only, args.repeat)
        t_jvp = median_time(lambda: hamiltonian_jvp(model, graph, u), args.repeat)
        t_fd = median_time(fd, args.repeat)
        g64 = atoms_to_graph(atoms, model64.config, dtype=torch.float64)
        u64 = u.double()
        _, d = hamiltonian_jvp(model64, g64, u64)
        with torch.no_grad():
            h = 1e-4
            fdv = (hamiltonian_blocks(model64, g64, g64["positions"] + h * u64)
                   - hamiltonian_blocks(model64, g64, g64["positions"] - h * u64)) / (2 * h)
        row = {"n_atoms": len(atoms), "n_pairs": int(graph["ham_pair_index"].shape[1]), "H_s": round(t_h, 4),
               "jvp_s": round(t_jvp, 4), "fd_2H_s": round(t_fd, 4), "jvp_over_H": round(t_jvp / t_h, 2),
               "jvp_vs_fd_rel_dev_float64": float((fdv - d).abs().max() / d.abs().max())}
        if n == args.sizes[0]:
            single = torch.zeros((3 * len(atoms), len(atoms), 3), dtype=model.dtype)
            single[torch.arange(3 * len(atoms)), torch.arange(len(atoms)).repeat_interleave(3),
                   torch.arange(3).repeat(len(atoms))] = 1.0
            row["all_3N_patterns"] = 3 * len(atoms)
            row["batched_3N_s"] = round(median_time(lambda: hamiltonian_jvp_batched(model, graph, single), 1), 3)
            row["loop_3N_jvp_s"] = round(median_time(lambda: [hamiltonian_jvp(model, graph, s) for s in single], 1), 3)
        rows.append(row)
        print(row, flush=True)
    print(f"\n{'atoms':>6s} {'pairs':>9s} {'H (s)':>8s} {'JVP (s)':>8s} {'JVP/H':>6s} {'FD 2H (s)':>9s} {'dev':>8s}")
    for r in rows:
        print(f"{r['n_atoms']:6d} {r['n_pairs']:9d} {r['H_s']:8.3f} {r['jvp_s']:8.3f} {r['jvp_over_H']:6.2f} "
              f"{r['fd_2H_s']:9.3f} {r['jvp_vs_fd_rel_dev_float64']:8.1e}")
    r0 = rows[0]
    print(f"all {r0['all_3N_patterns']} single-atom patterns ({r0['n_atoms']} atoms): batched {r0['batched_3N_s']} s, "
          f"loop of JVPs {r0['loop_3N_jvp_s']} s")
    RESULT.parent.mkdir(exist_ok=True)
    tmp = RESULT.with_suffix(".tmp")
    tmp.write_text(json.dumps({"rows": rows, "torch_threads": 1, "dtype": str(model.dtype),
                               "load_note": "shared 2-core machine; medians of --repeat runs"}, indent=1))
    os.replace(tmp, RESULT)
    print(f"wrote {RESULT}")


if __name__ == "__main__":
    main()
