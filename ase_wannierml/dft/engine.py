"""Run many DFT frames as tasks on Dask distributed: an embedded local cluster by default, a running scheduler or a
dask-jobqueue cluster (Slurm, PBS, ...) on HPC.

One task = one frame (the QE/Wannier90 codes of that frame run under ``mpirun -np ranks_per_task`` inside the
task).  ``EngineSettings.workers`` tasks run at once on the local cluster (one worker process per task,
``threads_per_worker=1``); on a jobqueue cluster ``tasks_per_node`` worker processes share each node.  The client
loop (:func:`run_tasks`) resubmits a task whose frame failed with an error (or whose worker died) up to
``retries`` times, prints one progress line per finished task and returns a summary.  Resumability is the
caller's: it skips tasks whose frame directory exists before submitting (frames are written atomically).

Engine choice (measured and argued in docs/dft.md): Dask distributed because its ``Client`` is also what the
tight-binding code takes for k-point tasks (``TightBinding.eigenvalues(..., executor=client)``), it embeds as a
``LocalCluster`` with no configuration or files, and ``dask-jobqueue`` gives Slurm/PBS/SGE/LSF clusters from a
YAML section; tasks of hours with ``mpirun`` inside are ordinary tasks for it.
"""
from __future__ import annotations

import contextlib
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import yaml


def log(msg: str) -> None:
    """Progress line with a timestamp (stdout, flushed)."""
    print(f"[{time.strftime('%Y-%m-%d %H:%M:%S')}] {msg}", flush=True)


@dataclass
class EngineSettings:
    """Where and how frames run.

    workers: tasks at once on the embedded local cluster (worker processes, one thread each).
    ranks_per_task: MPI ranks of the codes inside one task (``mpirun -np``; 1 = no mpirun).
    pools: ``pw.x -nk`` k-point pools (None: ``ranks_per_task``).
    retries: resubmissions of a task that failed (error inside the codes, or its worker died).
    scheduler: address of a running Dask scheduler (``tcp://host:8786``) or the path of its scheduler file.
    cluster: path of a YAML file describing a dask-jobqueue cluster (see docs/dft.md), used when no scheduler.
    tasks_per_node: worker processes per batch job of a jobqueue cluster (overrides the file's ``processes``).
    jobs: batch jobs to start on a jobqueue cluster (None: enough for all tasks, ``ceil(tasks / tasks_per_node)``).
    max_failures: stop submitting (and cancel what is queued) after this many tasks failed for good (None: never).
    """

    workers: int = 1
    ranks_per_task: int = 2
    pools: int | None = None
    retries: int = 2
    scheduler: str | None = None
    cluster: str | None = None
    tasks_per_node: int | None = None
    jobs: int | None = None
    max_failures: int | None = None

    def __post_init__(self) -> None:
        for name in ("workers", "ranks_per_task"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"EngineSettings.{name} must be >= 1, got {getattr(self, name)}")
        if self.retries < 0:
            raise ValueError(f"EngineSettings.retries must be >= 0, got {self.retries}")
        if self.pools is not None and (self.pools < 1 or self.ranks_per_task % self.pools):
            raise ValueError(f"pools={self.pools} must divide ranks_per_task={self.ranks_per_task}")

    def runner(self):
        """The ``Runner`` each task uses (MPI ranks and pools)."""
        from .codes import Runner

        return Runner(nprocs=self.ranks_per_task, npools=self.pools or self.ranks_per_task)

    def to_dict(self) -> dict:
        return asdict(self)


