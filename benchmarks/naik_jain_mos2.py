"""Flat valence bands of relaxed twisted bilayer MoS2 near 3.5° and 56.5°, with the committee's spread, against
Naik & Jain, PRL 121, 266401 (2018).

    OMP_NUM_THREADS=1 python benchmarks/naik_jain_mos2.py                     # both cells, ~1,626 atoms each
    OMP_NUM_THREADS=1 python benchmarks/naik_jain_mos2.py --families H --m 5  # quick (7.3°-like cell, 546 atoms)

Naik & Jain measure the twist from the aligned (R, "AA") stacking: 3.5° is the R family twisted by 3.5°, 56.5° is
the H family (2H, "AA'") twisted by 3.5° away from 60°. Both are built here with ``twisted_bilayer("mos2", m=9,
r=1, stacking="AA" | "AA'")`` (θ = 3.48°, 1,626 atoms, 5,962 Wannier orbitals), the positions relaxed with the
shipped single model (preconditioned L-BFGS, ``--fmax``; the in-plane cell stays at the model's builder lattice
constant), then the ``--num`` bands nearest the valence band top (estimated at Γ, M, K below the structure's mid-gap
Fermi level) along Γ–M–K–Γ are computed for the committee-mean H and for each member's H (sparse solver). Widths (meV) = max − min over the path of the highest
(VB1) and second-highest (VB2) valence band, i.e. a lower bound of the width over the zone; the committee spread is
the members' standard deviation (ddof 1) of the width. The gap is the conduction band minimum at Γ, M, K minus the
valence band maximum on the path. Naik & Jain (DFT on force-field-relaxed cells) report a
top-valence-band width of about 23 meV at 3.5° and about 5 meV at 56.5° (the numbers the accuracy issue quotes).

Writes benchmarks/results/naik_jain_mos2.json (merged per family) and naik_jain_mos2.png (bands with ±spread).
Energies in eV (widths meV), lengths in Å.
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

from ase_wannierml.cli import atomic_output, atomic_write_text  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
#: Naik & Jain, PRL 121, 266401 (2018): width of the highest valence band (meV), as quoted in the accuracy issue.
NAIK_JAIN_WIDTH_MEV = {"R": 23.0, "H": 5.0}
FAMILIES = {"R": ("AA", "3.5°"), "H": ("AA'", "56.5°")}


def valence_widths(e_kn: np.ndarray, e_f: float) -> dict:
    """Widths (meV) of the two highest valence bands from ``e_kn`` (nk, num) eV, valence = below the mid-gap ``e_f``;
    ValueError if some k-point has fewer than two states below ``e_f`` (ask for more states)."""
    e_kn = np.asarray(e_kn, dtype=float)
    if e_kn.ndim != 2 or not np.all(np.isfinite(e_kn)) or not np.isfinite(e_f):
        raise ValueError(f"e_kn must be a finite (nk, num) array and e_f finite, got shape {e_kn.shape}, e_f {e_f}")
    below = np.where(e_kn < e_f, e_kn, -np.inf)
    top2 = -np.sort(-below, axis=1)[:, :2]
    if not np.all(np.isfinite(top2)):
        raise ValueError("fewer than two valence states at some k-point: increase --num")
    return {"vb1_width_meV": float(1e3 * np.ptp(top2[:, 0])), "vb2_width_meV": float(1e3 * np.ptp(top2[:, 1])),
            "vbm_eV": float(top2[:, 0].max()), "vbm_k_index": int(top2[:, 0].argmax()),
            "vb1_eV": top2[:, 0].tolist(), "vb2_eV": top2[:, 1].tolist()}


def run_family(family: str, m: int, fmax: float, npoints: int, num: int, steps: int) -> dict:
    import torch

    from ase_wannierml import WannierMLCalculator, load_model, twisted_bilayer
    from ase_wannierml.relaxation import relax

    torch.set_num_threads(1)
    stacking, nj_angle = FAMILIES[family]
    atoms = twisted_bilayer("mos2", m=m, r=1, stacking=stacking)
    theta = atoms.info["twist_angle"]
    label = f"{theta:.2f}°" if family == "R" else f"{60 - theta:.2f}°"
    print(f"[{family}] Naik–Jain {nj_angle}: stacking {stacking}, θ = {theta:.3f}° ({label} in their convention), "
          f"{len(atoms)} atoms", flush=True)
    t0 = time.perf_counter()
    atoms.calc = WannierMLCalculator(load_model("mos2-bilayer"))
    res = relax(atoms, fmax=fmax, steps=steps, logfile=None, progress_every=5)
    t_relax = time.perf_counter() - t0
    print(f"[{family}] relaxed: converged {res.converged}, {res.steps} steps, fmax {res.fmax:.4f} eV/Å, "
          f"{t_relax:.0f} s", flush=True)
    z = atoms.positions[:, 2]
    layer = atoms.arrays["layer"]
    mo = np.array(atoms.get_chemical_symbols()) == "Mo"
    d_mo = z[mo & (layer == 1)].mean() - z[mo & (layer == 0)].mean()
    corrugation = float(np.ptp(z[mo & (layer == 1)]))

    calc = WannierMLCalculator(load_model("mos2-bilayer", committee=True))
    atoms.calc = calc
    t0 = time.perf_counter()
    e_f = calc.get_fermi_level()
    path = atoms.cell.bandpath("GMKG", npoints=npoints, pbc=[True, True, False])
    tbs = [calc.get_hamiltonian()] + calc.get_member_hamiltonians()
    rows = []
    # the states nearest the mid-gap level are mostly conduction states (denser there): aim at the valence band top
    # instead, estimated at the path's k-points Γ, M, K with twice as many states
    special = np.array([[0.0, 0.0, 0.0], [0.5, 0.0, 0.0], [1 / 3, 1 / 3, 0.0]])
    e_sk = tbs[0].eigenvalues(special, num=2 * num, near=e_f)
    vbm_guess = float(np.where(e_sk < e_f, e_sk, -np.inf).max())
    for i, tb in enumerate(tbs):
        e_kn = tb.eigenvalues(path.kpts, num=num, near=vbm_guess)
        rows.append(valence_widths(e_kn, e_f))
        e_sk = e_sk if i == 0 else tb.eigenvalues(special, num=2 * num, near=e_f)
        cbm = float(np.where(e_sk >= e_f, e_sk, np.inf).min())  # conduction band minimum at Γ, M, K
        rows[-1]["gap_eV"] = cbm - max(rows[-1]["vbm_eV"], float(np.where(e_sk < e_f, e_sk, -np.inf).max()))
        print(f"[{family}] {'mean H' if i == 0 else f'member {i}'}: VB1 {rows[-1]['vb1_width_meV']:.1f} meV, "
              f"VB2 {rows[-1]['vb2_width_meV']:.1f} meV, gap {rows[-1]['gap_eV']:.3f} eV", flush=True)
    t_bands = time.perf_counter() - t0
    members = rows[1:]
    out = {
        "family": family, "stacking": stacking, "naik_jain_angle": nj_angle, "twist_m": m,
        "twist_angle_deg": theta, "atoms": len(atoms), "orbitals": int(tbs[0].norb),
        "relax": {"converged": bool(res.converged), "steps": int(res.steps), "fmax_eV_A": float(res.fmax),
                  "target_fmax_eV_A": fmax, "wall_s": t_relax},
        "mean_mo_interlayer_distance_A": float(d_mo), "top_mo_plane_corrugation_A": corrugation,
        "fermi_level_eV": e_f, "vbm_guess_eV": vbm_guess, "kpoints": len(path.kpts), "num_states": num, "bands_wall_s": t_bands,
        "mean_h": rows[0],
        "member_vb1_widths_meV": [r["vb1_width_meV"] for r in members],
        "vb1_width_std_meV": float(np.std([r["vb1_width_meV"] for r in members], ddof=1)),
        "vb2_width_std_meV": float(np.std([r["vb2_width_meV"] for r in members], ddof=1)),
        "gap_std_eV": float(np.std([r["gap_eV"] for r in members], ddof=1)),
        "naik_jain_vb1_width_meV": NAIK_JAIN_WIDTH_MEV[family],
        "path_x": path.get_linear_kpoint_axis()[0].tolist(),
    }
    return out


def plot(results: dict, png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fams = [f for f in ("R", "H") if f in results]
    fig, axes = plt.subplots(1, len(fams), figsize=(5 * len(fams), 4), squeeze=False)
    for ax, fam in zip(axes[0], fams):
        r = results[fam]
        x = np.array(r["path_x"])
        for key, colour in (("vb1_eV", "C0"), ("vb2_eV", "C1")):
            e = 1e3 * (np.array(r["mean_h"][key]) - r["mean_h"]["vbm_eV"])
            ax.plot(x, e, color=colour, label=key[:3].upper())
        ax.set_title(f"Naik–Jain {r['naik_jain_angle']} ({r['atoms']} atoms): VB1 "
                     f"{r['mean_h']['vb1_width_meV']:.1f} ± {r['vb1_width_std_meV']:.1f} meV")
        ax.set_ylabel("E − VBM (meV)")
        ax.set_xticks([])
        ax.legend()
    fig.tight_layout()
    with atomic_output(png) as tmp:
        fig.savefig(tmp, dpi=120)
    plt.close(fig)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--families", nargs="+", choices=sorted(FAMILIES), default=["R", "H"])
    ap.add_argument("--m", type=int, default=9, help="commensurate index (r = 1): 9 → 3.48°, 1,626 atoms")
    ap.add_argument("--fmax", type=float, default=0.01, help="eV/Å")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--npoints", type=int, default=30)
    ap.add_argument("--num", type=int, default=12, help="states nearest the valence band top per k-point")
    ap.add_argument("--out", type=Path, default=RESULTS / "naik_jain_mos2.json")
    args = ap.parse_args(argv)
    if args.m < 1 or args.npoints < 2 or args.num < 4:
        ap.error("need --m >= 1, --npoints >= 2 and --num >= 4")
    results = json.loads(args.out.read_text()) if args.out.is_file() else {}
    for fam in args.families:
        results[fam] = run_family(fam, args.m, args.fmax, args.npoints, args.num, args.steps)
        atomic_write_text(args.out, json.dumps(results, indent=1))   # each family as soon as it is done
    print("| Naik–Jain angle | atoms | VB1 width, mean H (meV) | committee std (meV) | VB2 width (meV) | gap (eV) | "
          "Naik–Jain VB1 (meV) |")
    print("|---|---|---|---|---|---|---|")
    for fam in ("R", "H"):
        if fam in results:
            r = results[fam]
            print(f"| {r['naik_jain_angle']} | {r['atoms']} | {r['mean_h']['vb1_width_meV']:.1f} | "
                  f"{r['vb1_width_std_meV']:.1f} | {r['mean_h']['vb2_width_meV']:.1f} | {r['mean_h']['gap_eV']:.3f} | "
                  f"{r['naik_jain_vb1_width_meV']:.0f} |")
    plot(results, args.out.with_suffix(".png"))
    print(f"wrote {args.out} and {args.out.with_suffix('.png')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
