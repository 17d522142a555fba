"""First-principles comparison: Quantum ESPRESSO wall time for one frame against our model on the same cell, and a
≥ 1,000-atom cell that QE cannot do on this machine.

Small cell: the AB reference frame of the graphene-bilayer data set (``dft.sampling.reference_frames``, 4 atoms,
interlayer 3.35 Å), computed with the project's own DFT workflow and settings (``ase_wannierml.dft``: PBE + D3(BJ),
C.pbe-rrkjus, 30/240 Ry, 15×15 SCF mesh, 2 MPI ranks with 2 k-point pools):

* ``pw.x`` SCF alone (energy, forces, stress: what the force field replaces), and
* unless ``--scf-only``, the full frame (SCF → NSCF → pw2wannier90 → Wannier90 → QE band check, the
  ``dft.workflow.run_frame`` pipeline that produced the training data: what energy + forces + H replaces),

written to a temporary directory (never to ``datasets/``). Ours on the same ``Atoms``:
``WannierMLCalculator(load_model("graphene-bilayer"))`` energy + forces (+ stress), and energy + forces + the
Wannier Hamiltonian (``calc.get_hamiltonian()``), median of ``--repeats`` warm steps (positions moved each step),
plus the cold first call including the model load, on one torch thread (``--threads``). Speed-up = QE wall time /
our wall time.

Large cell: the 2.88° twisted bilayer (m = 11, 1,588 atoms) built by the DFT workflow's own
``sampling.twisted_cell``; our E+F and E+F+H are timed. For QE the script writes the SCF input the workflow would
use (``kmeshes`` gives a Γ-only mesh for this cell), starts ``pw.x`` on 2 ranks, reads its own estimate
("Estimated max dynamical RAM per process", "Estimated total dynamical RAM"), and kills it right after that line
(or when its resident memory passes ``--qe-rss-limit-gb``, or after ``--qe-timeout`` s), so nothing big is
allocated. A wall-time *estimate* for the QE SCF of the large cell is extrapolated from the measured small-cell SCF
(time per k-point scaled as N³, the cost of the orthogonalisation / subspace diagonalisation that dominates
plane-wave DFT at this size; N = atoms, same cut-offs and vacuum) — an estimate, labelled as such.

Heavy: run under the CPU lock on a shared machine::

    flock scratch/cpu.lock python benchmarks/dft_speedup.py                 # ≈ 2–5 min
    python benchmarks/dft_speedup.py --scf-only --big-m 0                   # SCF only, no large cell
    python benchmarks/dft_speedup.py --load benchmarks/results/dft_speedup.json   # print the tables again

Needs Debian's quantum-espresso, quantum-espresso-data, wannier90, openmpi-bin (``dft.codes.APT_HINT``).
Writes ``benchmarks/results/dft_speedup.json``. The committed frames' own recorded timings
(``datasets/graphene-bilayer/frames/*/meta.json``, "timings_s") are summarised too, labelled as recorded.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


# ------------------------------------------------------------------------------------------------ QE, small cell
def qe_small_cell(full_frame: bool, nprocs: int, npools: int) -> dict:
    """Run the AB reference frame with the project's workflow in a temporary directory; return timings."""
    from ase_wannierml.dft.codes import Runner, check_codes
    from ase_wannierml.dft.materials import get_material
    from ase_wannierml.dft.sampling import reference_frames
    from ase_wannierml.dft.workflow import prepare_inputs, run_frame

    check_codes()
    material = get_material("graphene-bilayer")
    params = reference_frames(material)[0]          # 0000-refAB
    runner = Runner(nprocs=nprocs, npools=npools)
    out: dict = {"frame": params.frame_id, "mpi_ranks": nprocs, "k_pools": npools, "load_average_before": load_average()}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if full_frame:
            t0 = time.perf_counter()
            meta = run_frame(material, params, tmp / "dataset", tmp / "scratch", runner=runner, keep_scratch=True)
            out["frame_wall_s"] = time.perf_counter() - t0
            out["timings_s"] = meta["timings_s"]
            out["status"], out["reason"] = meta["status"], meta.get("reason")
            scf_out = tmp / "scratch" / material.name / params.frame_id / "scf.out"
        else:
            work = tmp / "scf"
            prepare_inputs(material, params, work)
            runner.pw("scf", "scf.in", work)
            out["timings_s"] = dict(runner.timings)
            scf_out = work / "scf.out"
        out["scf_wall_s"] = out["timings_s"]["scf"]
        out.update(parse_pw_header(scf_out.read_text(errors="replace")))
        out["n_atoms"] = len(params_atoms(material, params))
    out["load_average_after"] = load_average()
    return out


