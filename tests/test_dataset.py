"""Frames → targets → cache: physics of the Hamiltonian targets, clear errors, atomic cache files.

The graph here is a small stand-in following the pair-list contract of ``model/keys.py`` (canonical unordered
pairs, onsite first), so these tests do not depend on the model's internals.
"""
from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import vesin

from ase_wannierml.slater_koster import moon_koshino_hopping
from ase_wannierml.training.assign import FrameError, onsite_symmetry_violation, shell_rotation
from ase_wannierml.training.dataset import BuildOptions, build_dataset, load_cache, load_or_build
from ase_wannierml.training.frames import load_frame_dir
from ase_wannierml.training.synthetic import synthetic_tb, write_synthetic_frames

SHELLS = {"C": ["pz"]}


def standin_graph(atoms, cutoff: float = 5.0) -> dict:
    """Canonical Hamiltonian pair list (i < j, or i == j with S lexicographically > 0; onsite pairs first)."""
    nl = vesin.NeighborList(cutoff=cutoff, full_list=False)
    i, j, S = nl.compute(atoms.positions, atoms.cell.array, [bool(p) for p in atoms.pbc], "ijS")
    i, j, S = i.astype(np.int64), j.astype(np.int64), S.astype(np.int64)
    first = np.array([next((x for x in s if x != 0), 0) for s in S])
    flip = (i > j) | ((i == j) & (first < 0))
    i, j = np.where(flip, j, i), np.where(flip, i, j)
    S = np.where(flip[:, None], -S, S)
    order = np.lexsort((S[:, 2], S[:, 1], S[:, 0], j, i))
    n = len(atoms)
    pi = np.concatenate([np.arange(n), i[order]])
    pj = np.concatenate([np.arange(n), j[order]])
    ps = np.concatenate([np.zeros((n, 3), np.int64), S[order]])
    return {"positions": torch.tensor(atoms.positions), "ham_pair_index": torch.tensor(np.stack([pi, pj])),
            "ham_pair_shift": torch.tensor(ps)}


def standin_pairs(graph: dict):
    return graph["ham_pair_index"][0].numpy(), graph["ham_pair_index"][1].numpy(), graph["ham_pair_shift"].numpy()


def build(paths, cutoff: float = 5.0, **kw):
    return build_dataset(paths, lambda a: standin_graph(a, cutoff), standin_pairs, BuildOptions(SHELLS, **kw))


