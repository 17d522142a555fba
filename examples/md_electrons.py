"""Electrons along molecular dynamics: NVT (Langevin) MD of a twisted bilayer graphene cell with the shipped model,
recording the flat-band width and the gaps to the remote bands every ``--every`` steps from the model's own
Hamiltonian of each snapshot (sparse solver, bands by absolute index: ``tb.flatbands.summarize_flat_bands``).

    python examples/md_electrons.py --m 11 --steps 1200 --every 20 --equilibrate 400   # 2.88°, 1,588 atoms
                                   # (the committed run, benchmarks/results/elph_md_electrons_m11_1200fs.json)

Setup: the rigid twisted cell at the model's AB-bilayer lattice constant and interlayer distance
(``relaxation.equilibrium_bilayer``), positions relaxed (``--relax-steps``), Maxwell–Boltzmann velocities at
``--temperature`` K, Langevin thermostat (friction 0.01 fs⁻¹, 1 fs steps). Each snapshot: H predicted
(hoppings < 3e-4 eV dropped), E_D by band index at the moiré K point, the ``--num`` states nearest E_D at
``--kpts`` (moiré special points), width of the 4 central bands and gaps to bands N/2 − 3 and N/2 + 2.
Writes to ``--outdir``: ``md_electrons.json`` (series, costs), ``timeseries.png``, ``distribution.png``, and
``checkpoint.npz`` after every snapshot (positions, momenta, cell, thermostat RNG state, step, series): rerunning the
same command continues from the last snapshot (``--steps`` may be raised to extend a finished run; a checkpoint of
a different ``--m``/``--every``/``--temperature``/``--seed`` is refused; ``--restart`` discards it).

The graphene model shipped until session 8 was not physical in long 300 K MD (layers drifted apart, flexural forces
too soft); the session-9 model holds the layer distance (docs/electron_phonon.md, "Electrons along MD").
"""
from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import resource  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402


def snapshot_bands(calc, atoms, knames: list[str], num: int) -> dict:
    """Flat-band summary (meV) of the model's H at the current geometry, with its cost (s)."""
    from ase_wannierml.tb.flatbands import neutrality_dirac_energy, summarize_flat_bands

    t0 = time.perf_counter()
    tb = calc.get_hamiltonian(atoms)
    t_h = time.perf_counter() - t0
    special = atoms.cell.bandpath().special_points
    kpts = np.array([special[n] for n in knames])
    guess = getattr(snapshot_bands, "last_ed", tb.fermi_energy if tb.fermi_energy is not None else 0.0)  # eV
    e_d, _ = neutrality_dirac_energy(tb, special["K"], float(guess))
    snapshot_bands.last_ed = e_d
    e_kn = tb.eigenvalues(kpts, num=num, near=e_d)
    info = summarize_flat_bands(tb, kpts, e_kn, e_d)
    info["H_s"] = round(t_h, 2)
    info["bands_s"] = round(time.perf_counter() - t0 - t_h, 2)
    return info


def distribution_summary(series: list, skip_fs: float) -> dict:
    """Mean, sd, min, max of width, gaps (meV), temperature (K) and layer distance (Å) over the snapshots at
    t >= ``skip_fs`` (the thermalised part), the number of such snapshots, and the layer-distance drift (Å/ps,
    least-squares slope over all snapshots)."""
    kept = [x for x in series if x["time_fs"] >= skip_fs]
    out: dict = {"skip_fs": skip_fs, "n_snapshots": len(kept)}
    for key in ("flat_band_width_meV", "gap_below_meV", "gap_above_meV", "temperature_K", "layer_distance_A"):
        v = np.array([np.nan if x.get(key) is None else x[key] for x in kept], float)
        v = v[np.isfinite(v)]
        out[key] = ({"mean": float(v.mean()), "sd": float(v.std(ddof=1)) if len(v) > 1 else 0.0,
                     "min": float(v.min()), "max": float(v.max()), "n": int(len(v))} if len(v) else None)
    if len(series) >= 2:
        t = np.array([x["time_fs"] for x in series]) / 1000.0
        d = np.array([x["layer_distance_A"] for x in series])
        out["layer_distance_drift_A_per_ps"] = float(np.polyfit(t, d, 1)[0])
    return out


def write_result(out_dir: Path, result: dict) -> None:
    tmp = out_dir / "md_electrons.json.tmp"
    tmp.write_text(json.dumps(result, indent=1))
    os.replace(tmp, out_dir / "md_electrons.json")


CHECKPOINT_KEYS = ("m", "every", "temperature", "seed", "num", "kpts")


