"""Energy+forces throughput of our ASE calculator against a MACE model of comparable size (mace-torch's ASE
calculator), bilayer graphene cells from ~100 to ~10,000 atoms, both measured in the same run.

mace-torch pins e3nn 0.4.4 while this package needs e3nn 0.6, so MACE runs in its own virtual environment outside
the repository (mace-torch is *not* a dependency of ase_wannierml). Create it once (torch first, from the CPU wheel,
so that pip does not pull a CUDA build)::

    python -m venv /work/venv-mace
    /work/venv-mace/bin/pip install torch==2.13.0
    /work/venv-mace/bin/pip install mace-torch

and point ``--mace-venv`` (or ``$MACE_VENV``) at it if it lives elsewhere. Then::

    python benchmarks/mace_comparison.py                       # sizes 100 … 10,000, float32 (+ float64 note)
    python benchmarks/mace_comparison.py --sizes 100 400 --repeats 3 --f64-sizes   # quick

What is compared. Ours: ``WannierMLCalculator(load_model("graphene-bilayer"))``, the shipped model (float32),
energy + forces (+ stress, which both calculators compute for a 3D cell); the Hamiltonian heads are not run for
E+F. MACE: an untrained ``ScaleShiftMACE`` (speed does not depend on the weights) built to match our force-field
backbone as closely as MACE allows: cut-off 5 Å, 8 Bessel functions, polynomial envelope p = 6, spherical harmonics
up to l = 2, 2 interactions, one hidden radial layer of 64, avg_num_neighbors 30, MACE's default readout
(16x0e) and body order (correlation 3). MACE needs the same channel count for every l, so our
"32x0e+16x1o+8x2e" has no exact twin: the default ``--mace-hidden`` runs "16x0e+16x1o+16x2e" (same l_max, 144
features vs our 120) and "32x0e+32x1o" (same 32 scalar channels, l_max 1). Parameter counts of both sides are
reported (ours: the force-field part, backbone + energy head, and the whole model with its Hamiltonian heads).

Protocol. Both sides read the *same* structures (AB bilayer graphene k × k supercells, 4k² atoms, rattled by
0.02 Å) from an extxyz file written by this script. Each (size, calculator, dtype) runs in a fresh subprocess
(ours in this Python, MACE in the venv's), interleaved size by size so that a change of machine load hits both;
per subprocess: a warm-up call on a small cell and one on the target cell (e3nn code generation, allocator), then
``--repeats`` timed steps (at most 3 when the warm-up call took > 20 s), each moving all atoms by ≤ 1e-3 Å (so no result is cached) and calling
``atoms.get_forces()`` (energy, forces and stress in one model call on both sides). Reported: median wall time per
step, throughput = atoms / median step time (atoms·steps/s), the ratio ours / MACE (of wall times, and of the
processes' CPU times, which a busy machine disturbs less), peak RSS. Both use the same
number of torch threads (``--threads``, default 1: on a shared machine one thread per process is the stable
choice; ``--threads 0`` takes torch's default, one per core). Precision: float32 for the
headline table (our shipped model is float32; MACE's ``default_dtype="float32"``); ``--f64-sizes`` adds a float64
run of both at a few sizes (like with like: MACE's usual float64 against ours cast to float64).

Writes ``benchmarks/results/mace_comparison.json`` (``--json``) with the machine, load averages and versions.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
DEFAULT_VENV = "/work/venv-mace"
SIZES = (100, 400, 1600, 3600, 10000)       # 4k² atoms: k = 5, 10, 20, 30, 50
F64_SIZES = (400, 1600)
MACE_HIDDEN = ("16x0e+16x1o+16x2e", "32x0e+32x1o")
SLOW_CALL_S = 20.0                          # a warm-up call slower than this: at most 3 timed steps
VENV_HELP = """create it with:
    python -m venv {venv}
    {venv}/bin/pip install torch==2.13.0      # the CPU wheel on this machine: install torch first
    {venv}/bin/pip install mace-torch