@pytest.fixture(scope="module")
def frames(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("frames")
    write_synthetic_frames(folder, 3, seed=1)
    return folder


def test_targets_are_moon_koshino_hoppings_relative_to_fermi_level(frames):
    ds = build([frames], cutoff=7.0)
    assert len(ds) == 3 and ds.rejected == {}
    for fid, ex in zip(ds.frame_ids, ds.examples):
        frame = load_frame_dir(frames / fid)
        atoms = frame.atoms
        pi, pj, ps = standin_pairs(ex)
        d = atoms.positions[pj] - atoms.positions[pi] + ps @ atoms.cell.array
        dist = np.linalg.norm(d, axis=1)
        onsite = dist < 1e-9
        ham, mask = ex["target_ham"][:, 0, 0].numpy(), ex["target_ham_mask"][:, 0, 0].numpy()
        # onsite: absolute onsite = U + δ_i (U: the frame's random energy zero); the target is U + δ_i − E_F
        tb0 = synthetic_tb(atoms, 0.0)
        on = (tb0.rows == tb0.cols) & np.all(tb0.R == 0, axis=1)
        delta = np.zeros(len(atoms))
        delta[tb0.rows[on]] = tb0.values[on]
        assert np.all(mask[onsite]) and np.ptp(delta) > 1e-3
        shift = frame.meta["energy_zero_eV"] - frame.fermi_level
        np.testing.assert_allclose(ham[onsite], delta[pi[onsite]] + shift, atol=2e-6)
        near = ~onsite & (dist < 6.0)       # Moon–Koshino cut-off 6 Å: listed in the _hr.dat
        t = moon_koshino_hopping(d[near])
        assert np.all(mask[near])
        np.testing.assert_allclose(ham[near], t, atol=2e-6)   # _hr.dat keeps 6 decimals
        assert not mask[dist > 6.0].any() and np.all(ham[dist > 6.0] == 0)


def test_reference_bands_match_the_unshifted_hamiltonian(frames):
    ds = build([frames])
    ex = ds.examples[0]
    frame = load_frame_dir(frames / ds.frame_ids[0])
    tb = synthetic_tb(frame.atoms, frame.meta["energy_zero_eV"] - frame.fermi_level)   # H relative to E_F
    ref = tb.eigenvalues(ex["band_kpts"].numpy())
    assert np.all((ref < 0).sum(axis=1) == 2)               # half filling: E_F between bands 2 and 3
    np.testing.assert_allclose(ex["target_bands"].numpy(), ref, atol=1e-5)
    # the 6x6 grid contains K = (1/3, 1/3, 0)
    assert np.any(np.all(np.isclose(ex["band_kpts"].numpy(), [1 / 3, 1 / 3, 0]), axis=1))


def test_force_only_and_hamiltonian_only_frames(tmp_path):
    write_synthetic_frames(tmp_path / "f", 1, seed=2, with_hamiltonian=False)
    write_synthetic_frames(tmp_path / "h", 1, seed=3, with_forces=False)
    (tmp_path / "h" / "frame_0000").rename(tmp_path / "h" / "frame_h")
    ds = build([tmp_path / "f", tmp_path / "h"])
    by_id = dict(zip(ds.frame_ids, ds.examples))
    f, h = by_id["frame_0000"], by_id["frame_h"]
    assert f["has_forces"] and f["has_energy"] and f["has_stress"] and not f["has_ham"]
    assert not f["target_ham_mask"].any()
    assert h["has_ham"] and not h["has_forces"] and not h["has_energy"]
    assert h["target_ham_mask"].any()


def test_forces_only_patterns_drop_energy_and_stress_of_matching_frames(frames):
    """``data.forces_only``: frames from other DFT settings add their forces (and H), never their energy offset."""
    plain = dict(zip(*(lambda d: (d.frame_ids, d.examples))(build([frames]))))
    ds = build([frames], forces_only=("frame_0001", "nomatch-*"))
    by_id = dict(zip(ds.frame_ids, ds.examples))
    dropped, kept = by_id["frame_0001"], by_id["frame_0000"]
    assert not dropped["has_energy"] and not dropped["has_stress"]
    assert dropped["has_forces"] and dropped["has_ham"]
    torch.testing.assert_close(dropped["target_forces"], plain["frame_0001"]["target_forces"])
    assert kept["has_energy"] and kept["has_stress"]
    from ase_wannierml.training.config import TrainConfig

    with pytest.raises(ValueError, match="forces_only must be a list"):     # a bare string would match per letter
        TrainConfig.from_dict({"data": {"frames": ["x"], "forces_only": "frame_*"}})


def _copy(frames: Path, tmp_path: Path, n: int = 2) -> Path:
    dst = tmp_path / "frames"
    for d in sorted(frames.iterdir())[:n]:
        shutil.copytree(d, dst / d.name)
    return dst


def test_malformed_hr_fails_with_frame_and_line_and_leaves_no_cache(frames, tmp_path):
    src = _copy(frames, tmp_path)
    bad = src / "frame_0001" / "wannier90_hr.dat.gz"
    lines = gzip.open(bad, "rt").read().splitlines()
    lines[10] = lines[10][:20] + " oops"
    with gzip.open(bad, "wt") as fh:
        fh.write("\n".join(lines) + "\n")
    cache = tmp_path / "cache" / "ds.pt"
    with pytest.raises(FrameError, match=r"frame frame_0001: .*wannier90_hr\.dat\.gz: line 11"):
        load_or_build([src], cache, standin_graph, standin_pairs, BuildOptions(SHELLS), {})
    assert not cache.exists()
    assert not cache.parent.exists() or list(cache.parent.iterdir()) == []


def test_atom_count_mismatch_fails_clearly(frames, tmp_path):
    src = _copy(frames, tmp_path, 1)
    centres = src / "frame_0000" / "wannier90_centres.xyz"
    lines = centres.read_text().splitlines()
    lines = [str(int(lines[0]) - 1)] + lines[1:-1]          # drop the last atom
    centres.write_text("\n".join(lines) + "\n")
    with pytest.raises(FrameError, match="frame frame_0000: wannier90_centres.xyz lists 3 atoms but the structure"):
        build([src])


def test_centres_file_atoms_may_be_listed_in_another_order(frames, tmp_path):
    """Wannier90 lists the atoms of _centres.xyz grouped by species, not in the structure's order: they are
    matched by position; an atom that matches no structure atom names itself."""
    src = _copy(frames, tmp_path, 1)
    centres = src / "frame_0000" / "wannier90_centres.xyz"
    lines = centres.read_text().splitlines()
    n_atoms = 4
    head, atom_lines = lines[:-n_atoms], lines[-n_atoms:]
    centres.write_text("\n".join(head + atom_lines[::-1]) + "\n")
    assert len(build([src])) == 1
    tok = atom_lines[0].split()
    moved = f"{tok[0]} {float(tok[1]) + 0.3:.8f} {tok[2]} {tok[3]}"
    centres.write_text("\n".join(head + [moved] + atom_lines[1:]) + "\n")
    with pytest.raises(FrameError, match=r"frame frame_0000: atom 1 \(C\) of wannier90_centres.xyz matches no atom"):
        build([src])


def test_far_centre_rejects_frame_naming_the_function(frames, tmp_path):
    src = _copy(frames, tmp_path, 1)
    centres = src / "frame_0000" / "wannier90_centres.xyz"
    lines = centres.read_text().splitlines()
    tok = lines[4].split()                                   # third Wannier function
    lines[4] = f"X {float(tok[1]) + 1.2:.8f} {tok[2]} {tok[3]}"
    centres.write_text("\n".join(lines) + "\n")
    with pytest.raises(FrameError, match=r"frame frame_0000: Wannier function 3 .* from the nearest atom"):
        build([src])
    ds = build([src], on_error="skip")
    assert len(ds) == 0 and "Wannier function 3" in ds.rejected["frame_0000"]


def test_cache_is_reused_and_rebuilt_when_a_source_changes(frames, tmp_path, monkeypatch):
    src = _copy(frames, tmp_path)
    cache = tmp_path / "ds.pt"
    args = ([src], cache, standin_graph, standin_pairs, BuildOptions(SHELLS), {"cutoff": 5.0})
    first = load_or_build(*args)
    loaded, _ = load_cache(cache)              # weights_only load
    assert loaded.frame_ids == first.frame_ids
    assert torch.equal(loaded.examples[1]["target_ham"], first.examples[1]["target_ham"])
    import ase_wannierml.training.dataset as dsmod

    def boom(*a, **k):
        raise AssertionError("rebuilt although nothing changed")

    monkeypatch.setattr(dsmod, "build_dataset", boom)
    load_or_build(*args)
    (src / "frame_0000" / "structure.extxyz").touch()
    monkeypatch.undo()
    import os
    st = (src / "frame_0000" / "structure.extxyz").stat()
    os.utime(src / "frame_0000" / "structure.extxyz", ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    calls = []
    monkeypatch.setattr(dsmod, "build_dataset", lambda *a, **k: calls.append(1) or first)
    load_or_build(*args)
    assert calls == [1]


def test_rejected_status_frames_are_left_out(frames, tmp_path):
    src = _copy(frames, tmp_path)
    meta = src / "frame_0001" / "meta.json"
    meta.write_text('{"status": "rejected", "reason": "band error 300 meV"}')
    ds = build([src])
    assert ds.frame_ids == ["frame_0000"] and "band error" in ds.rejected["frame_0001"]


def test_scf_of_rejected_keeps_the_scf_labels_of_wannier_rejected_frames(frames, tmp_path):
    """``data.scf_of_rejected``: a frame the Wannier gate rejected still gives E/F/σ (never its H); a frame rejected
    because a code failed stays out, as does a rejected frame without SCF labels."""
    src = _copy(frames, tmp_path, n=3)
    (src / "frame_0001" / "meta.json").write_text('{"status": "rejected", "reason": "Wannier centre 1.38 Å from atom"}')
    (src / "frame_0002" / "meta.json").write_text('{"status": "rejected", "reason": "error: CalledProcessError pw.x"}')
    plain = build([frames])
    ref = dict(zip(plain.frame_ids, plain.examples))["frame_0001"]
    assert build([src]).frame_ids == ["frame_0000"]                       # default: both left out
    ds = build([src], scf_of_rejected=True)
    assert ds.frame_ids == ["frame_0000", "frame_0001"] and list(ds.rejected) == ["frame_0002"]
    kept = ds.examples[1]
    assert kept["has_energy"] and kept["has_forces"] and kept["has_stress"]
    assert not kept["has_ham"] and not kept["target_ham_mask"].any()
    torch.testing.assert_close(kept["target_forces"], ref["target_forces"])
    torch.testing.assert_close(kept["target_energy"], ref["target_energy"])
    assert "centre" in ds.reports[1]["hamiltonian_rejected"]
    write_synthetic_frames(tmp_path / "h", 1, seed=3, with_forces=False)    # H only: nothing left to keep
    (tmp_path / "h" / "frame_0000" / "meta.json").write_text('{"status": "rejected", "reason": "band error"}')
    only_h = build([tmp_path / "h"], scf_of_rejected=True)
    assert len(only_h) == 0 and "no SCF labels" in only_h.rejected["frame_0000"]


def test_shell_rotation_is_the_real_harmonic_representation():
    rng = np.random.default_rng(0)
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))            # random orthogonal, possibly improper
    orbitals = [(0, "s"), (1, "pz"), (1, "px"), (1, "py"), (2, "dz2"), (2, "dxz"), (2, "dyz"),
                (2, "dx2-y2"), (2, "dxy")]
    m = shell_rotation(orbitals, q)
    from ase_wannierml.orbitals import real_harmonics

    x = rng.normal(size=(10, 3))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    for l, sl in ((0, slice(0, 1)), (1, slice(1, 4)), (2, slice(4, 9))):
        np.testing.assert_allclose(real_harmonics(l, x @ q), real_harmonics(l, x) @ m[sl, sl], atol=1e-10)
    np.testing.assert_allclose(m[1:4, 1:4], q[[2, 0, 1]][:, [2, 0, 1]], atol=1e-10)   # p: (z, x, y) order
    assert shell_rotation([(1, "pz")], q) is None                                    # pz alone is not closed


