"""Loss pieces: H(k) from pair blocks, per-category normalisation, global-count combination."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from ase_wannierml.model import keys as K
from ase_wannierml.model.config import ModelConfig
from ase_wannierml.training.bands import band_energies
from ase_wannierml.training.config import LossConfig
from ase_wannierml.training.dataset import BuildOptions, build_dataset
from ase_wannierml.training.loss import Scales, collate, combine, loss_terms
from ase_wannierml.training.setup import graph_functions
from ase_wannierml.training.stats import compute_scales, fit_e0s, onsite_reference
from ase_wannierml.training.synthetic import synthetic_tb, write_synthetic_frames
from ase_wannierml.training.frames import load_frame_dir

LONG = ModelConfig(species=("C",), orbitals={"C": ("pz",)}, cutoff=3.0, ham_cutoff_near=3.0,
                   ham_cutoff_far=6.5, ham_cutoff_inter=6.5)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    folder = tmp_path_factory.mktemp("frames")
    write_synthetic_frames(folder, 3, seed=5)
    graph_fn, pairs_fn = graph_functions(LONG)
    return folder, build_dataset([folder], graph_fn, pairs_fn, BuildOptions({"C": ["pz"]}))


def test_bands_from_pair_blocks_equal_the_wannier_hamiltonian(data):
    """Target blocks on the model's pair list (cut-off 6.5 Å > Moon–Koshino's 6 Å) hold all of H: same bands."""
    folder, ds = data
    for fid, ex in zip(ds.frame_ids, ds.examples):
        frame = load_frame_dir(folder / fid)
        atoms = frame.atoms
        kpts = torch.tensor([[0, 0, 0], [1 / 3, 1 / 3, 0], [0.5, 0, 0], [0.123, 0.456, 0]], dtype=torch.float64)
        e = band_energies(ex["target_ham"], ex[K.HAM_PAIR_INDEX], ex[K.HAM_PAIR_SHIFT], ex["orbital_index"],
                          len(atoms), kpts).numpy()
        ref = synthetic_tb(atoms, frame.meta["energy_zero_eV"] - frame.fermi_level).eigenvalues(kpts.numpy())
        np.testing.assert_allclose(e, ref, atol=1e-5)


def test_band_gradient_is_finite_at_the_dirac_point(data):
    _, ds = data
    ex = ds.examples[0]
    blocks = ex["target_ham"].clone().requires_grad_(True)
    k = torch.tensor([[1 / 3, 1 / 3, 0]], dtype=torch.float64)
    e = band_energies(blocks, ex[K.HAM_PAIR_INDEX], ex[K.HAM_PAIR_SHIFT], ex["orbital_index"], 4, k)
    e[:, 1:3].sum().backward()                   # the two bands that (nearly) touch at K
    assert torch.isfinite(blocks.grad).all()


def test_category_scales_are_the_rms_of_each_category(data):
    _, ds = data
    ref = onsite_reference(ds.examples, {"C": ["pz"]})
    scales = compute_scales(ds.examples, {"C": 0.0}, ref, 1e-3, 0.05)
    for c in range(4):
        vals = []
        for ex in ds.examples:
            m = ex["target_ham_mask"][:, 0, 0] & (ex[K.HAM_PAIR_CATEGORY] == c)
            v = ex["target_ham"][:, 0, 0][m].numpy()
            vals.append(v - ref["C"][0] if c == 0 else v)
        rms = np.sqrt(np.mean(np.concatenate(vals) ** 2))
        assert scales.ham[c] == pytest.approx(max(rms, 1e-3), rel=1e-12)
    # onsite deviations are tens of meV, near hoppings eV, long ones meV: normalisation equalises them
    assert scales.ham[1] > 10 * scales.ham[0] and scales.ham[1] > 10 * scales.ham[2]


def test_e0s_are_the_mean_energy_per_atom_for_one_element(data):
    _, ds = data
    e0 = fit_e0s(ds.examples, ["C"])["C"]
    assert e0 == pytest.approx(np.mean([float(ex["target_energy"][0]) / 4 for ex in ds.examples]), rel=1e-12)


def test_loss_is_normalised_and_combined_with_global_counts(data):
    """Hand computation: per-term mean square / scale², weighted; halves with global counts add up to the whole."""
    _, ds = data
    batch = collate(ds.examples, torch.float64)
    n_pairs = len(batch.targets["target_ham"])
    out = {K.ENERGY: batch.targets["target_energy"] + 0.03 * batch.targets["num_atoms"].double(),   # 30 meV/atom off
           K.FORCES: batch.targets["target_forces"] + 0.2,                                  # every component
           K.HAM_BLOCKS: batch.targets["target_ham"] + 0.01}
    scales = Scales(energy=0.1, forces=2.0, stress=1.0, ham=[0.05, 1.0, 0.01, 0.1])
    cfg = LossConfig(energy=2.0, forces=3.0, stress=0.0, hamiltonian=1.0, hamiltonian_categories=[1, 1, 1, 4])
    terms = loss_terms(batch, out, scales, cfg)
    counts = {n: t.count for n, t in terms.items()}
    assert counts["energy"] == 3 and counts["forces"] == 3 * 4 * 3
    total = float(combine(terms, counts, cfg))
    ham_cats = batch.graph[K.HAM_PAIR_CATEGORY]
    expected = 2.0 * (0.03 / 0.1) ** 2 + 3.0 * (0.2 / 2.0) ** 2
    expected += sum(w * (0.01 / s) ** 2 for c, (w, s) in enumerate(zip([1, 1, 1, 4], scales.ham))
                    if bool((ham_cats == c).any()))
    assert total == pytest.approx(expected, rel=1e-10)
    assert n_pairs == len(ham_cats)
    # data-parallel split: each half's sums over the global counts, added, give the full loss
    halves = [collate(ds.examples[:1], torch.float64), collate(ds.examples[1:], torch.float64)]
    parts = []
    for h in halves:
        o = {K.ENERGY: h.targets["target_energy"] + 0.03 * h.targets["num_atoms"].double(),
             K.FORCES: h.targets["target_forces"] + 0.2, K.HAM_BLOCKS: h.targets["target_ham"] + 0.01}
        parts.append(float(combine(loss_terms(h, o, scales, cfg), counts, cfg)))
    assert sum(parts) == pytest.approx(total, rel=1e-12)


def test_band_loss_alone_drives_blocks_to_the_reference_bands(data):
    """Gradient descent on the band term only (blocks as free parameters) removes a band error."""
    _, ds = data
    ex = ds.examples[0]
    batch = collate([ex], torch.float64)
    blocks = torch.nn.Parameter(ex["target_ham"] * 1.1)       # 10 % too wide bands
    cfg = LossConfig(energy=0, forces=0, stress=0, hamiltonian=0, bands=1.0, band_kpoints=36, band_window=1.0)
    opt = torch.optim.Adam([blocks], lr=3e-3)
    errors = []
    for _ in range(150):
        opt.zero_grad()
        terms = loss_terms(batch, {K.HAM_BLOCKS: blocks}, Scales(), cfg, band_seed=0)
        loss = combine(terms, {n: t.count for n, t in terms.items()}, cfg)
        loss.backward()
        opt.step()
        errors.append(float(loss.detach()))
    assert errors[-1] < 1e-2 * errors[0]


def test_distance_binned_scales_weigh_long_hoppings_like_short_ones(data):
    """Inside one category, each element is measured against the RMS target of its 0.5 Å distance shell."""
    from ase_wannierml.training.loss import pair_distances

    _, ds = data
    scales = compute_scales(ds.examples, {"C": 0.0}, onsite_reference(ds.examples, {"C": ["pz"]}), 1e-3, 0.05,
                            bin_width=0.5, bin_power=1.0)
    d = torch.cat([pair_distances(ex) for ex in ds.examples])
    cat = torch.cat([ex[K.HAM_PAIR_CATEGORY] for ex in ds.examples])
    val = torch.cat([ex["target_ham"][:, 0, 0] for ex in ds.examples])
    known = torch.cat([ex["target_ham_mask"][:, 0, 0] for ex in ds.examples])
    sigma = scales.pair_scales(cat, d)
    for lo in (1.0, 2.0, 2.5, 4.0, 5.5):                     # intralayer far shells 4-6 Å, near ones 1-3 Å
        sel = known & (d >= lo) & (d < lo + 0.5) & (cat > 0)
        for c in cat[sel].unique().tolist():
            s = sel & (cat == c)
            rms = float(val[s].pow(2).mean().sqrt())
            assert torch.allclose(sigma[s], torch.tensor(max(rms, 1e-3), dtype=sigma.dtype))
    near1 = float(sigma[known & (cat == 1) & (d < 1.5)][0])
    far = float(sigma[known & (cat == 2) & (d > 5.5)][0])
    assert near1 > 2.0 and far < 0.05                      # eV vs meV shells get their own scale
    mixed = compute_scales(ds.examples, {"C": 0.0}, onsite_reference(ds.examples, {"C": ["pz"]}), 1e-3, 0.05,
                           bin_width=0.5, bin_power=0.5).pair_scales(cat, d)
    torch.testing.assert_close(mixed, (sigma * torch.tensor(scales.ham, dtype=sigma.dtype)[cat]).sqrt())


def test_hk_term_is_zero_at_the_target_and_sees_errors_that_add_up_at_k(data):
    """The Bloch-Hamiltonian term vanishes for the target blocks and equals |ΔH(k)|² of a known shift."""
    _, ds = data
    batch = collate(ds.examples[:2], torch.float64)
    cfg = LossConfig(energy=0.0, forces=0.0, stress=0.0, hamiltonian=0.0, hk=1.0, hk_scale=1.0,
                     hk_window_weight=1.0)
    scales = Scales()
    out = {K.HAM_BLOCKS: batch.targets["target_ham"].clone()}
    assert float(loss_terms(batch, out, scales, cfg)["hk"].value) == pytest.approx(0.0, abs=1e-20)
    onsite = batch.graph[K.HAM_PAIR_CATEGORY] == 0
    shifted = out[K.HAM_BLOCKS].clone()
    shifted[onsite, 0, 0] += 0.01                      # every onsite energy up by 10 meV: ΔH(k) = 0.01·1
    term = loss_terms(batch, {K.HAM_BLOCKS: shifted}, scales, cfg)["hk"]
    n_k = sum(len(fb.kpts) for fb in batch.frames)
    norb = [fb.bands.shape[1] for fb in batch.frames]
    assert float(term.value) == pytest.approx(sum(len(fb.kpts) * n * 0.01 ** 2 for fb, n in
                                                  zip(batch.frames, norb)), rel=1e-9)
    assert term.count == pytest.approx(sum(len(fb.kpts) * n ** 2 for fb, n in zip(batch.frames, norb)))
    assert n_k > 0


def test_band_window_sits_at_the_frame_centre_for_vacuum_referenced_targets(tmp_path):
    """With energy_zero = "vacuum" the targets are ~−4 eV from zero; the band loss must still pick the bands near
    each frame's Fermi level: same points, same term as the E_F-referenced data for the same error."""
    import json

    from ase_wannierml.training.loss import _band_term

    folder = tmp_path / "f"
    write_synthetic_frames(folder, 2, seed=6)
    for d in folder.iterdir():
        meta = json.loads((d / "meta.json").read_text())
        meta["vacuum_level_eV"] = load_frame_dir(d).fermi_level + 4.0
        (d / "meta.json").write_text(json.dumps(meta))
    graph_fn, pairs_fn = graph_functions(LONG)
    cfg = LossConfig(band_window=0.5)
    scales = Scales(bands=1.0)
    terms = []
    for zero in ("dft_fermi", "vacuum"):
        ds = build_dataset([folder], graph_fn, pairs_fn, BuildOptions({"C": ["pz"]}, energy_zero=zero))
        batch = collate(ds.examples, torch.float64)
        n = batch.graph[K.POSITIONS].shape[0]
        blocks = batch.targets["target_ham"].clone()
        blocks[:n, 0, 0] += 0.01                                      # every onsite energy 10 meV too high
        terms.append(_band_term(batch, blocks, scales, cfg, band_seed=None))
    assert terms[0].count > 0 and terms[1].count == terms[0].count
    assert float(terms[1].value) == pytest.approx(float(terms[0].value), rel=1e-6)


