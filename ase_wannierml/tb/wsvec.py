"""Wannier90's Wigner–Seitz shifts (``use_ws_distance``, the default since Wannier90 3.0): ``<seed>_wsvec.dat``.

Wannier90 interpolates with (``plot.F90``, ``ws_distance.F90`` of Wannier90 3.1)

    H_mn(k) = Σ_R Σ_{d=1..N_mn(R)} exp(2πi k·(R + T_d)) H_mn(R) / (ndegen(R) N_mn(R)),

where the T_d (lattice vectors that are multiples of the Wannier k-mesh along each axis, so they drop out at mesh
points) move the hopping from WF m in the home cell to WF n in cell R to the image(s) of n nearest to m:
|R + T_d + c_n − c_m| minimal, all images within ``ws_distance_tol`` (1e-5 Å) of that minimum listed. This module
reads those shifts from the file (:func:`read_wsvec`), recomputes them from the Wannier centres c (Å), the cell and
the k-mesh exactly as Wannier90 does (:func:`compute_wsvec`), and turns an H(R) into the equivalent *ordinary* H(R)
that needs no shifts any more (:func:`apply_wsvec`): each element, already divided by ndegen(R), is split equally
over R + T_d. Shifted elements landing on the same (R, m, n) add up.

``_wsvec.dat`` layout: a header (``## written on ... with use_ws_distance=.true.``), then for each R of the
``_hr.dat`` and each pair (m, n), m outer: a line ``R1 R2 R3 m n`` (1-based), a line N_mn(R), and N_mn(R) lines with
the three integers of T_d. With ``use_ws_distance=.false.`` every N is 1 and every T is 0.

Example::

    >>> sh = compute_wsvec([[0, 0, 0]], np.zeros((1, 3)), np.eye(3), (2, 2, 1))    # doctest: +SKIP
    >>> R, rows, cols, v = apply_wsvec(R, rows, cols, values, sh)                   # doctest: +SKIP
"""
from __future__ import annotations

import gzip
import os
import re
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

WS_DISTANCE_TOL = 1e-5  # Å, Wannier90's default ws_distance_tol
WS_SEARCH_SIZE = (2, 2, 2)  # Wannier90's default ws_search_size
NDEGENX = 8  # Wannier90's largest number of equidistant images (ws_distance.F90: ndegenx)


@dataclass
class WsShifts:
    """Shifts per listed element: ``R (n, 3)`` int, ``rows``/``cols (n,)`` 0-based WF indices, ``count (n,)`` int
    (number of images N ≥ 1), ``T (count.sum(), 3)`` int: the shifts of element e are
    ``T[start[e]:start[e] + count[e]]`` with ``start = cumsum(count) - count``. ``use_ws_distance``: as the file's
    header says (None if it does not say)."""

    R: np.ndarray
    rows: np.ndarray
    cols: np.ndarray
    count: np.ndarray
    T: np.ndarray
    use_ws_distance: bool | None = None

    @property
    def start(self) -> np.ndarray:
        """(n,) int: offset of each element's first shift in ``T``."""
        return np.cumsum(self.count) - self.count

    def max_shift(self) -> int:
        """Largest |component| of any shift (0: the shifts change nothing)."""
        return int(np.abs(self.T).max(initial=0))


def _read_text(path: Path) -> str:
    """Whole text of a plain or gzipped file; a damaged .gz → ValueError naming the file."""
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rt") as fh:
                return fh.read()
        return path.read_text()
    except (OSError, EOFError, zlib.error, UnicodeDecodeError) as err:
        if isinstance(err, FileNotFoundError):
            raise
        raise ValueError(f"{path}: cannot read ({type(err).__name__}: {err}); the file is damaged or not text") from None


def read_wsvec(path: str | os.PathLike) -> WsShifts:
    """Parse ``<seed>_wsvec.dat`` (or ``.gz``); malformed input → ValueError naming the file and line."""
    path = Path(path)
    lines = _read_text(path).splitlines()
    if not lines:
        raise ValueError(f"{path}: empty file")
    head = lines[0]
    flag = re.search(r"use_ws_distance\s*=\s*\.?(true|false|t|f)\.?", head, re.IGNORECASE)
    use_ws = None if flag is None else flag.group(1).lower().startswith("t")
    R, rows, cols, count, T = [], [], [], [], []
    i, n = 1, len(lines)
    try:
        while i < n:
            tok = lines[i].split()
            if not tok:
                i += 1
                continue
            if len(tok) != 5:
                raise ValueError(f"expected 'R1 R2 R3 m n', got {lines[i]!r}")
            r1, r2, r3, m, mm = (int(t) for t in tok)
            nd = int(lines[i + 1].split()[0])
            if not 1 <= nd <= NDEGENX:
                raise ValueError(f"number of images {nd} outside 1..{NDEGENX}")
            for j in range(nd):
                t = lines[i + 2 + j].split()
                if len(t) != 3:
                    raise ValueError(f"expected a shift 'T1 T2 T3', got {lines[i + 2 + j]!r}")
                T.append([int(x) for x in t])
            R.append((r1, r2, r3))
            rows.append(m - 1)
            cols.append(mm - 1)
            count.append(nd)
            i += 2 + nd
    except (ValueError, IndexError) as err:
        why = "file ends inside an entry" if isinstance(err, IndexError) else str(err)
        raise ValueError(f"{path}: line {i + 1}: {why}") from None
    if not R:
        raise ValueError(f"{path}: no entries")
    out = WsShifts(np.array(R, np.int64), np.array(rows, np.int64), np.array(cols, np.int64),
                   np.array(count, np.int64), np.array(T, np.int64).reshape(-1, 3), use_ws)
    if out.rows.min() < 0 or out.cols.min() < 0:
        raise ValueError(f"{path}: Wannier function indices must be ≥ 1")
    return out


