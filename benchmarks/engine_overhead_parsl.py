"""Benchmark (comparison for docs/dft.md): Parsl's HighThroughputExecutor overheads, measured like
``engine_overhead.py`` measures Dask (start to first result with 2 local workers, 200 no-op tasks, cleanup).

Parsl is not a dependency; run it in a separate virtual environment:

    python -m venv /tmp/parslenv && /tmp/parslenv/bin/pip install parsl
    PATH=/tmp/parslenv/bin:$PATH /tmp/parslenv/bin/python benchmarks/engine_overhead_parsl.py

Prints a table and writes benchmarks/results/engine_overhead_parsl.json.
"""
import os
import sys
import time

t0 = time.perf_counter()
import parsl  # noqa: E402
from parsl import python_app  # noqa: E402
from parsl.config import Config  # noqa: E402
from parsl.executors import HighThroughputExecutor  # noqa: E402
from parsl.providers import LocalProvider  # noqa: E402
from engine_overhead import report  # noqa: E402  (benchmarks/ is sys.path[0] when run as a script)

IMPORT_S = time.perf_counter() - t0


@python_app
def noop(x):
    return x


def main() -> int:
    out = {"parsl": parsl.__version__, "import_s": IMPORT_S, "load_average_start": os.getloadavg()}
    t = time.perf_counter()
    cfg = Config(executors=[HighThroughputExecutor(max_workers_per_node=2,
                                                   provider=LocalProvider(init_blocks=1, max_blocks=1))],
                 run_dir="/tmp/parsl_runinfo")
    dfk = parsl.load(cfg)
    noop(0).result()
    out["load_to_first_result_s"] = time.perf_counter() - t
    [f.result() for f in [noop(i) for i in range(200)]]          # warm-up
    t = time.perf_counter()
    [f.result() for f in [noop(i) for i in range(200)]]
    out["noop_200_tasks_s"] = time.perf_counter() - t
    out["per_task_ms"] = 1e3 * out["noop_200_tasks_s"] / 200
    t = time.perf_counter()
    dfk.cleanup()
    out["cleanup_s"] = time.perf_counter() - t
    report(out, "engine_overhead_parsl.json")   # same table/JSON writer as the Dask benchmark
    return 0


if __name__ == "__main__":
    sys.exit(main())