def load_cluster_config(path: str | Path) -> dict:
    """Read a jobqueue cluster file: YAML with ``type`` (slurm, pbs, sge, lsf, htcondor, moab, oar) and the keyword
    arguments of that dask-jobqueue class (``cores``, ``memory``, ``processes``, ``queue``, ``account``,
    ``walltime``, ``job_script_prologue``, ``job_extra_directives``, ...)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"cluster configuration {path} does not exist")
    cfg = yaml.safe_load(path.read_text()) or {}
    if not isinstance(cfg, dict) or "type" not in cfg:
        raise ValueError(f"{path}: a cluster file needs 'type: slurm' (or pbs, sge, lsf, htcondor, moab, oar) "
                         "and the dask-jobqueue keyword arguments of that cluster")
    return cfg


def make_jobqueue_cluster(cfg: dict, tasks_per_node: int | None = None):
    """A dask-jobqueue cluster object from :func:`load_cluster_config`'s dict (nothing is submitted yet)."""
    import dask_jobqueue

    cfg = dict(cfg)
    kind = str(cfg.pop("type")).lower()
    classes = {"slurm": "SLURMCluster", "pbs": "PBSCluster", "sge": "SGECluster", "lsf": "LSFCluster",
               "htcondor": "HTCondorCluster", "moab": "MoabCluster", "oar": "OARCluster"}
    if kind not in classes:
        raise ValueError(f"unknown cluster type {kind!r}; known: {sorted(classes)}")
    if tasks_per_node is not None:
        cfg["processes"] = int(tasks_per_node)
    return getattr(dask_jobqueue, classes[kind])(**cfg)


@contextlib.contextmanager
def open_client(settings: EngineSettings, client: Any = None, n_tasks: int | None = None) -> Iterator[Any]:
    """A Dask ``Client``: ``client`` as given (not closed), else one connected to ``settings.scheduler``, else a
    jobqueue cluster from ``settings.cluster`` (jobs submitted here, cancelled on exit), else an embedded
    ``LocalCluster`` of ``settings.workers`` processes with one thread each (closed on exit)."""
    if client is not None:
        yield client
        return
    from distributed import Client, LocalCluster

    if settings.scheduler:
        sched = settings.scheduler
        kwargs = {"scheduler_file": sched} if os.path.isfile(sched) else {"address": sched}
        with Client(**kwargs) as c:
            yield c
        return
    if settings.cluster:
        cfg = load_cluster_config(settings.cluster)
        per_node = max(1, int(settings.tasks_per_node or cfg.get("processes") or 1))
        cluster = make_jobqueue_cluster(cfg, settings.tasks_per_node)
        jobs = settings.jobs or max(1, -(-(n_tasks or 1) // per_node))
        cluster.scale(jobs=jobs)
    else:
        # Worker memory limits count only the worker process (the codes are subprocesses): no limit, no pausing.
        cluster = LocalCluster(n_workers=settings.workers, threads_per_worker=1, processes=True,
                               memory_limit=0, dashboard_address=":0")
    try:
        with Client(cluster) as c:
            with _terminate_codes_on_error(c):
                yield c
    finally:
        cluster.close()


@contextlib.contextmanager
def _terminate_codes_on_error(client: Any) -> Iterator[None]:
    """On an exception (Ctrl-C, SIGTERM → SystemExit, a crash of the driver) terminate the QE/Wannier90 process
    groups the workers started before the cluster closes: closing a worker does not stop its subprocesses."""
    try:
        yield
    except BaseException:
        try:
            from .codes import terminate_running_groups

            n = client.run(terminate_running_groups, wait=True)
            log(f"interrupted: terminated {sum(n.values())} running code process groups on the workers")
        except Exception:                                  # noqa: BLE001 - best effort while unwinding
            pass
        raise


def executing_keys(client: Any) -> set[str]:
    """Keys of the tasks that are running right now on the client's workers."""
    def _executing(dask_worker) -> list[str]:
        return [str(ts.key) for ts in dask_worker.state.executing]

    try:
        return {k for keys in client.run(_executing).values() for k in keys}
    except Exception:                                      # noqa: BLE001 - unknown: treat all as running
        return set()


@dataclass
class Task:
    """One unit of work: ``fn(*args)`` must return a dict with at least ``status`` ("ok", "rejected" or "error")
    and ``reason``; "error" (or an exception, or a dead worker) counts as a failure and is retried."""

    key: str
    fn: Callable[..., dict]
    args: tuple = ()
    label: str = ""


@dataclass
class Summary:
    """What a run did: frame ids by outcome; ``failed`` maps id → last error; ``attempts`` id → tries used."""

    ok: list[str] = field(default_factory=list)
    rejected: dict[str, str] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)
    cancelled: list[str] = field(default_factory=list)
    attempts: dict[str, int] = field(default_factory=dict)
    wall_s: float = 0.0
    results: dict[str, dict] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)

    def line(self) -> str:
        return (f"{len(self.ok)} ok, {len(self.rejected)} rejected (quality), {len(self.failed)} failed, "
                f"{len(self.skipped)} skipped (done before), {len(self.cancelled)} cancelled; "
                f"{self.wall_s:.0f} s")