def test_layer_force_term_sees_a_coherent_error_that_the_force_rmse_averages_away(data):
    """A per-atom force error of +e on one layer and -e on the other (a too-flat binding curve) is the whole
    layer-mean error; a zero-mean error pattern inside each layer gives no layer term although the force RMSE is
    the same. Single-layer structures contribute nothing; the term is off at weight 0."""
    from ase_wannierml.training.loss import layer_mean_force_errors

    _, ds = data
    batch = collate(ds.examples, torch.float64)
    g, t = batch.graph, batch.targets
    layer = g[K.LAYER]
    assert set(layer.tolist()) == {0, 1}
    e = 0.05
    coherent = t["target_forces"].clone()
    coherent[:, 2] += torch.where(layer == 1, -e, e)                  # layers pulled together, every atom
    alternating = t["target_forces"].clone()
    for s in range(batch.size):                                     # +e, -e, +e, -e inside each layer
        for lay in (0, 1):
            idx = torch.nonzero((g[K.BATCH] == s) & (layer == lay)).flatten()
            alternating[idx, 2] += e * (1 - 2 * (torch.arange(len(idx)) % 2)).double()
    mask = t["atom_has_forces"]
    err_c = layer_mean_force_errors(g, coherent - t["target_forces"], mask)
    err_a = layer_mean_force_errors(g, alternating - t["target_forces"], mask)
    assert err_c.shape == (2 * batch.size, 3)
    np.testing.assert_allclose(err_c[:, 2].abs().numpy(), e, rtol=1e-6)
    np.testing.assert_allclose(err_a.numpy(), 0.0, atol=1e-9)
    scales = Scales(forces=1.0, layer_forces=0.01)
    on = LossConfig(energy=0.0, forces=1.0, layer_forces=2.0, stress=0.0, hamiltonian=0.0)
    for forces, expected in ((coherent, 2.0 * (e / 0.01) ** 2 / 3), (alternating, 0.0)):   # z of x, y, z
        terms = loss_terms(batch, {K.FORCES: forces}, scales, on)
        counts = {n: x.count for n, x in terms.items()}
        assert counts["layer_forces"] == 2 * batch.size * 3
        assert float(combine({"layer_forces": terms["layer_forces"]}, counts, on)) == pytest.approx(expected)
        assert terms["forces"].sq == pytest.approx(terms["forces"].count / 3 * e ** 2)   # same force RMSE both ways
    off = LossConfig(energy=0.0, forces=1.0, stress=0.0, hamiltonian=0.0)
    assert "layer_forces" not in loss_terms(batch, {K.FORCES: coherent}, scales, off)
    one_layer = dict(g, **{K.LAYER: torch.zeros_like(layer)})        # a monolayer: ΣF = 0, nothing to learn
    assert layer_mean_force_errors(one_layer, coherent - t["target_forces"], mask).shape == (0, 3)


