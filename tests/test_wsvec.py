"""Wannier90's Wigner–Seitz shifts (``_wsvec.dat``), checked against Wannier90 3.1 itself and DFT.

Test data (``tests/data/wannier90/``) are real outputs of the project's workflow (QE 6.7 + Wannier90 3.1,
``dft.workflow.run_frame``): ``graphene_1x1`` is a strained, rattled 4-atom bilayer graphene frame (8×8 Wannier
mesh) with Wannier90's own interpolated bands (``wannier90_band.dat`` along a path through off-mesh points, from a
``restart = plot`` run on the frame's ``.chk``), its ``_tb.dat`` and the QE eigenvalues at ``quality.CHECK_KPTS``.
``graphene_2x2`` is a 16-atom 2×2 frame on a 4×4 mesh (a 300 K MD snapshot of the shipped model, run by
``scripts/md_snapshot_frames.py``; some centres listed one c below their atoms) with the same extras but no
``_tb.dat``.
"""
from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
from ase.io import read

from ase_wannierml import TightBinding
from ase_wannierml.dft import quality
from ase_wannierml.tb.wannier90 import read_centres_xyz, read_hr_data, read_win
from ase_wannierml.tb.wsvec import WsShifts, apply_wsvec, compute_wsvec, read_wsvec, write_wsvec

DATA = Path(__file__).parent / "data" / "wannier90"
G1 = DATA / "graphene_1x1"
G2 = DATA / "graphene_2x2"
FRAMES = [p for p in (G1, G2) if p.is_dir()]


def _w90_bands(folder: Path) -> tuple[np.ndarray, np.ndarray]:
    """Wannier90's own interpolated bands: k (nk, 3) fractional (6 decimals), E (nk, nw) eV."""
    k_k3 = np.loadtxt(folder / "wannier90_band.kpt", skiprows=1)[:, :3]
    e = np.loadtxt(folder / "wannier90_band.dat")[:, 1]
    return k_k3, e.reshape(-1, len(k_k3)).T


def _entries(sh: WsShifts) -> list:
    st = sh.start
    return [(tuple(sh.R[e]), int(sh.rows[e]), int(sh.cols[e]), [tuple(t) for t in sh.T[st[e]:st[e] + sh.count[e]]])
            for e in range(len(sh.R))]


@pytest.mark.parametrize("folder", FRAMES, ids=lambda p: p.name)
def test_recomputed_shifts_equal_wannier90s_file(folder):
    """Shifts from centres + cell + mp_grid, as ws_distance.F90 computes them, equal the file entry by entry."""
    sh = read_wsvec(folder / "wannier90_wsvec.dat.gz")
    assert sh.use_ws_distance is True and sh.max_shift() > 0 and sh.count.max() > 1
    win = read_win(folder / "wannier90.win")
    centres = read_centres_xyz(folder / "wannier90_centres.xyz")[0]
    irvec = list(dict.fromkeys(map(tuple, sh.R.tolist())))
    mine = compute_wsvec(irvec, centres, win["cell"], win["mp_grid"])
    assert _entries(mine) == _entries(sh)
    # a wrong mesh gives different shifts (the comparison can fail)
    other = compute_wsvec(irvec, centres, win["cell"], (win["mp_grid"][0] + 1, win["mp_grid"][1], 1))
    assert _entries(other) != _entries(sh)


@pytest.mark.parametrize("folder", FRAMES, ids=lambda p: p.name)
def test_bands_equal_wannier90s_own_interpolation(folder):
    """Off the mesh our bands (file shifts, recomputed shifts, or the _tb.dat) equal Wannier90's bands_plot; without
    the shifts they do not."""
    atoms = read(folder / "structure.extxyz")
    k_k3, e_w90 = _w90_bands(folder)
    for how in ("auto", "compute"):
        tb = TightBinding.from_wannier90(folder / "wannier90_hr.dat.gz", atoms=atoms, wsvec=how)
        assert tb.ws_source.startswith("file" if how == "auto" else "recomputed")
        np.testing.assert_allclose(tb.eigenvalues(k_k3), e_w90, atol=1e-4)   # k printed with 6 decimals
    if (folder / "wannier90_tb.dat.gz").is_file():                      # kept for the small frame only
        tb_dat = TightBinding.from_wannier90(folder / "wannier90_tb.dat.gz", atoms=atoms)
        np.testing.assert_allclose(tb_dat.eigenvalues(k_k3), e_w90, atol=1e-4)
    raw = TightBinding.from_wannier90(folder / "wannier90_hr.dat.gz", atoms=atoms, wsvec=None)
    assert np.abs(raw.eigenvalues(k_k3) - e_w90).max() > 0.01