def params_atoms(material, params):
    from ase_wannierml.dft.sampling import build_structure

    return build_structure(material, params)


_PW_PATTERNS = {
    "n_kpoints": (r"number of k points=\s*(\d+)", int),
    "n_ks_states": (r"number of Kohn-Sham states=\s*(\d+)", int),
    "n_electrons": (r"number of electrons\s*=\s*([\d.]+)", float),
    "est_max_ram_per_process": (r"Estimated max dynamical RAM per process >\s*([\d.]+\s*\w+)", str),
    "est_static_ram_per_process": (r"Estimated static dynamical RAM per process >\s*([\d.]+\s*\w+)", str),
    "est_total_ram": (r"Estimated total dynamical RAM >\s*([\d.]+\s*\w+)", str),
    "pwscf_wall": (r"PWSCF\s*:.*CPU\s+(.*?)\s+WALL", str),
    "dense_grid": (r"Dense\s+grid:\s*(\d+)\s+G-vectors\s+FFT dimensions:\s*\(\s*([\d,\s]+)\)", str),
}


def parse_pw_header(text: str) -> dict:
    """Sizes and memory estimates printed by ``pw.x`` (strings as printed, plus ``*_gb`` numbers)."""
    out: dict = {}
    for key, (pat, typ) in _PW_PATTERNS.items():
        m = re.search(pat, text)
        if m:
            out[key] = typ(m.group(1)) if typ is not str else " ".join(m.groups()).strip()
    for key in ("est_max_ram_per_process", "est_static_ram_per_process", "est_total_ram"):
        if key in out:
            out[key + "_gb"] = to_gb(out[key])
    return out


def to_gb(text: str) -> float:
    """'12.3 GB' / '850.2 MB' / '3.1 KB' → GB."""
    value, unit = text.split()
    return float(value) * {"KB": 1e-6, "MB": 1e-3, "GB": 1.0, "TB": 1e3}[unit.upper()]


# ------------------------------------------------------------------------------------------------ QE, large cell
def big_cell(m: int):
    from ase_wannierml.dft.materials import get_material
    from ase_wannierml.dft.sampling import FrameParams, twist_angle_deg, twisted_cell

    material = get_material("graphene-bilayer")
    params = FrameParams(frame_id=f"big-twist-m{m}", material=material.name, seed=0, kind=f"twist-m{m}", twist_m=m,
                         gap=material.gap_reference)
    return material, params, twisted_cell(material, params), twist_angle_deg(m)


