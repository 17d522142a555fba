"""ASE calculator: forces for relaxation/MD and the Wannier tight-binding Hamiltonian of the same geometry.

Example::

    from ase_wannierml import WannierMLCalculator, twisted_bilayer
    atoms = twisted_bilayer("graphene", m=6, r=1)
    atoms.calc = WannierMLCalculator("graphene-bilayer")
    e = atoms.get_potential_energy()                 # eV
    f = atoms.get_forces()                           # (n_atoms, 3) eV/Å
    tb = atoms.calc.get_hamiltonian()                # TightBinding, eV
    bs = atoms.calc.get_band_structure(npoints=100)  # reference: this structure's E_F (calc.get_fermi_level())
    plot_bands(bs, emin=-1, emax=1, filename="bands.png")   # ase_wannierml.plotting: E − E_F, E_F line

Units are ASE's: energies in eV, forces in eV/Å, stress in eV/Å³ (Voigt order xx, yy, zz, yz, xz, xy).
"""
from __future__ import annotations

import weakref
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from ase import Atoms
from ase.calculators.calculator import (Calculator, PropertyNotImplementedError, all_changes, compare_atoms,
                                         kpts2ndarray)
from ase.spectrum.band_structure import BandStructure

from ase_wannierml.model import WannierMLModel, atoms_to_graph, load_model
from ase_wannierml.model import keys as K
from ase_wannierml.model.graph import check_layer_labels
from ase_wannierml.model.committee import CommitteeModel, calibrated_forces_std, forces_std_per_atom
from ase_wannierml.tb.kmesh import DOS_NPTS, DOS_WIDTH, default_mesh
from ase_wannierml.threads import safe_default_threads
from ase_wannierml.tb.tightbinding import TightBinding

# The one table from model outputs to ASE results: (ase_key, model_key, unit_factor); the model works in eV and Å.
# ``implemented_properties`` is derived from it. ``calculate`` then only refines these same results: per-atom
# energies summed in float64 (e0 + learned part) and the analytic dispersion term added to each.
RESULTS_MAP: tuple[tuple[str, str, float], ...] = (
    ("energy", K.ENERGY, 1.0),
    ("free_energy", K.ENERGY, 1.0),
    ("energies", K.NODE_ENERGY, 1.0),
    ("forces", K.FORCES, 1.0),
    ("stress", K.STRESS, 1.0),
)
COMMITTEE_RESULTS = ("energy_std", "forces_std")   # committee models only: spread of the members (eV, eV/Å)



def _voigt(stress_33: np.ndarray) -> np.ndarray:
    """(3, 3) stress tensor → ASE Voigt-6 order (xx, yy, zz, yz, xz, xy)."""
    s = stress_33
    return np.array([s[0, 0], s[1, 1], s[2, 2], s[1, 2], s[0, 2], s[0, 1]])


def _committee_mean(out: dict, graph: dict, committee: CommitteeModel) -> tuple[dict, dict]:
    """Committee outputs with a member axis → (single-model-shaped means, spread results).

    Spread results: ``energy_std`` (eV), ``forces_std`` (n_atoms,) eV/Å (per atom, RMS over x, y, z of the member
    standard deviation), ``stress_std`` (Voigt-6, eV/Å³, if stress was computed), ``committee_energy`` (K,) eV and
    ``committee_forces`` (K, n_atoms, 3) eV/Å (learned part; the analytic dispersion is the same for every member).
    ``forces_std`` is ``forces_std_raw`` (the members' spread) calibrated by ``metadata["calibration"]``
    (``model.committee.calibrated_forces_std``: s · σ_raw, or a power law; none if absent; ``calibrate_forces``).
    Standard deviations use ddof = 1. Member energies are float64 sums of e0 + learned per-atom energies.
    """
    species = graph[K.SPECIES].cpu().numpy()
    learned = out[K.NODE_ENERGY_LEARNED].detach().cpu().double().numpy()           # (K, n_atoms)
    e0 = np.array([[float(m.config.e0s.get(x, 0.0)) for x in m.config.species] for m in committee.members])
    node = e0[:, species] + learned
    energies = node.sum(axis=1)                                                        # (K,) one structure
    mean = {K.NODE_ENERGY_LEARNED: torch.as_tensor(node.mean(0) - e0[0, species]),
            K.NODE_ENERGY: torch.as_tensor(node.mean(0)), K.ENERGY: torch.as_tensor(energies.mean(keepdims=True))}
    spread = {"energy_std": float(energies.std(ddof=1)), "committee_energy": energies}
    if K.FORCES in out:
        forces = out[K.FORCES].detach().cpu().double().numpy()
        mean[K.FORCES] = torch.as_tensor(forces.mean(0))
        spread["forces_std_raw"] = forces_std_per_atom(forces)
        spread["forces_std"] = calibrated_forces_std(spread["forces_std_raw"], committee.metadata.get("calibration"))
        spread["committee_forces"] = forces
    if K.STRESS in out:
        stress = out[K.STRESS].detach().cpu().double().numpy()                         # (K, 1, 3, 3)
        mean[K.STRESS] = torch.as_tensor(stress.mean(0))
        spread["stress_std"] = _voigt(stress.std(axis=0, ddof=1).reshape(3, 3))
    return mean, spread


