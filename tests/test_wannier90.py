"""Wannier90 ``_hr.dat`` / ``_centres.xyz`` reading and writing."""
from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
from conftest import graphene_atoms, random_hermitian_model

from ase_wannierml import TightBinding
from ase_wannierml.tb.wannier90 import nearest_atoms, read_centres_xyz, read_hr_data, read_win_cell

# A hand-written file in Wannier90's own layout: 1 WF, nrpts = 17 (degeneracies over two lines, 15 per line), with
# degeneracy 2 on R = ±(1,0,0) and 4 on R = ±(0,1,0). Written H is undivided, so the effective hoppings are 1/2 and
# 1/4 of the listed 1.0 (Wannier90 plot.F90 divides by ndegen when interpolating).
_W90_ONE_ORBITAL = """ written on 24Nov2026 at 00:00:00
           1
          17
    1    2    2    4    4    1    1    1    1    1    1    1    1    1    1
    1    1
    0    0    0    1    1    0.500000    0.000000
    1    0    0    1    1    1.000000    0.000000
   -1    0    0    1    1    1.000000    0.000000
    0    1    0    1    1    1.000000    0.000000
    0   -1    0    1    1    1.000000    0.000000
    2    0    0    1    1    0.000000    0.000000
   -2    0    0    1    1    0.000000    0.000000
    0    2    0    1    1    0.000000    0.000000
    0   -2    0    1    1    0.000000    0.000000
    1    1    0    1    1    0.000000    0.000000
   -1   -1    0    1    1    0.000000    0.000000
    2    2    0    1    1    0.000000    0.000000
   -2   -2    0    1    1    0.000000    0.000000
    3    0    0    1    1    0.000000    0.000000
   -3    0    0    1    1    0.000000    0.000000
    0    3    0    1    1    0.010000    0.000000
    0   -3    0    1    1    0.010000    0.000000
"""


def test_reads_wannier90_layout_and_divides_degeneracies(tmp_path):
    path = tmp_path / "one_hr.dat"
    path.write_text(_W90_ONE_ORBITAL)
    tb = TightBinding.from_wannier90(path, cell=np.eye(3))
    assert tb.degeneracy[(1, 0, 0)] == 2 and tb.degeneracy[(0, -1, 0)] == 4 and len(tb.degeneracy) == 17
    for k in ([0, 0, 0], [0.5, 0, 0], [0.1, 0.2, 0]):
        kx, ky = 2 * np.pi * k[0], 2 * np.pi * k[1]
        expected = 0.5 + 2 * 0.5 * np.cos(kx) + 2 * 0.25 * np.cos(ky) + 2 * 0.01 * np.cos(3 * ky)
        assert tb.eigenvalues([k])[0, 0] == pytest.approx(expected, abs=1e-12)


def test_write_read_round_trip_is_exact(tmp_path):
    tb = random_hermitian_model(norb=4, seed=5)
    # file values are 6-decimal numbers; degeneracies differ per R (H(R) and H(-R) share one)
    deg = {(0, 0, 0): 1, (1, 0, 0): 2, (-1, 0, 0): 2, (0, 1, 0): 3, (0, -1, 0): 3, (1, 1, 0): 6, (-1, -1, 0): 6,
           (1, -1, 0): 1, (-1, 1, 0): 1}
    ndeg_n = np.array([deg[tuple(r)] for r in tb.R.tolist()])
    tb = TightBinding(tb.cell, tb.R, tb.rows, tb.cols, tb.values / ndeg_n, tb.orbitals, pbc=tb.pbc, degeneracy=deg)
    first, second = tmp_path / "a_hr.dat", tmp_path / "b_hr.dat.gz"
    tb.write_wannier90(first, dense=False, companions=False)
    back = TightBinding.from_wannier90(first, cell=tb.cell)
    assert back.degeneracy == deg
    np.testing.assert_array_equal(back.R, tb.R)
    np.testing.assert_array_equal(back.rows, tb.rows)
    np.testing.assert_array_equal(back.cols, tb.cols)
    np.testing.assert_allclose(back.values, tb.values, rtol=0, atol=1e-15)
    back.write_wannier90(second, dense=False, companions=False)
    again = TightBinding.from_wannier90(second, cell=tb.cell)
    np.testing.assert_array_equal(again.values, back.values)  # bit-exact once in file precision
    body = lambda text: text.splitlines()[1:]  # noqa: E731  (header line 1 is a free comment)
    assert body(first.read_text()) == body(gzip.open(second, "rt").read())
    lines = first.read_text().splitlines()
    assert lines[1].strip() == "4" and lines[2].strip() == "9"
    assert len(lines[5]) == 5 * 5 + 2 * 12  # Wannier90's (5I5,2F12.6)