@pytest.mark.parametrize("folder", FRAMES, ids=lambda p: p.name)
def test_shifts_drop_out_on_the_wannier_mesh_and_keep_hermiticity(folder):
    atoms = read(folder / "structure.extxyz")
    n1, n2, _ = read_win(folder / "wannier90.win")["mp_grid"]
    mesh = np.array([[i / n1, j / n2, 0.0] for i in range(n1) for j in range(n2)])
    tb = TightBinding.from_wannier90(folder / "wannier90_hr.dat.gz", atoms=atoms)
    raw = TightBinding.from_wannier90(folder / "wannier90_hr.dat.gz", atoms=atoms, wsvec=None)
    np.testing.assert_allclose(tb.eigenvalues(mesh), raw.eigenvalues(mesh), atol=1e-10)
    assert tb.check_hermitian(tol=0.0) == 0.0            # stored exactly Hermitian: H(-R) = H(R)†
    unforced = TightBinding.from_wannier90(folder / "wannier90_hr.dat.gz", atoms=atoms, check_hermitian=False)
    assert unforced.check_hermitian(tol=np.inf) <= 1e-6  # the file's own print precision
    # every Wannier90 element is carried whole (weight 1) or split into equal parts over equidistant images
    assert set(np.round(tb.wannier_weight, 6)) <= {1.0, 0.5, 1 / 3, 0.25}
    # the corrected H(R) written as an ordinary file reads back with the same bands and needs no shifts
    assert tb.degeneracy == {}


@pytest.mark.parametrize("folder", FRAMES, ids=lambda p: p.name)
def test_off_mesh_bands_against_dft(folder):
    """QE eigenvalues at the 10 check k-points (off the mesh): the corrected interpolation is at least as close to
    DFT as the uncorrected one within E_F ± 1 eV, and within the Wannier model's own accuracy."""
    atoms = read(folder / "structure.extxyz")
    ref = json.loads((folder / "dft_check_bands.json").read_text())
    e_dft, e_f = np.array(ref["eigenvalues_eV"]), ref["fermi_level_eV"]
    np.testing.assert_allclose(ref["kpts_frac"], quality.CHECK_KPTS)
    err = {}
    for how in ("auto", None):
        tb = TightBinding.from_wannier90(folder / "wannier90_hr.dat.gz", atoms=atoms, wsvec=how)
        err[how] = quality.band_errors(e_dft, tb.eigenvalues(quality.CHECK_KPTS), e_f, 1.0)["band_max_meV"]
    assert err["auto"] < 20.0, err                      # measured: 15.0 meV (1x1, 8x8 mesh), 10.9 meV (2x2, 4x4)
    if folder.name == "graphene_2x2":
        assert err["auto"] < 0.7 * err[None], err       # measured: 10.9 vs 18.6 meV


def test_chain_shift_moves_hopping_to_nearest_image():
    """Two WFs on a chain (a = 1 Å, centres 0 and 0.4 Å), mesh 4: the R = 2 hopping 0 → 1 (2.4 Å away) belongs to
    the image at R = −2 (1.6 Å); R = 1 (1.4 Å) stays; for equidistant images (centres equal, R = ±2) the element is
    split in two."""
    cell = np.diag([1.0, 10.0, 10.0])
    centres = np.array([[0.0, 0, 0], [0.4, 0, 0]])
    sh = compute_wsvec([[2, 0, 0], [1, 0, 0]], centres, cell, (4, 1, 1))
    ent = {(r, m, n): t for r, m, n, t in _entries(sh)}
    assert ent[((2, 0, 0), 0, 1)] == [(-4, 0, 0)]
    assert ent[((1, 0, 0), 0, 1)] == [(0, 0, 0)]
    assert sorted(ent[((2, 0, 0), 0, 0)]) == [(-4, 0, 0), (0, 0, 0)]
    R, rows, cols, v = apply_wsvec([[2, 0, 0], [2, 0, 0]], [0, 0], [1, 0], [1.0, 0.5], sh)
    got = sorted(zip(map(tuple, R.tolist()), rows.tolist(), cols.tolist(), v.tolist()))
    assert got == [((-2, 0, 0), 0, 0, 0.25), ((-2, 0, 0), 0, 1, 1.0), ((2, 0, 0), 0, 0, 0.25)]
    with pytest.raises(ValueError, match="no shifts for the Hamiltonian element R=\\[3, 0, 0\\] m=1 n=2"):
        apply_wsvec([[3, 0, 0]], [0], [1], [1.0], sh)


