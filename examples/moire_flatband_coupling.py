"""Coupling of the flat bands of twisted bilayer graphene to one q = 0 mode (layer breathing or interlayer shear),
by dH/dλ from autograd and Hellmann–Feynman matrix elements on the sparse solver's flat-band states.

    python examples/moire_flatband_coupling.py --m 11 --mode breathing      # 2.88°, 1,588 atoms
    python examples/moire_flatband_coupling.py --m 31 --mode breathing --kpts K   # 1.05°, 11,908 atoms

The cell is built rigid (not relaxed) at the lattice constant and interlayer distance of the model's relaxed AB
bilayer (``relaxation.equilibrium_bilayer``). λ is the relative displacement of the two layers (Å): breathing =
layers apart along z, shear = layers sliding along x. Per k-point: the ``--num`` states nearest the Dirac energy
E_D (found by band index at the moiré K point), their coupling matrix ⟨ψ_m|dH/dλ|ψ_n⟩ and the first-order shifts
dE_n/dλ (meV/Å; degenerate perturbation theory inside clusters). g = dE/dλ · sqrt(ħ / (2 μ ω)) with μ the reduced
mass of the two layers of one moiré cell and ω the mode's frequency in the model's AB bilayer (Γ phonons).
Every stage is timed (wall s) with the process's peak RSS (GB) after it; ``--json`` writes them.
Memory: H and dH/dλ are two sparse ``TightBinding`` objects (O(nnz)); no 3N × norb² object exists.
"""
from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import resource  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402


def peak_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--m", type=int, default=11, help="twist index (r = 1): 11 → 2.88°, 31 → 1.05°")
    ap.add_argument("--mode", choices=["breathing", "shear"], default="breathing")
    ap.add_argument("--num", type=int, default=8, help="states near E_D per k-point")
    ap.add_argument("--kpts", default="K,G,M", help="moiré special points (comma separated)")
    ap.add_argument("--threshold", type=float, default=3e-4, help="drop |H_ij(R)| below this (eV)")
    ap.add_argument("--json", default=None, help="write the results here")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)

    from ase_wannierml import WannierMLCalculator
    from ase_wannierml.elph.coupling import HBAR2_OVER_AMU_A2
    from ase_wannierml.elph.flatband import rigid_layer_pattern, state_coupling
    from ase_wannierml.elph.phonons import EV_TO_CM, layer_character, modes_at_q
    from ase_wannierml.relaxation import equilibrium_bilayer, relax
    from ase_wannierml.structures import bilayer, twisted_bilayer
    from ase_wannierml.tb.flatbands import neutrality_dirac_energy

    stages: dict = {}

    def stage(name: str, t0: float) -> None:
        stages[name] = {"wall_s": round(time.perf_counter() - t0, 2), "peak_rss_GB": round(peak_gb(), 3)}
        print(f"{name:28s} {stages[name]['wall_s']:9.2f} s   peak RSS {stages[name]['peak_rss_GB']:.2f} GB", flush=True)

    t0 = time.perf_counter()
    calc = WannierMLCalculator("graphene-bilayer", hamiltonian_threshold=args.threshold)
    calc64 = WannierMLCalculator("graphene-bilayer", dtype=torch.float64)
    a, d = equilibrium_bilayer(calc64, "graphene")
    ab = bilayer("graphene", a=a, interlayer=d)
    ab.calc = calc64
    relax(ab, fmax=1e-4, logfile=None)
    freq, e = modes_at_q(ab, calc64)
    ch = layer_character(ab, e)
    omega_cm = float(freq[np.argmax(ch["breathing"])] if args.mode == "breathing" else freq[ch["shear"] > 0.5].mean())
    stage("AB bilayer: a, d, ω", t0)

    t0 = time.perf_counter()
    atoms = twisted_bilayer("graphene", m=args.m, r=1, a=a, interlayer=d)
    theta = float(atoms.info["twist_angle"])
    print(f"θ = {theta:.3f}°, {len(atoms)} atoms, a = {a:.4f} Å, d = {d:.3f} Å, ω({args.mode}) = {omega_cm:.1f} cm⁻¹")
    tb = calc.get_hamiltonian(atoms)
    stage("H (model)", t0)

    t0 = time.perf_counter()
    u = rigid_layer_pattern(atoms, args.mode)
    dtb = calc.get_hamiltonian_derivative(u, atoms=atoms)
    stage("dH/dλ (forward-mode JVP)", t0)

    t0 = time.perf_counter()
    special = atoms.cell.bandpath().special_points
    guess = tb.fermi_energy if tb.fermi_energy is not None else float(tb.fermi_level())  # model E_F (eV)
    e_d, _ = neutrality_dirac_energy(tb, special["K"], guess)
    stage("E_D at moiré K", t0)

    t0 = time.perf_counter()
    names = [s.strip() for s in args.kpts.split(",")]
    kpts = np.array([special[n] for n in names])
    res = state_coupling(tb, dtb, kpts, args.num, e_d)
    stage("states + <ψ|dH|ψ>", t0)

    masses = atoms.get_masses()
    layer = atoms.arrays["layer"]
    m0, m1 = masses[layer == 0].sum(), masses[layer == 1].sum()
    mu = m0 * m1 / (m0 + m1)                                          # amu, relative coordinate λ
    zpl = np.sqrt(HBAR2_OVER_AMU_A2 / (2.0 * omega_cm / EV_TO_CM) / mu)  # Å
    out = {"m": args.m, "theta_deg": theta, "n_atoms": len(atoms), "norb": tb.norb, "nnz_H": tb.nnz,
           "nnz_dH": dtb.nnz, "mode": args.mode, "omega_cm": omega_cm, "E_D_eV": e_d,
           "zero_point_amplitude_A": float(zpl), "threshold_eV": args.threshold, "stages": stages, "kpoints": {}}
    print(f"\n{'k':3s} {'E − E_D (meV)':>14s} {'dE/dλ (meV/Å)':>14s} {'g (meV)':>10s}")
    for ik, name in enumerate(names):
        en = (res["energies"][ik] - e_d) * 1e3
        sh = res["shifts"][ik] * 1e3
        out["kpoints"][name] = {"E_minus_ED_meV": en.round(4).tolist(), "dE_dlambda_meV_per_A": sh.round(4).tolist(),
                                "g_meV": (sh * zpl).round(6).tolist(),
                                "coupling_matrix_norm_meV_per_A": float(np.linalg.norm(res["matrix"][ik], 2) * 1e3)}
        for x, s in zip(en, sh):
            print(f"{name:3s} {x:14.3f} {s:14.2f} {s * zpl:10.5f}")
    if args.json:
        tmp = args.json + ".tmp"
        with open(tmp, "w") as f:
            json.dump(out, f, indent=1)
        os.replace(tmp, args.json)
    return out


if __name__ == "__main__":
    main()
