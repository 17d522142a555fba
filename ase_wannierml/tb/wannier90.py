"""Wannier90 files: ``_hr.dat`` and ``_tb.dat`` (also ``.gz``), ``_wsvec.dat`` (``tb/wsvec.py``), ``_centres.xyz``,
the cell, k-mesh and flags of a ``.win``; and a complete export (dense ``_hr.dat`` + ``_centres.xyz`` + ``.win`` +
``_tb.dat``) that other tools read.

``_hr.dat`` layout: a header line, ``num_wann``, ``nrpts``, ``nrpts`` Wigner–Seitz degeneracies (15 per line), then
rows ``R1 R2 R3 m n Re Im`` (Fortran ``(5I5,2F12.6)``, m, n 1-based, eV) with H_mn(R) = <m,0|H|n,R>. Wannier90 writes
H(R) *undivided* and divides by ``ndegen(R)`` when interpolating (``plot.F90``: ``fac = exp(ik·R)/ndegen``), so the
reader divides the values by the degeneracy and the writer multiplies it back. A file is dense (every R lists all
num_wann² rows: a missing row is an error) unless its header says ``sparse`` (or it was written by an earlier
ase_wannierml), where rows not listed are zero. An element listed twice is an error.

Wigner–Seitz shifts (``use_ws_distance``, Wannier90 ≥ 3.0's default): :func:`read_hr` applies ``<seed>_wsvec.dat``
(or shifts recomputed from the centres, cell and k-mesh) and stores the result as ordinary elements, so the
``TightBinding`` it returns, and every file written from it, needs no shift file.

Example::

    >>> tb = read_hr("wannier90_hr.dat.gz")                  # doctest: +SKIP
    >>> write_wannier90_files(tb, "out/model_hr.dat")         # doctest: +SKIP
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

from .basis import OrbitalTable, unique_lattice_vectors
from .wsvec import WsShifts, _read_text, apply_wsvec, compute_wsvec, read_wsvec

if TYPE_CHECKING:  # pragma: no cover
    import ase

    from .tightbinding import TightBinding

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


def _is_sparse_header(comment: str) -> bool:
    """Sparse listings (missing rows are zero) say so in their header; earlier ase_wannierml files were sparse."""
    low = comment.lower()
    return "sparse" in low or ("ase_wannierml" in low and "dense" not in low)


def read_hr_data(path: str | os.PathLike) -> HrData:
    """Parse an ``_hr.dat`` (or ``.gz``); malformed input → ValueError naming the file (and line number).

    Checked before anything of size num_wann is allocated: num_wann against the rows actually present (a dense
    file needs nrpts·num_wann² rows; any file at least one row per orbital). A dense file (see the module
    docstring) with a missing row, or any file listing an element twice (e.g. the body pasted twice), is refused.
    """
    path = Path(path)
    text = _read_text(path)
    comment, num_wann, ndegen, n_head, body = _split_header(text, path)
    n_rows = sum(1 for ln in body.splitlines() if ln.strip())
    sparse = _is_sparse_header(comment)
    if num_wann > n_rows or (not sparse and n_rows < len(ndegen) * num_wann**2):
        need = "at least one row per orbital" if sparse else f"nrpts·num_wann² = {len(ndegen) * num_wann**2} rows"
        raise ValueError(f"{path}: header says num_wann = {num_wann}, nrpts = {len(ndegen)} but the body has "
                         f"{n_rows} rows ({need}); truncated or wrong header"
                         + ("" if sparse else " (a sparse listing must say 'sparse' in its header line)"))
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
    _check_listing(path, r_index, R_r3, mn - 1, num_wann, len(ndegen), sparse)
    degeneracy = _map_degeneracy(R_r3, r_index, ndegen, path)
    ndeg_r = np.array([degeneracy[tuple(r)] for r in R_r3.tolist()], dtype=float)
    values = data[:, 5] + 1j * data[:, 6] if np.any(data[:, 6] != 0) else data[:, 5].copy()
    return HrData(comment, num_wann, R_n3, mn[:, 0] - 1, mn[:, 1] - 1, values / ndeg_r[r_index], degeneracy)


def _check_listing(path: Path, r_index: np.ndarray, R_r3: np.ndarray, mn0: np.ndarray, num_wann: int, nrpts: int,
                   sparse: bool) -> None:
    """No (R, m, n) twice; dense files list all num_wann² elements of every one of the nrpts R vectors."""
    key = (r_index.astype(np.int64) * num_wann + mn0[:, 0]) * num_wann + mn0[:, 1]
    order = np.argsort(key, kind="stable")
    same = key[order][1:] == key[order][:-1]
    if np.any(same):
        e = int(order[1:][same][0])
        raise ValueError(f"{path}: element R={R_r3[r_index[e]].tolist()} m={mn0[e, 0] + 1} n={mn0[e, 1] + 1} is "
                         f"listed {int(np.count_nonzero(key == key[e]))} times (body repeated?)")
    if sparse:
        return
    counts = np.bincount(r_index, minlength=len(R_r3))
    if len(R_r3) != nrpts or np.any(counts != num_wann**2):
        if len(R_r3) != nrpts:
            raise ValueError(f"{path}: {len(R_r3)} distinct R vectors in the body but nrpts = {nrpts}")
        r = int(np.flatnonzero(counts != num_wann**2)[0])
        have = set((mn0[r_index == r] @ [num_wann, 1]).tolist())
        miss = next(i for i in range(num_wann**2) if i not in have)
        raise ValueError(f"{path}: dense file misses rows: R={R_r3[r].tolist()} lists {counts[r]} of "
                         f"num_wann² = {num_wann**2} elements (first missing: m={miss // num_wann + 1} "
                         f"n={miss % num_wann + 1}); a sparse listing must say 'sparse' in its header line")


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


def _atomic_write(path: Path, write: Any) -> None:
    """Call ``write(fh)`` on a temporary sibling (text, gzip by suffix) and rename it over ``path``: an interrupted
    write (Ctrl-C, full disk) leaves any old file intact and no partial one."""
    tmp = path.with_name(f".tmp{os.getpid()}-{path.name}")
    try:
        with _open_text(tmp, "w") as fh:
            write(fh)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


DENSE_MAX_ROWS = 20_000_000  # rows of a dense listing (~1 GB of text): larger models are written sparse


def _dense_R(tb: TightBinding) -> list[tuple[int, int, int]]:
    """R vectors of a dense listing: those stored and their negatives (a dense file lists H(R) and H(-R))."""
    R_list = list(tb.degeneracy) + [tuple(r) for r in tb.R_r.tolist() if tuple(r) not in tb.degeneracy]
    seen = set(R_list)
    for r in list(R_list):
        neg = tuple(-x for x in r)
        if neg not in seen:
            seen.add(neg)
            R_list.append(neg)
    return R_list


def write_hr(tb: TightBinding, path: str | os.PathLike, header: str | None = None, decimals: int = 6,
             dense: bool = True) -> None:
    """Write ``tb`` as ``_hr.dat`` (``.gz`` by suffix), atomically (temporary file + rename).

    ``dense=True``: Wannier90's standard layout, every R with all norb² rows (R and −R both listed), as tbmodels,
    WannierBerri and Wannier90's own tools expect; ``dense=False``: only the stored elements, with ``sparse`` in the
    header (our reader reads it; other tools do not). Values are multiplied by the Wigner–Seitz degeneracy
    (``tb.degeneracy``, default 1). R vectors come in the order of ``tb.degeneracy`` (the order they were read in),
    then the others sorted; rows are ordered by R, then column, then row, as Wannier90 does. With the default
    6 decimals and small indices the format is Wannier90's ``(5I5,2F12.6)``; wider fields are used only when
    needed so columns always stay separated.
    """
    path = Path(path)
    norb = tb.norb
    if dense:
        R_list = _dense_R(tb)
        if len(R_list) * norb**2 > DENSE_MAX_ROWS:
            raise ValueError(f"a dense _hr.dat of {norb} orbitals and {len(R_list)} R vectors has "
                             f"{len(R_list) * norb**2:.3g} rows (> {DENSE_MAX_ROWS:.0e}); use dense=False")
        R_order = {r: i for i, r in enumerate(R_list)}
        _, r_index = unique_lattice_vectors(tb.R)
        r_of_stored = np.array([R_order[tuple(r)] for r in tb.R_r.tolist()], dtype=np.int64)
        full = np.zeros((len(R_list), norb, norb), dtype=complex if np.iscomplexobj(tb.values) else float)
        full[r_of_stored[r_index.ravel()], tb.rows, tb.cols] = tb.values
        rank_n = np.repeat(np.arange(len(R_list)), norb * norb)
        cols_n = np.tile(np.repeat(np.arange(norb), norb), len(R_list))
        rows_n = np.tile(np.arange(norb), norb * len(R_list))
        R_n3 = np.array(R_list, dtype=np.int64).reshape(-1, 3)[rank_n]
        v_n = full[rank_n, rows_n, cols_n]
        del full
    else:
        R_list = list(tb.degeneracy) + [tuple(r) for r in tb.R_r.tolist() if tuple(r) not in tb.degeneracy]
        R_order = {r: i for i, r in enumerate(R_list)}
        r_of_n = np.array([R_order[tuple(r)] for r in tb.R_r.tolist()], dtype=np.int64)
        _, r_index = unique_lattice_vectors(tb.R)
        rank_all = r_of_n[r_index.ravel()]
        order = np.lexsort((tb.rows, tb.cols, rank_all))
        rank_n, rows_n, cols_n = rank_all[order], tb.rows[order], tb.cols[order]
        R_n3, v_n = tb.R[order], np.asarray(tb.values)[order]
    ndegen = [tb.degeneracy.get(r, 1) for r in R_list]
    v_n = v_n * np.array(ndegen, dtype=float)[rank_n]
    ints = np.column_stack([R_n3, rows_n + 1, cols_n + 1])
    w_int = max(5, max((len(str(x)) for x in (ints.min(initial=0), ints.max(initial=0))), default=1) + 1)
    w_flt = max(12, len(f"{np.abs(v_n).max(initial=0):.{decimals}f}") + 2)
    line = f"%{w_int}d" * 5 + f"%{w_flt}.{decimals}f" * 2 + "\n"
    title = header if header is not None else "written by ase_wannierml"
    if not dense and "sparse" not in title.lower():
        title += " (sparse listing: rows not listed are zero)"
    elif dense and _is_sparse_header(title):
        title += " (dense)"
    head = [title.replace("\n", " "), f"{norb:12d}", f"{len(R_list):12d}"]
    head += ["".join(f"{n:5d}" for n in ndegen[i:i + 15]) for i in range(0, len(ndegen), 15)]
    cols = [c.tolist() for c in ints.T] + [v_n.real.tolist(), np.imag(v_n).tolist()]

    def write(fh: Any) -> None:
        fh.write("\n".join(head) + "\n")
        fh.write("".join(line % row for row in zip(*cols)))

    _atomic_write(path, write)


def read_centres_xyz(path: str | os.PathLike) -> tuple[np.ndarray, list[str], np.ndarray]:
    """``_centres.xyz`` → (Wannier centres (nwann, 3) Å, atom symbols, atom positions (natoms, 3) Å)."""
    path = Path(path)
    lines = _read_text(path).splitlines()
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

    def write(fh: Any) -> None:
        fh.write(f"{len(entries):6d}\n Wannier centres, written by ase_wannierml\n")
        fh.write("".join(f"{s:<2s}{x:17.8f}{y:17.8f}{z:17.8f}\n" for s, (x, y, z) in entries))

    _atomic_write(Path(path), write)


def read_win_cell(path: str | os.PathLike) -> np.ndarray | None:
    """The ``unit_cell_cart`` block of a ``.win`` file, (3, 3) Å (Bohr converted), or None if absent."""
    return read_win(path).get("cell")


_WIN_TRUE = {"t", "true", ".true.", ".t.", "y", "yes"}
_WIN_FALSE = {"f", "false", ".false.", ".f.", "n", "no"}


def read_win(path: str | os.PathLike, text: str | None = None) -> dict:
    """What the reader needs from a ``.win``: ``cell`` (3, 3) Å, ``mp_grid`` (3 ints), ``num_wann``,
    ``use_ws_distance`` / ``translate_home_cell`` (bool) — each only if the file sets it. ``text``: parse this
    instead of reading ``path`` (which then only names the source in errors)."""
    path = Path(path)
    text = _read_text(path) if text is None else text
    text = "\n".join(re.split(r"[!#]", ln, maxsplit=1)[0] for ln in text.splitlines())
    out: dict = {}
    match = re.search(r"begin\s+unit_cell_cart(.*?)end\s+unit_cell_cart", text, re.IGNORECASE | re.DOTALL)
    if match is not None:
        lines = [ln.split() for ln in match.group(1).strip().splitlines() if ln.strip()]
        scale = 1.0
        if lines and len(lines[0]) == 1:
            scale = BOHR if lines[0][0].lower().startswith("bohr") else 1.0
            lines = lines[1:]
        try:
            out["cell"] = scale * np.array(lines, dtype=float).reshape(3, 3)
        except ValueError:
            raise ValueError(f"{path}: malformed unit_cell_cart block") from None
    plain = re.sub(r"begin\s+(\w+).*?end\s+\1", "", text, flags=re.IGNORECASE | re.DOTALL)
    for ln in plain.splitlines():
        m = re.match(r"\s*(\w+)\s*[=:]?\s*(.*?)\s*$", ln)
        if m is None or not m.group(2):
            continue
        key, val = m.group(1).lower(), m.group(2)
        try:
            if key == "mp_grid":
                grid = [int(x) for x in val.replace(",", " ").split()]
                if len(grid) != 3 or min(grid) < 1:
                    raise ValueError
                out["mp_grid"] = tuple(grid)
            elif key == "num_wann":
                out["num_wann"] = int(val)
            elif key in ("use_ws_distance", "translate_home_cell"):
                low = val.lower()
                if low not in _WIN_TRUE | _WIN_FALSE:
                    raise ValueError
                out[key] = low in _WIN_TRUE
        except ValueError:
            raise ValueError(f"{path}: cannot read {key} = {val!r}") from None
    return out


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


def _seed(path: Path) -> str:
    """``prefix`` of ``prefix_hr.dat[.gz]`` / ``prefix_tb.dat[.gz]`` (else the name without .dat/.gz)."""
    return re.sub(r"(_hr|_tb)?\.dat(\.gz)?$", "", path.name)


def _sibling(path: Path, suffix: str) -> Path | None:
    """``prefix<suffix>`` (or ``.gz``) beside ``prefix_hr.dat[.gz]`` (or ``_tb.dat``), if it exists."""
    name = _seed(path)
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


def read_tb_data(path: str | os.PathLike) -> tuple[HrData, np.ndarray, np.ndarray | None]:
    """Parse Wannier90's ``_tb.dat`` (or ``.gz``; ``hamiltonian_write_tb``): (H(R) as :class:`HrData`, divided by
    the degeneracies, cell (3, 3) Å, Wannier centres (nw, 3) Å from the diagonal of the position matrix at R = 0, or
    None if the file has no position blocks). Malformed input → ValueError naming the file."""
    path = Path(path)
    lines = [ln for ln in _read_text(path).splitlines()]

    def fail(what: str) -> ValueError:
        return ValueError(f"{path}: {what}")

    try:
        cell = np.array([[float(x) for x in lines[i].split()[:3]] for i in (1, 2, 3)])
        num_wann, nrpts = int(lines[4]), int(lines[5])
    except (IndexError, ValueError):
        raise fail("expected a header line, 3 lattice vectors (Å), num_wann and nrpts") from None
    if cell.shape != (3, 3) or num_wann < 1 or nrpts < 1:
        raise fail(f"bad header: cell shape {cell.shape}, num_wann {num_wann}, nrpts {nrpts}")
    ndegen: list[int] = []
    i = 6
    while len(ndegen) < nrpts and i < len(lines):
        try:
            ndegen += [int(t) for t in lines[i].split()]
        except ValueError:
            raise fail(f"line {i + 1}: expected integer degeneracies") from None
        i += 1
    body = [ln for ln in lines[i:] if ln.strip()]
    block = 1 + num_wann**2
    if len(ndegen) != nrpts or min(ndegen) < 1 or len(body) < nrpts * block:
        raise fail(f"header says num_wann = {num_wann}, nrpts = {nrpts} but the file has {len(ndegen)} "
                   f"degeneracies and {len(body)} body lines (needs at least nrpts·(1 + num_wann²) = "
                   f"{nrpts * block}); truncated or wrong header")
    try:
        R_r3 = np.array([[int(t) for t in body[b * block].split()] for b in range(nrpts)], dtype=np.int64)
        h = np.loadtxt(io.StringIO("\n".join(ln for b in range(nrpts) for ln in body[b * block + 1:(b + 1) * block])),
                       ndmin=2)
    except ValueError:
        raise fail("cannot parse the Hamiltonian blocks ('R1 R2 R3' then num_wann² lines 'm n Re Im')") from None
    if R_r3.shape != (nrpts, 3) or h.shape != (nrpts * num_wann**2, 4):
        raise fail(f"Hamiltonian blocks have shape {h.shape}, expected ({nrpts * num_wann**2}, 4)")
    mn = h[:, :2].astype(np.int64)
    if np.any((mn < 1) | (mn > num_wann)):
        raise fail(f"orbital index out of range 1..{num_wann}")
    r_index = np.repeat(np.arange(nrpts), num_wann**2)
    _check_listing(path, r_index, R_r3, mn - 1, num_wann, nrpts, sparse=False)
    if len(np.unique(R_r3, axis=0)) != nrpts:
        raise fail("an R vector is listed twice")
    deg = {tuple(int(x) for x in r): int(n) for r, n in zip(R_r3, ndegen)}
    values = h[:, 2] + 1j * h[:, 3] if np.any(h[:, 3] != 0) else h[:, 2].copy()
    values = values / np.asarray(ndegen, dtype=float)[r_index]
    hr = HrData(lines[0].strip(), num_wann, R_r3[r_index], mn[:, 0] - 1, mn[:, 1] - 1, values, deg)
    centres = None
    pos = body[nrpts * block:]
    if len(pos) >= nrpts * block:
        r0 = np.flatnonzero(np.all(R_r3 == 0, axis=1))
        if len(r0):
            b = int(r0[0])
            try:
                p = np.loadtxt(io.StringIO("\n".join(pos[b * block + 1:(b + 1) * block])), ndmin=2)
            except ValueError:
                raise fail("cannot parse the position blocks") from None
            if p.shape == (num_wann**2, 8):
                diag = p[:, 0].astype(int) == p[:, 1].astype(int)
                order = np.argsort(p[diag, 0])
                centres = p[diag][order][:, 2:8:2]
    return hr, cell, centres


def _ws_shifts(path: Path, wsvec: Any, R_n3: np.ndarray, num_wann: int, centres: np.ndarray | None,
               cell: np.ndarray | None, mp_grid: Any, win: dict) -> tuple[WsShifts | None, str]:
    """The Wigner–Seitz shifts to apply and where they came from (None, reason: apply none)."""
    if wsvec is None or wsvec is False:
        return None, "not applied (wsvec=None)"
    if not (isinstance(wsvec, str) and wsvec in ("auto", "compute")):
        shifts = read_wsvec(wsvec)
        return (shifts, f"file {wsvec}") if shifts.use_ws_distance is not False else (None, f"{wsvec}: off")
    found = _sibling(path, "_wsvec.dat") if wsvec == "auto" else None
    if found is not None:
        shifts = read_wsvec(found)
        return (shifts, f"file {found.name}") if shifts.use_ws_distance is not False else (None, f"{found.name}: off")
    use_ws = win.get("use_ws_distance")
    if wsvec == "auto" and use_ws is False:
        return None, ".win: use_ws_distance = .false."
    mp_grid = mp_grid if mp_grid is not None else win.get("mp_grid")
    missing = [name for name, x in (("Wannier centres (_centres.xyz)", centres), ("the cell", cell),
                                    ("the Wannier k-mesh (mp_grid= or the .win)", mp_grid)) if x is None]
    if not missing and win.get("translate_home_cell"):
        missing = ["the untranslated centres (the .win has translate_home_cell = .true.)"]
    if not missing:
        irvec, _ = unique_lattice_vectors(R_n3)
        return compute_wsvec(irvec, centres, cell, mp_grid), f"recomputed (mp_grid {list(mp_grid)})"
    if wsvec == "compute":
        raise ValueError(f"{path}: cannot recompute the Wigner–Seitz shifts: missing {', '.join(missing)}")
    if use_ws or mp_grid is not None:
        warnings.warn(
            f"{path}: Wannier90 wrote it with use_ws_distance but no {_seed(path)}_wsvec.dat is beside it and the "
            f"shifts cannot be recomputed (missing {', '.join(missing)}); H(R) is used without Wigner–Seitz "
            "shifts. Expected error: bands exact on the Wannier k-mesh but wrong off it, by ~10-20 meV for "
            "4-atom graphene cells on an 8x8 mesh and up to ~2 eV for 16-atom cells on a 4x4 mesh. Pass wsvec= "
            "(the file) or mp_grid= with the centres.", stacklevel=4)
    return None, "not available"


def read_hr(
    path: str | os.PathLike,
    atoms: "ase.Atoms | None" = None,
    orbitals: "OrbitalTable | Mapping[str, Sequence[str]] | None" = None,
    cell: Any = None,
    num_electrons: float | None = None,
    fermi_level: float | None = None,
    check_hermitian: bool = True,
    wsvec: Any = "auto",
    mp_grid: Any = None,
    *,
    tb_class: "type[TightBinding]",
) -> TightBinding:
    """``prefix_hr.dat[.gz]`` or ``prefix_tb.dat[.gz]`` → ``tb_class``, the :class:`TightBinding` class (see
    :meth:`TightBinding.from_wannier90`). Sets on the result: ``ws_source`` (str: where the Wigner–Seitz shifts came
    from), ``mp_grid`` (tuple or None) and ``wannier_weight`` (nnz,): the fraction of one Wannier90 element each
    stored element carries (1: a whole hopping; < 1: split over degenerate R or equidistant images)."""
    TightBinding = tb_class  # passed by TightBinding.from_wannier90: imports in tb/ run one way (no cycle)

    path = Path(path)
    file_cell = file_centres = None
    if re.search(r"_tb\.dat(\.gz)?$", path.name):
        hr, file_cell, file_centres = read_tb_data(path)
    else:
        hr = read_hr_data(path)
    centres_path = _sibling(path, "_centres.xyz")
    centres_n3 = read_centres_xyz(centres_path)[0] if centres_path is not None else file_centres
    if centres_n3 is not None and len(centres_n3) != hr.num_wann:
        where = centres_path or path
        raise ValueError(f"{where}: {len(centres_n3)} Wannier centres but {path} has num_wann = {hr.num_wann}")
    win_path = _sibling(path, ".win")
    win = read_win(win_path) if win_path is not None else {}
    pbc: Any = (True, True, True)
    if atoms is not None:
        cell, pbc = atoms.cell.array, atoms.pbc
    elif cell is None:
        cell = file_cell if file_cell is not None else win.get("cell")
    shifts, source = _ws_shifts(path, wsvec, hr.R, hr.num_wann, centres_n3, None if cell is None else
                                np.asarray(cell, dtype=float), mp_grid, win)
    if cell is None:
        warnings.warn(f"{path}: no cell known (pass atoms= or cell=); using the identity cell", stacklevel=3)
        cell = np.eye(3)
    table = _orbital_table(hr.num_wann, atoms, orbitals, centres_n3)
    R, rows, cols, values, degeneracy = hr.R, hr.rows, hr.cols, hr.values, hr.degeneracy
    ndeg_n = np.array([degeneracy[r] for r in map(tuple, hr.R.tolist())], dtype=float) if len(hr.R) else \
        np.zeros(0)
    weight = 1.0 / ndeg_n
    if shifts is not None:
        _, _, _, weight = apply_wsvec(hr.R, hr.rows, hr.cols, weight, shifts, source=str(path))
        R, rows, cols, values = apply_wsvec(hr.R, hr.rows, hr.cols, values, shifts, source=str(path))
        # along an axis the Wannier functions do not repeat on (k-mesh of 1, e.g. a slab's vacuum axis: the file has
        # only R = 0 there) a shift only moves a WF listed one cell away (pitfall: centres shifted along c) and would
        # invent a k_z dependence; it is dropped there (the bands at k_z = 0, the only ones defined, are unchanged)
        flat = ~np.any(hr.R != 0, axis=0) if len(hr.R) else np.zeros(3, bool)
        R[:, flat] = 0
        degeneracy = {}  # ordinary elements now: a written file needs neither degeneracies nor shifts
    tb = TightBinding(
        cell, R, rows, cols, values, table, pbc=pbc, atoms=atoms, num_electrons=num_electrons,
        fermi_level=fermi_level, check_hermitian=check_hermitian, degeneracy=degeneracy,
    )
    if check_hermitian and len(values):
        # accepted within HERMITIAN_TOL: store (H(R) + H(-R)^†)/2, exactly Hermitian, so that no solver check on
        # H(k) can fail later on a file the reader accepted
        R = np.concatenate([R, -R])
        rows, cols = np.concatenate([rows, cols]), np.concatenate([cols, rows])
        values = np.concatenate([values, np.conj(values)]) / 2
        weight = np.concatenate([weight, weight]) / 2
        tb = TightBinding(cell, R, rows, cols, values, table, pbc=pbc, atoms=atoms, num_electrons=num_electrons,
                          fermi_level=fermi_level, check_hermitian=False, degeneracy=degeneracy)
    # same inputs → same canonical element order: the weights line up with tb's elements
    tb.wannier_weight = TightBinding(cell, R, rows, cols, weight, OrbitalTable.unknown(hr.num_wann), pbc=pbc,
                                     check_hermitian=False).values
    tb.ws_source = source
    tb.mp_grid = tuple(int(x) for x in mp_grid) if mp_grid is not None else win.get("mp_grid")
    return tb


# ----------------------------------------------------------------------------------------------- export
def write_win(tb: TightBinding, path: str | os.PathLike, mp_grid: Any = None) -> None:
    """Minimal ``.win`` (atomic write): num_wann, the cell (Å), the atoms (if known), mp_grid (if known) and
    ``use_ws_distance = .false.`` (the H(R) we write needs no shifts)."""
    out = ["! written by ase_wannierml: describes the model of the _hr.dat / _tb.dat beside it",
           "! H(R) already includes any Wigner-Seitz shifts: no _wsvec.dat is needed",
           f"num_wann = {tb.norb}", "use_ws_distance = .false.", "", "begin unit_cell_cart", "ang"]
    out += ["".join(f"{x:16.10f}" for x in a) for a in tb.cell]
    out += ["end unit_cell_cart"]
    if tb.atoms is not None:
        out += ["", "begin atoms_cart", "ang"]
        out += [f"{s:<3s}" + "".join(f"{x:16.10f}" for x in p)
                for s, p in zip(tb.atoms.get_chemical_symbols(), tb.atoms.positions)]
        out += ["end atoms_cart"]
    if mp_grid is not None:
        out += ["", "mp_grid = " + " ".join(str(int(x)) for x in mp_grid)]
    _atomic_write(Path(path), lambda fh: fh.write("\n".join(out) + "\n"))


def write_tb(tb: TightBinding, path: str | os.PathLike, header: str | None = None) -> None:
    """Wannier90's ``_tb.dat`` (dense H(R) blocks with the cell, then position blocks: the centres on the diagonal
    at R = 0, zero elsewhere), atomic write. Same R list and degeneracies as the dense ``_hr.dat``."""
    norb = tb.norb
    R_list = _dense_R(tb)
    if len(R_list) * norb**2 > DENSE_MAX_ROWS:
        raise ValueError(f"a _tb.dat of {norb} orbitals and {len(R_list)} R vectors is too large to write")
    R_order = {r: i for i, r in enumerate(R_list)}
    _, r_index = unique_lattice_vectors(tb.R)
    r_of_stored = np.array([R_order[tuple(r)] for r in tb.R_r.tolist()], dtype=np.int64)
    ndegen = np.array([tb.degeneracy.get(r, 1) for r in R_list], dtype=float)
    full = np.zeros((len(R_list), norb, norb), dtype=complex)
    full[r_of_stored[r_index.ravel()], tb.rows, tb.cols] = tb.values
    full *= ndegen[:, None, None]
    m_idx = np.tile(np.arange(norb), norb) + 1      # rows inner, as Wannier90 writes (j, i, H(j, i))
    n_idx = np.repeat(np.arange(norb), norb) + 1
    centres = tb.orbitals.centres

    def write(fh: Any) -> None:
        fh.write(f" {header or 'written by ase_wannierml'}\n")
        fh.write("".join(" " + " ".join(f"{x:22.15E}" for x in a) + "\n" for a in tb.cell))
        fh.write(f" {norb:11d}\n {len(R_list):11d}\n")
        fh.write("".join("".join(f"{int(n):5d}" for n in ndegen[i:i + 15]) + "\n" for i in range(0, len(R_list), 15)))
        for b, r in enumerate(R_list):
            h = full[b].T.ravel()                    # n outer, m inner
            fh.write("\n" + "".join(f"{x:5d}" for x in r) + "\n")
            fh.write("".join(f"{m:5d}{n:5d}   {v.real:15.8E} {v.imag:15.8E}\n" for m, n, v in zip(m_idx, n_idx, h)))
        zero = " ".join([f"{0.0:15.8E}"] * 6)
        for r in R_list:
            fh.write("\n" + "".join(f"{x:5d}" for x in r) + "\n")
            home = r == (0, 0, 0)
            for m, n in zip(m_idx, n_idx):
                if home and m == n:
                    c = centres[m - 1]
                    fh.write(f"{m:5d}{n:5d}   " + " ".join(f"{x:15.8E} {0.0:15.8E}" for x in c) + "\n")
                else:
                    fh.write(f"{m:5d}{n:5d}   {zero}\n")

    _atomic_write(Path(path), write)


def dense_rows(tb: TightBinding) -> int:
    """Rows of the dense listing of ``tb`` (distinct ±R times norb²)."""
    return len(_dense_R(tb)) * tb.norb**2


def write_wannier90_files(tb: TightBinding, path: str | os.PathLike, header: str | None = None, decimals: int = 6,
                          dense: bool | None = None, companions: bool = True, mp_grid: Any = None) -> list[Path]:
    """Write ``<seed>_hr.dat`` (``path``) and, with ``companions``, ``<seed>_centres.xyz``, ``<seed>.win`` and
    ``<seed>_tb.dat`` (``.gz`` like ``path``) beside it; every file atomically. ``dense=None`` (default): Wannier90's
    dense layout when it has at most ``DENSE_MAX_ROWS`` rows, else the sparse listing without a ``_tb.dat`` (with a
    warning: other tools read dense files only). ``mp_grid`` (default: ``tb.mp_grid`` if the model was read from
    Wannier90 files) goes into the ``.win``. Returns the paths written."""
    path = Path(path)
    if dense is None:
        dense = dense_rows(tb) <= DENSE_MAX_ROWS
        if not dense:
            warnings.warn(f"{path}: a dense listing would have {dense_rows(tb):.3g} rows (> {DENSE_MAX_ROWS:.0e}); "
                          "writing the sparse listing (this package reads it; tbmodels/WannierBerri need dense files) "
                          "and no _tb.dat", stacklevel=3)
    write_hr(tb, path, header=header, decimals=decimals, dense=dense)
    written = [path]
    if companions:
        seed = _seed(path)
        gz = ".gz" if path.suffix == ".gz" else ""
        extra = [path.with_name(seed + "_centres.xyz"), path.with_name(seed + ".win")]
        write_centres_xyz(tb, extra[0])
        write_win(tb, extra[1], mp_grid if mp_grid is not None else getattr(tb, "mp_grid", None))
        if dense:
            extra.append(path.with_name(seed + "_tb.dat" + gz))
            write_tb(tb, extra[2], header=header)
        written += extra
    return written
