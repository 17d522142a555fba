"""One frame end to end: SCF → NSCF (full grid) → wannier90 -pp → pw2wannier90 → frozen window from
projectabilities → wannier90 (projection-only gauge) → QE 'bands' check run → quality → frame directory.

Frame directory (see DEVELOPING.md, "Contract: frames produced by the DFT workflow")::

    <dataset>/frames/<frame_id>/structure.extxyz       info: energy (eV), stress (Voigt-6, eV/Å³),
                                                       fermi_level (eV); arrays: forces (eV/Å), layer
    <dataset>/frames/<frame_id>/wannier90_hr.dat.gz    as written by Wannier90 (eV, absolute zero)
    <dataset>/frames/<frame_id>/wannier90_centres.xyz
    <dataset>/frames/<frame_id>/wannier90_wsvec.dat.gz  Wigner-Seitz shifts (read with the _hr.dat by TightBinding)
    <dataset>/frames/<frame_id>/dft_check_bands.json    DFT eigenvalues at quality.CHECK_KPTS (off the Wannier mesh)
    <dataset>/frames/<frame_id>/meta.json              parameters, settings, versions, timings, quality, status

Output is written to a temporary sibling directory and renamed, so a killed run leaves no half frame.
"""
from __future__ import annotations

import gzip
import json
import math
import platform
import shutil
import socket
import time
import traceback
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from ase import Atoms
from ase.io import write

from . import qe_input, quality, w90_files, w90_input
from .codes import Runner, code_versions, wannier90_supports_projectability_window
from .materials import MaterialSpec
from .parse import parse_scf, read_xml_bands
from .sampling import FrameParams, build_structure
from .vacuum import run_vacuum_level
from ..tb.tightbinding import TightBinding

PREFIX = "frame"
SEED = "wannier90"
SHELL_LABELS = {"s": ["s"], "p": ["pz", "px", "py"], "pz": ["pz"], "d": ["dz2", "dxz", "dyz", "dx2-y2", "dxy"]}


def kmeshes(material: MaterialSpec, atoms: Atoms, params: FrameParams) -> tuple[int, int]:
    """(SCF n, NSCF n) for an n x n x 1 mesh, scaled from the primitive-cell meshes by the superlattice length
    measured in units of the reference lattice constant (strain does not change the meshes).  A structure given
    from outside (``params.kind == "user"`` or ``"user-scf"``) is scaled by sqrt(in-plane area / primitive area)."""
    if params.kind in ("user", "user-scf"):
        area = float(np.linalg.norm(np.cross(atoms.cell[0], atoms.cell[1])))
        scale = math.sqrt(area / (0.5 * math.sqrt(3.0) * material.a ** 2))
    elif params.twist_m > 0:
        m = params.twist_m
        scale = math.sqrt(3 * m * m + 3 * m + 1)
    else:
        scale = float(params.supercell)
    n_scf = max(1, int(math.floor(material.dft.kmesh_scf_1x1 / scale + 0.5)))
    n_nscf = max(1, int(math.floor(material.dft.kmesh_nscf_1x1 / scale + 0.5)))
    return n_scf, n_nscf


def orbital_map(atoms: Atoms, material: MaterialSpec) -> list[dict]:
    """Wannier-function order of Wannier90 for species-wide projections: projection lines in order of first
    appearance of the species, atoms in order within each line, real-harmonic order within each shell."""
    out = []
    symbols = atoms.get_chemical_symbols()
    for species in dict.fromkeys(symbols):
        for ia, s in enumerate(symbols):
            if s != species:
                continue
            for shell in material.dft.projections[species]:
                for lab in SHELL_LABELS[shell]:
                    out.append({"atom": ia, "element": s, "label": lab})
    return out


def _write_atomically(final_dir: Path, files: dict[str, bytes]) -> None:
    tmp = final_dir.parent / f".tmp-{final_dir.name}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    for name, data in files.items():
        (tmp / name).write_bytes(data)
    if final_dir.exists():
        shutil.rmtree(final_dir)
    tmp.rename(final_dir)


