"""Training throughput with 1 and 2 processes under ``torchrun`` (gloo, data parallel), in the same run.

The run is the real pipeline: ``torchrun --standalone --nproc_per_node P -m ase_wannierml.training.cli train
config.yaml`` on the graphene-bilayer frames (``datasets/graphene-bilayer``), with the shipped model's stage-2
settings (``configs/graphene-bilayer-stage2.yaml``: model size, all loss terms incl. the band and
H(k) terms, float64 training, batch of 4 frames) except: fresh weights (no ``init_from``), a short run
(``--warmup-steps`` + ``--steps`` optimizer steps), a log line every step, no validation or checkpoint before
the end, and everything written to a temporary directory (the data set cache is built once, before the timed runs,
and shared). Each process runs one torch thread (``OMP_NUM_THREADS=1``), so P processes use P cores.

Throughput is measured from outside: this script follows ``<output>/metrics.jsonl`` (written by rank 0 after
every step) and stamps each new line's arrival; steady-state steps/s = (``--steps``) / (time from the line of step
``warmup`` to the line of the last step), so start-up (imports, cache load, gloo rendezvous, DDP set-up) and the
first steps are excluded. Frames/s = steps/s × global batch size (the global batch is split across the ranks, so
the per-step work is the same for every P and the ideal ratio is P). The processes-ratio is reported as measured,
together with the load average: on 2 cores shared with other jobs it can be well below 2. The 1- and 2-process
runs alternate for ``--rounds`` rounds (default 3); reported: the median steps/s per process count (with min–max),
the ratio of the medians, and the ratio within each round (back-to-back runs, similar load).

    flock scratch/cpu.lock python benchmarks/training_throughput.py              # ≈ 5–10 min (loaded machine)
    python benchmarks/training_throughput.py --procs 1 2 --steps 20 --warmup-steps 3 --rounds 1   # quick
    flock scratch/cpu.lock python benchmarks/training_throughput.py --batch-size 16 \
        --json benchmarks/results/training_throughput_batch16.json   # more work per step and rank

Writes ``benchmarks/results/training_throughput.json``.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
BASE_CONFIG = REPO / "configs" / "graphene-bilayer-stage2.yaml"


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def make_config(base: Path, workdir: Path, output: str, max_steps: int, batch_size: int | None) -> dict:
    """The benchmark config: ``base`` with fresh weights, a short run, a log line every step, files in workdir."""
    raw = yaml.safe_load(base.read_text())
    data, run, optim = raw.setdefault("data", {}), raw.setdefault("run", {}), raw.setdefault("optim", {})
    data["frames"] = [str(REPO / f) if not Path(f).is_absolute() else f for f in data.get("frames", [])]
    data["cache"] = str(workdir / "dataset_cache.pt")
    run.update({"output": str(workdir / output), "init_from": "", "log_every": 1, "eval_every": 10 * max_steps,
                "checkpoint_every": 10 * max_steps, "patience": 0, "progress": False})
    optim["max_steps"] = max_steps
    if batch_size:
        optim["batch_size"] = batch_size
    return raw


def build_cache(config_path: Path) -> float:
    """Build the data set cache once (not timed as training); returns seconds."""
    t0 = time.perf_counter()
    code = ("import sys; from ase_wannierml.training.config import load_config; "
            "from ase_wannierml.training.setup import prepare_dataset; "
            "ds = prepare_dataset(load_config(sys.argv[1])); print(len(ds))")
    subprocess.run([sys.executable, "-c", code, str(config_path)], check=True, cwd=REPO,
                   env={**os.environ, "OMP_NUM_THREADS": "1"})
    return time.perf_counter() - t0


def torchrun_cmd(nprocs: int, config_path: Path) -> list[str]:
    torchrun = shutil.which("torchrun")
    launcher = [torchrun] if torchrun else [sys.executable, "-m", "torch.distributed.run"]
    return launcher + ["--standalone", "--nproc_per_node", str(nprocs), "-m", "ase_wannierml.training.cli",
                       "train", str(config_path), "--no-progress"]


def run_and_follow(cmd: list[str], metrics: Path, timeout: float, poll: float = 0.02) -> tuple[dict[int, float], float]:
    """Run ``cmd``; return {step: arrival time (s since start)} of the 'train' lines of ``metrics`` and total s."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    t0 = time.perf_counter()
    log = open(metrics.parent.parent / f"{metrics.parent.name}.log", "w")
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    arrivals: dict[int, float] = {}
    pos = 0
    buf = ""
    try:
        while True:
            done = proc.poll() is not None
            if metrics.exists():
                with open(metrics) as fh:
                    fh.seek(pos)
                    chunk = fh.read()
                    pos = fh.tell()
                now = time.perf_counter() - t0
                buf += chunk
                *lines, buf = buf.split("\n")
                for line in lines:
                    rec = json.loads(line)
                    if rec.get("event") == "train":
                        arrivals[int(rec["step"])] = now
            if done:
                break
            if time.perf_counter() - t0 > timeout:
                proc.kill()
                raise TimeoutError(f"{' '.join(cmd)} took longer than {timeout} s")
            time.sleep(poll)
    finally:
        log.close()
    if proc.returncode != 0:
        tail = (metrics.parent.parent / f"{metrics.parent.name}.log").read_text()[-3000:]
        raise RuntimeError(f"{' '.join(cmd)} failed with exit code {proc.returncode}:\n{tail}")
    return arrivals, time.perf_counter() - t0


