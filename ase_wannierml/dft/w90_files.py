"""Readers for the Wannier90 files only the workflow needs (.amn, .eig, .wout) and the projectability-based choice
of the frozen window (pitfall 2 of the graphene protocol). ``_hr.dat``, ``_wsvec.dat`` and ``_centres.xyz`` are read
by the one Wannier90 layer, ``TightBinding.from_wannier90`` (``tb/wannier90.py``).

Wannier90 3.1 (Debian) has no ``dis_froz_proj``, so we exclude low-projectability states by choosing the
(global) frozen energy window from the projectabilities: the window [E_F + w_min, E_F + w_max] is shrunk until it
contains no state whose projectability onto the trial-orbital space is below the threshold and no k-point has
more than ``num_wann`` states in it.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np


def read_amn(path: str | Path) -> np.ndarray:
    """A_kmn = <ψ_mk|g_n>, complex array (nk, nbands, nwann)."""
    with open(path) as f:
        f.readline()
        nb, nk, nw = (int(x) for x in f.readline().split()[:3])
        data = np.loadtxt(f)
    if data.shape != (nb * nk * nw, 5):
        raise ValueError(f"{path}: expected {nb * nk * nw} rows of 5 numbers, got shape {data.shape}")
    A = np.zeros((nk, nb, nw), dtype=complex)
    m = data[:, 0].astype(int) - 1
    n = data[:, 1].astype(int) - 1
    k = data[:, 2].astype(int) - 1
    A[k, m, n] = data[:, 3] + 1j * data[:, 4]
    return A


def read_eig(path: str | Path) -> np.ndarray:
    """Band energies e_kn (nk, nbands), eV."""
    data = np.loadtxt(path)
    nb = int(data[:, 0].max())
    nk = int(data[:, 1].max())
    e = np.zeros((nk, nb))
    e[data[:, 1].astype(int) - 1, data[:, 0].astype(int) - 1] = data[:, 2]
    return e


def projectability(A_kmn: np.ndarray) -> np.ndarray:
    """p_km = [A S⁻¹ A†]_mm with S = A†A (per k): weight of band m in the span of the projected trial orbitals.

    Normalised so that Σ_m p_km = num_wann and 0 ≤ p ≤ 1, independent of the trial functions' radial scale.
    """
    nk, nb, nw = A_kmn.shape
    p = np.zeros((nk, nb))
    for k in range(nk):
        A = A_kmn[k]
        S = A.conj().T @ A
        X = np.linalg.solve(S, A.conj().T)              # (nw, nb)
        p[k] = np.real(np.einsum("mn,nm->m", A, X))
    return p


def choose_frozen_window(e_kn: np.ndarray, p_kn: np.ndarray, e_fermi: float, window: tuple[float, float],
                         num_wann: int, threshold: float, margin: float = 0.02) -> dict:
    """Shrink the frozen window [E_F + window[0], E_F + window[1]] (eV) around E_F so that it holds only states
    with projectability ≥ ``threshold`` and at most ``num_wann`` states per k-point.

    Returns ``{"dis_froz_min", "dis_froz_max" (eV absolute), "n_low_proj_excluded", "max_states_per_k",
    "min_proj_in_window"}``.
    """
    lo, hi = e_fermi + window[0], e_fermi + window[1]
    bad = p_kn < threshold
    below = e_kn[bad & (e_kn < e_fermi) & (e_kn >= lo)]
    above = e_kn[bad & (e_kn >= e_fermi) & (e_kn <= hi)]
    n_excl = int(below.size + above.size)
    if below.size:
        lo = float(below.max()) + margin
    if above.size:
        hi = float(above.min()) - margin
    # at most num_wann states per k: lower hi (and then raise lo) until satisfied
    for _ in range(10000):
        inwin = (e_kn >= lo) & (e_kn <= hi)
        counts = inwin.sum(axis=1)
        if counts.max() <= num_wann:
            break
        k = int(np.argmax(counts))
        ek = np.sort(e_kn[k][inwin[k]])
        # drop the state farthest from E_F at that k
        if abs(ek[-1] - e_fermi) >= abs(ek[0] - e_fermi):
            hi = float(ek[-1]) - margin
        else:
            lo = float(ek[0]) + margin
    inwin = (e_kn >= lo) & (e_kn <= hi)
    if lo >= e_fermi or hi <= e_fermi:
        raise RuntimeError(f"frozen window collapsed around E_F = {e_fermi:.3f} eV: [{lo:.3f}, {hi:.3f}] eV "
                           "(low-projectability states at the Fermi level)")
    return {
        "dis_froz_min": lo,
        "dis_froz_max": hi,
        "n_low_proj_excluded": n_excl,
        "max_states_per_k": int(inwin.sum(axis=1).max()),
        "min_proj_in_window": float(p_kn[inwin].min()) if inwin.any() else None,
    }


def read_wout_spreads(path: str | Path, num_wann: int) -> dict:
    """Final Ω_I and total spread (Å²), the largest final spread of one function (Å²) from the ``.wout``."""
    text = Path(path).read_text(errors="replace")
    out: dict = {}
    m = re.findall(r"Omega I\s+=\s+([-\d.Ee+]+)", text)
    if m:
        out["omega_I"] = float(m[-1])
    m = re.findall(r"Omega Total\s+=\s+([-\d.Ee+]+)", text)
    if m:
        out["omega_total"] = float(m[-1])
    spreads = re.findall(r"WF centre and spread\s+\d+\s+\(.*?\)\s+([-\d.Ee+]+)", text)
    if spreads:
        s = np.array([float(x) for x in spreads])
        out["spreads_max"] = float(s[-num_wann:].max())
    out["dis_converged"] = "Disentanglement convergence criteria satisfied" in text
    m = re.findall(r"^\s*(\d+)\s+[-\d.Ee+]+\s+[-\d.Ee+]+\s+[-\d.Ee+]+\s+[-\d.Ee+]+\s+<-- DIS", text, re.M)
    if m:
        out["dis_iterations"] = int(m[-1])
    return out
