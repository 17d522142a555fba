"""The DFT finite-displacement phonon check (``benchmarks/phonon_dispersion_dft.py``): its phonopy protocol, fed the
model's forces, must reproduce the model's own phonons from ``elph.phonons.modes_at_q`` (ASE ``Phonons``, an
independent implementation) at Γ, M and K; Γ from the 2×2 and the √3×√3 supercells must agree; the acoustic sum rule
holds; DFT frames that are missing or do not match the displaced structures are refused, not silently mis-assigned."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from ase.io import write

pytest.importorskip("phonopy")   # in the [test] extra; importorskip only guards a partial install

from ase_wannierml import WannierMLCalculator  # noqa: E402
from ase_wannierml.elph.phonons import commensurate_supercell, modes_at_q  # noqa: E402

from conftest import load_repo_module  # noqa: E402

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def bench():
    return load_repo_module("benchmarks/phonon_dispersion_dft.py")


@pytest.fixture(scope="module")
def calc():
    return WannierMLCalculator("graphene-bilayer", dtype=torch.float64)


def test_phonopy_protocol_equals_our_phonons_at_gamma_m_k(bench, calc):
    unit = bench.unit_cell()
    unit.calc = calc
    f = {cell: bench.frequencies(cell, bench.model_forces(cell, calc)) for cell in bench.SUPERCELLS}
    g1, g2 = np.array(f["2x2"]["Gamma"]), np.array(f["r3"]["Gamma"])
    assert np.abs(g1[:3]).max() < 0.5                          # acoustic sum rule (phonopy symmetrised)
    assert np.abs(g1 - g2).max() < 0.5                         # Γ from two supercells
    for q_name, cell, q in (("M", "2x2", (0.5, 0.0, 0.0)), ("K", "r3", (1 / 3, 1 / 3, 0.0))):
        ours, _ = modes_at_q(unit, calc, q, supercell=commensurate_supercell(q), delta=bench.DISTANCE)
        theirs = np.array(f[cell][q_name])
        # the two differ only in their displacement sets (ASE: ±x, ±y, ±z of every atom; phonopy: a symmetry-reduced
        # set expanded by the site symmetry), so within 0.1 % + 1 cm⁻¹
        assert np.all(np.abs(np.sort(ours) - theirs) < 1.0 + 1e-3 * np.abs(theirs)), (q_name, np.sort(ours), theirs)
    ours_g, _ = modes_at_q(unit, calc, delta=bench.DISTANCE)
    diff = np.abs(np.sort(ours_g)[3:] - g1[3:])
    # at the DFT geometry (d = 3.35 Å, 0.12 Å inside the session-9 model's equilibrium) the layer-breathing mode is
    # soft and anharmonic (20 cm⁻¹; DFT 123), so the two displacement sets differ by a few cm⁻¹ there (measured
    # 25.2 vs 19.9); every other mode within 0.1 % + 1 cm⁻¹
    soft = g1[3:] < 30.0
    assert np.all(diff[~soft] < 1.0 + 1e-3 * g1[3:][~soft])
    assert np.all(diff[soft] < 0.3 * g1[3:][soft] + 1.0)
    assert g1[-1] > 1400 and np.all((g1[3:6] > 10) & (g1[3:6] < 150))   # E2g and the interlayer modes, not noise


def test_missing_or_mismatched_dft_frames_are_refused(bench, tmp_path, monkeypatch):
    monkeypatch.setattr(bench, "CHECK_DIR", tmp_path)
    with pytest.raises(FileNotFoundError, match=r"structures \[0, 1, 2, 3, 4, 5, 6, 7, 8\]"):
        bench.dft_forces("r3")
    images = bench.supercell_images("r3")
    frame = tmp_path / "frames" / "phr3-scf-000000000000"
    frame.mkdir(parents=True)
    moved = images[2].copy()
    moved.positions[0] += 0.05                                 # not the structure it claims to be
    moved.calc = None
    moved.arrays["forces"] = np.zeros((len(moved), 3))
    write(frame / "structure.extxyz", moved, format="extxyz")
    (frame / "meta.json").write_text(json.dumps({"status": "ok", "sampling": {"notes": {"source_index": 2}}}))
    with pytest.raises(ValueError, match="does not match the phonopy supercell"):
        bench.dft_forces("r3")