or point --mace-venv / $MACE_VENV at an existing one (see the docstring of benchmarks/mace_comparison.py)"""


class MissingVenvError(RuntimeError):
    """The MACE virtual environment (or mace-torch inside it) is missing."""


def mace_python(venv: str | os.PathLike) -> Path:
    """Python of the MACE venv; raises ``MissingVenvError`` (with the commands to create it) if it is missing."""
    venv = Path(venv)
    py = venv / "bin" / "python"
    if not py.exists():
        raise MissingVenvError(f"MACE virtual environment not found: {py} does not exist; "
                               + VENV_HELP.format(venv=venv))
    res = subprocess.run([str(py), "-c", "import mace, e3nn, torch; print(torch.__version__)"],
                         capture_output=True, text=True)
    if res.returncode != 0:
        raise MissingVenvError(f"mace-torch cannot be imported in {venv}: {res.stderr.strip()[-500:]}\n"
                               + VENV_HELP.format(venv=venv))
    return py


def supercell_k(n_target: int) -> int:
    """k of the k × k AB bilayer supercell (4k² atoms) closest to ``n_target``."""
    return max(1, int(round(np.sqrt(n_target / 4.0))))


def build_cells(sizes, path: Path) -> list[int]:
    """Write one AB bilayer graphene supercell per size to ``path`` (extxyz); returns the atom counts."""
    from ase.io import write

    from ase_wannierml.structures import bilayer

    cells = []
    for i, n in enumerate(sizes):
        a = bilayer("graphene", "AB").repeat((supercell_k(n), supercell_k(n), 1))
        a.rattle(0.02, seed=i)
        cells.append(a)
    write(path, cells, format="extxyz")
    return [len(a) for a in cells]


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


# ------------------------------------------------------------------------------------------------ workers
def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def time_calculator(atoms, calc, repeats: int, seed: int = 0) -> dict:
    """Warm-up on the target cell, then ``repeats`` timed E+F steps (positions moved each step)."""
    atoms.calc = calc
    rng = np.random.default_rng(seed)
    t0 = time.perf_counter()
    atoms.get_forces()
    first = time.perf_counter() - t0
    walls, cpus = [], []
    for _ in range(repeats if first < SLOW_CALL_S else min(repeats, 3)):
        atoms.positions += rng.uniform(-1e-3, 1e-3, size=atoms.positions.shape)
        t0, c0 = time.perf_counter(), time.process_time()
        f = atoms.get_forces()
        e = atoms.get_potential_energy()
        walls.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0)
        if not (np.isfinite(f).all() and np.isfinite(e)):
            raise RuntimeError("non-finite energy or forces")
    med = statistics.median(walls)
    return {"atoms": len(atoms), "first_call_s": first, "wall_s": walls, "cpu_s": cpus, "median_s": med,
            "throughput": len(atoms) / med, "peak_rss_mb": _peak_rss_mb()}


def worker_ours(xyz: str, index: int, dtype: str, repeats: int, threads: int) -> dict:
    import torch
    from ase.io import read

    from ase_wannierml import WannierMLCalculator, load_model

    if threads > 0:
        torch.set_num_threads(threads)
    model = load_model("graphene-bilayer")
    n_ff = sum(p.numel() for name, p in model.named_parameters() if not name.startswith("hamiltonian"))
    n_all = sum(p.numel() for p in model.parameters())
    calc = WannierMLCalculator(model, dtype=getattr(torch, dtype))
    small = read(xyz, index=0)
    small.calc = calc
    small.get_forces()
    atoms = read(xyz, index=index)
    res = time_calculator(atoms, calc, repeats)
    if calc.dispersion is not None:      # the analytic D3 term inside our E+F (MACE has none): timed alone
        walls = []
        for _ in range(min(3, len(res["wall_s"]))):
            t0 = time.perf_counter()
            calc.dispersion.compute(atoms)
            walls.append(time.perf_counter() - t0)
        res["dispersion_median_s"] = statistics.median(walls)
        res["throughput_without_dispersion"] = len(atoms) / max(res["median_s"] - res["dispersion_median_s"], 1e-9)
    res.update(calculator="ours", model="graphene-bilayer (shipped)", dtype=dtype, threads=torch.get_num_threads(),
               params_force_field=n_ff, params_total=n_all, torch=torch.__version__,
               config={k: getattr(model.config, k) for k in ("cutoff", "num_interactions", "hidden_irreps",
                                                             "sh_lmax", "num_radial", "radial_hidden")})
    return res


def build_mace(hidden: str, dtype: str, correlation: int = 3):
    """Untrained ScaleShiftMACE matched to our backbone (see the module docstring)."""
    import torch
    from e3nn import o3
    from mace import modules

    torch.set_default_dtype(getattr(torch, dtype))
    torch.manual_seed(0)
    model = modules.ScaleShiftMACE(
        r_max=5.0, num_bessel=8, num_polynomial_cutoff=6, max_ell=2,
        interaction_cls=modules.interaction_classes["RealAgnosticResidualInteractionBlock"],
        interaction_cls_first=modules.interaction_classes["RealAgnosticInteractionBlock"],
        num_interactions=2, num_elements=1, hidden_irreps=o3.Irreps(hidden), MLP_irreps=o3.Irreps("16x0e"),
        atomic_energies=np.array([-155.0]), avg_num_neighbors=30.0, atomic_numbers=[6], correlation=correlation,
        gate=torch.nn.functional.silu, radial_MLP=[64], atomic_inter_scale=1.0, atomic_inter_shift=0.0)
    return model


def worker_mace(xyz: str, index: int, dtype: str, repeats: int, threads: int, hidden: str) -> dict:
    import torch

    # e3nn 0.4.4 loads its own constants file with torch.load, which torch >= 2.6 refuses by default because of
    # one `slice` object in it: allow exactly that type (the file ships with e3nn).
    torch.serialization.add_safe_globals([slice])
    import mace
    from ase.io import read
    from mace.calculators import MACECalculator

    if threads > 0:
        torch.set_num_threads(threads)
    model = build_mace(hidden, dtype)
    n_params = sum(p.numel() for p in model.parameters())
    with tempfile.TemporaryDirectory() as tmp:   # through a model file, as a user of MACECalculator would
        path = Path(tmp) / "mace_untrained.model"
        torch.save(model, path)
        torch.serialization.add_safe_globals([type(model)])
        try:
            calc = MACECalculator(model_paths=str(path), device="cpu", default_dtype=dtype)
            via = "model_paths"
        except Exception:  # noqa: BLE001 - a torch that refuses the pickled module: hand over the object
            calc = MACECalculator(models=model, device="cpu", default_dtype=dtype)
            via = "models"
    small = read(xyz, index=0)
    small.calc = calc
    small.get_forces()
    res = time_calculator(read(xyz, index=index), calc, repeats)
    res.update(calculator="mace", model=f"ScaleShiftMACE untrained, hidden {hidden}, correlation 3", dtype=dtype,
               threads=torch.get_num_threads(), params_total=n_params, params_force_field=n_params,
               torch=torch.__version__, mace=getattr(mace, "__version__", "?"), loaded_via=via,
               config={"r_max": 5.0, "num_bessel": 8, "num_polynomial_cutoff": 6, "max_ell": 2,
                       "num_interactions": 2, "hidden_irreps": hidden, "correlation": 3, "radial_MLP": [64],
                       "MLP_irreps": "16x0e", "avg_num_neighbors": 30.0})
    try:
        import e3nn
        res["e3nn"] = e3nn.__version__
    except Exception:  # noqa: BLE001
        pass
    return res


# ------------------------------------------------------------------------------------------------ driver
def run_one(cmd: list[str], label: str, timeout: float) -> dict | None:
    env = dict(os.environ)
    env.setdefault("PYTHONWARNINGS", "ignore")
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
    lines = [ln for ln in res.stdout.strip().splitlines() if ln.startswith("{")]
    if res.returncode != 0 or not lines:
        print(f"{label}: failed (exit {res.returncode})\n{res.stderr[-2500:]}", file=sys.stderr)
        return None
    return json.loads(lines[-1])


def table(rows: list[dict], dtype: str) -> str:
    """Markdown table: per size, our throughput (and the time of its analytic D3 term, which MACE does not have)
    and each MACE model's, with ratios ours / MACE (wall time, and CPU time of the process, which a busy machine
    disturbs less)."""
    sel = [r for r in rows if r["dtype"] == dtype]
    hiddens = list(dict.fromkeys(r["config"]["hidden_irreps"] for r in sel if r["calculator"] == "mace"))
    head = ["atoms", "ours s/step", "ours atoms·steps/s", "of it D3 s/step"]
    for h in hiddens:
        head += [f"MACE {h} s/step", f"MACE {h} atoms·steps/s", f"ratio vs {h} (wall)", "(CPU)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for n in sorted({r["atoms"] for r in sel}):
        ours = next((r for r in sel if r["atoms"] == n and r["calculator"] == "ours"), None)
        cells = [f"{n:,}", f"{ours['median_s']:.3f}" if ours else "-", f"{ours['throughput']:,.0f}" if ours else "-",
                 f"{ours['dispersion_median_s']:.3f}" if ours and "dispersion_median_s" in ours else "-"]
        for h in hiddens:
            m = next((r for r in sel if r["atoms"] == n and r["calculator"] == "mace"
                      and r["config"]["hidden_irreps"] == h), None)
            if m and ours:
                cpu = statistics.median(m["cpu_s"]) / statistics.median(ours["cpu_s"])
                cells += [f"{m['median_s']:.3f}", f"{m['throughput']:,.0f}",
                          f"**{ours['throughput'] / m['throughput']:.2f}×**", f"{cpu:.2f}×"]
            elif m:
                cells += [f"{m['median_s']:.3f}", f"{m['throughput']:,.0f}", "-", "-"]
            else:
                cells += ["-", "-", "-", "-"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", default=list(SIZES), help="target atom counts")
    p.add_argument("--f64-sizes", type=int, nargs="*", default=list(F64_SIZES),
                   help="sizes also run in float64 on both sides (none: skip)")
    p.add_argument("--mace-hidden", nargs="+", default=list(MACE_HIDDEN), help="MACE hidden irreps to run")
    p.add_argument("--mace-venv", default=os.environ.get("MACE_VENV", DEFAULT_VENV))
    p.add_argument("--repeats", type=int, default=5, help="timed steps per (size, calculator)")
    p.add_argument("--threads", type=int, default=1, help="torch threads on both sides (0: torch default)")
    p.add_argument("--timeout", type=float, default=3600.0, help="seconds per subprocess")
    p.add_argument("--json", default=str(RESULTS / "mace_comparison.json"), help="output file ('' for none)")
    p.add_argument("--load", help="only print the tables of a JSON file written earlier")
    p.add_argument("--worker", choices=("ours", "mace"), help=argparse.SUPPRESS)
    p.add_argument("--xyz", help=argparse.SUPPRESS)
    p.add_argument("--index", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--dtype", default="float32", choices=("float32", "float64"), help=argparse.SUPPRESS)
    p.add_argument("--hidden", default=MACE_HIDDEN[0], help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    if args.worker == "ours":
        print(json.dumps(worker_ours(args.xyz, args.index, args.dtype, args.repeats, args.threads)))
        return 0
    if args.worker == "mace":
        print(json.dumps(worker_mace(args.xyz, args.index, args.dtype, args.repeats, args.threads, args.hidden)))
        return 0
    if args.load:
        data = json.loads(Path(args.load).read_text())
        for dtype in ("float32", "float64"):
            if any(r["dtype"] == dtype for r in data["rows"]):
                print(f"\n{dtype}:\n" + table(data["rows"], dtype))
        return 0

    try:
        mace_py = mace_python(args.mace_venv)
    except MissingVenvError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    load_before = load_average()
    rows: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        xyz = Path(tmp) / "cells.extxyz"
        sizes = [20] + list(dict.fromkeys(args.sizes + list(args.f64_sizes or [])))   # index 0: warm-up cell
        counts = build_cells(sizes, xyz)
        plan = [(i, "float32") for i in range(1, len(sizes)) if sizes[i] in args.sizes]
        plan += [(i, "float64") for i in range(1, len(sizes)) if sizes[i] in (args.f64_sizes or [])]
        for index, dtype in plan:
            common = ["--xyz", str(xyz), "--index", str(index), "--dtype", dtype, "--repeats", str(args.repeats),
                      "--threads", str(args.threads)]
            jobs = [("ours", [sys.executable, __file__, "--worker", "ours"] + common)]
            jobs += [(f"mace {h}", [str(mace_py), __file__, "--worker", "mace", "--hidden", h] + common)
                     for h in args.mace_hidden]
            for label, cmd in jobs:
                la = load_average()
                r = run_one(cmd, f"{label} N={counts[index]} {dtype}", args.timeout)
                if r is None:
                    continue
                r["load_average_before"] = la
                rows.append(r)
                print(f"{dtype} N={r['atoms']:6d} {label:24s} median {r['median_s']:8.3f} s/step  "
                      f"{r['throughput']:10.0f} atoms·steps/s  params {r['params_force_field']:6d}  "
                      f"load {la[0]:.2f}", flush=True)
    out = {
        "benchmark": "mace_comparison",
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "processor": platform.machine(),
                    "python": platform.python_version()},
        "load_average_start": load_before, "load_average_end": load_average(),
        "repeats": args.repeats, "threads_requested": args.threads,
        "structures": "AB bilayer graphene k x k supercells (structures.bilayer), rattled 0.02 Å",
        "rows": rows,
    }
    for dtype in ("float32", "float64"):
        if any(r["dtype"] == dtype for r in rows):
            print(f"\n{dtype} (throughput in atoms·steps/s; ratio = ours / MACE):\n" + table(rows, dtype))
    ours = next((r for r in rows if r["calculator"] == "ours"), None)
    if ours:
        print(f"\nparameters: ours {ours['params_force_field']:,} (force field: backbone + energy head), "
              f"{ours['params_total']:,} with the Hamiltonian heads; MACE " + ", ".join(
                  f"{r['config']['hidden_irreps']}: {r['params_total']:,}" for r in
                  {r['config']['hidden_irreps']: r for r in rows if r['calculator'] == 'mace'}.values()))
    print(f"load average: start {load_before}, end {out['load_average_end']}")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(out, indent=1))
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
