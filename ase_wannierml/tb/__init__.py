"""Tight-binding engine (numpy/scipy only): ``TightBinding``, Wannier90 I/O, solvers, DOS, Fermi level."""
from __future__ import annotations

from .tightbinding import OrbitalTable, TightBinding

__all__ = ["OrbitalTable", "TightBinding"]
