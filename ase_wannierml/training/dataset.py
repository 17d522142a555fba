"""Frames → graphs + targets → one compact cache file, so re-training never re-parses text.

Cache format (``torch.save`` of plain containers; loads with ``torch.load(weights_only=True)``)::

    {"format": "ase_wannierml-dataset", "version": 1,
     "fingerprint": str,          # JSON: cache version, graph settings, build options, (path, size, mtime) of sources
     "frame_ids": [str, ...],
     "examples": [{key: Tensor}, ...],   # model graph keys (float64) + the target keys below
     "reports": [{str: float|int|str}, ...],   # per-frame data-quality numbers (gauge, coverage)
     "rejected": {frame_id: reason}}     # frames left out (meta status 'rejected', or on_error='skip')

Target keys of an example (absent labels are zero-filled with ``has_*`` = False):
``target_energy`` (1,) eV; ``target_forces`` (n_atoms, 3) eV/Å; ``target_stress`` (1, 3, 3) eV/Å³;
``target_ham`` (n_pairs, max_orb, max_orb) eV relative to E_F; ``target_ham_mask`` same shape, bool;
``orbital_index`` (n_atoms, max_orb) int, orbital number of each (atom, slot), -1 padding;
``band_kpts`` (nk, 3) fractional; ``target_bands`` (nk, norb) eV in the targets' zero (full Wannier90 H);
``band_centre`` () eV, the frame's Fermi / neutrality level in that zero (0 unless ``energy_zero = "vacuum"``);
``has_energy``, ``has_forces``, ``has_stress``, ``has_ham`` () bool; ``fermi_level`` () eV.

The file is written to a temporary name and renamed, so a failure never leaves a partial cache.
"""
from __future__ import annotations

import fnmatch
import functools
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch

from .assign import FrameError, assign_wannier_functions, find_num_iter, onsite_symmetry_violation
from .frames import Frame, find_frames, frame_status, iter_frames, load_frame_dir
from .targets import band_kpoints, hamiltonian_targets, neutrality_level, reference_bands, wannier_periodic_axes

CACHE_FORMAT = "ase_wannierml-dataset"
CACHE_VERSION = 2   # 2: optional dispersion-corrected targets

GraphFn = Callable[[object], dict]
PairsFn = Callable[[dict], tuple[np.ndarray, np.ndarray, np.ndarray]]


@dataclass(frozen=True)
class BuildOptions:
    """How frames become examples (see ``DataConfig``): shells {element: [shell]}, Å / eV tolerances, k-grid."""

    shells: Mapping[str, Sequence[str]]
    max_centre_distance: float = 0.7
    gauge_tolerance: float = 0.05
    band_kgrid: int = 6
    on_error: str = "raise"
    energy_zero: str = "dft_fermi"
    electrons: Mapping[str, float] | None = None
    neutrality_kgrid: int = 48
    dispersion: Mapping[str, Any] | None = None   # subtract this analytic term from E, F, σ (model.dispersion)
    forces_only: Sequence[str] = ()               # frame-id globs: energy and stress labels dropped
    scf_of_rejected: bool = False                 # keep E/F/σ of frames the Wannier quality gate rejected


@functools.lru_cache(maxsize=4)
def _dispersion(spec_json: str):
    from ase_wannierml.dispersion import Dispersion

    return Dispersion(json.loads(spec_json))


