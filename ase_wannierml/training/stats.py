"""Training-set statistics: loss scales and the data-derived model settings (e0s, scales, onsite reference).

All from the *training* split only (never validation/test), in eV, eV/Å, eV/Å³.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
import torch
from ase.data import chemical_symbols

from ase_wannierml.model import keys as K

from .config import HAM_CATEGORIES
from .loss import Scales


def fit_e0s(examples: Sequence[dict], species: Sequence[str]) -> dict[str, float]:
    """Per-element reference energies (eV) by least squares E ≈ Σ_s n_s e0_s over frames with an energy.

    Elements absent from the labelled frames get 0; with one element this is the mean energy per atom.
    """
    rows, energies = [], []
    for ex in examples:
        if bool(ex["has_energy"]):
            z = ex[K.ATOMIC_NUMBERS].numpy()
            rows.append([np.count_nonzero(z == _number(s)) for s in species])
            energies.append(float(ex["target_energy"][0]))
    if not rows:
        return {s: 0.0 for s in species}
    a, e = np.array(rows, dtype=float), np.array(energies)
    present = a.any(axis=0)
    sol = np.linalg.lstsq(a[:, present], e, rcond=None)[0]
    out = {s: 0.0 for s in species}
    out.update({s: float(v) for s, v in zip(np.array(species)[present], sol)})
    return out


def _number(symbol: str) -> int:
    return chemical_symbols.index(symbol)


def onsite_reference(examples: Sequence[dict], orbitals: Mapping[str, Sequence[str]]) -> dict[str, list[float]]:
    """Mean onsite diagonal energy (eV, relative to E_F) per element and orbital slot over frames with H."""
    from ase_wannierml.orbitals import element_orbitals

    sums = {s: np.zeros(len(element_orbitals(sh))) for s, sh in orbitals.items()}
    counts = {s: np.zeros_like(v) for s, v in sums.items()}
    for ex in examples:
        if not bool(ex["has_ham"]):
            continue
        n = len(ex[K.POSITIONS])
        diag = torch.diagonal(ex["target_ham"][:n], dim1=1, dim2=2).numpy()          # onsite pairs come first
        known = torch.diagonal(ex["target_ham_mask"][:n], dim1=1, dim2=2).numpy()
        for a, z in enumerate(ex[K.ATOMIC_NUMBERS].tolist()):
            s = chemical_symbols[z]
            k = len(sums[s])
            sums[s] += np.where(known[a, :k], diag[a, :k], 0.0)
            counts[s] += known[a, :k]
    return {s: (sums[s] / np.maximum(counts[s], 1)).tolist() for s in sums if counts[s].any()}


def compute_scales(examples: Sequence[dict], e0s: Mapping[str, float], reference: Mapping[str, Sequence[float]],
                   floor: float, band_scale: float, bin_width: float = 0.0, bin_power: float = 0.5) -> Scales:
    """Loss scales: std of (E − Σe0)/N, RMS force and stress components, RMS of H per category (onsite diagonal
    measured from ``reference``) and, with ``bin_width`` > 0 (Å), per category and distance bin; all ≥ ``floor``."""
    e_res, f2, s2 = [], [], []
    n_bins = 64
    h2 = np.zeros((len(HAM_CATEGORIES), n_bins + 1))
    hn = np.zeros((len(HAM_CATEGORIES), n_bins + 1))
    for ex in examples:
        z = ex[K.ATOMIC_NUMBERS].tolist()
        if bool(ex["has_energy"]):
            e0 = sum(e0s.get(chemical_symbols[x], 0.0) for x in z)
            e_res.append((float(ex["target_energy"][0]) - e0) / len(z))
        if bool(ex["has_forces"]):
            f2.append(ex["target_forces"].numpy().ravel() ** 2)
        if bool(ex["has_stress"]):
            s2.append(ex["target_stress"].numpy().ravel() ** 2)
        if bool(ex["has_ham"]):
            _accumulate_ham(ex, reference, bin_width, h2, hn)
    ham = [max(float(np.sqrt(h2[c].sum() / hn[c].sum())) if hn[c].sum() else 0.0, floor)
           for c in range(len(HAM_CATEGORIES))]
    bins: list[list[float]] = [[] for _ in HAM_CATEGORIES]
    if bin_width > 0:
        last = int(np.flatnonzero(hn.sum(axis=0))[-1]) + 1 if hn.any() else 0
        bins = [[max(float(np.sqrt(h2[c, b] / hn[c, b])), floor) if hn[c, b] else ham[c] for b in range(last)]
                for c in range(len(HAM_CATEGORIES))]
    return Scales(
        energy=max(float(np.std(e_res)) if len(e_res) > 1 else 0.0, floor),
        forces=max(float(np.sqrt(np.mean(np.concatenate(f2)))) if f2 else 0.0, floor),
        stress=max(float(np.sqrt(np.mean(np.concatenate(s2)))) if s2 else 0.0, floor),
        ham=ham, bands=band_scale, ham_bin_width=bin_width if bin_width > 0 else 0.5, ham_bins=bins,
        ham_bin_power=bin_power,
    )


def _accumulate_ham(ex: dict, reference: Mapping[str, Sequence[float]], bin_width: float, h2: np.ndarray,
                    hn: np.ndarray) -> None:
    """Add one example's squared targets (onsite diagonal minus reference) to per-(category, bin) sums."""
    from .loss import pair_distances

    dev, mask = _deviation(ex, reference)
    cat = ex[K.HAM_PAIR_CATEGORY].numpy()
    if bin_width > 0:
        bin_ = np.minimum((pair_distances(ex).numpy() / bin_width).astype(int), h2.shape[1] - 1)
    else:
        bin_ = np.zeros(len(cat), dtype=int)
    known = mask.reshape(len(cat), -1)
    sq = np.where(known, dev.reshape(len(cat), -1) ** 2, 0.0).sum(axis=1)
    np.add.at(h2, (cat, bin_), sq)
    np.add.at(hn, (cat, bin_), known.sum(axis=1))


