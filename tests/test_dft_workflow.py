"""Tests of the DFT data workflow: sampling and input writing (no codes needed) and one tiny end-to-end run."""
from __future__ import annotations

import dataclasses
import gzip
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest

from ase_wannierml.dft import codes, qe_input, quality, w90_files, w90_input
from ase_wannierml.dft.materials import GRAPHENE_BILAYER, MOS2_BILAYER
from ase_wannierml.dft.sampling import (FrameParams, build_structure, frame_plan, primitive_cell,
                                        reference_frames, sample_frame, strain_matrix, twist_angle_deg)
from ase_wannierml.dft.workflow import orbital_map, prepare_inputs
from ase_wannierml.tb.tightbinding import TightBinding

SHARED = Path(__file__).resolve().parents[2] / "shared" / "dft"


# ------------------------------------------------------------------------------------------------ sampling
def test_reference_AB_matches_protocol_geometry():
    """The AB reference frame is exactly the tested protocol's 4-atom cell (a = 2.46 Å, d = 3.35 Å, c = 20 Å)."""
    protocol = SHARED / "graphene" / "scf.in"
    if not protocol.is_file():
        pytest.skip(f"{protocol} not found (the shared protocol folder sits beside the repository)")
    atoms = build_structure(GRAPHENE_BILAYER, reference_frames(GRAPHENE_BILAYER)[0])
    text = protocol.read_text().split("CELL_PARAMETERS angstrom")[1]
    rows = [ln.split() for ln in text.splitlines()[1:9]]
    cell = np.array([[float(x) for x in r] for r in rows[:3]])
    pos = np.array([[float(x) for x in r[1:]] for r in rows[4:8]])
    np.testing.assert_allclose(atoms.cell.array, cell, atol=1e-6)
    np.testing.assert_allclose(atoms.positions, pos, atol=1e-6)
    assert list(atoms.get_array("layer")) == [0, 0, 1, 1]


def test_strain_shift_gap_applied():
    p = FrameParams(frame_id="t", material=GRAPHENE_BILAYER.name, seed=1, shift=(0.21, 0.57), gap=3.7,
                    strain=(0.05, -0.03, 0.02))
    atoms = build_structure(GRAPHENE_BILAYER, p)
    f = strain_matrix(p.strain)
    cell0 = primitive_cell(GRAPHENE_BILAYER.a, GRAPHENE_BILAYER.dft.vacuum_c)
    np.testing.assert_allclose(atoms.cell.array, cell0 @ f.T, atol=1e-12)
    assert np.linalg.norm(atoms.cell[0]) == pytest.approx(GRAPHENE_BILAYER.a * math.hypot(1.05, 0.02))
    layer = atoms.get_array("layer")
    z = atoms.positions[:, 2]
    assert z[layer == 1].min() - z[layer == 0].max() == pytest.approx(3.7)
    # top layer = bottom layer + shift (fractional, mod 1)
    frac = atoms.get_scaled_positions()
    d = (frac[layer == 1][:, :2] - frac[layer == 0][:, :2] - np.array(p.shift)) % 1.0
    np.testing.assert_allclose(np.minimum(d, 1 - d), 0.0, atol=1e-9)
    # bond length of the strained lattice still about 1.42 Å * (1 ± 5 %)
    assert 1.33 < atoms.get_distance(0, 1, mic=True) < 1.52


def test_rattle_is_seeded_bounded_and_recorded():
    p = sample_frame(GRAPHENE_BILAYER, 17, "1x1")
    assert 0.01 <= p.rattle <= 0.03 and p.seed > 0
    a1, a2 = build_structure(GRAPHENE_BILAYER, p), build_structure(GRAPHENE_BILAYER, p)
    np.testing.assert_array_equal(a1.positions, a2.positions)
    p0 = dataclasses.replace(p, rattle=0.0)
    d = a1.positions - build_structure(GRAPHENE_BILAYER, p0).positions
    assert 0 < np.abs(d).max() <= 3 * p.rattle + 1e-12
    assert FrameParams.from_dict(json.loads(json.dumps(p.to_dict()))) == p


