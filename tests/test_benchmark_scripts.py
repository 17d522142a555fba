"""Fast checks of the benchmark scripts' non-timing logic (no timings asserted, nothing heavy run):
the MACE comparison's missing-venv error, the QE output parsing of the DFT speed-up script, and that the
training-throughput benchmark's config is a valid training config."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_mace_comparison_missing_venv_says_how_to_create_it(tmp_path, capsys):
    mc = _load("mace_comparison")
    venv = tmp_path / "no-such-venv"
    assert mc.main(["--mace-venv", str(venv), "--json", ""]) == 2
    err = capsys.readouterr().err
    assert str(venv / "bin" / "python") in err
    assert f"python -m venv {venv}" in err
    assert "pip install torch==2.13.0" in err and "pip install mace-torch" in err


def test_mace_comparison_venv_without_mace_is_rejected(tmp_path):
    mc = _load("mace_comparison")
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "python").symlink_to(sys.executable)   # a Python, but (here) without mace-torch
    try:
        import mace  # noqa: F401
    except ImportError:
        with pytest.raises(mc.MissingVenvError, match="mace-torch cannot be imported"):
            mc.mace_python(tmp_path)
    else:
        pytest.skip("mace-torch is importable in the test environment")


def test_mace_comparison_sizes_and_table():
    mc = _load("mace_comparison")
    assert [4 * mc.supercell_k(n) ** 2 for n in (100, 400, 1600, 10000)] == [100, 400, 1600, 10000]
    cfg = {"hidden_irreps": "16x0e+16x1o+16x2e"}
    rows = [{"calculator": "ours", "dtype": "float32", "atoms": 100, "median_s": 0.5, "throughput": 200.0,
             "cpu_s": [0.4, 0.5, 0.6], "config": {"hidden_irreps": "32x0e+16x1o+8x2e"}},
            {"calculator": "mace", "dtype": "float32", "atoms": 100, "median_s": 1.0, "throughput": 100.0,
             "cpu_s": [1.5], "config": cfg}]
    text = mc.table(rows, "float32")
    assert "**2.00×**" in text and "| 3.00× |" in text and "MACE 16x0e+16x1o+16x2e" in text


PW_OUT = """
     number of k points=     1
     Dense  grid:  6107735 G-vectors     FFT dimensions: (  360,  360,  200)
     number of electrons       =      6352.00
     number of Kohn-Sham states=         3811
     Estimated max dynamical RAM per process >      61.88 GB
     Estimated total dynamical RAM >     123.77 GB
