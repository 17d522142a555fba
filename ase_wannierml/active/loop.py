"""The active-learning loop: committee MD → most uncertain snapshots → DFT → warm-start retraining → log.

A round has phases, each finished phase is recorded in ``<workdir>/active_log.json`` (written atomically) with its
outputs in ``<workdir>/round_<r>/``, so a killed run continues where it stopped (``ActiveLoop.run``):

1. ``sampled``: Langevin MD with the committee (forces = committee mean) on ``trajectories_per_round`` cells drawn
   (seeded) from :func:`candidate_cells` × ``temperatures``; every ``sample_every`` steps a snapshot with its
   uncertainty: ``forces_std_max`` / ``forces_std_mean`` (eV/Å, per-atom committee spread as in the calculator),
   ``energy_std_per_atom`` (eV) and, with ``band_weight > 0``, ``band_std`` (eV: member standard deviation of the
   band energies within ±1 eV of the mean Fermi level on a ``band_kgrid``² Γ-centred grid) → ``candidates.extxyz``.
2. ``selected``: the ``frames_per_round`` snapshots of largest score = forces_std_max + band_weight · band_std,
   at most ``per_trajectory`` from one trajectory → ``selected.extxyz``.
3. ``labelled``: each selected structure goes to ``label_fn(atoms, frame_id, scf_only) -> frame dir`` (default
   :class:`QEFrameLabeller`: ``dft.workflow.run_frame``, kind "user" or "user-scf"); frames already written are
   not recomputed.
4. ``errors_before``: the committee against the new DFT labels (:func:`frame_errors`) and the held-out frames.
5. ``trained``: every member fine-tuned (warm start from its current weights, ``train_config`` with the grown frame
   set, ``data.bootstrap_seed`` = member + 100 · round, ``optim.max_steps`` = ``train_steps``) by ``train_fn``
   (default: ``python -m ase_wannierml.training.cli train`` in a subprocess, resumed if interrupted) → the round's
   committee file ``round_<r>/committee.pt``.
6. ``errors_after``: the new committee on the same frames → round done; the next round starts from it.

Units: Å, eV, eV/Å, K, fs.
"""
from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np
from ase import Atoms

MATERIAL_STRUCTURES = {"graphene-bilayer": "graphene", "mos2-bilayer": "mos2", "hbn-bilayer": "hbn"}
LOG_NAME = "active_log.json"
PHASES = ("sampled", "selected", "labelled", "errors_before", "trained", "errors_after")