def test_frame_plan_diverse_unique_and_deterministic():
    plan = frame_plan(GRAPHENE_BILAYER, 330)
    assert len({p.frame_id for p in plan}) == 330
    assert [p.to_dict() for p in plan[:50]] == [p.to_dict() for p in frame_plan(GRAPHENE_BILAYER, 50)]
    rnd = [p for p in plan if p.kind == "1x1" and "reference" not in p.notes]
    strains = np.array([p.strain for p in rnd])
    assert np.abs(strains).max() > 0.06 and np.abs(strains).max() <= 0.08       # ±8 % overall
    assert np.mean(np.abs(strains).max(axis=1) <= 0.02) > 0.6                   # most frames moderate
    gaps = np.array([p.gap for p in plan])
    assert gaps.min() >= 3.0 and gaps.max() <= 4.0 and gaps.max() - gaps.min() > 0.8
    shifts = np.array([p.shift for p in rnd[:40]])
    assert shifts.min() < 0.15 and shifts.max() > 0.85                         # whole cell covered early
    kinds = [p.kind for p in plan]
    assert kinds.count("2x2") > 10 and kinds.count("twist-m1") == 2
    assert all(p.kind == "1x1" for p in plan[:60])


def test_2x2_and_twisted_cells():
    a = build_structure(GRAPHENE_BILAYER, sample_frame(GRAPHENE_BILAYER, 68, "2x2"))
    assert len(a) == 16 and np.bincount(a.get_array("layer")).tolist() == [8, 8]
    p = dataclasses.replace(sample_frame(GRAPHENE_BILAYER, 200, "twist-m1"), rattle=0.0, strain=(0, 0, 0))
    t = build_structure(GRAPHENE_BILAYER, p)
    assert len(t) == 28 and twist_angle_deg(1) == pytest.approx(21.7868, abs=1e-3)
    from ase.neighborlist import neighbor_list
    i, d = neighbor_list("id", t, 1.6)
    assert np.all(np.bincount(i, minlength=28) == 3)
    np.testing.assert_allclose(d, GRAPHENE_BILAYER.a / math.sqrt(3), atol=1e-9)


def test_mos2_bilayer_geometry_and_gap():
    p = sample_frame(MOS2_BILAYER, 5, "1x1")
    a = build_structure(MOS2_BILAYER, dataclasses.replace(p, rattle=0.0))
    assert a.get_chemical_formula() == "Mo2S4"
    z, layer = a.positions[:, 2], a.get_array("layer")
    assert z[layer == 1].min() - z[layer == 0].max() == pytest.approx(p.gap)
    assert p.top_variant in ("H", "R")


# ------------------------------------------------------------------------------------------------ inputs
def test_graphene_inputs(tmp_path):
    p = sample_frame(GRAPHENE_BILAYER, 7, "1x1")
    prep = prepare_inputs(GRAPHENE_BILAYER, p, tmp_path)
    scf = (tmp_path / "scf.in").read_text()
    nscf = (tmp_path / "nscf.in").read_text()
    win = (tmp_path / "wannier90.win").read_text()
    assert "tstress = .true." in scf and "vdw_corr = 'dft-d3'" in scf and "dftd3_version = 4" in scf
    assert "15 15 1 0 0 0" in scf and "ecutrho = 240" in scf and "smearing = 'mv'" in scf
    assert "nosym = .true." in nscf and "noinv = .true." in nscf and "nbnd = 24" in nscf
    assert prep["kgrid"].shape == (64, 3) and "K_POINTS crystal\n64\n" in nscf
    assert "num_iter  = 0" in win and "C:pz\n" in win and "translate_home_cell = .false." in win
    assert "write_hr  = .true." in win and "num_bands = 24" in win and "num_wann  = 4" in win
    # positions written = the structure, wrapped into the home cell along a, b
    pos = np.array([[float(x) for x in ln.split()[1:]] for ln in
                    scf.split("ATOMIC_POSITIONS angstrom\n")[1].splitlines()[:4]])
    ref = build_structure(GRAPHENE_BILAYER, p)
    np.testing.assert_allclose(pos, prep["atoms"].positions, atol=1e-9)
    d = ref.cell.scaled_positions(pos) - ref.cell.scaled_positions(ref.positions)
    np.testing.assert_allclose(d, np.round(d), atol=1e-9)
    np.testing.assert_allclose(pos[:, 2], ref.positions[:, 2], atol=1e-9)


