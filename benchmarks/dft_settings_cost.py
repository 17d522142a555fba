"""Benchmark: which DFT / Wannier settings cost what, and what they change (issue #15 item 3, MoS2).

One committed frame's structure is recomputed through the project's own workflow (``dft.workflow.run_frame``, the
path that makes training data) with the shipped material settings and with variants, one setting at a time
(SCF k-mesh, NSCF = Wannier k-mesh, plane-wave cut-off). For every variant it records

* cost: wall and CPU seconds per stage (``meta.json``), all ranks;
* the Wannier-vs-DFT band error of the variant itself: its Wannier bands (``TightBinding.from_wannier90`` with the
  Wigner–Seitz shifts) against QE eigenvalues of the *same* SCF density at k-points **off** its Wannier mesh
  (the workflow's check k plus 10 generic k, ``dft_extra_bands.json``), within E_F ± 1 eV (``quality.band_errors``);
* the error against the **reference** (shipped settings): the variant's Wannier bands against the reference
  run's QE eigenvalues at the same k, both measured from their own vacuum level (the energy zero the models train
  on), so a less converged SCF density counts too;
* the change of the training targets: total energy per atom, forces, stress, vacuum level, and
  max |H_variant(R) − H_ref(R)| over common R (both relative to their vacuum levels), onsite blocks apart.

Frames go to ``datasets/<material>/wannier_accuracy/<frame>-<variant>/`` (outside ``frames/``: no data set loads
them); rerunning skips finished variants (resumable). Heavy: ~15–30 min per 6-atom variant on 2 ranks::

    nice python benchmarks/dft_settings_cost.py run --frame datasets/mos2-bilayer/frames/0003-1x1 \
        --variants ref scf6 scf9 nscf6 ecut40
    python benchmarks/dft_settings_cost.py report --frame datasets/mos2-bilayer/frames/0003-1x1   # table + JSON

Writes ``benchmarks/results/dft_settings_cost_<material>.json``.
"""
from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from datetime import datetime, timezone  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
WINDOW_EV = 1.0
BOUND_MEV = 5.0
# generic k (fractions of the reciprocal cell) on no n x n mesh with n <= 18: the off-mesh oracle
GENERIC_KPTS = np.array([
    [0.123, 0.271, 0.0], [0.389, 0.217, 0.0], [0.311, 0.352, 0.0], [0.347, 0.323, 0.0], [0.071, 0.443, 0.0],
    [0.455, 0.093, 0.0], [0.2378, 0.1134, 0.0], [0.4123, 0.3456, 0.0], [0.353, 0.313, 0.0], [0.3217, 0.3341, 0.0],
])
# variant name -> DFTSettings fields changed from the material's shipped settings
VARIANTS: dict[str, dict] = {
    "ref": {},
    "scf9": {"kmesh_scf_1x1": 9},
    "scf6": {"kmesh_scf_1x1": 6},
    "nscf6": {"kmesh_nscf_1x1": 6},
    "nscf12": {"kmesh_nscf_1x1": 12},
    "ecut40": {"ecutwfc": 40.0},
    "scf6-nscf6": {"kmesh_scf_1x1": 6, "kmesh_nscf_1x1": 6},
}


def _frame_inputs(frame: Path):
    """(material spec, FrameParams, Atoms with 'layer') of a committed frame."""
    from ase.io import read

    from ase_wannierml.dft.materials import get_material
    from ase_wannierml.dft.sampling import FrameParams

    meta = json.loads((frame / "meta.json").read_text())
    atoms = read(frame / "structure.extxyz")
    if "layer" not in atoms.arrays:
        raise ValueError(f"{frame}/structure.extxyz has no 'layer' array")
    atoms.calc = None
    return get_material(meta["material"]), FrameParams.from_dict(meta["sampling"]), atoms


def _out_dir(frame: Path, material_name: str) -> Path:
    return REPO / "datasets" / material_name / "wannier_accuracy"