@dataclass
class Dataset:
    """Cached examples: ``examples[i]`` is a dict of tensors for frame ``frame_ids[i]``."""

    frame_ids: list[str]
    examples: list[dict[str, torch.Tensor]]
    reports: list[dict]
    rejected: dict[str, str]

    def __len__(self) -> int:
        return len(self.examples)

    def split(self, val_fraction: float, test_fraction: float = 0.0, seed: int = 0, mode: str = "random",
              test_frames: Sequence[str] = (), val_frames: Sequence[str] = (),
              train_frames: Sequence[str] = ()) -> tuple[list[int], ...]:
        """(train, val, test) example indices.

        mode "random": a seeded permutation of the frame ids (stable across runs, not when frames are added);
        mode "hash": frame id → u = hash(seed, id) in [0, 1): test if u < test_fraction, val if u < test + val
        fraction (a frame's role never changes as the data set grows). ``test_frames`` / ``val_frames`` are
        assigned first, by id, in both modes (then ``train_frames``).
        """
        fixed_test = {i for i, f in enumerate(self.frame_ids) if f in set(test_frames)}
        fixed_val = {i for i, f in enumerate(self.frame_ids) if f in set(val_frames)} - fixed_test
        fixed_train = {i for i, f in enumerate(self.frame_ids) if f in set(train_frames)} - fixed_test - fixed_val
        if mode == "hash":
            test, val, train = sorted(fixed_test), sorted(fixed_val), sorted(fixed_train)
            for i, fid in enumerate(self.frame_ids):
                if i in fixed_test or i in fixed_val or i in fixed_train:
                    continue
                u = hash_unit(seed, fid)
                (test if u < test_fraction else val if u < test_fraction + val_fraction else train).append(i)
            return sorted(train), sorted(val), sorted(test)
        if fixed_test or fixed_val or fixed_train:
            rest = [i for i in range(len(self)) if i not in fixed_test | fixed_val | fixed_train]
            perm = np.random.default_rng(seed).permutation(len(rest))
            order = np.array([rest[k] for k in perm], dtype=int)
            n_val = max(int(round(val_fraction * len(self))) - len(fixed_val), 0)
            n_test = max(int(round(test_fraction * len(self))) - len(fixed_test), 0)
            test = sorted(fixed_test | set(order[:n_test].tolist()))
            val = sorted(fixed_val | set(order[n_test:n_test + n_val].tolist()))
            return sorted(fixed_train | set(order[n_test + n_val:].tolist())), val, test
        order = np.random.default_rng(seed).permutation(len(self))
        n_val = int(round(val_fraction * len(self)))
        n_test = int(round(test_fraction * len(self)))
        if len(self) > 1 and val_fraction > 0:
            n_val = max(n_val, 1)
        test, val, train = order[:n_test], order[n_test:n_test + n_val], order[n_test + n_val:]
        return sorted(train.tolist()), sorted(val.tolist()), sorted(test.tolist())


