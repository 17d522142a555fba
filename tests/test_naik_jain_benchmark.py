"""The Naik–Jain flat-band benchmark's band bookkeeping: valence widths from states straddling the gap, and a small
twisted MoS2 cell end to end (relax, committee bands, JSON)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import load_repo_module


@pytest.fixture(scope="module")
def nj():
    return load_repo_module("benchmarks/naik_jain_mos2.py")


def test_valence_widths_from_states_around_the_gap(nj):
    # 3 k-points: two valence bands (dispersing 10 and 40 meV) and one conduction band, given in random order
    vb1 = np.array([-0.50, -0.49, -0.495])
    vb2 = np.array([-0.60, -0.64, -0.62])
    cb = np.array([0.70, 0.71, 0.69])
    e_kn = np.stack([vb2, cb, vb1], axis=1)[:, [2, 0, 1]]
    w = nj.valence_widths(e_kn, e_f=0.1)
    assert w["vb1_width_meV"] == pytest.approx(10.0)
    assert w["vb2_width_meV"] == pytest.approx(40.0)
    assert w["vbm_eV"] == pytest.approx(-0.49) and w["vbm_k_index"] == 1
    with pytest.raises(ValueError, match="two valence states"):
        nj.valence_widths(np.stack([vb1, cb], axis=1), e_f=0.1)


def test_small_twisted_cell_end_to_end(nj, tmp_path):
    out = tmp_path / "nj.json"
    assert nj.main(["--families", "H", "--m", "1", "--npoints", "4", "--num", "8", "--fmax", "0.05",
                    "--out", str(out)]) == 0
    r = json.loads(out.read_text())["H"]
    assert r["stacking"] == "AA'" and r["atoms"] == 42
    assert len(r["member_vb1_widths_meV"]) == 4 and r["vb1_width_std_meV"] >= 0
    assert 0.5 < r["mean_h"]["gap_eV"] < 2.5          # a semiconductor, gap in eV
    assert (tmp_path / "nj.png").is_file()