def test_inputs_wrap_md_positions_into_the_home_cell(tmp_path):
    """An MD snapshot whose layer slid by cells (unwrapped positions) is written wrapped along a, b (never c): a
    Wannier90 projection site two cells away gave delocalised functions (spread 66 Å², band error 0.7 eV)."""
    p = sample_frame(GRAPHENE_BILAYER, 7, "1x1")
    ref = build_structure(GRAPHENE_BILAYER, p)
    atoms = ref.copy()
    shift = np.array([[2, -1, 0], [-2, 3, 0], [0, 0, 0], [1, 2, 0]])          # lattice vectors per atom
    atoms.positions += shift @ atoms.cell.array
    prep = prepare_inputs(GRAPHENE_BILAYER, p, tmp_path, atoms=atoms)
    scf = (tmp_path / "scf.in").read_text()
    pos = np.array([[float(x) for x in ln.split()[1:]] for ln in
                    scf.split("ATOMIC_POSITIONS angstrom\n")[1].splitlines()[:4]])
    frac = prep["atoms"].cell.scaled_positions(pos)
    assert np.all(frac[:, :2] >= -1e-12) and np.all(frac[:, :2] < 1)
    np.testing.assert_allclose(pos[:, 2], atoms.positions[:, 2], atol=1e-9)               # c untouched
    np.testing.assert_allclose(prep["atoms"].positions, pos, atol=1e-9)                   # the labels' structure
    back = ref.cell.scaled_positions(pos) - ref.cell.scaled_positions(ref.positions)      # same sites mod a, b
    np.testing.assert_allclose(back, np.round(back), atol=1e-9)
    win = (tmp_path / "wannier90.win").read_text()
    cart = np.array([[float(x) for x in ln.split()[1:]] for ln in
                     win.split("begin atoms_cart\nang\n")[1].split("end atoms_cart")[0].splitlines()])
    np.testing.assert_allclose(cart, pos, atol=1e-6)
    assert np.abs(atoms.positions - prep["atoms"].positions).max() > 4                  # input itself not changed


def test_mos2_inputs_dry_run(tmp_path):
    if not Path(MOS2_BILAYER.dft.pseudo_dir, "mo.upf").exists():
        pytest.skip(f"seed pseudopotentials not found in {MOS2_BILAYER.dft.pseudo_dir}")
    prep = prepare_inputs(MOS2_BILAYER, sample_frame(MOS2_BILAYER, 3, "1x1"), tmp_path)
    win = (tmp_path / "wannier90.win").read_text()
    assert prep["num_wann"] == 2 * 5 + 4 * 3 and prep["n_excluded"] == 2 * 4 + 4 * 1
    assert prep["nbnd_nscf"] == 12 + 22 and "exclude_bands = 1-12" in win
    assert "Mo:d\n" in win and "S:p\n" in win and "dis_froz" not in win
    assert MOS2_BILAYER.dft.pseudo_dir in (tmp_path / "scf.in").read_text()
    orb = orbital_map(prep["atoms"], MOS2_BILAYER)
    assert len(orb) == 22 and [o["label"] for o in orb[:5]] == ["dz2", "dxz", "dyz", "dx2-y2", "dxy"]


def test_check_codes_names_missing_and_apt_line():
    with pytest.raises(RuntimeError, match="definitely-not-a-code.x.*apt-get install"):
        codes.check_codes(("definitely-not-a-code.x",))


