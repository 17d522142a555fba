"""Committee uncertainty: means and spreads equal the members' own results, files round-trip, the calculator contract."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from ase_wannierml.calculator import WannierMLCalculator
from ase_wannierml.model import WannierMLModel, build_model, load_model
from ase_wannierml.model.committee import CommitteeModel, forces_std_per_atom, load_committee, save_committee
from ase_wannierml.structures import bilayer

torch.set_num_threads(1)
SMALL = dict(hidden_irreps="8x0e+4x1o", ham_cutoff_near=3.0, ham_cutoff_far=4.0, ham_cutoff_inter=4.0,
             ham_irreps="8x0e+4x1o+4x1e+4x2e", radial_hidden=8, ham_num_radial=6, dtype=torch.float64,
             wannier_electrons={"C": 1.0}, fermi_level=0.0)


def tiny(seed: int) -> WannierMLModel:
    return build_model({"C": ["pz"]}, cutoff=3.0, seed=seed, **SMALL).eval()


def cell():
    atoms = bilayer("graphene").repeat((2, 2, 1))
    atoms.rattle(0.05, seed=3)
    return atoms


def single_results(model, atoms):
    a = atoms.copy()
    a.calc = WannierMLCalculator(model)
    return a.get_potential_energy(), a.get_forces(), a.get_stress(), a.calc.get_hamiltonian()


def test_committee_means_and_spreads_equal_the_members():
    members = [tiny(s) for s in (0, 1, 2)]
    atoms = cell()
    atoms.calc = WannierMLCalculator(CommitteeModel(members))
    e, f, s = atoms.get_potential_energy(), atoms.get_forces(), atoms.get_stress()
    r = atoms.calc.results
    ref = [single_results(m, atoms) for m in members]
    es, fs, ss = np.array([x[0] for x in ref]), np.array([x[1] for x in ref]), np.array([x[2] for x in ref])
    assert e == pytest.approx(es.mean(), abs=1e-9)
    assert np.allclose(f, fs.mean(0), atol=1e-10)
    assert np.allclose(s, ss.mean(0), atol=1e-12)
    assert r["energy_std"] == pytest.approx(es.std(ddof=1), rel=1e-8)
    assert r["forces_std"].shape == (len(atoms),)
    expect = np.sqrt((fs.std(0, ddof=1) ** 2).mean(axis=1))
    assert np.allclose(r["forces_std"], expect, atol=1e-12)
    assert np.allclose(forces_std_per_atom(fs), expect)
    assert r["energy_std"] > 1e-4 and r["forces_std"].min() > 1e-4      # different seeds really differ
    # mean H = mean of the members' H(R) elements, same sparsity
    tb = atoms.calc.get_hamiltonian()
    k = np.array([[0.1, 0.2, 0.0], [1 / 3, 1 / 3, 0.0]])
    hk = np.mean([x[3].hamiltonian(k) for x in ref], axis=0)
    assert np.allclose(tb.hamiltonian(k), hk, atol=1e-12)


def test_identical_members_have_zero_spread_and_single_model_results():
    m = tiny(4)
    atoms = cell()
    e1, f1, _, tb1 = single_results(m, atoms)
    atoms.calc = WannierMLCalculator(CommitteeModel([m, tiny(4), tiny(4)]))
    assert atoms.get_potential_energy() == pytest.approx(e1, abs=1e-9)
    assert np.allclose(atoms.get_forces(), f1, atol=1e-10)
    assert atoms.calc.results["energy_std"] < 1e-9
    assert atoms.calc.results["forces_std"].max() < 1e-9
    bs, spread = atoms.calc.get_band_structure(npoints=12, uncertainty=True)
    assert spread.shape == bs.energies.shape
    assert np.abs(spread).max() < 1e-9
    assert np.allclose(bs.energies, tb1.band_structure(path=bs.path).energies, atol=1e-9)


def test_band_spread_is_the_member_band_std():
    members = [tiny(s) for s in (5, 6)]
    atoms = cell()
    atoms.calc = WannierMLCalculator(CommitteeModel(members))
    bs, spread = atoms.calc.get_band_structure(npoints=10, uncertainty=True)
    e = np.stack([np.sort(single_results(m, atoms)[3].band_structure(path=bs.path).energies, axis=-1)
                  for m in members])
    assert np.allclose(spread, e.std(0, ddof=1), atol=1e-10)
    assert spread.max() > 1e-4


def test_shared_backbone_stages_are_detected_and_do_not_change_results():
    base = tiny(7)
    members = []
    for s in range(3):
        m = tiny(7)
        g = torch.Generator().manual_seed(s)
        with torch.no_grad():                     # perturb only the last interaction and the heads
            for name, p in m.named_parameters():
                if name.startswith(("backbone.layers.1", "energy_head", "hamiltonian")):
                    p.mul_(1 + 0.1 * torch.randn(p.shape, generator=g, dtype=p.dtype))
        members.append(m)
    committee = CommitteeModel(members).eval()
    assert committee.shared_depth() == 3          # radial basis, embedding, first interaction
    assert CommitteeModel([base, tiny(8)]).shared_depth() <= 1
    atoms = cell()
    atoms.calc = WannierMLCalculator(committee)
    f = atoms.get_forces()
    ref = np.mean([single_results(m, atoms)[1] for m in members], axis=0)
    assert np.allclose(f, ref, atol=1e-10)


def test_committee_file_round_trip_stores_only_differences(tmp_path):
    base = tiny(9)
    base_file = tmp_path / "base.pt"
    base.save(base_file)
    members = [load_model(base_file) for _ in range(2)]
    with torch.no_grad():
        members[1].energy_head.mlp.layer1.weight.mul_(1.5)
    committee = CommitteeModel(members, metadata={"note": "test"})
    path = tmp_path / "c.pt"
    save_committee(committee, path, base=str(base_file))
    raw = torch.load(path, weights_only=True)
    assert raw["members"][0]["state_dict"] == {}
    assert list(raw["members"][1]["state_dict"]) == ["energy_head.mlp.layer1.weight"]
    loaded = load_committee(path)
    assert loaded.metadata["note"] == "test"
    atoms = cell()
    a, b = atoms.copy(), atoms.copy()
    a.calc, b.calc = WannierMLCalculator(committee), WannierMLCalculator(loaded)
    assert a.get_potential_energy() == pytest.approx(b.get_potential_energy(), abs=1e-4)   # float32 file
    assert np.allclose(a.calc.results["forces_std"], b.calc.results["forces_std"], atol=1e-4)
    # a different base file is refused by name
    other = tiny(10)
    other.save(base_file)
    with pytest.raises(ValueError, match="different"):
        load_committee(path)
    with pytest.raises(ValueError, match="not an ase_wannierml committee"):
        load_committee(tmp_path / "base.pt")


def test_members_with_other_graph_settings_are_refused():
    other = build_model({"C": ["pz"]}, cutoff=3.5, seed=0, **SMALL)
    with pytest.raises(ValueError, match="cutoff"):
        CommitteeModel([tiny(0), other])
    with pytest.raises(ValueError, match="at least 2"):
        CommitteeModel([tiny(0)])


def test_single_model_calculator_has_no_member_hamiltonians():
    atoms = cell()
    atoms.calc = WannierMLCalculator(tiny(0))
    with pytest.raises(ValueError, match="committee"):
        atoms.calc.get_member_hamiltonians()


@pytest.mark.parametrize("name", ["graphene-bilayer", "mos2-bilayer"])
def test_shipped_committees_load_and_spread(name):
    committee = load_model(name, committee=True)
    assert isinstance(committee, CommitteeModel) and committee.size >= 4
    single = load_model(name)
    assert isinstance(single, WannierMLModel)                    # unchanged without committee=True
    atoms = bilayer("graphene" if name.startswith("graphene") else "mos2").repeat((2, 2, 1))
    atoms.rattle(0.03, seed=1)
    atoms.calc = WannierMLCalculator(committee)
    f = atoms.get_forces()
    r = atoms.calc.results
    assert r["forces_std"].shape == (len(atoms),) and np.all(r["forces_std"] > 0)
    assert r["energy_std"] > 0
    # the committee mean stays close to the shipped model it was fine-tuned from (eV/Å)
    a = atoms.copy()
    a.calc = WannierMLCalculator(single)
    assert np.sqrt(np.mean((f - a.get_forces()) ** 2)) < 0.2


def test_force_calibration_scale_puts_68_percent_within_one_sigma(tmp_path):
    from ase.calculators.emt import EMT

    from ase_wannierml.active import write_frame
    from ase_wannierml.model.committee import calibrate_forces, force_errors_and_spreads

    for k in range(3):
        atoms = cell()
        atoms.rattle(0.05, seed=10 + k)
        a = atoms.copy()
        a.calc = EMT()
        write_frame(tmp_path / "frames" / f"f{k}", atoms, a.get_potential_energy(), a.get_forces())
    committee = CommitteeModel([tiny(s) for s in (0, 1, 2)])
    info = calibrate_forces(committee, [tmp_path / "frames"])
    assert info["fit_components"] == 3 * 16 * 3 and info["forces_std_scale"] > 0
    err, raw, _ = force_errors_and_spreads(committee, [tmp_path / "frames"])
    frac = np.mean(err <= info["forces_std_scale"] * raw)
    assert 0.66 <= frac <= 0.70
    atoms = cell()
    atoms.calc = WannierMLCalculator(committee)
    atoms.get_forces()
    r = atoms.calc.results
    assert np.allclose(r["forces_std"], info["forces_std_scale"] * r["forces_std_raw"])


def test_training_helpers_for_members_and_held_out_sets(tmp_path):
    from types import SimpleNamespace

    from ase.calculators.emt import EMT

    from ase_wannierml.active import write_frame
    from ase_wannierml.training.trainer import (bootstrap_indices, freeze_parameters, heldout_frame_ids,
                                                perturb_weights)

    ids = [f"f{i}" for i in range(20)]
    idx = list(range(0, 20, 2))
    boot = bootstrap_indices(idx, ids, ["f0", "f2"], seed=1)
    assert len(boot) == len(idx) and set(boot) <= set(idx) and {0, 2} <= set(boot)
    assert len(set(boot)) < len(idx)                                    # drawn with replacement
    assert boot == bootstrap_indices(idx, ids, ["f0", "f2"], seed=1) != bootstrap_indices(idx, ids, [], seed=2)

    atoms = cell()
    a = atoms.copy()
    a.calc = EMT()
    for name, meta in (("md2x2-T300-test-s7-006", None), ("md2x2-T300-train-s7-000", None),
                       ("user-1", {"sampling": {"notes": {"split": "test"}}}), ("user-2", None)):
        write_frame(tmp_path / name, atoms, a.get_potential_energy(), a.get_forces(), meta=meta)
    names = ["md2x2-T300-test-s7-006", "md2x2-T300-train-s7-000", "user-1", "user-2"]
    cfg = SimpleNamespace(test_patterns=["*-test-*"], frames=[str(tmp_path)])
    assert heldout_frame_ids(cfg, names) == {"md2x2-T300-test-s7-006", "user-1"}

    m = tiny(0)
    before = {n: p.detach().clone() for n, p in m.named_parameters()}
    perturb_weights(m, 0.05, seed=0, frozen=["hamiltonian"])
    freeze_parameters(m, ["hamiltonian.near"])
    for n, p in m.named_parameters():
        assert torch.equal(p, before[n]) == n.startswith("hamiltonian")
        assert p.requires_grad == (not n.startswith("hamiltonian.near"))
    with pytest.raises(ValueError, match="no parameter"):
        freeze_parameters(m, ["nonexistent"])


def test_power_law_calibration_of_forces_std():
    """σ = s·σ_ref·(σ_raw/σ_ref)^b: b = 1 is the plain scale; the fitted exponent recovers errors that grow as
    σ_raw² (a committee of fine-tuned copies underestimates large errors more than small ones)."""
    from ase_wannierml.model.committee import CALIBRATION_REFERENCE, calibrated_forces_std, fit_power

    raw = np.array([0.002, 0.01, 0.05])
    assert np.allclose(calibrated_forces_std(raw, {"forces_std_scale": 2.0}), 2 * raw)
    assert np.allclose(calibrated_forces_std(raw, None), raw)
    cal = {"forces_std_scale": 3.0, "forces_std_power": 2.0}
    assert np.allclose(calibrated_forces_std(raw, cal), 3.0 * CALIBRATION_REFERENCE * (raw / CALIBRATION_REFERENCE) ** 2)
    rng = np.random.default_rng(0)
    sig_atom = np.exp(rng.uniform(np.log(0.003), np.log(0.1), size=400))
    err = np.abs(rng.normal(size=(400, 3))) * (sig_atom[:, None] / 0.01) ** 2 * 0.02
    b = fit_power(err.ravel(), np.repeat(sig_atom, 3))
    assert abs(b - 2.0) < 0.15
    assert fit_power(np.ones(6), np.full(6, 0.01)) == 1.0          # no spread of σ: no exponent to fit


def test_calibrate_forces_with_fitted_power(tmp_path):
    from ase.calculators.emt import EMT

    from ase_wannierml.active import write_frame
    from ase_wannierml.model.committee import calibrate_forces, calibrated_forces_std, force_errors_and_spreads

    for k in range(3):
        atoms = cell()
        atoms.rattle(0.02 + 0.04 * k, seed=20 + k)
        a = atoms.copy()
        a.calc = EMT()
        write_frame(tmp_path / "frames" / f"f{k}", atoms, a.get_potential_energy(), a.get_forces())
    committee = CommitteeModel([tiny(s) for s in (0, 1, 2)])
    info = calibrate_forces(committee, [tmp_path / "frames"], power=None)
    assert 0.5 <= info["forces_std_power"] <= 3.0
    err, raw, _ = force_errors_and_spreads(committee, [tmp_path / "frames"])
    frac = np.mean(err <= calibrated_forces_std(raw, info))
    assert 0.66 <= frac <= 0.70                                   # 68 % within 1σ on the fit frames
    atoms = cell()
    atoms.calc = WannierMLCalculator(committee)
    atoms.get_forces()
    r = atoms.calc.results
    assert np.allclose(r["forces_std"], calibrated_forces_std(r["forces_std_raw"], info))


def test_bootstrap_never_drops_a_frame_it_must_keep():
    """Session 18 bug: making room for the kept frames that were not drawn cut the tail of the draw, which could hold
    the only draw of another kept frame (a committee member then lost the reference frames and stopped with a
    data.repeat error). Over many seeds and keep lists: every kept frame is in, the count is unchanged, and only
    training frames are drawn."""
    from ase_wannierml.training.trainer import bootstrap_indices

    ids = [f"f{i}" for i in range(60)]
    idx = list(range(0, 60, 2))
    for seed in range(200):
        keep = [ids[i] for i in idx[: 2 + seed % 12]]
        boot = bootstrap_indices(idx, ids, keep, seed=seed)
        assert len(boot) == len(idx) and set(boot) <= set(idx)
        assert {ids.index(k) for k in keep} <= set(boot), (seed, keep)
    # every training frame kept: the resample is the split itself
    assert bootstrap_indices(idx, ids, [ids[i] for i in idx], seed=3) == idx
