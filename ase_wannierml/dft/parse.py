"""Parse Quantum ESPRESSO results: SCF energy/forces/stress/E_F via ``ase.io``; band energies from the XML."""
from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
from ase.io import read
from ase.units import Hartree


def parse_scf(out_path: str | Path) -> dict:
    """Total energy (eV, incl. dispersion), forces (nat, 3) eV/Å, stress Voigt-6 eV/Å³ (ASE sign), E_F (eV)."""
    atoms = read(out_path, format="espresso-out", index=-1)
    calc = atoms.calc
    if calc is None:
        raise RuntimeError(f"{out_path}: no results parsed")
    energy = float(atoms.get_potential_energy())
    forces = np.asarray(atoms.get_forces(), dtype=float)
    try:
        stress = np.asarray(atoms.get_stress(voigt=True), dtype=float)
    except Exception as exc:  # noqa: BLE001 - ASE raises PropertyNotImplementedError
        raise RuntimeError(f"{out_path}: no stress found (tstress must be .true.)") from exc
    efermi = calc.get_fermi_level()
    if efermi is None or not np.isfinite(energy):
        raise RuntimeError(f"{out_path}: missing Fermi level or non-finite energy")
    text = Path(out_path).read_text(errors="replace")
    n_iter = None
    for line in text.splitlines():
        if "convergence has been achieved in" in line:
            n_iter = int(line.split("in")[-1].split()[0])
    return {"energy": energy, "forces": forces, "stress": stress, "fermi_level": float(efermi),
            "scf_iterations": n_iter}


def read_xml_bands(save_dir: str | Path) -> np.ndarray:
    """Band energies e_kn (nk, nbnd), eV, from ``<prefix>.save/data-file-schema.xml`` (in input k order)."""
    xml = Path(save_dir) / "data-file-schema.xml"
    if not xml.exists():
        raise RuntimeError(f"{xml} not found")
    root = ET.parse(xml).getroot()
    eigs = []
    for ks in root.iter("ks_energies"):
        ev = ks.find("eigenvalues")
        eigs.append(np.array(ev.text.split(), dtype=float) * Hartree)
    if not eigs:
        raise RuntimeError(f"{xml}: no ks_energies found")
    return np.array(eigs)