def test_onsite_symmetry_check_catches_a_local_frame_gauge():
    from ase_wannierml.structures import bilayer

    atoms = bilayer("mos2")                                  # 2H: Mo atoms are symmetry-equivalent
    mo = [i for i, s in enumerate(atoms.get_chemical_symbols()) if s == "Mo"]
    orbitals = [[(2, lab) for lab in ("dz2", "dxz", "dyz", "dx2-y2", "dxy")] if s == "Mo" else [(0, "s")]
                for s in atoms.get_chemical_symbols()]
    # a global-frame d block with trigonal symmetry: E(dz2), E(dxz, dyz), E(dx2-y2, dxy)
    h_mo = np.diag([0.1, 1.0, 1.0, -0.5, -0.5])
    onsite = [h_mo.copy() if i in mo else np.zeros((1, 1)) for i in range(len(atoms))]
    ok, _ = onsite_symmetry_violation(atoms, onsite, orbitals)
    assert ok < 1e-9
    # a local-frame gauge: second Mo's dxz/dyz rotated 30° within their plane and split -> inconsistent
    onsite[mo[1]] = np.diag([0.1, 1.2, 0.8, -0.5, -0.5])
    bad, where = onsite_symmetry_violation(atoms, onsite, orbitals)
    assert bad > 0.1 and "atoms" in where


