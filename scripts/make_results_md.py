"""Regenerate the tables of ``docs/results.md`` from ``benchmarks/results/*.json``.

    python scripts/make_results_md.py            # rewrites the block between the GENERATED markers
    python scripts/make_results_md.py --check    # exit 1 if docs/results.md is out of date

Only the block between ``<!-- GENERATED: ... -->`` and ``<!-- END GENERATED -->`` is written (atomically); the
prose around it (what each run was, on which machine and load) is kept as it is. Every number in the block comes
from a JSON file named next to it; nothing is typed in by hand.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
DOC = REPO / "docs" / "results.md"
BEGIN = "<!-- GENERATED: scripts/make_results_md.py from benchmarks/results/*.json; do not edit by hand -->"
END = "<!-- END GENERATED -->"


def _load(name: str) -> dict | list | None:
    path = RESULTS / name
    return json.loads(path.read_text()) if path.is_file() else None


def _fmt(x: float | None, digits: int = 1) -> str:
    return "–" if x is None else f"{x:,.{digits}f}"


def index_table() -> list[str]:
    """One row per result file: what it measured, when, and the load average it records."""
    rows = ["| file | what | date / model | 1-min load average (start → end) |", "|---|---|---|---|"]
    for path in sorted(RESULTS.glob("*.json")):
        d = json.loads(path.read_text())
        if isinstance(d, list):
            what, when, load = f"{len(d)} rows" + (f" ({d[0].get('system', '')})" if d and isinstance(d[0], dict)
                                                  else ""), "", ""
        else:
            what = str(d.get("benchmark") or d.get("material") or d.get("mode") or ", ".join(list(d)[:3]))
            model = d.get("model")
            when = str(d.get("date") or (model.get("file", "").rsplit("/", 1)[-1] if isinstance(model, dict) else
                                         model or ""))
            a, b = d.get("load_average_start"), d.get("load_average_end")
            first = (lambda x: x[0] if isinstance(x, list) else x)
            load = f"{first(a):.1f} → {first(b):.1f}" if a is not None and b is not None else ""
        rows.append(f"| `{path.name}` | {what} | {when} | {load} |")
    return rows


def band_solver_table() -> list[str]:
    """Sparse solver near E_F vs scipy eigsh (Moon–Koshino or learned H), per result file, with the load average."""
    rows = ["| file | H | angle | orbitals | threads | load | ours, isolated k (s) | ours, per k on a path (s) | "
            "eigsh (s) | speed-up isolated / path | max abs diff (eV) |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for name in ("band_solver.json", "band_solver_1p05_idle.json", "band_solver_idle_1thread_blas.json",
                 "band_solver_s7_final.json", "band_solver_s9_idle.json", "band_solver_s9_idle_newmodel.json"):
        d = _load(name)
        if not d:
            continue
        load = d.get("load_average_start")
        for r in d["results"]:
            path = r.get("path") or {}
            rows.append(f"| `{name}` | {r.get('model', 'Moon–Koshino')} | {r['angle_deg']:.2f}° | {r['norb']:,} | "
                        f"{r.get('workers', d.get('workers', '–'))} | {_fmt(load[0] if load else None)} | "
                        f"{r['ours_median_wall_s']:.2f} | "
                        f"{_fmt(path.get('per_k_wall_s'), 2)} | {r['naive_median_wall_s']:.2f} | "
                        f"{r['speedup_wall_same_k']:.1f}× / {_fmt(path.get('speedup_wall'))}× | "
                        f"{r['max_abs_diff_eV']:.0e} |")
    return rows


def magic_angle_scan_table() -> list[str]:
    """Flat bands by band index vs twist angle (learned model rigid/relaxed, Moon–Koshino reference)."""
    d = _load("magic_angle_scan_band_index.json")
    if not d:
        return []
    rows = sorted(d["rows"], key=lambda r: -r["angle_deg"])
    head = "| quantity | " + " | ".join(f"{r['angle_deg']:.3f}°" for r in rows) + " |"
    out = [head, "|---|" + "---|" * len(rows)]

    def line(label: str, key: str, field: str, digits: int = 1, scale: float = 1.0) -> None:
        vals = [r.get(key, {}).get(field) if isinstance(r.get(key), dict) else None for r in rows]
        out.append(f"| {label} | " + " | ".join("–" if v is None else f"{scale * v:.{digits}f}" for v in vals) + " |")

    line("learned, rigid: width (meV)", "learned_rigid", "flat_band_width_meV")
    line("learned, rigid: gap below (meV)", "learned_rigid", "gap_below_meV")
    line("learned, rigid: gap above (meV)", "learned_rigid", "gap_above_meV")
    line("learned, rigid: Dirac velocity (10⁵ m/s)", "learned_rigid", "v_F_1e5_m_s", 3)
    line("learned, relaxed: width (meV)", "learned_relaxed", "flat_band_width_meV")
    line("learned, relaxed: gap below (meV)", "learned_relaxed", "gap_below_meV")
    line("learned, relaxed: gap above (meV)", "learned_relaxed", "gap_above_meV")
    line("Moon–Koshino, rigid: width (meV)", "moon_koshino", "flat_band_width_meV")
    line("Moon–Koshino, rigid: Dirac velocity (10⁵ m/s)", "moon_koshino", "v_F_1e5_m_s", 3)
    return out


def kpm_table() -> list[str]:
    d = _load("kpm_dos.json")
    if not d:
        return []
    rows = ["| orbitals | build H (s) | KPM (s) | peak RSS (GB) | ∫DOS / norb |", "|---|---|---|---|---|"]
    for r in d["results"]:
        rows.append(f"| {r['norb']:,} | {r['build_tightbinding_s']:.1f} | {r['kpm_s']:.1f} | {r['maxrss_GB']:.2f} | "
                    f"{r['integral_over_norb']:.5f} |")
    return rows


def generated_block() -> str:
    parts = [BEGIN, "", "### Result files", "", *index_table(), "",
             "### Band solve near E_F (`benchmarks/band_solver.py`)", "", *band_solver_table(), "",
             "### Kernel-polynomial DOS (`benchmarks/kpm_dos.py`)", "", *kpm_table(), "",
             "### Magic-angle scan by band index (`examples/magic_angle_scan.py`, "
             "`magic_angle_scan_band_index.json`)", "", *magic_angle_scan_table(), "", END]
    return "\n".join(parts)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--check", action="store_true", help="only report whether docs/results.md is up to date")
    args = p.parse_args(argv)
    text = DOC.read_text()
    if BEGIN not in text or END not in text:
        print(f"{DOC}: markers not found ({BEGIN!r} … {END!r})", file=sys.stderr)
        return 2
    head, rest = text.split(BEGIN, 1)
    tail = rest.split(END, 1)[1]
    new = head + generated_block() + tail
    if args.check:
        print("up to date" if new == text else "out of date: run python scripts/make_results_md.py")
        return 0 if new == text else 1
    tmp = DOC.with_name(f".{DOC.name}.tmp")
    tmp.write_text(new)
    os.replace(tmp, DOC)
    print(f"wrote {DOC.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
