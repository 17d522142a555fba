"""Read training frames: a structure with DFT labels, optionally with its Wannier90 Hamiltonian.

A frame directory (written by ``ase_wannierml.dft``, see DEVELOPING.md) holds ``structure.extxyz`` (energy eV,
forces eV/Å, stress Voigt-6 eV/Å³, ``fermi_level`` eV, ``layer``), optionally ``wannier90_hr.dat[.gz]`` +
``wannier90_centres.xyz``, and ``meta.json`` (``status`` ok/rejected). A plain ``.extxyz``/``.xyz`` file is also
accepted: each image is a force-only frame with id ``<file stem>:<index>``. Any label may be missing: frames without
a Hamiltonian train forces only, frames without forces train the Hamiltonian only.
"""
from __future__ import annotations

import json
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
from ase import Atoms
from ase.io import read

from ase_wannierml.tb.tightbinding import TightBinding

from .assign import FrameError

STRUCTURE_FILE = "structure.extxyz"
HR_NAMES = ("wannier90_hr.dat.gz", "wannier90_hr.dat")
FRAME_MARKERS = (STRUCTURE_FILE, "meta.json", "wannier90_centres.xyz") + HR_NAMES


@dataclass
class Frame:
    """One training example.

    energy: eV (total); forces: (n_atoms, 3) eV/Å; stress: (3, 3) eV/Å³ (ASE sign); fermi_level: eV, same zero as
    the Hamiltonian; tb: the Wannier90 Hamiltonian (values / degeneracy, eV, absolute zero) or None.
    sources: files read (for the cache fingerprint).
    """

    frame_id: str
    atoms: Atoms
    energy: float | None = None
    forces: np.ndarray | None = None
    stress: np.ndarray | None = None
    fermi_level: float | None = None
    tb: TightBinding | None = None
    meta: dict = field(default_factory=dict)
    sources: list[str] = field(default_factory=list)


def find_frames(paths: Sequence[str | Path]) -> list[Path]:
    """Frame sources in ``paths``: frame directories, folders of frame directories (sorted), or extxyz files."""
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_file():
            out.append(p)
        elif _is_frame_dir(p):
            out.append(p)
        elif p.is_dir():
            out += sorted(d for d in p.iterdir() if _is_frame_dir(d))
        else:
            raise FileNotFoundError(f"data path {p} is neither a frame directory, a folder of frames nor a file")
    return out


def _is_frame_dir(path: Path) -> bool:
    """A directory with a structure or any other frame file (one without the structure is then reported, not
    silently skipped)."""
    return path.is_dir() and any((path / name).is_file() for name in FRAME_MARKERS)


def _read_meta(frame_id: str, meta_path: Path) -> dict:
    try:
        meta = json.loads(meta_path.read_text())
    except (ValueError, OSError) as err:       # JSONDecodeError, UnicodeDecodeError are ValueErrors
        raise FrameError(f"frame {frame_id}: {meta_path.name} is not valid JSON ({err})") from None
    if not isinstance(meta, dict):
        raise FrameError(f"frame {frame_id}: {meta_path.name} must hold a JSON object, got {type(meta).__name__}")
    return meta


def frame_status(path: Path) -> tuple[str, str]:
    """(status, reason) from a frame directory's meta.json; ("ok", "") if there is none. FrameError naming the
    frame for an unreadable meta.json."""
    meta_path = path / "meta.json"
    if not path.is_dir() or not meta_path.is_file():
        return "ok", ""
    meta = _read_meta(path.name, meta_path)
    return str(meta.get("status", "ok")), str(meta.get("reason", ""))


def iter_frames(source: str | Path) -> Iterator[Frame]:
    """Frames of one source: a frame directory (one frame) or an extxyz file (each image a force-only frame)."""
    source = Path(source)
    if source.is_file():
        for index, atoms in enumerate(read(source, index=":")):
            yield _labelled(f"{source.stem}:{index}", atoms, [str(source)])
        return
    yield load_frame_dir(source)


