"""Accuracy of a model on a data set, as one table.

Metrics (units in the names):

- ``E MAE (meV/atom)``: mean over frames with an energy of |E_pred − E_ref| / N;
- ``F RMSE (meV/Å)``: over all force components of frames with forces;
- ``S MAE (meV/Å³)``: over all 9 stress components of frames with stress;
- ``H MAE <category> (meV)``: over the known Hamiltonian elements of each category (onsite, intra_near, intra_far,
  inter) on the model's pair list, energies relative to E_F;
- ``band MAE ±w eV (meV)``: band energies of the predicted H (pair list, ``bands.py``) against the full Wannier90
  H, sorted and matched by band index at every k-point of each frame's reference grid, over the (k, band) points
  whose reference energy lies within E_F ± w;
- ``band mean error ±1 eV (meV)``: the signed mean of the same errors (a rigid shift of the predicted bands
  against E_F, e.g. from onsite energies, shows up here);
- ``gap error (meV)``: mean |gap_pred − gap_ref| over frames with a Hamiltonian; the gap on the k-grid is
  min_k ε_{n_occ} − max_k ε_{n_occ−1}, n_occ = number of reference bands below E_F; frames where that count
  varies with k (metals) are left out (graphene's Dirac point gives a gap ≈ 0 on grids containing K).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from ase_wannierml.model import keys as K

from .bands import band_energies
from .config import HAM_CATEGORIES
from .loss import collate

WINDOWS = (0.5, 1.0)  # eV


@dataclass
class _Acc:
    """Running sums of absolute and squared errors."""

    abs_sum: float = 0.0
    sq_sum: float = 0.0
    signed_sum: float = 0.0
    n: int = 0

    def add(self, err: np.ndarray) -> None:
        err = np.asarray(err, dtype=float).ravel()
        self.abs_sum += float(np.abs(err).sum())
        self.sq_sum += float((err ** 2).sum())
        self.signed_sum += float(err.sum())
        self.n += err.size

    def mae(self) -> float:
        return self.abs_sum / self.n if self.n else float("nan")

    def mean(self) -> float:
        return self.signed_sum / self.n if self.n else float("nan")

    def rmse(self) -> float:
        return float(np.sqrt(self.sq_sum / self.n)) if self.n else float("nan")


@dataclass
class Evaluation:
    """Accumulated errors over a data set (eV units inside; ``table()`` reports meV)."""

    energy: _Acc = field(default_factory=_Acc)
    forces: _Acc = field(default_factory=_Acc)
    stress: _Acc = field(default_factory=_Acc)
    ham: list[_Acc] = field(default_factory=lambda: [_Acc() for _ in HAM_CATEGORIES])
    bands: list[_Acc] = field(default_factory=lambda: [_Acc() for _ in WINDOWS])
    gap: _Acc = field(default_factory=_Acc)
    frames: int = 0

    def metrics(self) -> dict[str, float]:
        """Metric name → value (meV-based units, see the module docstring)."""
        out = {"E MAE (meV/atom)": 1e3 * self.energy.mae(), "F RMSE (meV/Å)": 1e3 * self.forces.rmse(),
               "S MAE (meV/Å³)": 1e3 * self.stress.mae()}
        for name, acc in zip(HAM_CATEGORIES, self.ham):
            out[f"H MAE {name} (meV)"] = 1e3 * acc.mae()
        for w, acc in zip(WINDOWS, self.bands):
            out[f"band MAE ±{w:g} eV (meV)"] = 1e3 * acc.mae()
        out[f"band mean error ±{WINDOWS[-1]:g} eV (meV)"] = 1e3 * self.bands[-1].mean()
        out["gap error (meV)"] = 1e3 * self.gap.mae()
        return out

    def counts(self) -> dict[str, int]:
        return {"frames": self.frames, "energy": self.energy.n, "forces": self.forces.n // 3,
                "ham_elements": sum(a.n for a in self.ham), "band_points": self.bands[-1].n}

    def table(self) -> str:
        """Plain-text table, one metric per line ('n/a' where the data set has no such label)."""
        rows = [f"{'metric':<28s}{'value':>12s}"]
        for name, value in self.metrics().items():
            rows.append(f"{name:<28s}{'n/a' if np.isnan(value) else f'{value:.3f}':>12s}")
        c = self.counts()
        rows.append(f"({c['frames']} frames; {c['energy']} energies, {c['forces']} force vectors, "
                    f"{c['ham_elements']} H elements, {c['band_points']} band points within ±1 eV)")
        return "\n".join(rows)


def gap_on_grid(e_kn: np.ndarray, n_occ: int) -> float:
    """min_k ε[k, n_occ] − max_k ε[k, n_occ − 1] (eV; negative if the bands overlap), e_kn (nk, nbands) sorted."""
    return float(e_kn[:, n_occ].min() - e_kn[:, n_occ - 1].max())


def evaluate(model: torch.nn.Module, examples: list[dict], dtype: torch.dtype = torch.float64,
             batch_size: int = 8) -> Evaluation:
    """Errors of ``model`` on ``examples`` (dataset.py layout); the model is called in eval mode."""
    ev = Evaluation()
    model.eval()
    for start in range(0, len(examples), batch_size):
        chunk = examples[start:start + batch_size]
        batch = collate(chunk, dtype)
        t = batch.targets
        flags = batch.needs
        out = {k: v.detach() for k, v in model(batch.graph, **flags).items()}
        ev.frames += len(chunk)
        _add_labels(ev, batch, out, t)
        if flags["compute_hamiltonian"]:
            _add_hamiltonian(ev, batch, out, t)
    return ev


def _add_labels(ev: Evaluation, batch, out: dict, t: dict) -> None:
    e = t["has_energy"].numpy()
    if e.any():
        err = (out[K.ENERGY] - t["target_energy"]).numpy() / t["num_atoms"].numpy()
        ev.energy.add(err[e])
    f = t["atom_has_forces"].numpy()
    if f.any():
        ev.forces.add((out[K.FORCES] - t["target_forces"]).numpy()[f])
    s = t["has_stress"].numpy()
    if s.any():
        ev.stress.add((out[K.STRESS] - t["target_stress"]).numpy()[s])


def _add_hamiltonian(ev: Evaluation, batch, out: dict, t: dict) -> None:
    err = (out[K.HAM_BLOCKS] - t["target_ham"]).numpy()
    mask = t["target_ham_mask"].numpy()
    cat = batch.graph[K.HAM_PAIR_CATEGORY].numpy()
    for c, acc in enumerate(ev.ham):
        acc.add(err[mask & (cat == c)[:, None, None]])
    index, shift = batch.graph[K.HAM_PAIR_INDEX], batch.graph[K.HAM_PAIR_SHIFT]
    for fb in batch.frames:
        sl = slice(fb.pair_start, fb.pair_stop)
        pred = band_energies(out[K.HAM_BLOCKS][sl], index[:, sl] - fb.atom_start, shift[sl], fb.orbital_index,
                             fb.bands.shape[1], fb.kpts).numpy()
        ref = fb.bands.numpy()
        for w, acc in zip(WINDOWS, ev.bands):
            acc.add((pred - ref)[np.abs(ref - fb.centre) <= w])
        below = (ref < fb.centre).sum(axis=1)
        if np.all(below == below[0]) and 0 < below[0] < ref.shape[1]:     # insulator or semimetal on this grid
            ev.gap.add([gap_on_grid(pred, int(below[0])) - gap_on_grid(ref, int(below[0]))])
