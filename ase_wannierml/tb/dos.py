"""Density of states of a ``TightBinding`` on a k-mesh: smeared total and projected DOS (ASE ``GridDOSData``).

Normalisation: states per eV per cell for *one* spin channel, so ∫ DOS dE = norb (the number of orbitals) when the
energy window holds the whole spectrum; multiply by 2 for spin-degenerate electron counts. Projected DOS split that
total by eigenvector weight |<i|n k>|² summed over the orbitals i of each group (atom, element, orbital label or
layer), so the projections add up to the total.

Routes: "exact" diagonalises H(k) on the mesh (dense); "kpm" uses the kernel polynomial method on sparse H(k)
(``kpm.py``) for large systems: moments per k on common spectral bounds, k-weighted sum, one reconstruction
(:func:`kpm_moments_kmesh`); "auto" picks "exact" up to ``kmesh.EXACT_MAX_ORBITALS`` orbitals.

Example::

    >>> d = dos(tb, kpts=(24, 24, 1), width=0.05)            # doctest: +SKIP
    >>> d.get_energies().shape, d.get_weights().shape
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from . import kmesh
from .kmesh import DOS_NPTS, DOS_WIDTH, dos_mesh, kpoint_mesh
from .progress import progress

if TYPE_CHECKING:  # pragma: no cover
    from ase.spectrum.doscollection import GridDOSCollection
    from ase.spectrum.dosdata import GridDOSData

    from .tightbinding import TightBinding

KPM_MAX_MOMENTS = 1 << 20  # above: refuse (a width far below any resolvable scale)
KPM_MAX_GROUPS = 64  # projected KPM costs one stochastic trace per group
_PADDING = 10.0  # energy window margin in units of the width
_KERNEL_ELEMENTS = 2**22  # kernel matrix entries per batch


def smear(e_N: np.ndarray, w_Ng: np.ndarray, grid_e: np.ndarray, width: float, smearing: str = "gauss") -> np.ndarray:
    """Σ_N w_Ng δ_width(E - e_N) on ``grid_e`` (npts,) → (ng, npts), per eV.

    ``smearing`` "gauss" (standard deviation ``width``) or "lorentz" (half width at half maximum ``width``).
    Gaussians are cut at 8 widths; energies are processed sorted so each batch touches only its part of the grid.
    """
    if smearing not in ("gauss", "lorentz"):
        raise ValueError(f"unknown smearing {smearing!r}; use 'gauss' or 'lorentz'")
    if width <= 0:
        raise ValueError(f"smearing width must be positive (eV), got {width}")
    order = np.argsort(e_N)
    e_N, w_Ng = e_N[order], w_Ng[order]
    out_gE = np.zeros((w_Ng.shape[1], len(grid_e)))
    batch = max(1, _KERNEL_ELEMENTS // len(grid_e))
    for s in range(0, len(e_N), batch):
        e_b, w_bg = e_N[s:s + batch], w_Ng[s:s + batch]
        if smearing == "gauss":
            lo, hi = np.searchsorted(grid_e, [e_b[0] - 8 * width, e_b[-1] + 8 * width])
            x_bE = (grid_e[None, lo:hi] - e_b[:, None]) / width
            kernel_bE = np.exp(-0.5 * x_bE**2) / (width * np.sqrt(2 * np.pi))
        else:
            lo, hi = 0, len(grid_e)
            kernel_bE = (width / np.pi) / ((grid_e[None] - e_b[:, None]) ** 2 + width**2)
        out_gE[:, lo:hi] += w_bg.T @ kernel_bE
    return out_gE


def energy_grid(e_min: float, e_max: float, width: float, npts: int, emin: float | None, emax: float | None) -> np.ndarray:
    """Energy grid (npts,) eV covering [e_min, e_max] padded by 10 widths unless emin/emax are given."""
    lo = e_min - _PADDING * width if emin is None else emin
    hi = e_max + _PADDING * width if emax is None else emax
    if not np.isfinite(width) or width <= 0:
        raise ValueError(f"smearing width must be a positive energy (eV), got {width}")
    if not hi > lo or npts < 2:
        raise ValueError(f"empty energy grid: emin = {lo}, emax = {hi}, npts = {npts}")
    spacing = (hi - lo) / (npts - 1)
    if spacing > width:   # peaks narrower than the grid fall between points: a DOS of near zeros, not the answer
        raise ValueError(f"smearing width {width:g} eV is below the energy-grid spacing {spacing:.3g} eV "
                         f"({npts} points over {lo:.3f}..{hi:.3f} eV): use width >= {spacing:.3g} eV, "
                         f"npts >= {int(np.ceil((hi - lo) / width)) + 1} or a narrower emin/emax window")
    return np.linspace(lo, hi, npts)


def _groups_matrix(tb: "TightBinding", projected: str) -> tuple[list[str], np.ndarray, list[dict[str, str]]]:
    """(names, one-hot (norb, ngroups), ASE info dicts) for a projection."""
    names, index = tb.orbitals.groups(projected)
    G_ig = np.zeros((tb.norb, len(names)))
    G_ig[np.arange(tb.norb), index] = 1.0
    key = {"atom": "index", "element": "symbol", "orbital": "orbital", "layer": "layer"}[projected]
    infos = []
    for g, name in enumerate(names):
        info = {"label": name, key: name}
        if projected == "atom":
            first = int(np.flatnonzero(index == g)[0])
            info.update(index=str(tb.orbitals.atom_index[first]), symbol=str(tb.orbitals.element[first]))
        infos.append(info)
    return names, G_ig, infos


def exact_spectrum(
    tb: "TightBinding", k_k3: np.ndarray, G_ig: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray | None]:
    """Eigenvalues (nk, norb) and, with a group matrix, weights (nk, norb, ngroups) = Σ_{i∈g} |U_in(k)|²."""
    from . import solvers

    e_kn, W_kng = [], []
    chunks = tb.k_chunks(k_k3)
    if chunks:  # fail early, naming the memory, rather than inside LAPACK
        solvers.check_dense_memory(tb.norb, len(chunks[0]), vectors=G_ig is not None, what="exact DOS")
    for chunk in progress(chunks, len(chunks), "DOS (dense, k-point chunks)"):
        H_kij = tb.hamiltonian(chunk)
        if G_ig is None:
            e_kn.append(solvers.eigvalsh_dense(H_kij))
            continue
        e, U_kin = np.linalg.eigh(H_kij)
        e_kn.append(e)
        W_kng.append(np.einsum("kin,ig->kng", np.abs(U_kin) ** 2, G_ig))
    e_kn = np.concatenate(e_kn)
    return e_kn, (np.concatenate(W_kng) if G_ig is not None else None)


def dos(
    tb: "TightBinding",
    kpts: Any = None,
    width: float = DOS_WIDTH,
    npts: int = DOS_NPTS,
    projected: str | None = None,
    method: str = "auto",
    smearing: str = "gauss",
    emin: float | None = None,
    emax: float | None = None,
    symmetry: bool = True,
) -> "GridDOSData | GridDOSCollection":
    """Smeared DOS (states/eV/cell, one spin; see the module docstring) on a k-mesh.

    ``kpts``: mesh size (n1, n2, n3) (Γ-centred, symmetry-reduced), explicit (nk, 3), or None
    (``kmesh.dos_mesh`` for this ``width``).
    Defaults (``width`` eV, ``npts``) come from ``kmesh``.
    ``projected``: None → ``GridDOSData``; "atom", "element", "orbital" or "layer" → ``GridDOSCollection`` (a
    ``DOSCollection``) of ``GridDOSData`` whose ``info`` names the group. Projected DOS use only the exact symmetry
    k ↔ -k (projections onto atoms are not invariant under the other operations).
    """
    from ase.spectrum.doscollection import GridDOSCollection
    from ase.spectrum.dosdata import GridDOSData

    if method not in ("auto", "exact", "kpm"):
        raise ValueError(f"unknown DOS method {method!r}; use 'auto', 'exact' or 'kpm'")
    if kpts is None:
        kpts = dos_mesh(tb, width)
    k_k3, w_k = kpoint_mesh(tb, kpts, symmetry=symmetry and projected is None)
    if method == "kpm" or (method == "auto" and tb.norb > kmesh.EXACT_MAX_ORBITALS):
        return _dos_kpm(tb, k_k3, w_k, width, npts, projected, smearing, emin, emax)
    G_ig = None
    if projected is not None:
        names, G_ig, infos = _groups_matrix(tb, projected)
    e_kn, W_kng = exact_spectrum(tb, k_k3, G_ig)
    grid_e = energy_grid(e_kn.min(), e_kn.max(), width, npts, emin, emax)
    wk_N = np.repeat(w_k, tb.norb)
    if W_kng is None:
        d_E = smear(e_kn.ravel(), wk_N[:, None], grid_e, width, smearing)[0]
        return GridDOSData(grid_e, d_E, info={"label": "total"})
    d_gE = smear(e_kn.ravel(), wk_N[:, None] * W_kng.reshape(-1, len(names)), grid_e, width, smearing)
    return GridDOSCollection([GridDOSData(grid_e, d_E, info=info) for d_E, info in zip(d_gE, infos)])


def kpm_moments_kmesh(
    tb: "TightBinding", k_k3: np.ndarray, w_k: np.ndarray, num_moments: int | None = None, width: float | None = None,
    weights: "np.ndarray | list[np.ndarray | None] | None" = None, num_random: int = 16, seed: int = 0,
    kernel_factor: float = np.pi, bounds: tuple[float, float] | None = None,
) -> list:
    """k-weighted KPM moments of ``tb`` on the k-points ``k_k3`` (nk, 3) with weights ``w_k`` (nk,), summing to 1.

    Two passes over the k-points, one sparse H(k) alive at a time: (1) spectral bounds of every H(k), their union
    is the common interval (``bounds`` eV skips this); (2) Chebyshev moments of each H(k) on that interval, summed
    with the k-weights. Since the DOS is linear in the moments, one reconstruction of the summed moments equals the
    k-weighted sum of per-k DOS. ``weights``: None (total DOS), a (norb,) array ≥ 0 (projected trace) or a list of
    such (None entries = total); one :class:`kpm.KPMMoments` per entry is returned. ``num_moments`` defaults to
    the count whose broadening (Jackson: π a / N; pass ``kernel_factor`` 4 for the Lorentz kernel) is ``width``.
    Independent random vectors per k-point and group (seed ``seed`` + index).
    """
    from . import kpm

    k_k3 = np.asarray(k_k3, dtype=float).reshape(-1, 3)
    w_k = np.asarray(w_k, dtype=float).ravel()
    if len(w_k) != len(k_k3) or len(k_k3) == 0:
        raise ValueError(f"need one weight per k-point, got {len(w_k)} weights for {len(k_k3)} k-points")
    groups = weights if isinstance(weights, list) else [weights]
    if bounds is None:
        b_k2 = np.array([kpm.spectral_bounds(tb.hamiltonian_sparse(k_3, allow_real=True)) for k_3 in k_k3])
        lo, hi = float(b_k2[:, 0].min()), float(b_k2[:, 1].max())
    else:
        lo, hi = map(float, bounds)
    if num_moments is None:
        if width is None:
            raise ValueError("give num_moments or width")
        if not np.isfinite(width) or width <= 0:
            raise ValueError(f"KPM broadening width must be a positive energy (eV), got {width}")
        num_moments = max(16, int(np.ceil(kernel_factor * 0.5 * (hi - lo) / 0.99 / width)))
        if num_moments > KPM_MAX_MOMENTS:
            raise ValueError(f"KPM width {width:g} eV over a {hi - lo:.3g} eV spectrum needs {num_moments} "
                             f"Chebyshev moments (> {KPM_MAX_MOMENTS}); use a larger width")
    mu_g = np.zeros((len(groups), num_moments))
    center = half = None
    for ik, (w, k_3) in enumerate(progress(zip(w_k, k_k3), len(k_k3), "DOS (KPM moments)")):
        H = tb.hamiltonian_sparse(k_3, allow_real=True)
        for g, wts in enumerate(groups):
            m = kpm.kpm_moments(H, num_moments, num_random=num_random, bounds=(lo, hi), weights=wts,
                                seed=seed + ik * len(groups) + g)
            mu_g[g] += w * m.mu
            center, half = m.center, m.half_width
        del H
    return [kpm.KPMMoments(mu, center, half) for mu in mu_g]


def _dos_kpm(
    tb: "TightBinding", k_k3: np.ndarray, w_k: np.ndarray, width: float, npts: int, projected: str | None,
    smearing: str, emin: float | None, emax: float | None,
) -> "GridDOSData | GridDOSCollection":
    """KPM route: stochastic Chebyshev moments of sparse H(k) per k on common spectral bounds, summed with the
    k-weights and reconstructed once with a broadening of ``width`` (:func:`kpm_moments_kmesh`).

    Jackson kernel (≈ Gaussian of width π a / N for spectral half width a and N moments) for "gauss", the KPM
    Lorentz kernel (λ = 4, HWHM ≈ 4 a / N) for "lorentz"; N is chosen so the broadening equals ``width``.
    Projections use one projected trace (``weights=``) per group, so they sum to the total only within the
    stochastic error (exactly for groups of ≤ 16 orbitals); the collection's ``sum_all()`` is then the total.
    """
    from ase.spectrum.doscollection import GridDOSCollection
    from ase.spectrum.dosdata import GridDOSData

    from . import kpm

    if smearing not in ("gauss", "lorentz"):
        raise ValueError(f"unknown smearing {smearing!r}; use 'gauss' or 'lorentz'")
    infos: list[dict[str, str]] = [{"label": "total"}]
    weights: list[np.ndarray | None] = [None]
    if projected is not None:
        _, G_ig, infos = _groups_matrix(tb, projected)
        if G_ig.shape[1] > KPM_MAX_GROUPS:
            raise ValueError(f"KPM projected DOS by {projected!r} needs {G_ig.shape[1]} traces (> {KPM_MAX_GROUPS});"
                             " project on fewer groups (element, orbital, layer)")
        weights = list(G_ig.T)
    kernel, factor = ("jackson", np.pi) if smearing == "gauss" else ("lorentz", 4.0)
    moments = kpm_moments_kmesh(tb, k_k3, w_k, width=width, weights=weights, kernel_factor=factor)
    lo = moments[0].center - 0.99 * moments[0].half_width
    hi = moments[0].center + 0.99 * moments[0].half_width
    grid_e = energy_grid(lo, hi, width, npts, emin, emax)
    d_gE = [kpm.kpm_reconstruct(m, grid_e, kernel=kernel) for m in moments]
    if projected is None:
        return GridDOSData(grid_e, d_gE[0], info={"label": "total", "method": "kpm"})
    return GridDOSCollection([GridDOSData(grid_e, d_E, info={**info, "method": "kpm"})
                              for d_E, info in zip(d_gE, infos)])