def _has_volume(atoms: Atoms) -> bool:
    return bool(atoms.cell.rank == 3 and abs(atoms.cell.volume) > 1e-9)


_DTYPE_NAMES = {"float32": torch.float32, "float": torch.float32, "single": torch.float32,
                "float64": torch.float64, "double": torch.float64}
_ASE_KWARGS = ("restart", "ignore_bad_restart_file", "label", "atoms", "directory")
_OWN_KWARGS = ("model", "device", "dtype", "kpts", "hamiltonian_threshold")
_ALIASES = {"default_dtype": "dtype", "model_path": "model", "model_paths": "model", "threshold": "hamiltonian_threshold"}


def _check_ase_kwargs(kwargs: dict) -> None:
    """Only ASE's own Calculator arguments pass through ``**kwargs``; anything else (e.g. MACE's ``default_dtype``)
    is a TypeError naming it instead of being silently stored as a parameter."""
    import difflib

    unknown = [k for k in kwargs if k not in _ASE_KWARGS]
    if unknown:
        hints = []
        for k in unknown:
            guess = _ALIASES.get(k) or next(iter(difflib.get_close_matches(k, _OWN_KWARGS + _ASE_KWARGS, 1)), None)
            hints.append(f"{k!r}" + (f" (did you mean {guess!r}?)" if guess else ""))
        raise TypeError(f"WannierMLCalculator got unknown keyword argument(s) {', '.join(hints)}; it takes "
                        f"{', '.join(_OWN_KWARGS)} (and ASE's {', '.join(_ASE_KWARGS)})")


def _as_dtype(dtype: Any) -> torch.dtype | None:
    """None, torch.float32 / torch.float64 or a name ("float32", "float64", "double", ...) → torch dtype or None."""
    if dtype is None or dtype in (torch.float32, torch.float64):
        return dtype
    if isinstance(dtype, str) and dtype.lower().removeprefix("torch.") in _DTYPE_NAMES:
        return _DTYPE_NAMES[dtype.lower().removeprefix("torch.")]
    if dtype in (np.float32, np.float64):
        return torch.float32 if dtype == np.float32 else torch.float64
    raise ValueError(f"dtype must be torch.float32 / torch.float64 or one of {sorted(_DTYPE_NAMES)}, got {dtype!r}")


