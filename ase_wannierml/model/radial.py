"""Radial functions: Bessel basis, smooth polynomial cut-off envelope, smooth switching step (all in Å).

Example::

    >>> import torch
    >>> basis = BesselBasis(cutoff=5.0, num_basis=8)
    >>> basis(torch.tensor([1.0, 4.99])).shape
    torch.Size([2, 8])
"""
from __future__ import annotations

import math

import torch
from torch import nn


class BesselBasis(nn.Module):
    """``sqrt(2/rc) sin(n π d / rc) / d`` for n = 1..num_basis; d (n,) Å → (n, num_basis), 1/Å^(3/2)."""

    def __init__(self, cutoff: float, num_basis: int) -> None:
        super().__init__()
        if cutoff <= 0 or num_basis < 1:
            raise ValueError(f"BesselBasis needs cutoff > 0 and num_basis >= 1, got {cutoff}, {num_basis}")
        self.cutoff = float(cutoff)
        self.register_buffer("freq", torch.arange(1, num_basis + 1) * math.pi / self.cutoff)
        self.prefactor = math.sqrt(2.0 / self.cutoff)

    def forward(self, d: torch.Tensor) -> torch.Tensor:
        d = d.unsqueeze(-1)
        return self.prefactor * torch.sin(self.freq * d) / d


def polynomial_envelope(d: torch.Tensor, cutoff: float, p: int = 6) -> torch.Tensor:
    """Smooth cut-off u(d/rc) = 1 - (p+1)(p+2)/2 x^p + p(p+2) x^(p+1) - p(p+1)/2 x^(p+2) for x < 1, else 0.

    u(0) = 1; u, u' and u'' vanish at d = rc (so energies, forces and H are continuous across the cut-off).
    d: any shape, Å; returns the same shape.
    """
    x = d / cutoff
    u = 1.0 - (p + 1) * (p + 2) / 2 * x**p + p * (p + 2) * x ** (p + 1) - p * (p + 1) / 2 * x ** (p + 2)
    return torch.where(x < 1.0, u, torch.zeros_like(u))


def switch_off(d: torch.Tensor, start: float, stop: float) -> torch.Tensor:
    """Smooth step from 1 (d <= start) to 0 (d >= stop), C² (quintic smootherstep); d any shape, Å."""
    t = ((d - start) / (stop - start)).clamp(0.0, 1.0)
    return 1.0 - t**3 * (10.0 - 15.0 * t + 6.0 * t**2)
