"""Phonons of AB bilayer graphene from a model against a DFT finite-displacement check of our own (issue #15 done-when:
dispersion along Γ–M–K–Γ, ZA/ZO at the zone boundary included).

    python benchmarks/phonon_dispersion_dft.py structures          # displaced supercells (extxyz), seconds
    OMP_NUM_THREADS=1 nice -n 10 wannierml dft datasets/graphene-bilayer/phonon_check/structures_2x2.extxyz \\
        --material graphene-bilayer --scf-only --prefix ph2x2 --dataset-dir datasets/graphene-bilayer/phonon_check
    OMP_NUM_THREADS=1 nice -n 10 wannierml dft datasets/graphene-bilayer/phonon_check/structures_r3.extxyz \\
        --material graphene-bilayer --scf-only --prefix phr3 --dataset-dir datasets/graphene-bilayer/phonon_check
    python benchmarks/phonon_dispersion_dft.py compare [--model PATH]   # table, plot, JSON (≈ 1 min)

Protocol (the same for DFT and the model, so the difference is the model's error, not the method's):

* unit cell: the DFT reference AB bilayer of the workflow (frame ``0000-refAB``: a = 2.46 Å, d = 3.35 Å);
* supercells: 2×2 (16 atoms; Γ and the three M points are commensurate) and √3×√3 (12 atoms; Γ and K, K′);
* displacements: phonopy (``generate_displacements``, 0.02 Å along the Cartesian axes, ``is_diagonal=False``, ± :
  8 for √3×√3, 6 for 2×2), plus the undisplaced supercell, whose forces (residual z forces of the unrelaxed
  reference, up to 18 meV/Å) are subtracted from every displaced frame before the force constants are built.
  Phonopy's default diagonal displacements (0.01 Å, 4 per supercell) mix a 0.002 Å in-plane part into z moves:
  with the shipped SCF threshold the DFT forces carry ~5 meV/Å of noise, which that tiny in-plane part turned into
  imaginary Γ modes (−250 to −340 cm⁻¹) and a 30 cm⁻¹ disagreement of E2g between the two supercells (first run,
  replaced);
* DFT: SCF-only frames of the project's workflow (``wannierml dft --scf-only``, the shipped graphene settings, PBE+D3,
  except ``conv_thr_per_atom`` 1e-12 instead of 1e-9 Ry: ``graphene-bilayer-tight.yaml`` beside the frames, since
  QE's force error goes as the square root of the energy error), stored in
  ``datasets/graphene-bilayer/phonon_check/frames/`` (outside ``frames/``: never trained on);
* the model: its forces (float64, dispersion included) on exactly the same structures, through the same phonopy
  force constants; frequencies compared at Γ (both supercells: a consistency check of the protocol), M (2×2) and
  K (√3×√3), where each supercell's force constants are exact.

The model's full dispersion along Γ–M–K–Γ (phonopy, 6×6 supercell: Γ, M and K commensurate) is plotted with the DFT
points (``benchmarks/results/phonon_dispersion_dft.png``); JSON in ``benchmarks/results/phonon_dispersion_dft.json``
(``--out`` to change). Needs phonopy (``pip install -e ".[bench]"``).
"""
from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

from ase_wannierml.cli import atomic_output, atomic_write_text  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
CHECK_DIR = REPO / "datasets" / "graphene-bilayer" / "phonon_check"
RESULT = REPO / "benchmarks" / "results" / "phonon_dispersion_dft.json"
DISTANCE = 0.02                      # Å
THZ_TO_CM = 33.35641                 # cm⁻¹ per THz
SUPERCELLS = {"2x2": [[2, 0, 0], [0, 2, 0], [0, 0, 1]], "r3": [[1, 1, 0], [-1, 2, 0], [0, 0, 1]]}
PREFIX = {"2x2": "ph2x2", "r3": "phr3"}
#: q (fractional, primitive reciprocal cell) exact on each supercell
QPOINTS = {"2x2": {"Gamma": [0.0, 0.0, 0.0], "M": [0.5, 0.0, 0.0]},
           "r3": {"Gamma": [0.0, 0.0, 0.0], "K": [1 / 3, 1 / 3, 0.0]}}


