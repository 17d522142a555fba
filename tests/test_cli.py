"""The ``wannierml`` command end to end on a small bilayer with a small untrained model file."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from ase.io import read, write

from ase_wannierml import build_model
from ase_wannierml.cli import main
from ase_wannierml.structures import bilayer
from ase_wannierml.tb.tightbinding import TightBinding


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    model = build_model({"C": ["pz"]}, cutoff=4.0, dtype=torch.float64, seed=3, wannier_electrons={"C": 1.0},
                        ham_cutoff_near=4.0, ham_cutoff_far=5.0, ham_cutoff_inter=5.0)
    model.save(root / "model.pt")
    atoms = bilayer("graphene", stacking="AB")
    write(root / "blg.extxyz", atoms)
    return root


def test_export_writes_readable_hr(files, tmp_path):
    prefix = tmp_path / "blg"
    assert main(["export", str(files / "blg.extxyz"), "--model", str(files / "model.pt"), "-o", str(prefix)]) == 0
    atoms = read(files / "blg.extxyz")
    tb = TightBinding.from_wannier90(f"{prefix}_hr.dat", atoms=atoms)  # picks up blg_centres.xyz
    assert tb.norb == 4
    assert np.allclose(tb.orbitals.centres, atoms.positions, atol=1e-5)
    e = tb.eigenvalues([[0, 0, 0], [1 / 3, 1 / 3, 0]])
    assert np.all(np.isfinite(e))


def test_bands_and_dos_write_png(files, tmp_path):
    for cmd in ("bands", "dos"):
        out = tmp_path / f"{cmd}.png"
        extra = ["--npoints", "30"] if cmd == "bands" else ["--kpts", "6", "6", "1"]
        assert main([cmd, str(files / "blg.extxyz"), "--model", str(files / "model.pt"), "-o", str(out), *extra]) == 0
        assert out.stat().st_size > 5000


def test_relax_and_md_write_trajectories(files, tmp_path):
    out = tmp_path / "relaxed.extxyz"
    main(["relax", str(files / "blg.extxyz"), "--model", str(files / "model.pt"), "-o", str(out), "--steps", "3"])
    assert len(read(out)) == 4
    traj = tmp_path / "md.traj"
    assert main(["md", str(files / "blg.extxyz"), "--model", str(files / "model.pt"), "-o", str(traj),
                 "--steps", "4", "--interval", "2", "--temperature", "20"]) == 0
    assert len(read(traj, index=":")) == 3


def test_unknown_model_name_is_a_clear_error(files):
    with pytest.raises((ValueError, FileNotFoundError), match="no-such-model"):
        main(["export", str(files / "blg.extxyz"), "--model", "no-such-model"])