# ------------------------------------------------------------------------------------------------ file helpers
def test_projectability_and_frozen_window():
    rng = np.random.default_rng(0)
    nk, nb, nw = 3, 6, 2
    # bands 0..1 live in the trial space, band 2 is orthogonal to it (σ-like), others partial
    A = rng.normal(size=(nk, nb, nw)) * 0.1 + 0j
    A[:, 0:2, :] = np.eye(2)[None] * 0.8
    A[:, 2, :] = 0.0
    p = w90_files.projectability(A)
    np.testing.assert_allclose(p.sum(axis=1), nw, atol=1e-10)
    assert np.all(p > -1e-12) and np.all(p < 1 + 1e-12) and np.all(p[:, 2] < 1e-12)
    e = np.tile(np.array([-1.0, 0.5, -0.6, 3.0, 4.0, 5.0]), (nk, 1))
    w = w90_files.choose_frozen_window(e, p, 0.0, (-2.0, 2.0), nw, 0.5)
    assert -0.6 < w["dis_froz_min"] < 0.0 and w["dis_froz_max"] == 2.0 and w["n_low_proj_excluded"] == nk


def test_hr_roundtrip_and_chain_bands(tmp_path):
    """1-orbital chain with t = -1 eV written in _hr.dat format (with a degeneracy 2) gives E = 2t cos(2πk)."""
    R = np.array([[-1, 0, 0], [0, 0, 0], [1, 0, 0]])
    deg = np.array([2, 1, 2])
    lines = ["test", "1", "3", " ".join(str(d) for d in deg)]
    for r, d, v in zip(R, deg, (-1.0, 0.3, -1.0)):
        lines.append(f"{r[0]} {r[1]} {r[2]} 1 1 {v * d:.6f} 0.000000")
    path = tmp_path / "x_hr.dat.gz"
    path.write_bytes(gzip.compress(("\n".join(lines) + "\n").encode()))
    tb = TightBinding.from_wannier90(path, cell=np.eye(3), check_hermitian=False)   # the one Wannier90 reader
    k = np.array([[0.0, 0, 0], [0.25, 0, 0], [0.1, 0, 0]])
    e = tb.eigenvalues(k)[:, 0]
    np.testing.assert_allclose(e, 0.3 - 2.0 * np.cos(2 * np.pi * k[:, 0]), atol=1e-9)
    assert quality.hermiticity_error(tb) == 0.0
    assert quality.onsite_stats(tb, ["C:pz"], 0.1)["C:pz"]["min"] == pytest.approx(0.2)


def test_band_error_assignment_ignores_foreign_dft_states():
    e_dft = np.array([[-5.0, -0.5, -0.3, 0.4, 1.0]])       # -0.3: a σ state not in the Wannier model
    e_wan = np.array([[-0.52, 0.41, 1.02, 9.0]])
    m = quality.band_errors(e_dft, e_wan, 0.0, 2.0)
    assert m["band_n_compared"] == 3 and m["band_max_meV"] == pytest.approx(20.0)


# ------------------------------------------------------------------------------------------------ end to end
def skip_without_dft_codes() -> None:
    """Skip unless every code the workflow checks for (``codes.REQUIRED``: pw.x, pw2wannier90.x, wannier90.x,
    mpirun) and pp.x (vacuum level) is on PATH; the skip message names the missing ones."""
    missing = [c for c in (*codes.REQUIRED, "pp.x") if shutil.which(c) is None]
    if missing:
        pytest.skip(f"{', '.join(missing)} not installed (apt-get install quantum-espresso quantum-espresso-data "
                    f"wannier90 openmpi-bin)")