def unit_cell():
    """The DFT reference AB bilayer (4 atoms, ``layer`` array) of the workflow's frame 0000-refAB."""
    from ase_wannierml.dft.materials import get_material
    from ase_wannierml.dft.sampling import reference_structure

    return reference_structure(get_material("graphene-bilayer"))


def _phonopy(unit, matrix):
    """Phonopy object of ``unit`` on the supercell ``matrix`` (3×3, or a key of ``SUPERCELLS``) with this check's
    displacements (±``DISTANCE`` along Cartesian axes, symmetry-reduced)."""
    from phonopy import Phonopy
    from phonopy.structure.atoms import PhonopyAtoms

    cell = PhonopyAtoms(symbols=unit.get_chemical_symbols(), cell=np.asarray(unit.cell[:]),
                        scaled_positions=unit.get_scaled_positions(), masses=unit.get_masses())
    ph = Phonopy(cell, supercell_matrix=SUPERCELLS.get(matrix, matrix) if isinstance(matrix, str) else matrix,
                 primitive_matrix=None)
    ph.generate_displacements(distance=DISTANCE, is_diagonal=False)
    return ph


def _images(ph, unit) -> list:
    """[undisplaced, displaced…] ASE Atoms of ``ph``'s supercells (phonopy's atom order, ``layer`` by height)."""
    from ase import Atoms

    z_mid = unit.positions[:, 2].mean()
    images = []
    for i, sc in enumerate([ph.supercell] + list(ph.supercells_with_displacements)):
        a = Atoms(symbols=sc.symbols, cell=sc.cell, scaled_positions=sc.scaled_positions, pbc=True)
        a.set_array("layer", (a.positions[:, 2] > z_mid).astype(int))
        a.info.update({"displacement_index": i - 1, "distance_A": DISTANCE if i else 0.0})
        images.append(a)
    return images


def _force_constants(ph, forces: list[np.ndarray]) -> None:
    """Set ``ph``'s force constants from [undisplaced, displaced…] forces (n_sc, 3) eV/Å: the undisplaced forces are
    subtracted (the reference is not at a force minimum), then phonopy's symmetrisation (sum rules)."""
    n = len(ph.supercell)
    if len(forces) != len(ph.supercells_with_displacements) + 1:
        raise ValueError(f"need {len(ph.supercells_with_displacements) + 1} force arrays (undisplaced first), "
                         f"got {len(forces)}")
    for i, f in enumerate(forces):
        f = np.asarray(f)
        if f.shape != (n, 3) or not np.all(np.isfinite(f)):
            raise ValueError(f"forces of structure {i}: need a finite ({n}, 3) array in eV/Å, got shape {f.shape}"
                             + ("" if f.shape != (n, 3) else " with non-finite entries"))
    ph.forces = np.asarray([np.asarray(f) - np.asarray(forces[0]) for f in forces[1:]])
    ph.produce_force_constants()
    ph.symmetrize_force_constants()


def _frequencies_cm(ph, q) -> list[float]:
    ph.run_qpoints([q])
    return sorted((ph.get_qpoints_dict()["frequencies"][0] * THZ_TO_CM).tolist())


def supercell_images(cell: str) -> list:
    """[undisplaced, displaced…] ASE Atoms of ``cell`` (phonopy's atom order, ``layer`` array by height)."""
    unit = unit_cell()
    images = _images(_phonopy(unit, cell), unit)
    for a in images:
        a.info["phonon_cell"] = cell
    return images


def structures() -> int:
    from ase.io import write

    CHECK_DIR.mkdir(parents=True, exist_ok=True)
    for cell in SUPERCELLS:
        out = CHECK_DIR / f"structures_{cell}.extxyz"
        images = supercell_images(cell)
        with atomic_output(out) as tmp:
            write(tmp, images, format="extxyz")
        print(f"{out.relative_to(REPO)}: {len(images)} structures of {len(images[0])} atoms "
              f"(undisplaced + {len(images) - 1} displacements)")
    return 0


