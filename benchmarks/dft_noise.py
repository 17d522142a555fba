"""The noise floor of our DFT labels: the same structure rigidly translated must give the same energy, forces and
Wannier Hamiltonian; whatever changes is numerical (the "egg-box" effect of the real-space FFT grid, SCF and
Wannier90 convergence).

    python benchmarks/dft_noise.py structures --out-dir scratch/dft_noise        # writes the structures + material
    OMP_NUM_THREADS=1 nice -n 10 wannierml dft scratch/dft_noise/translated_ab.extxyz --material graphene-bilayer \
        --scf-only --prefix eggbox --dataset-dir datasets/graphene-bilayer-noise --ranks 1
    OMP_NUM_THREADS=1 nice -n 10 wannierml dft scratch/dft_noise/translated_ab.extxyz \
        --material datasets/graphene-bilayer-noise/graphene-bilayer-ecutrho480.yaml --scf-only --prefix eggbox480 \
        --dataset-dir datasets/graphene-bilayer-noise --ranks 1
    OMP_NUM_THREADS=1 nice -n 10 wannierml dft scratch/dft_noise/translated_snapshot.extxyz \
        --material graphene-bilayer --prefix shifted --dataset-dir datasets/graphene-bilayer-noise
    python benchmarks/dft_noise.py compare          # table + benchmarks/results/dft_noise_graphene.json

Structures: the reference AB bilayer (a = 2.46 Å, d = 3.35 Å) translated rigidly by quarters of the dense FFT grid
spacing along z (20 Å / 192) and along x (2.46 Å / 24), at the workflow's ecutrho (240 Ry) and at 480 Ry; and one
thermal 16-atom training snapshot (``--snapshot``, a full Wannier frame) translated by a small vector that is not a
grid vector. Physics is translation invariant, so every difference between these frames is noise of the labels:
the energy (meV/atom), the mean force per layer (meV/Å: the interlayer signal: shear, breathing, binding), the
force components (meV/Å) and, for the snapshot, the onsite energies, hoppings and bands (meV).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from ase_wannierml.cli import atomic_output, atomic_write_text

ROOT = Path(__file__).resolve().parents[1]
GRID_Z, GRID_X = 20.0 / 192, 2.46 / 24          # Å: dense FFT spacing of the reference cell at ecutrho 240 Ry
SNAPSHOT_SHIFT = (0.037, 0.051, 0.043)          # Å: not a multiple of any grid spacing
NOISE_DIR = ROOT / "datasets/graphene-bilayer-noise"


def write_structures(out_dir: Path, snapshot: str) -> None:
    from ase.io import write

    from ase_wannierml.dft.materials import get_material
    from ase_wannierml.dft.sampling import reference_structure
    from ase_wannierml.training.frames import load_frame_dir

    out_dir.mkdir(parents=True, exist_ok=True)
    ref = reference_structure(get_material("graphene-bilayer"))
    images = []
    for axis, step in ((2, GRID_Z), (0, GRID_X)):
        for quarter in range(4):
            if axis == 0 and quarter == 0:
                continue                              # the untranslated cell is already in the z series
            a = ref.copy()
            a.positions[:, axis] += quarter * step / 4
            a.info.update({"translation_axis": "xyz"[axis], "translation_A": quarter * step / 4})
            images.append(a)
    with atomic_output(out_dir / "translated_ab.extxyz") as tmp:
        write(tmp, images, format="extxyz")
    snap = load_frame_dir(ROOT / "datasets/graphene-bilayer/frames" / snapshot).atoms
    moved = snap.copy()
    moved.positions += np.array(SNAPSHOT_SHIFT)
    moved.info = {"translated_from": snapshot, "translation_A": ",".join(map(str, SNAPSHOT_SHIFT))}
    for key in list(moved.arrays):
        if key not in ("numbers", "positions", "layer"):
            del moved.arrays[key]
    moved.calc = None
    with atomic_output(out_dir / "translated_snapshot.extxyz") as tmp:
        write(tmp, [moved], format="extxyz")
    from ase_wannierml.dft.material_files import material_to_yaml

    text = material_to_yaml(get_material("graphene-bilayer"))
    if "ecutrho: 240.0" not in text or not text.startswith("name: graphene-bilayer\n"):
        raise ValueError("the shipped graphene material no longer has ecutrho 240 Ry: update dft_noise.py")
    text = text.replace("ecutrho: 240.0", "ecutrho: 480.0").replace("name: graphene-bilayer\n",
                                                                  "name: graphene-bilayer-ecutrho480\n", 1)
    atomic_write_text(out_dir / "graphene-bilayer-ecutrho480.yaml", text)
    print(f"{len(images)} translated AB cells, 1 translated snapshot ({snapshot}) and the 480 Ry material -> {out_dir}")


def _layer_means(frame) -> np.ndarray:
    layer = np.asarray(frame.atoms.arrays["layer"])
    return np.array([frame.forces[layer == l].mean(0) for l in sorted(set(layer))])


def compare(out: Path, snapshot: str) -> dict:
    from ase_wannierml.training.frames import frame_status, load_frame_dir

    result = {"grid_spacing_A": {"z": GRID_Z, "x": GRID_X}, "series": {}}
    print(f"{'series':10s} {'frames':>6s} {'E spread meV/atom':>18s} {'layer-mean F spread meV/A (x,y,z)':>36s} "
          f"{'F component max dev meV/A':>26s}")
    for prefix in ("eggbox", "eggbox480"):
        dirs = sorted(d for d in NOISE_DIR.glob("frames/*") if d.name.startswith(prefix + "-")
                      and frame_status(d)[0] == "ok")
        dirs = [d for d in dirs if d.name.split("-")[0] == prefix]
        if len(dirs) < 2:
            continue
        frames = [load_frame_dir(d) for d in dirs]
        e = np.array([f.energy / len(f.atoms) for f in frames]) * 1e3
        lm = np.array([_layer_means(f)[1] for f in frames]) * 1e3          # top layer (bottom = −top: QE removes
        forces = np.array([f.forces for f in frames]) * 1e3                #  the net force)
        dev = np.abs(forces - forces.mean(0)).max()
        row = {"frames": [d.name for d in dirs], "energy_spread_meV_per_atom": float(np.ptp(e)),
               "top_layer_mean_force_spread_meV_A": np.ptp(lm, axis=0).tolist(),
               "force_component_max_deviation_meV_A": float(dev),
               "ecutrho_Ry": json.loads((dirs[0] / "meta.json").read_text())["material_spec"]["dft"]["ecutrho"]}
        result["series"][prefix] = row
        print(f"{prefix:10s} {len(dirs):6d} {row['energy_spread_meV_per_atom']:18.4f} "
              f"{str(np.round(row['top_layer_mean_force_spread_meV_A'], 2)):>36s} {dev:26.2f}")
    shifted = sorted(d for d in NOISE_DIR.glob("frames/shifted-*") if frame_status(d)[0] == "ok")
    if shifted:
        a = load_frame_dir(ROOT / "datasets/graphene-bilayer/frames" / snapshot)
        b = load_frame_dir(shifted[0])
        de = (b.energy - a.energy) / len(a.atoms) * 1e3
        df = (b.forces - a.forces) * 1e3
        dlm = (_layer_means(b) - _layer_means(a)) * 1e3
        row = {"frame": shifted[0].name, "of": snapshot, "energy_diff_meV_per_atom": float(de),
               "force_rmse_meV_A": float(np.sqrt((df ** 2).mean())), "force_max_meV_A": float(np.abs(df).max()),
               "layer_mean_force_diff_meV_A": dlm.tolist()}
        if a.tb is not None and b.tb is not None:
            on_a = np.zeros(len(a.atoms))
            on_b = np.zeros(len(a.atoms))
            on_a[a.tb.orbitals.atom_index] = np.real(a.tb.onsite_energies()) - a.meta.get("vacuum_level_eV", 0.0)
            on_b[b.tb.orbitals.atom_index] = np.real(b.tb.onsite_energies()) - b.meta.get("vacuum_level_eV", 0.0)
            d_on = (on_b - on_a) * 1e3
            k = np.random.default_rng(0).random((40, 3)) * [1, 1, 0]
            ea, eb = a.tb.eigenvalues(k), b.tb.eigenvalues(k)
            ea -= a.meta.get("vacuum_level_eV", 0.0)
            eb -= b.meta.get("vacuum_level_eV", 0.0)
            ef = a.meta.get("fermi_level_eV", 0.0) - a.meta.get("vacuum_level_eV", 0.0)
            win = np.abs(ea - ef) < 1.0
            row.update({"onsite_mae_meV": float(np.abs(d_on).mean()),
                        "onsite_mae_minus_mean_meV": float(np.abs(d_on - d_on.mean()).mean()),
                        "onsite_mean_diff_meV": float(d_on.mean()),
                        "vacuum_level_diff_meV": 1e3 * float(b.meta.get("vacuum_level_eV", 0.0)
                                                              - a.meta.get("vacuum_level_eV", 0.0)),
                        "band_mae_1eV_meV": float(1e3 * np.abs(eb - ea)[win].mean())})
        result["snapshot"] = row
        print(json.dumps(row, indent=1))
    atomic_write_text(out, json.dumps(result, indent=1))
    print(f"-> {out}")
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("command", choices=["structures", "compare"])
    p.add_argument("--out-dir", default=str(ROOT / "scratch/dft_noise"))
    p.add_argument("--snapshot", default="md2x2-T300-train-s15-000")
    p.add_argument("--out", default=str(ROOT / "benchmarks/results/dft_noise_graphene.json"))
    args = p.parse_args(argv)
    if args.command == "structures":
        write_structures(Path(args.out_dir), args.snapshot)
    else:
        compare(Path(args.out), args.snapshot)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