def run_variant(frame: Path, variant: str, np_: int, nk: int, scratch: Path) -> Path:
    """Compute one variant (skipped if done); returns its frame directory."""
    from ase_wannierml.dft import qe_input, w90_input
    from ase_wannierml.dft.codes import Runner
    from ase_wannierml.dft.parse import read_xml_bands
    from ase_wannierml.dft.workflow import PREFIX, run_frame

    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; known: {sorted(VARIANTS)}")
    material, params, atoms = _frame_inputs(frame)
    dft = dataclasses.replace(material.dft, **VARIANTS[variant])
    mat = dataclasses.replace(material, dft=dft)
    fid = f"{params.frame_id}-{variant}"
    pv = dataclasses.replace(params, frame_id=fid)
    out_root = _out_dir(frame, material.name)
    out = out_root / "frames" / fid
    if (out / "dft_extra_bands.json").is_file():
        print(f"{fid}: done, skipped", flush=True)
        return out
    runner = Runner(nprocs=np_, npools=nk)
    t0 = time.perf_counter()
    meta = run_frame(mat, pv, out_root, scratch, runner=runner, keep_scratch=True, atoms=atoms)
    if meta["status"] not in ("ok", "accepted") and not (out / "wannier90_hr.dat.gz").is_file():
        raise RuntimeError(f"{fid}: frame {meta['status']}: {meta['reason']}")
    work = scratch / material.name / fid
    n_excl = w90_input.num_excluded_for(atoms, dft)
    nbnd = max(n_excl + int(math.ceil(dft.check_bands_per_atom * len(atoms))),
               n_excl + w90_input.num_wann_for(atoms, dft))
    (work / "extra.in").write_text(qe_input.pw_input_text(atoms, dft, "bands", PREFIX, kpts_crystal=GENERIC_KPTS,
                                                          nbnd=nbnd))
    runner.pw("extra_bands", "extra.in", work)
    e = read_xml_bands(work / "tmp" / f"{PREFIX}.save")
    from ase_wannierml.cli import atomic_write_text

    atomic_write_text(out / "dft_extra_bands.json", json.dumps({
        "kpts_frac": GENERIC_KPTS.tolist(), "eigenvalues_eV": np.asarray(e).tolist(),
        "fermi_level_eV": meta["fermi_level_eV"],
        "wall_s": runner.timings.get("extra_bands"), "cpu_s": runner.cpu_timings.get("extra_bands"),
        "note": "QE 'bands' run at generic k on the variant's SCF density, eV, same zero as its _hr.dat"}))
    import shutil

    shutil.rmtree(work, ignore_errors=True)
    print(f"{fid}: {meta['status']} in {time.perf_counter() - t0:.0f} s", flush=True)
    return out


def _dft_bands(d: Path) -> tuple[np.ndarray, np.ndarray, float]:
    kpts, eigs, e_f = [], [], None
    for name in ("dft_check_bands.json", "dft_extra_bands.json"):
        x = json.loads((d / name).read_text())
        kpts.append(np.asarray(x["kpts_frac"], float))
        eigs.append(np.asarray(x["eigenvalues_eV"], float))
        e_f = x["fermi_level_eV"]
    nb = min(e.shape[1] for e in eigs)
    return np.concatenate(kpts), np.concatenate([e[:, :nb] for e in eigs]), float(e_f)