"""


def test_dft_speedup_parses_pw_estimate_and_extrapolates():
    ds = _load("dft_speedup")
    info = ds.parse_pw_header(PW_OUT)
    assert info["n_kpoints"] == 1 and info["n_ks_states"] == 3811
    assert info["est_max_ram_per_process_gb"] == pytest.approx(61.88)
    assert info["est_total_ram_gb"] == pytest.approx(123.77)
    assert ds.to_gb("850 MB") == pytest.approx(0.85)
    est = ds.qe_time_extrapolation({"scf_wall_s": 20.0, "n_kpoints": 10, "n_atoms": 4},
                                   {"n_atoms": 40, "n_kpoints": 1})
    assert est["estimated_scf_wall_s"] == pytest.approx(2.0 * 10 ** 3)
    assert "estimate" in est["method"]


def test_training_throughput_config_is_a_valid_short_run(tmp_path):
    import yaml

    from ase_wannierml.training.config import load_config

    tt = _load("training_throughput")
    raw = tt.make_config(tt.BASE_CONFIG, tmp_path, "run_p2", 12, None)
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(raw))
    cfg = load_config(path)
    assert cfg.optim.max_steps == 12 and cfg.run.log_every == 1 and cfg.run.init_from == ""
    assert cfg.run.eval_every > 12 and cfg.run.checkpoint_every > 12
    assert Path(cfg.run.output) == tmp_path / "run_p2" and Path(cfg.data.cache).parent == tmp_path
    assert all(Path(f).is_absolute() for f in cfg.data.frames)
    assert tt.torchrun_cmd(2, path)[-4:] == ["ase_wannierml.training.cli", "train", str(path), "--no-progress"]


def test_stacking_landscape_relative_energies():
    """E(t) − E(AB) at each gap and the AB curve relative to the widest gap, in meV/atom; frame ids parsed."""
    sl = _load("stacking_landscape")
    rows = [{"t": t, "gap": g, "dft_eV_per_atom": -1.0 + 0.001 * (1 - t) / g - 0.01 / g,
             "model_eV_per_atom": -2.0 + 0.002 * (1 - t) / g - 0.01 / g} for g in (3.0, 6.0) for t in (0.0, 1.0)]
    sl.landscape(rows)
    aa3 = next(r for r in rows if r["t"] == 0.0 and r["gap"] == 3.0)
    assert aa3["dft_rel_ab_meV"] == pytest.approx(1000 * 0.001 / 3.0)
    assert aa3["model_rel_ab_meV"] == pytest.approx(1000 * 0.002 / 3.0)
    ab3 = next(r for r in rows if r["t"] == 1.0 and r["gap"] == 3.0)
    assert ab3["dft_rel_wide_meV"] == pytest.approx(1000 * (-0.01 / 3.0 + 0.01 / 6.0))
    assert "dft_rel_wide_meV" not in aa3
    assert sl._GRID_ID.match("s017-scf-t1.00-g3.18")["gap"] == "3.18"
    assert sl._GRID_ID.match("0003-1x1") is None


def test_heldout_errors_mos2_filling_and_material_guard(tmp_path):
    """The held-out evaluation works for MoS2: its onsite analysis fills the Wannier bands with MoS2's 14 electrons
    per 11 orbitals (a half-filling rule, right for graphene pz, would put the 'neutrality level' inside the valence
    bands, ~1 eV off), and a model of the other material is refused instead of scored."""
    from ase_wannierml.model import load_model

    he = _load("heldout_errors")
    frame = he.frames_dir("mos2-bilayer") / "0003-1x1"
    res = he.hamiltonian_errors(load_model("mos2-bilayer").eval(), [frame])
    rec = res["onsite"]["frames"]["0003-1x1"]
    assert abs(rec["neutrality_shift"]) < 150.0, rec          # meV: predicted and DFT gap centres agree
    assert res["metrics"]["band MAE ±1 eV (meV)"] < 100.0
    with pytest.raises(SystemExit, match="not a mos2-bilayer model"):
        he.main(["evaluate", "--material", "mos2-bilayer", "--model", "g=graphene-bilayer",
                 "--out", str(tmp_path / "x.json")])
    assert not (tmp_path / "x.json").exists()


def test_ship_pretrained_refuses_to_score_on_no_frames(tmp_path, capsys):
    """A MoS2 model pointed at the graphene frames (same ids, other elements) used to score 0.00 against 0.00;
    now nothing is scored or shipped and the message names the frame folder. The default folder follows --name."""
    spec = importlib.util.spec_from_file_location("ship_pretrained", BENCH.parent / "scripts" / "ship_pretrained.py")
    ship = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ship)
    from ase_wannierml.model.io import PRETRAINED_DIR

    model = str(PRETRAINED_DIR / "mos2-bilayer.pt")
    graphene = str(BENCH.parent / "datasets" / "graphene-bilayer" / "frames")
    assert ship.main([model, "--name", "mos2-bilayer", "--frames", graphene, "--dry-run", "--no-train-eval"]) == 2
    assert "none of the model's" in capsys.readouterr().err
    assert ship.main([model, "--name", "mos2-bilayer", "--frames", str(tmp_path / "nope"), "--dry-run"]) == 2
    assert "no frame folder" in capsys.readouterr().err


def test_hamiltonian_floor_sees_a_symmetric_target_and_a_broken_one(tmp_path):
    """The symmetry floor of the DFT 2H reference cell is small (12 operations, < 2 meV in every category), and a
    target with one hopping changed by 0.1 eV has a floor in that category; a pair shell's residual is model −
    target; a folder that is not a frame is refused."""
    import json

    import torch

    from ase_wannierml.model import load_model
    from ase_wannierml.orbitals import orbitals_per_atom
    from ase_wannierml.training.cli import examples_for_model

    hf = _load("hamiltonian_floor")
    frame = Path(__file__).resolve().parents[1] / "datasets" / "mos2-bilayer" / "frames" / "0000-ref2H"
    model = load_model("mos2-bilayer", dtype=torch.float64)
    (example,) = examples_for_model(model.config, [str(frame)], model.metadata)
    orbitals = orbitals_per_atom(["Mo", "S", "S", "Mo", "S", "S"], dict(model.config.orbitals))
    floor = hf.symmetry_floor(example, orbitals)
    assert floor["ops"] == 12 and all(floor[c] < 2.0 for c in hf.CATEGORIES), floor
    broken = dict(example, target_ham=example["target_ham"].clone())
    k = int(torch.nonzero(example["ham_pair_category"] == 3)[0])
    broken["target_ham"][k, 0, 0] += 0.1
    assert hf.symmetry_floor(broken, orbitals)["inter"] > floor["inter"] + 0.01
    rows = hf.shell_residuals(model, example)
    assert rows and all(r["residual_rmse_meV"] >= r["residual_mae_meV"] > 0 for r in rows)
    with pytest.raises(SystemExit):
        hf.main(["--model", "m=mos2-bilayer", "--frames", str(tmp_path), "--out", str(tmp_path / "x.json")])
    assert not (tmp_path / "x.json").exists()
    scf_only = frame.parent / "s018-scf-t1.00-g3.48"                  # energies and forces, no Hamiltonian
    with pytest.raises(SystemExit, match="no frame with a usable Wannier Hamiltonian"):
        hf.main(["--model", "m=mos2-bilayer", "--frames", str(scf_only), "--out", str(tmp_path / "x.json")])
    assert not (tmp_path / "x.json").exists()
    hf.main(["--model", "m=mos2-bilayer", "--frames", str(frame), "--out", str(tmp_path / "y.json")])
    assert json.loads((tmp_path / "y.json").read_text())["frames"]["0000-ref2H"]["symmetry_floor_meV"]["ops"] == 12


def test_model_cost_compare_interleaves_and_reports_ratios(tmp_path):
    import json

    mc = _load("model_cost_compare")
    out = tmp_path / "cost.json"
    mc.main(["--material", "graphene-bilayer", "--model", "a=graphene-bilayer", "b=graphene-bilayer",
             "--supercells", "1", "--repeats", "1", "--out", str(out)])
    row = json.loads(out.read_text())["rows"][0]
    assert row["n_atoms"] == 4 and row["cpu_ratio_to_a"]["a"] == 1.0 and row["median_cpu_s"]["b"] > 0
    for bad in (["--model", "graphene-bilayer"], ["--model", "a=graphene-bilayer", "--repeats", "0"]):
        with pytest.raises(SystemExit):
            mc.main(["--material", "graphene-bilayer", *bad])
