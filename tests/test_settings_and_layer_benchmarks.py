"""The settings-vs-cost benchmark's comparisons (benchmarks/dft_settings_cost.py) and the rigid-layer force of
benchmarks/layer_forces.py, on real QE 6.7 + Wannier90 3.1 files of the workflow (tests/data/wannier90/)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from ase import Atoms
from ase.io import read

from conftest import load_repo_module

DATA = Path(__file__).parent / "data" / "wannier90"


def _frame(tmp: Path, name: str, vacuum: float, energy: float, mesh: list[int]) -> Path:
    """A frame directory as the workflow writes it (the parts the benchmark reads) from the stored test frame."""
    d = tmp / name
    d.mkdir()
    for f in ("structure.extxyz", "wannier90_hr.dat.gz", "wannier90_wsvec.dat.gz", "dft_check_bands.json",
              "dft_extra_bands.json"):
        shutil.copy(DATA / "graphene_1x1" / f, d / f)
    meta = {"status": "ok", "energy_eV": energy, "vacuum_level_eV": vacuum,
            "settings": {"kmesh_scf": [15, 15, 1], "kmesh_nscf": mesh},
            "material_spec": {"dft": {"ecutwfc": 30.0}},
            "timings_s": {"scf": 1.0, "total": 2.0}, "cpu_timings_s": {"scf": 2.0, "total": 4.0}}
    (d / "meta.json").write_text(json.dumps(meta))
    return d


def test_a_frame_against_itself_changes_nothing_and_a_moved_vacuum_level_moves_only_the_onsite_terms(tmp_path,
                                                                                                     monkeypatch):
    bench = load_repo_module("benchmarks/dft_settings_cost.py")
    monkeypatch.setattr(bench, "REPO", tmp_path)
    e = read(DATA / "graphene_1x1" / "structure.extxyz").get_potential_energy()
    ref = _frame(tmp_path, "ref", vacuum=4.0, energy=e, mesh=[8, 8, 1])
    same = bench.variant_row(_frame(tmp_path, "same", 4.0, e, [8, 8, 1]), ref)
    assert same["dH_onsite_max_meV"] == 0.0 and same["dH_other_max_meV"] == 0.0
    assert same["d_energy_meV_per_atom"] == 0.0 and same["d_forces_max_meV_A"] == 0.0
    assert same["vs_ref_max_meV"] < 20.0                     # the 8x8 frame's own interpolation error (docs: 15)
    assert same["own_offmesh_max_meV"] == pytest.approx(15.0, abs=1.0)
    # same H, vacuum level 0.1 eV higher: measured from the vacuum, every band and onsite energy sits 0.1 eV lower
    moved = bench.variant_row(_frame(tmp_path, "moved", 4.1, e + 0.4, [8, 8, 1]), ref)
    assert moved["dH_onsite_max_meV"] == pytest.approx(100.0, abs=1e-6)
    assert moved["dH_other_max_meV"] == 0.0
    assert moved["d_vacuum_level_meV"] == pytest.approx(100.0)
    assert moved["d_energy_meV_per_atom"] == pytest.approx(100.0)        # 0.4 eV over 4 atoms
    assert moved["vs_ref_max_meV"] == pytest.approx(100.0, abs=20.0)
    # another Wannier mesh: H(R) is not comparable element by element (Wigner-Seitz splitting), bands are
    other = bench.variant_row(_frame(tmp_path, "other", 4.0, e, [12, 12, 1]), ref)
    assert "dH_onsite_max_meV" not in other and other["vs_ref_max_meV"] is not None


def test_top_layer_mean_force_picks_the_upper_layer_whatever_its_label():
    bench = load_repo_module("benchmarks/layer_forces.py")
    atoms = Atoms("C4", positions=[[0, 0, 10], [1.4, 0, 10], [0, 0, 13.4], [1.4, 0, 13.4]], cell=[5, 5, 25])
    forces = np.array([[0, 0, 0.3], [0, 0, 0.1], [0.2, 0, -0.1], [0, 0, -0.3]])
    for labels, top in (([0, 0, 1, 1], [0.1, 0, -0.2]), ([1, 1, 0, 0], [0.1, 0, -0.2])):
        atoms.set_array("layer", np.array(labels))
        np.testing.assert_allclose(bench.top_layer_mean_force(atoms, forces), top)
    atoms.set_array("layer", np.zeros(4, int))
    with pytest.raises(ValueError, match="one layer"):
        bench.top_layer_mean_force(atoms, forces)


def test_settings_benchmark_refuses_unknown_variants_and_frames_without_layers(tmp_path):
    """Bad input is named before any DFT starts: an unknown variant, a structure without a 'layer' array, a
    directory that is not a frame."""
    bench = load_repo_module("benchmarks/dft_settings_cost.py")
    frame = _frame(tmp_path, "f", 4.0, 0.0, [8, 8, 1])
    meta = json.loads((frame / "meta.json").read_text())
    meta.update(material="graphene-bilayer", sampling={"frame_id": "f", "material": "graphene-bilayer", "seed": 1,
                                                       "shift": [0, 0], "strain": [0, 0, 0]})
    (frame / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="unknown variant 'scf5'"):
        bench.run_variant(frame, "scf5", 1, 1, tmp_path / "scratch")
    atoms = read(frame / "structure.extxyz")
    del atoms.arrays["layer"]
    atoms.write(frame / "structure.extxyz")
    with pytest.raises(ValueError, match="no 'layer' array"):
        bench.run_variant(frame, "ref", 1, 1, tmp_path / "scratch")
    with pytest.raises(SystemExit):
        bench.main(["report", "--frame", str(tmp_path)])          # no meta.json: argparse error, exit 2
    assert not (tmp_path / "scratch").exists()


def test_force_fit_slope_and_errors_see_a_too_soft_model():
    bench = load_repo_module("benchmarks/force_fit.py")
    rng = np.random.default_rng(0)
    f_dft = rng.normal(size=(20, 3))
    soft = f_dft.copy()
    soft[:, 2] *= 0.8                                            # out-of-plane forces 20 % too soft
    e = bench.force_errors(soft, f_dft)
    assert e["z_slope"] == pytest.approx(0.8)
    assert e["rmse_xy_meV_A"] == 0.0
    assert e["rmse_z_meV_A"] == pytest.approx(200.0 * np.sqrt(np.mean(f_dft[:, 2] ** 2)))
    assert bench.force_errors(f_dft, f_dft)["z_slope"] == pytest.approx(1.0)
    assert np.isnan(bench.z_slope(np.ones(3), np.zeros(3)))
    with pytest.raises(ValueError, match=r"\(n, 3\)"):
        bench.force_errors(soft[:, :2], f_dft[:, :2])
    soft[3, 2] = np.nan
    with pytest.raises(ValueError, match="NaN or inf"):
        bench.force_errors(soft, f_dft)


def test_force_fit_groups_skip_rejected_frames_and_refuse_empty_or_malformed_groups(tmp_path):
    bench = load_repo_module("benchmarks/force_fit.py")
    for name, status in (("md-train-0", "ok"), ("md-train-1", "rejected")):
        d = tmp_path / name
        d.mkdir()
        shutil.copy(DATA / "graphene_1x1" / "structure.extxyz", d / "structure.extxyz")
        (d / "meta.json").write_text(json.dumps({"status": status}))
    groups, rejected = bench.expand_groups([f"train={tmp_path}/md-train-*"])
    assert [p.name for p in groups["train"]] == ["md-train-0"] and rejected == ["md-train-1"]
    with pytest.raises(ValueError, match="no frame directory matches"):
        bench.expand_groups([f"test={tmp_path}/md-test-*"])
    with pytest.raises(ValueError, match="label=glob"):
        bench.expand_groups([f"{tmp_path}/md-train-*"])
    (tmp_path / "not-a-frame").mkdir()
    with pytest.raises(ValueError, match="not a frame directory"):
        bench.expand_groups([f"x={tmp_path}/not-a-frame"])


def test_force_fit_upper_layer_by_label_or_height():
    bench = load_repo_module("benchmarks/force_fit.py")
    atoms = Atoms("C4", positions=[[0, 0, 13.4], [1.4, 0, 10], [0, 0, 10], [1.4, 0, 13.4]], cell=[5, 5, 25])
    assert bench.layer_labels(atoms).tolist() == [True, False, False, True]
    atoms.arrays["layer"] = np.array([1, 0, 0, 1])
    assert bench.layer_labels(atoms).tolist() == [True, False, False, True]


def test_force_fit_curvature_stiffness_recovers_a_known_flexural_constant():
    from ase.build import graphene

    bench = load_repo_module("benchmarks/force_fit.py")
    sheet = graphene(a=2.46, vacuum=8.0).repeat((3, 3, 1))
    sheet.pbc = True
    rng = np.random.default_rng(1)
    sheet.positions[:, 2] += rng.normal(scale=0.05, size=len(sheet))      # a rippled sheet
    curv = bench.curvature(sheet, 1.75)
    assert np.allclose(curv.sum(), 0.0, atol=1e-9)                        # three bonds each, every bond twice
    i = 4
    nb = [j for j in range(len(sheet)) if j != i and sheet.get_distance(i, j, mic=True) < 1.75]
    assert len(nb) == 3
    z = sheet.positions[:, 2]
    assert curv[i] == pytest.approx(z[i] - z[nb].mean())
    assert bench.curvature_stiffness(-14.0 * curv, curv) == pytest.approx(14.0)
    assert np.isnan(bench.curvature_stiffness(np.zeros(3), np.zeros(3)))
    with pytest.raises(ValueError, match="no neighbour within"):
        bench.curvature(sheet, 1.0)


def test_ripple_frames_differ_only_in_the_layer_distance_and_bad_requests_are_refused(tmp_path):
    bench = load_repo_module("benchmarks/ripple_stiffness.py")
    a, b = bench.rippled_bilayer(3.10), bench.rippled_bilayer(3.60)
    layer = np.asarray(a.arrays["layer"])
    assert len(a) == 16 and sorted(set(layer.tolist())) == [0, 1]
    for atoms, gap in ((a, 3.10), (b, 3.60)):
        z = atoms.positions[:, 2]
        assert z[layer == 1].mean() - z[layer == 0].mean() == pytest.approx(gap)
    rel = lambda atoms, lab: atoms.positions[layer == lab, 2] - atoms.positions[layer == lab, 2].mean()  # noqa: E731
    for lab in (0, 1):
        assert np.allclose(rel(a, lab), rel(b, lab))                    # the same ripple at both distances
        assert np.sqrt(np.mean(rel(a, lab) ** 2)) == pytest.approx(0.05, rel=0.6)
    assert np.allclose(a.positions[:, :2], b.positions[:, :2])
    assert not np.allclose(rel(a, 0), rel(bench.rippled_bilayer(3.10, seed=15), 0))
    with pytest.raises(ValueError, match="outside 2.5"):
        bench.rippled_bilayer(1.0)
    with pytest.raises(ValueError, match="amplitude"):
        bench.rippled_bilayer(3.3, amplitude=1.0)
    d = tmp_path / "frames" / "ripple-scf-abc"
    d.mkdir(parents=True)
    (d / "meta.json").write_text(json.dumps({"status": "ok", "sampling": {"notes": {"source_info": {}}}}))
    with pytest.raises(ValueError, match="no ripple_gap_A"):
        bench.dft_frames("ripple", tmp_path)
    (d / "meta.json").write_text(json.dumps({"status": "ok", "sampling": {"notes": {"source_info":
                                                                                   {"ripple_gap_A": 3.2}}}}))
    assert [(g, p.name) for g, p in bench.dft_frames("ripple", tmp_path)] == [(3.2, "ripple-scf-abc")]
