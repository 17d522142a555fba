"""The analytic dispersion term (``ase_wannierml.dispersion``): agreement with Quantum ESPRESSO's own DFT-D3, force
and stress consistency, and its use in the calculator and in the training targets."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from ase.units import Ry

pytest.importorskip("torch_dftd", reason="pip install torch-dftd (a core dependency)")

from ase_wannierml import build_model  # noqa: E402
from ase_wannierml.calculator import WannierMLCalculator  # noqa: E402
from ase_wannierml.dft.binding import reference_structure  # noqa: E402
from ase_wannierml.dft.materials import get_material  # noqa: E402
from ase_wannierml.dispersion import Dispersion, DispersionSpec  # noqa: E402
from ase_wannierml.model.config import ModelConfig  # noqa: E402


def test_d3bj_matches_quantum_espresso():
    """QE 6.7 (vdw_corr = 'dft-d3', dftd3_version = 4, three-body on) printed 'DFT-D3 Dispersion = -0.03460684 Ry'
    for the rigid AB bilayer at 3.35 Å in the 28 Å cell of dft.binding, and -0.02641718 Ry at 11.35 Å."""
    d = Dispersion({"method": "d3", "damping": "bj", "cutoff": 50.0, "cn_cutoff": 21.0, "abc": True})
    material = get_material("graphene-bilayer")
    for gap, qe in ((3.35, -0.03460684), (11.35, -0.02641718)):
        e = d.compute(reference_structure(material, gap, 8.0))["energy"] / Ry
        assert e == pytest.approx(qe, abs=1e-6)          # without the three-body term: 6.5e-4 Ry off


@pytest.mark.parametrize("spec", [{"method": "d2", "cutoff": 12.0}, {"method": "d3", "damping": "bj",
                                                                     "cutoff": 12.0}])
def test_forces_and_stress_are_derivatives_of_the_energy(spec):
    atoms = reference_structure(get_material("mos2-bilayer"), 3.0, 0.0)
    atoms.rattle(0.05, seed=3)
    d = Dispersion(spec)
    res = d.compute(atoms)
    h = 1e-4
    for a, c in ((0, 2), (3, 0), (5, 1)):
        plus, minus = atoms.copy(), atoms.copy()
        plus.positions[a, c] += h
        minus.positions[a, c] -= h
        fd = -(d.compute(plus)["energy"] - d.compute(minus)["energy"]) / (2 * h)
        assert res["forces"][a, c] == pytest.approx(fd, abs=1e-6)
    assert np.abs(res["forces"].sum(axis=0)).max() < 1e-9
    for v, (i, j) in ((0, (0, 0)), (5, (0, 1))):                 # ASE stress = (1/V) dE/dε
        eps = np.zeros((3, 3))
        eps[i, j] = eps[j, i] = h if i != j else h
        energies = []
        for sign in (1, -1):
            strained = atoms.copy()
            strained.set_cell(atoms.cell.array @ (np.eye(3) + sign * eps), scale_atoms=True)
            energies.append(d.compute(strained)["energy"])
        fd = (energies[0] - energies[1]) / (2 * h) / atoms.get_volume() / (2 if i != j else 1)
        assert res["stress"][v] == pytest.approx(fd, abs=1e-8)


def test_spec_validation_and_config_roundtrip():
    with pytest.raises(ValueError, match="method"):
        DispersionSpec.from_dict({"method": "d4"})
    with pytest.raises(ValueError, match="unknown dispersion settings"):
        DispersionSpec.from_dict({"method": "d2", "s6": 0.75})
    cfg = ModelConfig(species=("C",), orbitals={"C": ["pz"]}, dispersion={"method": "d2"})
    again = ModelConfig.from_dict(cfg.to_dict())
    assert again.dispersion == cfg.dispersion == DispersionSpec.from_dict({"method": "d2"}).to_dict()
    assert cfg.dispersion["damping"] == "zero"            # D2 has its own damping only


def test_calculator_adds_the_dispersion_term():
    """Same weights with and without the term: energy, forces and stress differ by exactly the analytic term."""
    kw = dict(dtype=torch.float64, seed=0, cutoff=3.0, ham_cutoff_near=3.0, ham_cutoff_far=3.0, ham_cutoff_inter=3.0,
              hidden_irreps="4x0e+2x1o", num_radial=4, radial_hidden=8, ham_num_radial=4)
    plain = build_model({"C": ["pz"]}, **kw)
    with_d = build_model({"C": ["pz"]}, dispersion={"method": "d3", "damping": "bj", "cutoff": 12.0}, **kw)
    with_d.load_state_dict(plain.state_dict())
    atoms = reference_structure(get_material("graphene-bilayer"), 3.4, 0.0)
    atoms.rattle(0.03, seed=1)
    a1, a2 = atoms.copy(), atoms.copy()
    a1.calc, a2.calc = WannierMLCalculator(plain), WannierMLCalculator(with_d)
    disp = Dispersion(with_d.config.dispersion).compute(atoms)
    assert a2.get_potential_energy() - a1.get_potential_energy() == pytest.approx(disp["energy"], abs=1e-10)
    np.testing.assert_allclose(a2.get_forces() - a1.get_forces(), disp["forces"], atol=1e-10)
    np.testing.assert_allclose(a2.get_stress() - a1.get_stress(), disp["stress"], atol=1e-12)
    assert disp["energy"] < 0
    assert a1.calc.dispersion is None and a2.calc.dispersion.spec.method == "d3"


def test_training_targets_are_dft_minus_dispersion(tmp_path):
    from ase_wannierml.training.dataset import BuildOptions, build_dataset
    from ase_wannierml.training.frames import load_frame_dir
    from ase_wannierml.training.synthetic import write_synthetic_frames
    from test_dataset import standin_graph, standin_pairs

    write_synthetic_frames(tmp_path, 1, seed=1)
    spec = {"method": "d2", "cutoff": 12.0}

    def build(**kw):
        return build_dataset([tmp_path], lambda a: standin_graph(a, 5.0), standin_pairs,
                             BuildOptions({"C": ["pz"]}, **kw)).examples[0]

    plain, corrected = build(), build(dispersion=spec)
    frame = load_frame_dir(next(p for p in tmp_path.iterdir() if p.is_dir()))
    disp = Dispersion(spec).compute(frame.atoms)
    assert float(plain["target_energy"] - corrected["target_energy"]) == pytest.approx(disp["energy"], abs=1e-10)
    np.testing.assert_allclose((plain["target_forces"] - corrected["target_forces"]).numpy(), disp["forces"],
                               atol=1e-10)
    assert torch.equal(plain["ham_target"], corrected["ham_target"]) if "ham_target" in plain else True


def test_warm_start_accepts_the_short_spelling_of_a_saved_setting():
    """run.init_from compares the config's model settings with the saved ones after normalising both, so
    ``{method: d2}`` matches the stored full D2 spec, while a real difference is still refused."""
    from types import SimpleNamespace

    from ase_wannierml.training.trainer import _init_model_kwargs

    saved = ModelConfig(species=("C",), orbitals={"C": ["pz"]}, dispersion={"method": "d2"}).to_dict()
    cfg = SimpleNamespace(model={"orbitals": {"C": "pz"}, "dispersion": {"method": "d2"}},
                          run=SimpleNamespace(init_from="saved.pt"))
    assert _init_model_kwargs(cfg, saved)["dispersion"] == saved["dispersion"]
    cfg.model["cutoff"] = 6.0
    with pytest.raises(ValueError, match="cutoff"):
        _init_model_kwargs(cfg, saved)


def test_warm_start_may_add_a_dispersion_term_and_refits_e0s():
    """Dispersion has no weights: a warm start may change it; e0s are dropped (refitted by the trainer)."""
    from types import SimpleNamespace

    from ase_wannierml.training.trainer import _init_model_kwargs

    saved = ModelConfig(species=("C",), orbitals={"C": ["pz"]}, e0s={"C": -150.0}).to_dict()
    cfg = SimpleNamespace(model={"orbitals": {"C": "pz"}, "dispersion": {"method": "d3", "damping": "bj"}},
                          run=SimpleNamespace(init_from="saved.pt"))
    kwargs = _init_model_kwargs(cfg, saved)
    assert kwargs["dispersion"]["method"] == "d3" and kwargs["dispersion"]["damping"] == "bj"
    assert "e0s" not in kwargs
    cfg.model["dispersion"] = {}
    assert _init_model_kwargs(cfg, saved)["e0s"] == {"C": -150.0}      # unchanged: kept


def _reference_path(spec) -> Dispersion:
    d = Dispersion(spec)
    d._fast = None  # torch-dftd's modules: the reference implementation
    return d


@pytest.mark.parametrize("method", ["d3", "d2"])
@pytest.mark.parametrize("case", ["tbg", "mos2", "molecule", "slab_2d"])
def test_numpy_dispersion_equals_torch_dftd(case, method):
    """The numpy D3(BJ) (``dispersion_d3``, factorised C6) and D2 (``dispersion_d2``) give torch-dftd's energy,
    forces and stress to rounding:
    one element (twisted bilayer graphene), two elements (MoS2), a non-periodic C/H/N/O molecule, and a
    surface-like cell periodic in x, y only."""
    from ase.build import molecule

    from ase_wannierml.structures import twisted_bilayer

    spec = ({"method": "d3", "damping": "bj", "cutoff": 12.0, "cn_cutoff": 10.0} if method == "d3"
            else {"method": "d2", "cutoff": 15.0})
    if case == "tbg":
        atoms = twisted_bilayer("graphene", m=4, r=1)
    elif case == "mos2":
        atoms = reference_structure(get_material("mos2-bilayer"), 3.0, 0.0) * (2, 2, 1)
    elif case == "molecule":
        atoms = molecule("CH3CONH2")
        atoms.center(vacuum=4.0)
        atoms.pbc = False
    else:
        atoms = twisted_bilayer("graphene", m=3, r=1)
        atoms.pbc = [True, True, False]
    atoms.rattle(0.05, seed=7)
    fast = Dispersion(spec)
    assert fast._fast is not None and fast._fast.supports(atoms.numbers)
    got, ref = fast.compute(atoms), _reference_path(spec).compute(atoms)
    assert got["energy"] == pytest.approx(ref["energy"], abs=1e-11)
    np.testing.assert_allclose(got["forces"], ref["forces"], atol=1e-11)
    if ref["stress"] is None:
        assert got["stress"] is None
    else:
        np.testing.assert_allclose(got["stress"], ref["stress"], atol=1e-13)
    assert abs(ref["energy"]) > 0.05 and np.abs(ref["forces"]).max() > 1e-3  # a non-trivial comparison


def test_d3_settings_outside_the_fast_path_use_torch_dftd():
    assert Dispersion({"method": "d3", "damping": "bj", "abc": True})._fast is None
    assert Dispersion({"method": "d3", "damping": "zero"})._fast is None
