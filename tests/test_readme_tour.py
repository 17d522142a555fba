"""The README's API tour runs as written (extracted from README.md) and its results are physically right."""
from __future__ import annotations

import re
import warnings
from pathlib import Path

import numpy as np
import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def tour_code() -> str:
    """The first ```python block after the "## API tour" heading."""
    text = README.read_text()
    section = text.split("## API tour", 1)[1]
    match = re.search(r"```python\n(.*?)```", section, re.DOTALL)
    assert match, "README.md: no python block under '## API tour'"
    return match.group(1)


@pytest.mark.slow
def test_readme_api_tour_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*no cell known.*")     # the file it wrote carries its cell
        exec(compile(tour_code(), str(README), "exec"), namespace)
    ns = namespace
    atoms, tb, ef = ns["atoms"], ns["tb"], ns["ef"]
    assert set(ns["available_models"]()) >= {"graphene-bilayer", "mos2-bilayer"}
    assert (tmp_path / "bands.png").stat().st_size > 10_000 and (tmp_path / "tbg.win").is_file()
    # read back: the cell and the elements of the file the tour wrote
    np.testing.assert_allclose(tb.cell, atoms.cell.array, atol=1e-6)
    assert tb.norb == len(atoms) == 148
    # E_F of this structure: half filling (one pz electron per C), within 0.1 eV of the model's stored level
    assert abs(ef - ns["calc"].reference_level) < 0.1
    e_all = ns["e_all"][0]
    assert ns["n_below"][0] == (e_all < ef).sum() == tb.norb // 2
    # the 8 sparse states nearest E_F are the 8 dense eigenvalues nearest E_F
    nearest = np.sort(e_all[np.argsort(np.abs(e_all - ef))[:8]])
    np.testing.assert_allclose(np.sort(ns["e_near"][0]), nearest, atol=1e-6)
    # the band structure is referenced to this E_F and crosses it at K (Dirac point of the twisted bilayer)
    assert ns["bs"].reference == pytest.approx(ef)
    assert np.abs(ns["bs"].energies[0] - ef).min() < 0.02
    assert ns["dos"].get_weights().min() >= 0