def test_sparse_listing_missing_rows_are_zero(tmp_path):
    text = "sparse\n  2\n  1\n  1\n    0    0    0    2    1    0.250000    0.000000\n" \
           "    0    0    0    1    2    0.250000    0.000000\n"
    path = tmp_path / "s_hr.dat"
    path.write_text(text)
    tb = TightBinding.from_wannier90(path, cell=np.eye(3))
    np.testing.assert_allclose(tb.hamiltonian([[0, 0, 0]])[0], [[0, 0.25], [0.25, 0]])


@pytest.mark.parametrize(
    "bad_line, message",
    [
        ("    0    0    0    1    1    0.2500x0    0.000000", r"line 6: cannot parse"),
        ("    0    0    0    1    1    0.250000", r"line 6: expected 7 columns"),
        ("    0    0    0    1    3    0.250000    0.000000", r"line 6: orbital index out of range 1\.\.2"),
        ("    0    0    0  1.5    1    0.250000    0.000000", r"line 6: cannot parse"),
        ("    0    0    0    1    1    ********    0.000000", r"line 6: cannot parse"),
    ],
)
def test_malformed_hr_names_file_and_line(tmp_path, bad_line, message):
    good = "    0    0    0    1    1    0.500000    0.000000"
    text = "\n".join(["hdr sparse", "  2", "  1", "  1", good, bad_line, good]) + "\n"
    path = tmp_path / "bad_hr.dat"
    path.write_text(text)
    with pytest.raises(ValueError, match="bad_hr.dat: " + message):
        read_hr_data(path)


@pytest.mark.parametrize(
    "text, message",
    [("hdr\n two\n", "line 2: expected num_wann"), ("hdr\n 2\n 3\n 1 1\n", "line 5: file ends after 2 of 3"),
     ("hdr\n 2\n", "line 3: expected nrpts")],
)
def test_malformed_header_names_line(tmp_path, text, message):
    path = tmp_path / "h_hr.dat"
    path.write_text(text)
    with pytest.raises(ValueError, match=message):
        read_hr_data(path)


def test_centres_assign_orbitals_to_atoms_with_wrap_along_c(tmp_path):
    atoms = graphene_atoms()
    c = atoms.cell[2]
    # WF 1 sits on atom B but shifted by a full c vector (Wannier90 pitfall), WF 2 near atom A shifted by -a1
    centres = [atoms.positions[1] + c + [0.01, 0, 0], atoms.positions[0] - atoms.cell[0] + [0, 0.02, 0]]
    lines = ["4", "comment"] + [f"X {x:.8f} {y:.8f} {z:.8f}" for x, y, z in centres]
    lines += [f"C {x:.8f} {y:.8f} {z:.8f}" for x, y, z in atoms.positions]
    (tmp_path / "g_centres.xyz").write_text("\n".join(lines) + "\n")
    text = "g sparse\n 2\n 1\n 1\n    0    0    0    1    2   -2.700000    0.000000\n" \
           "    0    0    0    2    1   -2.700000    0.000000\n"
    (tmp_path / "g_hr.dat").write_text(text)
    tb = TightBinding.from_wannier90(tmp_path / "g_hr.dat", atoms=atoms)
    assert tb.orbitals.atom_index.tolist() == [1, 0]
    assert tb.orbitals.element.tolist() == ["C", "C"]
    np.testing.assert_allclose(tb.orbitals.centres, centres, atol=1e-8)
    index, dist = nearest_atoms(np.array(centres), atoms)
    np.testing.assert_allclose(dist, [0.01, 0.02], atol=1e-6)
    tb.write_centres(tmp_path / "out_centres.xyz")
    wf, symbols, pos = read_centres_xyz(tmp_path / "out_centres.xyz")
    np.testing.assert_allclose(wf, centres, atol=1e-7)
    assert symbols == ["C", "C"] and np.allclose(pos, atoms.positions, atol=1e-7)