def write_wsvec(shifts: WsShifts, path: str | os.PathLike, header: str | None = None) -> None:
    """Write ``shifts`` in Wannier90's ``_wsvec.dat`` layout (``.gz`` by suffix), atomically (tmp + rename)."""
    path = Path(path)
    flag = ".true." if shifts.use_ws_distance is not False else ".false."
    out = [header or f"## written by ase_wannierml with use_ws_distance={flag}"]
    start = shifts.start
    for e in range(len(shifts.R)):
        out.append("".join(f"{x:5d}" for x in (*shifts.R[e], shifts.rows[e] + 1, shifts.cols[e] + 1)))
        out.append(f"{shifts.count[e]:5d}")
        out += ["".join(f"{x:5d}" for x in t) for t in shifts.T[start[e]:start[e] + shifts.count[e]]]
    data = ("\n".join(out) + "\n").encode()
    if path.suffix == ".gz":
        data = gzip.compress(data, mtime=0)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def compute_wsvec(
    irvec: Any,
    centres: Any,
    cell: Any,
    mp_grid: Any,
    search_size: Any = WS_SEARCH_SIZE,
    tol: float = WS_DISTANCE_TOL,
) -> WsShifts:
    """The shifts Wannier90 3.1 computes (``ws_distance.F90``: ``ws_translate_dist`` / ``R_wz_sc``).

    irvec: (nR, 3) int, the R vectors of the ``_hr.dat`` (in its order); centres: (nw, 3) Å, the Wannier centres
    (Wannier90 uses its final, untranslated centres: those of ``_centres.xyz`` when ``translate_home_cell`` is
    false); cell: (3, 3) Å, rows = lattice vectors; mp_grid: the Wannier k-mesh (3 ints); search_size,
    tol (Å): Wannier90's ``ws_search_size`` and ``ws_distance_tol``. Entries come R-major, then m, then n.

    For each (R, m, n), d = R·cell + c_n − c_m is moved by the lattice vector S·mp_grid (|S_a| ≤ search_size_a + 1)
    that makes |d| smallest (the first strictly smaller in Wannier90's loop order), and every further multiple of
    mp_grid that leaves |d| within ``tol`` of that minimum is listed too (at most 8).
    """
    irvec = np.asarray(irvec, dtype=np.int64).reshape(-1, 3)
    c_w3 = np.asarray(centres, dtype=float).reshape(-1, 3)
    cell = np.asarray(cell, dtype=float).reshape(3, 3)
    mp = np.asarray(mp_grid, dtype=np.int64).reshape(3)
    ss = np.broadcast_to(np.asarray(search_size, dtype=np.int64), (3,))
    if np.any(mp < 1):
        raise ValueError(f"mp_grid must be 3 positive integers, got {mp.tolist()}")
    nw, nR = len(c_w3), len(irvec)
    ranges = [np.arange(-s - 1, s + 2) for s in ss]
    S_s3 = np.stack(np.meshgrid(*ranges, indexing="ij"), axis=-1).reshape(-1, 3)  # Wannier90's loop order
    shift_s3 = S_s3 * mp
    disp_s3 = shift_s3 @ cell                                                     # Å
    zero_s = int(np.flatnonzero(np.all(S_s3 == 0, axis=1))[0])
    m_idx, n_idx = np.meshgrid(np.arange(nw), np.arange(nw), indexing="ij")
    m_idx, n_idx = m_idx.ravel(), n_idx.ravel()
    Rs, rows, cols, counts, Ts = [], [], [], [], []
    chunk = max(1, 2**21 // max(1, len(S_s3) * nw * nw))
    for r0 in range(0, nR, chunk):
        R_c3 = irvec[r0:r0 + chunk]
        d_e3 = (R_c3 @ cell)[:, None, :] + (c_w3[n_idx] - c_w3[m_idx])[None]     # (nr, nw², 3)
        d_e3 = d_e3.reshape(-1, 3)
        cand_es3 = d_e3[:, None, :] + disp_s3[None]
        dist2_es = np.einsum("esx,esx->es", cand_es3, cand_es3)
        # first loop of R_wz_sc: start from d itself, take a candidate only if strictly closer (loop order)
        best = _first_strict_minimum(dist2_es, zero_s)
        best_d2 = dist2_es[np.arange(len(best)), best]
        d_best_e3 = cand_es3[np.arange(len(best)), best]
        # second loop: images of the best vector within tol of its length (or the best alone if ~0)
        cand2_es3 = d_best_e3[:, None, :] + disp_s3[None]
        len2_es = np.sqrt(np.einsum("esx,esx->es", cand2_es3, cand2_es3))
        near_es = np.abs(len2_es - np.sqrt(best_d2)[:, None]) < tol
        tiny = best_d2 < tol**2
        near_es[tiny] = False
        near_es[tiny, zero_s] = True
        cnt = near_es.sum(axis=1)
        if cnt.max(initial=1) > NDEGENX:
            e = int(np.argmax(cnt))
            raise ValueError(f"{cnt[e]} equidistant images (> {NDEGENX}, Wannier90's limit) for R = "
                             f"{R_c3[e // (nw * nw)].tolist()}: check the cell and mp_grid")
        e_idx, s_idx = np.nonzero(near_es)                                      # row-major: loop order per e
        Ts.append(shift_s3[best[e_idx]] + shift_s3[s_idx])
        counts.append(cnt)
        Rs.append(np.repeat(R_c3, nw * nw, axis=0))
        rows.append(np.tile(m_idx, len(R_c3)))
        cols.append(np.tile(n_idx, len(R_c3)))
    if not Rs:
        empty = np.zeros(0, np.int64)
        return WsShifts(np.zeros((0, 3), np.int64), empty, empty, empty, np.zeros((0, 3), np.int64), True)
    return WsShifts(np.concatenate(Rs), np.concatenate(rows), np.concatenate(cols), np.concatenate(counts),
                    np.concatenate(Ts), True)


def _first_strict_minimum(dist2_es: np.ndarray, zero_s: int) -> np.ndarray:
    """Index of the candidate Wannier90's first loop ends on: running best starts at the unshifted vector and is
    replaced only by a strictly smaller value, in loop order (so ties keep the earlier candidate)."""
    best_val = dist2_es[:, zero_s].copy()
    best = np.full(len(dist2_es), zero_s, dtype=np.int64)
    for s in range(dist2_es.shape[1]):
        better = dist2_es[:, s] < best_val
        best[better] = s
        best_val[better] = dist2_es[better, s]
    return best


def apply_wsvec(
    R: Any, rows: Any, cols: Any, values: Any, shifts: WsShifts, source: str = "wsvec"
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Ordinary H(R) equal to Wannier90's shifted interpolation: element (R, m, n, v) → (R + T_d, m, n, v / N)
    for its N listed shifts T_d. R (nnz, 3) int, rows/cols (nnz,) 0-based, values (nnz,) eV (already divided by
    ndegen(R)). Every element must have an entry in ``shifts`` (ValueError naming the first one missing)."""
    R_n3 = np.asarray(R, dtype=np.int64).reshape(-1, 3)
    rows, cols = np.asarray(rows, np.int64).ravel(), np.asarray(cols, np.int64).ravel()
    v_n = np.asarray(values).ravel()
    nw = int(max(rows.max(initial=-1), cols.max(initial=-1), shifts.rows.max(initial=-1),
                 shifts.cols.max(initial=-1))) + 1
    lo = np.minimum(R_n3.min(axis=0, initial=0), shifts.R.min(axis=0, initial=0))
    span = np.maximum(R_n3.max(axis=0, initial=0), shifts.R.max(axis=0, initial=0)) - lo + 1

    def key(R_x3: np.ndarray, m: np.ndarray, n: np.ndarray) -> np.ndarray:
        code = ((R_x3[:, 0] - lo[0]) * span[1] + (R_x3[:, 1] - lo[1])) * span[2] + (R_x3[:, 2] - lo[2])
        return (code * nw + m) * nw + n

    table = key(shifts.R, shifts.rows, shifts.cols)
    order = np.argsort(table, kind="stable")
    if len(table) > 1 and np.any(table[order][1:] == table[order][:-1]):
        dup = order[1:][table[order][1:] == table[order][:-1]][0]
        raise ValueError(f"{source}: element R={shifts.R[dup].tolist()} m={shifts.rows[dup] + 1} "
                         f"n={shifts.cols[dup] + 1} is listed twice")
    q = key(R_n3, rows, cols)
    pos = np.minimum(np.searchsorted(table[order], q), max(len(table) - 1, 0))
    found = (table[order][pos] == q) if len(table) else np.zeros(len(q), bool)
    if not found.all():
        e = int(np.flatnonzero(~found)[0])
        raise ValueError(f"{source}: no shifts for the Hamiltonian element R={R_n3[e].tolist()} m={rows[e] + 1} "
                         f"n={cols[e] + 1} (wsvec and _hr.dat belong to different runs?)")
    entry = order[pos]
    cnt = shifts.count[entry]
    start = shifts.start[entry]
    rep = np.repeat(np.arange(len(q)), cnt)
    t_idx = np.repeat(start - np.cumsum(cnt) + cnt, cnt) + np.arange(int(cnt.sum()))
    R_out = R_n3[rep] + shifts.T[t_idx]
    v_out = v_n[rep] / cnt[rep]
    return R_out, rows[rep], cols[rep], v_out
