"""Synthetic training frames with known physics, for tests and examples (not DFT).

Each frame is a 4-atom bilayer graphene cell (random stacking, interlayer distance, ±2 % strain, 0.03 Å rattle)
written exactly like a DFT frame (``structure.extxyz``, ``wannier90_hr.dat.gz``, ``wannier90_centres.xyz``,
``meta.json``):

- energy / forces / stress from ASE's Morse potential (r0 = 1.42 Å): consistent labels, forces = −∇E;
- the Hamiltonian is the Moon–Koshino pz model (``slater_koster.py``) plus an environment-dependent onsite
  energy δ_i = β Σ_j t_ij² (β = 0.02 /eV, tens of meV of spread), on an *absolute* energy zero: onsite energies
  and the Fermi level share a random per-frame offset, as DFT's cell-average potential does;
- Wannier centres are written in other periodic images than their atoms (in-plane and by c along z, pitfall 4 of
  ``shared/dft/graphene``), with H_mn(R) relabelled accordingly, so the R ↔ cell-shift bookkeeping is exercised.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from ase import Atoms
from ase.calculators.morse import MorsePotential
from ase.io import write

from ase_wannierml.slater_koster import moon_koshino_pairs
from ase_wannierml.structures import bilayer
from ase_wannierml.tb.tightbinding import OrbitalTable, TightBinding

MORSE = {"epsilon": 2.0, "r0": 1.42, "rho0": 6.0, "rcut1": 1.9, "rcut2": 2.7}
ONSITE_BETA = 0.02  # 1/eV


def synthetic_tb(atoms: Atoms, energy_zero: float) -> TightBinding:
    """Moon–Koshino pz hoppings with onsite energies energy_zero + β Σ_j t_ij² (eV), atom-centred orbitals."""
    i, j, R, t = moon_koshino_pairs(atoms)
    n = len(atoms)
    delta = ONSITE_BETA * (np.bincount(i, t**2, minlength=n) + np.bincount(j, t**2, minlength=n))
    diag = np.arange(n)
    return TightBinding(atoms.cell.array, np.concatenate([R, -R, np.zeros((n, 3), np.int64)]),
                        np.concatenate([i, j, diag]), np.concatenate([j, i, diag]),
                        np.concatenate([t, t, energy_zero + delta]), OrbitalTable.from_atoms(atoms, {"C": ["pz"]}),
                        pbc=atoms.pbc, atoms=atoms, num_electrons=float(n))


def random_bilayer(rng: np.random.Generator) -> Atoms:
    """4-atom bilayer graphene: random stacking shift, interlayer 3.2–3.6 Å, ±2 % strain, 0.03 Å rattle."""
    atoms = bilayer("graphene", stacking=tuple(rng.uniform(0, 1, 2)), interlayer=rng.uniform(3.2, 3.6))
    strain = np.eye(3)
    strain[:2, :2] += rng.uniform(-0.02, 0.02, (2, 2))
    strain[:2, :2] = 0.5 * (strain[:2, :2] + strain[:2, :2].T)
    atoms.set_cell(atoms.cell.array @ strain, scale_atoms=True)
    atoms.positions += rng.normal(scale=0.03, size=atoms.positions.shape)
    atoms.pbc = True   # as written by the DFT workflow
    return atoms


def half_filling_level(tb: TightBinding, n: int = 12) -> float:
    """Fermi level (eV) of one electron per pz orbital: midway between the highest occupied and lowest empty
    state on a Γ-centred n×n grid (n a multiple of 3 contains K, where graphene's bands touch)."""
    k = np.stack(np.meshgrid(np.arange(n) / n, np.arange(n) / n, [0.0], indexing="ij"), -1).reshape(-1, 3)
    e = np.sort(tb.eigenvalues(k).ravel())
    half = len(e) // 2
    return float(0.5 * (e[half - 1] + e[half]))


def shifted_wannier_tb(tb: TightBinding, offsets: np.ndarray) -> TightBinding:
    """Relabel an atom-centred H (orbital k on atom k) for Wannier centres moved by lattice vectors ``offsets``.

    offsets: (norb, 3) int, centre_k = r_k + offsets_k @ cell. Only the components along axes with some R ≠ 0 enter
    R (a centre moved along a k-mesh-of-1 axis is the same function). H_mn(R) = H^atom_mn(R − c_n + c_m).
    """
    periodic = np.any(tb.R != 0, axis=0)
    c = np.where(periodic[None, :], offsets, 0)
    R = tb.R - c[tb.cols] + c[tb.rows]
    centres = tb.orbitals.centres + offsets @ tb.cell
    o = tb.orbitals
    table = OrbitalTable(o.atom_index, o.element, o.l, o.label, centres, o.layer)
    return TightBinding(tb.cell, R, tb.rows, tb.cols, tb.values, table, pbc=tb.pbc, atoms=tb.atoms,
                        check_hermitian=False)


def write_synthetic_frames(folder: str | Path, n_frames: int, seed: int = 0, with_hamiltonian: bool = True,
                           with_forces: bool = True) -> list[Path]:
    """Write ``n_frames`` frame directories ``folder/frame_XXXX``; returns their paths."""
    rng = np.random.default_rng(seed)
    out = []
    for f in range(n_frames):
        atoms = random_bilayer(rng)
        path = Path(folder) / f"frame_{f:04d}"
        path.mkdir(parents=True, exist_ok=True)
        potential = float(rng.uniform(-3.0, -1.0))      # eV, the frame's arbitrary absolute energy zero
        tb = synthetic_tb(atoms, potential)
        labelled = atoms.copy()
        labelled.calc = MorsePotential(**MORSE)
        if with_forces:
            labelled.info["energy"] = float(labelled.get_potential_energy())
            labelled.arrays["forces"] = labelled.get_forces()
            labelled.info["stress"] = labelled.get_stress(voigt=True)
        labelled.calc = None
        labelled.info["fermi_level"] = half_filling_level(tb)
        write(path / "structure.extxyz", labelled, format="extxyz")
        if with_hamiltonian:
            offsets = rng.integers(-1, 2, size=(len(atoms), 3))
            shifted = shifted_wannier_tb(tb, offsets)
            shifted.write_wannier90(path / "wannier90_hr.dat.gz", dense=False, companions=False)
            shifted.write_centres(path / "wannier90_centres.xyz")
        meta = {"status": "ok", "synthetic": True, "seed": seed, "index": f, "energy_zero_eV": potential,
                "wannier90": {"num_iter": 0}}
        (path / "meta.json").write_text(json.dumps(meta, indent=1))
        out.append(path)
    return out


#: A small, fast model for tests and demos on synthetic graphene frames (pz basis, short cut-offs).
TINY_MODEL = {"orbitals": {"C": ["pz"]}, "cutoff": 4.0, "num_interactions": 1, "hidden_irreps": "8x0e+4x1o+2x2e",
              "radial_hidden": 16, "ham_irreps": "8x0e+4x1o+4x1e+2x2e+2x2o", "ham_num_radial": 6,
              "ham_cutoff_near": 3.0, "ham_cutoff_far": 3.0, "ham_cutoff_inter": 5.0, "ham_switch_width": 0.5}


def tiny_train_config(frames: str | Path, output: str | Path, **sections: dict) -> "TrainConfig":
    """A TrainConfig with ``TINY_MODEL`` for quick runs; ``sections`` update the config sections (e.g. optim=...)."""
    from .config import TrainConfig

    raw: dict = {"data": {"frames": [str(frames)], "val_fraction": 0.25},
                 "model": dict(TINY_MODEL),
                 "optim": {"max_steps": 6, "batch_size": 2, "lr": 5e-3, "warmup_steps": 2},
                 "run": {"output": str(output), "eval_every": 2, "checkpoint_every": 3, "log_every": 1,
                         "progress": False}}
    for name, values in sections.items():
        raw.setdefault(name, {}).update(values)
    return TrainConfig.from_dict(raw)
