"""ASE calculator: forces for relaxation/MD and the Wannier tight-binding Hamiltonian of the same geometry.

Example::

    from ase_wannierml import WannierMLCalculator, twisted_bilayer
    atoms = twisted_bilayer("graphene", m=6, r=1)
    atoms.calc = WannierMLCalculator("graphene-bilayer")
    e = atoms.get_potential_energy()                 # eV
    f = atoms.get_forces()                           # (n_atoms, 3) eV/Å
    tb = atoms.calc.get_hamiltonian()                # TightBinding, eV
    atoms.calc.get_band_structure(npoints=100).plot(emin=-1, emax=1)

Units are ASE's: energies in eV, forces in eV/Å, stress in eV/Å³ (Voigt order xx, yy, zz, yz, xz, xy).
"""
from __future__ import annotations

import weakref
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from ase import Atoms
from ase.calculators.calculator import Calculator, PropertyNotImplementedError, all_changes, kpts2ndarray
from ase.spectrum.band_structure import BandStructure

from ase_wannierml.model import WannierMLModel, atoms_to_graph, load_model
from ase_wannierml.model import keys as K
from ase_wannierml.tb.tightbinding import TightBinding

# One table from model outputs to ASE results: (ase_key, model_key, unit_factor). The model works in eV and Å.
RESULTS_MAP: tuple[tuple[str, str, float], ...] = (
    ("energy", "energy", 1.0),
    ("free_energy", "energy", 1.0),
    ("energies", "node_energy", 1.0),
    ("forces", "forces", 1.0),
    ("stress", "stress", 1.0),
)

DEFAULT_DOS_MESH_DENSITY = 30.0  # k-points per Å⁻¹ along each periodic direction for the default mesh


def _voigt(stress_33: np.ndarray) -> np.ndarray:
    """(3, 3) stress tensor → ASE Voigt-6 order (xx, yy, zz, yz, xz, xy)."""
    s = stress_33
    return np.array([s[0, 0], s[1, 1], s[2, 2], s[1, 2], s[0, 2], s[0, 1]])


def _has_volume(atoms: Atoms) -> bool:
    return bool(atoms.cell.rank == 3 and abs(atoms.cell.volume) > 1e-9)


def default_kmesh(atoms: Atoms, density: float = DEFAULT_DOS_MESH_DENSITY) -> tuple[int, int, int]:
    """A Γ-containing k-mesh with about ``density`` points per Å⁻¹ along periodic directions (1 elsewhere)."""
    if not atoms.pbc.any():
        return (1, 1, 1)
    recip = np.linalg.norm(atoms.cell.reciprocal(), axis=1) * 2.0 * np.pi
    return tuple(int(max(1, np.ceil(density * b / (2 * np.pi)))) if p else 1 for b, p in zip(recip, atoms.pbc))