def load_frame_dir(path: str | Path, hamiltonian: bool = True) -> Frame:
    """Read one frame directory; malformed files raise ``FrameError`` naming the frame and the file.

    hamiltonian: False reads the structure and its SCF labels only (``tb`` stays None even if the frame has a
    Wannier90 Hamiltonian), e.g. for a frame whose Wannier step failed the quality gate."""
    path = Path(path)
    frame_id = path.name
    struct = path / STRUCTURE_FILE
    if not struct.is_file():
        present = sorted(p.name for p in path.iterdir())[:6] if path.is_dir() else []
        raise FrameError(f"frame {frame_id}: no {STRUCTURE_FILE} in {path} (it holds {present})")
    try:
        atoms = read(struct)
    except Exception as err:  # ase raises many kinds
        raise FrameError(f"frame {frame_id}: cannot read {struct}: {err}") from None
    frame = _labelled(frame_id, atoms, [str(struct)])
    meta_path = path / "meta.json"
    if meta_path.is_file():
        frame.meta = _read_meta(frame_id, meta_path)
        frame.sources.append(str(meta_path))
    hr = next((path / n for n in HR_NAMES if (path / n).is_file()), None) if hamiltonian else None
    if hr is not None:
        centres = path / "wannier90_centres.xyz"
        if not centres.is_file():
            raise FrameError(f"frame {frame_id}: {hr.name} has no wannier90_centres.xyz beside it")
        _check_centres_atoms(frame_id, centres, atoms)
        try:
            frame.tb = TightBinding.from_wannier90(hr, atoms=atoms)
        except ValueError as err:
            raise FrameError(f"frame {frame_id}: {err}") from None
        except (OSError, EOFError, zlib.error) as err:   # BadGzipFile, truncated .gz
            raise FrameError(f"frame {frame_id}: cannot read {hr.name}: {type(err).__name__}: {err}") from None
        frame.sources += [str(hr), str(centres)]
        if frame.fermi_level is None:
            raise FrameError(f"frame {frame_id}: has a Hamiltonian but {struct.name} has no info['fermi_level'] "
                             "(needed as the energy zero of the Hamiltonian targets)")
    return frame


def _check_centres_atoms(frame_id: str, centres: Path, atoms: Atoms) -> None:
    """The atoms listed in _centres.xyz (if any) must be the structure's atoms."""
    from ase_wannierml.tb.wannier90 import read_centres_xyz

    try:
        _, symbols, positions = read_centres_xyz(centres)
    except ValueError as err:
        raise FrameError(f"frame {frame_id}: {err}") from None
    if not symbols:
        return
    if len(symbols) != len(atoms):
        raise FrameError(f"frame {frame_id}: {centres.name} lists {len(symbols)} atoms but the structure has "
                         f"{len(atoms)}")
    # Wannier90 lists atoms grouped by species, so match each listed atom to a structure atom by position
    # (modulo lattice vectors) and species rather than by order
    own = atoms.get_chemical_symbols()
    d = atoms.cell.scaled_positions(np.asarray(positions))[:, None, :] - atoms.get_scaled_positions(wrap=False)[None]
    d -= np.round(d) * atoms.pbc
    dist = np.linalg.norm(d @ atoms.cell.array, axis=-1)              # (listed, structure) Å
    nearest = dist.argmin(axis=1)
    bad = [i for i, j in enumerate(nearest) if dist[i, j] > 1e-3 or symbols[i] != own[j]]
    if bad or len(set(nearest.tolist())) != len(atoms):
        i = bad[0] if bad else 0
        raise FrameError(f"frame {frame_id}: atom {i + 1} ({symbols[i]}) of {centres.name} matches no atom of the "
                         "structure (species and position)")


def _labelled(frame_id: str, atoms: Atoms, sources: list[str]) -> Frame:
    """Frame with the labels found in ``atoms`` (single-point calculator results or info/arrays)."""
    results = dict(atoms.calc.results) if atoms.calc is not None else {}
    energy = results.get("energy", atoms.info.get("energy"))
    forces = results.get("forces", atoms.arrays.get("forces"))
    stress = results.get("stress", atoms.info.get("stress"))
    fermi = atoms.info.get("fermi_level")
    atoms = atoms.copy()  # keeps per-atom arrays such as "layer"; drops the calculator
    for key in ("energy", "stress"):
        atoms.info.pop(key, None)
    atoms.arrays.pop("forces", None)
    n = len(atoms)
    if forces is not None:
        forces = np.asarray(forces, dtype=float)
        if forces.shape != (n, 3):
            raise FrameError(f"frame {frame_id}: forces have shape {forces.shape}, expected ({n}, 3) for {n} atoms")
    if stress is not None:
        stress = _stress_3x3(np.asarray(stress, dtype=float), frame_id)
    return Frame(frame_id, atoms, None if energy is None else float(energy), forces, stress,
                 None if fermi is None else float(fermi), sources=sources)


def _stress_3x3(stress: np.ndarray, frame_id: str) -> np.ndarray:
    if stress.shape == (3, 3):
        return stress
    if stress.shape == (6,):
        xx, yy, zz, yz, xz, xy = stress
        return np.array([[xx, xy, xz], [xy, yy, yz], [xz, yz, zz]])
    if stress.shape == (9,):
        return stress.reshape(3, 3)
    raise FrameError(f"frame {frame_id}: stress has shape {stress.shape}, expected Voigt-6 or (3, 3)")