def save_checkpoint(out_dir: Path, atoms, step: int, md_time: float, rng_state: dict, series: list, args,
                    last_ed: float, total_s: float = 0.0, sessions: int = 1, peak_rss_gb: float = 0.0) -> None:
    """Everything needed to continue the run after snapshot ``step`` (atomic write)."""
    meta = {"step": step, "md_time_s": md_time, "rng_state": rng_state, "series": series, "last_ed_eV": last_ed,
            "args": {k: getattr(args, k) for k in CHECKPOINT_KEYS}, "total_s": total_s, "sessions": sessions,
            "peak_rss_GB": peak_rss_gb}
    tmp = out_dir / "checkpoint.tmp.npz"
    np.savez(tmp, positions=atoms.positions, momenta=atoms.get_momenta(), cell=atoms.cell[:],
             numbers=atoms.numbers, layer=atoms.arrays["layer"], meta=np.array(json.dumps(meta)))
    os.replace(tmp, out_dir / "checkpoint.npz")


def load_checkpoint(out_dir: Path, args) -> dict | None:
    """The checkpoint of ``out_dir`` (None if there is none); SystemExit if it belongs to different settings."""
    path = out_dir / "checkpoint.npz"
    if not path.exists():
        return None
    with np.load(path) as f:
        data = {k: f[k] for k in f.files}
    meta = json.loads(str(data.pop("meta")))
    mine = {k: getattr(args, k) for k in CHECKPOINT_KEYS}
    if meta["args"] != mine:
        raise SystemExit(f"{path} was written with {meta['args']}, this run has {mine}: use another --outdir or "
                         "--restart")
    data.update(meta)
    return data


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--m", type=int, default=11, help="twist index (r = 1): 11 → 2.88°")
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--every", type=int, default=20)
    ap.add_argument("--temperature", type=float, default=300.0)
    ap.add_argument("--relax-steps", type=int, default=50)
    ap.add_argument("--num", type=int, default=12, help="states near E_D per k-point")
    ap.add_argument("--kpts", default="K,G,M")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--outdir", default="md_electrons_output")
    ap.add_argument("--restart", action="store_true", help="ignore (and overwrite) a checkpoint in --outdir")
    ap.add_argument("--equilibrate", type=float, default=100.0,
                    help="fs left out of the distribution summary (thermalisation from the relaxed start)")
    args = ap.parse_args(argv)
    if args.every < 1 or args.steps < args.every:
        raise SystemExit("need 1 <= --every <= --steps")
    torch.set_num_threads(1)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from ase import units
    from ase.md.langevin import Langevin
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution

    from ase_wannierml import WannierMLCalculator
    from ase_wannierml.relaxation import equilibrium_bilayer, relax
    from ase_wannierml.structures import twisted_bilayer

    out_dir = Path(args.outdir)
    out_dir.mkdir(parents=True, exist_ok=True)
    knames = [s.strip() for s in args.kpts.split(",")]
    t_start = time.perf_counter()
    ckpt = None if args.restart else load_checkpoint(out_dir, args)
    a, d = equilibrium_bilayer(WannierMLCalculator("graphene-bilayer", dtype=torch.float64), "graphene")
    atoms = twisted_bilayer("graphene", m=args.m, r=1, a=a, interlayer=d)
    calc = WannierMLCalculator("graphene-bilayer", hamiltonian_threshold=3e-4)
    if ckpt is not None:
        if len(ckpt["numbers"]) != len(atoms) or np.any(ckpt["numbers"] != atoms.numbers):
            raise SystemExit(f"{out_dir / 'checkpoint.npz'} holds a different structure")
        atoms.set_cell(ckpt["cell"])
        atoms.positions = ckpt["positions"]
        atoms.arrays["layer"] = np.asarray(ckpt["layer"])
    atoms.calc = calc
    if args.relax_steps and ckpt is None:
        relax(atoms, fmax=0.01, steps=args.relax_steps, logfile=None)
    theta = float(atoms.info.get("twist_angle", np.nan))
    print(f"θ = {theta:.3f}°, {len(atoms)} atoms; setup {time.perf_counter() - t_start:.1f} s"
          + (f"; resumed at step {ckpt['step']}" if ckpt is not None else ""), flush=True)

    prior_s = 0.0 if ckpt is None else float(ckpt.get("total_s", 0.0))   # wall time of earlier sessions
    sessions = 1 if ckpt is None else int(ckpt.get("sessions", 1)) + 1
    prior_rss = 0.0 if ckpt is None else float(ckpt.get("peak_rss_GB", 0.0))   # GB, max over earlier sessions

    def partial(series: list, md_time: float) -> dict:
        n_md = series[-1]["step"] if series else 0
        snap_cost = [x["H_s"] + x["bands_s"] for x in series]
        return {"m": args.m, "theta_deg": theta, "n_atoms": len(atoms), "temperature_K": args.temperature,
                "steps_done": n_md, "every": args.every, "timestep_fs": 1.0, "friction_per_fs": 0.01,
                "kpoints": knames, "num": args.num, "md_s_per_step": round(md_time / max(n_md, 1), 3),
                "snapshot_s_median": float(np.median(snap_cost)),
                "peak_rss_GB": max(prior_rss, round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6, 3)),
                "total_s": round(prior_s + time.perf_counter() - t_start, 1), "sessions": sessions,
                "summary": distribution_summary(series, args.equilibrate), "series": series}

    rng = np.random.default_rng(args.seed)
    if ckpt is None:
        MaxwellBoltzmannDistribution(atoms, temperature_K=args.temperature, rng=rng)
        series, md_time, first = [], 0.0, 0
    else:
        atoms.set_momenta(ckpt["momenta"])
        rng.bit_generator.state = ckpt["rng_state"]
        series, md_time, first = list(ckpt["series"]), float(ckpt["md_time_s"]), int(ckpt["step"]) + args.every
        snapshot_bands.last_ed = float(ckpt["last_ed_eV"])
    dyn = Langevin(atoms, 1.0 * units.fs, temperature_K=args.temperature, friction=0.01 / units.fs, rng=rng)
    layer = atoms.arrays["layer"]
    for step in range(first, args.steps + 1, args.every):
        if step:
            t0 = time.perf_counter()
            dyn.run(args.every)
            md_time += time.perf_counter() - t0
        info = snapshot_bands(calc, atoms, knames, args.num)
        z = atoms.positions[:, 2]
        info.update(step=step, time_fs=float(step), temperature_K=float(atoms.get_temperature()),
                    layer_distance_A=float(z[layer == 1].mean() - z[layer == 0].mean()),
                    corrugation_A=float(max(np.ptp(z[layer == k]) for k in (0, 1))))
        series.append(info)
        res = partial(series, md_time)
        write_result(out_dir, res)  # after every snapshot: a stopped run keeps its data
        save_checkpoint(out_dir, atoms, step, md_time, rng.bit_generator.state, series, args,
                        float(snapshot_bands.last_ed), res["total_s"], sessions, res["peak_rss_GB"])
        print(f"step {step:5d}  T {info['temperature_K']:6.1f} K  width {info['flat_band_width_meV']:7.2f} meV  "
              f"gaps {info['gap_below_meV']} / {info['gap_above_meV']} meV  d {info['layer_distance_A']:.3f} Å  "
              f"H {info['H_s']} s, bands {info['bands_s']} s", flush=True)
    result = partial(series, md_time)
    write_result(out_dir, result)

    t = np.array([s["time_fs"] for s in series])
    width = np.array([s["flat_band_width_meV"] for s in series])
    gaps = {k: np.array([np.nan if s[k] is None else s[k] for s in series], float)
            for k in ("gap_below_meV", "gap_above_meV")}
    fig, ax = plt.subplots(3, 1, figsize=(6, 7), sharex=True)
    ax[0].plot(t, width, "o-")
    ax[0].set_ylabel("flat-band width (meV)")
    ax[1].plot(t, gaps["gap_below_meV"], "o-", label="gap below")
    ax[1].plot(t, gaps["gap_above_meV"], "s-", label="gap above")
    ax[1].axhline(0.0, color="k", lw=0.5)
    ax[1].set_ylabel("gap to remote band (meV)")
    ax[1].legend()
    ax[2].plot(t, [s["temperature_K"] for s in series], "o-", color="C3")
    ax[2].set_ylabel("T (K)", color="C3")
    ax2 = ax[2].twinx()
    ax2.plot(t, [s["layer_distance_A"] for s in series], "s-", color="C2")
    ax2.set_ylabel("layer distance (Å)", color="C2")
    ax[2].set_xlabel("time (fs)")
    for a in ax[:2]:
        a.axvspan(0, args.equilibrate, color="0.9")
    fig.suptitle(f"{theta:.2f}° TBG, {args.temperature:.0f} K Langevin MD (shipped model)")
    fig.tight_layout()
    fig.savefig(out_dir / "timeseries.png", dpi=120)
    keep = t >= args.equilibrate                                    # the thermalised part only
    fig, ax = plt.subplots(1, 2, figsize=(8, 3.5))
    ax[0].hist(width[keep], bins=max(5, int(keep.sum()) // 2), alpha=0.7)
    ax[0].set_xlabel("flat-band width (meV)")
    ax[0].set_ylabel("snapshots")
    for k, v in gaps.items():
        v = v[keep]
        if np.isfinite(v).any():
            ax[1].hist(v[np.isfinite(v)], bins=max(5, len(v) // 2), alpha=0.6, label=k.replace("_meV", ""))
    ax[1].set_xlabel("gap to remote band (meV)")
    ax[1].legend()
    fig.suptitle(f"t >= {args.equilibrate:.0f} fs: {int(keep.sum())} snapshots")
    fig.tight_layout()
    fig.savefig(out_dir / "distribution.png", dpi=120)
    print(f"MD {result['md_s_per_step']} s/step, snapshot {result['snapshot_s_median']:.1f} s (median), "
          f"peak RSS {result['peak_rss_GB']} GB, total {result['total_s']} s → {out_dir}")
    return result


if __name__ == "__main__":
    main()