def test_layer_force_settings_are_validated():
    from ase_wannierml.training.config import TrainConfig

    for bad in ({"layer_forces": -1.0}, {"layer_forces_scale": 0.0}):
        cfg = TrainConfig()
        cfg.data.frames = ["x"]
        for k, v in bad.items():
            setattr(cfg.loss, k, v)
        with pytest.raises(ValueError, match=f"loss.{next(iter(bad))}"):
            cfg.validate()


def test_onsite_centred_term_sees_the_level_pattern_and_not_a_frame_offset(data):
    """A rigid shift of every onsite level of a frame gives no centred error (the per-element onsite term sees it
    whole); a +e/−e pattern inside each frame is seen whole. Weight 0 turns it off; negative weights are refused."""
    from ase_wannierml.training.config import TrainConfig
    from ase_wannierml.training.loss import onsite_centred_errors

    _, ds = data
    batch = collate(ds.examples[:2], torch.float64)
    g, t = batch.graph, batch.targets
    onsite = torch.nonzero(g[K.HAM_PAIR_CATEGORY] == K.CATEGORY_ONSITE).flatten()
    struct = g[K.BATCH][g[K.HAM_PAIR_INDEX][0, onsite]]
    e = 0.02
    offset, pattern = t["target_ham"].clone(), t["target_ham"].clone()
    offset[onsite, 0, 0] += torch.where(struct == 0, e, -3 * e)            # a different offset per frame
    for s in range(batch.size):
        idx = onsite[struct == s]
        pattern[idx, 0, 0] += e * (1 - 2 * (torch.arange(len(idx)) % 2)).double()
    mask = t["target_ham_mask"]
    np.testing.assert_allclose(onsite_centred_errors(g, offset - t["target_ham"], mask).numpy(), 0.0, atol=1e-12)
    err = onsite_centred_errors(g, pattern - t["target_ham"], mask)
    assert err.numel() == len(onsite)
    np.testing.assert_allclose(err.abs().numpy(), e, rtol=1e-9)        # even atom counts: the mean of ±e is 0
    cfg = LossConfig(energy=0.0, forces=0.0, stress=0.0, hamiltonian=1.0, onsite_centred=3.0)
    scales = Scales(ham=[0.1, 1.0, 1.0, 1.0])
    terms = loss_terms(batch, {K.HAM_BLOCKS: pattern}, scales, cfg)
    assert float(terms["onsite_centred"].value) == pytest.approx(len(onsite) * (e / 0.1) ** 2)
    assert float(loss_terms(batch, {K.HAM_BLOCKS: offset}, scales, cfg)["onsite_centred"].value) < 1e-20
    assert float(loss_terms(batch, {K.HAM_BLOCKS: offset}, scales, cfg)["ham_onsite"].value) > 0
    off = LossConfig(energy=0.0, forces=0.0, stress=0.0, hamiltonian=1.0)
    assert "onsite_centred" not in loss_terms(batch, {K.HAM_BLOCKS: pattern}, scales, off)
    cfg = TrainConfig()
    cfg.data.frames = ["x"]
    cfg.loss.onsite_centred = -1.0
    with pytest.raises(ValueError, match="loss.onsite_centred"):
        cfg.validate()
