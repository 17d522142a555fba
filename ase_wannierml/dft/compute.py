"""First-principles frames for any structure: ``compute_frames(structures, material, dataset_dir)``.

Each structure (``ase.Atoms``, or every image of an extxyz / any ASE-readable file) becomes one frame directory
``<dataset_dir>/frames/<frame_id>/`` in the format of DEVELOPING.md ("Contract: frames produced by the DFT
workflow"), computed by :func:`ase_wannierml.dft.workflow.run_frame` with the structure as given:

* k-meshes from the cell (the material's primitive-cell meshes scaled by the in-plane area, ``workflow.kmeshes``);
* Wannier windows and projections from the material (``MaterialSpec.dft``); ``scf_only=True`` stops after the SCF
  (energy, forces, stress, eigenvalues, vacuum level) and writes no Hamiltonian;
* frame ids are stable content hashes (species, positions and cell to 1e-5 Å, pbc, material name, DFT settings,
  SCF-only or not): rerunning the same input skips frames already written, a changed structure or setting gets a
  new frame;
* provenance in ``meta.json`` under ``sampling.notes``: source file, index in it, the structure's ``info``, hash;
* structures without a per-atom ``layer`` array get layers from the gaps between atomic planes along z
  (:func:`assign_layers`; a clear error when the split is ambiguous).

Frames run as tasks on Dask (``engine.py``): an embedded local cluster by default, a scheduler or a jobqueue
cluster when configured.  Failed frames are retried and reported in the returned :class:`engine.Summary`.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np
from ase import Atoms

from .engine import EngineSettings, Summary, Task, log, open_client, run_tasks
from .materials import MaterialSpec
from .sampling import FrameParams

HASH_DECIMALS = 5          # Å: positions and cell rounded to 1e-5 Å in the frame id hash


# ---------------------------------------------------------------------------------------------------- structures
def read_structures(path: str | Path, index: str = ":") -> list[Atoms]:
    """All images of ``path`` (extxyz or anything ``ase.io.read`` knows) selected by ``index`` (ASE syntax);
    each image gets ``info["source_file"]`` and ``info["source_index"]`` (index within the file)."""
    from ase.io import read

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"structure file {path} does not exist")
    images = read(path, index=":")
    if not isinstance(images, list):
        images = [images]
    n = len(images)
    idx = _index_list(index, n, path)
    out = []
    for i in idx:
        a = images[i]
        a.info["source_file"] = str(path.resolve())
        a.info["source_index"] = int(i)
        out.append(a)
    return out


def _index_list(index: str, n: int, path: Path) -> list[int]:
    """Indices selected by an ASE-style index string (``":"``, ``"3"``, ``"-1"``, ``"0:6:2"``, ``"1,4,7"``)."""
    index = str(index).strip()
    try:
        if "," in index:
            idx = [int(x) for x in index.split(",")]
        elif ":" in index:
            parts = [int(x) if x.strip() else None for x in index.split(":")]
            idx = list(range(n))[slice(*parts)]
        else:
            idx = [int(index)]
    except ValueError:
        raise ValueError(f"--index {index!r}: use ':', '3', '-1', '0:6:2' or '1,4,7'") from None
    bad = [i for i in idx if not -n <= i < n]
    if bad:
        raise IndexError(f"{path} has {n} structures; index {bad[0]} is out of range")
    return [i % n for i in idx]


def assign_layers(atoms: Atoms, n_layers: int = 2, min_ratio: float = 1.5, min_gap: float = 1.0) -> np.ndarray:
    """(n_atoms,) int layer index (0 = bottom) from the ``n_layers - 1`` widest gaps between atomic planes along z.

    z is unwrapped across the vacuum (the widest periodic gap along c, if c is periodic or not).  The split is
    accepted only if every separating gap is at least ``min_gap`` Å and ``min_ratio`` times the widest gap left
    inside a layer; otherwise ``ValueError`` names the gaps (give the structure a ``layer`` array instead).
    """
    if n_layers < 1:
        raise ValueError(f"n_layers must be >= 1, got {n_layers}")
    n = len(atoms)
    if n_layers == 1:
        return np.zeros(n, dtype=int)
    if n < n_layers:
        raise ValueError(f"{n} atoms cannot form {n_layers} layers")
    c = float(np.linalg.norm(atoms.cell[2]))
    z = atoms.positions[:, 2].copy()
    if c > 0:                                       # unwrap: start right after the widest periodic gap (vacuum)
        zw = np.sort(np.mod(z, c))
        gaps = np.diff(np.concatenate([zw, [zw[0] + c]]))
        start = zw[(int(np.argmax(gaps)) + 1) % n]
        z = np.mod(z - start, c)
    order = np.argsort(z, kind="stable")
    gaps = np.diff(z[order])
    if len(gaps) < n_layers - 1:
        raise ValueError(f"{n} atoms cannot form {n_layers} layers")
    cut = np.sort(np.argsort(gaps)[::-1][: n_layers - 1])
    separating = gaps[cut]
    inner = np.delete(gaps, cut)
    widest_inner = float(inner.max()) if len(inner) else 0.0
    if separating.min() < min_gap or separating.min() < min_ratio * widest_inner:
        raise ValueError(
            f"cannot assign {n_layers} layers by z: the separating gaps {np.round(separating, 3).tolist()} Å are "
            f"not clearly wider than the widest gap inside a layer ({widest_inner:.3f} Å; need >= {min_ratio}x and "
            f">= {min_gap} Å). Give the structure a per-atom 'layer' array (atoms.set_array('layer', ...)).")
    layer_sorted = np.zeros(n, dtype=int)
    for c_i in cut:
        layer_sorted[c_i + 1:] += 1
    layer = np.empty(n, dtype=int)
    layer[order] = layer_sorted
    return layer


def structure_hash(atoms: Atoms, material: MaterialSpec, scf_only: bool) -> str:
    """Stable content hash (hex sha256) of what determines a frame: species, positions and cell (rounded to
    1e-5 Å), pbc, layers, the material's name and DFT settings (all but ``pseudo_dir``, which differs between
    machines), and SCF-only or not."""
    r = HASH_DECIMALS
    payload = {
        "numbers": atoms.numbers.tolist(),
        "positions": np.round(atoms.positions, r).tolist(),
        "cell": np.round(atoms.cell.array, r).tolist(),
        "pbc": [bool(x) for x in atoms.pbc],
        "layer": np.asarray(atoms.arrays.get("layer", np.zeros(len(atoms), int))).astype(int).tolist(),
        "material": material.name,
        "dft": {k: v for k, v in _jsonable(material.to_dict()["dft"]).items() if k != "pseudo_dir"},
        "scf_only": bool(scf_only),
    }
    text = json.dumps(payload, sort_keys=True).replace("-0.0,", "0.0,").replace("-0.0]", "0.0]")
    return hashlib.sha256(text.encode()).hexdigest()


def frame_id_for(atoms: Atoms, material: MaterialSpec, scf_only: bool, prefix: str = "user") -> str:
    """``<prefix>-scf-<hash12>`` (SCF-only) or ``<prefix>-<hash12>`` (full frame); see :func:`structure_hash`."""
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.+-]*", prefix):
        raise ValueError(f"frame id prefix {prefix!r}: use letters, digits, '_', '.', '+', '-'")
    h = structure_hash(atoms, material, scf_only)[:12]
    return f"{prefix}-scf-{h}" if scf_only else f"{prefix}-{h}"


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    if isinstance(obj, (np.floating, np.integer, np.bool_)):
        return obj.item()
    if obj is None or isinstance(obj, (str, int, float, bool)):
        return obj
    return str(obj)


# ------------------------------------------------------------------------------------------------- validation
def check_structures(structures: Sequence[Atoms], material: MaterialSpec) -> None:
    """Every species must be defined by the material (pseudopotential, mass, projections, orbital counts), the
    cell must have a non-zero in-plane area and c along z (the workflow's slab convention)."""
    from .material_files import species_problems

    dft = material.dft
    seen: set[str] = set()
    for i, a in enumerate(structures):
        if len(a) == 0:
            raise ValueError(f"structure {i} has no atoms")
        species = sorted(set(a.get_chemical_symbols()))
        unknown = [s for s in species if s not in dft.pseudopotentials]
        if unknown:
            raise ValueError(f"structure {i} ({_where(a)}) contains {unknown}, which material {material.name!r} "
                             f"does not define (its species: {sorted(dft.pseudopotentials)}); add them to the "
                             "material file (pseudopotentials, masses, projections, n_orbitals, ...)")
        area = float(np.linalg.norm(np.cross(a.cell[0], a.cell[1])))
        if area < 1e-6:
            raise ValueError(f"structure {i} ({_where(a)}) has no in-plane cell (a1 x a2 = 0): DFT needs a cell")
        if abs(a.cell[2, 0]) > 1e-6 or abs(a.cell[2, 1]) > 1e-6 or a.cell[2, 2] <= 0:
            raise ValueError(f"structure {i} ({_where(a)}): the workflow expects c along +z (slab with vacuum), "
                             f"got c = {a.cell[2].tolist()}")
        seen.update(species)
    problems = species_problems(material, sorted(seen))
    if problems:
        raise ValueError(f"material {material.name!r}: " + "; ".join(problems))


def _where(a: Atoms) -> str:
    f, i = a.info.get("source_file"), a.info.get("source_index")
    return f"{f}[{i}]" if f is not None else f"{len(a)} atoms {a.get_chemical_formula()}"


# ----------------------------------------------------------------------------------------------------- frames
def frame_status(dataset_dir: str | Path, frame_id: str) -> tuple[str | None, str]:
    """(status, reason) of a written frame: "ok", "rejected" (quality), "error" (rejected with an error while
    running the codes), or (None, "") if the frame does not exist yet."""
    meta = Path(dataset_dir) / "frames" / frame_id / "meta.json"
    if not meta.is_file():
        return None, ""
    try:
        d = json.loads(meta.read_text())
    except json.JSONDecodeError:
        return None, ""
    status, reason = str(d.get("status", "ok")), str(d.get("reason", ""))
    if status == "rejected" and reason.startswith("error"):
        return "error", reason
    return status, reason


def _frame_task(material: MaterialSpec, params: FrameParams, atoms: Atoms | None, dataset_dir: str, scratch: str,
                settings: EngineSettings, frame_fn: Callable | None) -> dict:
    """Worker side: one frame (``atoms`` None: the sampler builds it from ``params``).  Returns {status
    ok|rejected|error, reason, frame_id, wall_s, timings_s, n_atoms, host}."""
    from .workflow import run_frame

    t0 = time.perf_counter()
    done, reason = frame_status(dataset_dir, params.frame_id)
    if done in ("ok", "rejected"):                   # written meanwhile (another driver): do not run it twice
        return {"frame_id": params.frame_id, "status": done, "reason": f"already done: {reason}", "wall_s": 0.0,
                "timings_s": {}, "n_atoms": None, "host": os.uname().nodename, "quality": {}}
    fn = frame_fn or run_frame
    meta = fn(material, params, Path(dataset_dir), Path(scratch), settings.runner(), atoms=atoms)
    status, reason = str(meta.get("status")), str(meta.get("reason", ""))
    if status == "rejected" and reason.startswith("error"):
        status = "error"
    n_atoms = len(atoms) if atoms is not None else meta.get("n_atoms")
    return {"frame_id": params.frame_id, "status": status, "reason": reason, "wall_s": time.perf_counter() - t0,
            "timings_s": meta.get("timings_s", {}), "n_atoms": n_atoms, "host": os.uname().nodename,
            "quality": meta.get("quality") or {}}


def plan_frames(structures: Iterable[Atoms], material: MaterialSpec, scf_only: bool = False,
                prefix: str = "user") -> list[tuple[FrameParams, Atoms]]:
    """(FrameParams, atoms with ``layer``) for each structure; duplicates (same frame id) are kept once."""
    structures = list(structures)
    check_structures(structures, material)
    out: list[tuple[FrameParams, Atoms]] = []
    seen: set[str] = set()
    for i, a0 in enumerate(structures):
        a = a0.copy()
        a.calc = None
        if "layer" in a.arrays:
            layer = np.asarray(a.arrays["layer"])
            if not np.issubdtype(layer.dtype, np.number) or np.any(layer != np.round(layer)) or layer.min() < 0:
                raise ValueError(f"structure {i} ({_where(a0)}): 'layer' must be non-negative integers")
            a.set_array("layer", None)
            a.set_array("layer", layer.astype(int))
            layer_source = "given"
        else:
            try:
                a.set_array("layer", assign_layers(a, material.n_layers))
            except ValueError as exc:
                raise ValueError(f"structure {i} ({_where(a0)}): {exc}") from None
            layer_source = "z clustering (dft.compute.assign_layers)"
        for key in ("momenta", "forces", "velocities"):                 # not inputs of a DFT frame
            if key in a.arrays:
                a.set_array(key, None)
        fid = frame_id_for(a, material, scf_only, prefix)
        if fid in seen:
            continue
        seen.add(fid)
        info = _jsonable(dict(a0.info))
        notes = {"source_file": info.pop("source_file", None), "source_index": info.pop("source_index", i),
                 "source_info": info, "structure_hash": structure_hash(a, material, scf_only),
                 "layer_source": layer_source, "input_order": i}
        params = FrameParams(frame_id=fid, material=material.name, seed=0,
                             kind="user-scf" if scf_only else "user", notes=notes)
        a.info = {}
        out.append((params, a))
    return out


def compute_frames(structures: Atoms | Sequence[Atoms] | str | Path, material: MaterialSpec | str | Path,
                   dataset_dir: str | Path, scf_only: bool = False, client: Any = None,
                   settings: EngineSettings | None = None, scratch: str | Path | None = None,
                   prefix: str = "user", index: str = ":", rerun_failed: bool = True,
                   frame_fn: Callable | None = None, progress: Callable[[str], None] | None = log,
                   check_codes: bool = True) -> Summary:
    """Compute a frame for every structure, as tasks on Dask; returns the :class:`~.engine.Summary`.

    structures: an ``Atoms``, a list of them, or a file of structures (``index`` selects images, ASE syntax).
    material: a :class:`MaterialSpec`, a shipped name (``graphene-bilayer``, ``mos2-bilayer``) or a YAML/JSON file.
    dataset_dir: frames go to ``dataset_dir/frames/<frame_id>/``; a run summary to ``dataset_dir/runs/``.
    scf_only: energy, forces, stress and eigenvalues only (no Wannier90 step, no Hamiltonian in the frame).
    client: a Dask ``Client`` to use (else ``settings`` decide: local cluster, scheduler or jobqueue cluster).
    settings: :class:`~.engine.EngineSettings` (workers, MPI ranks per task, pools, retries, cluster).
    scratch: where frames run (default ``$WANNIERML_SCRATCH``, else ``dataset_dir/scratch_dft``); each frame's
        work directory is deleted when the frame is written.
    prefix: frame id prefix (``<prefix>[-scf]-<hash12>``).
    rerun_failed: rerun frames written earlier with an error (default); frames "ok" or rejected by the quality
        gate are always skipped.
    frame_fn: replaces ``workflow.run_frame`` (tests); same signature.
    """
    from .material_files import resolve_material

    settings = settings or EngineSettings()
    material = resolve_material(material)
    if isinstance(structures, (str, Path)):
        structures = read_structures(structures, index)
    elif isinstance(structures, Atoms):
        structures = [structures]
    dataset_dir = Path(dataset_dir).resolve()
    scratch = Path(scratch or os.environ.get("WANNIERML_SCRATCH") or dataset_dir / "scratch_dft").resolve()
    plan = plan_frames(structures, material, scf_only, prefix)
    if check_codes and frame_fn is None:
        from .codes import check_codes as _check
        from .material_files import check_pseudopotentials

        _check(("pw.x", "pp.x") + (() if scf_only else ("pw2wannier90.x", "wannier90.x"))
               + (("mpirun",) if settings.ranks_per_task > 1 else ()))
        check_pseudopotentials(material)
    (dataset_dir / "frames").mkdir(parents=True, exist_ok=True)
    summary = Summary()
    todo: list[Task] = []
    for params, atoms in plan:
        status, _reason = frame_status(dataset_dir, params.frame_id)
        if status in ("ok", "rejected") or (status == "error" and not rerun_failed):
            summary.skipped.append(params.frame_id)
            continue
        label = f"({len(atoms)} atoms, {atoms.get_chemical_formula()}, {params.notes.get('source_file') or ''}"\
                f"[{params.notes.get('source_index')}])"
        todo.append(Task(params.frame_id, _frame_task,
                         (material, params, atoms, str(dataset_dir), str(scratch), settings, frame_fn), label))
    if progress:
        progress(f"{len(plan)} structures → {len(todo)} frames to run, {len(summary.skipped)} already done "
                 f"({'SCF-only' if scf_only else 'SCF + Wannier'}, material {material.name}, "
                 f"{settings.ranks_per_task} MPI ranks per frame)")
    t0 = time.perf_counter()
    if todo:
        with open_client(settings, client, n_tasks=len(todo)) as c:
            run_tasks(todo, c, retries=settings.retries, max_failures=settings.max_failures, summary=summary,
                      progress=progress)
    summary.wall_s = time.perf_counter() - t0
    _write_summary(dataset_dir, summary, material, settings, scf_only)
    if progress:
        progress(f"done: {summary.line()}")
        for fid, reason in summary.failed.items():
            progress(f"FAILED {fid} after {summary.attempts.get(fid, 0)} attempts: {reason[:500]}")
    return summary


def _write_summary(dataset_dir: Path, summary: Summary, material: MaterialSpec, settings: EngineSettings,
                   scf_only: bool) -> Path:
    runs = dataset_dir / "runs"
    runs.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S.%f")
    path = runs / f"dft-{stamp}-{os.getpid()}.json"
    data = {"material": material.name, "scf_only": scf_only, "engine": settings.to_dict(), **summary.to_dict()}
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(_jsonable(data), indent=1))
    os.replace(tmp, path)
    return path