class WannierMLCalculator(Calculator):
    """Energy, forces, stress and the Wannier tight-binding Hamiltonian from one equivariant ML model.

    Args:
        model: a ``WannierMLModel``, a path to a model file, or a pretrained name (``"graphene-bilayer"``,
            ``"mos2-bilayer"``).
        device: torch device for inference (``"cpu"``).
        dtype: ``torch.float32`` or ``torch.float64``; default: the model's own dtype.
        kpts: k-points for the ASE eigenvalue API (``get_eigenvalues`` …): a Monkhorst–Pack size like
            ``(12, 12, 1)``, an array of fractional k-points, a ``BandPath`` or ``{"path": "GKMG", "npoints": 100}``.
            Default: a Γ-centred mesh from the cell.
        hamiltonian_threshold: drop predicted hoppings |H_ij(R)| below this (eV) from ``get_hamiltonian`` and
            everything built on it (bands, DOS); 0 (default) keeps all. Each eigenvalue moves by at most
            ``get_hamiltonian().pruning_bound`` eV (see ``TightBinding.pruned``); measured effect for the
            ``graphene-bilayer`` model at 1.05°: README, "Magic angle (1.05°)".
    """

    implemented_properties = ["energy", "free_energy", "energies", "forces", "stress"]
    default_parameters: dict[str, Any] = {"kpts": None}
    nolabel = True

    def __init__(
        self,
        model: WannierMLModel | str | Path = "graphene-bilayer",
        device: str | torch.device = "cpu",
        dtype: torch.dtype | None = None,
        kpts: Any = None,
        hamiltonian_threshold: float = 0.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(kpts=kpts, **kwargs)
        if hamiltonian_threshold < 0:
            raise ValueError(f"hamiltonian_threshold must be >= 0 eV, got {hamiltonian_threshold}")
        self.hamiltonian_threshold = float(hamiltonian_threshold)
        if not isinstance(model, torch.nn.Module):
            model = load_model(model)
        self.device = torch.device(device)
        self.dtype = dtype if dtype is not None else next(model.parameters()).dtype
        self.model = model.to(device=self.device, dtype=self.dtype).eval()
        self._tb: TightBinding | None = None
        from .dispersion import dispersion_from_config

        self._dispersion = dispersion_from_config(self.model.config)
        self._attached: weakref.ReferenceType[Atoms] | None = None
        self._eigen_cache: tuple[np.ndarray, np.ndarray] | None = None  # (k_kc, e_kn)

    @property
    def dispersion(self):
        """The analytic dispersion term added to the learned energy (``dispersion.Dispersion``), or None."""
        return self._dispersion

    # ------------------------------------------------------------------ ASE core
    def reset(self) -> None:
        """Forget results, the Hamiltonian and eigenvalues (called by ASE when the geometry changes)."""
        super().reset()
        self._tb = None
        self._eigen_cache = None

    def calculate(
        self,
        atoms: Atoms | None = None,
        properties: Sequence[str] = ("energy",),
        system_changes: Sequence[str] = all_changes,
    ) -> None:
        """Fill ``self.results`` with energy (eV), per-atom energies, forces (eV/Å) and, for 3D cells, stress."""
        super().calculate(atoms, properties, system_changes)
        if system_changes:
            self._tb, self._eigen_cache = None, None
        want_stress = "stress" in properties
        if want_stress and not _has_volume(self.atoms):
            raise PropertyNotImplementedError("stress needs a cell with non-zero volume (3 lattice vectors)")
        graph = atoms_to_graph(self.atoms, self.model.config, dtype=self.dtype, device=self.device,
                               with_hamiltonian=False)
        out = self.model(graph, compute_forces=True, compute_stress=want_stress or _has_volume(self.atoms))
        for ase_key, model_key, factor in RESULTS_MAP:
            if model_key not in out or out[model_key] is None:
                continue
            value = out[model_key].detach().cpu().double().numpy() * factor
            if ase_key in ("energy", "free_energy"):
                value = float(value.reshape(-1)[0])
            elif ase_key == "stress":
                value = _voigt(value.reshape(3, 3))
            self.results[ase_key] = value
        learned = out.get(K.NODE_ENERGY_LEARNED)
        if learned is not None:  # per-atom energies = e0 (float64) + learned part: no float32 round-off of e0
            species = graph[K.SPECIES].cpu().numpy()
            e0 = np.array([float(self.model.config.e0s.get(s, 0.0)) for s in self.model.config.species])
            self.results["energies"] = e0[species] + learned.detach().cpu().double().numpy()
        if "energies" in self.results:  # float64 sum of per-atom energies: no float32 round-off on 10^4 atoms
            self.results["energy"] = self.results["free_energy"] = float(self.results["energies"].sum())
        if self._dispersion is not None:  # analytic long-range term of the DFT protocol (model learned the rest)
            disp = self._dispersion.compute(self.atoms)
            self.results["energy"] += disp["energy"]
            self.results["free_energy"] = self.results["energy"]
            self.results["forces"] = self.results["forces"] + disp["forces"]
            if "stress" in self.results and disp["stress"] is not None:
                self.results["stress"] = self.results["stress"] + disp["stress"]
            self.results.pop("energies", None)           # per-atom ML energies no longer sum to the total

    def set_atoms(self, atoms: Atoms) -> None:
        """Called by ASE on ``atoms.calc = calc``: remember (weakly) which Atoms the calculator belongs to, so that
        ``calc.get_hamiltonian()`` without arguments follows that object's current geometry."""
        self._attached = weakref.ref(atoms)

    # ------------------------------------------------------------------ electronic structure
    def _update_geometry(self, atoms: Atoms | None) -> Atoms:
        if atoms is None and self._attached is not None:
            atoms = self._attached()
        if atoms is not None and (self.atoms is None or self.check_state(atoms)):
            self.reset()
            self.atoms = atoms.copy()
        if self.atoms is None:
            raise ValueError("no atoms: pass atoms= or attach the calculator with atoms.calc = calc")
        return self.atoms

    def get_hamiltonian(self, atoms: Atoms | None = None) -> TightBinding:
        """The predicted Wannier tight-binding Hamiltonian (eV) of the current geometry, cached per geometry
        (pruned by ``hamiltonian_threshold`` if set)."""
        atoms = self._update_geometry(atoms)
        if self._tb is None:
            self._tb = self.model.predict_tightbinding(atoms).pruned(self.hamiltonian_threshold)
        return self._tb

    def get_hamiltonian_derivative(self, displacements: Any, atoms: Atoms | None = None
                                   ) -> TightBinding | list[TightBinding]:
        """dH(R)/dλ (eV/Å) for positions r + λ·``displacements``, by autograd through the model (not cached).

        ``displacements``: (n_atoms, 3) Å per unit λ (a phonon pattern, one atom along one axis, …) → one
        ``TightBinding``; (n_patterns, n_atoms, 3) → a list (one shared forward pass). Same (R, rows, cols) support
        as :meth:`get_hamiltonian`; ``tb.hamiltonian(k)`` gives dH(k)/dλ. Geometry changes through positions and
        backbone features are both included; no 3N-derivative object is formed (``model/derivative.py``).
        """
        from ase_wannierml.model.derivative import tightbinding_derivative

        atoms = self._update_geometry(atoms)
        return tightbinding_derivative(self.model, atoms, displacements, self.hamiltonian_threshold)

    def get_band_structure(
        self,
        atoms: Atoms | None = None,
        path: Any = None,
        npoints: int = 200,
        num: int | None = None,
        near: float | None = None,
    ) -> BandStructure:
        """Band structure along ``path`` (default: the cell's standard path), referenced to the Fermi level.

        ``num``/``near`` ask for only the ``num`` bands closest to ``near`` (eV, default E_F) by the sparse
        solver; by default all bands are computed (dense) for small cells and 16 bands near E_F otherwise.
        """
        tb = self.get_hamiltonian(atoms)
        return tb.band_structure(path=path, npoints=npoints, num=num, near=near)

    def get_dos(
        self,
        atoms: Atoms | None = None,
        kpts: Any = None,
        width: float = 0.02,
        npts: int = 2000,
        projected: str | None = None,
        method: str = "auto",
    ):
        """Density of states (states/eV per cell and spin; integrates to the orbital count) as ASE DOS data."""
        tb = self.get_hamiltonian(atoms)
        kpts = default_kmesh(self.atoms) if kpts is None else kpts
        return tb.dos(kpts=kpts, width=width, npts=npts, projected=projected, method=method)

    # ------------------------------------------------------------------ ASE eigenvalue API
    def _kpts(self) -> np.ndarray:
        kpts = self.parameters.get("kpts")
        if kpts is None:
            kpts = default_kmesh(self.atoms)
        return np.asarray(kpts2ndarray(kpts, self.atoms), dtype=float).reshape(-1, 3)

    def _eigenvalues(self) -> tuple[np.ndarray, np.ndarray]:
        self._update_geometry(None)
        if self._eigen_cache is None:
            k_kc = self._kpts()
            self._eigen_cache = (k_kc, self.get_hamiltonian().eigenvalues(k_kc))
        return self._eigen_cache

    def get_ibz_k_points(self) -> np.ndarray:
        """k-points (fractional) at which ``get_eigenvalues`` is evaluated (no symmetry reduction)."""
        return self._eigenvalues()[0]

    def get_k_point_weights(self) -> np.ndarray:
        k_kc = self.get_ibz_k_points()
        return np.full(len(k_kc), 1.0 / len(k_kc))

    def get_number_of_spins(self) -> int:
        return 1

    def get_eigenvalues(self, kpt: int = 0, spin: int = 0) -> np.ndarray:
        """Eigenvalues (eV, absolute like ``get_fermi_level``) at k-point index ``kpt``."""
        if spin != 0:
            raise IndexError("spin-degenerate model: only spin=0 exists")
        return self._eigenvalues()[1][kpt].copy()

    def get_fermi_level(self) -> float:
        """Fermi level (eV) of the predicted Hamiltonian from its electron count."""
        return float(self.get_hamiltonian().fermi_level())
