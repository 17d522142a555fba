"""`evaluate`: the metric table against a hand computation; the train/evaluate command lines."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from ase_wannierml.model import keys as K
from ase_wannierml.model.config import ModelConfig
from ase_wannierml.training.cli import evaluate_main, train_main
from ase_wannierml.training.dataset import BuildOptions, build_dataset
from ase_wannierml.training.evaluate import evaluate, gap_on_grid
from ase_wannierml.training.loss import collate
from ase_wannierml.training.setup import graph_functions
from ase_wannierml.training.synthetic import TINY_MODEL, write_synthetic_frames

FULL = ModelConfig(species=("C",), orbitals={"C": ("pz",)}, cutoff=3.0, ham_cutoff_near=3.0,
                   ham_cutoff_far=6.5, ham_cutoff_inter=6.5)   # pair list holds all Moon–Koshino hoppings (< 6 Å)


class OffsetModel(torch.nn.Module):
    """Returns the targets of ``examples`` plus known errors (a stand-in for a trained model)."""

    def __init__(self, examples):
        super().__init__()
        self.t = collate(examples, torch.float64)

    def forward(self, graph, compute_forces=True, compute_stress=False, compute_hamiltonian=False):
        t = self.t.targets
        n = t["num_atoms"].double()
        energy = t["target_energy"] + torch.tensor([0.004, -0.002], dtype=torch.float64) * n   # +4, -2 meV/atom
        forces = t["target_forces"].clone()
        forces[:4] += 0.01                                                        # frame 0 only, every component
        ham = t["target_ham"].clone()
        onsite = graph[K.HAM_PAIR_CATEGORY] == 0
        ham[onsite, 0, 0] += 0.02                                                 # all onsite energies +20 meV
        return {K.ENERGY: energy, K.FORCES: forces, K.STRESS: t["target_stress"] + 0.001, K.HAM_BLOCKS: ham}


def test_metrics_match_a_hand_computation(tmp_path):
    write_synthetic_frames(tmp_path, 2, seed=4)
    graph_fn, pairs_fn = graph_functions(FULL)
    examples = build_dataset([tmp_path], graph_fn, pairs_fn, BuildOptions({"C": ["pz"]})).examples
    ev = evaluate(OffsetModel(examples), examples, batch_size=2)
    m = ev.metrics()
    assert m["E MAE (meV/atom)"] == pytest.approx(3.0, rel=1e-9)                    # (4 + 2) / 2
    assert m["F RMSE (meV/Å)"] == pytest.approx(10.0 / np.sqrt(2), rel=1e-9)       # half the components off by 10
    assert m["S MAE (meV/Å³)"] == pytest.approx(1.0, rel=1e-9)
    assert m["H MAE onsite (meV)"] == pytest.approx(20.0, rel=1e-9)
    for cat in ("intra_near", "intra_far", "inter"):
        assert m[f"H MAE {cat} (meV)"] == pytest.approx(0.0, abs=1e-9)
    # a uniform onsite shift moves every band by 20 meV and leaves the gap alone
    assert m["band MAE ±0.5 eV (meV)"] == pytest.approx(20.0, abs=0.01)            # 6-decimal _hr.dat rounding
    assert m["band MAE ±1 eV (meV)"] == pytest.approx(20.0, abs=0.01)
    assert m["gap error (meV)"] == pytest.approx(0.0, abs=0.01)
    assert ev.counts()["frames"] == 2 and "E MAE (meV/atom)" in ev.table()


def test_gap_on_grid_by_hand():
    e_kn = np.array([[-1.0, 0.5, 2.0], [-0.8, 0.3, 1.0]])
    assert gap_on_grid(e_kn, 1) == pytest.approx(0.3 - (-0.8))
    assert gap_on_grid(e_kn, 2) == pytest.approx(1.0 - 0.5)


def test_train_and_evaluate_command_lines(tmp_path, capsys):
    frames = tmp_path / "frames"
    write_synthetic_frames(frames, 4, seed=8)
    cfg = {"data": {"frames": [str(frames)], "val_fraction": 0.25}, "model": TINY_MODEL,
           "optim": {"max_steps": 2, "batch_size": 2}, "run": {"output": str(tmp_path / "run"), "eval_every": 1}}
    import yaml

    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    assert train_main([str(tmp_path / "cfg.yaml"), "--no-progress"]) == 0
    assert "done: step 2" in capsys.readouterr().out
    model_file = tmp_path / "run" / "model.pt"
    assert evaluate_main([str(model_file), str(frames), "--json", str(tmp_path / "m.json")]) == 0
    table = capsys.readouterr().out
    for name in ("E MAE (meV/atom)", "F RMSE (meV/Å)", "S MAE (meV/Å³)", "H MAE onsite (meV)", "H MAE inter (meV)",
                 "band MAE ±0.5 eV (meV)", "band MAE ±1 eV (meV)", "gap error (meV)"):
        assert name in table
    saved = json.loads((tmp_path / "m.json").read_text())
    assert saved["counts"]["frames"] == 4
    e_line = next(ln for ln in table.splitlines() if ln.startswith("E MAE"))
    assert float(e_line.split()[-1]) == pytest.approx(saved["metrics"]["E MAE (meV/atom)"], abs=1e-3)
    with pytest.raises(SystemExit):
        train_main([])                                   # usage error names the missing config



def test_predicted_tightbinding_uses_the_training_energy_zero(tmp_path):
    """A trained model's TightBinding is relative to E_F (fermi_level 0) and has the bands the loss trains."""
    from ase_wannierml.model import atoms_to_graph, load_model
    from ase_wannierml.training.bands import band_energies
    from ase_wannierml.training.frames import load_frame_dir
    from ase_wannierml.training.synthetic import tiny_train_config
    from ase_wannierml.training.trainer import Trainer

    write_synthetic_frames(tmp_path / "frames", 3, seed=2)
    Trainer(tiny_train_config(tmp_path / "frames", tmp_path / "run", optim={"max_steps": 2})).train()
    model = load_model(tmp_path / "run" / "model.pt")
    atoms = load_frame_dir(tmp_path / "frames" / "frame_0000").atoms
    tb = model.predict_tightbinding(atoms)
    assert tb.fermi_energy == 0.0
    graph = atoms_to_graph(atoms, model.config, dtype=model.dtype)
    blocks = model(graph, compute_forces=False, compute_hamiltonian=True)[K.HAM_BLOCKS].detach()
    k = torch.tensor([[0, 0, 0], [1 / 3, 1 / 3, 0], [0.2, 0.7, 0]], dtype=model.dtype)
    ours = band_energies(blocks, graph[K.HAM_PAIR_INDEX], graph[K.HAM_PAIR_SHIFT],
                         torch.arange(len(atoms))[:, None], len(atoms), k).numpy()
    np.testing.assert_allclose(tb.eigenvalues(k.numpy()), ours, atol=1e-6)
