"""Summarise a frame dataset: ``python -m ase_wannierml.dft.summary datasets/graphene-bilayer``.

Counts frames by status and kind, and prints timings (s) and quality numbers (meV, Å, eV) per kind.
"""
from __future__ import annotations

import argparse
import json
import os
from collections import defaultdict
from pathlib import Path

import numpy as np

from .quality import QualityCriteria, judge


def load_metas(dataset: Path) -> list[dict]:
    """All ``meta.json`` of ``dataset/frames/*`` (sorted by frame id)."""
    metas = []
    for m in sorted((Path(dataset) / "frames").glob("*/meta.json")):
        metas.append(json.loads(m.read_text()))
    return metas


def summarise(metas: list[dict]) -> str:
    """Human-readable table of counts, timings and quality per frame kind."""
    lines = []
    by_kind: dict[str, list[dict]] = defaultdict(list)
    for m in metas:
        by_kind[m["sampling"]["kind"]].append(m)
    n_ok = sum(m["status"] == "ok" for m in metas)
    lines.append(f"{len(metas)} frames: {n_ok} ok, {len(metas) - n_ok} rejected")
    for kind, ms in sorted(by_kind.items()):
        ok = [m for m in ms if m["status"] == "ok"]
        tot = np.array([m["timings_s"]["total"] for m in ms])
        lines.append(f"[{kind}] {len(ms)} frames, {len(ok)} ok; wall time per frame median {np.median(tot):.0f} s, "
                     f"max {tot.max():.0f} s")
        steps = defaultdict(list)
        for m in ms:
            for k, v in m["timings_s"].items():
                steps[k].append(v)
        lines.append("   steps (median s): " + ", ".join(f"{k} {np.median(v):.0f}" for k, v in steps.items()))
        q = [m["quality"] for m in ms if m.get("quality")]
        if q:
            for key in ("band_max_meV", "band_rms_meV", "band_max_1eV_meV", "centre_max_distance_A"):
                v = np.array([x[key] for x in q if x.get(key) is not None])
                if v.size:
                    lines.append(f"   {key}: median {np.median(v):.3g}, 90% {np.percentile(v, 90):.3g}, "
                                 f"max {v.max():.3g}")
        for m in ms:
            if m["status"] != "ok":
                lines.append(f"   rejected {m['frame_id']}: {m['reason'][:160]}")
    return "\n".join(lines)


def rejudge(dataset: Path, criteria: QualityCriteria | None = None) -> int:
    """Re-apply ``criteria`` to every frame that has quality metrics (frames that failed with an error stay
    rejected); rewrites ``meta.json`` atomically when the status changes.  Returns the number changed."""
    criteria = criteria or QualityCriteria()
    changed = 0
    for path in sorted((Path(dataset) / "frames").glob("*/meta.json")):
        meta = json.loads(path.read_text())
        if not meta.get("quality") or str(meta.get("reason", "")).startswith("error"):
            continue
        status, reason = judge(meta["quality"], criteria)
        if (status, reason) != (meta["status"], meta["reason"]):
            meta.update(status=status, reason=reason, quality_criteria=criteria.to_dict())
            tmp = path.with_suffix(".json.tmp")
            tmp.write_text(json.dumps(meta, indent=1))
            os.replace(tmp, path)
            changed += 1
    return changed


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dataset", type=Path)
    ap.add_argument("--rejudge", action="store_true", help="re-apply the current QualityCriteria to all frames")
    args = ap.parse_args(argv)
    if args.rejudge:
        print(f"{rejudge(args.dataset)} frames changed status")
    print(summarise(load_metas(args.dataset)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