def measure(nprocs: int, workdir: Path, args, batch: int) -> dict:
    max_steps = args.warmup_steps + args.steps
    name = f"run_p{nprocs}"
    cfg = make_config(BASE_CONFIG, workdir, name, max_steps, args.batch_size)
    path = workdir / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    la = load_average()
    arrivals, total = run_and_follow(torchrun_cmd(nprocs, path), workdir / name / "metrics.jsonl", args.timeout)
    first, last = args.warmup_steps, max_steps
    if first not in arrivals or last not in arrivals:
        raise RuntimeError(f"{nprocs} procs: missing log lines (have steps {sorted(arrivals)[:3]}…)")
    dt = arrivals[last] - arrivals[first]
    steps_per_s = (last - first) / dt
    return {"nprocs": nprocs, "threads_per_proc": 1, "global_batch_frames": batch, "timed_steps": last - first,
            "warmup_steps": first, "timed_s": dt, "steps_per_s": steps_per_s, "frames_per_s": steps_per_s * batch,
            "s_per_step": 1.0 / steps_per_s, "total_wall_s": total,
            "startup_s": arrivals.get(1, float("nan")), "load_average_before": la, "load_average_after": load_average()}


def summarise(runs: list[dict], procs: list[int]) -> list[dict]:
    """Per process count: median steps/s over the rounds (min, max), and the ratio to 1 process both of the medians
    and within each round (runs of one round are back to back, so they saw similar machine load)."""
    out = []
    for n in procs:
        sel = [r for r in runs if r["nprocs"] == n]
        sps = [r["steps_per_s"] for r in sel]
        med = statistics.median(sps)
        row = {k: sel[0][k] for k in ("nprocs", "threads_per_proc", "global_batch_frames", "timed_steps",
                                      "warmup_steps")}
        row.update(steps_per_s=med, steps_per_s_min=min(sps), steps_per_s_max=max(sps), s_per_step=1.0 / med,
                   frames_per_s=med * row["global_batch_frames"], rounds=len(sel),
                   load_average_1min=[r["load_average_before"][0] for r in sel])
        out.append(row)
    base = next((r for r in out if r["nprocs"] == 1), None)
    for row in out:
        if base:
            row["speedup_vs_1"] = row["steps_per_s"] / base["steps_per_s"]
            one = {r["round"]: r["steps_per_s"] for r in runs if r["nprocs"] == 1}
            row["speedup_vs_1_per_round"] = [r["steps_per_s"] / one[r["round"]] for r in runs
                                             if r["nprocs"] == row["nprocs"] and r["round"] in one]
    return out