def test_cell_from_win_file(tmp_path):
    (tmp_path / "w.win").write_text("num_wann = 1\nbegin unit_cell_cart\nbohr\n 1 0 0\n 0 2 0\n 0 0 3\n"
                                    "end unit_cell_cart\n")
    np.testing.assert_allclose(read_win_cell(tmp_path / "w.win"), np.diag([1, 2, 3]) * 0.529177210903)
    (tmp_path / "w_hr.dat").write_text(_W90_ONE_ORBITAL)
    tb = TightBinding.from_wannier90(tmp_path / "w_hr.dat")
    np.testing.assert_allclose(tb.cell, np.diag([1, 2, 3]) * 0.529177210903)


@pytest.mark.parametrize(
    "ndegen, body, message",
    [("1", ["    0    0    0    1    1    0.5    0.0", "    1    0    0    1    1    0.5    0.0"],
      "2 distinct R vectors in the body but nrpts = 1"),
     ("1 2", ["    0    0    0    1    1    0.5    0.0"], "unequal degeneracies"),
     ("1 1", ["    0    0    0    1    1    0.5    0.0"], None)],
)
def test_degeneracy_list_must_match_r_vectors(tmp_path, ndegen, body, message):
    nrpts = len(ndegen.split())
    path = tmp_path / "d_hr.dat"
    path.write_text("\n".join(["hdr sparse", "1", str(nrpts), ndegen] + body) + "\n")
    if message is None:  # sparse listing with equal degeneracies: fine
        assert read_hr_data(path).degeneracy == {(0, 0, 0): 1}
    else:
        with pytest.raises(ValueError, match="d_hr.dat: .*" + message):
            read_hr_data(path)


# ------------------------------------------------------------------ dense export, robustness (issue 17)
def _dense_text(num_wann: int, R_list, value=lambda r, m, n: 0.0, header: str = "written on test") -> str:
    lines = [header, f"{num_wann:12d}", f"{len(R_list):12d}", "".join(f"{1:5d}" for _ in R_list)]
    for r in R_list:
        for n in range(1, num_wann + 1):
            for m in range(1, num_wann + 1):
                lines.append("".join(f"{x:5d}" for x in (*r, m, n)) + f"{value(r, m, n):12.6f}{0.0:12.6f}")
    return "\n".join(lines) + "\n"


def _chain_value(r, m, n):
    return {(0, 1, 1): 0.1, (0, 2, 2): -0.1, (0, 1, 2): -1.0, (0, 2, 1): -1.0, (1, 2, 1): -0.5,
            (-1, 1, 2): -0.5}.get((r[0], m, n), 0.0)


def test_dense_export_lists_every_element_and_round_trips_bands(tmp_path):
    tb = random_hermitian_model(norb=3, seed=2)
    paths = tb.write_wannier90(tmp_path / "d_hr.dat.gz")
    assert [p.name for p in paths] == ["d_hr.dat.gz", "d_centres.xyz", "d.win", "d_tb.dat.gz"]
    hr = read_hr_data(paths[0])
    nR = len(set(map(tuple, hr.R.tolist())))
    assert len(hr.R) == nR * 9 and not _is_sparse(hr.header)
    k = np.random.default_rng(0).random((7, 3))
    for p in (paths[0], paths[3]):
        back = TightBinding.from_wannier90(p)
        np.testing.assert_allclose(back.eigenvalues(k), tb.eigenvalues(k), atol=1e-5)
        np.testing.assert_allclose(back.cell, tb.cell, atol=1e-9)
    assert list(tmp_path.glob(".tmp*")) == []


