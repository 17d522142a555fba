"""The vacuum-level step of the DFT workflow (``dft.vacuum``): V(z) analysis, input editing and the frame backfill
bookkeeping, without running the codes (the end-to-end run is in test_dft_workflow.py)."""
from __future__ import annotations

import json

import numpy as np
import pytest
from ase import Atoms
from ase.io.cube import write_cube
from ase.units import Rydberg

from ase_wannierml.dft import vacuum


def _slab_profile(c=30.0, n=300, z_layers=(13.3, 16.7), v_vac=4.2):
    """A model V(z) (eV): constant v_vac far away, deep Gaussian wells at the layers."""
    z = np.arange(n) * c / n
    v = np.full(n, v_vac)
    for z0 in z_layers:
        d = np.minimum(np.abs(z - z0), c - np.abs(z - z0))
        v -= 15.0 * np.exp(-d**2 / 0.8)
    return z, v


def test_vacuum_level_is_the_flat_far_region():
    z, v = _slab_profile()
    out = vacuum.vacuum_level(z, v, np.array([13.3, 16.7]), 30.0, min_distance=4.0)
    assert abs(out["vacuum_level_eV"] - 4.2) < 1e-6 and out["vacuum_spread_eV"] < 1e-6
    assert out["max_distance_A"] == pytest.approx(15.0 - 1.7, abs=0.1)
    # wells reaching into the averaging region would bias it: the well tail at 4 Å is exp(-20): negligible
    out2 = vacuum.vacuum_level(z, v + 0.01 * np.sin(2 * np.pi * z / 30.0), np.array([13.3, 16.7]), 30.0)
    assert abs(out2["vacuum_level_eV"] - 4.2) < 0.01 and out2["vacuum_spread_eV"] > 0.005


def test_vacuum_level_needs_vacuum():
    z, v = _slab_profile(c=8.0, n=80, z_layers=(2.0, 6.0))
    with pytest.raises(ValueError, match="no vacuum region"):
        vacuum.vacuum_level(z, v, np.array([2.0, 6.0]), 8.0, min_distance=4.0)


def test_planar_average_reads_a_pp_cube_in_rydberg(tmp_path):
    c = 30.0
    atoms = Atoms("C2", positions=[[0, 0, 13.3], [0, 0, 16.7]], cell=[[2.46, 0, 0], [-1.23, 2.13, 0], [0, 0, c]],
                  pbc=True)
    z, v = _slab_profile(c=c, n=120)
    data = np.broadcast_to(v / Rydberg, (6, 5, 120)).copy()
    with open(tmp_path / "v.cube", "w") as f:
        write_cube(f, atoms, data)
    z_g, v_g, read_atoms = vacuum.planar_average(tmp_path / "v.cube")
    np.testing.assert_allclose(v_g, v, atol=1e-5)          # eV
    np.testing.assert_allclose(z_g, z, atol=1e-4)          # Å (the cube stores the cell in Bohr, 6 digits)
    tilted = atoms.copy()
    tilted.cell[2] = [1.0, 0.0, c]
    with open(tmp_path / "t.cube", "w") as f:
        write_cube(f, tilted, data)
    with pytest.raises(ValueError, match="not perpendicular"):
        vacuum.planar_average(tmp_path / "t.cube")


def test_kmesh_edit_and_pp_input():
    scf = "&CONTROL\n prefix = 'x'\n/\nK_POINTS automatic\n12 12 1 0 0 0\n"
    assert vacuum._with_kmesh(scf, 6).endswith("K_POINTS automatic\n6 6 1 0 0 0\n")
    with pytest.raises(ValueError, match="K_POINTS automatic"):
        vacuum._with_kmesh("K_POINTS crystal\n1\n0 0 0 1\n", 6)
    text = vacuum.pp_input_text("wan")
    assert "plot_num = 11" in text and "prefix = 'wan'" in text and "output_format = 6" in text


def test_backfill_adds_only_the_vacuum_entries(tmp_path, monkeypatch):
    """The backfill reruns the recorded SCF (k-mesh as asked), then writes vacuum_level_eV and vacuum into
    meta.json and leaves every other key as it was; its scratch directory is removed."""
    frame = tmp_path / "frames" / "0000-x"
    frame.mkdir(parents=True)
    meta = {"status": "ok", "fermi_level_eV": 1.5, "settings": {"kmesh_scf": [12, 12, 1]},
            "inputs": {"scf.in": "&CONTROL\n prefix = 'wan'\n/\nK_POINTS automatic\n12 12 1 0 0 0\n"}, "other": [1, 2]}
    (frame / "meta.json").write_text(json.dumps(meta))
    seen = {}

    class FakeRunner(vacuum.Runner):
        def pw(self, step, input_file, workdir):
            seen["scf"] = (workdir / input_file).read_text()
            self.timings[step] = 1.0
            return 1.0

    monkeypatch.setattr(vacuum, "parse_scf", lambda path: {"fermi_level": 1.49, "energy": -10.0})
    monkeypatch.setattr(vacuum, "run_vacuum_level",
                        lambda runner, work, prefix, min_distance: {"vacuum_level_eV": 6.0, "vacuum_spread_eV": 0.0})
    out = vacuum.backfill_frame(frame, tmp_path / "scr", FakeRunner(nprocs=1, npools=1), kmesh=6)
    assert "6 6 1 0 0 0" in seen["scf"] and not (tmp_path / "scr" / "0000-x").exists()
    new = json.loads((frame / "meta.json").read_text())
    assert new["vacuum_level_eV"] == 6.0 and new["vacuum"]["kmesh_scf"] == [6, 6, 1] and out["backfilled"]
    assert {k: v for k, v in new.items() if not k.startswith("vacuum")} == meta