def variant_row(d: Path, ref: Path | None) -> dict:
    """Cost, own off-mesh error, error against the reference DFT and target changes of one variant frame."""
    from ase.io import read

    from ase_wannierml.dft.quality import band_errors, on_mesh
    from ase_wannierml.tb.tightbinding import TightBinding

    meta = json.loads((d / "meta.json").read_text())
    atoms = read(d / "structure.extxyz")
    kpts, e_dft, e_f = _dft_bands(d)
    mesh = meta["settings"]["kmesh_nscf"]
    off = ~on_mesh(kpts, mesh)
    tb = TightBinding.from_wannier90(d / "wannier90_hr.dat.gz", atoms=atoms).hermitize()
    e_w = tb.eigenvalues(kpts)
    own = band_errors(e_dft[off], e_w[off], e_f, WINDOW_EV)
    extra = json.loads((d / "dft_extra_bands.json").read_text())
    ecut = meta["material_spec"]["dft"]["ecutwfc"]
    row = {"frame": str(d.relative_to(REPO)), "n_atoms": len(atoms), "kmesh_scf": meta["settings"]["kmesh_scf"],
           "kmesh_nscf": mesh, "ecutwfc_Ry": ecut, "status": meta["status"],
           "timings_s": meta["timings_s"], "cpu_timings_s": meta["cpu_timings_s"],
           "extra_bands_wall_s": extra.get("wall_s"), "n_k_off_mesh": int(off.sum()),
           "own_offmesh_max_meV": own["band_max_1eV_meV"], "own_offmesh_rms_meV": own["band_rms_1eV_meV"],
           "energy_eV_per_atom": meta["energy_eV"] / len(atoms), "vacuum_level_eV": meta.get("vacuum_level_eV"),
           "fermi_level_eV": e_f}
    if ref is None:
        return row
    rmeta = json.loads((ref / "meta.json").read_text())
    ratoms = read(ref / "structure.extxyz")
    rk, r_dft, r_ef = _dft_bands(ref)
    if not np.allclose(rk, kpts):
        raise ValueError(f"{d} and {ref}: different check k-points")
    v, rv = meta.get("vacuum_level_eV"), rmeta.get("vacuum_level_eV")
    if v is None or rv is None:
        raise ValueError(f"{d} or {ref}: no vacuum level recorded")
    # both measured from their own vacuum level; the window is centred on the reference's Fermi level
    vs_ref = band_errors(r_dft - rv, e_w - v, r_ef - rv, WINDOW_EV)
    row.update({"vs_ref_max_meV": vs_ref["band_max_1eV_meV"], "vs_ref_rms_meV": vs_ref["band_rms_1eV_meV"],
                "d_energy_meV_per_atom": 1e3 * (meta["energy_eV"] / len(atoms) - rmeta["energy_eV"] / len(ratoms)),
                "d_forces_max_meV_A": 1e3 * float(np.abs(atoms.get_forces() - ratoms.get_forces()).max()),
                "d_stress_max_meV_A3": 1e3 * float(np.abs(atoms.get_stress() - ratoms.get_stress()).max()),
                "d_vacuum_level_meV": 1e3 * (v - rv)})
    if list(rmeta["settings"]["kmesh_nscf"]) == list(mesh):
        tr = TightBinding.from_wannier90(ref / "wannier90_hr.dat.gz", atoms=ratoms).hermitize()
        row.update(_h_change(tb, v, tr, rv))
    return row


def _h_change(tb, v: float, tr, rv: float) -> dict:
    """max |ΔH| (meV) over elements (R, i, j) stored in both, both measured from their vacuum level: onsite (R = 0
    diagonal) and all others. Only meaningful on the same Wannier mesh (the Wigner–Seitz shifts split a hopping
    over mesh-dependent R); the caller passes ``None`` otherwise."""
    def elements(t, zero):
        out = {}
        for R, i, j, x in zip(np.asarray(t.R).tolist(), t.rows.tolist(), t.cols.tolist(), np.asarray(t.values)):
            out[(*R, i, j)] = x - (zero if (i == j and not any(R)) else 0.0)
        return out

    hv, hr = elements(tb, v), elements(tr, rv)
    common = set(hv) & set(hr)
    onsite = [abs(hv[k] - hr[k]) for k in common if k[3] == k[4] and not any(k[:3])]
    other = [abs(hv[k] - hr[k]) for k in common if not (k[3] == k[4] and not any(k[:3]))]
    return {"dH_onsite_max_meV": 1e3 * float(max(onsite, default=0.0)),
            "dH_other_max_meV": 1e3 * float(max(other, default=0.0)), "n_elements_common": len(common)}


