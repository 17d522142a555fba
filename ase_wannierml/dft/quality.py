"""Quality checks of a Wannier Hamiltonian against DFT: band errors off the NSCF grid, centres, onsite energies."""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from ase import Atoms
from scipy.optimize import linear_sum_assignment

from ..tb.tightbinding import TightBinding

# k-points (crystal coordinates of the frame's reciprocal cell) for the band check: Γ, K, the three M points,
# points on Γ-K and K-M and three generic points near K; none is on an 8x8 / 4x4 / 3x3 grid except Γ and M.
CHECK_KPTS = np.array([
    [0.0, 0.0, 0.0], [1 / 6, 1 / 6, 0.0], [1 / 3, 1 / 3, 0.0], [5 / 12, 1 / 6, 0.0], [0.5, 0.0, 0.0],
    [0.0, 0.5, 0.0], [0.5, 0.5, 0.0], [0.30, 0.37, 0.0], [0.37, 0.31, 0.0], [0.21, 0.43, 0.0],
])


def on_mesh(kpts: np.ndarray, mesh: tuple[int, ...] | list[int], tol: float = 1e-6) -> np.ndarray:
    """(nk,) bool: fractional k-point lies on the Γ-centred Monkhorst–Pack ``mesh`` (n1, n2, n3), where a Wannier
    model reproduces the NSCF eigenvalues by construction (its band error there is zero and says nothing)."""
    m = np.asarray(mesh)
    if m.shape != (3,) or not np.issubdtype(m.dtype, np.integer) or np.any(m < 1):
        raise ValueError(f"mesh must be three positive integers (n1, n2, n3), got {list(np.ravel(mesh))}")
    k = np.asarray(kpts, float)
    if k.ndim != 2 or k.shape[1] != 3 or not np.all(np.isfinite(k)):
        raise ValueError(f"k-points must be a finite (nk, 3) array of fractional coordinates, got shape {k.shape}")
    x = k * m[None, :]
    return np.all(np.abs(x - np.round(x)) < tol, axis=1)


@dataclass(frozen=True)
class QualityCriteria:
    """Rejection thresholds (eV, Å)."""

    band_max_error: float = 0.15        # eV, max |E_W - E_DFT| for Wannier bands within E_F ± window
    band_max_error_1ev: float = 0.08    # eV, same within E_F ± 1 eV
    centre_max_distance: float = 0.5    # Å, Wannier centre to nearest atom (minimum image, 3D)
    onsite_max_spread: float = 1.0      # eV, max - min of onsite energies of the same species/orbital
    hermiticity_tol: float = 1e-4       # eV

    def to_dict(self) -> dict:
        return asdict(self)


def band_errors(e_dft_kn: np.ndarray, e_wan_kn: np.ndarray, e_fermi: float, window: float) -> dict:
    """Match Wannier eigenvalues inside E_F ± ``window`` one-to-one to DFT eigenvalues at the same k (optimal
    assignment on |ΔE|); DFT states of other character (e.g. σ) may stay unmatched.  Errors in meV."""
    err_all, err_1 = [], []
    for e_d, e_w in zip(e_dft_kn, e_wan_kn):
        sel = e_w[(e_w > e_fermi - window) & (e_w < e_fermi + window)]
        if sel.size == 0:
            continue
        cost = np.abs(sel[:, None] - e_d[None, :])
        r, c = linear_sum_assignment(cost)
        d = cost[r, c]
        err_all.extend(d)
        err_1.extend(d[np.abs(sel[r] - e_fermi) < 1.0])
    err_all, err_1 = np.array(err_all), np.array(err_1)
    return {
        "band_window_eV": window,
        "band_n_compared": int(err_all.size),
        "band_max_meV": float(err_all.max() * 1e3) if err_all.size else None,
        "band_rms_meV": float(np.sqrt(np.mean(err_all ** 2)) * 1e3) if err_all.size else None,
        "band_max_1eV_meV": float(err_1.max() * 1e3) if err_1.size else None,
        "band_rms_1eV_meV": float(np.sqrt(np.mean(err_1 ** 2)) * 1e3) if err_1.size else None,
    }


def centre_distances(centres: np.ndarray, atoms: Atoms) -> np.ndarray:
    """(nw,) Å: distance of each Wannier centre to its nearest atom, minimum image in all three directions
    (centres may come out shifted by a lattice vector, pitfall 4)."""
    cell = atoms.cell.array
    inv = np.linalg.inv(cell)
    d = centres[:, None, :] - atoms.positions[None, :, :]
    f = d @ inv
    f -= np.round(f)
    return np.linalg.norm(f @ cell, axis=-1).min(axis=1)


