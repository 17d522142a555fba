"""Wannier90 files: ``_hr.dat`` (also ``.gz`` and sparse row listings), ``_centres.xyz``, the cell of a ``.win``.

``_hr.dat`` layout: a header line, ``num_wann``, ``nrpts``, ``nrpts`` Wigner–Seitz degeneracies (15 per line), then
rows ``R1 R2 R3 m n Re Im`` (Fortran ``(5I5,2F12.6)``, m, n 1-based, eV) with H_mn(R) = <m,0|H|n,R>. Wannier90 writes
H(R) *undivided* and divides by ``ndegen(R)`` when interpolating (``plot.F90``: ``fac = exp(ik·R)/ndegen``), so the
reader divides the values by the degeneracy and the writer multiplies it back. Rows not listed are zero (sparse files).

Example::

    >>> tb = read_hr("wannier90_hr.dat.gz")                  # doctest: +SKIP
    >>> write_hr(tb, "copy_hr.dat")                           # doctest: +SKIP
"""
from __future__ import annotations

import gzip
import io
import os
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np

from .tightbinding import OrbitalTable, TightBinding, unique_lattice_vectors

if TYPE_CHECKING:  # pragma: no cover
    import ase

BOHR = 0.529177210903  # Å


def _open_text(path: Path, mode: str) -> Any:
    if path.suffix == ".gz":
        return gzip.open(path, mode + "t", compresslevel=6)  # gzip's CLI default; level 9 is ~4x slower
    return open(path, mode)


@dataclass
class HrData:
    """Content of an ``_hr.dat``: R (n, 3) int, 0-based rows/cols (n,), values (n,) eV divided by the degeneracy."""

    header: str
    num_wann: int
    R: np.ndarray
    rows: np.ndarray
    cols: np.ndarray
    values: np.ndarray
    degeneracy: dict[tuple[int, int, int], int]


def _next_line(text: str, pos: int) -> tuple[str | None, int]:
    """The line starting at ``pos`` and the position after it (None at the end of the text)."""
    if pos >= len(text):
        return None, pos
    end = text.find("\n", pos)
    end = len(text) if end < 0 else end
    return text[pos:end], end + 1


def _split_header(text: str, path: Path) -> tuple[str, int, list[int], int, str]:
    """(comment, num_wann, degeneracies, number of header lines, body text)."""
    def fail(line_no: int, what: str) -> ValueError:
        return ValueError(f"{path}: line {line_no}: {what}")

    comment, pos = _next_line(text, 0)
    ints = []
    for line_no, name in ((2, "num_wann"), (3, "nrpts")):
        line, pos = _next_line(text, pos)
        try:
            ints.append(int(line))  # type: ignore[arg-type]
        except (TypeError, ValueError):
            raise fail(line_no, f"expected {name} (a positive integer), got {line!r}") from None
        if ints[-1] < 1:
            raise fail(line_no, f"expected {name} (a positive integer), got {ints[-1]}")
    num_wann, nrpts = ints
    ndegen: list[int] = []
    line_no = 3
    while len(ndegen) < nrpts:
        line, pos = _next_line(text, pos)
        line_no += 1
        if line is None:
            raise fail(line_no, f"file ends after {len(ndegen)} of {nrpts} degeneracies")
        try:
            ndegen += [int(tok) for tok in line.split()]
        except ValueError:
            raise fail(line_no, f"expected integer degeneracies, got {line.strip()!r}") from None
    if len(ndegen) != nrpts or min(ndegen) < 1:
        raise fail(line_no, f"expected {nrpts} positive degeneracies, got {len(ndegen)}, min {min(ndegen)}")
    return comment or "", num_wann, ndegen, line_no, text[pos:]


def _find_bad_line(body: str, first_line: int, num_wann: int) -> tuple[int, str]:
    """Slow path, only after a failure: (line number, reason) of the first malformed body line."""
    for offset, line in enumerate(body.splitlines()):
        tokens = line.split()
        if not tokens:
            continue
        if len(tokens) != 7:
            return first_line + offset, f"expected 7 columns 'R1 R2 R3 m n Re Im', got {len(tokens)}: {line!r}"
        try:
            ints = [int(t) for t in tokens[:5]]
            [float(t) for t in tokens[5:]]
        except ValueError:
            return first_line + offset, f"cannot parse {line!r} as 5 integers and 2 floats"
        if not (1 <= ints[3] <= num_wann and 1 <= ints[4] <= num_wann):
            return first_line + offset, f"orbital index out of range 1..{num_wann}: {line!r}"
    return first_line, "malformed body"