def _is_sparse(header: str) -> bool:
    from ase_wannierml.tb.wannier90 import _is_sparse_header

    return _is_sparse_header(header)


def test_interrupted_write_keeps_the_old_file(tmp_path, monkeypatch):
    """Ctrl-C in the middle of writing: the old _hr.dat is intact and no partial or temporary file is left."""
    path = tmp_path / "m_hr.dat"
    tb = random_hermitian_model(norb=3, seed=1)
    tb.write_wannier90(path, companions=False)
    before = path.read_bytes()
    import ase_wannierml.tb.wannier90 as w90

    real_open = w90._open_text

    class Interrupting:
        def __init__(self, fh):
            self.fh, self.n = fh, 0

        def write(self, text):
            self.n += 1
            if self.n == 2:
                raise KeyboardInterrupt
            self.fh.write(text)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.fh.close()

    monkeypatch.setattr(w90, "_open_text", lambda p, mode: Interrupting(real_open(p, mode)))
    with pytest.raises(KeyboardInterrupt):
        random_hermitian_model(norb=3, seed=9).write_wannier90(path, companions=False)
    assert path.read_bytes() == before
    assert sorted(x.name for x in tmp_path.iterdir()) == ["m_hr.dat"]


def test_body_listed_twice_is_an_error_not_a_doubled_h(tmp_path):
    text = _dense_text(2, [(-1, 0, 0), (0, 0, 0), (1, 0, 0)], _chain_value)
    head, body = text.split("\n", 4)[:4], text.split("\n", 4)[4]
    (tmp_path / "twice_hr.dat").write_text("\n".join(head) + "\n" + body + body)
    with pytest.raises(ValueError, match=r"twice_hr.dat: .*(listed 2 times|body has 24 rows|R vectors)"):
        TightBinding.from_wannier90(tmp_path / "twice_hr.dat", cell=np.eye(3))
    (tmp_path / "twice_hr.dat").write_text("sparse\n 2\n 1\n 1\n" + body.splitlines()[4] + "\n" +
                                           body.splitlines()[4] + "\n")
    with pytest.raises(ValueError, match=r"element R=\[0, 0, 0\] m=1 n=1 is listed 2 times"):
        read_hr_data(tmp_path / "twice_hr.dat")


def test_dense_file_with_a_missing_row_is_an_error(tmp_path):
    text = _dense_text(2, [(-1, 0, 0), (0, 0, 0), (1, 0, 0)], _chain_value)
    good = tmp_path / "ok_hr.dat"
    good.write_text(text)
    tb = TightBinding.from_wannier90(good, cell=np.eye(3), wsvec=None)
    e = tb.eigenvalues([[0.25, 0, 0]])[0]
    np.testing.assert_allclose(e, np.sort(np.linalg.eigvalsh([[0.1, -1 + 0.5j], [-1 - 0.5j, -0.1]])), atol=1e-12)
    lines = text.splitlines()
    del lines[4 + 4 + 2]                      # R = (0,0,0), m = 1, n = 2
    (tmp_path / "miss_hr.dat").write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=r"miss_hr.dat: header says num_wann = 2, nrpts = 3 but the body has 11 rows"):
        read_hr_data(tmp_path / "miss_hr.dat")
    lines[4 + 4 + 2:4 + 4 + 2] = ["    1    0    0    2    2    0.000000    0.000000"]   # count right, R=0 short
    (tmp_path / "miss_hr.dat").write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=r"(dense file misses rows: R=\[0, 0, 0\]|listed 2 times)"):
        read_hr_data(tmp_path / "miss_hr.dat")