def _group_rss_gb(pgid: int) -> float:
    """Resident memory (GB) of all processes in a process group (from /proc)."""
    total = 0
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            if os.getpgid(int(d.name)) != pgid:
                continue
            for line in (d / "status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except (OSError, ProcessLookupError, ValueError):
            continue
    return total / 1e6


def qe_large_estimate(m: int, nprocs: int, rss_limit_gb: float, timeout: float) -> dict:
    """Start pw.x on the large cell, read its memory estimate, kill it (see the module docstring)."""
    from ase_wannierml.dft import qe_input
    from ase_wannierml.dft.codes import Runner
    from ase_wannierml.dft.workflow import PREFIX, kmeshes

    material, params, atoms, angle = big_cell(m)
    n_scf, _ = kmeshes(material, atoms, params)
    out: dict = {"n_atoms": len(atoms), "twist_m": m, "angle_deg": angle, "kmesh_scf": [n_scf, n_scf, 1],
                 "mpi_ranks": nprocs, "load_average_before": load_average()}
    runner = Runner(nprocs=nprocs, npools=1)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        (work / "scf.in").write_text(qe_input.pw_input_text(atoms, material.dft, "scf", PREFIX,
                                                            kmesh=(n_scf, n_scf, 1)))
        cmd = runner._mpi() + ["pw.x", "-in", "scf.in"]
        t0 = time.perf_counter()
        with open(work / "scf.out", "w") as fo, open(work / "scf.err", "w") as fe:
            proc = subprocess.Popen(cmd, cwd=work, stdout=fo, stderr=fe, env=runner.env(), start_new_session=True)
        reason, peak = "", 0.0
        try:
            while True:
                time.sleep(0.5)
                text = (work / "scf.out").read_text(errors="replace")
                peak = max(peak, _group_rss_gb(proc.pid))
                if "Estimated max dynamical RAM" in text and "Estimated total dynamical RAM" in text:
                    reason = "estimate printed"
                    break
                if proc.poll() is not None:
                    reason = f"pw.x exited ({proc.returncode}) before printing its estimate"
                    break
                if peak > rss_limit_gb:
                    reason = f"resident memory passed {rss_limit_gb} GB"
                    break
                if time.perf_counter() - t0 > timeout:
                    reason = f"no estimate after {timeout:.0f} s"
                    break
        finally:
            for sig in (signal.SIGTERM, signal.SIGKILL):
                if proc.poll() is not None:
                    break
                try:
                    os.killpg(proc.pid, sig)
                    proc.wait(timeout=15)
                except (ProcessLookupError, subprocess.TimeoutExpired):
                    pass
        out["time_to_estimate_s"] = time.perf_counter() - t0
        out["stopped_because"] = reason
        out["peak_rss_gb_seen"] = peak
        text = (work / "scf.out").read_text(errors="replace")
        out.update(parse_pw_header(text))
        if "estimate printed" not in reason:
            out["pw_output_tail"] = text[-1500:] + (work / "scf.err").read_text(errors="replace")[-800:]
    out["machine_ram_gb"] = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1e9
    return out


def qe_time_extrapolation(small: dict, large: dict) -> dict:
    """Estimated SCF wall time of the large cell: per-k-point time of the small cell scaled by (N_big/N_small)³."""
    nk_small = small.get("n_kpoints")
    nk_large = large.get("n_kpoints", 1)
    if not nk_small:
        return {}
    per_k = small["scf_wall_s"] / nk_small
    ratio = large["n_atoms"] / small["n_atoms"]
    t = per_k * ratio ** 3 * nk_large
    return {"method": "estimate: small-cell SCF wall time per k-point × (N_large / N_small)^3 × k-points of the "
                      "large cell (same cut-offs, vacuum, ranks)",
            "small_scf_s_per_kpoint": per_k, "atom_ratio": ratio, "estimated_scf_wall_s": t,
            "estimated_scf_wall_days": t / 86400.0}


# ------------------------------------------------------------------------------------------------ ours
def time_ours(atoms, repeats: int, with_h: bool) -> dict:
    """Median wall time of E+F (or E+F+H) steps with the shipped model; cold = model load + first call."""
    import torch

    from ase_wannierml import WannierMLCalculator, load_model

    t0 = time.perf_counter()
    calc = WannierMLCalculator(load_model("graphene-bilayer"))
    atoms = atoms.copy()
    atoms.calc = calc
    atoms.get_forces()
    if with_h:
        calc.get_hamiltonian()
    cold = time.perf_counter() - t0
    rng = np.random.default_rng(0)
    walls = []
    for _ in range(repeats):
        atoms.positions += rng.uniform(-1e-3, 1e-3, size=atoms.positions.shape)
        t0 = time.perf_counter()
        atoms.get_forces()
        atoms.get_potential_energy()
        if with_h:
            tb = calc.get_hamiltonian()
        walls.append(time.perf_counter() - t0)
    res = {"mode": "E+F+H" if with_h else "E+F", "n_atoms": len(atoms), "repeats": repeats,
           "cold_s": cold, "wall_s": walls, "median_s": statistics.median(walls), "threads": torch.get_num_threads(),
           "dtype": str(calc.dtype)}
    if with_h:
        res["hamiltonian_nnz"] = int(len(tb.values))
    return res


def recorded_frames(dataset: Path) -> dict:
    """Summary of the recorded per-frame timings of the committed data set (label: recorded, not measured now)."""
    rows = []
    for meta in sorted(dataset.glob("frames/*/meta.json")):
        try:
            m = json.loads(meta.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        t = m.get("timings_s") or {}
        if m.get("status") == "ok" and m.get("n_atoms") == 4 and "scf" in t and "total" in t:
            rows.append((t["scf"], t["total"]))
    if not rows:
        return {}
    scf, total = np.array(rows).T
    return {"label": "recorded in datasets/graphene-bilayer/frames/*/meta.json (4-atom frames, status ok, 2 ranks; "
                     "shared machine)", "n_frames": len(rows),
            "scf_s": {"median": float(np.median(scf)), "min": float(scf.min()), "max": float(scf.max())},
            "frame_total_s": {"median": float(np.median(total)), "min": float(total.min()), "max": float(total.max())}}


# ------------------------------------------------------------------------------------------------ report
def report(res: dict) -> str:
    lines = []
    s, o = res.get("qe_small"), res.get("ours_small", {})
    if s:
        lines += ["**4-atom AB bilayer frame (measured in this run)**", "",
                  "| what | QE (2 ranks) | ours E+F | ours E+F+H | speed-up |", "|---|---|---|---|---|"]
        ef, efh = o.get("E+F"), o.get("E+F+H")
        if ef:
            lines.append(f"| SCF (E, F, stress) vs E+F | {s['scf_wall_s']:.1f} s | {ef['median_s'] * 1e3:.1f} ms | - | "
                         f"**{s['scf_wall_s'] / ef['median_s']:,.0f}×** |")
        if efh and "frame_wall_s" in s:
            lines.append(f"| full frame (SCF+NSCF+W90+check) vs E+F+H | {s['frame_wall_s']:.1f} s | - | "
                         f"{efh['median_s'] * 1e3:.1f} ms | **{s['frame_wall_s'] / efh['median_s']:,.0f}×** |")
        if ef:
            lines.append(f"| SCF vs our cold start (model load + first call) | {s['scf_wall_s']:.1f} s | "
                         f"{ef['cold_s']:.2f} s | - | {s['scf_wall_s'] / ef['cold_s']:,.0f}× |")
        lines.append("")
        lines.append(f"QE steps (s): {s['timings_s']}; k-points {s.get('n_kpoints')}, Kohn-Sham states "
                     f"{s.get('n_ks_states')}; load average {s['load_average_before']} → {s['load_average_after']}")
    rec = res.get("recorded_frames")
    if rec:
        lines.append(f"Recorded (not this run): {rec['n_frames']} frames, SCF median {rec['scf_s']['median']:.1f} s "
                     f"({rec['scf_s']['min']:.1f}–{rec['scf_s']['max']:.1f}), whole frame median "
                     f"{rec['frame_total_s']['median']:.1f} s ({rec['frame_total_s']['min']:.1f}–"
                     f"{rec['frame_total_s']['max']:.1f})")
    big, ob = res.get("qe_large"), res.get("ours_large", {})
    if big or ob:
        n = (big or next(iter(ob.values())))["n_atoms"]
        lines += ["", f"**{n:,}-atom twisted bilayer (2.88°)**", ""]
        for mode, r in ob.items():
            lines.append(f"- ours {mode}: {r['median_s']:.2f} s (median of {r['repeats']}), cold {r['cold_s']:.1f} s")
        if big:
            lines.append(f"- QE pw.x's own estimate ({big.get('mpi_ranks')} ranks, {big.get('kmesh_scf')} k-mesh, "
                         f"{big.get('n_ks_states')} Kohn-Sham states, dense grid {big.get('dense_grid')}): max "
                         f"dynamical RAM {big.get('est_max_ram_per_process', '?')} per process, total "
                         f"{big.get('est_total_ram', '?')}; machine RAM {big['machine_ram_gb']:.1f} GB "
                         f"({big['stopped_because']}, after {big['time_to_estimate_s']:.0f} s; killed)")
        ex = res.get("qe_large_time_estimate")
        if ex:
            lines.append(f"- QE SCF wall time, {ex['method']}: {ex['estimated_scf_wall_s']:.2e} s "
                         f"(≈ {ex['estimated_scf_wall_days']:,.0f} days)")
            ef = ob.get("E+F")
            if ef:
                lines.append(f"- estimated speed-up on this cell: {ex['estimated_scf_wall_s'] / ef['median_s']:.1e}× "
                             "(estimate)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scf-only", action="store_true", help="QE: SCF only, not the whole Wannier frame")
    p.add_argument("--np", type=int, default=2, help="MPI ranks for QE (the workflow's default)")
    p.add_argument("--nk", type=int, default=2, help="k-point pools for the small cell (the workflow's default)")
    p.add_argument("--repeats", type=int, default=20, help="our timed steps on the small cell")
    p.add_argument("--big-m", type=int, default=11, help="twisted cell index m (11: 1,588 atoms; 0: skip)")
    p.add_argument("--big-repeats", type=int, default=3)
    p.add_argument("--qe-rss-limit-gb", type=float, default=6.0, help="kill pw.x on the large cell above this")
    p.add_argument("--qe-timeout", type=float, default=900.0, help="seconds to wait for pw.x's estimate")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads for ours (default 1: on a loaded machine 2 threads can be 100× slower for "
                        "tiny cells because of OpenMP spin-waiting; 0: torch default)")
    p.add_argument("--json", default=str(RESULTS / "dft_speedup.json"), help="output file ('' for none)")
    p.add_argument("--load", help="only print the tables of a JSON file written earlier")
    args = p.parse_args(argv)
    if args.load:
        print(report(json.loads(Path(args.load).read_text())))
        return 0

    import torch

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    from ase_wannierml.dft.materials import get_material
    from ase_wannierml.dft.sampling import reference_frames

    res: dict = {"benchmark": "dft_speedup", "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
                 "load_average_start": load_average()}
    material = get_material("graphene-bilayer")
    atoms = params_atoms(material, reference_frames(material)[0])
    res["ours_small"] = {m["mode"]: m for m in (time_ours(atoms, args.repeats, False),
                                                 time_ours(atoms, args.repeats, True))}
    print("ours, 4 atoms:", {k: f"{v['median_s'] * 1e3:.1f} ms" for k, v in res["ours_small"].items()}, flush=True)
    res["qe_small"] = qe_small_cell(not args.scf_only, args.np, args.nk)
    print("QE, 4 atoms:", res["qe_small"]["timings_s"], flush=True)
    res["recorded_frames"] = recorded_frames(REPO / "datasets" / "graphene-bilayer")
    if args.big_m > 0:
        _, _, big, _ = big_cell(args.big_m)
        res["ours_large"] = {m["mode"]: m for m in (time_ours(big, args.big_repeats, False),
                                                     time_ours(big, args.big_repeats, True))}
        print(f"ours, {len(big)} atoms:", {k: f"{v['median_s']:.2f} s" for k, v in res["ours_large"].items()},
              flush=True)
        res["qe_large"] = qe_large_estimate(args.big_m, args.np, args.qe_rss_limit_gb, args.qe_timeout)
        print("QE, large cell:", {k: res["qe_large"].get(k) for k in ("est_max_ram_per_process", "est_total_ram",
                                                                      "stopped_because")}, flush=True)
        res["qe_large_time_estimate"] = qe_time_extrapolation(res["qe_small"], res["qe_large"])
    res["load_average_end"] = load_average()
    print()
    print(report(res))
    print(f"load average: start {res['load_average_start']}, end {res['load_average_end']}")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(res, indent=1, default=float))
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