def _match(ref, other) -> np.ndarray:
    """index[i] = atom of ``other`` at the (minimum-image) position of atom i of ``ref``; refuses a poor match."""
    d = other.get_scaled_positions()[None, :, :] - ref.get_scaled_positions()[:, None, :]
    d -= np.round(d)
    dist = np.linalg.norm(d @ np.asarray(ref.cell[:]), axis=2)
    idx = dist.argmin(axis=1)
    if len(set(idx.tolist())) != len(ref) or dist[np.arange(len(ref)), idx].max() > 1e-4:
        raise ValueError("frame structure does not match the phonopy supercell (atoms moved or reordered)")
    return idx


def dft_forces(cell: str) -> list[np.ndarray]:
    """Forces (n, 3) eV/Å of [undisplaced, displaced…] from the DFT frames, in phonopy's atom order."""
    from ase.io import read

    images = supercell_images(cell)
    found: dict[int, np.ndarray] = {}
    for frame in sorted((CHECK_DIR / "frames").glob(f"{PREFIX[cell]}-*")):
        meta = json.loads((frame / "meta.json").read_text())
        if meta.get("status") != "ok":
            continue
        i = int(meta["sampling"]["notes"]["source_index"])
        atoms = read(frame / "structure.extxyz")
        found[i] = atoms.get_forces()[_match(images[i], atoms)]
    missing = [i for i in range(len(images)) if i not in found]
    if missing:
        raise FileNotFoundError(f"{cell}: DFT frames missing for structures {missing} of "
                                f"{CHECK_DIR / f'structures_{cell}.extxyz'} (run `wannierml dft` first, see --help)")
    return [found[i] for i in range(len(images))]


def model_forces(cell: str, calc) -> list[np.ndarray]:
    out = []
    for a in supercell_images(cell):
        a.calc = calc
        out.append(a.get_forces())
    return out


def frequencies(cell: str, forces: list[np.ndarray]) -> dict[str, list[float]]:
    """cm⁻¹ (sorted) at the q-points exact on ``cell`` from [undisplaced, displaced…] forces (eV/Å)."""
    ph = _phonopy(unit_cell(), cell)
    _force_constants(ph, forces)
    return {q: _frequencies_cm(ph, k) for q, k in QPOINTS[cell].items()}


def model_dispersion(calc, npoints: int = 180) -> dict:
    """Model dispersion along Γ–M–K–Γ (ASE band path) from a 6×6 supercell (phonopy, same unit cell and
    displacements; Γ, M and K are exact on it)."""
    unit = unit_cell()
    ph = _phonopy(unit, [[6, 0, 0], [0, 6, 0], [0, 0, 1]])
    forces = []
    for a in _images(ph, unit):
        a.calc = calc
        forces.append(a.get_forces())
    _force_constants(ph, forces)
    path = unit.cell.bandpath("GMKG", npoints=npoints)
    x, ticks, _ = path.get_linear_kpoint_axis()
    ph.run_qpoints(path.kpts)
    freqs = np.asarray(ph.get_qpoints_dict()["frequencies"]) * THZ_TO_CM
    special = path.special_points
    return {"x": np.asarray(x).tolist(), "ticks": np.asarray(ticks).tolist(), "labels": ["Γ", "M", "K", "Γ"],
            "freq_cm": freqs.tolist(),
            "at": {"Gamma": _frequencies_cm(ph, special["G"]), "M": _frequencies_cm(ph, special["M"]),
                   "K": _frequencies_cm(ph, special["K"])}}