def home_cell(atoms: Atoms) -> Atoms:
    """``atoms`` with every position wrapped into the home cell along the in-plane lattice vectors a, b (in place;
    returned). c, the vacuum direction of a layered cell, is left alone so a layer never splits across it.

    A lattice translation of an atom changes no DFT result, but Wannier90 centres each projection at the site given
    in the ``.win``. MD snapshots carry unwrapped positions (a layer that slid by a few cells); a projection site two
    or more cells from the home cell sits half a Born–von Kármán supercell away on a 4×4 k-mesh, and the
    projection-only Wannier functions of those atoms come out delocalised (spread ≈ 66 Å² instead of ≈ 1 Å², band
    error 0.7 eV; found on the rejected graphene snapshots of session 16, docs/dft.md)."""
    if not np.all(np.isfinite(atoms.positions)):
        raise ValueError("structure has non-finite atomic positions (NaN or inf)")
    ab = atoms.cell.array[:2]
    if not np.all(np.isfinite(atoms.cell.array)) or np.linalg.norm(np.cross(ab[0], ab[1])) < 1e-6:
        raise ValueError(f"cell vectors a, b are degenerate or not finite: {ab.tolist()} Å")
    frac = atoms.cell.scaled_positions(atoms.positions)
    frac[:, :2] -= np.floor(frac[:, :2])
    atoms.positions = atoms.cell.cartesian_positions(frac)
    return atoms


def prepare_inputs(material: MaterialSpec, params: FrameParams, workdir: Path, atoms: Atoms | None = None) -> dict:
    """Build the structure (or take ``atoms``, which must carry a per-atom ``layer`` array) and write scf.in,
    nscf.in, bands.in, pw2wan.in and a provisional .win into ``workdir``.  Returns a dict with the atoms, meshes,
    band counts and input texts (for meta.json)."""
    dft = material.dft
    workdir.mkdir(parents=True, exist_ok=True)
    atoms = home_cell(build_structure(material, params) if atoms is None else atoms.copy())
    n_scf, n_nscf = kmeshes(material, atoms, params)
    kgrid = qe_input.uniform_kgrid(n_nscf, n_nscf, 1)
    nbnd = w90_input.nscf_nbnd_for(atoms, dft)
    num_wann = w90_input.num_wann_for(atoms, dft)
    n_excl = w90_input.num_excluded_for(atoms, dft)
    num_bands = nbnd - n_excl
    nbnd_check = n_excl + int(math.ceil(dft.check_bands_per_atom * len(atoms)))
    nbnd_check = max(nbnd_check, n_excl + num_wann)
    # the protocol's twisted cell needed more disentanglement iterations than the 400 of small cells
    dis_iter = dft.dis_num_iter * (4 if params.twist_m > 0 else 1)
    texts = {
        "scf.in": qe_input.pw_input_text(atoms, dft, "scf", PREFIX, kmesh=(n_scf, n_scf, 1)),
        "nscf.in": qe_input.pw_input_text(atoms, dft, "nscf", PREFIX, kpts_crystal=kgrid, nbnd=nbnd),
        "bands.in": qe_input.pw_input_text(atoms, dft, "bands", PREFIX, kpts_crystal=quality.CHECK_KPTS,
                                           nbnd=nbnd_check),
        "pw2wan.in": w90_input.pw2wan_text(PREFIX, SEED),
        f"{SEED}.win": w90_input.win_text(atoms, dft, (n_nscf, n_nscf, 1), kgrid, num_bands, None, dis_iter),
    }
    for name, text in texts.items():
        (workdir / name).write_text(text)
    return {"atoms": atoms, "kmesh_scf": [n_scf, n_scf, 1], "kmesh_nscf": [n_nscf, n_nscf, 1], "kgrid": kgrid,
            "nbnd_nscf": nbnd, "num_wann": num_wann, "num_bands": num_bands, "n_excluded": n_excl,
            "nbnd_check": nbnd_check, "dis_num_iter": dis_iter, "texts": texts}