def test_wsvec_write_read_round_trip_and_damaged_files(tmp_path):
    sh = compute_wsvec([[0, 0, 0], [1, 0, 0], [-1, 0, 0]], np.array([[0.0, 0, 0], [0.5, 0, 0]]), np.eye(3),
                       (2, 1, 1))
    write_wsvec(sh, tmp_path / "x_wsvec.dat.gz")
    back = read_wsvec(tmp_path / "x_wsvec.dat.gz")
    assert _entries(back) == _entries(sh) and back.use_ws_distance is True
    (tmp_path / "bad_wsvec.dat").write_text("## header\n    0    0    0    1    1\n    2\n    0    0    0\n")
    with pytest.raises(ValueError, match="bad_wsvec.dat: line 2: file ends inside an entry"):
        read_wsvec(tmp_path / "bad_wsvec.dat")
    (tmp_path / "z_wsvec.dat.gz").write_bytes(b"\x1f\x8b\x08\x00garbage")
    with pytest.raises(ValueError, match="z_wsvec.dat.gz: cannot read"):
        read_wsvec(tmp_path / "z_wsvec.dat.gz")


def test_use_ws_distance_without_shifts_warns_with_expected_error(tmp_path):
    """A .win that asks for use_ws_distance but no _wsvec.dat and no mesh: a warning naming the consequence."""
    text = "written on x\n 1\n 1\n 1\n    0    0    0    1    1    0.500000    0.000000\n"
    (tmp_path / "s_hr.dat").write_text(text)
    (tmp_path / "s.win").write_text("num_wann = 1\nuse_ws_distance = .true.\nbegin unit_cell_cart\nang\n1 0 0\n"
                                    "0 1 0\n0 0 1\nend unit_cell_cart\n")
    with pytest.warns(UserWarning, match="Expected error: bands exact on the Wannier k-mesh but wrong off it"):
        tb = TightBinding.from_wannier90(tmp_path / "s_hr.dat")
    assert tb.ws_source == "not available"
    (tmp_path / "s.win").write_text("num_wann = 1\nuse_ws_distance = false\nbegin unit_cell_cart\nang\n1 0 0\n"
                                    "0 1 0\n0 0 1\nend unit_cell_cart\nmp_grid = 2 2 2\n")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert TightBinding.from_wannier90(tmp_path / "s_hr.dat").ws_source.endswith("use_ws_distance = .false.")
    with pytest.raises(ValueError, match="cannot recompute the Wigner–Seitz shifts: missing Wannier centres"):
        TightBinding.from_wannier90(tmp_path / "s_hr.dat", wsvec="compute")


