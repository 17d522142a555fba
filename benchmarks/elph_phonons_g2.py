"""Phonons and electron–phonon coupling of the shipped models against experiment and Piscanec et al. (2004).

    python benchmarks/elph_phonons_g2.py     # ≈ 2 min on one core; table + benchmarks/results/elph_phonons_g2.json
    python benchmarks/elph_phonons_g2.py --graphene-model runs/x/model.pt --out benchmarks/results/x.json  # a candidate

1. Each shipped model's bilayer (graphene AB, MoS2 2H) is relaxed with its own calculator (float64, positions and
   in-plane cell, fmax 1e-3 eV/Å, smax 1e-5 eV/Å³), then Γ phonons from ASE ``Phonons`` force constants
   (``elph.phonons.modes_at_q``, central differences, 0.01 Å); the interlayer shear and breathing modes are picked
   by their rigid-layer character, E2g (graphene) as the highest Γ mode. Experiment: AB bilayer graphene shear
   32 cm⁻¹ (Tan et al., Nat. Mater. 11, 294 (2012)), G/E2g 1580 cm⁻¹; 2H bilayer MoS2 shear 22–23 cm⁻¹ and
   breathing ≈ 40 cm⁻¹ (Zhang et al., PRB 87, 115413 (2013)).
2. Graphene Fermi-surface ⟨g²⟩ of Γ-E2g and K-A1' (``elph.coupling``): monolayer, and per layer of the AB bilayer
   (sum over the 4 π states at K and K+q, mean over the near-degenerate layer pair of modes, see
   ``fermi_average_g2``). K modes from the √3×√3 supercell (K folds onto its Γ). Piscanec et al., PRL 93, 185503
   (2004): ⟨g²_Γ⟩ = 0.0405 eV², ⟨g²_K⟩ = 0.0994 eV² with their ħω_Γ = 196 meV, ħω_K = 161 meV; the
   ω-independent ⟨D²⟩ = ⟨g²⟩ · 2Mω/ħ² is compared as well (their values converted with their ω: 45.6 and
   92.1 eV²/Å²).
"""
from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import json  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

RESULT = Path(__file__).resolve().parent / "results" / "elph_phonons_g2.json"
PISCANEC = {"gamma": {"g2": 0.0405, "hw_meV": 196.0}, "K": {"g2": 0.0994, "hw_meV": 161.0}}
EXPERIMENT = {"graphene": {"shear": 32.0, "E2g": 1580.0}, "mos2": {"shear": 22.5, "breathing": 40.0}}


def relaxed_bilayer(material: str, model: str):
    from ase_wannierml import WannierMLCalculator
    from ase_wannierml.relaxation import relax
    from ase_wannierml.structures import bilayer

    atoms = bilayer(material)
    atoms.calc = WannierMLCalculator(model, dtype=torch.float64)
    res = relax(atoms, fmax=1e-3, cell=True, smax=1e-5, logfile=None)
    return atoms, res


def d2_from_g2(g2: float, freq_cm: float) -> float:
    """⟨D²⟩ (eV²/Å²) = ⟨g²⟩ / (ħ/(2 M_C ω))."""
    from ase_wannierml.elph.coupling import zero_point_length

    return g2 / (zero_point_length(freq_cm) ** 2 / 12.011)


def phonon_table(graphene_model: str = "graphene-bilayer", mos2_model: str = "mos2-bilayer") -> dict:
    from ase_wannierml.elph.phonons import layer_character, modes_at_q

    out = {}
    for material, model in (("graphene", graphene_model), ("mos2", mos2_model)):
        t0 = time.perf_counter()
        atoms, res = relaxed_bilayer(material, model)
        t1 = time.perf_counter()
        freq, e = modes_at_q(atoms, atoms.calc)
        t2 = time.perf_counter()
        ch = layer_character(atoms, e)
        layer = atoms.arrays["layer"]
        z = [atoms.positions[layer == k, 2].mean() for k in (0, 1)]
        row = {"a_A": float(atoms.cell.lengths()[0]), "layer_distance_A": float(abs(z[1] - z[0])),
               "relax_s": round(t1 - t0, 2), "phonon_s": round(t2 - t1, 2), "force_calls": 6 * len(atoms) + 1,
               "gamma_cm": [round(float(f), 2) for f in freq],
               "shear_cm": float(np.mean(freq[ch["shear"] > 0.5])),
               "breathing_cm": float(freq[np.argmax(ch["breathing"])])}
        if material == "graphene":
            row["E2g_cm"] = float(freq.max())
        row["experiment_cm"] = EXPERIMENT[material]
        out[material] = row
    return out