def hermiticity_error(tb: TightBinding) -> float:
    """max |H_mn(R) − conj(H_nm(−R))| over the stored elements (eV; a missing partner counts as zero). Read the
    file with ``check_hermitian=False`` to measure a Hamiltonian the reader would refuse."""
    return tb.check_hermitian(tol=np.inf)


def onsite_stats(tb: TightBinding, labels: list[str], e_fermi: float) -> dict:
    """Onsite energies H_mm(0) relative to E_F (eV) grouped by orbital label (e.g. ``C:pz``): min, max, spread."""
    onsite = np.zeros(tb.norb)
    home = np.all(tb.R == 0, axis=1) & (tb.rows == tb.cols)
    onsite[tb.rows[home]] = np.real(tb.values[home])
    onsite -= e_fermi
    out = {}
    for lab in sorted(set(labels)):
        v = onsite[[i for i, x in enumerate(labels) if x == lab]]
        out[lab] = {"min": float(v.min()), "max": float(v.max()), "spread": float(v.max() - v.min())}
    return out


def wannier_metrics(tb: TightBinding, e_dft_kn: np.ndarray, e_fermi: float, window: float, atoms: Atoms,
                    labels: list[str], mesh: tuple[int, ...] | list[int] | None = None) -> dict:
    """Quality metrics of a Wannier Hamiltonian (as read by ``TightBinding.from_wannier90``, Wigner–Seitz shifts
    applied) against the DFT eigenvalues ``e_dft_kn`` (nk, nbands) eV at :data:`CHECK_KPTS`: band errors (meV),
    centre distances (Å), Hermiticity and imaginary parts (eV), onsite energies relative to E_F (eV).

    With the Wannier k-``mesh`` given, the errors within E_F ± 1 eV are also reported over the check k-points
    *off* that mesh only (``band_max_1eV_offmesh_meV``, ``band_rms_1eV_offmesh_meV``, ``n_check_k_off_mesh``):
    the interpolation error users see between mesh points (the all-k figures are diluted by mesh points, where the
    error is zero by construction). The quality gate (:func:`judge`) keeps using the all-k figures."""
    e_wan = tb.hermitize().eigenvalues(CHECK_KPTS)
    metrics = band_errors(e_dft_kn, e_wan, e_fermi, window)
    if mesh is not None:
        off = ~on_mesh(CHECK_KPTS, mesh)
        m_off = band_errors(np.asarray(e_dft_kn)[off], e_wan[off], e_fermi, window) if off.any() else {}
        metrics.update({"band_max_1eV_offmesh_meV": m_off.get("band_max_1eV_meV"),
                        "band_rms_1eV_offmesh_meV": m_off.get("band_rms_1eV_meV"),
                        "n_check_k_off_mesh": int(off.sum())})
    dist = centre_distances(tb.orbitals.centres, atoms)
    metrics.update({
        "centre_max_distance_A": float(dist.max()),
        "centre_mean_distance_A": float(dist.mean()),
        "hermiticity_max_eV": hermiticity_error(tb),
        "max_abs_imag_H_eV": float(np.abs(np.imag(tb.values)).max(initial=0.0)),
        "onsite_rel_EF_eV": onsite_stats(tb, labels, e_fermi),
        "n_R": int(len(tb.R_r)),
        "ws_shifts": getattr(tb, "ws_source", "n/a"),
    })
    return metrics


def judge(metrics: dict, criteria: QualityCriteria) -> tuple[str, str]:
    """("ok" | "rejected", reason) from the metrics dict built by the workflow."""
    reasons = []
    if metrics.get("band_max_meV") is None:
        reasons.append("no Wannier bands in the check window")
    else:
        if metrics["band_max_meV"] > criteria.band_max_error * 1e3:
            reasons.append(f"band error {metrics['band_max_meV']:.0f} meV > {criteria.band_max_error * 1e3:.0f} meV")
        if (metrics.get("band_max_1eV_meV") or 0.0) > criteria.band_max_error_1ev * 1e3:
            reasons.append(f"band error within E_F±1 eV {metrics['band_max_1eV_meV']:.0f} meV > "
                           f"{criteria.band_max_error_1ev * 1e3:.0f} meV")
    if metrics["centre_max_distance_A"] > criteria.centre_max_distance:
        reasons.append(f"Wannier centre {metrics['centre_max_distance_A']:.2f} Å from nearest atom")
    for lab, st in metrics["onsite_rel_EF_eV"].items():
        if st["spread"] > criteria.onsite_max_spread:
            reasons.append(f"onsite {lab} spread {st['spread']:.2f} eV")
    if metrics["hermiticity_max_eV"] > criteria.hermiticity_tol:
        reasons.append(f"H(R) not Hermitian ({metrics['hermiticity_max_eV']:.1e} eV)")
    return ("rejected", "; ".join(reasons)) if reasons else ("ok", "")
