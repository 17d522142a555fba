"""Bad and edge inputs (issue 17): each gives a clear error naming the problem or the right answer; none kills the
interpreter or leaves a file half-written.

Cases that once crashed the interpreter (SIGFPE inside the native neighbour search) run in a subprocess, so a
regression fails the test instead of killing pytest. Physics is the oracle wherever an answer is expected: a 2D
cell with c = 0 must give the same energy as the same sheet with vacuum, a rigid shift must change nothing, per-atom
energies must sum to the total.
"""
from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import graphene
from ase.io import read, write

from ase_wannierml.neighbours import check_structure, neighbour_list
from ase_wannierml.structures import bilayer
from ase_wannierml.tb.tightbinding import TightBinding

from conftest import graphene_atoms, neighbour_model

REPO = Path(__file__).resolve().parents[1]
GRAPHENE_CELL = [[2.46, 0.0, 0.0], [-1.23, 2.130422, 0.0], [0.0, 0.0, 20.0]]


# ------------------------------------------------------------------------------------------------ helpers
def run_isolated(code: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter (1 thread): a SIGFPE/abort there is a failed test, not a dead pytest."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
           "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          timeout=timeout, env=env, cwd=REPO)


def assert_isolated_error(code: str, match: str) -> None:
    """``code`` must raise ValueError (printed as 'ERROR: ...') and exit normally."""
    proc = run_isolated(code)
    assert proc.returncode == 0, f"interpreter died with code {proc.returncode}: {proc.stderr[-2000:]}"
    assert "ERROR:" in proc.stdout, proc.stdout + proc.stderr[-2000:]
    import re

    assert re.search(match, proc.stdout), proc.stdout


def _cli(*argv: str) -> int:
    from ase_wannierml.cli import main

    return main(list(argv))


@pytest.fixture(scope="module")
def graphene_model():
    from ase_wannierml.model import load_model

    return load_model("graphene-bilayer")


@pytest.fixture(scope="module")
def calc(graphene_model):
    from ase_wannierml import WannierMLCalculator

    return WannierMLCalculator(graphene_model)


def fresh_calc(model, **kw):
    from ase_wannierml import WannierMLCalculator

    return WannierMLCalculator(model, **kw)


# ------------------------------------------------------------------------------------------------ geometry: crashes
NL_CASE = """
import importlib.util
import numpy as np
# the module file alone (numpy + vesin): no package import, so each isolated case starts in a fraction of a second
spec = importlib.util.spec_from_file_location("neighbours", "ase_wannierml/neighbours.py")
mod = importlib.util.module_from_spec(spec)
spec.loader.exec_module(mod)
neighbour_list = mod.neighbour_list
pos = np.array([[0.0, 0.0, 0.0], [1.42, 0.0, 0.0]])
cell = np.array({cell})
pbc = {pbc}
{edit}
try:
    out = neighbour_list(pos, cell, pbc, {cutoff}, full=True)
    print("OK", len(out[0]), float(np.min(out[3])) if len(out[3]) else -1.0)
except ValueError as err:
    print("ERROR:", err)
"""


@pytest.mark.parametrize("cell, pbc, edit, match", [
    ([[2.46, 0, 0], [2.46, 0, 0], [0, 0, 20]], (True, True, False), "", r"degenerate cell"),        # a1 = a2
    ([[2.46, 0, 0], [2.46, 1e-9, 0], [0, 0, 20]], (True, True, False), "", r"degenerate cell"),     # nearly
    (GRAPHENE_CELL, (True, True, False), "pos[1, 0] = np.nan", r"atom 1 has a non-finite position"),
    (GRAPHENE_CELL, (True, True, False), "pos[0, 2] = np.inf", r"atom 0 has a non-finite position"),
    (GRAPHENE_CELL, (True, True, True), "cell[2, 2] = np.nan", r"cell has non-finite entries"),
    ([[2.46, 0, 0], [-1.23, 2.13, 0], [0, 0, 0]], (True, True, True), "", r"axis 2 is periodic but .* zero length"),
    ([[1e-3, 0, 0], [0, 1e-3, 0], [0, 0, 20]], (True, True, False), "", r"far too small"),
], ids=["a1=a2", "nearly-degenerate", "nan-position", "inf-position", "nan-cell", "zero-periodic-vector",
        "overlapping-images"])
def test_bad_geometry_is_refused_before_native_code(cell, pbc, edit, match):
    assert_isolated_error(NL_CASE.format(cell=cell, pbc=pbc, edit=edit, cutoff=5.0), match)


@pytest.mark.parametrize("edit, pbc", [
    ("pos[1, 2] = 1e12", (True, True, False)),          # far out along the vacuum axis of a slab (was SIGFPE)
    ("pos[1, 2] = 1e6", (True, True, False)),
    ("pos[1, 0] = 1e12; cell = np.zeros((3, 3))", (False, False, False)),   # a molecule with a far atom
], ids=["slab-z-1e12", "slab-z-1e6", "molecule-x-1e12"])
def test_far_away_atom_is_isolated_not_a_crash(edit, pbc):
    """The far atom has no neighbours; the others keep theirs (the answer, not a refusal)."""
    proc = run_isolated(NL_CASE.format(cell=GRAPHENE_CELL, pbc=pbc, edit=edit, cutoff=5.0))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.startswith("OK"), proc.stdout + proc.stderr[-2000:]
    # each atom alone with its own periodic images (slab), or no pairs at all (molecule)
    single = neighbour_list([[0.0, 0.0, 0.0]], GRAPHENE_CELL, pbc, 5.0, full=True)[0] if pbc[0] else []
    assert int(proc.stdout.split()[1]) == 2 * len(single)


def test_degenerate_cell_through_the_calculator_is_an_error_not_a_crash():
    code = """
    from ase import Atoms
    from ase_wannierml import WannierMLCalculator
    atoms = Atoms("C2", positions=[[0, 0, 0], [1.42, 0, 0]], cell=[[2.46, 0, 0], [2.46, 0, 0], [0, 0, 20]],
                  pbc=(True, True, False))
    atoms.calc = WannierMLCalculator("graphene-bilayer")
    try:
        atoms.get_potential_energy()
        print("NO ERROR")
    except ValueError as err:
        print("ERROR:", err)
    """
    assert_isolated_error(code, r"degenerate cell: the periodic cell vectors \[0, 1\]")


def test_shifts_are_for_the_positions_as_given():
    """Atoms far outside the cell along periodic axes: r_j + S·cell − r_i has the listed length."""
    atoms = graphene_atoms()
    atoms.positions[1] += 7 * atoms.cell[0] - 3 * atoms.cell[1]
    i, j, S, d = neighbour_list(atoms.positions, atoms.cell[:], atoms.pbc, 5.0, full=True)
    vec = atoms.positions[j] + S @ atoms.cell[:] - atoms.positions[i]
    np.testing.assert_allclose(np.linalg.norm(vec, axis=1), d, atol=1e-9)
    assert np.isclose(d.min(), 2.46 / np.sqrt(3), atol=1e-6)


def test_check_structure_accepts_a_molecule_without_cell():
    check_structure([[0, 0, 0], [1.1, 0, 0]], np.zeros((3, 3)), False, cutoff=5.0)


# ------------------------------------------------------------------------------------------------ geometry: answers
def test_ase_2d_graphene_with_c_zero_equals_the_sheet_with_vacuum(calc, graphene_model):
    """ase.build.graphene(): c = 0 and pbc (T, T, F); was 19 eV off with NaN forces (identity box)."""
    import warnings

    flat = graphene()
    assert flat.cell.rank == 2
    flat.calc = calc
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        e_flat, f_flat = flat.get_potential_energy(), flat.get_forces()
    boxed = graphene(vacuum=10.0)
    boxed.pbc = (True, True, False)
    boxed.calc = fresh_calc(graphene_model)
    assert e_flat == pytest.approx(boxed.get_potential_energy(), abs=1e-6)
    assert np.isfinite(f_flat).all() and np.abs(f_flat).max() < 1e-4          # zero by symmetry
    e_k = flat.calc.get_hamiltonian().eigenvalues([[1 / 3, 1 / 3, 0]])[0]
    assert e_k[1] - e_k[0] < 1e-3                                              # Dirac point at K


def test_dispersion_of_a_c_zero_cell_equals_the_boxed_sheet(graphene_model):
    from ase_wannierml.dispersion import dispersion_from_config

    disp = dispersion_from_config(graphene_model.config)
    flat, boxed = graphene(), graphene(vacuum=10.0)
    boxed.pbc = (True, True, False)
    a, b = disp.compute(flat), disp.compute(boxed)
    assert np.isfinite(a["energy"]) and a["energy"] == pytest.approx(b["energy"], abs=1e-10)
    np.testing.assert_allclose(a["forces"], b["forces"], atol=1e-10)
    assert a["energies"].sum() == pytest.approx(a["energy"], abs=1e-10)


@pytest.mark.parametrize("shift", [[1e6, 1e6, 0.0], [0.0, 0.0, 1e6], [-3e5, 2e5, -1e5]],
                         ids=["in-plane", "vacuum-axis", "mixed"])
def test_rigid_shift_changes_nothing_in_float32(graphene_model, shift):
    """Was 0.11 eV / 2 eV/Å for 1e6 Å (positions cast to float32 before wrapping)."""
    atoms = bilayer("graphene")
    atoms.calc = fresh_calc(graphene_model)
    e0, f0 = atoms.get_potential_energy(), atoms.get_forces()
    moved = atoms.copy()
    moved.positions += shift
    moved.calc = fresh_calc(graphene_model)
    assert moved.get_potential_energy() == pytest.approx(e0, abs=2e-5)
    np.testing.assert_allclose(moved.get_forces(), f0, atol=2e-4)


def test_far_atom_above_a_slab_does_not_interact(graphene_model):
    """An atom 1e12 Å above the sheet: E = E(sheet) + E(that atom's own periodic lattice), sheet forces unchanged
    (was SIGFPE)."""
    sheet = graphene(vacuum=10.0)
    sheet.pbc = (True, True, False)
    sheet.calc = fresh_calc(graphene_model)
    e_sheet, f_sheet = sheet.get_potential_energy(), sheet.get_forces()
    lone = Atoms("C", positions=[[0.3, 0.2, 5.0]], cell=sheet.cell, pbc=sheet.pbc)   # its own in-plane images
    lone.calc = fresh_calc(graphene_model)
    both = sheet + Atoms("C", positions=[[0.3, 0.2, 1e12]])
    both.calc = fresh_calc(graphene_model)
    assert both.get_potential_energy() == pytest.approx(e_sheet + lone.get_potential_energy(), abs=1e-5)
    np.testing.assert_allclose(both.get_forces()[:2], f_sheet, atol=1e-5)


# ------------------------------------------------------------------------------------------------ layer labels
@pytest.mark.parametrize("labels, match", [
    ([0, 1, 0, 1], r"puts bonded atoms 0 \(C\) and 1 \(C\), 1\.42\d Å apart, in different layers"),
    ([0.5, 0.5, 1.0, 1.0], r"must hold integer layer labels"),
    ([0, 0, 1], r"has shape \(3,\), expected \(4,\)"),
], ids=["split-bonds", "non-integer", "wrong-length"])
def test_wrong_layer_array_is_refused(graphene_model, labels, match):
    """[0, 1, 0, 1] once moved bands by 8 eV without a word."""
    atoms = bilayer("graphene")
    atoms.calc = fresh_calc(graphene_model)
    if len(labels) == len(atoms):
        atoms.arrays["layer"] = np.array(labels)
    else:
        atoms.arrays.pop("layer", None)
        atoms.new_array("layer", np.zeros(len(atoms), dtype=int))
        atoms.arrays["layer"] = np.array(labels)          # bypass ASE's shape check, as a careless edit would
    with pytest.raises(ValueError, match=match):
        atoms.calc.get_hamiltonian()
    with pytest.raises(ValueError, match=match):                    # and the energy path, every time
        atoms.get_potential_energy()


def test_editing_layer_after_a_calculation_does_not_leave_a_stale_hamiltonian(graphene_model):
    atoms = bilayer("graphene")
    atoms.calc = fresh_calc(graphene_model)
    tb = atoms.calc.get_hamiltonian()
    assert atoms.calc.get_hamiltonian() is tb                       # cached while nothing changes
    atoms.arrays["layer"] = np.array([1, 1, 0, 0])                  # valid relabelling: a new H object
    assert atoms.calc.get_hamiltonian() is not tb
    atoms.arrays["layer"] = np.array([0, 1, 0, 1])                  # the wrong labels are seen, not the cache
    with pytest.raises(ValueError, match="different layers"):
        atoms.calc.get_hamiltonian()


def test_shared_calculator_does_not_answer_for_the_wrong_atoms(graphene_model):
    """b = a.copy(); b.calc = a.calc made a.calc.get_hamiltonian() return b's H."""
    a = bilayer("graphene")
    a.calc = fresh_calc(graphene_model)
    ref = a.calc.get_hamiltonian().eigenvalues([[0, 0, 0]])
    b = a.copy()
    b.positions[3, 2] += 0.3
    b.calc = a.calc
    with pytest.raises(ValueError, match="attached to 2 Atoms objects with different structures"):
        a.calc.get_hamiltonian()
    np.testing.assert_allclose(a.calc.get_hamiltonian(a).eigenvalues([[0, 0, 0]]), ref, atol=1e-9)
    assert not np.allclose(a.calc.get_hamiltonian(b).eigenvalues([[0, 0, 0]]), ref, atol=1e-4)


# ------------------------------------------------------------------------------------------------ calculator args
@pytest.mark.parametrize("kwargs, exc, match", [
    ({"default_dtype": "float64"}, TypeError, r"unknown keyword argument\(s\) 'default_dtype' \(did you mean 'dtype'\?\)"),
    ({"hamiltonain_threshold": 0.1}, TypeError, r"'hamiltonain_threshold' \(did you mean 'hamiltonian_threshold'\?\)"),
    ({"dtype": "float16"}, ValueError, r"dtype must be torch.float32 / torch.float64"),
    ({"dtype": torch.int64}, ValueError, r"dtype must be"),
    ({"hamiltonian_threshold": float("nan")}, ValueError, r"hamiltonian_threshold must be a finite number >= 0 eV"),
    ({"hamiltonian_threshold": -0.1}, ValueError, r"hamiltonian_threshold must be a finite number >= 0 eV"),
    ({"device": "no-such-device"}, ValueError, r"invalid device 'no-such-device'"),
], ids=["mace-default_dtype", "typo", "float16", "int64", "nan-threshold", "negative-threshold", "bad-device"])
def test_bad_calculator_arguments(graphene_model, kwargs, exc, match):
    with pytest.raises(exc, match=match):
        fresh_calc(graphene_model, **kwargs)


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA present")
def test_cuda_without_cuda_is_a_clear_error(graphene_model):
    with pytest.raises(ValueError, match=r"device 'cuda' requested but CUDA is not available"):
        fresh_calc(graphene_model, device="cuda")


def test_dtype_string_and_no_in_place_conversion_of_the_callers_model(graphene_model):
    atoms = bilayer("graphene")
    c32 = fresh_calc(graphene_model)
    atoms.calc = c32
    e32 = atoms.get_potential_energy()
    c64 = fresh_calc(graphene_model, dtype="float64")            # MACE users' spelling
    assert c64.dtype == torch.float64 and next(c64.model.parameters()).dtype == torch.float64
    assert next(graphene_model.parameters()).dtype == torch.float32          # the caller's model is untouched
    b = atoms.copy()
    b.calc = c64
    assert b.get_potential_energy() == pytest.approx(e32, abs=1e-4)
    c32.reset()
    assert atoms.get_potential_energy() == pytest.approx(e32, abs=1e-9)       # first calculator still works


@pytest.mark.parametrize("name, structure", [("graphene-bilayer", "graphene"), ("mos2-bilayer", "MoS2")])
def test_per_atom_energies_include_dispersion_and_sum_to_the_total(name, structure):
    from ase_wannierml import WannierMLCalculator

    atoms = bilayer(structure)
    atoms.calc = WannierMLCalculator(name)
    energies = atoms.get_potential_energies()
    assert energies.shape == (len(atoms),)
    assert energies.sum() == pytest.approx(atoms.get_potential_energy(), abs=1e-8)
    # equivalent atoms of the two layers of an AB/2H bilayer carry equal energies by symmetry
    assert np.ptp(energies[atoms.numbers == atoms.numbers[0]]) < 0.05


# ------------------------------------------------------------------------------------------------ tight binding
def test_nan_pruning_threshold_is_refused():
    tb = neighbour_model(graphene_atoms(), -2.7, 0.0, 1.5)
    with pytest.raises(ValueError, match="pruning threshold must be a finite energy"):
        tb.pruned(float("nan"))


@pytest.mark.parametrize("kwargs, match", [
    ({"width": 1e-9}, r"smearing width 1e-09 eV is below the energy-grid spacing"),
    ({"width": float("nan")}, r"smearing width must be a positive energy"),
    ({"width": 0.0}, r"smearing width must be a positive"),
], ids=["width-1e-9", "width-nan", "width-0"])
def test_dos_width_below_grid_resolution_is_refused(kwargs, match):
    """width=1e-9 returned a DOS of zeros."""
    tb = neighbour_model(graphene_atoms(), -2.7, 0.0, 1.5)
    with pytest.raises(ValueError, match=match):
        tb.dos(kpts=(6, 6, 1), **kwargs)


def test_dos_at_resolvable_width_integrates_to_the_orbital_count():
    tb = neighbour_model(graphene_atoms(), -2.7, 0.0, 1.5)
    d = tb.dos(kpts=(6, 6, 1), width=0.05, npts=2000)
    assert np.trapezoid(d.get_weights(), d.get_energies()) == pytest.approx(2.0, abs=1e-3)


def test_calculator_dos_with_tiny_width_is_refused(calc):
    atoms = graphene(vacuum=10.0)
    atoms.pbc = (True, True, False)
    with pytest.raises(ValueError, match="below the energy-grid spacing"):
        calc.get_dos(atoms, width=1e-9)


@pytest.mark.parametrize("near", [float("nan"), float("inf")])
def test_non_finite_near_is_refused(near):
    """near=nan returned the lowest bands."""
    tb = neighbour_model(graphene_atoms(), -2.7, 0.0, 1.5)
    with pytest.raises(ValueError, match="near must be a finite energy"):
        tb.eigenvalues([[0, 0, 0]], num=1, near=near)


@pytest.mark.parametrize("kwargs", [{"fmax": float("nan")}, {"fmax": 0.0}, {"smax": float("inf"), "cell": True}],
                         ids=["fmax-nan", "fmax-0", "smax-inf"])
def test_relax_thresholds_must_be_finite_and_positive(calc, kwargs):
    """fmax=nan never converged (every comparison with NaN is False)."""
    from ase_wannierml.relaxation import relax

    atoms = bilayer("graphene")
    atoms.calc = calc
    with pytest.raises(ValueError, match=r"fmax and smax must be finite and > 0"):
        relax(atoms, logfile=None, **kwargs)


# ------------------------------------------------------------------------------------------------ model files
@pytest.mark.parametrize("damage, match", [
    ("flip", r"is a corrupted model file: the checksum of its record"),
    ("truncate", r"is not a readable model file \(truncated or corrupted\?\)"),
    ("text", r"is not a readable model file"),
], ids=["flipped-bytes", "truncated", "not-a-model"])
def test_damaged_model_file_is_refused(tmp_path, damage, match):
    from ase_wannierml.model import load_model
    from ase_wannierml.model.io import resolve_model_path

    data = bytearray(resolve_model_path("graphene-bilayer").read_bytes())
    if damage == "flip":                 # inside the weights: torch alone loads this silently
        k = len(data) // 2
        data[k:k + 8] = bytes(b ^ 0xFF for b in data[k:k + 8])
    elif damage == "truncate":
        data = data[: len(data) // 2]
    else:
        data = bytearray(b"not a model\n")
    bad = tmp_path / "model.pt"
    bad.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=match):
        load_model(bad)


# ------------------------------------------------------------------------------------------------ training data
def _frames(tmp_path: Path, n: int = 3) -> Path:
    from ase_wannierml.training.synthetic import write_synthetic_frames

    folder = tmp_path / "frames"
    write_synthetic_frames(folder, n, seed=1)
    return folder


def _build(folder: Path, on_error: str = "raise"):
    from ase_wannierml.model.config import ModelConfig
    from ase_wannierml.training.dataset import BuildOptions, build_dataset
    from ase_wannierml.training.setup import graph_functions

    cfg = ModelConfig(species=("C",), orbitals={"C": ("pz",)})
    graph_fn, pairs_fn = graph_functions(cfg)
    return build_dataset([folder], graph_fn, pairs_fn, BuildOptions({"C": ["pz"]}, on_error=on_error))


@pytest.mark.parametrize("damage, match", [
    ("no-structure", r"frame frame_0001: no structure\.extxyz in .*frame_0001"),
    ("bad-gzip", r"frame frame_0001: .*wannier90_hr\.dat\.gz.*(BadGzipFile|Not a gzipped)"),
    ("truncated-gzip", r"frame frame_0001: .*wannier90_hr\.dat\.gz.*(EOFError|end-of-stream|damaged)"),
    ("bad-meta", r"frame frame_0001: meta\.json is not valid JSON"),
    ("bad-layer", r"frame frame_0001: atoms\.arrays\[\"layer\"\] must hold integer layer labels"),
])
def test_damaged_frame_names_the_frame_and_on_error_skip_leaves_it_out(tmp_path, damage, match):
    from ase_wannierml.training.assign import FrameError

    folder = _frames(tmp_path)
    frame = folder / "frame_0001"
    if damage == "no-structure":
        (frame / "structure.extxyz").unlink()                      # was silently skipped
    elif damage == "bad-gzip":
        (frame / "wannier90_hr.dat.gz").write_bytes(b"this is not gzip data" * 10)
    elif damage == "truncated-gzip":
        data = (frame / "wannier90_hr.dat.gz").read_bytes()
        (frame / "wannier90_hr.dat.gz").write_bytes(data[: len(data) // 2])
    elif damage == "bad-meta":
        (frame / "meta.json").write_text('{"status": "ok", ')
    else:
        atoms = read(frame / "structure.extxyz")
        atoms.arrays["layer"] = np.full(len(atoms), 0.5)
        write(frame / "structure.extxyz", atoms)
    with pytest.raises(FrameError, match=match):
        _build(folder)
    ds = _build(folder, on_error="skip")
    assert "frame_0001" not in ds.frame_ids and len(ds) == 2
    assert "frame_0001" in ds.rejected


def test_evaluate_on_an_empty_folder_fails(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert _cli("evaluate", "graphene-bilayer", str(empty)) == 1
    assert "no usable frames" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------------ training runs
def test_train_refuses_a_folder_holding_another_run(tmp_path):
    from ase_wannierml.training.synthetic import tiny_train_config
    from ase_wannierml.training.trainer import Trainer

    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "model.pt").write_bytes(b"best model of an earlier run")
    (run / "checkpoints" / "step_00005000.pt").write_bytes(b"x")
    cfg = tiny_train_config(tmp_path / "frames", run)
    with pytest.raises(FileExistsError, match=r"already holds a run .*--resume.*--overwrite"):
        Trainer(cfg)
    assert (run / "model.pt").read_bytes() == b"best model of an earlier run"
    with pytest.raises(ValueError, match="exclude each other"):
        Trainer(cfg, resume=True, overwrite=True)


def test_overwrite_deletes_the_old_run_and_a_log_alone_is_kept_aside(tmp_path):
    from ase_wannierml.training.trainer import _claim_run_folder

    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "model.pt").write_bytes(b"old")
    (run / "metrics.jsonl").write_text("{}\n")
    (run / "dataset_cache.pt").write_bytes(b"cache")
    (run / "checkpoints" / "step_00005000.pt").write_bytes(b"x")
    _claim_run_folder(run, overwrite=True, is_main=True)
    assert sorted(p.name for p in run.rglob("*") if p.is_file()) == ["dataset_cache.pt"]
    (run / "metrics.jsonl").write_text("{}\n")                   # a run stopped before its first checkpoint
    _claim_run_folder(run, overwrite=False, is_main=True)
    assert (run / "metrics.previous.jsonl").exists() and not (run / "metrics.jsonl").exists()


def test_checkpoints_prune_only_their_own_and_fall_back_past_a_truncated_newest(tmp_path, capsys):
    from ase_wannierml.training import checkpoint as ckpt

    run = tmp_path / "run"
    foreign = ckpt.checkpoint_dir(run) / "step_00005000.pt"
    foreign.parent.mkdir(parents=True)
    torch.save({"step": 5000}, foreign)
    own: list[Path] = []
    for step in (1, 2, 3):
        ckpt.save_checkpoint({"step": step}, run, step, keep=2, own=own)
    names = sorted(p.name for p in ckpt.list_checkpoints(run))
    assert names == ["step_00000002.pt", "step_00000003.pt", "step_00005000.pt"]   # the foreign file survives
    foreign.unlink()
    newest = ckpt.checkpoint_dir(run) / "step_00000003.pt"
    newest.write_bytes(newest.read_bytes()[:100])                  # the disk filled up during the last save
    state = ckpt.load_latest(run)
    assert state["step"] == 2
    assert "skipping unreadable checkpoint" in capsys.readouterr().out
    (ckpt.checkpoint_dir(run) / "step_00000002.pt").write_bytes(b"")
    with pytest.raises(ValueError, match="no readable checkpoint"):
        ckpt.load_latest(run)


# ------------------------------------------------------------------------------------------------ CLI files
@pytest.fixture
def structure_files(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    atoms = bilayer("graphene")
    write("in.extxyz", atoms)
    write("md_run.traj", atoms)
    return {p: Path(p).read_bytes() for p in ("in.extxyz", "md_run.traj")}


@pytest.mark.parametrize("argv, match", [
    (["relax", "md_run.traj", "-o", "md_run.extxyz"], r"trajectory .*md_run\.traj is the input file"),
    (["md", "in.extxyz", "-o", "in.extxyz"], r"output \(-o\) in\.extxyz is the input file"),
    (["relax", "in.extxyz", "-o", "./in.extxyz"], r"is the input file"),
    (["export", "in.extxyz", "-o", "in"], None),                       # writes in_hr.dat: no clash, runs
    (["md", "in.extxyz", "--timestep", "1e6"], r"--timestep 1000000\.0 fs: must be > 0 and <= 10"),
    (["md", "in.extxyz", "--timestep", "0"], r"--timestep 0\.0 fs"),
    (["md", "in.extxyz", "--timestep", "nan"], r"--timestep nan fs"),
    (["md", "in.extxyz", "--steps", "-5"], r"--steps must be >= 0"),
    (["md", "in.extxyz", "-o", "POSCAR"], r"holds one structure"),
    (["relax", "in.extxyz", "--trajectory", "steps.extxyz"], r"use a \.traj name"),
], ids=["relax-default-traj-is-input", "md-output-is-input", "relax-output-is-input-other-spelling", "export-ok",
        "md-timestep-1e6", "md-timestep-0", "md-timestep-nan", "md-negative-steps", "md-single-frame-format",
        "relax-traj-not-traj"])
def test_cli_refuses_outputs_that_destroy_inputs_or_cannot_work(structure_files, capsys, argv, match):
    rc = _cli(*argv)
    for name, data in structure_files.items():
        assert Path(name).read_bytes() == data, f"{name} was modified"
    if match is None:
        assert rc == 0 and Path("in_hr.dat").is_file() and Path("in_centres.xyz").is_file()
        assert not list(Path(".").glob(".*.tmp*"))
        tb = TightBinding.from_wannier90("in_hr.dat")
        assert tb.nnz > 0
        return
    assert rc == 2
    import re

    assert re.search(match, capsys.readouterr().err)


def test_md_writes_the_format_of_its_extension(structure_files):
    assert _cli("md", "in.extxyz", "-o", "run.extxyz", "--steps", "2", "--interval", "1") == 0
    text = Path("run.extxyz").read_text()                       # text, not a binary trajectory under that name
    assert text.startswith("4\n")
    frames = read("run.extxyz", ":", format="extxyz")
    assert len(frames) == 3 and all(len(f) == 4 for f in frames)
    assert not list(Path(".").glob(".*.tmp*"))


@pytest.mark.parametrize("interrupt", [KeyboardInterrupt, RuntimeError])
def test_interrupted_write_leaves_the_old_file(tmp_path, interrupt):
    """Ctrl-C (or an error) in the middle of writing: the previous file stays whole, no temporary file remains."""
    from ase_wannierml.cli import atomic_output

    target = tmp_path / "out.extxyz"
    target.write_text("previous complete contents\n")
    with pytest.raises(interrupt):
        with atomic_output(target) as tmp:
            tmp.write_text("half a fr")
            raise interrupt("stopped while writing")
    assert target.read_text() == "previous complete contents\n"
    assert list(tmp_path.iterdir()) == [target]


def test_export_interrupted_mid_write_keeps_whole_files(structure_files, monkeypatch):
    """Ctrl-C while the export writes its companion files: every file is the old or the new one, whole."""
    import ase_wannierml.tb.wannier90 as w90

    assert _cli("export", "in.extxyz", "-o", "prev") == 0
    before = TightBinding.from_wannier90("prev_hr.dat")

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(w90, "write_win", interrupted)
    with pytest.raises(KeyboardInterrupt):
        _cli("export", "in.extxyz", "-o", "prev")
    after = TightBinding.from_wannier90("prev_hr.dat")
    assert after.nnz == before.nnz > 0
    np.testing.assert_allclose(after.eigenvalues([[0, 0, 0]]), before.eigenvalues([[0, 0, 0]]), atol=1e-5)
    assert not list(Path(".").glob(".*.tmp*")) and not list(Path(".").glob("*.tmp"))


def test_md_interrupted_keeps_whole_frames(structure_files, monkeypatch):
    """Ctrl-C during MD: the frames written so far are readable under the output name."""
    from ase.md.verlet import VelocityVerlet

    original = VelocityVerlet.step
    calls = {"n": 0}

    def step(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return original(self, *args, **kwargs)

    monkeypatch.setattr(VelocityVerlet, "step", step)
    with pytest.raises(KeyboardInterrupt):
        _cli("md", "in.extxyz", "-o", "run.extxyz", "--steps", "10", "--interval", "1")
    frames = read("run.extxyz", ":")
    assert len(frames) == 3 and all(len(f) == 4 for f in frames)
    assert not list(Path(".").glob(".*.tmp*"))


def test_evaluate_json_is_written_atomically(tmp_path):
    from ase_wannierml.cli import atomic_write_text

    target = tmp_path / "m.json"
    atomic_write_text(target, json.dumps({"a": 1}))
    assert json.loads(target.read_text()) == {"a": 1} and list(tmp_path.iterdir()) == [target]


def test_gzip_frame_helper_sanity(tmp_path):
    """The corrupt-gzip cases above really are unreadable by gzip (the test cannot pass vacuously)."""
    bad = tmp_path / "x.gz"
    bad.write_bytes(b"this is not gzip data" * 10)
    with pytest.raises(gzip.BadGzipFile):
        gzip.open(bad).read()


# ------------------------------------------------------------------------------- session 7 additions
@pytest.mark.parametrize("case", ["nan_force", "zero_mass", "nan_step", "zero_step", "wrong_shape"])
def test_frozen_phonon_frequency_refuses_bad_input(case):
    from ase_wannierml.elph.frozen import frozen_phonon_frequency

    p = np.zeros((2, 3)); p[0, 0] = 1.0
    f_plus, f_minus, masses, step = -p.copy(), p.copy(), np.array([12.0, 12.0]), 0.02
    if case == "nan_force":
        f_plus[1, 2] = np.nan
    elif case == "zero_mass":
        masses[1] = 0.0
    elif case == "nan_step":
        step = float("nan")
    elif case == "zero_step":
        step = 0.0
    else:
        p = p[:, :2]
    with pytest.raises(ValueError, match="non-finite|masses|step|must agree"):
        frozen_phonon_frequency(f_plus, f_minus, p, masses, step)


def test_frozen_phonon_frequency_sane_input_gives_the_harmonic_answer():
    """The same call with good input: F = -k λ p̂ on one atom gives ω = sqrt(k/M) (the oracle of the cases above)."""
    from ase_wannierml.elph.frozen import frozen_phonon_frequency
    from ase_wannierml.elph.phonons import EV_TO_CM, OMEGA_EV

    p = np.zeros((2, 3)); p[0, 0] = 1.0
    k, step = 30.0, 0.02
    w = frozen_phonon_frequency(-k * step * p, k * step * p, p, np.array([12.0, 1.0]), step)
    assert w == pytest.approx(np.sqrt(k / 12.0) * OMEGA_EV * EV_TO_CM, rel=1e-12)


def test_frozen_matrix_and_symmetry_refuse_nan_and_bad_shapes():
    from ase_wannierml.elph.frozen import matrix_from_real_pattern, sign_reversing_symmetry
    from ase_wannierml.elph.phonons import make_supercell

    atoms = bilayer("graphene")
    sc = make_supercell(atoms, (3, 3, 1))
    n, q = len(sc.atoms), [1 / 3, 1 / 3, 0.0]
    norb = np.ones(len(atoms), int)
    assert np.all(np.isfinite(matrix_from_real_pattern(np.eye(n), sc, norb, [0, 0, 0], q)))   # good input works
    dh = np.zeros((n, n)); dh[0, 1] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        matrix_from_real_pattern(dh, sc, norb, [0, 0, 0], q)
    with pytest.raises(ValueError, match="must be"):
        matrix_from_real_pattern(np.zeros((n, n + 1)), sc, norb, [0, 0, 0], q)
    with pytest.raises(ValueError, match="p_hat"):
        sign_reversing_symmetry(atoms, np.full((len(atoms), 3), np.nan), 0.02)
    with pytest.raises(ValueError, match="step"):
        sign_reversing_symmetry(atoms, np.zeros((len(atoms), 3)), -1.0)


def test_training_repeat_pattern_matching_no_training_frame_is_refused(tmp_path):
    """data.repeat with a glob that matches no training frame (a typo, or only held-out frames) would leave the
    weighting silently without effect."""
    from ase_wannierml.training.synthetic import tiny_train_config, write_synthetic_frames
    from ase_wannierml.training.trainer import Trainer

    write_synthetic_frames(tmp_path / "frames", 4, seed=1)
    cfg = tiny_train_config(tmp_path / "frames", tmp_path / "run",
                            data={"cache": str(tmp_path / "c.pt"), "repeat": {"md2x2-typo-*": 3}},
                            optim={"max_steps": 1, "batch_size": 2})
    with pytest.raises(ValueError, match="md2x2-typo"):
        Trainer(cfg)


def test_kmesh_symmetry_survives_spglib_exceptions(monkeypatch):
    """phonopy switches spglib to raising exceptions (``spglib.error.OLD_ERROR_HANDLING = False``) for the whole
    process. Our irreducible k-mesh must then fall back to the full mesh for a cell spglib cannot handle (a molecule
    in a zero cell) and still give the clear "periodic" error, not a SpglibCppError; a good cell keeps its symmetry
    reduction with either setting."""
    import spglib.error

    from ase_wannierml import WannierMLCalculator
    from ase_wannierml.structures import bilayer
    from ase_wannierml.tb.kmesh import kpoint_mesh

    monkeypatch.setattr(spglib.error, "OLD_ERROR_HANDLING", False)
    molecule = Atoms("C2", positions=[[0, 0, 0], [0, 0, 1.4]])
    molecule.calc = WannierMLCalculator("graphene-bilayer")
    with pytest.raises(ValueError, match="periodic"):
        molecule.calc.get_band_structure()
    good = bilayer("graphene")
    good.calc = WannierMLCalculator("graphene-bilayer")
    tb = good.calc.get_hamiltonian()
    k_sym, w_sym = kpoint_mesh(tb, (6, 6, 1), symmetry=True)
    assert len(k_sym) < 36 and np.isclose(w_sym.sum(), 1.0)
    monkeypatch.setattr(spglib.error, "OLD_ERROR_HANDLING", True)
    k_old, _ = kpoint_mesh(tb, (6, 6, 1), symmetry=True)
    assert len(k_old) == len(k_sym)


def test_phonon_and_mesh_helpers_refuse_bad_input():
    """Session-8 helpers: a reference stacking that does not exist, a Wannier mesh that is not three positive
    integers, non-finite k-points, and force arrays of the wrong shape or with NaN for the DFT phonon check are
    refused with errors that name the problem; the good-input twin gives the Γ acoustic sum rule."""
    from ase_wannierml.dft import quality
    from ase_wannierml.dft.materials import get_material
    from ase_wannierml.dft.sampling import reference_structure
    from conftest import load_repo_module

    material = get_material("graphene-bilayer")
    with pytest.raises(ValueError, match="reference stackings"):
        reference_structure(material, 7)
    ab = reference_structure(material)
    assert len(ab) == 4 and ab.arrays["layer"].dtype.kind == "i"
    for mesh in ([0, 4, 1], [4, 4], [4.5, 4, 1]):
        with pytest.raises(ValueError, match="three positive integers"):
            quality.on_mesh(quality.CHECK_KPTS, mesh)
    with pytest.raises(ValueError, match="finite"):
        quality.on_mesh(np.array([[np.nan, 0.0, 0.0]]), [4, 4, 1])
    pytest.importorskip("phonopy")
    bench = load_repo_module("benchmarks/phonon_dispersion_dft.py")
    n_images = len(bench.supercell_images("r3"))
    zeros = [np.zeros((12, 3)) for _ in range(n_images)]
    bad = [f.copy() for f in zeros]
    bad[3][2, 1] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        bench.frequencies("r3", bad)
    with pytest.raises(ValueError, match=r"\(12, 3\)"):
        bench.frequencies("r3", zeros[:-1] + [np.zeros((11, 3))])
    with pytest.raises(ValueError, match="force arrays"):
        bench.frequencies("r3", zeros[:2])
    calc_free = bench.frequencies("r3", zeros)                    # no forces at all: every frequency is 0
    assert np.allclose(calc_free["Gamma"], 0.0, atol=1e-6)


def test_committee_calibration_refuses_bad_parameters_and_nan(monkeypatch):
    """A corrupt or hand-edited calibration (non-positive or NaN scale/power/reference) is refused by name, never
    turned into NaN or negative forces_std; NaN force errors and a non-positive power are refused when fitting."""
    from ase_wannierml.model.committee import calibrate_forces, calibrated_forces_std

    raw = np.array([0.01, 0.02])
    for bad in ({"forces_std_scale": float("nan")}, {"forces_std_scale": -1.0},
                {"forces_std_scale": 2.0, "forces_std_power": 0.0},
                {"forces_std_scale": 2.0, "forces_std_power": 1.5, "forces_std_reference": 0.0}):
        with pytest.raises(ValueError, match="calibration"):
            calibrated_forces_std(raw, bad)
    import ase_wannierml.model.committee as committee_module

    def fake_errors(committee, frame_dirs, nan=False):
        err = np.array([0.01, np.nan if nan else 0.02, 0.03])
        return err, np.array([0.01, 0.01, 0.01]), ["f0"]

    class Fake:
        metadata: dict = {}

    monkeypatch.setattr(committee_module, "force_errors_and_spreads", lambda c, d: fake_errors(c, d, nan=True))
    with pytest.raises(ValueError, match="non-finite"):
        calibrate_forces(Fake(), [])
    monkeypatch.setattr(committee_module, "force_errors_and_spreads", fake_errors)
    with pytest.raises(ValueError, match="power"):
        calibrate_forces(Fake(), [], power=-1.0)


def test_naik_jain_widths_and_committee_cli_refuse_bad_input(tmp_path):
    """The Naik–Jain band bookkeeping refuses NaN energies (they would count as 'no valence state'), and
    train_committee refuses a --calibration-frames glob that matches no frame before training anything."""
    from conftest import load_repo_module

    nj = load_repo_module("benchmarks/naik_jain_mos2.py")
    e = np.array([[-0.5, -0.6, 0.7], [np.nan, -0.6, 0.7]])
    with pytest.raises(ValueError, match="finite"):
        nj.valence_widths(e, 0.1)
    with pytest.raises(ValueError, match="finite"):
        nj.valence_widths(np.array([-0.5, 0.7]), 0.1)
    tc = load_repo_module("scripts/train_committee.py")
    with pytest.raises(SystemExit):
        tc.main(["--name", "graphene-bilayer", "--config", "configs/graphene-bilayer-active3b.yaml",
                 "--calibration-frames", "no-such-frame-*", "--out", str(tmp_path / "c.pt")])
    assert not (tmp_path / "c.pt").exists()


# ------------------------------------------------------------------ benchmarks/wander_mos2_201_elements.py
def _elements_benchmark():
    import importlib.util

    spec = importlib.util.spec_from_file_location("wander_elements_bad", REPO / "benchmarks" / "wander_mos2_201_elements.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_seed_frame_transform_refuses_degenerate_or_unknown_local_functions():
    """A zero or NaN axis, two identical axes on one atom, an unknown d label or non-orthogonal local axes in
    orbitals.json must be named, not turned into NaN or a silently wrong frame."""
    mod = _elements_benchmark()
    s = [{"wf": k + 1, "atom": 1, "element": "S", "label": "p", "axis": ax}
         for k, ax in enumerate([[1, 0, 1], [-0.5, 0.866, 1], [-0.5, -0.866, 1]])]
    T = mod.frame_transform(s, 3)
    np.testing.assert_allclose(T.T @ T, np.eye(3), atol=1e-12)
    for bad, match in ((dict(s[0], axis=[0, 0, 0]), "finite non-zero"),
                       (dict(s[0], axis=[float("nan"), 0, 1]), "finite non-zero"),
                       (dict(s[0], axis=s[1]["axis"]), "linearly dependent")):
        with pytest.raises(ValueError, match=match):
            mod.frame_transform([bad] + s[1:], 3)
    mo = {"wf": 1, "atom": 1, "element": "Mo", "label": "dxz", "local_x": [1, 0, 0], "local_z": [0, 0, 1]}
    with pytest.raises(ValueError, match="only dz2, dxz, dyz"):
        mod.local_function_coefficients(dict(mo, label="dxy"))
    with pytest.raises(ValueError, match="not orthogonal"):
        mod.local_function_coefficients(dict(mo, local_x=[1, 0, 1]))
    with pytest.raises(ValueError, match="local_z along global z"):
        mod.local_function_coefficients(dict(mo, label="dz2", local_z=[0, 0, 1]))


def test_seed_elements_benchmark_refuses_bad_k_step(capsys):
    mod = _elements_benchmark()
    with pytest.raises(SystemExit, match="--k-step must be >= 1"):
        mod.main(["--k-step", "0"])


# ------------------------------------------------------------------ session 16 scripts and benchmarks
def test_session16_tools_refuse_bad_input_and_never_overwrite(tmp_path):
    """Slide frames: lengths outside (0, 0.5] Å, NaN and unphysical gaps are refused, an existing output file is
    left alone; onsite descriptors refuse a structure without a second layer (no 0/0 normal, no empty min); a
    negative rigid-layer force constant comes out as a negative (imaginary) frequency, not as 0."""
    from conftest import load_repo_module

    slides = load_repo_module("scripts/shear_slide_frames.py")
    for bad in ([0.0], [float("nan")], [0.7]):
        with pytest.raises(ValueError, match="--slides"):
            slides.structures(bad, [])
    with pytest.raises(ValueError, match="--gaps"):
        slides.structures([0.1], [float("inf")])
    out = tmp_path / "s.extxyz"
    out.write_text("keep me")
    assert slides.main(["--out", str(out)]) == 2 and out.read_text() == "keep me"

    onsite = load_repo_module("benchmarks/onsite_locality.py")
    mono = bilayer("graphene").repeat((2, 2, 1))
    mono.arrays["layer"] = np.zeros(len(mono), int)
    with pytest.raises(ValueError, match="other layer"):
        onsite.descriptors(mono)

    modes = load_repo_module("benchmarks/interlayer_modes_dft.py")
    forces = {name: np.zeros(3) for name in modes.DISPLACEMENTS}
    forces["x+"] = np.array([+0.001, 0.0, 0.0])          # pushed further along the slide: unstable
    forces["x-"] = np.array([-0.001, 0.0, 0.0])
    res = modes.frequencies(forces)
    assert res["shear_x"]["K_eV_A2_per_atom"] < 0 and res["shear_x"]["omega_cm"] < 0
    assert np.isfinite(res["breathing"]["omega_cm"])


def test_train_committee_never_reuses_a_member_trained_from_another_base(tmp_path):
    """A finished member run made from the previous shipped model must not end up in the new committee: it is moved
    aside (not deleted) and retrained; a run of the same config and base is reused or resumed."""
    from conftest import load_repo_module

    tc = load_repo_module("scripts/train_committee.py")
    base = tmp_path / "base.pt"
    base.write_bytes(b"shipped model v1")
    cfg = {"run": {"init_from": str(base), "seed": 0}, "data": {}, "optim": {}}
    fp1 = tc.member_fingerprint(cfg)
    run = tmp_path / "m0"
    assert tc.prepare_member_dir(run, fp1) == "new"
    (run / "checkpoints").mkdir()
    assert tc.prepare_member_dir(run, fp1) == "resume"
    (run / "model.pt").write_bytes(b"member")
    (run / "DONE").write_text("ok\n")
    assert tc.prepare_member_dir(run, fp1) == "done"
    base.write_bytes(b"shipped model v2")                   # a new model shipped: same config, other base
    fp2 = tc.member_fingerprint(cfg)
    assert fp2 != fp1
    assert tc.prepare_member_dir(run, fp2) == "new"
    assert not (run / "model.pt").exists() and (run / "FINGERPRINT").read_text().strip() == fp2
    stale = [p for p in tmp_path.iterdir() if p.name.startswith("m0.stale-")]
    assert len(stale) == 1 and (stale[0] / "model.pt").read_bytes() == b"member"
    legacy = tmp_path / "m1"                                 # a run from before fingerprints: not trusted
    legacy.mkdir()
    (legacy / "model.pt").write_bytes(b"old")
    (legacy / "DONE").write_text("ok\n")
    assert tc.prepare_member_dir(legacy, fp2) == "new" and not (legacy / "model.pt").exists()
    assert tc.member_fingerprint({**cfg, "run": {**cfg["run"], "seed": 1}}) != fp2


def test_dft_home_cell_refuses_nan_positions_and_a_degenerate_cell():
    """Wrapping into the home cell (dft.workflow.home_cell) must name a NaN position or a zero-area a×b cell instead of
    writing NaN coordinates into the QE / Wannier90 inputs."""
    from ase import Atoms

    from ase_wannierml.dft.workflow import home_cell

    good = Atoms("C2", positions=[[0, 0, 5], [5.1, -3.0, 5]], cell=[[2.46, 0, 0], [-1.23, 2.13, 0], [0, 0, 20]])
    wrapped = home_cell(good.copy())
    frac = wrapped.cell.scaled_positions(wrapped.positions)
    assert np.all((frac[:, :2] >= 0) & (frac[:, :2] < 1)) and np.allclose(wrapped.positions[:, 2], 5)
    nan = good.copy()
    nan.positions[1, 0] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        home_cell(nan)
    flat = good.copy()
    flat.cell = [[2.46, 0, 0], [4.92, 0, 0], [0, 0, 20]]
    with pytest.raises(ValueError, match="degenerate"):
        home_cell(flat)