def hash_unit(seed: int, frame_id: str) -> float:
    """Deterministic u in [0, 1) from (seed, frame id) (SHA-256; independent of Python's hash randomisation)."""
    import hashlib

    digest = hashlib.sha256(f"{seed}:{frame_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0 ** 64


def build_example(frame: Frame, graph_fn: GraphFn, pairs_fn: PairsFn, opts: BuildOptions) -> tuple[dict, dict]:
    """(example tensors, quality report) for one frame; raises ``FrameError`` if the frame is unusable."""
    atoms = frame.atoms
    try:
        graph = {k: v.detach().clone() for k, v in graph_fn(atoms).items()}
    except ValueError as err:                  # bad geometry / layer labels: name the frame
        raise FrameError(f"frame {frame.frame_id}: {err}") from None
    n = len(atoms)
    ex: dict[str, torch.Tensor] = dict(graph)
    f64 = torch.float64
    ex["has_energy"] = torch.tensor(frame.energy is not None)
    ex["target_energy"] = torch.tensor([frame.energy or 0.0], dtype=f64)
    ex["has_forces"] = torch.tensor(frame.forces is not None)
    ex["target_forces"] = torch.as_tensor(frame.forces if frame.forces is not None else np.zeros((n, 3)), dtype=f64)
    ex["has_stress"] = torch.tensor(frame.stress is not None)
    ex["target_stress"] = torch.as_tensor(frame.stress if frame.stress is not None else np.zeros((3, 3)),
                                          dtype=f64).reshape(1, 3, 3)
    ex["fermi_level"] = torch.tensor(frame.fermi_level or 0.0, dtype=f64)
    if opts.dispersion:                     # targets = DFT − analytic dispersion (added back at prediction)
        disp = _dispersion(json.dumps(dict(opts.dispersion), sort_keys=True)).compute(atoms)
        ex["target_energy"] -= disp["energy"]
        ex["target_forces"] -= torch.as_tensor(disp["forces"], dtype=f64)
        if disp["stress"] is not None:
            from ase.stress import voigt_6_to_full_3x3_stress

            ex["target_stress"] -= torch.as_tensor(voigt_6_to_full_3x3_stress(disp["stress"]),
                                                   dtype=f64).reshape(1, 3, 3)
    pair_i, pair_j, pair_shift = pairs_fn(graph)
    n_orb = _orbital_counts(atoms, opts.shells, frame.frame_id)
    max_orb = _max_orb(opts.shells)
    ex["orbital_index"] = torch.as_tensor(_orbital_index(n_orb, max_orb), dtype=torch.long)
    report: dict = {"frame": frame.frame_id}
    if frame.tb is None:
        ex["has_ham"] = torch.tensor(False)
        ex["target_ham"] = torch.zeros((len(pair_i), max_orb, max_orb), dtype=f64)
        ex["target_ham_mask"] = torch.zeros((len(pair_i), max_orb, max_orb), dtype=torch.bool)
        ex["band_kpts"] = torch.zeros((0, 3), dtype=f64)
        ex["target_bands"] = torch.zeros((0, int(sum(n_orb))), dtype=f64)
        return ex, report
    ham, bands, kpts, report = _hamiltonian_part(frame, pair_i, pair_j, pair_shift, n_orb, opts)
    ex["energy_zero"] = torch.tensor(report["energy_zero"], dtype=f64)
    ex["band_centre"] = torch.tensor(report["band_centre"], dtype=f64)
    ex["has_ham"] = torch.tensor(True)
    ex["target_ham"] = torch.as_tensor(ham.blocks, dtype=f64)
    ex["target_ham_mask"] = torch.as_tensor(ham.mask)
    ex["band_kpts"] = torch.as_tensor(kpts, dtype=f64)
    ex["target_bands"] = torch.as_tensor(bands, dtype=f64)
    return ex, report


def _hamiltonian_part(frame: Frame, pair_i: np.ndarray, pair_j: np.ndarray, pair_shift: np.ndarray,
                      n_orb: np.ndarray, opts: BuildOptions):
    """Assignment, gauge checks, pair-list targets and reference bands of a frame with a Hamiltonian."""
    tb, atoms, fid = frame.tb, frame.atoms, frame.frame_id
    periodic = wannier_periodic_axes(tb.R, atoms.pbc)
    assignment = assign_wannier_functions(atoms, tb.orbitals.centres, opts.shells, periodic,
                                          opts.max_centre_distance, fid)
    # elements carrying only part of a Wannier90 hopping (split over degenerate R or equidistant images) are masked
    weight = getattr(tb, "wannier_weight", None)
    deg = (np.where(weight > 1 - 1e-9, 1, 2) if weight is not None else
           np.array([tb.degeneracy.get(tuple(r), 1) for r in tb.R.tolist()], dtype=int))
    zero = centre = frame.fermi_level          # centre: where band windows sit (Fermi / neutrality level)
    electrons = sum((opts.electrons or {}).get(s, 0.0) for s in atoms.get_chemical_symbols())
    if opts.energy_zero == "neutrality" or (opts.energy_zero == "vacuum" and electrons > 0):
        if electrons <= 0:
            raise FrameError(f"frame {fid}: data.energy_zero 'neutrality' needs model.wannier_electrons")
        zero = centre = neutrality_level(tb.R, tb.rows, tb.cols, tb.values, tb.norb, periodic, electrons,
                                         opts.neutrality_kgrid)
    if opts.energy_zero == "vacuum":
        zero = (frame.meta or {}).get("vacuum_level_eV")
        if zero is None:
            raise FrameError(f"frame {fid}: data.energy_zero 'vacuum' needs meta.json 'vacuum_level_eV'; add it with "
                             "python -m ase_wannierml.dft.vacuum --material <name>")
        zero = float(zero)
    elif opts.energy_zero not in ("dft_fermi", "neutrality"):
        raise ValueError(f"energy_zero must be 'dft_fermi', 'neutrality' or 'vacuum', got {opts.energy_zero!r}")
    ham = hamiltonian_targets(assignment, tb.R, tb.rows, tb.cols, tb.values, pair_i, pair_j, pair_shift,
                              n_orb, _max_orb(opts.shells), zero, deg, fid)
    if ham.max_imag > opts.gauge_tolerance:
        raise FrameError(f"frame {fid}: H(R) has imaginary parts up to {ham.max_imag:.3g} eV > gauge tolerance "
                         f"{opts.gauge_tolerance} eV; the supported real projection-only gauge gives a real H(R)")
    symmetry, where = _onsite_check(frame, assignment, opts)
    if symmetry > opts.gauge_tolerance:
        raise FrameError(f"frame {fid}: onsite blocks of symmetry-equivalent {where} differ by {symmetry:.3g} eV "
                         f"> {opts.gauge_tolerance} eV after rotation; projections must be global-frame "
                         "real harmonics (see training/assign.py)")
    kpts = band_kpoints(periodic, opts.band_kgrid)
    bands = reference_bands(tb.R, tb.rows, tb.cols, tb.values, tb.norb, kpts, zero)
    report = {"frame": fid, "energy_zero": float(zero), "zero_minus_dft_fermi": float(zero - frame.fermi_level),
              "band_centre": float(centre - zero),
              "max_imag": ham.max_imag, "onsite_symmetry": symmetry,
              "max_outside": ham.max_outside, "coverage": ham.coverage,
              "max_centre_distance": float(assignment.distance.max(initial=0.0)),
              "num_iter": find_num_iter(frame.meta)}
    return ham, bands, kpts, report


def _onsite_check(frame: Frame, assignment, opts: BuildOptions) -> tuple[float, str]:
    from ase_wannierml.orbitals import orbitals_per_atom

    tb = frame.tb
    on = (np.all(tb.R == 0, axis=1)) & (assignment.atom[tb.rows] == assignment.atom[tb.cols])
    n_orb = _orbital_counts(frame.atoms, opts.shells, frame.frame_id)
    blocks = [np.zeros((k, k)) for k in n_orb]
    for r, c, v in zip(tb.rows[on], tb.cols[on], np.real(tb.values[on])):
        blocks[assignment.atom[r]][assignment.slot[r], assignment.slot[c]] = v
    orbitals = orbitals_per_atom(frame.atoms.get_chemical_symbols(), opts.shells)
    return onsite_symmetry_violation(frame.atoms, blocks, orbitals)


def _orbital_counts(atoms, shells: Mapping[str, Sequence[str]], frame_id: str) -> np.ndarray:
    from ase_wannierml.orbitals import orbitals_per_atom

    try:
        return np.array([len(o) for o in orbitals_per_atom(atoms.get_chemical_symbols(), shells)], dtype=int)
    except ValueError as err:
        raise FrameError(f"frame {frame_id}: {err}") from None


def _max_orb(shells: Mapping[str, Sequence[str]]) -> int:
    """Largest orbital count of any element of the basis (the model's block size)."""
    from ase_wannierml.orbitals import element_orbitals

    return max((len(element_orbitals(s)) for s in shells.values()), default=0)


def _orbital_index(n_orb: np.ndarray, max_orb: int) -> np.ndarray:
    """(n_atoms, max_orb) orbital number of each (atom, slot), -1 past the atom's count."""
    start = np.concatenate([[0], np.cumsum(n_orb)[:-1]]).astype(int)
    slots = np.arange(max_orb)
    return np.where(slots[None, :] < n_orb[:, None], start[:, None] + slots[None, :], -1)


def _fingerprint(sources: Sequence[Path], graph_settings: Mapping, opts: BuildOptions) -> str:
    files = []
    for src in sources:
        for f in sorted([src] if src.is_file() else [p for p in src.iterdir() if p.is_file()]):
            st = f.stat()
            files.append([str(f.resolve()), st.st_size, st.st_mtime_ns])
    return json.dumps({"version": CACHE_VERSION, "graph": graph_settings, "files": files,
                       "options": {"shells": {k: list(v) for k, v in opts.shells.items()},
                                   "max_centre_distance": opts.max_centre_distance,
                                   "gauge_tolerance": opts.gauge_tolerance, "band_kgrid": opts.band_kgrid,
                                   "on_error": opts.on_error, "energy_zero": opts.energy_zero,
                                   "electrons": dict(opts.electrons or {}),
                                   "neutrality_kgrid": opts.neutrality_kgrid,
                                   "dispersion": dict(opts.dispersion or {}),
                                   "forces_only": list(opts.forces_only),
                                   "scf_of_rejected": opts.scf_of_rejected}}, sort_keys=True, default=str)


def build_dataset(paths: Sequence[str | Path], graph_fn: GraphFn, pairs_fn: PairsFn, opts: BuildOptions,
                  progress: bool = False) -> Dataset:
    """Read every frame under ``paths`` and build its example (in memory; see :func:`load_or_build`)."""
    from tqdm import tqdm

    ids: list[str] = []
    examples, reports, rejected = [], [], {}
    for source in tqdm(find_frames(paths), desc="frames", disable=not progress):
        try:
            status, reason = frame_status(source)
            scf_only = False
            if status != "ok":
                if not (opts.scf_of_rejected and _wannier_rejected(status, reason)):
                    rejected[source.name] = f"meta.json status {status!r}: {reason}"
                    continue
                scf_only = True
            for frame in ([load_frame_dir(source, hamiltonian=False)] if scf_only else iter_frames(source)):
                if scf_only and frame.forces is None and frame.energy is None:
                    rejected[source.name] = f"meta.json status {status!r}: {reason} (and no SCF labels to keep)"
                    continue
                if any(fnmatch.fnmatchcase(frame.frame_id, pat) for pat in opts.forces_only):
                    frame.energy, frame.stress = None, None
                ex, rep = build_example(frame, graph_fn, pairs_fn, opts)
                if scf_only:
                    rep["hamiltonian_rejected"] = reason
                ids.append(frame.frame_id)
                examples.append(ex)
                reports.append(rep)
        except FrameError as err:
            if opts.on_error == "raise":
                raise
            rejected[source.name] = str(err)
    if len(set(ids)) != len(ids):
        dup = sorted({i for i in ids if ids.count(i) > 1})
        raise ValueError(f"duplicate frame ids {dup[:5]}: frame directory names must be unique across data paths")
    return Dataset(ids, examples, reports, rejected)


def _wannier_rejected(status: str, reason: str) -> bool:
    """A frame rejected by the Wannier quality gate (band error, centre distance, spread), whose SCF finished:
    not one rejected because a code failed (reason "error: ...")."""
    return status == "rejected" and not reason.startswith("error")


def save_cache(dataset: Dataset, path: str | Path, fingerprint: str) -> None:
    """Write the cache atomically (temporary file in the same folder, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    obj = {"format": CACHE_FORMAT, "version": CACHE_VERSION, "fingerprint": fingerprint,
           "frame_ids": dataset.frame_ids, "examples": dataset.examples, "reports": dataset.reports,
           "rejected": dataset.rejected}
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def load_cache(path: str | Path) -> tuple[Dataset, str]:
    """(dataset, fingerprint) from a cache file (weights_only load: no code is executed)."""
    obj = torch.load(Path(path), weights_only=True)
    if not isinstance(obj, dict) or obj.get("format") != CACHE_FORMAT:
        raise ValueError(f"{path} is not an ase_wannierml dataset cache")
    if obj.get("version") != CACHE_VERSION:
        raise ValueError(f"{path}: cache version {obj.get('version')} != {CACHE_VERSION}; delete it to rebuild")
    ds = Dataset(list(obj["frame_ids"]), list(obj["examples"]), list(obj["reports"]), dict(obj["rejected"]))
    return ds, str(obj["fingerprint"])


def load_or_build(paths: Sequence[str | Path], cache: str | Path, graph_fn: GraphFn, pairs_fn: PairsFn,
                  opts: BuildOptions, graph_settings: Mapping, progress: bool = False) -> Dataset:
    """The cached dataset if its fingerprint matches the sources and settings, else rebuild and re-cache it."""
    fingerprint = _fingerprint(find_frames(paths), graph_settings, opts)
    cache = Path(cache)
    if cache.is_file():
        try:
            ds, old = load_cache(cache)
            if old == fingerprint:
                return ds
        except (ValueError, RuntimeError, OSError, KeyError):
            pass  # unreadable or stale cache: rebuild below
    ds = build_dataset(paths, graph_fn, pairs_fn, opts, progress)
    save_cache(ds, cache, fingerprint)
    return ds
