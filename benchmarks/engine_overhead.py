"""Benchmark: what the Dask engine costs (dft/engine.py, tb/distributed.py) next to the work it carries.

Measured in one run on this machine (load average recorded, the machine is shared):

* start + close of the embedded ``LocalCluster`` (2 worker processes, 1 thread each), as ``wannierml dft`` does;
* round trip of 200 no-op tasks submitted at once (per-task scheduling overhead);
* the engine loop itself (``engine.run_tasks`` with retries bookkeeping) on 50 no-op tasks;
* k-point eigenvalues of a 512-orbital graphene supercell (64 k-points, dense): serial vs the 2-worker cluster
  (``TightBinding.eigenvalues(..., executor=client)``), and the max |difference|;

    python benchmarks/engine_overhead.py      # about a minute; prints a table, writes benchmarks/results/engine_overhead.json
"""
from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import json  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
from ase_wannierml.cli import atomic_write_text

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))


def noop(x: int) -> dict:
    return {"status": "ok", "reason": "", "x": x}


def main() -> int:
    import distributed
    from distributed import Client, LocalCluster

    from ase_wannierml.dft.engine import Task, run_tasks
    from conftest import graphene_atoms, neighbour_model

    out: dict = {"load_average_start": os.getloadavg(), "distributed": distributed.__version__,
                 "cpus": os.cpu_count()}
    t0 = time.perf_counter()
    cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0")
    client = Client(cluster)
    client.wait_for_workers(2)
    out["cluster_start_s"] = time.perf_counter() - t0

    futures = client.map(noop, range(200), pure=False)          # warm-up
    client.gather(futures)
    t = time.perf_counter()
    client.gather(client.map(noop, range(200), pure=False))
    out["noop_200_tasks_s"] = time.perf_counter() - t
    out["per_task_ms"] = 1e3 * out["noop_200_tasks_s"] / 200

    t = time.perf_counter()
    s = run_tasks([Task(f"t{i}", noop, (i,)) for i in range(50)], client, progress=None)
    out["engine_loop_50_tasks_s"] = time.perf_counter() - t
    assert len(s.ok) == 50

    atoms = graphene_atoms().repeat((16, 16, 1))
    atoms.rattle(0.02, seed=1)
    tb = neighbour_model(atoms, -2.7, 0.3, 1.75)
    k = np.random.default_rng(0).uniform(-0.5, 0.5, (64, 3))
    k[:, 2] = 0
    t = time.perf_counter()
    e_serial = tb.eigenvalues(k)
    out["bands_serial_s"] = time.perf_counter() - t
    t = time.perf_counter()
    e_dist = tb.eigenvalues(k, executor=client)
    out["bands_2workers_s"] = time.perf_counter() - t
    out["bands_max_abs_diff_eV"] = float(np.max(np.abs(e_dist - e_serial)))
    out["bands_norb"], out["bands_nk"] = tb.norb, len(k)

    t = time.perf_counter()
    client.close()
    cluster.close()
    out["cluster_close_s"] = time.perf_counter() - t
    report(out, "engine_overhead.json")
    return 0


def report(out: dict, name: str) -> None:
    """Add the end load average, print ``out`` as a table and write it to benchmarks/results/``name``."""
    out["load_average_end"] = os.getloadavg()
    print(f"{'quantity':40s} value")
    for key, val in out.items():
        print(f"{key:40s} {val if not isinstance(val, float) else f'{val:.4g}'}")
    res = Path(__file__).resolve().parent / "results" / name
    res.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(res, json.dumps(out, indent=1))


if __name__ == "__main__":
    sys.exit(main())