def table(rows: list[dict]) -> str:
    lines = ["| processes | global batch | s/step | steps/s (min–max) | frames/s | speed-up vs 1 (per round) | "
             "load average (1 min) per round |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        sp = (f"**{r['speedup_vs_1']:.2f}×** ({', '.join(f'{x:.2f}' for x in r['speedup_vs_1_per_round'])})"
              if "speedup_vs_1" in r else "-")
        lines.append(f"| {r['nprocs']} | {r['global_batch_frames']} | {r['s_per_step']:.3f} | {r['steps_per_s']:.2f} "
                     f"({r['steps_per_s_min']:.2f}–{r['steps_per_s_max']:.2f}) | {r['frames_per_s']:.1f} | {sp} | "
                     f"{', '.join(f'{x:.1f}' for x in r['load_average_1min'])} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--procs", type=int, nargs="+", default=[1, 2], help="process counts to run, in this order")
    p.add_argument("--steps", type=int, default=100, help="timed optimizer steps per run")
    p.add_argument("--warmup-steps", type=int, default=10, help="untimed steps first")
    p.add_argument("--batch-size", type=int, default=None, help="global batch (default: the config's)")
    p.add_argument("--rounds", type=int, default=3, help="repeat the whole 1/2-process sequence (medians reported)")
    p.add_argument("--timeout", type=float, default=1800.0, help="seconds per torchrun")
    p.add_argument("--workdir", default=None, help="keep configs, logs and metrics here (default: a temp dir)")
    p.add_argument("--json", default=str(RESULTS / "training_throughput.json"), help="output file ('' for none)")
    p.add_argument("--load", help="only print the table of a JSON file written earlier")
    args = p.parse_args(argv)
    if args.load:
        print(table(json.loads(Path(args.load).read_text())["summary"]))
        return 0
    if min(args.procs) < 1 or args.steps < 1 or args.warmup_steps < 1:
        p.error("--procs, --steps and --warmup-steps must be >= 1")

    tmp = None
    if args.workdir:
        workdir = Path(args.workdir).resolve()
        workdir.mkdir(parents=True, exist_ok=True)
    else:
        tmp = tempfile.TemporaryDirectory()
        workdir = Path(tmp.name)
    try:
        cfg = make_config(BASE_CONFIG, workdir, "cache_build", 1, args.batch_size)
        batch = int(cfg["optim"].get("batch_size", 4))
        (workdir / "cache_build.yaml").write_text(yaml.safe_dump(cfg))
        cache_s = build_cache(workdir / "cache_build.yaml")
        print(f"data set cache built in {cache_s:.1f} s", flush=True)
        runs = []
        start_la = load_average()
        for rnd in range(args.rounds):
            for n in args.procs:
                for old in (workdir / f"run_p{n}",):
                    shutil.rmtree(old, ignore_errors=True)
                r = measure(n, workdir, args, batch)
                r["round"] = rnd
                runs.append(r)
                print(f"round {rnd}: {n} process(es): {r['s_per_step']:.3f} s/step, {r['frames_per_s']:.1f} frames/s "
                      f"(start-up {r['startup_s']:.1f} s, load {r['load_average_before'][0]:.2f})", flush=True)
    finally:
        if tmp is not None:
            tmp.cleanup()
    summary = summarise(runs, args.procs)
    out = {"benchmark": "training_throughput", "config": str(BASE_CONFIG.relative_to(REPO)),
           "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
           "cache_build_s": cache_s, "load_average_start": start_la, "load_average_end": load_average(),
           "runs": runs, "summary": summary}
    print()
    print(table(summary))
    print(f"load average: start {start_la}, end {out['load_average_end']}")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(out, indent=1))
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