def test_a_failure_while_writing_leaves_no_cache(frames, tmp_path, monkeypatch):
    from ase_wannierml.training import dataset as dsmod

    def half_write(obj, path):
        open(path, "wb").write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(dsmod.torch, "save", half_write)
    cache = tmp_path / "c" / "ds.pt"
    with pytest.raises(OSError, match="disk full"):
        load_or_build([frames], cache, standin_graph, standin_pairs, BuildOptions(SHELLS), {})
    assert list(cache.parent.iterdir()) == []


def test_two_functions_on_one_atom_reject_the_frame(frames, tmp_path):
    src = _copy(frames, tmp_path, 1)
    centres = src / "frame_0000" / "wannier90_centres.xyz"
    lines = centres.read_text().splitlines()
    lines[3] = "X " + " ".join(lines[2].split()[1:])            # WF 2 placed on WF 1's atom
    centres.write_text("\n".join(lines) + "\n")
    with pytest.raises(FrameError, match=r"frame frame_0000: atom \d \(C\) has 2 Wannier functions \[1, 2\]"):
        build([src])


def test_hash_split_is_stable_as_frames_are_added():
    """split='hash': a frame's role depends on its id only; listed ids are forced into their split."""
    from ase_wannierml.training.dataset import Dataset

    ids = [f"{i:04d}-1x1" for i in range(200)]
    small = Dataset(ids[:60], [{}] * 60, [], {})
    big = Dataset(ids, [{}] * 200, [], {})
    kw = dict(val_fraction=0.1, test_fraction=0.15, seed=0, mode="hash", test_frames=["0001-1x1"],
              train_frames=["0000-1x1"])
    roles_small = small.split(**kw)
    roles_big = big.split(**kw)
    for part_small, part_big in zip(roles_small, roles_big):
        assert [ids[i] for i in part_small] == [ids[i] for i in part_big if i < 60]
    train, val, test = roles_big
    assert 0 in train and 1 in test
    assert 0.08 < len(test) / 200 < 0.25 and sorted(train + val + test) == list(range(200))


