"""Kernel polynomial method (KPM) density of states for large sparse Hamiltonians (numpy/scipy only).

H (norb, norb, eV) is mapped to H̃ = (H − b)/a with spectrum inside (−1, 1); the Chebyshev moments

    μ_n = Tr[W T_n(H̃)] ≈ (1/R) Σ_r r† W^½ T_n(H̃) W^½ r

are estimated with R random-phase vectors r (|r_i| = 1; W = diag(weights), W = 1 for the total DOS), two moments
per sparse product (μ_2n = 2⟨α_n|α_n⟩ − μ_0, μ_2n+1 = 2⟨α_n+1|α_n⟩ − μ_1, α_n = T_n(H̃) r), random vectors
processed in blocks so memory is a few (norb, block) arrays besides H. The DOS is

    ρ(E) = [g_0 μ_0 + 2 Σ_n g_n μ_n T_n(x)] / (π a √(1 − x²)),   x = (E − b)/a,

with kernel damping g_n (Jackson by default: a near-Gaussian broadening of width ≈ π a / N eV for N moments).
∫ρ dE = μ_0 = Σ weights (= norb for the total DOS): states per eV per cell (per k-point).

References: Weiße, Wellein, Alvermann, Fehske, Rev. Mod. Phys. 78, 275 (2006).

Example:
    >>> import numpy as np, scipy.sparse as sp
    >>> from scipy.integrate import trapezoid
    >>> H = sp.diags([np.linspace(-1.0, 1.0, 2000)], [0], format="csr")   # flat DOS: 1000 states/eV
    >>> E = np.linspace(-1.2, 1.2, 2401)
    >>> dos = kpm_dos(H, E, num_moments=256, num_random=4, seed=0)
    >>> round(float(trapezoid(dos, E))), round(float(dos[1200]), -1)
    (2000, 1000.0)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

__all__ = ["KPMMoments", "jackson_kernel", "kpm_dos", "kpm_moments", "kpm_reconstruct", "spectral_bounds"]

_WORK_BYTES = 512 * 2**20  # memory budget of the Chebyshev work vectors (bytes)


@dataclass(frozen=True)
class KPMMoments:
    """Chebyshev moments ``mu`` (N,) of H̃ = (H − center)/half_width; ``center``, ``half_width`` in eV."""

    mu: np.ndarray
    center: float
    half_width: float

    @property
    def resolution(self) -> float:
        """Energy resolution (eV) of the Jackson kernel at the band centre, π a / N; at scaled energy x it is
        about (π a / N) √(1 − x²) (a near-Gaussian broadening)."""
        return float(np.pi * self.half_width / len(self.mu))


def jackson_kernel(num_moments: int) -> np.ndarray:
    """Jackson damping factors g_n, n = 0..N−1 (Weiße et al. 2006, eq. 71)."""
    N = int(num_moments)
    n = np.arange(N)
    q = np.pi / (N + 1)
    return ((N - n + 1) * np.cos(q * n) + np.sin(q * n) / np.tan(q)) / (N + 1)


def _kernel(kind: str, num_moments: int) -> np.ndarray:
    if kind == "jackson":
        return jackson_kernel(num_moments)
    if kind == "lorentz":  # λ = 4: Lorentzian broadening, for Green's-function-like quantities
        lam, n = 4.0, np.arange(num_moments)
        return np.sinh(lam * (1.0 - n / num_moments)) / np.sinh(lam)
    if kind == "dirichlet":
        return np.ones(num_moments)
    raise ValueError(f"unknown KPM kernel {kind!r}; use 'jackson', 'lorentz' or 'dirichlet'")


def spectral_bounds(H: sp.spmatrix, steps: int = 40, seed: int = 0) -> tuple[float, float]:
    """Bounds (eV) enclosing the spectrum of Hermitian ``H``: Lanczos extreme Ritz values widened by their
    residual bounds plus 1 % of the width, clipped to the Gershgorin interval (always valid)."""
    n = H.shape[0]
    absrow = np.asarray(abs(H).sum(axis=1)).ravel()
    diag = H.diagonal().real
    g_lo, g_hi = float(np.min(diag - (absrow - np.abs(diag)))), float(np.max(diag + (absrow - np.abs(diag))))
    if n <= 2 or steps < 2:
        return _widen(g_lo, g_hi)
    rng = np.random.default_rng(seed)
    v = rng.standard_normal(n) + (1j * rng.standard_normal(n) if np.iscomplexobj(H.data) else 0.0)
    v /= np.linalg.norm(v)
    v_prev, beta_prev = np.zeros_like(v), 0.0
    alphas, betas = [], []
    for _ in range(min(steps, n)):
        w = H @ v - beta_prev * v_prev
        alpha = float(np.vdot(v, w).real)
        w -= alpha * v
        beta = float(np.linalg.norm(w))
        alphas.append(alpha)
        betas.append(beta)
        if beta < 1e-12:
            break
        v_prev, v, beta_prev = v, w / beta, beta
    T = np.diag(alphas) + np.diag(betas[:-1], 1) + np.diag(betas[:-1], -1)
    theta, S = np.linalg.eigh(T)
    err = np.abs(betas[-1] * S[-1, :])  # each Ritz value is within err of an eigenvalue
    width = theta[-1] - theta[0]
    lo = max(theta[0] - err[0] - 0.01 * width, g_lo)
    hi = min(theta[-1] + err[-1] + 0.01 * width, g_hi)
    return _widen(lo, hi)


def _widen(lo: float, hi: float) -> tuple[float, float]:
    """Keep a non-degenerate interval (a single eigenvalue would give lo = hi)."""
    pad = max(1e-3, 1e-6 * max(abs(lo), abs(hi))) if hi - lo < 1e-3 else 0.0
    return float(lo - pad), float(hi + pad)


def _random_block(rng: np.random.Generator, n: int, size: int, cplx: bool) -> np.ndarray:
    """(n, size) random vectors with |r_i| = 1: random phases (complex) or random signs (real)."""
    if cplx:
        return np.exp(2j * np.pi * rng.random((n, size)))
    return rng.choice(np.array([-1.0, 1.0]), size=(n, size))


def kpm_moments(H: sp.spmatrix, num_moments: int, num_random: int = 16, seed: int | None = 0,
                bounds: tuple[float, float] | None = None, weights: np.ndarray | None = None,
                block: int | None = None) -> KPMMoments:
    """Stochastic Chebyshev moments of Hermitian sparse ``H`` (norb, norb), eV.

    ``weights`` (norb,) ≥ 0 projects the trace (μ_0 = Σ weights): e.g. an indicator of one layer's orbitals for a
    layer-projected DOS. If at most ``num_random`` orbitals have non-zero weight, the trace over them is exact
    (unit vectors instead of random ones). ``bounds`` (eV) must enclose the spectrum (default
    :func:`spectral_bounds`). ``block`` random vectors are propagated together (default: as many as fit in 512 MB).
    """
    H = sp.csr_matrix(H)
    n = H.shape[0]
    if H.shape != (n, n) or n == 0:
        raise ValueError(f"H must be a non-empty square sparse matrix, got shape {H.shape}")
    if num_moments < 2 or num_random < 1:
        raise ValueError(f"need num_moments >= 2 and num_random >= 1, got {num_moments}, {num_random}")
    lo, hi = spectral_bounds(H, seed=0 if seed is None else seed) if bounds is None else map(float, bounds)
    if not hi > lo:
        raise ValueError(f"spectral bounds must satisfy lo < hi, got ({lo}, {hi}) eV")
    center, half = 0.5 * (hi + lo), 0.5 * (hi - lo) / 0.99  # 1 % safety margin inside (−1, 1)
    cplx = np.iscomplexobj(H.data)
    Hs = sp.csr_matrix((H.data / half, H.indices, H.indptr), shape=H.shape)  # shares the index arrays
    shift = center / half
    rng = np.random.default_rng(seed)
    support, sqrt_w = _projection(weights, n)
    exact = support is not None and len(support) <= num_random  # few weighted orbitals: exact trace
    count = len(support) if exact else num_random
    itemsize = 16 if cplx else 8
    block = int(block or max(1, min(count, _WORK_BYTES // (4 * n * itemsize))))
    mu = np.zeros(num_moments)
    for start in range(0, count, block):
        size = min(block, count - start)
        if exact:
            r = np.zeros((n, size))
            idx = support[start:start + size]
            r[idx, np.arange(size)] = sqrt_w[idx]
        else:
            r = _random_block(rng, n, size, cplx)
            if sqrt_w is not None:
                r *= sqrt_w[:, None]
        mu += _chebyshev_moments(Hs, shift, r, num_moments)
    if np.abs(mu).max() > mu[0] * (1.0 + 1e-6):  # |T_n| ≤ 1 on (−1, 1): growth means the spectrum sticks out
        raise ValueError(f"spectral bounds ({lo:.6g}, {hi:.6g}) eV do not enclose the spectrum (Chebyshev moments "
                         "grow); pass wider bounds=")
    return KPMMoments(mu if exact else mu / num_random, center, half)


def _projection(weights: np.ndarray | None, n: int) -> tuple[np.ndarray | None, np.ndarray | None]:
    """(orbitals with non-zero weight, sqrt(weights)) for a projected trace; (None, None) for the full trace."""
    if weights is None:
        return None, None
    w = np.asarray(weights, dtype=float)
    if w.shape != (n,) or np.any(w < 0) or not np.all(np.isfinite(w)):
        raise ValueError(f"weights must be (norb,) = ({n},) finite and non-negative, got shape {w.shape}")
    support = np.flatnonzero(w)
    if len(support) == 0:
        raise ValueError("weights are all zero: nothing to project on")
    return support, np.sqrt(w)


def _chebyshev_moments(Hs: sp.csr_matrix, shift: float, r: np.ndarray, num_moments: int) -> np.ndarray:
    """Σ over the columns of r of r† T_n(Hs − shift) r, n < num_moments, with two moments per product."""
    N = num_moments
    mu = np.zeros(N)
    a0 = r.astype(np.result_type(r, Hs.dtype))
    a1 = Hs @ a0 - shift * a0
    mu[0] = np.vdot(a0, a0).real
    mu[1] = np.vdot(a0, a1).real
    for m in range(1, (N + 1) // 2):  # a0 = α_{m-1}, a1 = α_m
        if 2 * m < N:
            mu[2 * m] = 2.0 * np.vdot(a1, a1).real - mu[0]
        if 2 * m + 1 < N:
            a2 = Hs @ a1
            a2 -= shift * a1
            a2 *= 2.0
            a2 -= a0  # α_{m+1} = 2 H̃ α_m − α_{m−1}
            mu[2 * m + 1] = 2.0 * np.vdot(a2, a1).real - mu[1]
            a0, a1 = a1, a2
    return mu


def kpm_reconstruct(moments: KPMMoments, energies: np.ndarray, kernel: str = "jackson") -> np.ndarray:
    """DOS (states/eV), shape (npts,), at ``energies`` (npts,) eV from Chebyshev ``moments``; 0 outside bounds."""
    E = np.asarray(energies, dtype=float)
    if E.ndim != 1:
        raise ValueError(f"energies must be 1-D (npts,) eV, got shape {E.shape}")
    g = _kernel(kernel, len(moments.mu))
    x = (E - moments.center) / moments.half_width
    inside = np.abs(x) < 1.0
    dos = np.zeros_like(E)
    xi = x[inside]
    c = g * moments.mu
    c[1:] *= 2.0
    # Σ c_n T_n(x) by Clenshaw's recurrence (stable, O(N·npts) time, O(npts) memory)
    b1, b2 = np.zeros_like(xi), np.zeros_like(xi)
    for cn in c[:0:-1]:
        b1, b2 = cn + 2.0 * xi * b1 - b2, b1
    series = c[0] + xi * b1 - b2
    dos[inside] = series / (np.pi * moments.half_width * np.sqrt(1.0 - xi**2))
    return dos


def kpm_dos(H: sp.spmatrix, energies: np.ndarray, num_moments: int = 512, num_random: int = 16,
            seed: int | None = 0, kernel: str = "jackson", bounds: tuple[float, float] | None = None,
            weights: np.ndarray | None = None) -> np.ndarray:
    """KPM density of states of Hermitian sparse ``H`` (norb, norb) at ``energies`` (npts,) eV → (npts,) states/eV.

    Integrates to norb (to Σ ``weights`` for a projected DOS) when ``energies`` span the spectrum. Broadening
    ≈ π (E_max − E_min) / (2 N) eV for N = ``num_moments`` (Jackson); stochastic error ∝ 1/√(num_random · norb).
    """
    _kernel(kernel, 2)  # fail early on an unknown kernel
    moments = kpm_moments(H, num_moments, num_random=num_random, seed=seed, bounds=bounds, weights=weights)
    return kpm_reconstruct(moments, energies, kernel=kernel)
