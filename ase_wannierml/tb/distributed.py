"""k-points as tasks: ``TightBinding.eigenvalues(kpts, ..., executor=...)`` on Dask or any ``concurrent.futures``
executor (numpy only here; Dask is imported when asked for).

The k-points are cut into contiguous chunks (so the sparse solver still reuses its factorisation along a path
inside each chunk); each task runs the serial :meth:`TightBinding.eigenvalues` on its chunk.  With a Dask
``Client`` the ``TightBinding`` is sent to the workers once (``client.scatter(..., broadcast=True)``) and the tasks
refer to it; with a ``concurrent.futures`` executor it is pickled with each task (a process pool gets one chunk per
worker by default, so once per worker).  Every k-point is solved exactly as in the serial run: dense results are
identical to it; sparse (``num=``) results agree to the solver's residual check (the factorisation reused across a
chunk boundary differs).

``executor`` may be:

* ``None``: serial (no tasks);
* ``"local"``: an embedded Dask ``LocalCluster`` (processes, one thread each; ``$WANNIERML_LOCAL_WORKERS`` or the
  number of CPUs, at most 4), started on first use and kept for later calls (closed at exit);
* a Dask ``distributed.Client`` (e.g. connected to a cluster: ``Client("tcp://host:8786")``);
* a scheduler address string ``"tcp://..."`` (a client is opened for the call);
* a ``concurrent.futures.Executor`` (``ProcessPoolExecutor``, ``ThreadPoolExecutor``, MPI pool executors, ...).

Structures as tasks (e.g. bands or DOS of many MD snapshots): :func:`map_tasks` runs ``func(item)`` for each item on
the same kinds of executor and returns the results in order.
"""
from __future__ import annotations

import atexit
import os
from concurrent.futures import Executor
from typing import TYPE_CHECKING, Any, Callable, Iterable

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from .tightbinding import TightBinding

_LOCAL: dict[str, Any] = {}


def _chunk_eigenvalues(tb: "TightBinding", k_k3: np.ndarray, num: int | None, near: float | None) -> np.ndarray:
    """Worker side: the serial eigen-solve of one chunk."""
    return tb.eigenvalues(k_k3, num=num, near=near)


def local_client(n_workers: int | None = None):
    """The embedded Dask client of ``executor="local"`` (created once per process, closed at exit)."""
    if "client" in _LOCAL:
        return _LOCAL["client"]
    from distributed import Client, LocalCluster

    n = n_workers or int(os.environ.get("WANNIERML_LOCAL_WORKERS", 0)) or min(4, os.cpu_count() or 1)
    cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True, dashboard_address=":0")
    client = Client(cluster)
    _LOCAL.update(client=client, cluster=cluster)
    atexit.register(close_local_client)
    return client


def close_local_client() -> None:
    """Close the embedded client and its cluster (if started)."""
    client, cluster = _LOCAL.pop("client", None), _LOCAL.pop("cluster", None)
    if client is not None:
        client.close()
    if cluster is not None:
        cluster.close()


def _is_dask_client(obj: Any) -> bool:
    return all(hasattr(obj, name) for name in ("scatter", "submit", "gather", "ncores"))


def n_workers_of(executor: Any) -> int:
    """Worker count of a Dask client or a concurrent.futures executor (1 if unknown)."""
    if _is_dask_client(executor):
        return max(1, sum(executor.ncores().values()))
    return max(1, int(getattr(executor, "_max_workers", 0) or 1))


def split_kpoints(k_k3: np.ndarray, n_chunks: int) -> list[np.ndarray]:
    """Contiguous chunks of nearly equal size (at least one k-point each)."""
    n_chunks = max(1, min(int(n_chunks), len(k_k3)))
    return [c for c in np.array_split(k_k3, n_chunks) if len(c)]


def eigenvalues(tb: "TightBinding", k_k3: np.ndarray, num: int | None, near: float | None, executor: Any,
                chunks: int | None = None) -> np.ndarray:
    """``tb.eigenvalues(k_k3, num, near)`` computed as tasks on ``executor`` (see the module docstring).

    chunks: number of k-point chunks (default: 2 per worker for Dask, 1 per worker for a concurrent.futures
    executor); returns (nk, nbands) eV, in the order of ``k_k3``.
    """
    k_k3 = np.asarray(k_k3, dtype=float).reshape(-1, 3)
    if executor is None:
        return tb.eigenvalues(k_k3, num=num, near=near)
    if len(k_k3) == 0:
        return tb.eigenvalues(k_k3, num=num, near=near)
    if num is not None and near is None:               # resolve here: a clear error before any task runs
        if tb.fermi_energy is None:
            raise ValueError("eigenvalues(num=...) needs near= (eV) or a known fermi_level")
        near = tb.fermi_energy
    if isinstance(executor, str):
        if executor == "local":
            return _on_dask(tb, k_k3, num, near, local_client(), chunks)
        if "://" in executor:
            from distributed import Client

            with Client(executor) as client:
                return _on_dask(tb, k_k3, num, near, client, chunks)
        raise ValueError(f"executor {executor!r}: use None, 'local', a scheduler address 'tcp://...', a Dask "
                         "Client or a concurrent.futures.Executor")
    if _is_dask_client(executor):
        return _on_dask(tb, k_k3, num, near, executor, chunks)
    if isinstance(executor, Executor) or hasattr(executor, "submit"):
        parts = split_kpoints(k_k3, chunks or n_workers_of(executor))
        futures = [executor.submit(_chunk_eigenvalues, tb, part, num, near) for part in parts]
        return np.concatenate([f.result() for f in futures], axis=0)
    raise TypeError(f"executor of type {type(executor).__name__} is neither a Dask Client nor a "
                    "concurrent.futures.Executor")


def _on_dask(tb: "TightBinding", k_k3: np.ndarray, num: int | None, near: float | None, client: Any,
             chunks: int | None) -> np.ndarray:
    parts = split_kpoints(k_k3, chunks or 2 * n_workers_of(client))
    [tb_future] = client.scatter([tb], broadcast=True, hash=False)
    try:
        futures = [client.submit(_chunk_eigenvalues, tb_future, part, num, near, pure=False) for part in parts]
        results = client.gather(futures)
    finally:
        client.cancel([tb_future])
    return np.concatenate(results, axis=0)


def map_tasks(func: Callable[[Any], Any], items: Iterable[Any], executor: Any = "local") -> list:
    """``[func(item) for item in items]`` with one task per item on ``executor`` (as for :func:`eigenvalues`;
    None runs serially), results in the order of ``items``.  ``func`` must be picklable (a module-level function);
    e.g. bands of MD snapshots: ``map_tasks(snapshot_bands, snapshots, client)`` where ``snapshot_bands`` builds
    the calculator inside the task."""
    items = list(items)
    if executor is None:
        return [func(x) for x in items]
    if isinstance(executor, str):
        if executor == "local":
            return map_tasks(func, items, local_client())
        if "://" in executor:
            from distributed import Client

            with Client(executor) as client:
                return map_tasks(func, items, client)
        raise ValueError(f"executor {executor!r}: use None, 'local', a scheduler address 'tcp://...', a Dask "
                         "Client or a concurrent.futures.Executor")
    if _is_dask_client(executor):
        futures = [executor.submit(func, x, pure=False) for x in items]
        return executor.gather(futures)
    if isinstance(executor, Executor) or hasattr(executor, "submit"):
        return [f.result() for f in [executor.submit(func, x) for x in items]]
    raise TypeError(f"executor of type {type(executor).__name__} is neither a Dask Client nor a "
                    "concurrent.futures.Executor")
