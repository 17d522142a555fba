"""Off-mesh accuracy of the workflow's Wannier frames against DFT, and the per-stage cost record behind the
settings-vs-cost table (docs/wannier90.md, benchmarks/wannier_offmesh_accuracy.py)."""
from __future__ import annotations

import sys
from pathlib import Path

from ase_wannierml.dft import codes


def test_runner_records_cpu_time_of_the_step(tmp_path):
    """CPU seconds of a step (children's rusage) are recorded beside its wall time; a sleeping step costs ~no CPU,
    a busy one about its wall time."""
    r = codes.Runner(nprocs=1, npools=1)
    r.run("busy", [sys.executable, "-c", "import time\nt=time.process_time()\nwhile time.process_time()-t<0.6: pass"],
          tmp_path, mpi=False)
    r.run("idle", [sys.executable, "-c", "import time; time.sleep(0.6)"], tmp_path, mpi=False)
    assert r.cpu_timings["busy"] >= 0.55 and r.timings["busy"] >= 0.55
    assert r.cpu_timings["idle"] < 0.3 <= r.timings["idle"]