@dataclass
class ActiveConfig:
    """Settings of an active-learning run (YAML/JSON keys = field names; lengths Å, temperatures K, times fs).

    material: ``graphene-bilayer`` or ``mos2-bilayer`` (structure builder and DFT material).
    committee: starting committee (shipped name or committee file). workdir: log and round folders.
    dataset_dir: where new frames are written (``<dataset_dir>/frames/<id>``), e.g. ``datasets/<material>``.
    train_config: training YAML of the members (its ``data.frames`` are used plus ``<dataset_dir>/frames``; its
        model section must match the committee's members, as for any warm start).
    heldout: frame directories or folders of frames to report errors on every round; only the frames the trainer
        always keeps in the test split are used (ids matching ``*-test-*`` or ``meta.json`` split "test").
    supercells: n of the n×n supercells of the primitive bilayer; strains: biaxial in-plane strains (fractions);
    shears: in-plane shear strains ε_xy; interlayer_shifts: Å added to the interlayer distance (negative =
    compressed); twists: commensurate (m, r) twisted cells (graphene (1, 1) = 21.79°, (2, 1) = 13.17°;
    MoS2 (1, 1) = 21.79°); max_atoms: larger cells are skipped.
    temperatures: K, MD temperatures drawn per trajectory; md_steps, timestep_fs, friction (1/fs), sample_every,
    equilibrate (steps before the first snapshot).
    trajectories_per_round, frames_per_round, per_trajectory: sampling and selection sizes.
    band_weight: weight of the band disagreement (eV per eV/Å) in the score; 0 skips it (cheaper).
    scf_only: SCF-only frames (energy/forces/stress; no Hamiltonian) instead of full Wannier frames.
    train_steps: optimiser steps per member per round. rounds: rounds to run. seed: master seed.
    """

    material: str
    committee: str
    workdir: str
    dataset_dir: str
    train_config: str
    heldout: list[str] = field(default_factory=list)
    supercells: list[int] = field(default_factory=lambda: [2, 3, 4])
    strains: list[float] = field(default_factory=lambda: [0.0, 0.02, -0.02])
    shears: list[float] = field(default_factory=lambda: [0.0, 0.03])
    interlayer_shifts: list[float] = field(default_factory=lambda: [0.0, -0.2])
    twists: list[list[int]] = field(default_factory=lambda: [[1, 1], [2, 1]])
    max_atoms: int = 200
    temperatures: list[float] = field(default_factory=lambda: [100.0, 300.0, 600.0, 900.0])
    md_steps: int = 200
    timestep_fs: float = 1.0
    friction: float = 0.01
    sample_every: int = 20
    equilibrate: int = 40
    trajectories_per_round: int = 4
    frames_per_round: int = 4
    per_trajectory: int = 1
    band_weight: float = 0.0
    band_kgrid: int = 3
    scf_only: bool = False
    train_steps: int = 200
    rounds: int = 1
    seed: int = 0

    def __post_init__(self) -> None:
        if self.material not in MATERIAL_STRUCTURES:
            raise ValueError(f"active: material must be one of {sorted(MATERIAL_STRUCTURES)}, got {self.material!r}")
        for name in ("md_steps", "sample_every", "trajectories_per_round", "frames_per_round", "per_trajectory",
                     "train_steps", "rounds", "max_atoms"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"active: {name} must be >= 1, got {getattr(self, name)}")
        if any(t <= 0 for t in self.temperatures):
            raise ValueError(f"active: temperatures must be > 0 K, got {self.temperatures}")
        if any(int(n) < 1 for n in self.supercells):
            raise ValueError(f"active: supercells must be >= 1, got {self.supercells}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def load_active_config(path: str | Path) -> ActiveConfig:
    """An :class:`ActiveConfig` from a YAML or JSON file; unknown keys raise ``ValueError`` naming them. Relative
    paths are taken from the current directory."""
    import yaml

    raw = yaml.safe_load(Path(path).read_text()) or {}
    known = {f.name for f in dataclasses.fields(ActiveConfig)}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ValueError(f"{path}: unknown active-learning settings {unknown}; known: {sorted(known)}")
    return ActiveConfig(**raw)


# ---------------------------------------------------------------------------------------------------- structures
def _deform(atoms: Atoms, strain: float, shear: float) -> Atoms:
    """In-plane biaxial ``strain`` and shear ε_xy applied to cell and positions (z untouched)."""
    eps = np.eye(3)
    eps[0, 0] = eps[1, 1] = 1.0 + strain
    eps[0, 1] = eps[1, 0] = shear / 2.0
    eps[2, 2] = 1.0
    out = atoms.copy()
    out.set_cell(atoms.cell.array @ eps, scale_atoms=True)
    return out


def _shift_layers(atoms: Atoms, dz: float) -> Atoms:
    out = atoms.copy()
    if dz:
        layer = out.arrays["layer"]
        pos = out.positions
        pos[layer == layer.max(), 2] += dz
        out.positions = pos
    return out


def candidate_cells(cfg: ActiveConfig) -> list[tuple[str, Atoms]]:
    """(label, Atoms) of every cell the loop may simulate: n×n supercells × strains × shears × interlayer shifts
    of the natural stacking, plus the (m, r) twisted cells; cells above ``max_atoms`` are left out."""
    from ase_wannierml.structures import bilayer, twisted_bilayer

    name = MATERIAL_STRUCTURES[cfg.material]
    out = []
    prim = bilayer(name)
    for n in cfg.supercells:
        base = prim.repeat((int(n), int(n), 1))
        if len(base) > cfg.max_atoms:
            continue
        for strain in cfg.strains:
            for shear in cfg.shears:
                for dz in cfg.interlayer_shifts:
                    a = _shift_layers(_deform(base, strain, shear), dz)
                    out.append((f"{n}x{n}-e{strain:+.3f}-g{shear:+.3f}-dz{dz:+.2f}", a))
    for m, r in cfg.twists:
        a = twisted_bilayer(name, m=int(m), r=int(r))
        if len(a) <= cfg.max_atoms:
            out.append((f"twist-m{m}-r{r}-{a.info['twist_angle']:.2f}deg", a))
    if not out:
        raise ValueError(f"active: no candidate cell has <= {cfg.max_atoms} atoms; raise max_atoms")
    return out


# ---------------------------------------------------------------------------------------------------- sampling
def band_disagreement(calc, atoms: Atoms, kgrid: int = 3, window: float = 1.0) -> float:
    """Band disagreement (eV) of a committee calculator at ``atoms``: the members' standard deviation (ddof 1) of the
    n-th band energy on a ``kgrid``² Γ-centred grid, averaged over the bands within ±``window`` eV of the mean
    Hamiltonian's Fermi level."""
    tbs = calc.get_member_hamiltonians(atoms)
    g = np.arange(kgrid) / kgrid
    k = np.array([[a, b, 0.0] for a in g for b in g])
    e = np.stack([tb.eigenvalues(k) for tb in tbs])                     # (K, nk, norb)
    ef = float(calc.get_hamiltonian(atoms).fermi_level())
    mean = e.mean(axis=0)
    sel = np.abs(mean - ef) <= window
    return float(e.std(axis=0, ddof=1)[sel].mean()) if sel.any() else 0.0


def run_md_snapshots(committee, atoms: Atoms, temperature: float, steps: int, sample_every: int,
                     timestep_fs: float = 1.0, friction: float = 0.01, equilibrate: int = 0, seed: int = 0,
                     band_weight: float = 0.0, band_kgrid: int = 3, label: str = "") -> list[Atoms]:
    """Langevin MD (ASE) of ``atoms`` with the committee-mean forces at ``temperature`` K; after ``equilibrate``
    steps a snapshot every ``sample_every`` steps, each a copy with ``info``: ``trajectory`` (label),
    ``md_temperature_K``, ``md_step``, ``forces_std_max``/``forces_std_mean`` (eV/Å), ``energy_std_per_atom`` (eV),
    ``band_std`` (eV, if ``band_weight`` > 0), ``score``. A run whose atoms come closer than the model's
    ``min_distance`` stops there (the snapshots so far are kept, ``info['md_stopped']`` on the last)."""
    from ase import units
    from ase.md.langevin import Langevin
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution

    from ase_wannierml.calculator import WannierMLCalculator

    rng = np.random.default_rng(seed)
    a = atoms.copy()
    a.calc = WannierMLCalculator(committee)
    MaxwellBoltzmannDistribution(a, temperature_K=temperature, rng=rng)
    dyn = Langevin(a, timestep_fs * units.fs, temperature_K=temperature, friction=friction / units.fs, rng=rng,
                   fixcm=False)
    out: list[Atoms] = []
    total = int(equilibrate) + int(steps)
    done = 0
    try:
        if equilibrate:
            dyn.run(int(equilibrate))
            done = int(equilibrate)
        while done < total:
            dyn.run(int(sample_every))
            done += int(sample_every)
            a.get_forces()
            r = a.calc.results
            snap = a.copy()
            snap.calc = None
            info = {"trajectory": label, "md_temperature_K": float(temperature), "md_step": done,
                    "md_seed": int(seed), "forces_std_max": float(r["forces_std"].max()),
                    "forces_std_mean": float(r["forces_std"].mean()),
                    "energy_std_per_atom": float(r["energy_std"]) / len(a)}
            if band_weight > 0:
                info["band_std"] = band_disagreement(a.calc, a, band_kgrid)
            info["score"] = info["forces_std_max"] + band_weight * info.get("band_std", 0.0)
            snap.info.update(info)
            out.append(snap)
    except ValueError as err:          # atoms too close: the committee's MD left the physical region
        if out:
            out[-1].info["md_stopped"] = str(err)[:200]
    return out


def select_frames(snapshots: Sequence[Atoms], n: int, per_trajectory: int = 1) -> list[int]:
    """Indices of the ``n`` snapshots of largest ``info['score']`` (descending), at most ``per_trajectory`` from
    one ``info['trajectory']``."""
    order = sorted(range(len(snapshots)), key=lambda i: -float(snapshots[i].info["score"]))
    taken: dict[str, int] = {}
    out = []
    for i in order:
        t = str(snapshots[i].info.get("trajectory", ""))
        if taken.get(t, 0) >= per_trajectory:
            continue
        taken[t] = taken.get(t, 0) + 1
        out.append(i)
        if len(out) == n:
            break
    return out


# ---------------------------------------------------------------------------------------------------- labels
def write_frame(frame_dir: str | Path, atoms: Atoms, energy: float, forces: np.ndarray,
                stress: Optional[np.ndarray] = None, tb=None, fermi_level: float = 0.0,
                meta: Optional[dict] = None) -> Path:
    """Write a frame directory in the training format (DEVELOPING.md) from labels computed elsewhere (another DFT
    code, or a cheap reference for tests): energy eV, forces (n_atoms, 3) eV/Å, stress Voigt-6 eV/Å³, optional
    ``TightBinding`` (Wannier90 files) with ``fermi_level`` eV in its zero. Written to a temporary folder and
    renamed (atomic)."""
    import shutil

    from ase.io import write

    frame_dir = Path(frame_dir)
    tmp = frame_dir.with_name(f".{frame_dir.name}.tmp{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    a = atoms.copy()
    a.calc = None
    forces = np.asarray(forces, dtype=float)
    if forces.shape != (len(a), 3):
        raise ValueError(f"write_frame: forces have shape {forces.shape}, expected ({len(a)}, 3)")
    a.info = {k: v for k, v in a.info.items() if isinstance(v, (int, float, str, bool))}
    a.info.update(energy=float(energy), fermi_level=float(fermi_level))
    if stress is not None:
        a.info["stress"] = np.asarray(stress, dtype=float).reshape(6)
    a.arrays["forces"] = forces
    if "layer" in atoms.arrays:
        a.arrays["layer"] = np.asarray(atoms.arrays["layer"], dtype=int)
    write(tmp / "structure.extxyz", a, format="extxyz")
    if tb is not None:
        from ase_wannierml.tb.wannier90 import write_hr, write_centres_xyz

        write_hr(tb, tmp / "wannier90_hr.dat.gz")
        write_centres_xyz(tb, tmp / "wannier90_centres.xyz")
    (tmp / "meta.json").write_text(json.dumps({"status": "ok", "reason": "", **(meta or {})}, indent=1,
                                              default=_json_default))
    if frame_dir.exists():
        shutil.rmtree(frame_dir)
    os.replace(tmp, frame_dir)
    return frame_dir


class QEFrameLabeller:
    """Default labelling function: the project's QE (+ Wannier90) workflow for a given structure,
    ``dft.workflow.run_frame(material, FrameParams(frame_id, kind="user" | "user-scf"), dataset_dir, scratch,
    runner, atoms=atoms)``; returns the frame directory (``status`` "ok" or "rejected" in its meta.json).
    ``nprocs``/``npools``: MPI ranks and k-point pools of ``pw.x``."""

    def __init__(self, material: str, dataset_dir: str | Path, scratch: str | Path, nprocs: int = 2,
                 npools: int = 2) -> None:
        self.material, self.dataset_dir, self.scratch = material, Path(dataset_dir), Path(scratch)
        self.nprocs, self.npools = nprocs, npools

    def __call__(self, atoms: Atoms, frame_id: str, scf_only: bool) -> Path:
        from ase_wannierml.dft.codes import Runner, check_codes
        from ase_wannierml.dft.materials import get_material
        from ase_wannierml.dft.sampling import FrameParams
        from ase_wannierml.dft.workflow import run_frame

        frame = self.dataset_dir / "frames" / frame_id
        if (frame / "meta.json").exists():
            return frame
        check_codes()
        material = get_material(self.material)
        notes = {k: (v.item() if hasattr(v, "item") else v) for k, v in atoms.info.items()
                 if isinstance(v, (int, float, str, bool, np.generic))}
        notes["split"] = "train"
        params = FrameParams(frame_id=frame_id, material=material.name, seed=int(atoms.info.get("md_seed", 0)),
                             kind="user-scf" if scf_only else "user", notes=notes)
        a = atoms.copy()
        a.set_array("layer", np.asarray(a.get_array("layer"), dtype=int))
        run_frame(material, params, self.dataset_dir, self.scratch, Runner(nprocs=self.nprocs, npools=self.npools),
                  atoms=a)
        return frame


# ---------------------------------------------------------------------------------------------------- errors
def frame_errors(committee, frame_dirs: Sequence[str | Path]) -> dict:
    """Committee (or single-model) errors against DFT frames (status ok, with forces): force RMSE and out-of-plane
    (z) RMSE (eV/Å), energy MAE relative to the frames' mean (eV/atom, absolute energies of different cells are not
    compared), and per frame the RMSE; for a committee also the mean forces_std (eV/Å), the fraction of force
    components within 1σ and 2σ of their atom's ``forces_std`` and per frame the max forces_std. Frames that are
    rejected or lack forces are listed under ``skipped``."""
    from ase_wannierml.calculator import WannierMLCalculator
    from ase_wannierml.training.frames import find_frames, frame_status, load_frame_dir

    paths = find_frames([p for p in frame_dirs])
    err, errz, sig, per, skipped, de = [], [], [], {}, [], []
    for p in paths:
        if frame_status(p)[0] != "ok":
            skipped.append(p.name)
            continue
        fr = load_frame_dir(p)
        if fr.forces is None:
            skipped.append(p.name)
            continue
        a = fr.atoms.copy()
        a.calc = WannierMLCalculator(committee)
        f = a.get_forces()
        r = a.calc.results
        d = f - fr.forces
        err.append(d.ravel())
        errz.append(d[:, 2])
        per[p.name] = {"n_atoms": len(a), "force_rmse": float(np.sqrt(np.mean(d ** 2))),
                       "force_rmse_z": float(np.sqrt(np.mean(d[:, 2] ** 2)))}
        if "forces_std" in r:           # committee; a single model has no spread
            sig.append(np.repeat(r["forces_std"], 3))
            per[p.name].update(forces_std_max=float(r["forces_std"].max()),
                               forces_std_mean=float(r["forces_std"].mean()))
        if fr.energy is not None:
            de.append(((a.get_potential_energy() - fr.energy) / len(a), p.name))
    if not err:
        return {"n_frames": 0, "skipped": skipped}
    e, ez = np.concatenate(err), np.concatenate(errz)
    out = {"n_frames": len(per), "force_rmse": float(np.sqrt(np.mean(e ** 2))),
           "force_rmse_z": float(np.sqrt(np.mean(ez ** 2))), "frames": per, "skipped": skipped}
    if sig:
        s = np.concatenate(sig)
        out.update(forces_std_mean=float(s.mean()), within_1sigma=float(np.mean(np.abs(e) <= s)),
                   within_2sigma=float(np.mean(np.abs(e) <= 2 * s)))
    if len(de) > 1:
        v = np.array([x for x, _ in de])
        out["energy_mae_rel_per_atom"] = float(np.mean(np.abs(v - v.mean())))
    return out


# ---------------------------------------------------------------------------------------------------- training
def default_train(config_path: Path, resume: bool) -> None:
    """Train one member with the project's trainer in a subprocess (1 thread per BLAS/OpenMP library)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "ase_wannierml.training.cli", "train", str(config_path), "--no-progress"]
    subprocess.run(cmd + (["--resume"] if resume else []), check=True, env=env)


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON-able: {type(obj)}")


def _write_json(path: Path, data: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=1, default=_json_default))
    os.replace(tmp, path)


class ActiveLoop:
    """A resumable active-learning run (module docstring). ``label_fn(atoms, frame_id, scf_only) -> frame dir``
    computes labels (default :class:`QEFrameLabeller`); ``train_fn(config_path, resume)`` trains one member
    (default: the training CLI in a subprocess); ``log`` receives progress lines."""

    def __init__(self, cfg: ActiveConfig, label_fn: Optional[Callable[[Atoms, str, bool], Path]] = None,
                 train_fn: Optional[Callable[[Path, bool], None]] = None,
                 log: Callable[[str], None] = lambda s: print(s, flush=True)) -> None:
        self.cfg = cfg
        self.work = Path(cfg.workdir)
        self.work.mkdir(parents=True, exist_ok=True)
        self.dataset = Path(cfg.dataset_dir)
        self.label_fn = label_fn or QEFrameLabeller(cfg.material, self.dataset, self.work / "scratch_dft")
        self.train_fn = train_fn or default_train
        self.log = log
        self.log_path = self.work / LOG_NAME
        if self.log_path.exists():
            self.state = json.loads(self.log_path.read_text())
            if self.state.get("config", {}).get("material") != cfg.material:
                raise ValueError(f"{self.log_path} belongs to material {self.state['config'].get('material')!r}, "
                                 f"not {cfg.material!r}: use another workdir")
        else:
            self.state = {"config": cfg.to_dict(), "rounds": []}
            self._save()

    # ------------------------------------------------------------------ state
    def _save(self) -> None:
        _write_json(self.log_path, self.state)

    def _round(self, r: int) -> dict:
        while len(self.state["rounds"]) <= r:
            self.state["rounds"].append({"round": len(self.state["rounds"]), "phases_done": [], "times_s": {}})
        return self.state["rounds"][r]

    def committee_path(self, r: int) -> str:
        """Committee used at the start of round r (the starting committee, or round r−1's retrained one)."""
        if r == 0:
            return self.cfg.committee
        prev = self.state["rounds"][r - 1] if len(self.state["rounds"]) >= r else {}
        if prev.get("source") == "external":          # a round recorded by record_round
            if not prev.get("committee_out"):
                raise ValueError(f"round {r - 1} in {self.log_path} was recorded with a retrained single model "
                                 "and no committee: train a committee from it (scripts/train_committee.py) and "
                                 "record its file as that round's committee_out, or start a new workdir")
            return str(prev["committee_out"])
        return str(self.work / f"round_{r - 1:03d}" / "committee.pt")

    def heldout_paths(self) -> list[Path]:
        """The frames of ``cfg.heldout`` that the trainer always keeps in the test split (ids matching
        ``*-test-*``, or ``meta.json`` split "test"): errors are reported on these only."""
        from types import SimpleNamespace

        from ase_wannierml.training.frames import find_frames
        from ase_wannierml.training.trainer import heldout_frame_ids

        if not self.cfg.heldout:
            return []
        paths = [p for p in find_frames(self.cfg.heldout) if p.is_dir()]
        held = heldout_frame_ids(SimpleNamespace(test_patterns=["*-test-*"], frames=self.cfg.heldout),
                                 [p.name for p in paths])
        return [p for p in paths if p.name in held]

    def _load_committee(self, ref: str):
        from ase_wannierml.model import load_model

        return load_model(ref, committee=True)

    # ------------------------------------------------------------------ run
    def run(self, rounds: Optional[int] = None) -> dict:
        """Run (or continue) ``rounds`` rounds (default ``cfg.rounds``); returns the log dict."""
        rounds = self.cfg.rounds if rounds is None else rounds
        for r in range(rounds):
            rec = self._round(r)
            if "errors_after" in rec["phases_done"]:
                continue
            self._run_round(r, rec)
        return self.state

    def _phase(self, rec: dict, name: str, fn: Callable[[], None]) -> None:
        if name in rec["phases_done"]:
            return
        t0 = time.perf_counter()
        self.log(f"[active] round {rec['round']}: {name} …")
        fn()
        rec["times_s"][name] = round(time.perf_counter() - t0, 1)
        rec["phases_done"].append(name)
        self._save()

    def _run_round(self, r: int, rec: dict) -> None:
        from ase.io import read, write

        cfg = self.cfg
        rdir = self.work / f"round_{r:03d}"
        rdir.mkdir(exist_ok=True)
        committee = self._load_committee(self.committee_path(r))
        rec["committee_in"] = self.committee_path(r)

        def sample() -> None:
            rng = np.random.default_rng([cfg.seed, r])
            cells = candidate_cells(cfg)
            trajs, snaps = [], []
            for t in range(cfg.trajectories_per_round):
                label, atoms = cells[int(rng.integers(len(cells)))]
                temp = float(cfg.temperatures[int(rng.integers(len(cfg.temperatures)))])
                seed = int(rng.integers(2 ** 31))
                name = f"r{r}-t{t}-{label}-T{temp:.0f}"
                got = run_md_snapshots(committee, atoms, temp, cfg.md_steps, cfg.sample_every, cfg.timestep_fs,
                                       cfg.friction, cfg.equilibrate, seed, cfg.band_weight, cfg.band_kgrid, name)
                trajs.append({"trajectory": name, "cell": label, "n_atoms": len(atoms), "temperature_K": temp,
                              "seed": seed, "snapshots": len(got),
                              "forces_std_max": [s.info["forces_std_max"] for s in got],
                              "stopped": next((s.info["md_stopped"] for s in got if "md_stopped" in s.info), None)})
                snaps += got
            if not snaps:
                raise RuntimeError(f"round {r}: MD gave no snapshots (every run stopped at once)")
            _atomic_write_images(rdir / "candidates.extxyz", snaps)
            rec["trajectories"] = trajs

        def select() -> None:
            snaps = read(rdir / "candidates.extxyz", index=":")
            idx = select_frames(snaps, cfg.frames_per_round, cfg.per_trajectory)
            chosen = []
            for k, i in enumerate(idx):
                a = snaps[i]
                a.info["frame_id"] = f"al-{cfg.material.split('-')[0]}-s{cfg.seed}-r{r:03d}-{k:02d}"
                chosen.append(a)
            _atomic_write_images(rdir / "selected.extxyz", chosen)
            rec["selected"] = [{key: a.info.get(key) for key in ("frame_id", "trajectory", "md_temperature_K",
                                                                  "md_step", "forces_std_max", "forces_std_mean",
                                                                  "energy_std_per_atom", "band_std", "score")}
                               | {"n_atoms": len(a)} for a in chosen]
            rec["candidates"] = {"n": len(snaps), "score_median": float(np.median([s.info["score"] for s in snaps])),
                                 "score_max": float(max(s.info["score"] for s in snaps))}

        def label() -> None:
            chosen = read(rdir / "selected.extxyz", index=":")
            frames = []
            for a in chosen:
                fid = a.info["frame_id"]
                if "layer" not in a.arrays:
                    raise ValueError(f"{fid}: the snapshot lost its 'layer' array")
                path = Path(self.label_fn(a, fid, cfg.scf_only))
                frames.append({"frame_id": fid, "path": str(path), "status": _status(path)})
            rec["labelled"] = frames

        def errors(key: str, ref: str) -> Callable[[], None]:
            def fn() -> None:
                model = self._load_committee(ref)
                new = [f["path"] for f in rec["labelled"] if f["status"] == "ok"]
                held = self.heldout_paths()
                rec[key] = {"new_frames": frame_errors(model, new) if new else {"n_frames": 0},
                            "heldout": frame_errors(model, held) if held else None}
            return fn

        def train() -> None:
            import yaml

            from ase_wannierml.model.committee import CommitteeModel, save_committee

            if not any(f["status"] == "ok" for f in rec["labelled"]):     # nothing new to learn: keep it
                save_committee(committee, rdir / "committee.pt")
                rec["committee_out"] = str(rdir / "committee.pt")
                rec["trained_members"] = 0
                return
            base = yaml.safe_load(Path(cfg.train_config).read_text())
            frames = list(base["data"]["frames"])
            own = str(self.dataset / "frames")
            if own not in frames and str(Path(own).resolve()) not in [str(Path(f).resolve()) for f in frames]:
                frames.append(own)
            members_dir = rdir / "members_in"
            members_dir.mkdir(exist_ok=True)
            outs = []
            for j, m in enumerate(committee.members):
                src = members_dir / f"m{j}.pt"
                if not src.exists():
                    m.save(src)
                run_dir = rdir / "train" / f"m{j}"
                outs.append(run_dir / "model.pt")
                if (run_dir / "DONE").exists():
                    continue
                c = json.loads(json.dumps(base))
                c["data"]["frames"] = frames
                c["data"]["cache"] = str(rdir / "train" / "dataset_cache.pt")
                c["data"]["bootstrap_seed"] = j + 100 * r
                c["optim"]["max_steps"] = cfg.train_steps
                c["optim"]["warmup_steps"] = max(1, min(int(c["optim"].get("warmup_steps", 10)),
                                                        cfg.train_steps // 10))
                c.setdefault("run", {}).update(
                    output=str(run_dir), init_from=str(src), seed=j + 100 * r, init_noise=0.0, progress=False,
                    checkpoint_every=max(1, cfg.train_steps // 4), eval_every=max(1, cfg.train_steps // 4),
                    log_every=max(1, cfg.train_steps // 10), patience=0)
                run_dir.mkdir(parents=True, exist_ok=True)
                cpath = run_dir / "config.yaml"
                cpath.write_text(yaml.safe_dump(c, sort_keys=False))
                self.train_fn(cpath, (run_dir / "checkpoints").exists())
                (run_dir / "DONE").write_text("ok\n")
            from ase_wannierml.model import load_model

            new = CommitteeModel([load_model(p) for p in outs],
                                 metadata={**committee.metadata, "active_round": r,
                                           "active_workdir": str(self.work)})
            save_committee(new, rdir / "committee.pt")
            rec["committee_out"] = str(rdir / "committee.pt")

        self._phase(rec, "sampled", sample)
        self._phase(rec, "selected", select)
        self._phase(rec, "labelled", label)
        self._phase(rec, "errors_before", errors("errors_before", self.committee_path(r)))
        self._phase(rec, "trained", train)
        self._phase(rec, "errors_after", errors("errors_after", str(rdir / "committee.pt")))
        b = rec["errors_before"]["new_frames"]
        a = rec["errors_after"]["new_frames"]
        if b.get("n_frames"):
            self.log(f"[active] round {r}: force RMSE on its {b['n_frames']} new frames {1e3 * b['force_rmse']:.0f}"
                     f" → {1e3 * a['force_rmse']:.0f} meV/Å")


def record_round(cfg: ActiveConfig, frames: Sequence[str | Path], committee_before, model_after,
                 model_after_ref: str, trained: dict, selection: str, committee_after=None,
                 committee_after_ref: Optional[str] = None) -> dict:
    """Append a round run outside :class:`ActiveLoop` to ``<workdir>/active_log.json`` in the loop's format, so
    ``wannierml active status`` lists it: e.g. frames chosen by another sampler (the MD-snapshot batch) and labelled
    already, then a retrained single model.

    frames: the round's new (training) frame dirs; committee_before: the committee at the start (its forces_std on
    the new frames is the recorded uncertainty); model_after: the retrained model (single or committee) and
    ``model_after_ref`` its file; trained: how it was trained (config, steps, time; free-form JSON); selection: how
    the frames were chosen (text). committee_after / committee_after_ref: a committee made from the new model, if
    any (the next ``ActiveLoop`` round starts from it; without one the next round refuses to start).
    Errors before/after (:func:`frame_errors`) on the new frames and on the held-out frames of ``cfg.heldout``.
    Returns the round record."""
    loop = ActiveLoop(cfg, label_fn=lambda *a: None, train_fn=lambda *a: None, log=lambda s: None)
    paths = [Path(p) for p in frames]
    held = loop.heldout_paths()
    overlap = sorted({p.name for p in paths} & {p.name for p in held})
    if overlap:
        raise ValueError(f"record_round: frames {overlap} are held-out frames; they cannot be a round's new frames")
    r = len(loop.state["rounds"])
    rec = loop._round(r)
    t0 = time.perf_counter()
    before = frame_errors(committee_before, paths)
    selected = []
    for p in paths:
        notes = ((json.loads((p / "meta.json").read_text()).get("sampling") or {}).get("notes") or {}) \
            if (p / "meta.json").is_file() else {}
        src = notes.get("source_info") or {}
        fe = before.get("frames", {}).get(p.name, {})
        selected.append({"frame_id": p.name, "n_atoms": fe.get("n_atoms"),
                         "md_temperature_K": notes.get("md_temperature_K", src.get("md_temperature_K")),
                         "md_step": notes.get("md_step", src.get("md_step")),
                         "forces_std_max": fe.get("forces_std_max"), "forces_std_mean": fe.get("forces_std_mean"),
                         "score": fe.get("forces_std_max")})
    rec.update(source="external", selection=selection, committee_in=str(cfg.committee) if r == 0 else
               loop.committee_path(r), selected=selected,
               labelled=[{"frame_id": p.name, "path": str(p), "status": _status(p)} for p in paths],
               errors_before={"new_frames": before,
                              "heldout": frame_errors(committee_before, held) if held else None},
               trained=dict(trained), model_out=str(model_after_ref),
               errors_after={"new_frames": frame_errors(model_after, paths),
                             "heldout": frame_errors(model_after, held) if held else None},
               committee_out=str(committee_after_ref) if committee_after_ref else None)
    if committee_after is not None:
        rec["errors_after_committee"] = {"heldout": frame_errors(committee_after, held) if held else None}
    rec["phases_done"] = list(PHASES)
    rec["times_s"] = {"recorded": round(time.perf_counter() - t0, 1)}
    loop._save()
    return rec


def _status(path: Path) -> str:
    meta = Path(path) / "meta.json"
    if not meta.is_file():
        return "missing"
    return str(json.loads(meta.read_text()).get("status", "ok"))


def _atomic_write_images(path: Path, images: Sequence[Atoms]) -> None:
    from ase.io import write

    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}.extxyz")
    write(tmp, list(images), format="extxyz")
    os.replace(tmp, path)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``python -m ase_wannierml.active run|status CONFIG [--rounds N]`` (also ``wannierml active ...``)."""
    import argparse

    p = argparse.ArgumentParser(prog="wannierml active", description="active learning from the committee's MD "
                                "(docs/uncertainty.md)")
    p.add_argument("action", choices=["run", "status"], help="run: run/continue the rounds; status: print the log")
    p.add_argument("config", help="YAML of ActiveConfig settings")
    p.add_argument("--rounds", type=int, default=None, help="rounds to reach (default: the config's)")
    p.add_argument("--threads", type=int, default=1, help="torch/BLAS threads (default: %(default)s)")
    args = p.parse_args(argv)
    cfg = load_active_config(args.config)
    if args.action == "status":
        path = Path(cfg.workdir) / LOG_NAME
        if not path.exists():
            print(f"no log yet ({path})")
            return 0
        for rec in json.loads(path.read_text())["rounds"]:
            b = (rec.get("errors_before") or {}).get("new_frames", {})
            a = (rec.get("errors_after") or {}).get("new_frames", {})
            hb = (rec.get("errors_before") or {}).get("heldout") or {}
            ha = (rec.get("errors_after") or {}).get("heldout") or {}
            mev = lambda x: "n/a" if x is None else f"{1e3 * x:.1f}"     # noqa: E731
            print(f"round {rec['round']}: done {rec['phases_done']}; selected "
                  f"{[s['frame_id'] for s in rec.get('selected', [])]}; force RMSE new frames "
                  f"{mev(b.get('force_rmse'))} → {mev(a.get('force_rmse'))} meV/Å; held-out "
                  f"{mev(hb.get('force_rmse'))} → {mev(ha.get('force_rmse'))} meV/Å"
                  + (f"; model {rec['model_out']}" if rec.get("model_out") else ""))
        return 0
    from ase_wannierml.threads import set_threads

    set_threads(args.threads)
    ActiveLoop(cfg).run(args.rounds)
    return 0