def _export_and_check(tmp_path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Export the shift-corrected 4-atom model, check our own read-back; (k (nk, 3), Wannier90's bands (nk, nw))."""
    atoms = read(G1 / "structure.extxyz")
    tb = TightBinding.from_wannier90(G1 / "wannier90_hr.dat.gz", atoms=atoms)
    k_k3, e_w90 = _w90_bands(G1)
    paths = tb.write_wannier90(tmp_path / "model_hr.dat", mp_grid=(8, 8, 1))
    assert [p.name for p in paths] == ["model_hr.dat", "model_centres.xyz", "model.win", "model_tb.dat"]
    back = TightBinding.from_wannier90(tmp_path / "model_hr.dat")          # cell from the .win, no shifts needed
    assert back.ws_source.endswith("use_ws_distance = .false.")
    np.testing.assert_allclose(back.cell, tb.cell, atol=1e-9)
    np.testing.assert_allclose(back.eigenvalues(k_k3), tb.eigenvalues(k_k3), atol=1e-5)
    win = read_win(tmp_path / "model.win")
    assert win["mp_grid"] == (8, 8, 1) and win["num_wann"] == tb.norb
    return k_k3, e_w90


@pytest.mark.skipif(not G1.is_dir(), reason="test data missing")
def test_export_read_by_wannierberri_gives_the_same_bands(tmp_path):
    wb = pytest.importorskip("wannierberri")
    from wannierberri.evaluate_k import get_data_k_class_from_system
    from wannierberri.grid import Grid

    k_k3, e_w90 = _export_and_check(tmp_path)
    system = wb.system.System_R.from_tb_dat(str(tmp_path / "model_tb.dat"))
    cls = get_data_k_class_from_system(system)
    for k_3, e_ref in list(zip(k_k3, e_w90))[::5]:
        e_k = cls(system, grid=Grid(system=system, NK=1, NKFFT=1), dK=k_3).E_K[0]
        np.testing.assert_allclose(e_k, e_ref, atol=1e-4)        # WannierBerri on our export = Wannier90 itself


@pytest.mark.skipif(not G1.is_dir(), reason="test data missing")
def test_export_read_by_tbmodels_gives_the_same_bands(tmp_path):
    tbmodels = pytest.importorskip("tbmodels")
    k_k3, e_w90 = _export_and_check(tmp_path)
    model = tbmodels.Model.from_wannier_files(hr_file=str(tmp_path / "model_hr.dat"),
                                              xyz_file=str(tmp_path / "model_centres.xyz"),
                                              win_file=str(tmp_path / "model.win"))
    np.testing.assert_allclose(np.array([model.eigenval(k) for k in k_k3]), e_w90, atol=1e-4)


@pytest.mark.skipif(not G1.is_dir(), reason="test data missing")
def test_backfill_recreates_wannier90s_shift_file_for_a_frame_without_one(tmp_path):
    """scripts/backfill_wsvec.py on a frame that lost its _wsvec.dat writes Wannier90's shifts again and records the
    re-judged figures; with DFT eigenvalues stored the band errors are recomputed on the shifted H."""
    import importlib.util
    import shutil

    spec = importlib.util.spec_from_file_location("backfill", Path(__file__).parents[1] / "scripts" / "backfill_wsvec.py")
    backfill = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(backfill)
    frame = tmp_path / "frames" / "f"
    frame.mkdir(parents=True)
    for name in ("wannier90_hr.dat.gz", "wannier90_centres.xyz", "structure.extxyz", "dft_check_bands.json"):
        shutil.copy(G1 / name, frame / name)
    e_f = json.loads((G1 / "dft_check_bands.json").read_text())["fermi_level_eV"]
    meta = {"inputs": {"wannier90.win": (G1 / "wannier90.win").read_text()}, "settings": {"kmesh_nscf": [8, 8, 1]},
            "fermi_level_eV": e_f, "status": "ok", "reason": "", "quality": {"centre_max_distance_A": 0.03,
            "onsite_rel_EF_eV": {}, "hermiticity_max_eV": 0.0}, "quality_criteria": {}}
    (frame / "meta.json").write_text(json.dumps(meta))
    out = backfill.backfill_frame(frame, {"C": 1.0})
    assert out["source"] == "recomputed (backfill)"
    assert _entries(read_wsvec(frame / "wannier90_wsvec.dat.gz")) == _entries(read_wsvec(G1 / "wannier90_wsvec.dat.gz"))
    new = json.loads((frame / "meta.json").read_text())
    assert new["wannier90_ws"]["check_kpts_shift_1eV_meV"] > 5.0            # 4-atom cell, 8x8 mesh: ~10 meV
    assert new["quality_unshifted"]["band_max_1eV_meV"] != new["quality"]["band_max_1eV_meV"]
    assert new["quality"]["ws_shifts"].startswith("file") and new["status"] == "ok"
    again = backfill.backfill_frame(frame, {"C": 1.0})                       # re-running only re-measures
    assert again["source"] == "recomputed (backfill)" and again["recomputed_equals_file"]


def test_centre_listed_one_cell_along_the_vacuum_axis_adds_no_kz_dependence(tmp_path):
    """A WF centre listed at z + c (a Wannier90 pitfall on slabs, k-mesh 1 along c): Wannier90's shift moves its
    hoppings by −c; the reader keeps the in-plane part only, so R_z = 0 everywhere and the bands at k_z = 0 equal
    Wannier90's shifted interpolation."""
    cell = np.array([[2.0, 0, 0], [0, 2.0, 0], [0, 0, 10.0]])
    centres = np.array([[0.0, 0, 5.0], [1.0, 0.2, 15.2]])          # WF 2 listed one c above its atom
    R_list = [(i, j, 0) for i in (-1, 0, 1) for j in (-1, 0, 1)]
    rng = np.random.default_rng(3)
    lines = ["written on test", "2", str(len(R_list)), " ".join("1" for _ in R_list)]
    H = {}
    for r in R_list:
        for n in (1, 2):
            for m in (1, 2):
                neg = (tuple(-x for x in r), n, m)
                H[(r, m, n)] = H[neg] if neg in H else round(float(rng.normal()), 6) if (r, m, n) != neg else 0.3 * m
                lines.append(f"{r[0]} {r[1]} {r[2]} {m} {n} {H[(r, m, n)]:.6f} 0.0")
    (tmp_path / "s_hr.dat").write_text("\n".join(lines) + "\n")
    (tmp_path / "s_centres.xyz").write_text("2\nx\n" + "".join(f"X {x} {y} {z}\n" for x, y, z in centres))
    tb = TightBinding.from_wannier90(tmp_path / "s_hr.dat", cell=cell, mp_grid=(3, 3, 1))
    assert tb.ws_source.startswith("recomputed") and np.all(tb.R[:, 2] == 0)
    sh = compute_wsvec(R_list, centres, cell, (3, 3, 1))
    assert np.any(sh.T[:, 2] != 0)                                  # Wannier90 itself shifts along c here
    hr = read_hr_data(tmp_path / "s_hr.dat")
    R, rows, cols, v = apply_wsvec(hr.R, hr.rows, hr.cols, hr.values, sh)
    k = np.column_stack([np.random.default_rng(4).random((6, 2)), np.zeros(6)])
    full = TightBinding(cell, R, rows, cols, v, tb.orbitals, check_hermitian=False).hermitize()
    np.testing.assert_allclose(tb.eigenvalues(k), full.eigenvalues(k), atol=1e-12)