def compare(model: str, out: Path) -> int:
    import torch

    from ase_wannierml import WannierMLCalculator

    torch.set_num_threads(1)
    t0 = time.perf_counter()
    calc = WannierMLCalculator(model, dtype=torch.float64)
    rows: dict[str, dict] = {}
    for cell in SUPERCELLS:
        dft = frequencies(cell, dft_forces(cell))
        mod = frequencies(cell, model_forces(cell, calc))
        for q in dft:
            rows[f"{q} ({cell})"] = {"dft_cm": dft[q], "model_cm": mod[q],
                                     "diff_cm": (np.array(mod[q]) - np.array(dft[q])).tolist()}
    disp = model_dispersion(calc)
    names = ["ZA", "ZO", "TA", "TO'", "LA", "LO'"]     # at Γ: acoustic (3) + interlayer (3) are the lowest six
    print(f"AB bilayer graphene phonons: model {model} vs DFT finite displacements (PBE+D3, same supercells)")
    print(f"{'q (supercell)':14s} {'mode':>4s} {'DFT cm-1':>9s} {'model':>8s} {'diff':>7s}")
    for key, r in rows.items():
        for i, (d, m) in enumerate(zip(r["dft_cm"], r["model_cm"])):
            print(f"{key:14s} {i:4d} {d:9.1f} {m:8.1f} {m - d:+7.1f}")
    stats = {}
    for key, r in rows.items():
        d, m = np.array(r["dft_cm"]), np.array(r["model_cm"])
        ok = d > 50.0                                    # acoustic at Γ: 0 by the sum rule, not a comparison
        stats[key] = {"mae_cm": float(np.abs(m - d)[ok].mean()), "max_abs_cm": float(np.abs(m - d)[ok].max()),
                      "low6_dft_cm": d[:6].tolist(), "low6_model_cm": m[:6].tolist()}
        print(f"{key}: MAE {stats[key]['mae_cm']:.1f} cm-1, max {stats[key]['max_abs_cm']:.1f} cm-1 (modes > 50 cm-1)")
    result = {"model": model, "unit_cell": "workflow reference AB bilayer (0000-refAB geometry)",
              "distance_A": DISTANCE, "supercells": SUPERCELLS, "rows": rows, "stats": stats,
              "model_dispersion_6x6": disp, "mode_names_gamma_low6": names,
              "wall_s": round(time.perf_counter() - t0, 1)}
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, json.dumps(result, indent=1))
    _plot(result, out.with_suffix(".png"))
    print(f"wrote {out} and {out.with_suffix('.png')}")
    return 0


def _plot(result: dict, png: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    disp = result["model_dispersion_6x6"]
    x, f = np.array(disp["x"]), np.array(disp["freq_cm"])
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.5), gridspec_kw={"width_ratios": [2, 1]})
    for ax, top in zip(axes, (1700, 200)):
        ax.plot(x, f, color="tab:blue", lw=1)
        pos = {"Gamma": disp["ticks"][0], "M": disp["ticks"][1], "K": disp["ticks"][2]}
        for key, r in result["rows"].items():
            q = key.split()[0]
            xs = [pos[q]] * len(r["dft_cm"])
            ax.plot(xs, r["dft_cm"], "o", mfc="none", mec="k", ms=6,
                    label="DFT (finite displacements)" if key.startswith("M") else None)
            ax.plot(xs, r["model_cm"], "x", color="tab:red", ms=5,
                    label="model, same supercell" if key.startswith("M") else None)
            if q == "Gamma":
                ax.plot([disp["ticks"][3]] * len(r["dft_cm"]), r["dft_cm"], "o", mfc="none", mec="k", ms=6)
        ax.set_xticks(disp["ticks"], disp["labels"])
        for t in disp["ticks"]:
            ax.axvline(t, color="0.8", lw=0.5)
        ax.set_ylim(-20, top)
        ax.set_xlim(x[0], x[-1])
    axes[0].set_ylabel("frequency (cm$^{-1}$)")
    axes[0].legend(loc="lower right", fontsize=8)
    axes[1].set_title("low-frequency modes (ZA, ZO, shear, breathing)", fontsize=9)
    fig.suptitle(f"AB bilayer graphene: model ({Path(result['model']).name}) vs DFT", fontsize=10)
    fig.tight_layout()
    with atomic_output(png) as tmp:
        fig.savefig(tmp, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("what", choices=["structures", "compare"])
    ap.add_argument("--model", default="graphene-bilayer", help="shipped name or .pt file (default: shipped)")
    ap.add_argument("--out", type=Path, default=RESULT, help="JSON to write (a PNG beside it)")
    args = ap.parse_args(argv)
    if args.what == "structures":
        return structures()
    return compare(args.model, args.out)


if __name__ == "__main__":
    sys.exit(main())
