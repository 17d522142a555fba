"""Off-mesh accuracy of the workflow's Wannier frames against DFT, and the per-stage cost record behind the
settings-vs-cost table (docs/wannier90.md, benchmarks/wannier_offmesh_accuracy.py).

Test data (real QE 6.7 + Wannier90 3.1 outputs of ``dft.workflow.run_frame``, ``tests/data/wannier90/``): one
strained, rattled 4-atom bilayer, computed twice with the shipped graphene settings except the Wannier mesh:
``graphene_1x1`` (8×8, the shipped ``kmesh_nscf_1x1``) and ``graphene_1x1_k12`` (12×12); each with QE eigenvalues
at ``quality.CHECK_KPTS`` and at 10 generic k (``dft_extra_bands.json``, on no n×n mesh).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from ase.io import read

from ase_wannierml import TightBinding
from ase_wannierml.dft import codes, quality
from ase_wannierml.tb.wannier90 import read_win
from conftest import load_repo_module

DATA = Path(__file__).parent / "data" / "wannier90"


def _bench():
    return load_repo_module("benchmarks/wannier_offmesh_accuracy.py")


def _offmesh_errors(folder: Path, mesh: list[int]) -> dict:
    """{'auto'|None: (max meV, rms meV, n compared)} within E_F ± 1 eV at the stored DFT k off ``mesh``."""
    atoms = read(folder / "structure.extxyz")
    refs = [json.loads((folder / n).read_text()) for n in ("dft_check_bands.json", "dft_extra_bands.json")]
    assert refs[0]["fermi_level_eV"] == refs[1]["fermi_level_eV"]
    nb = min(np.shape(r["eigenvalues_eV"])[1] for r in refs)
    k = np.concatenate([r["kpts_frac"] for r in refs])
    e_dft = np.concatenate([np.asarray(r["eigenvalues_eV"])[:, :nb] for r in refs])
    off = ~_bench().on_mesh(k, mesh)
    assert off.sum() >= 13                               # 10 generic k + the check k not on the mesh
    out = {}
    for how in ("auto", None):
        tb = TightBinding.from_wannier90(folder / "wannier90_hr.dat.gz", atoms=atoms, wsvec=how)
        m = quality.band_errors(e_dft[off], tb.eigenvalues(k[off]), refs[0]["fermi_level_eV"], 2.0)
        out[how] = (m["band_max_1eV_meV"], m["band_rms_1eV_meV"])
    return out


def test_offmesh_error_within_5_meV_on_a_12x12_mesh_not_on_8x8():
    """Same structure and DFT: the shipped 8×8 Wannier mesh misses the 5 meV bound off the mesh (measured 15.0 meV),
    12×12 meets it (measured 2.4 meV shifted, 3.0 meV unshifted); the Wigner–Seitz shifts lower the error there."""
    fine = _offmesh_errors(DATA / "graphene_1x1_k12", [12, 12, 1])
    assert fine["auto"][0] <= 5.0, fine
    assert fine["auto"][0] < fine[None][0] and fine["auto"][1] < fine[None][1], fine
    coarse = _offmesh_errors(DATA / "graphene_1x1", read_win(DATA / "graphene_1x1" / "wannier90.win")["mp_grid"])
    assert coarse["auto"][0] > 10.0, coarse              # the bound can fail: 15.0 meV on the shipped 8x8 mesh
    assert fine["auto"][1] < 0.3 * coarse["auto"][1], (fine, coarse)


def test_benchmark_script_reports_the_same_errors(tmp_path):
    """benchmarks/wannier_offmesh_accuracy.py on the committed frame: same figures, on-mesh k excluded (their
    error is zero by construction), JSON written."""
    bench = _bench()
    folder = DATA / "graphene_1x1_k12"
    row = bench.frame_errors(folder)
    mine = _offmesh_errors(folder, [12, 12, 1])
    assert row["kmesh_nscf"] == [12, 12, 1] and row["n_atoms"] == 4
    assert row["shifted"]["max_meV"] == pytest.approx(mine["auto"][0]) and row["meets_bound"]
    assert row["unshifted"]["max_meV"] == pytest.approx(mine[None][0])
    assert row["shifted"]["on_mesh_max_meV"] < 0.05      # on the mesh Wannier = NSCF eigenvalues
    assert row["n_k_off_mesh"] == int(np.sum(~np.asarray(row["on_mesh"]))) >= 13
    assert bench.on_mesh(np.array([[0.5, 0.25, 0], [1 / 3, 1 / 3, 0], [0.3, 0.37, 0]]), [4, 4, 1]).tolist() == \
        [True, False, False]
    out = tmp_path / "r.json"
    assert bench.main([str(folder), "--out", str(out)]) == 0
    assert json.loads(out.read_text())["frames"][0]["frame_id"] == row["frame_id"]


def test_runner_records_cpu_time_of_the_step(tmp_path):
    """CPU seconds of a step (children's rusage) are recorded beside its wall time; a sleeping step costs ~no CPU,
    a busy one about its wall time."""
    r = codes.Runner(nprocs=1, npools=1)
    r.run("busy", [sys.executable, "-c", "import time\nt=time.process_time()\nwhile time.process_time()-t<0.6: pass"],
          tmp_path, mpi=False)
    r.run("idle", [sys.executable, "-c", "import time; time.sleep(0.6)"], tmp_path, mpi=False)
    assert r.cpu_timings["busy"] >= 0.55 and r.timings["busy"] >= 0.55
    assert r.cpu_timings["idle"] < 0.3 <= r.timings["idle"]


def test_quality_metrics_report_the_error_off_the_wannier_mesh():
    """The workflow's quality metrics also give the band error over the check k-points off the Wannier mesh: on the
    8×8 frame Γ and the three M points lie on the mesh and are left out; declaring a 12×12 mesh also drops K,
    (1/6, 1/6) and (5/12, 1/6), and the figure equals a direct computation on the 3 k left; without a mesh no
    off-mesh figure is claimed."""
    folder = DATA / "graphene_1x1"
    atoms = read(folder / "structure.extxyz")
    ref = json.loads((folder / "dft_check_bands.json").read_text())
    tb = TightBinding.from_wannier90(folder / "wannier90_hr.dat.gz", atoms=atoms)
    mesh = read_win(folder / "wannier90.win")["mp_grid"]
    assert list(mesh) == [8, 8, 1]
    m = quality.wannier_metrics(tb, np.asarray(ref["eigenvalues_eV"]), ref["fermi_level_eV"], 2.0, atoms,
                                ["C:pz"] * 4, mesh=mesh)
    assert m["n_check_k_off_mesh"] == len(quality.CHECK_KPTS) - 4
    assert quality.on_mesh(quality.CHECK_KPTS, mesh).tolist()[:7] == [True, False, False, False, True, True, True]
    assert m["band_max_1eV_offmesh_meV"] == pytest.approx(m["band_max_1eV_meV"])
    assert m["band_rms_1eV_offmesh_meV"] >= m["band_rms_1eV_meV"] - 1e-9, m
    m12 = quality.wannier_metrics(tb, np.asarray(ref["eigenvalues_eV"]), ref["fermi_level_eV"], 2.0, atoms,
                                  ["C:pz"] * 4, mesh=[12, 12, 1])
    off = ~quality.on_mesh(quality.CHECK_KPTS, [12, 12, 1])
    assert m12["n_check_k_off_mesh"] == int(off.sum()) == 3
    direct = quality.band_errors(np.asarray(ref["eigenvalues_eV"])[off], tb.eigenvalues(quality.CHECK_KPTS[off]),
                                 ref["fermi_level_eV"], 2.0)
    assert m12["band_max_1eV_offmesh_meV"] == pytest.approx(direct["band_max_1eV_meV"])
    assert "band_max_1eV_offmesh_meV" not in quality.wannier_metrics(
        tb, np.asarray(ref["eigenvalues_eV"]), ref["fermi_level_eV"], 2.0, atoms, ["C:pz"] * 4)


ACCURACY = Path(__file__).resolve().parents[1] / "datasets" / "graphene-bilayer" / "wannier_accuracy"


def test_16_atom_md_snapshot_within_5_meV_on_a_9x9_mesh():
    """Issue #14 done-when on a workflow supercell frame: the held-out 300 K MD snapshot 006 (16-atom 2×2 bilayer)
    run with ``kmesh_nscf_1x1: 18`` (9×9 Wannier mesh) gives bands within 5 meV of QE at the k-points off its mesh
    inside E_F ± 1 eV (measured 3.1 meV with Wannier90's Wigner–Seitz shifts, 1.1 meV without); the same snapshot
    on the 6×6 mesh misses (5.2 meV). Both frames share one SCF (same settings and k-mesh): their QE check bands and
    Fermi levels are identical, so the 10 generic-k QE eigenvalues computed for the 6×6 frame serve both."""
    fine, coarse = ACCURACY / "s006-101d4bdb609c", ACCURACY / "s006-97848afd0935"
    refs = [json.loads((f / "dft_check_bands.json").read_text()) for f in (fine, coarse)]
    assert refs[0]["fermi_level_eV"] == refs[1]["fermi_level_eV"]
    assert np.array_equal(refs[0]["eigenvalues_eV"], refs[1]["eigenvalues_eV"])
    assert len(read(fine / "structure.extxyz")) == 16
    m9 = _offmesh_errors(fine, [9, 9, 1])
    m6 = _offmesh_errors(coarse, [6, 6, 1])
    assert m9["auto"][0] <= 5.0 and m9[None][0] <= 5.0, m9
    assert m6["auto"][0] > 5.0, m6                     # the bound can fail: the 6×6 mesh misses it
    assert m9["auto"][1] < 0.6 * m6["auto"][1], (m9, m6)