def read_hr_data(path: str | os.PathLike) -> HrData:
    """Parse an ``_hr.dat`` (or ``.gz``); malformed input → ValueError naming the file and line number."""
    path = Path(path)
    with _open_text(path, "r") as fh:
        text = fh.read()
    comment, num_wann, ndegen, n_head, body = _split_header(text, path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # empty body warns
            data = np.loadtxt(io.StringIO(body), dtype=float, comments=None, ndmin=2)
    except ValueError:
        line_no, why = _find_bad_line(body, n_head + 1, num_wann)
        raise ValueError(f"{path}: line {line_no}: {why}") from None
    if data.size == 0:
        data = np.zeros((0, 7))
    if data.shape[1] != 7 or np.any(data[:, :5] != np.round(data[:, :5])):
        line_no, why = _find_bad_line(body, n_head + 1, num_wann)
        raise ValueError(f"{path}: line {line_no}: {why}")
    ints = data[:, :5].astype(np.int64)
    mn = ints[:, 3:5]
    if np.any((mn < 1) | (mn > num_wann)):
        line_no, why = _find_bad_line(body, n_head + 1, num_wann)
        raise ValueError(f"{path}: line {line_no}: {why}")
    R_n3 = ints[:, :3]
    R_r3, r_index = unique_lattice_vectors(R_n3)
    degeneracy = _map_degeneracy(R_r3, r_index, ndegen, path)
    ndeg_r = np.array([degeneracy[tuple(r)] for r in R_r3.tolist()], dtype=float)
    values = data[:, 5] + 1j * data[:, 6] if np.any(data[:, 6] != 0) else data[:, 5].copy()
    return HrData(comment, num_wann, R_n3, mn[:, 0] - 1, mn[:, 1] - 1, values / ndeg_r[r_index], degeneracy)


def _map_degeneracy(
    R_r3: np.ndarray, r_index: np.ndarray, ndegen: list[int], path: Path
) -> dict[tuple[int, int, int], int]:
    """Degeneracies belong to the distinct R in order of first appearance (Wannier90 writes R-major)."""
    first_r = np.full(len(R_r3), len(r_index))
    np.minimum.at(first_r, r_index, np.arange(len(r_index)))
    R_r3 = R_r3[np.argsort(first_r)]
    if len(R_r3) > len(ndegen):
        raise ValueError(f"{path}: {len(R_r3)} distinct R vectors in the body but nrpts = {len(ndegen)}")
    if len(R_r3) < len(ndegen) and len(set(ndegen)) > 1:
        raise ValueError(
            f"{path}: sparse listing has {len(R_r3)} of nrpts = {len(ndegen)} R vectors and unequal degeneracies: "
            "cannot tell which degeneracy belongs to which R"
        )
    deg = ndegen if len(R_r3) == len(ndegen) else [ndegen[0]] * len(R_r3)
    return {tuple(int(x) for x in r): int(n) for r, n in zip(R_r3, deg)}


def write_hr(tb: TightBinding, path: str | os.PathLike, header: str | None = None, decimals: int = 6) -> None:
    """Write ``tb`` as ``_hr.dat`` (``.gz`` by suffix), listing its stored elements only.

    Values are multiplied by the Wigner–Seitz degeneracy (``tb.degeneracy``, default 1). R vectors come in the order
    of ``tb.degeneracy`` (the order they were read in), then the others sorted; rows are ordered by R, then column,
    then row, as Wannier90 does. With the default 6 decimals and small indices the format is Wannier90's
    ``(5I5,2F12.6)``; wider fields are used only when needed so columns always stay separated.
    """
    path = Path(path)
    R_list = list(tb.degeneracy) + [tuple(r) for r in tb.R_r.tolist() if tuple(r) not in tb.degeneracy]
    R_order = {r: i for i, r in enumerate(R_list)}
    r_of_n = np.array([R_order[tuple(r)] for r in tb.R_r.tolist()], dtype=np.int64)
    _, r_index = unique_lattice_vectors(tb.R)
    rank_n = r_of_n[r_index.ravel()]
    order = np.lexsort((tb.rows, tb.cols, rank_n))
    ndeg_n = np.array([tb.degeneracy.get(r, 1) for r in R_list], dtype=float)[rank_n[order]]
    v_n = np.asarray(tb.values)[order] * ndeg_n
    ints = np.column_stack([tb.R[order], tb.rows[order] + 1, tb.cols[order] + 1])
    w_int = max(5, max((len(str(x)) for x in (ints.min(initial=0), ints.max(initial=0))), default=1) + 1)
    w_flt = max(12, len(f"{np.abs(v_n).max(initial=0):.{decimals}f}") + 2)
    line = f"%{w_int}d" * 5 + f"%{w_flt}.{decimals}f" * 2 + "\n"
    ndegen = [tb.degeneracy.get(r, 1) for r in R_list]
    head = [header if header is not None else "written by ase_wannierml", f"{tb.norb:12d}", f"{len(R_list):12d}"]
    head += ["".join(f"{n:5d}" for n in ndegen[i:i + 15]) for i in range(0, len(ndegen), 15)]
    cols = [c.tolist() for c in ints.T] + [v_n.real.tolist(), np.imag(v_n).tolist()]
    with _open_text(path, "w") as fh:
        fh.write("\n".join(head) + "\n")
        fh.write("".join(line % row for row in zip(*cols)))


def read_centres_xyz(path: str | os.PathLike) -> tuple[np.ndarray, list[str], np.ndarray]:
    """``_centres.xyz`` → (Wannier centres (nwann, 3) Å, atom symbols, atom positions (natoms, 3) Å)."""
    path = Path(path)
    with _open_text(path, "r") as fh:
        lines = fh.read().splitlines()
    try:
        n = int(lines[0])
    except (IndexError, ValueError):
        raise ValueError(f"{path}: line 1: expected the number of entries") from None
    symbols, xyz = [], []
    for i, line in enumerate(lines[2:2 + n], start=3):
        tok = line.split()
        try:
            symbols.append(tok[0])
            xyz.append([float(t) for t in tok[1:4]])
        except (IndexError, ValueError):
            raise ValueError(f"{path}: line {i}: expected 'symbol x y z', got {line!r}") from None
        if len(xyz[-1]) != 3:
            raise ValueError(f"{path}: line {i}: expected 'symbol x y z', got {line!r}")
    if len(symbols) != n:
        raise ValueError(f"{path}: line {len(lines) + 1}: file ends after {len(symbols)} of {n} entries")
    xyz_n3 = np.array(xyz).reshape(-1, 3)
    is_wf = np.array([s.upper() == "X" for s in symbols], dtype=bool)
    return xyz_n3[is_wf], [s for s, w in zip(symbols, is_wf) if not w], xyz_n3[~is_wf]


def write_centres_xyz(tb: TightBinding, path: str | os.PathLike) -> None:
    """Write Wannier centres (as ``X``) and the atoms, if any, in Wannier90's ``_centres.xyz`` layout (Å)."""
    atoms = tb.atoms
    entries = [("X", c) for c in tb.orbitals.centres]
    if atoms is not None:
        entries += list(zip(atoms.get_chemical_symbols(), atoms.positions))
    with _open_text(Path(path), "w") as fh:
        fh.write(f"{len(entries):6d}\n Wannier centres, written by ase_wannierml\n")
        fh.write("".join(f"{s:<2s}{x:17.8f}{y:17.8f}{z:17.8f}\n" for s, (x, y, z) in entries))


def read_win_cell(path: str | os.PathLike) -> np.ndarray | None:
    """The ``unit_cell_cart`` block of a ``.win`` file, (3, 3) Å (Bohr converted), or None if absent."""
    text = Path(path).read_text()
    match = re.search(r"begin\s+unit_cell_cart(.*?)end\s+unit_cell_cart", text, re.IGNORECASE | re.DOTALL)
    if match is None:
        return None
    lines = [ln.split() for ln in match.group(1).strip().splitlines() if ln.strip()]
    scale = 1.0
    if len(lines[0]) == 1:
        scale = BOHR if lines[0][0].lower().startswith("bohr") else 1.0
        lines = lines[1:]
    try:
        return scale * np.array(lines, dtype=float).reshape(3, 3)
    except ValueError:
        raise ValueError(f"{path}: malformed unit_cell_cart block") from None


def nearest_atoms(centres_n3: np.ndarray, atoms: "ase.Atoms") -> tuple[np.ndarray, np.ndarray]:
    """Index of the nearest atom to each centre and the distance (Å), wrapping in all 3 directions (Wannier centres
    can come out shifted by a full lattice vector, also along a vacuum direction)."""
    frac_atoms = atoms.cell.scaled_positions(atoms.positions) if atoms.cell.rank == 3 else None
    if frac_atoms is None:
        raise ValueError("assigning Wannier centres to atoms needs a full-rank cell (3 lattice vectors)")
    frac_c = atoms.cell.scaled_positions(centres_n3)
    index = np.empty(len(centres_n3), dtype=np.int64)
    dist = np.empty(len(centres_n3))
    chunk = max(1, 2**22 // max(1, len(atoms)))
    for s in range(0, len(centres_n3), chunk):
        d_cas = frac_c[s:s + chunk, None, :] - frac_atoms[None]
        d_cas -= np.round(d_cas)
        d_ca = np.linalg.norm(d_cas @ atoms.cell.array, axis=-1)
        index[s:s + chunk] = np.argmin(d_ca, axis=1)
        dist[s:s + chunk] = d_ca[np.arange(len(d_ca)), index[s:s + chunk]]
    return index, dist


def _sibling(path: Path, suffix: str) -> Path | None:
    """``prefix<suffix>`` (or ``.gz``) beside ``prefix_hr.dat[.gz]``, if it exists."""
    name = re.sub(r"_hr\.dat(\.gz)?$", "", path.name)
    for candidate in (path.with_name(name + suffix), path.with_name(name + suffix + ".gz")):
        if candidate.exists():
            return candidate
    return None


def _orbital_table(
    norb: int,
    atoms: "ase.Atoms | None",
    orbitals: "OrbitalTable | Mapping[str, Sequence[str]] | None",
    centres_n3: np.ndarray | None,
) -> OrbitalTable:
    if isinstance(orbitals, OrbitalTable):
        table = orbitals
    elif orbitals is not None:
        if atoms is None:
            raise ValueError("orbital shells per element need atoms=")
        table = OrbitalTable.from_atoms(atoms, orbitals)
        if centres_n3 is not None and len(centres_n3) == table.norb:
            table = OrbitalTable(table.atom_index, table.element, table.l, table.label, centres_n3, table.layer)
    elif atoms is not None and centres_n3 is not None:
        index, _ = nearest_atoms(centres_n3, atoms)
        layer = atoms.arrays["layer"][index] if "layer" in atoms.arrays else None
        element = np.array(atoms.get_chemical_symbols())[index]
        table = OrbitalTable(index, element, np.full(norb, -1), np.full(norb, ""), centres_n3, layer)
    else:
        table = OrbitalTable.unknown(norb, centres_n3)
    if table.norb != norb:
        raise ValueError(f"orbital table has {table.norb} orbitals but the _hr.dat has num_wann = {norb}")
    return table


def read_hr(
    path: str | os.PathLike,
    atoms: "ase.Atoms | None" = None,
    orbitals: "OrbitalTable | Mapping[str, Sequence[str]] | None" = None,
    cell: Any = None,
    num_electrons: float | None = None,
    fermi_level: float | None = None,
    check_hermitian: bool = True,
) -> TightBinding:
    """``prefix_hr.dat[.gz]`` → :class:`TightBinding` (see :meth:`TightBinding.from_wannier90`)."""
    path = Path(path)
    hr = read_hr_data(path)
    centres_path = _sibling(path, "_centres.xyz")
    centres_n3 = read_centres_xyz(centres_path)[0] if centres_path is not None else None
    if centres_n3 is not None and len(centres_n3) != hr.num_wann:
        raise ValueError(f"{centres_path}: {len(centres_n3)} Wannier centres but {path} has num_wann = {hr.num_wann}")
    pbc: Any = (True, True, True)
    if atoms is not None:
        cell, pbc = atoms.cell.array, atoms.pbc
    elif cell is None:
        win = _sibling(path, ".win")
        cell = read_win_cell(win) if win is not None else None
    if cell is None:
        warnings.warn(f"{path}: no cell known (pass atoms= or cell=); using the identity cell", stacklevel=3)
        cell = np.eye(3)
    table = _orbital_table(hr.num_wann, atoms, orbitals, centres_n3)
    return TightBinding(
        cell, hr.R, hr.rows, hr.cols, hr.values, table, pbc=pbc, atoms=atoms, num_electrons=num_electrons,
        fermi_level=fermi_level, check_hermitian=check_hermitian, degeneracy=hr.degeneracy,
    )