@pytest.mark.dft
@pytest.mark.slow
def test_tiny_graphene_frame_end_to_end(tmp_path):
    skip_without_dft_codes()
    from ase.io import read

    from ase_wannierml.dft.workflow import run_frame

    fast = dataclasses.replace(GRAPHENE_BILAYER.dft, ecutwfc=20.0, ecutrho=160.0, kmesh_scf_1x1=6,
                               kmesh_nscf_1x1=6)
    material = dataclasses.replace(GRAPHENE_BILAYER, dft=fast)
    p = dataclasses.replace(sample_frame(material, 5, "1x1"), frame_id="tiny", strain=(0.01, -0.005, 0.004))
    meta = run_frame(material, p, tmp_path / "ds", tmp_path / "scratch", codes.Runner(nprocs=2, npools=2))
    frame = tmp_path / "ds" / "frames" / "tiny"
    assert sorted(x.name for x in frame.iterdir()) == ["dft_check_bands.json", "meta.json", "structure.extxyz",
                                                       "wannier90_centres.xyz", "wannier90_hr.dat.gz",
                                                       "wannier90_wsvec.dat.gz"]
    assert not (tmp_path / "scratch" / material.name / "tiny").exists()       # scratch deleted
    assert json.loads((frame / "meta.json").read_text())["status"] == meta["status"]
    assert "error" not in meta["reason"]
    atoms = read(frame / "structure.extxyz")
    energy = atoms.get_potential_energy() if atoms.calc is not None else atoms.info["energy"]
    forces = atoms.get_forces() if atoms.calc is not None else atoms.arrays["forces"]
    assert np.isfinite(energy) and -160.0 < energy / len(atoms) < -150.0     # C: about -155 eV/atom here
    assert np.abs(forces.sum(axis=0)).max() < 1e-3 and np.abs(forces).max() < 5.0
    assert list(atoms.arrays["layer"]) == [0, 0, 1, 1]
    tb = TightBinding.from_wannier90(frame / "wannier90_hr.dat.gz", atoms=atoms, check_hermitian=False)
    assert tb.norb == 4 and quality.hermiticity_error(tb) < 1e-5 and tb.ws_source.startswith("file")
    assert quality.centre_distances(tb.orbitals.centres, atoms).max() < 0.1
    onsite = meta["quality"]["onsite_rel_EF_eV"]["C:pz"]
    assert -2.0 < onsite["min"] <= onsite["max"] < 2.0 and onsite["spread"] < 0.3
    t1 = float(np.real(tb.values[(tb.rows == 0) & (tb.cols == 1) & np.all(tb.R == 0, axis=1)][0]))  # intralayer NN
    assert -3.3 < t1 < -2.4
    assert meta["quality"]["band_max_1eV_meV"] < 150.0
    # the off-mesh figure: 6x6 mesh here, so Γ, (1/6, 1/6), K and the three M points are left out
    assert meta["quality"]["n_check_k_off_mesh"] == int((~quality.on_mesh(quality.CHECK_KPTS, [6, 6, 1])).sum()) == 4
    assert meta["quality"]["band_max_1eV_offmesh_meV"] <= meta["quality"]["band_max_1eV_meV"] + 1e-9
    vac = meta["vacuum"]        # electrostatic vacuum level: the work function of bilayer graphene is ~4.3-4.6 eV
    assert meta["vacuum_level_eV"] == vac["vacuum_level_eV"] and vac["vacuum_planes"] >= 3
    assert 3.8 < meta["vacuum_level_eV"] - meta["fermi_level_eV"] < 5.0
    assert vac["vacuum_spread_eV"] < 0.02   # flat in the vacuum: no dipole in a near-symmetric bilayer


@pytest.mark.dft
@pytest.mark.slow
def test_default_stacking_grid_ends_with_separated_layers():
    """The default grid keeps its first ids (frames on disk stay valid) and appends separated-layer frames beyond
    the backbone cut-off: they fix the zero of the binding energy (measured: without them the model's AB binding
    was off by 5-10 meV/atom)."""
    from ase_wannierml.dft.sampling import GRID_GAP_OFFSETS, SEPARATED_GAPS, stacking_grid

    grid = stacking_grid(GRAPHENE_BILAYER)
    n = 4 * len(GRID_GAP_OFFSETS)
    assert grid[0].frame_id == "s000-scf-t0.00-g3.10" and grid[n - 1].frame_id == "s019-scf-t1.00-g4.30"
    extra = grid[n:]
    assert [round(p.gap, 2) for p in extra] == [*SEPARATED_GAPS, *SEPARATED_GAPS]
    assert min(p.gap for p in extra) > 5.0                      # graphene backbone cut-off
    assert extra[-1].shift == pytest.approx(GRAPHENE_BILAYER.references[0][2])
    assert len({p.frame_id for p in grid}) == len(grid)


