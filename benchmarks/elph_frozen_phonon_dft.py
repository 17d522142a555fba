"""DFT frozen-phonon check of the model's dH/dR: E2g-pattern displacements of the 4-atom AB bilayer graphene cell.

    nice -n 10 python benchmarks/elph_frozen_phonon_dft.py run        # 3 DFT+Wannier frames (~2-4 min CPU each)
    python benchmarks/elph_frozen_phonon_dft.py compare      # table + benchmarks/results/elph_frozen_phonon_dft.json

``run`` displaces the atoms of the DFT reference AB cell (a = 2.46 Å, interlayer 3.35 Å, the workflow's
``0000-refAB`` geometry) by λ·e with e the in-phase E2g pattern (sublattice A +x̂, B −x̂ in both layers, |e_a| = 1)
for λ = 0, +u, −u (u = 0.02 Å) and runs the project's own workflow (``dft.workflow.run_frame``, kind ``user``) for
each, into ``scratch/elph/dft`` (not ``datasets/``). Resumable: finished frames are skipped.

``compare`` reads each frame's Wannier H (``TightBinding.from_wannier90``) and compares the 4 eigenvalues at K and
the splitting of the two low-energy states at K (degenerate at λ = 0) with the model's prediction
H_model(0) + λ dH/dλ (``WannierMLCalculator.get_hamiltonian_derivative``), and with the model's own H at the
displaced geometry.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
OUT_DIR = REPO / "scratch" / "elph" / "dft"
RESULT = REPO / "benchmarks" / "results" / "elph_frozen_phonon_dft.json"
U = 0.02  # Å
K_POINT = np.array([[1 / 3, 1 / 3, 0.0]])


def e2g_pattern() -> np.ndarray:
    """(4, 3) unit-length per-atom displacement pattern: atoms 0, 2 (sublattice A of each layer) +x, 1, 3 −x."""
    return np.array([[1.0, 0, 0], [-1.0, 0, 0], [1.0, 0, 0], [-1.0, 0, 0]])


def base_atoms():
    from ase_wannierml.dft.materials import get_material
    from ase_wannierml.dft.sampling import build_structure, reference_frames

    material = get_material("graphene-bilayer")
    ref = reference_frames(material)[0]
    atoms = build_structure(material, ref)
    atoms.set_array("layer", np.asarray(atoms.get_array("layer"), dtype=int))
    return material, atoms


def frame_ids() -> dict[str, float]:
    return {"e2g-u0": 0.0, "e2g-p020": U, "e2g-m020": -U}


def run() -> int:
    from ase_wannierml.dft.codes import Runner
    from ase_wannierml.dft.sampling import FrameParams
    from ase_wannierml.dft.workflow import run_frame

    material, atoms = base_atoms()
    for fid, lam in frame_ids().items():
        if (OUT_DIR / "frames" / fid / "meta.json").exists():
            continue
        disp = atoms.copy()
        disp.positions += lam * e2g_pattern()
        params = FrameParams(frame_id=fid, material=material.name, seed=0, kind="user",
                             notes={"displacement_A": lam, "pattern": "E2g in-phase, A +x, B -x"})
        t0 = time.perf_counter()
        meta = run_frame(material, params, OUT_DIR, OUT_DIR / "scratch", Runner(nprocs=1, npools=1), atoms=disp)
        print(f"{fid}: {meta['status']} {meta.get('reason', '')[:200]} {time.perf_counter() - t0:.0f} s", flush=True)
    return 0


def _dft_tb(fid: str):
    from ase.io import read

    from ase_wannierml.tb.tightbinding import TightBinding

    frame = OUT_DIR / "frames" / fid
    meta = json.loads((frame / "meta.json").read_text())
    if meta["status"] != "ok":
        raise RuntimeError(f"frame {fid} was rejected: {meta.get('reason')}")
    atoms = read(frame / "structure.extxyz")
    tb = TightBinding.from_wannier90(frame / "wannier90_hr.dat.gz", atoms=atoms, orbitals={"C": ["pz"]},
                                     fermi_level=meta["fermi_level_eV"])
    return tb, meta


def compare() -> int:
    import torch

    from ase_wannierml import WannierMLCalculator
    from ase_wannierml.elph.coupling import zero_point_length

    torch.set_num_threads(1)
    _, atoms = base_atoms()
    k = atoms.cell.bandpath().special_points["K"][None]
    ids = frame_ids()
    missing = [f for f in ids if not (OUT_DIR / "frames" / f / "meta.json").exists()]
    if missing:
        print(f"frames not run yet: {missing}; run `nice -n 10 python {Path(__file__).name} run` first")
        return 1
    dft = {fid: _dft_tb(fid) for fid in ids}
    e_dft = {fid: np.linalg.eigvalsh(tb.hamiltonian(k)[0]) - meta["fermi_level_eV"] for fid, (tb, meta) in dft.items()}
    h_dft = {fid: tb.hamiltonian(k)[0] for fid, (tb, _) in dft.items()}
    dh_dft = (h_dft["e2g-p020"] - h_dft["e2g-m020"]) / (2 * U)                 # eV/Å, Wannier basis at K

    calc = WannierMLCalculator("graphene-bilayer", dtype=torch.float64)
    pattern = e2g_pattern()
    t0 = time.perf_counter()
    h0 = calc.get_hamiltonian(atoms)
    dtb = calc.get_hamiltonian_derivative(pattern, atoms=atoms)
    t_model = time.perf_counter() - t0
    hk0, dhk = h0.hamiltonian(k)[0], dtb.hamiltonian(k)[0]
    e0_model = np.linalg.eigvalsh(hk0)
    rows = {}
    for fid, lam in ids.items():
        moved = atoms.copy()
        moved.positions += lam * pattern
        e_full = np.linalg.eigvalsh(calc.model.predict_tightbinding(moved).hamiltonian(k)[0])
        e_lin = np.linalg.eigvalsh(hk0 + lam * dhk)
        c = {name: v - v.mean() for name, v in (("dft", e_dft[fid] - e_dft["e2g-u0"]), ("lin", e_lin - e0_model),
                                                 ("full", e_full - e0_model))}
        split = {"dft": e_dft[fid][2] - e_dft[fid][1], "lin": e_lin[2] - e_lin[1], "full": e_full[2] - e_full[1]}
        rows[fid] = {"lambda_A": lam, "dft_eV": (e_dft[fid]).round(5).tolist(),
                     "central_pair_splitting_meV": {k2: round(float(v) * 1e3, 2) for k2, v in split.items()},
                     "centred_change_meV": {k2: (v * 1e3).round(2).tolist() for k2, v in c.items()},
                     "dft_change_meV": ((e_dft[fid] - e_dft["e2g-u0"]) * 1e3).round(3).tolist(),
                     "model_linear_change_meV": ((e_lin - e0_model) * 1e3).round(3).tolist(),
                     "model_full_change_meV": ((e_full - e0_model) * 1e3).round(3).tolist()}
    # per-layer <g2>_Γ of this pattern: normalised eigenvector e = pattern / 2 (4 atoms), M = dH_e / sqrt(M_C),
    # sum over the 4 π states at K (= the whole Wannier space: Frobenius norm), 1/4 (pairs), ħ/(2ω)
    mass = 12.011
    freq_cm = {"piscanec_196meV": 196.0 * 8.065543937}
    d2 = {"dft_frozen_phonon": float(np.linalg.norm(dh_dft / 2) ** 2 / 4),
          "model_autograd": float(np.linalg.norm(dhk / 2) ** 2 / 4)}
    g2 = {name: {w: v / mass * float(zero_point_length(f)) ** 2 for w, f in freq_cm.items()} for name, v in d2.items()}
    centred_u0 = (e_dft["e2g-u0"] - e_dft["e2g-u0"].mean()) * 1e3
    result = {"states_K_u0_minus_mean_meV": {"dft": centred_u0.round(2).tolist(),
                                             "model": ((e0_model - e0_model.mean()) * 1e3).round(2).tolist()},
              "pattern": "in-phase E2g: atoms 0, 2 +x, atoms 1, 3 -x (Å per unit λ)", "u_A": U, "k_K": k[0].tolist(),
              "eigen_K": rows, "D2_per_layer_eV2_A2": d2, "g2_per_layer_eV2": g2,
              "dH_K_dft_eV_A": np.abs(dh_dft).round(4).tolist(), "dH_K_model_eV_A": np.abs(dhk).round(4).tolist(),
              "dft_frame_wall_s": {fid: m["timings_s"]["total"] for fid, (_, m) in dft.items()},
              "model_H_plus_dH_s": round(t_model, 2)}
    print(f"E2g frozen phonon, AB bilayer graphene, K = {k[0].round(4).tolist()}; eigenvalue changes (meV):")
    for fid, r in rows.items():
        if r["lambda_A"] == 0:
            continue
        c = r["centred_change_meV"]
        print(f"  λ = {r['lambda_A']:+.3f} Å  DFT {r['dft_change_meV']} (vs its own E_F)")
        print(f"                model H0+λdH {r['model_linear_change_meV']}  "
              f"model H(r+λu) {r['model_full_change_meV']}")
        sp = r["central_pair_splitting_meV"]
        print(f"    splitting of the 2 central states at K: DFT {sp['dft']}, model H0+λdH {sp['lin']}, "
              f"model H(r+λu) {sp['full']} meV")
        print(f"    minus the mean shift: DFT {c['dft']}  model H0+λdH {c['lin']}  model H(r+λu) {c['full']}")
    print(f"states at K, λ = 0, minus their mean (meV): DFT {centred_u0.round(1)}"
          f"  model {((e0_model - e0_model.mean()) * 1e3).round(1)}")
    print(f"|dH(K)| DFT (eV/Å):\n{np.abs(dh_dft).round(3)}\nmodel:\n{np.abs(dhk).round(3)}")
    print(f"per-layer <D²>_Γ (eV²/Å²): DFT {d2['dft_frozen_phonon']:.2f}, model {d2['model_autograd']:.2f}, "
          f"Piscanec 45.6; <g²>_Γ at ħω = 196 meV: DFT {g2['dft_frozen_phonon']['piscanec_196meV']:.4f}, "
          f"model {g2['model_autograd']['piscanec_196meV']:.4f}, Piscanec 0.0405 eV²")
    tmp = RESULT.with_suffix(".tmp")
    tmp.write_text(json.dumps(result, indent=1))
    os.replace(tmp, RESULT)
    print(f"wrote {RESULT}")
    return 0


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("what", choices=["run", "compare"])
    args = ap.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    if args.what == "run":
        sys.exit(run())
    sys.exit(compare())
