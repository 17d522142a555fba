"""Structure relaxation with ASE optimisers, tuned for large (moiré) cells.

The default optimiser is ASE's preconditioned L-BFGS (``PreconLBFGS`` with the ``Exp`` preconditioner of
Packwood et al., J. Chem. Phys. 144, 164109 (2016)). Relaxing a twisted bilayer is dominated by long-wavelength
in-plane modes whose stiffness falls with the moiré length squared, so unpreconditioned FIRE/L-BFGS need many
steps; the preconditioner, built from the bond network, removes that. Measured on the 6° twisted bilayer graphene
cell (364 atoms, shipped model, fmax 0.01 eV/Å, in-plane cell relaxed): 16 force calls (11 s) vs 152 for FIRE
(107 s), same energy to 0.4 meV.

Both line searches of ``PreconLBFGS`` compare total energies, so they need energies accurate to far below the
energy changes near convergence: the calculator sums per-atom energies in float64 with the per-element e0 added
outside the float32 network (with e0 inside, float32 rounding of ~-155 eV per atom stalled the line search at
fmax ≈ 0.012 eV/Å on the 364-atom cell). The Wolfe line search (``use_armijo=False``) is used.

Example:
    >>> from ase_wannierml import WannierMLCalculator, load_model, twisted_bilayer
    >>> atoms = twisted_bilayer("graphene", angle=6.0)
    >>> atoms.calc = WannierMLCalculator(load_model())
    >>> result = relax(atoms, fmax=0.01, cell=True)      # doctest: +SKIP
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import IO, Any

import numpy as np
from ase import Atoms

__all__ = ["OPTIMIZERS", "RelaxResult", "equilibrium_bilayer", "estimate_precon_mu", "relax",
           "relax_cell_alternating"]

OPTIMIZERS = ("precon", "fire", "bfgs", "lbfgs")
#: Cell DOFs relaxed for a 2D cell (xx, yy, xy in ASE's Voigt order xx yy zz yz xz xy): the vacuum stays.
IN_PLANE = (True, True, False, False, False, True)


@dataclass
class RelaxResult:
    """Outcome of :func:`relax`: ``converged``; optimiser ``steps``; ``force_calls`` (model evaluations);
    ``wall_s``; final ``fmax`` (eV/Å, largest atomic force norm) and ``smax`` (eV/Å³, largest relaxed stress
    component, None without cell); ``energy`` (eV); ``stopped`` (why it ended early, else None); ``cell_cycles``
    (cell updates of :func:`relax_cell_alternating`, else None); ``precon_mu`` (eV/Å², the "precon" optimiser's
    preconditioner scale if it was set or estimated, else None)."""

    converged: bool
    steps: int
    force_calls: int
    wall_s: float
    fmax: float
    smax: float | None
    energy: float
    optimizer: str
    stopped: str | None = None
    cell_cycles: int | None = None
    precon_mu: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _cell_mask(atoms: Atoms, mask) -> list[bool]:
    if mask is not None:
        return [bool(m) for m in mask]
    return [True] * 6 if bool(np.all(atoms.pbc)) and not _has_vacuum(atoms) else list(IN_PLANE)


def _has_vacuum(atoms: Atoms, gap: float = 6.0) -> bool:
    """True if the atoms leave a gap > ``gap`` Å along c (a 2D material in a periodic box)."""
    if len(atoms) == 0:
        return False
    c = atoms.cell[2]
    frac = np.sort(atoms.get_scaled_positions(wrap=True)[:, 2])
    gaps = np.diff(np.concatenate([frac, frac[:1] + 1.0]))
    return float(gaps.max() * np.linalg.norm(c)) > gap


class _CountingCalls:
    """Counts the model evaluations (ASE calculator ``calculate`` calls) during a relaxation."""

    def __init__(self, calc) -> None:
        self.calc, self.count, self._orig = calc, 0, calc.calculate

    def __enter__(self) -> "_CountingCalls":
        def counted(*args, **kwargs):
            self.count += 1
            return self._orig(*args, **kwargs)

        self.calc.calculate = counted
        return self

    def __exit__(self, *exc) -> None:
        self.calc.calculate = self._orig


def relax(atoms: Atoms, fmax: float = 0.01, cell: bool = False, smax: float = 1e-4, optimizer: str = "precon",
          steps: int = 1000, max_minutes: float | None = None, mask=None, logfile: IO | str | None = "-",
          trajectory: str | None = None, progress_every: int = 0, precon_mu: float | None = None) -> RelaxResult:
    """Relax ``atoms`` (with a calculator attached) in place until every atomic force is below ``fmax`` (eV/Å)
    and, with ``cell=True``, every relaxed stress component below ``smax`` (eV/Å³).

    ``optimizer``: "precon" (default, see the module docstring), "fire", "bfgs" or "lbfgs" (these relax the cell
    through ``FrechetCellFilter``, whose cell gradients are held to ``fmax``; ``smax`` applies to "precon").
    ``cell``: also relax the cell; ``mask`` (6 Voigt flags) defaults to the in-plane components for a cell with vacuum along c, all six
    otherwise. ``max_minutes``: stop (not converged, reported in ``stopped``) once this wall time has passed.
    ``progress_every``: print a line every this many steps (0: only the optimiser's log). ``precon_mu`` (eV/Å²,
    "precon" only): the energy scale of the ``Exp`` preconditioner; None estimates it on ``atoms`` (ASE's sine-wave
    test: 2 extra model evaluations, ~10 s each on 11,908 atoms), a value (e.g. :func:`estimate_precon_mu` on a
    small cell of the same material) skips that. Returns a :class:`RelaxResult`.
    """
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {optimizer!r}; choose one of {OPTIMIZERS}")
    if atoms.calc is None:
        raise ValueError("relax needs a calculator attached to the atoms (atoms.calc = WannierMLCalculator(...))")
    if not (np.isfinite(fmax) and fmax > 0 and np.isfinite(smax) and smax > 0):
        raise ValueError(f"fmax and smax must be finite and > 0, got {fmax} eV/Å, {smax} eV/Å³")
    if cell and atoms.cell.rank < 3:
        raise ValueError("cell relaxation needs a 3D periodic cell (set atoms.cell and atoms.pbc)")
    cell_mask = _cell_mask(atoms, mask) if cell else None
    if precon_mu is not None and not (np.isfinite(precon_mu) and precon_mu > 0):
        raise ValueError(f"precon_mu must be finite and > 0 (eV/Å²), got {precon_mu}")
    target, opt = _optimizer(atoms, optimizer, cell_mask, logfile, trajectory, precon_mu)
    t0 = time.perf_counter()
    stopped, converged = None, False
    with _CountingCalls(atoms.calc) as counter:
        iterator = _precon_irun(opt, fmax, smax, steps, target, logfile, trajectory) if optimizer == "precon" \
            else opt.irun(fmax=fmax, steps=steps)
        for converged in iterator:
            elapsed = time.perf_counter() - t0
            if progress_every and opt.nsteps % progress_every == 0:
                print(f"   relax step {opt.nsteps}: {elapsed:.0f} s, {counter.count} force calls", flush=True)
            if not converged and max_minutes is not None and elapsed > 60.0 * max_minutes:
                stopped = f"time cap of {max_minutes:g} min reached after {opt.nsteps} steps"
                break
        converged = bool(converged)
        if not converged and getattr(opt, "line_search_failure", None):
            stopped = (f"line search failed after {opt.nsteps} steps ({opt.line_search_failure}): forces/stress "
                       "are at the model's numerical noise; loosen fmax/smax or use optimizer='fire'")
        forces = atoms.get_forces()
        stress = atoms.get_stress(voigt=True) if cell else None
        energy = float(atoms.get_potential_energy())
    f_now = float(np.linalg.norm(forces, axis=1).max()) if len(atoms) else 0.0
    s_now = None if stress is None else float(np.abs(stress[np.asarray(cell_mask)]).max())
    if not converged and stopped is None:
        stopped = f"not converged within {steps} steps"
    mu = getattr(getattr(opt, "precon", None), "mu", None)
    return RelaxResult(converged, int(opt.nsteps), counter.count, round(time.perf_counter() - t0, 2), f_now,
                       s_now, energy, optimizer, stopped, precon_mu=None if mu is None else float(mu))


#: Voigt index → (i, j) of the strain tensor (engineering shear: ε_ij = ε_ji = γ/2).
_VOIGT = ((0, 0), (1, 1), (2, 2), (1, 2), (0, 2), (0, 1))


def _strain_tensor(voigt_components: np.ndarray, eps: np.ndarray) -> np.ndarray:
    e = np.zeros((3, 3))
    for c, x in zip(voigt_components, eps):
        i, j = _VOIGT[c]
        e[i, j] += x if i == j else 0.5 * x
        if i != j:
            e[j, i] += 0.5 * x
    return e


def _apply_strain(atoms: Atoms, voigt_components: np.ndarray, eps: np.ndarray) -> None:
    """Deform the cell (and the positions with it) by the small strain ``eps`` on ``voigt_components``."""
    F = np.eye(3) + _strain_tensor(voigt_components, eps)
    atoms.set_cell(atoms.cell.array @ F.T, scale_atoms=True)


def relax_cell_alternating(atoms: Atoms, fmax: float = 0.01, smax: float = 1e-5, max_cycles: int = 8,
                           optimizer: str = "precon", steps: int = 1000, max_minutes: float | None = None,
                           mask=None, strain_probe: float = 1e-3, logfile: IO | str | None = "-",
                           progress_every: int = 0, precon_mu: float | None = None) -> RelaxResult:
    """Relax positions and cell of a large cell by alternating: positions at fixed cell (:func:`relax`, forces <
    ``fmax`` eV/Å), then a Newton step of the homogeneous strain on the stress, ε ← ε − C⁻¹ σ, until every relaxed
    stress component is below ``smax`` (eV/Å³) with the positions relaxed.

    Why: for a moiré cell (10⁴ atoms) the cell degrees of freedom inside one optimiser (``relax(cell=True)``) are
    conditioned very differently from the soft in-plane atomic modes, and the 1.05° twisted bilayer stalled at a
    stress of 2 meV/Å³. Here the cell is a separate, tiny problem: C (m × m for the m relaxed components of
    ``mask``, default in-plane for a 2D cell) is first estimated from the clamped-ion stress change under strains
    of ``strain_probe`` (m extra model calls), then updated by Broyden's rule from each cycle's relaxed-ion
    response; the positions are re-relaxed from the strained (scaled) configuration, which starts close to
    relaxed (a hexagonal in-plane cell needs one probe: C11 and C12 fix C22 = C11 and C66 = (C11 − C12)/2).
    ``max_minutes`` caps the whole run; other arguments as in :func:`relax`. Returns a
    :class:`RelaxResult` summed over all cycles (``cell_cycles`` = strain updates made).
    """
    if atoms.calc is None:
        raise ValueError("relax needs a calculator attached to the atoms (atoms.calc = WannierMLCalculator(...))")
    if not (np.isfinite(fmax) and fmax > 0 and np.isfinite(smax) and smax > 0):
        raise ValueError(f"fmax and smax must be finite and > 0, got {fmax} eV/Å, {smax} eV/Å³")
    if atoms.cell.rank < 3:
        raise ValueError("cell relaxation needs a 3D periodic cell (set atoms.cell and atoms.pbc)")
    comps = np.flatnonzero(_cell_mask(atoms, mask))
    t0 = time.perf_counter()
    steps_done, calls, cycles = 0, 0, 0

    def remaining() -> float | None:
        return None if max_minutes is None else max(0.0, max_minutes - (time.perf_counter() - t0) / 60.0)

    def positions() -> RelaxResult:
        nonlocal steps_done, calls, precon_mu
        r = relax(atoms, fmax=fmax, optimizer=optimizer, steps=steps, max_minutes=remaining(), logfile=logfile,
                  progress_every=progress_every, precon_mu=precon_mu)
        steps_done, calls = steps_done + r.steps, calls + r.force_calls
        precon_mu = r.precon_mu if precon_mu is None else precon_mu  # estimated once (2 model calls), then reused
        return r

    def stress() -> np.ndarray:
        nonlocal calls
        calls += 0 if atoms.calc.get_property("stress", atoms, allow_calculation=False) is not None else 1
        return atoms.get_stress(voigt=True)[comps]

    res = positions()
    sigma = stress()
    C = None
    while res.converged and np.abs(sigma).max() >= smax and cycles < max_cycles:
        if C is None:  # clamped-ion elastic constants (eV/Å³) from one-sided strain probes
            C = np.zeros((len(comps), len(comps)))
            hexagonal = _hexagonal_in_plane(atoms) and list(comps) == [0, 1, 5]
            for j in range(1 if hexagonal else len(comps)):  # hexagonal: C11, C12 give C22 and C66 too
                probe = np.zeros(len(comps))
                probe[j] = strain_probe
                _apply_strain(atoms, comps, probe)
                C[:, j] = (stress() - sigma) / strain_probe
                _apply_strain(atoms, comps, -probe)  # back (to second order in the probe)
            if hexagonal:  # in-plane isotropy of a hexagonal lattice: C22 = C11, C66 = (C11 − C12)/2 (Voigt)
                c11, c12 = C[0, 0], C[1, 0]
                C = np.array([[c11, c12, 0.0], [c12, c11, 0.0], [0.0, 0.0, 0.5 * (c11 - c12)]])
            if progress_every:
                print(f"   cell: clamped-ion C (eV/Å³) diagonal {np.round(np.diag(C), 4).tolist()}", flush=True)
        step = -np.linalg.solve(C, sigma)
        _apply_strain(atoms, comps, step)
        cycles += 1
        res = positions()
        new_sigma = stress()
        C = C + np.outer(new_sigma - sigma - C @ step, step) / float(step @ step)  # Broyden: relaxed-ion response
        if progress_every:
            print(f"   cell cycle {cycles}: strain {np.round(step, 6).tolist()}, max |stress| "
                  f"{np.abs(sigma).max():.2e} → {np.abs(new_sigma).max():.2e} eV/Å³", flush=True)
        sigma = new_sigma
    s_now = float(np.abs(sigma).max())
    converged = bool(res.converged and s_now < smax)
    stopped = None
    if not converged:
        stopped = res.stopped if not res.converged else f"stress {s_now:.2e} eV/Å³ after {cycles} cell cycles"
    return RelaxResult(converged, steps_done, calls, round(time.perf_counter() - t0, 2), res.fmax, s_now,
                       float(atoms.get_potential_energy()), optimizer, stopped, cycles, precon_mu)


def estimate_precon_mu(atoms: Atoms) -> float:
    """Energy scale μ (eV/Å²) of the ``Exp(A=3)`` preconditioner of :func:`relax` for ``atoms`` (calculator
    attached), by ASE's sine-wave test (2 model evaluations). The bond stiffness it measures is local, so a small
    cell of the same material (e.g. a few hundred atoms of the same bilayer) serves a large one: pass the value as
    ``relax(..., precon_mu=)``."""
    from ase.optimize.precon import Exp

    if atoms.calc is None:
        raise ValueError("estimate_precon_mu needs a calculator attached to the atoms")
    precon = Exp(A=3.0)
    precon.make_precon(atoms)  # neighbour cut-off from the structure, then μ (mu=None: estimated)
    return float(precon.mu)


def _hexagonal_in_plane(atoms: Atoms, tol: float = 1e-6) -> bool:
    """True if a1, a2 have equal lengths at 60° or 120° in the xy plane (a twisted bilayer's moiré cell)."""
    a1, a2 = atoms.cell[0], atoms.cell[1]
    l1, l2 = np.linalg.norm(a1), np.linalg.norm(a2)
    if l1 == 0 or l2 == 0 or abs(a1[2]) > tol * l1 or abs(a2[2]) > tol * l2 or abs(l1 - l2) > tol * l1:
        return False
    return abs(abs(float(a1 @ a2) / (l1 * l2)) - 0.5) < tol


def _optimizer(atoms: Atoms, name: str, cell_mask, logfile, trajectory, precon_mu: float | None = None):
    if name == "precon":
        from ase.filters import UnitCellFilter
        from ase.optimize.precon import Exp, PreconLBFGS

        # PreconLBFGS knows UnitCellFilter (it preconditions the cell DOFs and checks smax on the stress)
        target = atoms if cell_mask is None else UnitCellFilter(atoms, mask=cell_mask)
        precon = Exp(A=3.0) if precon_mu is None else Exp(A=3.0, mu=float(precon_mu))
        opt = PreconLBFGS(target, precon=precon, use_armijo=False, logfile=logfile, trajectory=trajectory)
        return target, opt
    from ase.filters import FrechetCellFilter
    from ase.optimize import BFGS, FIRE, LBFGS

    target = atoms if cell_mask is None else FrechetCellFilter(atoms, mask=cell_mask)
    cls = {"fire": FIRE, "bfgs": BFGS, "lbfgs": LBFGS}[name]
    return target, cls(target, logfile=logfile, trajectory=trajectory)


def _precon_irun(opt, fmax: float, smax: float, steps: int, target=None, logfile=None, trajectory=None):
    """``PreconLBFGS.irun`` with its stress threshold set (its ``run`` sets ``smax``, ``irun`` does not).

    If its Wolfe line search fails (it raises ``RuntimeError``; seen near tight thresholds, where energy changes
    reach the model's numerical noise), the relaxation continues from the current geometry with the same
    preconditioner and ASE's Armijo line search (which resets the Hessian instead of giving up) for the remaining
    steps; ``opt.nsteps`` keeps counting."""
    opt.smax = smax
    try:
        yield from opt.irun(fmax=fmax, steps=steps)
        return
    except RuntimeError as err:
        if target is None or "linesearch" not in str(err).lower():     # ASE: "Wolff lineSearch failed!"
            raise
        done, first = opt.nsteps, str(err)
    from ase.optimize.precon import PreconLBFGS

    retry = PreconLBFGS(target, precon=opt.precon, use_armijo=True, logfile=logfile, trajectory=trajectory)
    retry.smax = smax
    retry.nsteps = done
    opt.nsteps = done
    try:
        for converged in retry.irun(fmax=fmax, steps=max(steps - done, 1)):
            opt.nsteps = retry.nsteps
            yield converged
    except RuntimeError as err2:     # no descent direction found either: the energy is at its noise floor
        opt.line_search_failure = f"{first}; then {err2}"
        yield False


def equilibrium_bilayer(calc, material: str = "graphene", stacking: str | None = None,
                        fmax: float = 1e-3) -> tuple[float, float]:
    """(lattice constant a, interlayer distance) in Å at which ``calc`` relaxes the untwisted primitive bilayer
    (``structures.bilayer``; in-plane cell and positions relaxed, forces < ``fmax`` eV/Å, in-plane stress < 1e-6
    eV/Å³). Building a moiré cell with these (``twisted_bilayer(..., a=a, interlayer=d)``) removes the uniform
    misfit strain, so the expensive moiré relaxation needs no cell degrees of freedom: relaxing the cell of an
    11,908-atom cell together with the positions converged poorly (in-plane stress stuck at 2 meV/Å³).

    A ``WannierMLCalculator`` in lower precision is evaluated in float64 here (a copy; 4 atoms cost nothing): at
    these thresholds the line search needs energy differences below float32's resolution (with the session-9
    graphene model both the Wolfe and the Armijo searches failed in float32)."""
    import torch

    from ase_wannierml.calculator import WannierMLCalculator
    from ase_wannierml.structures import bilayer

    if isinstance(calc, WannierMLCalculator) and calc.dtype != torch.float64:
        calc = WannierMLCalculator(calc.model, device=calc.device, dtype=torch.float64)
    atoms = bilayer(material, stacking)
    atoms.calc = calc
    result = relax(atoms, fmax=fmax, cell=True, smax=1e-6, steps=500, logfile=None)
    if not result.converged:
        raise RuntimeError(f"the {material} bilayer did not relax with this calculator: {result}")
    layer = atoms.arrays["layer"]
    z = atoms.positions[:, 2]
    return float(atoms.cell.lengths()[0]), float(z[layer == 1].mean() - z[layer == 0].mean())
