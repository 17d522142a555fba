"""ase_wannierml: one E(3)-equivariant ML model for forces *and* a Wannier tight-binding Hamiltonian.

Public API (units: eV, Å, eV/Å, eV/Å³; k-points in fractional reciprocal coordinates)::

    from ase_wannierml import WannierMLCalculator, load_model, available_models, TightBinding, twisted_bilayer, relax
    atoms.calc = WannierMLCalculator(load_model("graphene-bilayer"))
    atoms.get_forces(); atoms.calc.get_band_structure().plot()
    relax(atoms, fmax=0.01, cell=True)      # preconditioned L-BFGS, in-plane cell for 2D cells

The tight-binding engine (``TightBinding``, ``twisted_bilayer``) needs only numpy/scipy; the model and the
calculator import torch and e3nn on first use.
"""
from __future__ import annotations

from importlib import import_module
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "TightBinding": "ase_wannierml.tb.tightbinding",
    "OrbitalTable": "ase_wannierml.tb.tightbinding",
    "twisted_bilayer": "ase_wannierml.structures",
    "bilayer": "ase_wannierml.structures",
    "build_model": "ase_wannierml.model",
    "load_model": "ase_wannierml.model",
    "available_models": "ase_wannierml.model.io",
    "WannierMLCalculator": "ase_wannierml.calculator",
    "relax": "ase_wannierml.relaxation",
}

__all__ = sorted(_LAZY) + ["__version__"]


def __getattr__(name: str) -> Any:
    """Import public names on first access, so ``import ase_wannierml`` does not load torch."""
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'ase_wannierml' has no attribute {name!r}")