def _as_device(device: Any) -> torch.device:
    """A torch device that exists here; ValueError naming it (e.g. "cuda" on a machine without CUDA)."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"invalid device {device!r}: {err}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but CUDA is not available (torch {torch.__version__}, "
                         f"CUDA build: {torch.version.cuda or 'none'}); use device='cpu'")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"device {device!r} requested but MPS is not available; use device='cpu'")
    return dev


def _inference_copy(model: torch.nn.Module, dtype: torch.dtype, device: torch.device) -> torch.nn.Module:
    """The model in eval mode with ``dtype`` on ``device``, never changing the caller's model: shared if it already
    matches, else a converted copy (a second calculator with another dtype leaves the first one's model alone)."""
    p = next(model.parameters())
    if p.dtype == dtype and p.device.type == device.type and not model.training:
        return model
    if type(model) is WannierMLModel:   # fresh model + converted weights (deepcopy of e3nn modules adds state)
        copy = WannierMLModel(model.config, dtype=dtype, device=device)
        copy.load_state_dict({k: v.to(dtype=dtype) if v.is_floating_point() else v
                              for k, v in model.state_dict().items()})
        copy.metadata = dict(getattr(model, "metadata", {}))
        return copy.eval()
    import copy as _copy

    return _copy.deepcopy(model).to(device=device, dtype=dtype).eval()


def _state_differs(a: Atoms, b: Atoms) -> bool:
    """True if two Atoms differ in anything the predictions depend on (ASE's state or the ``layer`` labels)."""
    la, lb = a.arrays.get("layer"), b.arrays.get("layer")
    return bool(compare_atoms(a, b)) or (la is None) != (lb is None) or (la is not None and not np.array_equal(la, lb))


class WannierMLCalculator(Calculator):
    """Energy, forces, stress and the Wannier tight-binding Hamiltonian from one equivariant ML model.

    Args:
        model: a ``WannierMLModel``, a path to a model file, or a pretrained name (``"graphene-bilayer"``,
            ``"mos2-bilayer"``), or a ``CommitteeModel`` (``load_model(name, committee=True)``): then energy,
            forces, stress and ``get_hamiltonian()`` are the committee means and ``results`` also holds
            ``energy_std`` (eV), ``forces_std`` ((n_atoms,) eV/Å, per atom the RMS over x, y, z of the members'
            standard deviation), ``stress_std``, ``committee_energy`` (K,) and ``committee_forces`` (K, n_atoms, 3);
            ``get_band_structure(uncertainty=True)`` and ``get_flat_band_width`` give spreads (docs/uncertainty.md).
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

    implemented_properties = [*dict.fromkeys(ase_key for ase_key, _, _ in RESULTS_MAP), *COMMITTEE_RESULTS]
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
        _check_ase_kwargs(kwargs)
        super().__init__(kpts=kpts, **kwargs)
        safe_default_threads()   # 1 torch thread on an oversubscribed machine unless the user chose (threads.py)
        try:
            threshold = float(hamiltonian_threshold)
        except (TypeError, ValueError):
            raise TypeError(f"hamiltonian_threshold must be a number (eV), got {hamiltonian_threshold!r}") from None
        if not np.isfinite(threshold) or threshold < 0:
            raise ValueError(f"hamiltonian_threshold must be a finite number >= 0 eV, got {hamiltonian_threshold}")
        self.hamiltonian_threshold = threshold
        self.device = _as_device(device)
        wanted = _as_dtype(dtype)
        if not isinstance(model, torch.nn.Module):
            model = load_model(model, dtype=wanted, device=self.device)
        self.is_committee = isinstance(model, CommitteeModel)
        self.dtype = wanted if wanted is not None else next(model.parameters()).dtype
        self.model = _inference_copy(model, self.dtype, self.device)   # never converts the caller's model
        self._tb: TightBinding | None = None
        self._member_tbs: list[TightBinding] | None = None
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
        self._member_tbs = None
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
            self._tb, self._eigen_cache, self._member_tbs = None, None, None
        want_stress = "stress" in properties
        if want_stress and not _has_volume(self.atoms):
            raise PropertyNotImplementedError("stress needs a cell with non-zero volume (3 lattice vectors)")
        graph = atoms_to_graph(self.atoms, self.model.config, dtype=self.dtype, device=self.device,
                               with_hamiltonian=False, check_layer_bonds=True)
        out = self.model(graph, compute_forces=True, compute_stress=want_stress or _has_volume(self.atoms))
        spread = None
        if self.is_committee:  # members on one graph: results are the means, spreads go to *_std
            out, spread = _committee_mean(out, graph, self.model)
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
            if "energies" in self.results and disp.get("energies") is not None:   # each pair split half/half
                self.results["energies"] = self.results["energies"] + disp["energies"]
            else:
                self.results.pop("energies", None)       # per-atom ML energies alone do not sum to the total
        if spread is not None:
            self.results.update(spread)

    def set_atoms(self, atoms: Atoms) -> None:
        """Called by ASE on ``atoms.calc = calc``: remember (weakly) which Atoms the calculator belongs to, so that
        ``calc.get_hamiltonian()`` without arguments follows that object's current geometry. Several Atoms may
        share one calculator (``b.calc = a.calc``); then calls without ``atoms=`` are refused while their states
        differ (see :meth:`_update_geometry`)."""
        alive = [ref for ref in getattr(self, "_attached_all", []) if ref() is not None and ref() is not atoms]
        self._attached_all = alive + [weakref.ref(atoms)]
        self._attached = weakref.ref(atoms)

    def check_state(self, atoms: Atoms, tol: float = 1e-15) -> list[str]:
        """ASE's state comparison plus the per-atom ``layer`` labels (they change the Hamiltonian's categories)."""
        changes = list(super().check_state(atoms, tol=tol))
        if self.atoms is not None and "layer" not in changes:
            la, lb = self.atoms.arrays.get("layer"), atoms.arrays.get("layer")
            if (la is None) != (lb is None) or (la is not None and not np.array_equal(la, lb)):
                changes.append("layer")
        return changes

    # ------------------------------------------------------------------ electronic structure
    def _update_geometry(self, atoms: Atoms | None) -> Atoms:
        if atoms is None:
            owners = [a for a in (ref() for ref in getattr(self, "_attached_all", [])) if a is not None and a.calc is self]
            if any(_state_differs(owners[0], a) for a in owners[1:]):
                raise ValueError(f"this calculator is attached to {len(owners)} Atoms objects with different "
                                 "structures (e.g. b.calc = a.calc): say which one, calc.get_hamiltonian(atoms) "
                                 "(same for bands/DOS/eigenvalues), or give each Atoms its own calculator")
            atoms = owners[-1] if owners else None
        if atoms is not None and (self.atoms is None or self.check_state(atoms)):
            check_layer_labels(atoms)      # before caching the state: wrong labels are refused on every call
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
        uncertainty: bool = False,
        executor: Any = None,
    ) -> BandStructure | tuple[BandStructure, np.ndarray]:
        """Band structure along ``path`` (default: the cell's standard path); ``reference`` is this structure's
        Fermi level (:meth:`get_fermi_level`). Energies stay absolute (ASE semantics): plot E − E_F with
        ``ase_wannierml.plotting.plot_bands(bs)`` or ``bs.subtract_reference().plot(...)``.

        ``num``/``near`` ask for only the ``num`` bands closest to ``near`` (eV, default E_F) by the sparse
        solver; by default all bands are computed (dense) for small cells and 16 bands near E_F otherwise.
        uncertainty: (committee only) return ``(bands of the mean H, spread)`` with spread (1, n_kpoints, n_bands)
        eV = the members' standard deviation (ddof 1) of the n-th band (energy order at each k) along the same path.
        executor: k-point chunks as tasks on a Dask ``Client``, ``"local"`` (embedded Dask cluster), a scheduler
        address or a ``concurrent.futures.Executor`` (``tb/distributed.py``); same bands as the serial run.
        """
        tb = self.get_hamiltonian(atoms)
        bs = tb.band_structure(path=path, npoints=npoints, reference=self.get_fermi_level(), num=num, near=near,
                               executor=executor)
        if not uncertainty:
            return bs
        members = [m.band_structure(path=bs.path, num=num, near=near, executor=executor).energies
                   for m in self.get_member_hamiltonians()]
        n = min(e.shape[-1] for e in members)
        stack = np.stack([np.sort(e, axis=-1)[..., :n] for e in members])
        return bs, stack.std(axis=0, ddof=1)

    def get_member_hamiltonians(self, atoms: Atoms | None = None) -> list[TightBinding]:
        """(committee only) One predicted ``TightBinding`` (eV) per member, cached per geometry; pruned like
        ``get_hamiltonian``. ValueError for a single model."""
        if not self.is_committee:
            raise ValueError("member Hamiltonians need a committee: WannierMLCalculator(load_model(name, "
                             "committee=True))")
        atoms = self._update_geometry(atoms)
        if self._member_tbs is None:
            self._member_tbs = [tb.pruned(self.hamiltonian_threshold)
                                for tb in self.model.predict_tightbinding_members(atoms)]
        return self._member_tbs

    def get_flat_band_width(self, kpts: np.ndarray, atoms: Atoms | None = None, num: int = 16,
                            near: float | None = None, k_dirac: Sequence[float] = (1 / 3, 1 / 3, 0.0)) -> dict:
        """Width (meV) of the 4 flat bands of a twisted bilayer (``tb.flatbands``, bands taken by absolute index at
        charge neutrality) on ``kpts`` (nk, 3) fractional; for a committee also each member's width and their mean
        and standard deviation (ddof 1): keys ``flat_band_width_meV`` (mean H), ``member_widths_meV``,
        ``width_mean_meV``, ``width_std_meV``. ``num`` states nearest E_D, found at the moiré K point ``k_dirac`` (fractional) starting from ``near`` (eV,
        default each H's Fermi level)."""
        from ase_wannierml.tb.flatbands import neutrality_dirac_energy, summarize_flat_bands

        kpts = np.asarray(kpts, dtype=float).reshape(-1, 3)
        tbs = [self.get_hamiltonian(atoms)] + (self.get_member_hamiltonians() if self.is_committee else [])
        widths = []
        for tb in tbs:
            guess = float(tb.fermi_level()) if near is None else near
            e_d, _ = neutrality_dirac_energy(tb, np.asarray(k_dirac, dtype=float), guess, num=max(num, 8))
            e_kn = tb.eigenvalues(kpts, num=num, near=e_d) if num else tb.eigenvalues(kpts)
            widths.append(summarize_flat_bands(tb, kpts, e_kn, e_d))
        info = dict(widths[0])
        if self.is_committee:
            w = np.array([x["flat_band_width_meV"] for x in widths[1:]])
            info.update(member_widths_meV=w.tolist(), width_mean_meV=float(w.mean()), width_std_meV=float(w.std(ddof=1)))
        return info

    def get_dos(
        self,
        atoms: Atoms | None = None,
        kpts: Any = None,
        width: float = DOS_WIDTH,
        npts: int = DOS_NPTS,
        projected: str | None = None,
        method: str = "auto",
    ):
        """Density of states (states/eV per cell and spin; integrates to the orbital count) as ASE DOS data.
        Energies absolute (eV, the model's zero): subtract :meth:`get_fermi_level` to plot E − E_F. ``kpts`` None:
        ``tb.kmesh.dos_mesh`` (defaults in ``ase_wannierml/tb/kmesh.py``)."""
        tb = self.get_hamiltonian(atoms)
        return tb.dos(kpts=kpts, width=width, npts=npts, projected=projected, method=method)

    # ------------------------------------------------------------------ ASE eigenvalue API
    def _kpts(self) -> np.ndarray:
        kpts = self.parameters.get("kpts")
        if kpts is None:
            kpts = default_mesh(self.get_hamiltonian())
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

    @property
    def reference_level(self) -> float | None:
        """The model's stored reference level (eV, in the model's energy zero; None if it has none): for the shipped
        models the mean charge-neutrality level of the training frames relative to the vacuum level. It is *not*
        this structure's Fermi level (see :meth:`get_fermi_level`); docs/energy_zero.md."""
        level = self.model.config.fermi_level
        return None if level is None else float(level)

    def get_fermi_level(self, kpts: Any = None) -> float:
        """Fermi level (eV, the model's energy zero) of *this* structure: the predicted H's electrons (the model's
        ``wannier_electrons`` per atom) counted on the k-mesh ``kpts`` (None: the calculator's ``kpts`` if it is a
        mesh size, else ``tb.kmesh.default_mesh``), mid-gap for an insulator; dense eigenvalues up to
        ``kmesh.EXACT_MAX_ORBITALS`` orbitals, above that the exact sparse count (``tb/fermi.py``). Cached per geometry and mesh. A model without an electron count gives its
        :attr:`reference_level`."""
        tb = self.get_hamiltonian()
        if tb.num_electrons is None:
            if self.reference_level is None:
                raise ValueError("the model declares neither wannier_electrons nor a reference level: no Fermi level")
            return self.reference_level
        if kpts is None:      # the calculator's own Monkhorst–Pack size if it has one, else the engine's default
            own = np.asarray(self.parameters.get("kpts") if self.parameters.get("kpts") is not None else [])
            kpts = tuple(int(n) for n in own) if own.shape == (3,) and own.dtype.kind in "iu" else None
        mesh = default_mesh(tb) if kpts is None else kpts
        key = np.asarray(mesh).tolist()
        cache = getattr(self, "_fermi_cache", None)       # (tb, mesh, E_F): one geometry's H, one mesh
        if cache is None or cache[0] is not tb or cache[1] != key:
            self._fermi_cache = (tb, key, float(tb.fermi_level(kpts=mesh)))
        return self._fermi_cache[2]