def run_frame(material: MaterialSpec, params: FrameParams, dataset_dir: Path, scratch_root: Path,
              runner: Runner | None = None, criteria: quality.QualityCriteria | None = None,
              keep_scratch: bool = False, atoms: Atoms | None = None) -> dict:
    """Run the whole workflow for one frame and write ``dataset_dir/frames/<frame_id>/``. Returns meta dict.

    Errors inside the codes are caught and recorded as ``status = "rejected"`` with the reason; a killed process
    leaves no frame directory (it is rerun next time).
    """
    runner = runner or Runner()
    runner.timings = {}
    runner.cpu_timings = {}
    criteria = criteria or quality.QualityCriteria()
    dft = material.dft
    work = scratch_root / material.name / params.frame_id
    if work.exists():
        shutil.rmtree(work)
    t_start = time.perf_counter()
    meta: dict = {
        "frame_id": params.frame_id,
        "material": material.name,
        "sampling": params.to_dict(),
        "material_spec": material.to_dict(),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "host": socket.gethostname(),
        "python": platform.python_version(),
        "code_versions": code_versions(),
        "mpi": {"nprocs": runner.nprocs, "npools": runner.npools},
        "quality_criteria": criteria.to_dict(),
    }
    files: dict[str, bytes] = {}
    try:
        prep = prepare_inputs(material, params, work, atoms=atoms)
        atoms: Atoms = prep["atoms"]
        meta["inputs"] = {k: v for k, v in prep["texts"].items() if k != "nscf.in"}
        meta["inputs"]["nscf.in_head"] = prep["texts"]["nscf.in"].split("K_POINTS")[0]
        meta["settings"] = {k: prep[k] for k in ("kmesh_scf", "kmesh_nscf", "nbnd_nscf", "num_wann", "num_bands",
                                                 "n_excluded", "nbnd_check", "dis_num_iter")}
        meta["settings"]["num_iter"] = 0
        meta["settings"]["gauge"] = "projection-only after disentanglement (num_iter = 0), global-frame projections"
        meta["n_atoms"] = len(atoms)
        meta["orbitals"] = orbital_map(atoms, material)

        runner.pw("scf", "scf.in", work)
        scf = parse_scf(work / "scf.out")
        e_f = scf["fermi_level"]
        meta["fermi_level_eV"] = e_f
        meta["scf_iterations"] = scf["scf_iterations"]
        try:                                                       # zero for data.energy_zero = "vacuum"
            meta["vacuum"] = run_vacuum_level(runner, work, PREFIX)
            meta["vacuum_level_eV"] = meta["vacuum"]["vacuum_level_eV"]
        except (RuntimeError, ValueError, OSError) as exc:         # recorded; the frame itself stays usable
            meta["vacuum"] = {"error": f"{type(exc).__name__}: {exc}"[:1000]}
        if params.kind in ("scf", "user-scf"):                     # energy/forces/stress only, no Wannier step
            meta["settings"].update(num_iter=None, gauge=None, scf_only=True)
            for key in ("nscf.in_head", f"{SEED}.win", "bands.in", "pw2wan.in"):
                meta["inputs"].pop(key, None)
            meta["quality"] = {"max_force_eV_A": float(np.linalg.norm(scf["forces"], axis=1).max()),
                               "force_sum_eV_A": float(np.abs(scf["forces"].sum(axis=0)).max())}
            status, reason = "ok", "SCF-only frame"
            files["structure.extxyz"] = _structure_bytes(work, atoms, params, material, scf)
            meta["energy_eV"] = scf["energy"]
            raise _ScfOnlyDone
        runner.pw("nscf", "nscf.in", work)
        runner.run("w90pp", ["wannier90.x", "-pp", SEED], work, mpi=False)
        runner.run("pw2wannier90", ["pw2wannier90.x", "-in", "pw2wan.in"], work)

        # Frozen window from projectabilities (pitfall 2); Wannier90 3.1 has no dis_froz_proj.
        window = None
        if prep["num_bands"] > prep["num_wann"] and dft.frozen_window is not None:
            A = w90_files.read_amn(work / f"{SEED}.amn")
            e_kn = w90_files.read_eig(work / f"{SEED}.eig")
            p_kn = w90_files.projectability(A)
            window = w90_files.choose_frozen_window(e_kn, p_kn, e_f, dft.frozen_window, prep["num_wann"],
                                                    dft.proj_threshold)
            window["method"] = ("global energy window shrunk to exclude states with projectability < "
                                f"{dft.proj_threshold} (W90 3.1 lacks dis_froz_proj)")
            window["native_dis_froz_proj"] = wannier90_supports_projectability_window()
            window["requested_rel_EF_eV"] = list(dft.frozen_window)
            (work / f"{SEED}.win").write_text(w90_input.win_text(
                atoms, dft, tuple(prep["kmesh_nscf"]), prep["kgrid"], prep["num_bands"],
                (window["dis_froz_min"], window["dis_froz_max"]), prep["dis_num_iter"]))
        meta["frozen_window"] = window
        meta["inputs"][f"{SEED}.win"] = (work / f"{SEED}.win").read_text().split("begin kpoints")[0]
        runner.run("wannier90", ["wannier90.x", SEED], work, mpi=False)
        wout = w90_files.read_wout_spreads(work / f"{SEED}.wout", prep["num_wann"])

        runner.pw("bands", "bands.in", work)
        e_dft = read_xml_bands(work / "tmp" / f"{PREFIX}.save")
        # the one Wannier90 layer: Wigner-Seitz shifts (wannier90_wsvec.dat) applied, Hermiticity measured, not forced
        tb = TightBinding.from_wannier90(work / f"{SEED}_hr.dat", atoms=atoms, check_hermitian=False)
        labels = [f"{o['element']}:{o['label']}" for o in meta["orbitals"]]
        metrics = quality.wannier_metrics(tb, e_dft, e_f, dft.check_window, atoms, labels,
                                          mesh=tuple(prep["kmesh_nscf"]))
        metrics.update({
            "max_force_eV_A": float(np.linalg.norm(scf["forces"], axis=1).max()),
            "force_sum_eV_A": float(np.abs(scf["forces"].sum(axis=0)).max()),
            **wout,
        })
        meta["quality"] = metrics
        status, reason = quality.judge(metrics, criteria)

        files["structure.extxyz"] = _structure_bytes(work, atoms, params, material, scf)
        files["wannier90_hr.dat.gz"] = gzip.compress((work / f"{SEED}_hr.dat").read_bytes(), mtime=0)
        files["wannier90_centres.xyz"] = (work / f"{SEED}_centres.xyz").read_bytes()
        wsvec = work / f"{SEED}_wsvec.dat"                         # Wigner-Seitz shifts (use_ws_distance)
        if wsvec.exists():
            files["wannier90_wsvec.dat.gz"] = gzip.compress(wsvec.read_bytes(), mtime=0)
        # DFT eigenvalues of the check run (off the Wannier mesh): the oracle for interpolated bands
        files["dft_check_bands.json"] = json.dumps({
            "kpts_frac": quality.CHECK_KPTS.tolist(), "eigenvalues_eV": np.asarray(e_dft).tolist(),
            "fermi_level_eV": e_f, "note": "QE 'bands' run on the SCF density, eV, same zero as the _hr.dat"},
            default=_json_default).encode()
        meta["energy_eV"] = scf["energy"]
    except _ScfOnlyDone:
        pass
    except (RuntimeError, ValueError, OSError, np.linalg.LinAlgError) as exc:
        status, reason = "rejected", f"error: {type(exc).__name__}: {exc}"[:2000]
        meta["traceback"] = traceback.format_exc()[-4000:]
    meta["status"] = status
    meta["reason"] = reason
    meta["timings_s"] = dict(runner.timings)
    meta["timings_s"]["total"] = round(time.perf_counter() - t_start, 2)
    meta["cpu_timings_s"] = dict(runner.cpu_timings)            # user + system CPU of the codes, all ranks
    meta["cpu_timings_s"]["total"] = round(sum(runner.cpu_timings.values()), 2)
    files["meta.json"] = json.dumps(meta, indent=1, default=_json_default).encode()
    _write_atomically(Path(dataset_dir) / "frames" / params.frame_id, files)
    if not keep_scratch:
        shutil.rmtree(work, ignore_errors=True)
    return meta


class _ScfOnlyDone(Exception):
    """Internal: an SCF-only frame has all it needs after the SCF step."""


def _structure_bytes(work: Path, atoms: Atoms, params: FrameParams, material: MaterialSpec, scf: dict) -> bytes:
    """The frame's structure.extxyz (energy eV, forces eV/Å, stress eV/Å³, Fermi level eV, layer array)."""
    out = atoms.copy()
    out.info = {"frame_id": params.frame_id, "energy": scf["energy"], "stress": scf["stress"],
                "fermi_level": scf["fermi_level"], "material": material.name}
    out.set_array("forces", scf["forces"])
    out.set_array("layer", atoms.get_array("layer"))
    write(work / "structure.extxyz", out, format="extxyz")
    return (work / "structure.extxyz").read_bytes()


def _json_default(obj):
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, (np.floating, np.integer)):
        return obj.item()
    raise TypeError(f"not JSON serialisable: {type(obj)}")
