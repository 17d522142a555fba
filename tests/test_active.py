"""Active-learning loop on a tiny setup: cheap reference labels (EMT forces, Moon–Koshino H) stand in for DFT."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import yaml
from ase import Atoms
from ase.calculators.emt import EMT

from ase_wannierml.active import (ActiveConfig, ActiveLoop, candidate_cells, frame_errors, load_active_config,
                                  select_frames, write_frame)
from ase_wannierml.model import build_model, load_model
from ase_wannierml.model.committee import CommitteeModel, save_committee
from ase_wannierml.slater_koster import moon_koshino_tb
from ase_wannierml.training.frames import load_frame_dir

torch.set_num_threads(1)
MODEL = dict(cutoff=3.0, hidden_irreps="8x0e+4x1o", ham_cutoff_near=3.0, ham_cutoff_far=4.0, ham_cutoff_inter=4.0,
             ham_irreps="8x0e+4x1o+4x1e+4x2e", radial_hidden=8, ham_num_radial=6, wannier_electrons={"C": 1.0},
             fermi_level=0.0, min_distance=0.3)


def fake_dft(dataset):
    """Label function: EMT energy/forces/stress and the Moon–Koshino pz Hamiltonian (not DFT, but physical)."""
    calls = []

    def label(atoms: Atoms, frame_id: str, scf_only: bool):
        calls.append(frame_id)
        a = atoms.copy()
        a.calc = EMT()
        tb = None if scf_only else moon_koshino_tb(a)
        return write_frame(dataset / "frames" / frame_id, atoms, a.get_potential_energy(), a.get_forces(),
                           a.get_stress(), tb=tb, fermi_level=0.0, meta={"sampling": {"kind": "fake"}})
    label.calls = calls
    return label


def tiny_committee(path, k=2):
    members = [build_model({"C": ["pz"]}, seed=s, dtype=torch.float64, **MODEL) for s in range(k)]
    save_committee(CommitteeModel(members), path)


def config(tmp_path, **kw):
    dataset = tmp_path / "data"
    (dataset / "frames").mkdir(parents=True, exist_ok=True)
    train_cfg = {"data": {"frames": [str(dataset / "frames")], "val_fraction": 0.0, "energy_zero": "dft_fermi",
                          "band_kgrid": 2},
                 "model": {"orbitals": {"C": ["pz"]}, **MODEL},
                 "optim": {"batch_size": 2, "lr": 1e-3, "warmup_steps": 1},
                 "run": {"dtype": "float64", "progress": False}}
    (tmp_path / "train.yaml").write_text(yaml.safe_dump(train_cfg))
    tiny_committee(tmp_path / "committee.pt")
    raw = dict(material="graphene-bilayer", committee=str(tmp_path / "committee.pt"), workdir=str(tmp_path / "al"),
               dataset_dir=str(dataset), train_config=str(tmp_path / "train.yaml"), supercells=[2], strains=[0.0],
               shears=[0.0, 0.05], interlayer_shifts=[0.0], twists=[], temperatures=[300.0, 900.0], md_steps=4,
               sample_every=2, equilibrate=0, trajectories_per_round=2, frames_per_round=2, train_steps=2, seed=3)
    raw.update(kw)
    (tmp_path / "active.yaml").write_text(yaml.safe_dump(raw))
    return load_active_config(tmp_path / "active.yaml"), dataset


def test_candidate_cells_cover_strain_shear_compression_and_twists(tmp_path):
    cfg = ActiveConfig(material="graphene-bilayer", committee="x", workdir="w", dataset_dir="d", train_config="t",
                       supercells=[2, 3], strains=[0.0, 0.02], shears=[0.0, 0.04], interlayer_shifts=[0.0, -0.3],
                       twists=[[1, 1], [2, 1]], max_atoms=80)
    cells = dict(candidate_cells(cfg))
    assert len(cells) == 2 * 2 * 2 * 2 + 2
    ref, strained = cells["2x2-e+0.000-g+0.000-dz+0.00"], cells["2x2-e+0.020-g+0.000-dz+0.00"]
    assert len(ref) == 16 and len(cells["3x3-e+0.000-g+0.000-dz+0.00"]) == 36
    assert np.allclose(strained.cell.lengths()[:2], 1.02 * ref.cell.lengths()[:2])
    sheared = cells["2x2-e+0.000-g+0.040-dz+0.00"]
    assert abs(sheared.cell.angles()[2] - ref.cell.angles()[2]) > 1.0           # shear changes the in-plane angle
    z = lambda a: np.ptp([a.positions[a.arrays["layer"] == k, 2].mean() for k in (0, 1)])
    assert z(cells["2x2-e+0.000-g+0.000-dz-0.30"]) == pytest.approx(z(ref) - 0.3)
    twists = [k for k in cells if k.startswith("twist")]
    assert any("21.79deg" in k for k in twists) and any("13.17deg" in k for k in twists)
    with pytest.raises(ValueError, match="material"):
        ActiveConfig(material="silicon", committee="x", workdir="w", dataset_dir="d", train_config="t")


def test_select_frames_takes_largest_scores_with_a_cap_per_trajectory():
    snaps = []
    for t, scores in (("a", [0.9, 0.8, 0.1]), ("b", [0.5, 0.7]), ("c", [0.2])):
        for s in scores:
            x = Atoms("C")
            x.info.update(trajectory=t, score=s)
            snaps.append(x)
    assert select_frames(snaps, 3, per_trajectory=1) == [0, 4, 5]
    assert select_frames(snaps, 3, per_trajectory=2) == [0, 1, 4]


def test_active_round_with_fake_dft_resumes_after_a_kill(tmp_path):
    cfg, dataset = config(tmp_path)
    label = fake_dft(dataset)
    trained = []

    def killed(path, resume):
        raise KeyboardInterrupt("killed during training")

    def train(path, resume):
        from ase_wannierml.training.config import load_config
        from ase_wannierml.training.trainer import Trainer

        trained.append(path)
        Trainer(load_config(path), resume=resume).train()

    with pytest.raises(KeyboardInterrupt):
        ActiveLoop(cfg, label_fn=label, train_fn=killed, log=lambda s: None).run()
    log = json.loads((tmp_path / "al" / "active_log.json").read_text())
    assert log["rounds"][0]["phases_done"] == ["sampled", "selected", "labelled", "errors_before"]
    chosen = log["rounds"][0]["selected"]
    assert len(chosen) == 2 and len({c["trajectory"] for c in chosen}) == 2          # one per trajectory
    assert all(c["forces_std_max"] > 0 for c in chosen)
    candidates = log["rounds"][0]["candidates"]
    assert max(c["score"] for c in chosen) == pytest.approx(candidates["score_max"])
    assert len(label.calls) == 2

    state = ActiveLoop(cfg, label_fn=label, train_fn=train, log=lambda s: None).run()   # resume
    assert len(label.calls) == 2                     # frames were not recomputed
    rec = state["rounds"][0]
    assert rec["phases_done"] == ["sampled", "selected", "labelled", "errors_before", "trained", "errors_after"]
    assert len(trained) == 2                         # one warm start per member
    before, after = rec["errors_before"]["new_frames"], rec["errors_after"]["new_frames"]
    assert before["n_frames"] == after["n_frames"] == 2
    assert 0 <= before["within_1sigma"] <= before["within_2sigma"] <= 1
    # the members were warm-started from the round's input and trained on the new frames
    new = load_model(rec["committee_out"], committee=True)
    old = load_model(cfg.committee, committee=True)
    for j in range(2):
        meta = new.members[j].metadata["training"]
        assert set(meta["frame_ids"]["train"]) <= {c["frame_id"] for c in chosen}
        assert meta["frame_ids"]["train"]
        w_new = dict(new.members[j].named_parameters())["energy_head.mlp.layer1.weight"]
        w_old = dict(old.members[j].named_parameters())["energy_head.mlp.layer1.weight"]
        assert not torch.allclose(w_new, w_old)
        assert torch.allclose(w_new.double(), w_old.double(), atol=0.05)     # a few small steps from the old one
    # a second run does nothing new
    ActiveLoop(cfg, label_fn=label, train_fn=train, log=lambda s: None).run()
    assert len(trained) == 2 and len(label.calls) == 2


def test_write_frame_round_trip_and_frame_errors(tmp_path):
    from ase_wannierml.structures import bilayer

    atoms = bilayer("graphene").repeat((2, 2, 1))
    atoms.rattle(0.05, seed=0)
    a = atoms.copy()
    a.calc = EMT()
    f = a.get_forces()
    path = write_frame(tmp_path / "frames" / "x-000", atoms, a.get_potential_energy(), f, a.get_stress(),
                       tb=moon_koshino_tb(atoms), fermi_level=0.1)
    frame = load_frame_dir(path)
    assert np.allclose(frame.forces, f) and frame.fermi_level == pytest.approx(0.1)
    assert frame.tb.norb == len(atoms) and np.array_equal(frame.atoms.arrays["layer"], atoms.arrays["layer"])
    tiny_committee(tmp_path / "c.pt")
    committee = load_model(tmp_path / "c.pt", committee=True)
    err = frame_errors(committee, [tmp_path / "frames"])
    pred = atoms.copy()
    from ase_wannierml.calculator import WannierMLCalculator

    pred.calc = WannierMLCalculator(committee)
    d = pred.get_forces() - f
    assert err["force_rmse"] == pytest.approx(np.sqrt(np.mean(d ** 2)), rel=1e-6)
    s = np.repeat(pred.calc.results["forces_std"], 3)
    assert err["within_1sigma"] == pytest.approx(np.mean(np.abs(d.ravel()) <= s))
    with pytest.raises(ValueError, match="forces have shape"):
        write_frame(tmp_path / "frames" / "bad", atoms, 0.0, f[:3])


def test_only_held_out_frames_are_reported_as_held_out(tmp_path):
    from ase_wannierml.structures import bilayer

    atoms = bilayer("graphene")
    f = np.zeros((len(atoms), 3))
    write_frame(tmp_path / "frames" / "md2x2-T300-test-s7-001", atoms, 0.0, f)
    write_frame(tmp_path / "frames" / "md2x2-T300-train-s7-000", atoms, 0.0, f)
    write_frame(tmp_path / "frames" / "user-abc", atoms, 0.0, f, meta={"sampling": {"notes": {"split": "test"}}})
    write_frame(tmp_path / "frames" / "user-def", atoms, 0.0, f, meta={"sampling": {"notes": {"split": "train"}}})
    cfg = ActiveConfig(material="graphene-bilayer", committee="x", workdir=str(tmp_path / "w"),
                       dataset_dir=str(tmp_path), train_config="t", heldout=[str(tmp_path / "frames")])
    names = sorted(p.name for p in ActiveLoop(cfg, label_fn=lambda *a: None, log=lambda s: None).heldout_paths())
    assert names == ["md2x2-T300-test-s7-001", "user-abc"]


def test_record_round_logs_an_external_round_and_status_shows_it(tmp_path, capsys):
    from ase_wannierml.active import record_round
    from ase_wannierml.active.loop import main as active_main
    from ase_wannierml.calculator import WannierMLCalculator
    from ase_wannierml.structures import bilayer

    frames = tmp_path / "frames"
    for k, name in enumerate(["md2x2-T300-train-s7-000", "md2x2-T600-train-s7-001", "md2x2-T300-test-s7-002"]):
        atoms = bilayer("graphene").repeat((2, 2, 1))
        atoms.rattle(0.05, seed=k)
        a = atoms.copy()
        a.calc = EMT()
        write_frame(frames / name, atoms, a.get_potential_energy(), a.get_forces(),
                    meta={"sampling": {"notes": {"md_temperature_K": 300.0 + 300 * (k % 2)}}})
    tiny_committee(tmp_path / "c.pt")
    committee = load_model(tmp_path / "c.pt", committee=True)
    single = committee.members[1]
    raw = dict(material="graphene-bilayer", committee=str(tmp_path / "c.pt"), workdir=str(tmp_path / "al"),
               dataset_dir=str(tmp_path), train_config="t.yaml", heldout=[str(frames)])
    (tmp_path / "active.yaml").write_text(yaml.safe_dump(raw))
    cfg = load_active_config(tmp_path / "active.yaml")
    new = [frames / "md2x2-T300-train-s7-000", frames / "md2x2-T600-train-s7-001"]
    with pytest.raises(ValueError, match="held-out"):
        record_round(cfg, new + [frames / "md2x2-T300-test-s7-002"], committee, single, "m.pt", {}, "x")
    rec = record_round(cfg, new, committee, single, "m.pt", {"steps": 3}, "MD snapshots")
    log = json.loads((tmp_path / "al" / "active_log.json").read_text())
    assert log["rounds"][0] == json.loads(json.dumps(rec)) and rec["round"] == 0
    assert [s["frame_id"] for s in rec["selected"]] == [p.name for p in new]
    assert rec["selected"][1]["md_temperature_K"] == 600.0 and rec["selected"][0]["forces_std_max"] > 0
    assert rec["errors_before"]["heldout"]["n_frames"] == 1 and "within_1sigma" in rec["errors_before"]["heldout"]
    # the single model after: same numbers as its calculator, no spread
    held = load_frame_dir(frames / "md2x2-T300-test-s7-002")
    b = held.atoms.copy()
    b.calc = WannierMLCalculator(single)
    d = b.get_forces() - held.forces
    after = rec["errors_after"]["heldout"]
    assert after["force_rmse"] == pytest.approx(np.sqrt(np.mean(d ** 2)), rel=1e-6)
    assert after["force_rmse_z"] == pytest.approx(np.sqrt(np.mean(d[:, 2] ** 2)), rel=1e-6)
    assert "within_1sigma" not in after
    active_main(["status", str(tmp_path / "active.yaml")])
    out = capsys.readouterr().out
    assert "md2x2-T600-train-s7-001" in out and "held-out" in out and "m.pt" in out
    with pytest.raises(ValueError, match="no committee"):       # a next loop round needs a committee to start
        ActiveLoop(cfg, label_fn=lambda *a: None, log=lambda s: None).committee_path(1)
