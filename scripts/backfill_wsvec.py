"""Give every stored frame its Wannier90 Wigner–Seitz shifts and re-judge it with them.

    python scripts/backfill_wsvec.py [--datasets datasets/graphene-bilayer datasets/mos2-bilayer] [--dry-run]

For each frame directory with a ``wannier90_hr.dat.gz``:

- no ``wannier90_wsvec.dat.gz`` (frames made before the workflow kept it): the shifts are recomputed exactly as
  Wannier90 3.1 computes them (``tb/wsvec.py``) from the stored ``wannier90_centres.xyz``, the cell and ``mp_grid``
  of the ``.win`` the frame recorded in ``meta.json`` (``inputs["wannier90.win"]``), and written atomically; the
  ``_hr.dat`` is not touched;
- a ``wannier90_wsvec.dat.gz`` written by Wannier90: the recomputed shifts are checked to equal it (a mismatch is
  reported, the file is kept).

Then the frame is re-judged with the shifted Hamiltonian (the one ``TightBinding.from_wannier90`` now reads):
``meta.json["wannier90_ws"]`` records where the shifts came from, how far they move the bands at the 10 check
k-points and on a 12×12 mesh within E_F ± 1 eV (meV), and how the T = 0 neutrality level (the energy zero of the
shipped models' targets) moves (meV). Frames with stored DFT eigenvalues (``dft_check_bands.json``) get their band
errors recomputed and their status re-judged (the old figures are kept under ``quality_unshifted``). A summary goes
to ``<dataset>/wsvec_backfill.json``. Re-running is safe (frames already done are only re-measured).

Training caches need no step here: their fingerprint lists every file of every frame, so the new file makes the
next ``wannierml train`` rebuild them.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
ELECTRONS = {"graphene-bilayer": {"C": 1.0}, "mos2-bilayer": {"Mo": 2.0, "S": 6.0}}  # configs/<material>.yaml


def _atomic_json(path: Path, obj: dict) -> None:
    tmp = path.with_name(f".tmp{os.getpid()}-{path.name}")
    tmp.write_text(json.dumps(obj, indent=1))
    os.replace(tmp, path)


def _entries(sh) -> list:
    st = sh.start
    return [(tuple(sh.R[e]), int(sh.rows[e]), int(sh.cols[e]), sorted(map(tuple, sh.T[st[e]:st[e] + sh.count[e]].tolist())))
            for e in range(len(sh.R))]


def _window_diff(e_a: np.ndarray, e_b: np.ndarray, e_f: float, w: float = 1.0) -> float:
    """max |ΔE| (meV) over (k, band) with either energy inside E_F ± w (bands matched by index)."""
    sel = (np.abs(e_a - e_f) < w) | (np.abs(e_b - e_f) < w)
    return float(np.abs(e_a - e_b)[sel].max(initial=0.0) * 1e3)


def backfill_frame(frame: Path, electrons: dict, dry_run: bool = False) -> dict | None:
    from ase.io import read

    from ase_wannierml import TightBinding
    from ase_wannierml.dft import quality
    from ase_wannierml.tb.wannier90 import read_centres_xyz, read_hr_data, read_win
    from ase_wannierml.tb.wsvec import compute_wsvec, read_wsvec, write_wsvec
    from ase_wannierml.training.targets import band_kpoints, neutrality_level

    hr_path = frame / "wannier90_hr.dat.gz"
    if not hr_path.is_file():
        return None
    meta_path = frame / "meta.json"
    meta = json.loads(meta_path.read_text())
    win_text = (meta.get("inputs") or {}).get("wannier90.win")
    if win_text is None:
        return {"frame": frame.name, "skipped": "meta.json records no .win"}
    win = read_win(frame / "wannier90.win", text=win_text)
    if win.get("use_ws_distance") is False:
        return {"frame": frame.name, "skipped": "use_ws_distance = .false."}
    mp_grid = win.get("mp_grid") or tuple(meta["settings"]["kmesh_nscf"])
    hr = read_hr_data(hr_path)
    irvec = list(dict.fromkeys(map(tuple, hr.R.tolist())))
    centres = read_centres_xyz(frame / "wannier90_centres.xyz")[0]
    shifts = compute_wsvec(irvec, centres, win["cell"], mp_grid)
    ws_path = frame / "wannier90_wsvec.dat.gz"
    out: dict = {"frame": frame.name, "mp_grid": list(mp_grid), "n_shifted": int(np.count_nonzero(
        np.any(shifts.T != 0, axis=1))), "max_images": int(shifts.count.max())}
    if ws_path.is_file():
        import gzip

        with gzip.open(ws_path, "rt") as fh:
            ours = "ase_wannierml" in fh.readline()
        out["source"] = "recomputed (backfill)" if ours else "Wannier90 file"
        out["recomputed_equals_file"] = _entries(read_wsvec(ws_path)) == _entries(shifts)
    else:
        out["source"] = "recomputed (backfill)"
        if not dry_run:
            write_wsvec(shifts, ws_path, header="## recomputed by ase_wannierml (scripts/backfill_wsvec.py) from "
                                                "wannier90_centres.xyz and the .win cell/mp_grid, "
                                                "use_ws_distance=.true.")
    atoms = read(frame / "structure.extxyz")
    e_f = float(meta.get("fermi_level_eV", atoms.info.get("fermi_level")))
    raw = TightBinding.from_wannier90(hr_path, atoms=atoms, wsvec=None)
    tb = TightBinding.from_wannier90(hr_path, atoms=atoms, wsvec=ws_path if ws_path.is_file() else "compute",
                                     mp_grid=mp_grid)
    out["check_kpts_shift_1eV_meV"] = _window_diff(raw.eigenvalues(quality.CHECK_KPTS),
                                                   tb.eigenvalues(quality.CHECK_KPTS), e_f)
    periodic = np.array([True, True, False])
    mesh = band_kpoints(periodic, 12)
    out["mesh12_shift_1eV_meV"] = _window_diff(raw.eigenvalues(mesh), tb.eigenvalues(mesh), e_f)
    n_el = sum(electrons.get(s, 0.0) for s in atoms.get_chemical_symbols())
    z_raw = neutrality_level(raw.R, raw.rows, raw.cols, raw.values, raw.norb, periodic, n_el)
    z_new = neutrality_level(tb.R, tb.rows, tb.cols, tb.values, tb.norb, periodic, n_el)
    out["neutrality_shift_meV"] = float((z_new - z_raw) * 1e3)
    check = frame / "dft_check_bands.json"
    if check.is_file():
        ref = json.loads(check.read_text())
        e_dft = np.array(ref["eigenvalues_eV"])
        window = float(meta.get("material_spec", {}).get("dft", {}).get("check_window", 2.0))
        old = quality.band_errors(e_dft, raw.eigenvalues(quality.CHECK_KPTS), e_f, window)
        new = quality.band_errors(e_dft, tb.eigenvalues(quality.CHECK_KPTS), e_f, window)
        out["dft_band_max_1eV_meV"] = {"unshifted": old["band_max_1eV_meV"], "shifted": new["band_max_1eV_meV"]}
        out["dft_band_max_meV"] = {"unshifted": old["band_max_meV"], "shifted": new["band_max_meV"]}
        q = dict(meta.get("quality") or {})
        if "quality_unshifted" not in meta:
            meta["quality_unshifted"] = {k: q.get(k) for k in old}
            meta["status_unshifted"] = [meta.get("status"), meta.get("reason")]
        q.update(new)
        q["ws_shifts"] = tb.ws_source
        meta["quality"] = q
        crit = quality.QualityCriteria(**meta.get("quality_criteria", {}))
        if meta.get("status") in ("ok", "rejected") and not str(meta.get("reason", "")).startswith("error"):
            meta["status"], meta["reason"] = quality.judge(q, crit)
        out["status"] = meta["status"]
    meta["wannier90_ws"] = {k: v for k, v in out.items() if k != "frame"}
    if not dry_run:
        _atomic_json(meta_path, meta)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--datasets", nargs="+", default=[str(REPO / "datasets" / m) for m in ELECTRONS])
    ap.add_argument("--dry-run", action="store_true", help="measure only: write no wsvec or meta.json")
    args = ap.parse_args(argv)
    for ds in map(Path, args.datasets):
        electrons = ELECTRONS.get(ds.name, {})
        rows = []
        for frame in sorted(p for p in (ds / "frames").iterdir() if p.is_dir() and not p.name.startswith(".")):
            try:
                r = backfill_frame(frame, electrons, args.dry_run)
            except (ValueError, OSError, KeyError) as err:
                r = {"frame": frame.name, "error": f"{type(err).__name__}: {err}"}
            if r is not None:
                rows.append(r)
                print(json.dumps(r), flush=True)
        done = [r for r in rows if "neutrality_shift_meV" in r]
        summary = {"frames": rows}
        for key in ("check_kpts_shift_1eV_meV", "mesh12_shift_1eV_meV", "neutrality_shift_meV"):
            v = np.abs([r[key] for r in done])
            if len(v):
                summary[key] = {"median": float(np.median(v)), "max": float(v.max()), "n": int(len(v))}
        if not args.dry_run:
            _atomic_json(ds / "wsvec_backfill.json", summary)
        print(json.dumps({k: v for k, v in summary.items() if k != "frames"}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