def test_neutrality_level_is_the_dirac_point_of_a_half_filled_graphene_model():
    """Nearest-neighbour graphene (onsite ε, t = -2.7 eV) plus a second-neighbour t2: the T = 0 level with one
    electron per site lies at the Dirac point ε - 3 t2 (not at ε)."""
    from ase_wannierml.training.targets import neutrality_level

    eps, t, t2 = 0.4, -2.7, 0.25
    R, rows, cols, vals = [[0, 0, 0]], [0], [0], [eps]
    R.append([0, 0, 0]); rows.append(1); cols.append(1); vals.append(eps)
    for shift in ([0, 0, 0], [-1, 0, 0], [0, -1, 0]):           # A(0) - B(R) bonds: f(k) = 1 + e^-ik1 + e^-ik2
        for r, a, b in ((shift, 0, 1), ([-x for x in shift], 1, 0)):
            R.append(r); rows.append(a); cols.append(b); vals.append(t)
    for shift in ([1, 0, 0], [0, 1, 0], [1, -1, 0], [-1, 0, 0], [0, -1, 0], [-1, 1, 0]):   # 2nd neighbours
        for a in (0, 1):
            R.append(shift); rows.append(a); cols.append(a); vals.append(t2)
    level = neutrality_level(np.array(R), np.array(rows), np.array(cols), np.array(vals, dtype=float), 2,
                             np.array([True, True, False]), 2.0, n=48)
    assert level == pytest.approx(eps - 3 * t2, abs=1e-6)


def test_vacuum_energy_zero_uses_the_recorded_vacuum_level(tmp_path):
    """energy_zero = "vacuum": targets are H − vacuum_level (meta.json), i.e. the dft_fermi targets shifted by
    E_F − E_vac on the onsite diagonal only; a frame without the level is rejected naming the backfill command."""
    import json

    write_synthetic_frames(tmp_path / "f", 2, seed=5)
    dirs = sorted((tmp_path / "f").iterdir())
    meta_path = dirs[0] / "meta.json"
    meta = json.loads(meta_path.read_text())
    meta["vacuum_level_eV"] = load_frame_dir(dirs[0]).fermi_level + 4.25
    meta_path.write_text(json.dumps(meta))
    ref = build([dirs[0]], energy_zero="dft_fermi")
    vac = build([tmp_path / "f"], energy_zero="vacuum", on_error="skip")
    assert vac.frame_ids == [dirs[0].name] and "vacuum_level_eV" in vac.rejected[dirs[1].name]
    assert "ase_wannierml.dft.vacuum" in vac.rejected[dirs[1].name]
    a, b = ref.examples[0], vac.examples[0]
    n = len(a["positions"])                                # onsite pairs come first
    np.testing.assert_allclose((b["target_ham"] - a["target_ham"])[:n, 0, 0].numpy(), -4.25, atol=1e-9)
    assert torch.equal(b["target_ham"][n:], a["target_ham"][n:])
    np.testing.assert_allclose((b["target_bands"] - a["target_bands"]).numpy(), -4.25, atol=1e-9)
    assert float(a["band_centre"]) == 0.0 and float(b["band_centre"]) == pytest.approx(-4.25)  # windows stay at E_F


def test_neutrality_energy_zero_shifts_only_the_onsite_diagonal(frames):
    """energy_zero = "neutrality": targets are H − μ₀ (μ₀ the T = 0 neutrality level of the frame's Wannier bands,
    half filling for pz graphene): a constant onsite shift from the dft_fermi targets, windows at zero."""
    ref = build([frames], energy_zero="dft_fermi")
    neu = build([frames], energy_zero="neutrality", electrons={"C": 1.0})
    assert neu.rejected == {} and len(neu) == len(ref)
    for a, b in zip(ref.examples, neu.examples):
        n = len(a["positions"])
        d = (b["target_ham"] - a["target_ham"])[:n, 0, 0].numpy()
        assert np.ptp(d) < 1e-9 and abs(d[0]) < 0.5           # E_F and μ₀ nearly coincide in the synthetic frames
        assert torch.equal(b["target_ham"][n:], a["target_ham"][n:]) and float(b["band_centre"]) == 0.0
        below = (b["target_bands"] < 0).sum(dim=1)
        assert torch.all(below == 2)                           # μ₀ between bands 2 and 3 (4 orbitals)
