"""Locate the external first-principles codes and run them.

Quantum ESPRESSO (``pw.x``, ``pw2wannier90.x``) and Wannier90 (``wannier90.x``) are Debian packages here;
MPI runs use OpenMPI's ``mpirun`` (``--allow-run-as-root`` when running as root) with k-point pools.
"""
from __future__ import annotations

import os
import re
import resource
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

APT_HINT = "apt-get install -y quantum-espresso quantum-espresso-data wannier90 openmpi-bin"
REQUIRED = ("pw.x", "pw2wannier90.x", "wannier90.x", "mpirun")


def check_codes(required: tuple[str, ...] = REQUIRED) -> dict[str, str]:
    """Return ``{name: absolute path}`` of the DFT/Wannier codes.

    Raises
    ------
    RuntimeError
        Naming every missing executable and the apt-get line that installs them.
    """
    found = {name: shutil.which(name) for name in required}
    missing = [name for name, path in found.items() if path is None]
    if missing:
        raise RuntimeError(
            f"DFT workflow needs {', '.join(missing)} on PATH but they were not found; install with: {APT_HINT}"
        )
    return {name: str(path) for name, path in found.items()}


def code_versions() -> dict[str, str]:
    """Versions of QE, Wannier90 and OpenMPI from the Debian package database (fast, no code run)."""
    versions: dict[str, str] = {}
    for pkg in ("quantum-espresso", "wannier90", "openmpi-bin", "quantum-espresso-data"):
        try:
            out = subprocess.run(["dpkg-query", "-W", "-f=${Version}", pkg], capture_output=True, text=True,
                                 timeout=20)
            versions[pkg] = out.stdout.strip() or "unknown"
        except (OSError, subprocess.SubprocessError):
            versions[pkg] = "unknown"
    return versions


def wannier90_supports_projectability_window() -> bool:
    """True if this ``wannier90.x`` knows ``dis_froz_proj`` (projectability-disentangled frozen window, W90 >= 4)."""
    exe = shutil.which("wannier90.x")
    if exe is None:
        return False
    data = Path(exe).read_bytes()
    return b"dis_froz_proj" in data or b"dis_proj_min" in data


# process groups of the codes running in this process (a Dask worker may run one frame per thread)
RUNNING_GROUPS: set[int] = set()


def terminate_running_groups(sig: int = signal.SIGTERM) -> int:
    """Send ``sig`` to every code process group started by :func:`_run_group` in this process and still running
    (engine shutdown: no orphaned mpirun/pw.x when a Dask worker is closed).  Returns how many were signalled."""
    n = 0
    for pgid in list(RUNNING_GROUPS):
        try:
            os.killpg(pgid, sig)
            n += 1
        except ProcessLookupError:
            RUNNING_GROUPS.discard(pgid)
    return n


def unwind_on_sigterm() -> None:
    """Make SIGTERM raise ``SystemExit(143)`` in the main thread, so a running code's process group is terminated
    on the way out (``_run_group``) instead of an orphaned mpirun/pw.x computing on with no driver."""
    def _handler(signum, frame):  # noqa: ARG001
        raise SystemExit(143)

    signal.signal(signal.SIGTERM, _handler)


def _run_group(cmd: list[str], cwd: Path, out, err, stdin, env: dict[str, str], timeout: float) -> int:
    """Run ``cmd`` in its own process group; on timeout or any interruption (SIGTERM -> SystemExit, Ctrl-C)
    terminate the whole group (mpirun forwards SIGTERM to its ranks), so no orphaned pw.x keeps running."""
    proc = subprocess.Popen(cmd, cwd=cwd, stdout=out, stderr=err, stdin=stdin, env=env, start_new_session=True)
    RUNNING_GROUPS.add(proc.pid)
    try:
        return proc.wait(timeout=timeout)
    except BaseException:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                proc.wait(timeout=15)
                break
            except subprocess.TimeoutExpired:
                continue
        raise
    finally:
        RUNNING_GROUPS.discard(proc.pid)


@dataclass
class Runner:
    """Runs code steps in a work directory, with MPI and k-point pools, recording wall times (s).

    ``nprocs`` MPI ranks; ``npools`` k-point pools for ``pw.x`` (``-nk``); ``pw2wannier90.x`` runs without
    pools (it does not support them in QE 6.7).
    """

    nprocs: int = 2
    npools: int = 2
    timeout: float = 4 * 3600.0
    timings: dict[str, float] = field(default_factory=dict)
    # CPU seconds (user + system) of each step summed over its processes (mpirun and all ranks), from the
    # children's rusage; exact when one frame runs per process (the engine's workers run one task at a time)
    cpu_timings: dict[str, float] = field(default_factory=dict)

    def _mpi(self) -> list[str]:
        if self.nprocs <= 1:
            return []
        cmd = ["mpirun", "-np", str(self.nprocs)]
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            cmd.insert(1, "--allow-run-as-root")
        return cmd

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["OMP_NUM_THREADS"] = "1"
        # Containers often forbid the cross-memory-attach single-copy path of OpenMPI's vader transport.
        env.setdefault("OMPI_MCA_btl_vader_single_copy_mechanism", "none")
        return env

    def run(self, step: str, argv: list[str], workdir: Path, stdin_file: str | None = None,
            stdout_file: str | None = None, mpi: bool = True) -> float:
        """Run one step; raises ``RuntimeError`` with the tail of its output if it fails. Returns seconds."""
        cmd = (self._mpi() if mpi else []) + argv
        t0 = time.perf_counter()
        ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        out_path = workdir / (stdout_file or f"{step}.out")
        with open(out_path, "w") as out, open(workdir / f"{step}.err", "w") as err:
            stdin = open(workdir / stdin_file) if stdin_file else subprocess.DEVNULL
            try:
                returncode = _run_group(cmd, workdir, out, err, stdin, self.env(), self.timeout)
            finally:
                if stdin_file:
                    stdin.close()
        dt = time.perf_counter() - t0
        self.timings[step] = round(dt, 2)
        ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        self.cpu_timings[step] = round((ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime), 2)
        if returncode != 0:
            tail = "".join(out_path.read_text(errors="replace").splitlines(True)[-15:])
            errtail = (workdir / f"{step}.err").read_text(errors="replace")[-1500:]
            raise RuntimeError(f"step {step!r} ({' '.join(cmd)}) failed with exit code {returncode} in "
                               f"{workdir}:\n{tail}\n{errtail}")
        return dt

    def pw(self, step: str, input_file: str, workdir: Path) -> float:
        argv = ["pw.x"] + (["-nk", str(self.npools)] if self.npools > 1 else []) + ["-in", input_file]
        dt = self.run(step, argv, workdir)
        text = (workdir / f"{step}.out").read_text(errors="replace")
        if "JOB DONE" not in text:
            raise RuntimeError(f"pw.x step {step!r} in {workdir} did not finish (no 'JOB DONE')")
        if re.search(r"convergence NOT achieved", text):
            raise RuntimeError(f"pw.x step {step!r} in {workdir}: SCF convergence NOT achieved")
        return dt
