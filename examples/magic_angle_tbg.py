"""Magic-angle twisted bilayer graphene end to end: relax 11,908 atoms with the pretrained model, then the flat
bands along K–Γ–M–K before and after relaxation and the DOS near E_F.

    python examples/magic_angle_tbg.py --cell relax --npoints 12 --dos-mesh 4   # 1.05° (m = 31): 19 min, 6.7 GB
    # measured on 2 shared cores at load 4-12 (docs/solvers.md: relax 627 s, band stages 262 + 157 s, DOS 49 s)
    python examples/magic_angle_tbg.py --m 20 --steps 20     # 1.61°, 4,924 atoms: a quicker check

Stages are timed (wall s) with their peak resident memory (GB, sampled every 0.2 s). Writes into --outdir
(default ``tbg_magic_output/``): ``relaxed.extxyz``, ``bands.png`` (unrelaxed vs relaxed, E − E_D), ``dos.png``,
``summary.json``. Energies in eV, lengths in Å.

Choices (see README, "Magic angle (1.05°)"):
- the moiré cell is built at the lattice constant and interlayer distance of the model's relaxed AB bilayer, then
  positions are relaxed with preconditioned L-BFGS (``ase_wannierml.relaxation``); with ``--cell relax`` the in-plane
  cell is relaxed as well, alternating position relaxations with Newton steps of the strain on the stress
  (``relax_cell_alternating``; relaxing both in one optimiser stalled at 2 meV/Å³ here); ``--cell equilibrium``
  relaxes positions only and reports the residual in-plane stress;
- hoppings |H_ij(R)| < ``--threshold`` (default 3e-4 eV) are dropped from the predicted H (``TightBinding.pruned``);
  the band error this causes was measured against the unpruned H and is far below the model error;
- E_D (the Dirac energy at the moiré K point) is found as the most tightly clustered 4 eigenvalues at K nearest
  the model's E_F; the 4 flat bands are bands N/2 − 2 … N/2 + 1 (N orbitals, charge neutrality), identified by
  their absolute index from an exact count of the bands below the window at each k (Sylvester inertia,
  ``TightBinding.bands_below``; ``ase_wannierml.tb.flatbands``);
- the DOS near E_F is the Gaussian-smeared spectrum of the ``--dos-num`` states nearest E_D on an irreducible
  (spglib) k-mesh from the sparse solver: exact inside the window where every k-point's states are complete (the
  plot is restricted to it); a Chebyshev (KPM) DOS at meV resolution would need ~10⁴ moments here.
"""
from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # one BLAS thread per factorisation worker (see README)

import argparse
import hashlib
import json
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch
from ase.spectrum.band_structure import BandStructure

from ase_wannierml import WannierMLCalculator, load_model, twisted_bilayer
from ase_wannierml.model.io import resolve_model_path
from ase_wannierml.relaxation import OPTIMIZERS, equilibrium_bilayer, relax, relax_cell_alternating
from _report import Stage, plot_band_points
from ase_wannierml.tb import solvers
from ase_wannierml.tb.bandpath import kpoint_mesh
from ase_wannierml.tb.dos import smear
from ase_wannierml.tb.flatbands import neutrality_dirac_energy, summarize_flat_bands


def near_bands(tb, kpts: np.ndarray, num: int, near: float, label: str) -> tuple[np.ndarray, dict]:
    """``num`` eigenvalues (eV) nearest ``near`` at each k (sparse solver, one factorisation reused along the
    path), with progress output; returns (nk, num) and solver statistics."""
    solver = solvers.NearSolver(num, near)
    e_kn, t0 = [], time.perf_counter()
    for i, k in enumerate(kpts):
        e_kn.append(solver.solve(tb.hamiltonian_sparse(k, allow_real=True)).values)
        if i % 10 == 0 or i == len(kpts) - 1:
            print(f"   {label}: k-point {i + 1}/{len(kpts)}, {time.perf_counter() - t0:.0f} s", flush=True)
    dt = time.perf_counter() - t0
    return np.array(e_kn), {"kpoints": len(kpts), "s_per_kpoint": round(dt / len(kpts), 2),
                            "factorizations": solver.factorizations}


def bands(tb, path, num: int, label: str) -> tuple[BandStructure, dict]:
    """Flat bands along ``path``: E_D at K first (path starts at K), then ``num`` states nearest E_D."""
    k_K = path.special_points["K"]
    e_f = tb.fermi_level()
    e_d, _ = neutrality_dirac_energy(tb, k_K, e_f, num)
    print(f"   {label}: E_D − E_F = {(e_d - e_f) * 1e3:.1f} meV (E_F: the model's reference level, "
          f"{e_f:.3f} eV)", flush=True)
    e_kn, stats = near_bands(tb, path.kpts, num, e_d, label)
    info = summarize_flat_bands(tb, path.kpts, e_kn, e_d) | stats
    print(f"   {label}: flat-band width {info['flat_band_width_meV']:.1f} meV, gaps to remote bands "
          f"{info['gap_below_meV']} / {info['gap_above_meV']} meV", flush=True)
    return BandStructure(path, e_kn[None], reference=e_d), info