def g2_table(graphene_model: str = "graphene-bilayer") -> dict:
    from ase_wannierml import WannierMLCalculator
    from ase_wannierml.elph.coupling import fermi_average_g2, matrix_elements
    from ase_wannierml.elph.phonons import commensurate_supercell, modes_at_q
    from ase_wannierml.relaxation import relax
    from ase_wannierml.structures import bilayer

    calc = WannierMLCalculator(graphene_model, dtype=torch.float64)
    bi = bilayer("graphene")
    mono = bi[bi.arrays["layer"] == 0]
    out = {}
    for name, atoms, n_layers in (("monolayer", mono, 1), ("AB bilayer, per layer", bi, 2)):
        atoms.calc = calc
        relax(atoms, fmax=1e-3, cell=True, smax=1e-5, logfile=None)
        K = atoms.cell.bandpath().special_points["K"]
        n_pi = 2 * n_layers
        row = {}
        t0 = time.perf_counter()
        freq, e = modes_at_q(atoms, calc, (0, 0, 0))
        top = np.argsort(freq)[-2 * n_layers:]                    # E2g doublet (per layer)
        r = matrix_elements(calc, atoms, (0, 0, 0), e[top], [K], (1, 1, 1))
        g2 = fermi_average_g2(r["M"][:, 0], freq[top])
        row["gamma"] = {"freq_cm": float(freq[top].mean()), "g2_eV2": g2, "D2_eV2_A2": d2_from_g2(g2, freq[top].mean()),
                        "states_at_K_eV": r["e_k"][0].round(4).tolist(), "wall_s": round(time.perf_counter() - t0, 2)}
        t0 = time.perf_counter()
        P = commensurate_supercell(K)
        fK, eK = modes_at_q(atoms, calc, K, supercell=P)
        r = matrix_elements(calc, atoms, K, eK, [K], P)
        per_mode = np.array([fermi_average_g2(r["M"][nu:nu + 1, 0], fK[nu:nu + 1]) if fK[nu] > 50 else 0.0
                             for nu in range(len(fK))])
        sel = np.argsort(per_mode)[-n_layers:]                     # A1' (one per layer)
        g2 = float(per_mode[sel].mean())
        row["K"] = {"freq_cm": float(fK[sel].mean()), "g2_eV2": g2, "D2_eV2_A2": d2_from_g2(g2, fK[sel].mean()),
                    "all_modes": [[round(float(f), 1), round(float(g), 5)] for f, g in zip(fK, per_mode)],
                    "supercell": P.tolist(), "wall_s": round(time.perf_counter() - t0, 2)}
        if n_pi == 4:  # the true Fermi surface of the bilayer at neutrality: the 2 low-energy states at K
            low = [1, 2]
            freq_top = freq[top]
            rg = matrix_elements(calc, atoms, (0, 0, 0), e[top], [K], (1, 1, 1), bands=low)
            row["gamma_low_energy_pair"] = {"per_mode_g2_eV2": [
                float(fermi_average_g2(rg["M"][nu:nu + 1, 0], freq_top[nu:nu + 1])) for nu in range(len(top))],
                "freq_cm": freq_top.round(1).tolist()}
        out[name] = row
    ref = {k: {"g2_eV2": v["g2"], "freq_cm": v["hw_meV"] * 8.065543937,
               "D2_eV2_A2": d2_from_g2(v["g2"], v["hw_meV"] * 8.065543937)} for k, v in PISCANEC.items()}
    out["Piscanec2004"] = ref
    return out


def main(argv: list[str] | None = None) -> None:
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--graphene-model", default="graphene-bilayer", help="shipped name or .pt (default: shipped)")
    ap.add_argument("--mos2-model", default="mos2-bilayer", help="shipped name or .pt (default: shipped)")
    ap.add_argument("--out", type=Path, default=RESULT, help="JSON to write")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    ph = phonon_table(args.graphene_model, args.mos2_model)
    g2 = g2_table(args.graphene_model)
    result = {"models": {"graphene": args.graphene_model, "mos2": args.mos2_model}, "phonons": ph, "g2": g2,
              "total_s": round(time.perf_counter() - t0, 1), "torch_threads": 1}
    print(f"{'':10s} {'a (Å)':>7s} {'d (Å)':>6s} {'shear':>7s} {'breath':>7s} {'E2g':>8s}   experiment")
    for m, r in ph.items():
        print(f"{m:10s} {r['a_A']:7.4f} {r['layer_distance_A']:6.3f} {r['shear_cm']:7.2f} {r['breathing_cm']:7.2f} "
              f"{r.get('E2g_cm', float('nan')):8.1f}   {r['experiment_cm']}")
    ref = g2["Piscanec2004"]
    print(f"\n{'graphene':24s} {'<g2>_G':>8s} {'<D2>_G':>7s} {'w_G':>7s} {'<g2>_K':>8s} {'<D2>_K':>7s} {'w_K':>7s}")
    for name in ("monolayer", "AB bilayer, per layer"):
        r = g2[name]
        print(f"{name:24s} {r['gamma']['g2_eV2']:8.4f} {r['gamma']['D2_eV2_A2']:7.1f} {r['gamma']['freq_cm']:7.1f} "
              f"{r['K']['g2_eV2']:8.4f} {r['K']['D2_eV2_A2']:7.1f} {r['K']['freq_cm']:7.1f}")
    print(f"{'Piscanec 2004':24s} {ref['gamma']['g2_eV2']:8.4f} {ref['gamma']['D2_eV2_A2']:7.1f} "
          f"{ref['gamma']['freq_cm']:7.1f} {ref['K']['g2_eV2']:8.4f} {ref['K']['D2_eV2_A2']:7.1f} "
          f"{ref['K']['freq_cm']:7.1f}")
    from ase_wannierml.cli import atomic_write_text

    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out, json.dumps(result, indent=1))
    print(f"\nwrote {args.out} ({result['total_s']} s)")


if __name__ == "__main__":
    main()