def report(frame: Path, variants: list[str], out: Path | None) -> dict:
    material, params, _ = _frame_inputs(frame)
    root = _out_dir(frame, material.name) / "frames"
    ref = root / f"{params.frame_id}-ref"
    rows = {}
    for v in variants:
        d = root / f"{params.frame_id}-{v}"
        if not (d / "dft_extra_bands.json").is_file():
            print(f"{v}: not computed yet", file=sys.stderr)
            continue
        rows[v] = variant_row(d, None if v == "ref" else (ref if (ref / "dft_extra_bands.json").is_file() else None))
    head = (f"{'variant':11s} {'scf':>4s} {'nscf':>4s} {'ecut':>5s} {'CPU s':>7s} {'SCF CPU':>8s} {'own max/rms':>12s} "
            f"{'vs ref max/rms':>15s} {'dE meV/at':>9s} {'dF meV/A':>8s} {'dH on/other':>12s}")
    print(head)
    print("-" * len(head))
    for v, r in rows.items():
        c = r["cpu_timings_s"]
        vr = (f"{r['vs_ref_max_meV']:6.1f}/{r['vs_ref_rms_meV']:5.1f}" if "vs_ref_max_meV" in r else "-")
        de = f"{r['d_energy_meV_per_atom']:+9.2f}" if "d_energy_meV_per_atom" in r else "-"
        df = f"{r['d_forces_max_meV_A']:8.1f}" if "d_forces_max_meV_A" in r else "-"
        dh = (f"{r['dH_onsite_max_meV']:5.1f}/{r['dH_other_max_meV']:5.1f}" if "dH_onsite_max_meV" in r else "-")
        print(f"{v:11s} {r['kmesh_scf'][0]:4d} {r['kmesh_nscf'][0]:4d} {r['ecutwfc_Ry']:5.0f} {c.get('total', 0):7.0f} "
              f"{c.get('scf', 0):8.0f} {r['own_offmesh_max_meV']:5.1f}/{r['own_offmesh_rms_meV']:5.1f} {vr:>15s} "
              f"{de:>9s} {df:>8s} {dh:>12s}")
    result = {"benchmark": "DFT/Wannier settings: cost vs band error vs change of the training targets",
              "date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "frame": str(frame.relative_to(REPO)),
              "window_eV": WINDOW_EV, "bound_meV": BOUND_MEV, "variants": {v: VARIANTS[v] for v in rows},
              "rows": rows}
    if out is not None:
        from ase_wannierml.cli import atomic_write_text

        out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out, json.dumps(result, indent=1))
        print(f"wrote {out}")
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("action", choices=["run", "report"])
    ap.add_argument("--frame", type=Path, required=True, help="committed frame directory whose structure is used")
    ap.add_argument("--variants", nargs="+", default=["ref", "scf6", "scf9", "nscf6", "ecut40"],
                    choices=sorted(VARIANTS))
    ap.add_argument("--np", type=int, default=2, dest="np_")
    ap.add_argument("--nk", type=int, default=2)
    ap.add_argument("--scratch", type=Path, default=REPO / "scratch" / "dft_settings")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    frame = args.frame.resolve()
    if not (frame / "meta.json").is_file():
        ap.error(f"{frame}: not a frame directory (no meta.json)")
    if args.action == "run":
        for v in args.variants:
            run_variant(frame, v, args.np_, args.nk, args.scratch)
        return 0
    material = json.loads((frame / "meta.json").read_text())["material"]
    out = args.out or REPO / "benchmarks" / "results" / f"dft_settings_cost_{Path(material).stem}.json"
    report(frame, args.variants, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