def test_extra_stacking_grid_has_its_own_ids_and_the_cli_refuses_clashes(tmp_path, capsys):
    """An extra grid (e.g. the binding-curve minimum) gets ids that cannot collide with the default grid's, and the
    batch CLI refuses an extra grid without its own prefix, grid options without --stacking-grid and bad gaps."""
    from ase_wannierml.dft import batch
    from ase_wannierml.dft.sampling import stacking_grid

    default_ids = {p.frame_id for p in stacking_grid(GRAPHENE_BILAYER)}
    extra = stacking_grid(GRAPHENE_BILAYER, gaps=(3.35, 3.45), path_fractions=(1.0,), prefix="bc")
    assert [p.frame_id for p in extra] == ["bc000-scf-t1.00-g3.35", "bc001-scf-t1.00-g3.45"]
    assert not default_ids & {p.frame_id for p in extra}
    assert [p.gap for p in extra] == [3.35, 3.45] and all(p.kind == "scf" for p in extra)
    for bad in ({"prefix": ""}, {"prefix": "b/c"}, {"gaps": (3.3, float("nan"))}, {"gaps": (0.0,)}, {"gaps": ()},
                {"path_fractions": ()}, {"path_fractions": (1.0, float("nan"))}):
        with pytest.raises(ValueError, match="stacking_grid"):
            stacking_grid(GRAPHENE_BILAYER, **{"gaps": (3.3,), **bad, "prefix": bad.get("prefix", "bc")})
    base = ["--material", "graphene-bilayer", "--dry-run", "--scratch", str(tmp_path)]
    for argv, msg in ((["--stacking-grid", "--grid-gaps", "3.3"], "own --grid-prefix"),
                      (["--stacking-grid", "--grid-gaps", "3.3", "--grid-prefix", "s"], "own --grid-prefix"),
                      (["--n-frames", "2", "--grid-gaps", "3.3", "--grid-prefix", "bc"], "only apply with"),
                      (["--stacking-grid", "--grid-gaps", "-1", "--grid-prefix", "bc"], "finite and > 0"),
                      (["--stacking-grid", "--grid-fractions", "nan", "--grid-prefix", "bc"], "must be finite")):
        with pytest.raises(SystemExit) as exc:
            batch.main(base + argv)
        assert exc.value.code == 2 and msg in capsys.readouterr().err
    assert batch.main(base + ["--stacking-grid", "--grid-gaps", "3.35", "--grid-fractions", "1", "--grid-prefix",
                              "bc"]) == 0
    assert (tmp_path / "dry-run" / "graphene-bilayer" / "bc000-scf-t1.00-g3.35").is_dir()


def test_strain_series_is_biaxial_and_builds_the_strained_cell():
    """Biaxial frames: both lattice vectors scaled by 1 + ε (no shear), reference stacking, stable ids."""
    from ase_wannierml.dft.materials import get_material
    from ase_wannierml.dft.sampling import BIAXIAL_STRAINS, build_structure, reference_frames, strain_series

    mos2 = get_material("mos2-bilayer")
    series = strain_series(mos2)
    assert [p.frame_id for p in series][:2] == ["b000-biax+0.080", "b001-biax+0.040"]
    assert all(p.strain == (e, e, 0.0) for p, e in zip(series, BIAXIAL_STRAINS))
    ref = build_structure(mos2, reference_frames(mos2)[0])
    strained = build_structure(mos2, series[0])
    np.testing.assert_allclose(strained.cell.lengths()[:2], 1.08 * ref.cell.lengths()[:2], rtol=1e-9)
    assert strained.cell.angles()[2] == pytest.approx(ref.cell.angles()[2])


