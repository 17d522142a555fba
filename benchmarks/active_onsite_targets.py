"""Graphene Wannier targets per frame (docs/accuracy.md, "The onsite error"): mean onsite energy relative to the
frame's vacuum level, mean intralayer 1st / 2nd / 3rd-neighbour hoppings t1 / t2 / t3, the T = 0 neutrality level
with and without Wannier90's Wigner-Seitz shifts, interlayer distance and corrugation. All eV / Å.

    OMP_NUM_THREADS=1 python benchmarks/active_onsite_targets.py
      -> benchmarks/results/active_onsite_targets_graphene.json (per-frame rows and the summary correlations)
"""
import json, sys
import numpy as np
from pathlib import Path
from ase_wannierml.tb.tightbinding import TightBinding
from ase_wannierml.training.frames import find_frames, load_frame_dir
from ase_wannierml.training.targets import neutrality_level
from ase.geometry import get_distances

rows = []
for p in find_frames([Path(__file__).resolve().parents[1] / "datasets" / "graphene-bilayer" / "frames"]):
    if not (p / "wannier90_hr.dat.gz").is_file():
        continue
    meta = json.loads((p / "meta.json").read_text())
    if meta.get("status") != "ok":
        continue
    fr = load_frame_dir(p)
    tb = fr.tb
    vac = meta.get("vacuum_level_eV")
    a = fr.atoms
    R, r, c, v = tb.R, tb.rows, tb.cols, np.real(tb.values)
    n = len(a)
    atom = tb.orbitals.atom_index
    on = v[(R == 0).all(1) & (r == c)]
    # pair distances of each element (Wannier centres on atoms: use atom positions + R @ cell)
    pos = a.positions
    d = np.linalg.norm(pos[atom[c]] + R @ a.cell.array - pos[atom[r]], axis=1)
    lay = a.arrays["layer"]
    same = lay[atom[r]] == lay[atom[c]]
    t1 = v[same & (d > 1.2) & (d < 1.7)]
    t2 = v[same & (d > 2.2) & (d < 2.7)]
    t3 = v[same & (d > 2.7) & (d < 3.1)]
    per = np.array([True, True, False])
    en = neutrality_level(R, r, c, tb.values, tb.norb, per, float(tb.norb))
    try:
        tb0 = TightBinding.from_wannier90(p / "wannier90_hr.dat.gz", atoms=a, wsvec=None)
        en0 = neutrality_level(tb0.R, tb0.rows, tb0.cols, tb0.values, tb0.norb, per, float(tb0.norb))
    except Exception as e:
        en0 = float("nan")
    z = a.positions[:, 2]
    rows.append(dict(frame=p.name, n=n, vac=vac, onsite_mean=float(on.mean() - vac), onsite_std=float(on.std()),
                     t1=float(t1.mean()), t2=float(t2.mean()), t3=float(t3.mean()) if t3.size else float("nan"),
                     neutral=float(en - vac), neutral_no_ws=float(en0 - vac),
                     dz=float(z[lay == 1].mean() - z[lay == 0].mean()), corr_rms=float(np.sqrt(np.mean([(z[lay == L] - z[lay == L].mean()) ** 2 for L in (0, 1)])))))
    print(" ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in rows[-1].items()), flush=True)
on = np.array([r["onsite_mean"] for r in rows])
t1 = np.array([r["t1"] for r in rows])
vac = np.array([r["vac"] for r in rows])
dws = np.abs(np.array([r["neutral"] - r["neutral_no_ws"] for r in rows]))
small = np.array([r["n"] < 16 for r in rows])
summary = {"frames": len(rows), "onsite_mean_over_frames_eV": float(on.mean()), "onsite_std_over_frames_eV": float(on.std()),
           "corr_onsite_t1": float(np.corrcoef(on, t1)[0, 1]), "corr_onsite_vacuum_level": float(np.corrcoef(on, vac)[0, 1]),
           "max_ws_neutrality_shift_small_meV": 1e3 * float(dws[small].max()),
           "ws_neutrality_shift_16atom_meV": [1e3 * float(x) for x in dws[~small]]}
print(json.dumps(summary, indent=1))
out = Path(__file__).resolve().parents[1] / "benchmarks" / "results" / "active_onsite_targets_graphene.json"
out.write_text(json.dumps({"summary": summary, "frames": rows}, indent=1))