def _deviation(ex: dict, reference: Mapping[str, Sequence[float]]) -> tuple[np.ndarray, np.ndarray]:
    """Target blocks minus the onsite reference on onsite diagonals, and the mask."""
    dev = ex["target_ham"].numpy().copy()
    n = len(ex[K.POSITIONS])
    for a, z in enumerate(ex[K.ATOMIC_NUMBERS].tolist()):
        ref = reference.get(chemical_symbols[z], ())
        dev[a, np.arange(len(ref)), np.arange(len(ref))] -= np.asarray(ref)
    return dev, ex["target_ham_mask"].numpy()


def reference_level(examples: Sequence[dict]) -> float | None:
    """Mean ``band_centre`` (eV: each frame's Fermi / charge-neutrality level in the targets' zero) over the examples
    with a Hamiltonian; None if there are none. For vacuum-referenced targets this is the model's default Fermi
    level: exact for the training frames on average, off by the frame-to-frame spread (~0.1 eV, mostly strain) for
    others; it is what bands are referenced to and searched near unless a Fermi level is computed
    (``TightBinding.fermi_level(kpts)``)."""
    vals = [float(ex["band_centre"]) for ex in examples if bool(ex["has_ham"]) and "band_centre" in ex]
    return float(np.mean(vals)) if vals else None


def default_fermi_level(examples: Sequence[dict], energy_zero: str) -> float | None:
    """The model's stored Fermi level for targets in ``energy_zero``: 0 when the targets are relative to E_F or the
    neutrality level, the training frames' mean level (:func:`reference_level`) for ``"vacuum"``."""
    return reference_level(examples) if energy_zero == "vacuum" else 0.0


def data_model_settings(examples: Sequence[dict], model_kwargs: Mapping[str, Any],
                        energy_zero: str = "dft_fermi") -> dict[str, Any]:
    """Settings of ``ModelConfig`` taken from data unless the config file sets them.

    e0s (least squares), onsite_reference (mean onsite energies relative to the targets' zero), energy_scale (RMS
    force component, eV/Å × 1 Å), ham_scale (RMS of the off-site near hoppings), fermi_level: 0 when the targets
    are relative to E_F or the neutrality level (see ``targets.py``); for ``energy_zero = "vacuum"`` the mean
    Fermi / neutrality level of the training frames relative to their vacuum level (:func:`reference_level`).
    """
    species = list(model_kwargs["species"])
    orbitals = model_kwargs["orbitals"]
    out: dict[str, Any] = {}
    if "e0s" not in model_kwargs:
        out["e0s"] = fit_e0s(examples, species)
    if "onsite_reference" not in model_kwargs:
        out["onsite_reference"] = onsite_reference(examples, orbitals)
    if "fermi_level" not in model_kwargs:
        out["fermi_level"] = default_fermi_level(examples, energy_zero)
    scales = compute_scales(examples, out.get("e0s", model_kwargs.get("e0s", {})),
                            out.get("onsite_reference", model_kwargs.get("onsite_reference", {})), 1e-3, 1.0)
    if "energy_scale" not in model_kwargs:
        out["energy_scale"] = scales.forces
    if "ham_scale" not in model_kwargs:
        out["ham_scale"] = max(scales.ham[1:])
    return out