def test_scf_only_stacking_frame_and_binding_check(tmp_path):
    """An SCF-only frame of the stacking grid has energy/forces/stress and no Wannier files; its energy equals
    a binding-curve point of the same geometry and settings (dft.binding writes the same SCF)."""
    skip_without_dft_codes()
    from ase.io import read

    from ase_wannierml.dft.sampling import stacking_grid
    from ase_wannierml.dft.workflow import run_frame

    fast = dataclasses.replace(GRAPHENE_BILAYER.dft, ecutwfc=20.0, ecutrho=160.0, kmesh_scf_1x1=6)
    material = dataclasses.replace(GRAPHENE_BILAYER, dft=fast)
    grid = stacking_grid(material, gaps=(3.3, 3.6), path_fractions=(0.0, 1.0))
    assert [g.frame_id for g in grid] == ["s000-scf-t0.00-g3.30", "s001-scf-t0.00-g3.60", "s002-scf-t1.00-g3.30",
                                          "s003-scf-t1.00-g3.60"]
    assert grid[2].shift == pytest.approx(material.references[0][2]) and grid[0].shift == (0.0, 0.0)
    p = grid[2]
    meta = run_frame(material, p, tmp_path / "ds", tmp_path / "scratch", codes.Runner(nprocs=2, npools=2))
    assert meta["status"] == "ok" and meta["settings"]["scf_only"], meta["reason"]
    frame = tmp_path / "ds" / "frames" / p.frame_id
    assert sorted(x.name for x in frame.iterdir()) == ["meta.json", "structure.extxyz"]
    atoms = read(frame / "structure.extxyz")
    layer = atoms.arrays["layer"]
    gap = atoms.positions[layer == 1, 2].min() - atoms.positions[layer == 0, 2].max()
    assert gap == pytest.approx(3.3, abs=1e-6)
    forces = atoms.get_forces()
    assert np.abs(forces.sum(axis=0)).max() < 1e-3
    assert np.abs(forces[:, :2]).max() < 1e-3                 # AB stacking: no in-plane force on a rigid cell
    assert forces[layer == 1, 2].sum() == pytest.approx(-forces[layer == 0, 2].sum(), abs=1e-3)

    from ase_wannierml.dft import binding

    data = binding.dft_curve(material, [3.3], 11.3, 0.0, tmp_path / "binding.json", tmp_path / "scratch",
                             codes.Runner(nprocs=2, npools=2))
    assert data["energies_eV"]["3.300"] == pytest.approx(atoms.get_potential_energy(), abs=1e-6)
    e_b = binding.summarize({**data["energies_eV"], "3.200": data["energies_eV"]["3.300"] + 0.004,
                             "3.400": data["energies_eV"]["3.300"] + 0.004}, 4, 11.3)
    assert e_b["equilibrium_gap_A"] == pytest.approx(3.3, abs=1e-6)   # symmetric parabola: minimum at 3.3
    assert e_b["binding_energy_meV_per_atom"] < 0                      # bound at 3.3 Å


def test_frame_plan_matches_recorded_dataset_plan():
    """The running batch's plan.json must stay reproducible (frame ids must keep their parameters)."""
    recorded = Path(__file__).resolve().parents[1] / "datasets" / "graphene-bilayer" / "plan.json"
    if not recorded.exists():
        pytest.skip("no recorded graphene plan yet")
    plan = json.loads(recorded.read_text())
    assert [p.to_dict() for p in frame_plan(GRAPHENE_BILAYER, len(plan))] == plan


def test_failed_step_is_recorded_not_raised(tmp_path):
    """A crashing code step gives a 'rejected' frame with the error as reason, written atomically, scratch gone."""
    from ase_wannierml.dft.workflow import run_frame

    class FailingRunner(codes.Runner):
        def pw(self, step, input_file, workdir):
            assert (workdir / input_file).exists()
            raise RuntimeError(f"pw.x step {step!r} failed (simulated)")

    p = sample_frame(GRAPHENE_BILAYER, 9, "1x1")
    meta = run_frame(GRAPHENE_BILAYER, p, tmp_path / "ds", tmp_path / "scr", FailingRunner())
    assert meta["status"] == "rejected" and meta["reason"].startswith("error: RuntimeError") and "simulated" in meta["reason"]
    frame = tmp_path / "ds" / "frames" / p.frame_id
    assert [x.name for x in frame.iterdir()] == ["meta.json"]
    assert json.loads((frame / "meta.json").read_text())["sampling"] == p.to_dict()
    assert not any((tmp_path / "ds" / "frames").glob(".tmp-*"))
    assert not (tmp_path / "scr" / GRAPHENE_BILAYER.name / p.frame_id).exists()
