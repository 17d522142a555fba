"""Phonons and electron–phonon coupling of AB bilayer graphene from the one shipped model.

    python examples/electron_phonon_graphene.py --outdir elph_graphene_output     # ≈ 3–6 min on one busy core

1. relax the AB bilayer with the model (positions + in-plane cell, float64);
2. phonon dispersion Γ–M–K–Γ from ASE ``Phonons`` on a ``--supercell`` (default 6×6×1, 144 atoms, 25 force
   calls) → ``phonons.png``; Γ frequencies of the interlayer shear / breathing / E2g modes;
3. dH/dλ along the E2g pattern by autograd (``calc.get_hamiltonian_derivative``) and the Fermi-surface
   ⟨g²⟩ per layer of the Γ-E2g and K-A1' modes (``ase_wannierml.elph.coupling``);
4. |g|² of the E2g modes between the two π bands along K → Γ (k and k+q = k) → ``g_E2g.png``.
Units: cm⁻¹ for phonons, eV for g, eV² for ⟨g²⟩. Writes ``summary.json`` too.
"""
from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

from ase_wannierml.threads import safe_default_threads, set_threads  # noqa: E402


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--supercell", type=int, default=6)
    ap.add_argument("--outdir", default="elph_graphene_output")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: 1 on a busy machine)")
    args = ap.parse_args(argv)
    set_threads(args.threads if args.threads is not None else safe_default_threads())

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ase_wannierml import WannierMLCalculator
    from ase_wannierml.elph.coupling import fermi_average_g2, matrix_elements, zero_point_length
    from ase_wannierml.elph.phonons import (EV_TO_CM, commensurate_supercell, layer_character, modes_at_q,
                                            phonon_bands)
    from ase_wannierml.relaxation import relax
    from ase_wannierml.structures import bilayer

    out = Path(args.outdir)
    out.mkdir(parents=True, exist_ok=True)
    summary: dict = {"timings_s": {}}
    t0 = time.perf_counter()
    calc = WannierMLCalculator("graphene-bilayer", dtype=torch.float64)
    atoms = bilayer("graphene")
    atoms.calc = calc
    relax(atoms, fmax=1e-3, cell=True, smax=1e-5, logfile=None)
    summary["a_A"] = float(atoms.cell.lengths()[0])
    summary["timings_s"]["relax"] = round(time.perf_counter() - t0, 1)

    t0 = time.perf_counter()
    n = args.supercell
    bs = phonon_bands(atoms, calc, path="GMKG", npoints=80, supercell=(n, n, 1))
    summary["timings_s"]["phonon_bands"] = round(time.perf_counter() - t0, 1)
    fig, ax = plt.subplots(figsize=(5, 4))
    x, xt, labels = bs.get_labels()
    ax.plot(x, bs.energies[0] * EV_TO_CM, "k-", lw=1)
    for v in xt:
        ax.axvline(v, color="0.7", lw=0.5)
    ax.set_xticks(xt, [s.replace("G", "Γ") for s in labels])
    ax.set_xlim(x[0], x[-1])
    ax.set_ylabel("frequency (cm⁻¹)")
    ax.set_title(f"AB bilayer graphene, model ({n}×{n}×1 supercell)")
    fig.tight_layout()
    fig.savefig(out / "phonons.png", dpi=120)

    t0 = time.perf_counter()
    freq, e = modes_at_q(atoms, calc)
    ch = layer_character(atoms, e)
    summary["gamma_cm"] = {"shear": float(freq[ch["shear"] > 0.5].mean()),
                           "breathing": float(freq[np.argmax(ch["breathing"])]), "E2g": float(freq.max())}
    special = atoms.cell.bandpath().special_points
    K = special["K"]
    top = np.argsort(freq)[-4:]
    r = matrix_elements(calc, atoms, (0, 0, 0), e[top], [K], (1, 1, 1))
    summary["g2_gamma_E2g_per_layer_eV2"] = fermi_average_g2(r["M"][:, 0], freq[top])
    P = commensurate_supercell(K)
    fK, eK = modes_at_q(atoms, calc, K, supercell=P)
    rK = matrix_elements(calc, atoms, K, eK, [K], P)
    per_mode = [fermi_average_g2(rK["M"][nu:nu + 1, 0], fK[nu:nu + 1]) if fK[nu] > 50 else 0.0
                for nu in range(len(fK))]
    sel = np.argsort(per_mode)[-2:]
    summary["g2_K_A1p_per_layer_eV2"] = float(np.mean(np.array(per_mode)[sel]))
    summary["omega_K_A1p_cm"] = float(fK[sel].mean())
    summary["reference_Piscanec2004_eV2"] = {"gamma": 0.0405, "K": 0.0994}
    summary["timings_s"]["g2"] = round(time.perf_counter() - t0, 1)

    t0 = time.perf_counter()
    s = np.linspace(0.0, 1.0, 41)[1:]
    kpath = K[None] * (1 - s[:, None])                                   # K → Γ
    rp = matrix_elements(calc, atoms, (0, 0, 0), e[top], kpath, (1, 1, 1), bands=[1, 2])
    amp2 = zero_point_length(freq[top]) ** 2
    g2_path = ((np.abs(rp["M"]) ** 2) * amp2[:, None, None, None]).sum(axis=0)   # (nk, 2, 2) summed over modes
    summary["timings_s"]["g_path"] = round(time.perf_counter() - t0, 1)
    kdist = np.linalg.norm((K[None] - kpath) @ atoms.cell.reciprocal()[:] * 2 * np.pi, axis=1)
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for (m, nn), lab in (((0, 0), "intraband (lower)"), ((1, 1), "intraband (upper)"), ((1, 0), "interband")):
        ax.plot(kdist, g2_path[:, m, nn] * 1e3, label=lab)
    ax.set_xlabel("|k − K| (Å⁻¹), towards Γ")
    ax.set_ylabel("Σ_E2g |g|² (10⁻³ eV²)")
    ax.set_title("E2g coupling of the two low-energy bands")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "g_E2g.png", dpi=120)
    tmp = out / "summary.json.tmp"
    tmp.write_text(json.dumps(summary, indent=1))
    os.replace(tmp, out / "summary.json")
    print(json.dumps(summary, indent=1))
    return summary


if __name__ == "__main__":
    main()