def _outcome(result: Any) -> tuple[str, str]:
    if not isinstance(result, dict) or "status" not in result:
        return "error", f"task returned {type(result).__name__}, not a dict with 'status'"
    return str(result["status"]), str(result.get("reason", ""))


def run_tasks(tasks: Sequence[Task], client: Any, retries: int = 2, max_failures: int | None = None,
              summary: Summary | None = None, progress: Callable[[str], None] | None = log,
              deadline_s: float | None = None) -> Summary:
    """Submit ``tasks`` to the Dask ``client`` (in order, earlier tasks first), resubmit failures up to
    ``retries`` times, and collect a :class:`Summary`.  ``progress`` receives one line per event (None: silent).

    After ``max_failures`` tasks failed for good, or once ``deadline_s`` seconds have passed (checked whenever a
    task finishes), no new task starts: queued tasks are cancelled (listed in ``Summary.cancelled``) and the
    running ones are waited for, so no frame is cut off half-way."""
    from distributed import as_completed

    summary = summary or Summary()
    say = progress or (lambda _m: None)
    t0 = time.perf_counter()
    by_key = {t.key: t for t in tasks}
    if len(by_key) != len(tasks):
        raise ValueError("task keys must be unique")
    n_total = len(tasks)
    n_done = 0
    priority = {t.key: n_total - i for i, t in enumerate(tasks)}

    def submit(task: Task):
        attempt = summary.attempts.get(task.key, 0) + 1
        summary.attempts[task.key] = attempt
        # pure=False: a resubmission must run again; key with the attempt so Dask does not reuse a failed result
        fut = client.submit(task.fn, *task.args, key=f"{task.key}#attempt{attempt}", pure=False,
                            priority=priority[task.key])
        fut_key[fut.key] = task.key
        live[task.key] = fut
        return fut

    fut_key: dict[str, str] = {}
    live: dict[str, Any] = {}                              # latest future of each unfinished task
    pending = as_completed([submit(t) for t in tasks], with_results=False)
    if n_total:
        say(f"submitted {n_total} tasks (retries {retries})")
    stopped = False
    for fut in pending:
        key = fut_key[fut.key]
        task = by_key[key]
        if fut.cancelled() or key in summary.cancelled:
            continue
        try:
            result = fut.result()
            status, reason = _outcome(result)
        except Exception as exc:                           # noqa: BLE001 - task or worker failure, retried
            result, status, reason = None, "error", f"{type(exc).__name__}: {exc}"
        if status == "error" and summary.attempts[key] <= retries and not stopped:
            say(f"retry {key} (attempt {summary.attempts[key] + 1}/{retries + 1}) after: {reason[:300]}")
            pending.add(submit(task))
            continue
        n_done += 1
        live.pop(key, None)
        if isinstance(result, dict):
            summary.results[key] = result
        if status == "ok":
            summary.ok.append(key)
        elif status == "rejected":
            summary.rejected[key] = reason
        else:
            summary.failed[key] = reason
        elapsed = time.perf_counter() - t0
        wall = (result or {}).get("wall_s") if isinstance(result, dict) else None
        say(f"{n_done}/{n_total} {key} {task.label}: {status}"
            f"{f' ({wall:.0f} s)' if wall is not None else ''} {reason[:200]} | {elapsed:.0f} s elapsed, "
            f"{len(summary.failed)} failed")
        why = None
        if max_failures is not None and len(summary.failed) >= max_failures:
            why = f"{len(summary.failed)} tasks failed (max_failures={max_failures})"
        elif deadline_s is not None and elapsed > deadline_s:
            why = f"time limit of {deadline_s:.0f} s reached"
        if why and not stopped:
            stopped = True
            running = executing_keys(client)
            queued = {k: f for k, f in live.items() if f.key not in running}
            client.cancel(list(queued.values()))
            summary.cancelled.extend(queued)
            for k in queued:
                live.pop(k)
            say(f"stopping: {why}; {len(queued)} queued tasks cancelled, waiting for {len(live)} running")
    summary.wall_s = time.perf_counter() - t0
    return summary