def test_huge_num_wann_header_fails_before_allocating(tmp_path):
    import resource

    text = "written on x\n 1000000000\n 1\n 1\n    0    0    0    1    1    0.500000    0.000000\n"
    (tmp_path / "huge_hr.dat").write_text(text)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(ValueError, match=r"huge_hr.dat: header says num_wann = 1000000000, nrpts = 1 but the body "
                                         r"has 1 rows"):
        TightBinding.from_wannier90(tmp_path / "huge_hr.dat", cell=np.eye(3))
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 200_000   # kB: nothing of size 1e9
    (tmp_path / "huge_tb.dat").write_text("x\n1 0 0\n0 1 0\n0 0 1\n 1000000000\n 1\n 1\n\n 0 0 0\n 1 1 0.5 0.0\n")
    with pytest.raises(ValueError, match=r"huge_tb.dat: header says num_wann = 1000000000"):
        TightBinding.from_wannier90(tmp_path / "huge_tb.dat")


def test_corrupt_gzip_names_the_file(tmp_path):
    good = gzip.compress(_dense_text(1, [(0, 0, 0)], lambda r, m, n: 0.5).encode())
    (tmp_path / "cut_hr.dat.gz").write_bytes(good[: len(good) // 2])
    with pytest.raises(ValueError, match=r"cut_hr.dat.gz: cannot read \(EOFError"):
        TightBinding.from_wannier90(tmp_path / "cut_hr.dat.gz", cell=np.eye(3))
    (tmp_path / "junk_hr.dat.gz").write_bytes(b"not a gzip file at all")
    with pytest.raises(ValueError, match=r"junk_hr.dat.gz: cannot read \(BadGzipFile"):
        TightBinding.from_wannier90(tmp_path / "junk_hr.dat.gz", cell=np.eye(3))


@pytest.mark.parametrize("scale", [1.0, 1e-3, 300.0])
def test_a_file_the_reader_accepts_never_fails_the_solver(tmp_path, scale):
    """Asymmetry below the reader's tolerance (HERMITIAN_TOL, 1e-6 eV absolute) is removed on reading, so the
    solver's own check (1e-8 relative) cannot fail on it, whatever the energy scale; above it: a clear error."""
    from ase_wannierml.tb.tightbinding import HERMITIAN_TOL

    def write(extra: float) -> Path:
        lines = ["written on test", "2", "3", "1 1 1"]
        for r in (-1, 0, 1):
            for n in (1, 2):
                for m in (1, 2):
                    v = _chain_value((r,), m, n) * scale + (extra if (r, m, n) == (0, 1, 2) else 0.0)
                    lines.append(f"{r} 0 0 {m} {n} {v:.10f} 0.0")
        path = tmp_path / "a_hr.dat"
        path.write_text("\n".join(lines) + "\n")
        return path

    tb = TightBinding.from_wannier90(write(0.9 * HERMITIAN_TOL), cell=np.eye(3), wsvec=None)
    assert tb.check_hermitian(tol=0.0) == 0.0
    assert np.all(np.isfinite(tb.eigenvalues(np.random.default_rng(1).random((5, 3)))))
    assert np.isfinite(tb.eigenvalues([[0.1, 0.2, 0.3]], num=1, near=0.0)).all()
    with pytest.raises(ValueError, match="not Hermitian"):
        TightBinding.from_wannier90(write(20 * HERMITIAN_TOL), cell=np.eye(3), wsvec=None)


def test_export_too_large_for_a_dense_listing_falls_back_to_sparse_with_a_warning(tmp_path, monkeypatch):
    import ase_wannierml.tb.wannier90 as w90

    tb = random_hermitian_model(norb=3, seed=4)
    monkeypatch.setattr(w90, "DENSE_MAX_ROWS", w90.dense_rows(tb) - 1)
    with pytest.warns(UserWarning, match="writing the sparse listing"):
        paths = tb.write_wannier90(tmp_path / "big_hr.dat")
    assert [p.name for p in paths] == ["big_hr.dat", "big_centres.xyz", "big.win"]
    hr = read_hr_data(paths[0])
    assert "sparse" in hr.header and len(hr.R) == tb.nnz
    k = np.random.default_rng(1).random((4, 3))
    np.testing.assert_allclose(TightBinding.from_wannier90(paths[0]).eigenvalues(k), tb.eigenvalues(k), atol=1e-5)
    with pytest.raises(ValueError, match="use dense=False"):
        tb.write_wannier90(tmp_path / "forced_hr.dat", dense=True)