def dos_near(tb, mesh: tuple[int, int, int], num: int, near: float, width: float, npts: int = 801):
    """Smeared DOS (states/eV/cell/spin) from the ``num`` states nearest ``near`` on an irreducible mesh → (grid,
    dos, (lo, hi) window in which every k-point's states are complete, number of irreducible k-points)."""
    k_k3, w_k = kpoint_mesh(tb, mesh)
    e_kn, _ = near_bands(tb, k_k3, num, near, "DOS")
    lo, hi = float(e_kn.min(axis=1).max()), float(e_kn.max(axis=1).min())
    grid = np.linspace(lo - 0.02, hi + 0.02, npts)
    d = smear(e_kn.ravel(), np.repeat(w_k, num)[:, None], grid, width)[0]
    return grid, d, (lo, hi), len(k_k3)


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--m", type=int, default=31, help="commensurate index (r = 1): 31 → 1.05°, 11,908 atoms")
    p.add_argument("--model", default="graphene-bilayer")
    p.add_argument("--threshold", type=float, default=3e-4, help="drop hoppings below this (eV); 0 keeps all")
    p.add_argument("--fmax", type=float, default=0.005,
                   help="relaxation threshold, eV/Å (the rigid 1.05° cell starts at ~0.04)")
    p.add_argument("--steps", type=int, default=100, help="maximum relaxation steps")
    p.add_argument("--relax-minutes", type=float, default=20.0,
                   help="stop the relaxation (unconverged, reported) after this wall time, min")
    p.add_argument("--optimizer", choices=OPTIMIZERS, default="precon",
                   help="precon: preconditioned L-BFGS (ase_wannierml.relaxation), ~10x fewer force calls than FIRE")
    p.add_argument("--cell", choices=("equilibrium", "relax", "fixed"), default="equilibrium",
                   help="equilibrium: build the cell at the lattice constant and interlayer distance of the model's "
                        "relaxed AB bilayer, then relax positions; relax: the same start, then also the in-plane "
                        "cell (alternating, --smax); fixed: default graphene lattice constant, positions only")
    p.add_argument("--smax", type=float, default=1e-5, help="in-plane stress threshold with --cell relax, eV/Å³")
    p.add_argument("--npoints", type=int, default=24, help="k-points along K–Γ–M–K")
    p.add_argument("--num", type=int, default=12,
                   help="bands nearest E_D from the sparse solver (12: the remote bands on both sides)")
    p.add_argument("--dos-mesh", type=int, default=6, help="n × n Γ-centred mesh for the DOS (symmetry-reduced)")
    p.add_argument("--dos-num", type=int, default=12, help="states per k-point for the DOS")
    p.add_argument("--dos-width", type=float, default=0.002, help="Gaussian DOS broadening, eV")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads; 1 is fastest when the cores are shared (2 threads measured much slower here)")
    p.add_argument("--outdir", default="tbg_magic_output")
    return p.parse_args()


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    out = Path(args.outdir)
    out.mkdir(parents=True, exist_ok=True)
    stages: dict = {}
    t_start = time.perf_counter()
    with Stage("load model", stages):
        model_file = resolve_model_path(args.model)
        model_sha = hashlib.sha256(Path(model_file).read_bytes()).hexdigest()[:16]
        model = load_model(model_file)
        calc = WannierMLCalculator(model, hamiltonian_threshold=args.threshold)
        print(f"   {model_file} (sha256 {model_sha}…)", flush=True)
    with Stage("build cell", stages):
        lattice = {}
        if args.cell in ("equilibrium", "relax"):  # the model's own AB bilayer: no uniform misfit strain
            a, d = equilibrium_bilayer(WannierMLCalculator(model), "graphene")
            lattice = {"a": a, "interlayer": d}
            print(f"   model's AB bilayer: a = {a:.4f} Å, interlayer {d:.3f} Å", flush=True)
        atoms = twisted_bilayer("graphene", m=args.m, r=1, **lattice)
        angle = float(atoms.info["twist_angle"])
        print(f"   {len(atoms)} atoms, angle {angle:.3f}°, load average {os.getloadavg()}", flush=True)
        atoms.calc = calc
    path = atoms.cell.bandpath("KGMK", npoints=args.npoints, pbc=[True, True, False])
    with Stage("H (unrelaxed)", stages):
        tb0 = calc.get_hamiltonian()
        print(f"   {tb0.nnz:,} stored hoppings ≥ {args.threshold:g} eV, pruning bound "
              f"{tb0.pruning_bound * 1e3:.1f} meV", flush=True)
    with Stage("bands (unrelaxed)", stages):
        bs0, info0 = bands(tb0, path, args.num, "unrelaxed")
    del tb0
    with Stage("relax", stages):
        if args.cell == "relax":
            res = relax_cell_alternating(atoms, fmax=args.fmax, smax=args.smax, optimizer=args.optimizer,
                                         steps=args.steps, max_minutes=args.relax_minutes, progress_every=1)
        else:
            res = relax(atoms, fmax=args.fmax, optimizer=args.optimizer, steps=args.steps,
                        max_minutes=args.relax_minutes, progress_every=1)
        print(f"   {'converged' if res.converged else 'NOT converged: ' + str(res.stopped)}; {res.steps} steps, "
              f"{res.force_calls} force calls, max |F| {res.fmax:.4f} eV/Å", flush=True)
        cell0 = np.array(twisted_bilayer("graphene", m=args.m, r=1).cell)     # the default lattice constant
        in_plane_stress = atoms.get_stress()[[0, 1, 5]]
        atoms.write(out / "relaxed.extxyz")
    with Stage("H (relaxed)", stages):
        tb = calc.get_hamiltonian()
    with Stage("bands (relaxed)", stages):
        bs, info = bands(tb, path, args.num, "relaxed")
    with Stage("DOS", stages):
        mesh = (args.dos_mesh, args.dos_mesh, 1)
        grid, d, (lo, hi), nk_irr = dos_near(tb, mesh, args.dos_num, info["E_D_eV"], args.dos_width)
    with Stage("plots", stages):
        fig, ax = plt.subplots(figsize=(5, 4))
        window = min(0.5, 1.05 * max(np.abs(b.energies - b.reference).max() for b in (bs0, bs)))
        plot_band_points(ax, bs0, "tab:gray", "rigid", window=window, ylabel="E − E_D (eV)", markersize=3)
        plot_band_points(ax, bs, "tab:red", "relaxed", window=window, ylabel="E − E_D (eV)", markersize=3)
        ax.set_title(f"TBG {angle:.3f}°, {len(atoms)} atoms")
        fig.tight_layout()
        fig.savefig(out / "bands.png", dpi=150)
        fig, ax = plt.subplots(figsize=(5, 3.5))
        inside = (grid >= lo) & (grid <= hi)
        e_d = info["E_D_eV"]
        ax.plot(grid[inside] - e_d, d[inside])
        ax.set_xlabel("E − E_D (eV)")
        ax.set_ylabel("DOS (states/eV/cell/spin)")
        ax.set_title(f"relaxed, {mesh[0]}×{mesh[1]} mesh ({nk_irr} irreducible k), σ = {args.dos_width * 1e3:g} meV",
                     fontsize=9)
        fig.tight_layout()
        fig.savefig(out / "dos.png", dpi=150)
    z = atoms.positions[:, 2]
    layer = atoms.arrays["layer"]
    ok = tb.pruning_bound
    summary = {
        "atoms": len(atoms),
        "twist_angle_deg": angle,
        "model": {"file": str(model_file), "sha256_16": model_sha},
        "hamiltonian_threshold_eV": args.threshold,
        "stored_hoppings_relaxed": int(tb.nnz),
        "pruning_bound_meV": 1e3 * ok,
        "relax": {**res.to_dict(), "cell": args.cell, **{f"model_bilayer_{k}_A": v for k, v in lattice.items()},
                  "fmax_target_eV_A": args.fmax, "in_plane_stress_eV_A3": [float(x) for x in in_plane_stress],
                  "in_plane_strain": float(np.sqrt(abs(np.linalg.det(atoms.cell[:2, :2]) /
                                                       np.linalg.det(cell0[:2, :2]))) - 1.0)},
        "corrugation_A": {"bottom": float(np.ptp(z[layer == 0])), "top": float(np.ptp(z[layer == 1]))},
        "mean_interlayer_distance_A": float(z[layer == 1].mean() - z[layer == 0].mean()),
        "bands_unrelaxed": info0,
        "bands_relaxed": info,
        "dos": {"mesh": list(mesh), "irreducible_kpoints": nk_irr, "width_eV": args.dos_width,
                "complete_window_eV": [lo - e_d, hi - e_d],
                "peak_states_per_eV": float(d[inside].max()) if inside.any() else None},
        "stages": stages,
        "total_wall_s": round(time.perf_counter() - t_start, 1),
        "peak_memory_GB": round(max(s["peak_memory_GB"] for s in stages.values()), 2),
        "load_average_end": os.getloadavg(),
        "OPENBLAS_NUM_THREADS": os.environ.get("OPENBLAS_NUM_THREADS"),
        "torch_threads": torch.get_num_threads(),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    print(json.dumps({k: v for k, v in summary.items() if k != "stages"}, indent=1))
    print(f"wrote {out}/relaxed.extxyz, bands.png, dos.png, summary.json")


if __name__ == "__main__":
    main()
