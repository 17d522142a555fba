"""Benchmark: sparse direct solver libraries for the 8 states near the Dirac energy of 1.05° twisted bilayer graphene.

Same run, same matrices H(k) (eV): the Moon–Koshino model (``slater_koster``) and the shipped learned model
(``load_model("graphene-bilayer")``, rigid cell) of ``twisted_bilayer("graphene", m=31, r=1)`` (11,908 orbitals), at
a complex k = (0.1, 0.2, 0) and at Γ (real symmetric). Per library: analysis (ordering), numerical factorisation of
H − σ, one solve, the exact count of eigenvalues below σ (inertia) and the whole 8-state eigen-solve (fresh: ordering
and factorisation included), both with our Davidson iteration preconditioned by the library's factor and with
``scipy.sparse.linalg.eigsh(H, k=8, sigma=σ, OPinv=factor)`` (ARPACK shift-invert Lanczos); peak resident memory
(``ru_maxrss``) of each measurement, which runs in its own process. Baseline in the same run: the naive
``eigsh(H, k=8, sigma=σ)`` (SuperLU).

Libraries: ``ours`` (nested dissection + multifrontal LU/LDLᴴ in numpy, tb/multifrontal.py, while it existed),
``pardiso`` (MKL PARDISO via the ``pypardiso`` package's MKL, ``tb/pardiso_backend.py``: mtype −4 complex Hermitian,
−2 real symmetric; inertia of a complex H through the real 2n embedding), ``mumps`` (PyPI ``python-mumps`` built on
Debian's sequential MUMPS 5.5; complex unsymmetric LU, real symmetric LDLᵀ; inertia from the signature of the real
embedding), ``slepc`` (Debian's complex PETSc/SLEPc 3.18: ``python3-slepc4py-complex`` imports only under Debian's
/usr/bin/python3 (numpy ABI), so it runs there in a subprocess; Krylov–Schur shift-invert with PETSc's LU through
MUMPS; no inertia: MUMPS has no complex Hermitian LDLᴴ).

Every library runs one thread (OMP/MKL/OpenBLAS = 1); run under ``flock /work/main/scratch/cpu.lock`` and read
the recorded load average: the machine is shared.

    flock /work/main/scratch/cpu.lock python benchmarks/solver_libraries.py
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import resource  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
from ase_wannierml.cli import atomic_write_text

RESULTS = Path(__file__).resolve().parent / "results"
ROOT = Path(__file__).resolve().parents[1]
NUM = 8
K_COMPLEX = (0.1, 0.2, 0.0)
E_D_MK = 0.787597  # eV, graphene Dirac energy of the default Moon–Koshino model
DEBIAN_PYTHON = "/usr/bin/python3"
PETSC_DIR = "/usr/lib/petscdir/petsc3.18/x86_64-linux-gnu-complex"
SLEPC_DIR = "/usr/lib/slepcdir/slepc3.18/x86_64-linux-gnu-complex"


# ---------------------------------------------------------------------------------------------------- matrices
def learned_tb(cache: Path):
    """The shipped model's TightBinding of the rigid 1.05° cell (unpruned), cached as npz (building it ≈ 30–60 s)."""
    from ase_wannierml.tb.tightbinding import OrbitalTable, TightBinding

    if not cache.exists():
        import torch

        from ase_wannierml.calculator import WannierMLCalculator
        from ase_wannierml.model.io import load_model
        from ase_wannierml.structures import twisted_bilayer

        torch.set_num_threads(1)
        atoms = twisted_bilayer("graphene", m=31, r=1)
        atoms.calc = WannierMLCalculator(load_model("graphene-bilayer"))
        tb = atoms.calc.get_hamiltonian()
        o = tb.orbitals
        tmp = cache.with_suffix(".tmp.npz")
        np.savez(tmp, cell=np.asarray(tb.cell), R=tb.R, rows=tb.rows, cols=tb.cols, values=tb.values,
                 atom_index=o.atom_index, element=o.element, l=o.l, label=o.label, centres=o.centres,
                 layer=o.layer, pbc=tb.pbc, num_electrons=tb.num_electrons, fermi_level=tb.fermi_energy)
        os.replace(tmp, cache)
    d = np.load(cache, allow_pickle=False)
    orb = OrbitalTable(atom_index=d["atom_index"], element=d["element"], l=d["l"], label=d["label"],
                       centres=d["centres"], layer=d["layer"] if d["layer"].size else None)
    return TightBinding(d["cell"], d["R"], d["rows"], d["cols"], d["values"], orb, pbc=tuple(d["pbc"]),
                        num_electrons=float(d["num_electrons"]), fermi_level=float(d["fermi_level"]),
                        check_hermitian=False)


def save_matrix(H, path: Path) -> None:
    """CSR arrays as plain npz (readable by Debian's numpy without scipy)."""
    np.savez(path, data=H.data, indices=H.indices, indptr=H.indptr, shape=np.array(H.shape))


def load_matrix(path: str):
    import scipy.sparse as sp

    d = np.load(path)
    return sp.csr_matrix((d["data"], d["indices"], d["indptr"]), shape=tuple(d["shape"]))


# ---------------------------------------------------------------------------------------------------- workers
def _timed(fn):
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def _eigsh_opinv(H, sigma: float, solve) -> np.ndarray:
    import scipy.sparse.linalg as sla

    n = H.shape[0]
    op = sla.LinearOperator((n, n), matvec=solve, dtype=H.dtype)
    return np.sort(sla.eigsh(H, k=NUM, sigma=sigma, OPinv=op, return_eigenvectors=False))


def _davidson(H, factor, sigma: float) -> np.ndarray:
    from ase_wannierml.tb import solvers

    scale = max(1.0, float(abs(H).max()))
    res = solvers._davidson_near(H, factor, sigma, NUM, solvers.BLOCK_SIZE, 1e-9 * scale, solvers.MAX_ITER, 0)
    return np.sort(res.values), res.solves


def _shifted(H, sigma: float):
    import scipy.sparse as sp

    n = H.shape[0]
    A = (sp.csr_matrix(H) - sigma * sp.identity(n, dtype=H.dtype, format="csr")).tocsr()
    A.sum_duplicates()
    A.sort_indices()
    return A


def _embed(A):
    import scipy.sparse as sp

    return sp.bmat([[A.real, -A.imag], [A.imag, A.real]], format="csr")


def worker(method: str, matrix: str, sigma: float) -> dict:
    import scipy.sparse as sp

    if method == "pardiso":  # load and initialise MKL first (several s, once per process): not the solver's cost
        from ase_wannierml.tb.pardiso_backend import PardisoFactor

        PardisoFactor(sp.identity(4, format="csr")).solve(np.ones(4))
    H = load_matrix(matrix)
    n = H.shape[0]
    b = np.random.default_rng(0).standard_normal(n).astype(H.dtype)
    out: dict = {"method": method}
    if method == "naive":
        import scipy.sparse.linalg as sla

        e, t = _timed(lambda: np.sort(sla.eigsh(H, k=NUM, sigma=sigma, return_eigenvectors=False)))
        out.update(eig8_s=t, values=e.tolist())
    elif method == "ours":
        from ase_wannierml.tb import multifrontal, solvers

        A = multifrontal.shifted_csr(H, sigma)
        sym, t_sym = _timed(lambda: multifrontal.symbolic_for(A))
        f, t_f = _timed(lambda: multifrontal.MultifrontalFactor(sym, A, single=False, workers=1))
        _, t_f32 = _timed(lambda: multifrontal.MultifrontalFactor(sym, A, single=True, workers=1))
        x, t_s = _timed(lambda: f.solve(b))
        cnt, t_c = _timed(lambda: solvers.count_eigenvalues_below(H, sigma, workers=1))
        multifrontal._PLAN_CACHE.clear()
        r, t_e = _timed(lambda: solvers.solve_near_auto(H, NUM, sigma, method="multifrontal", workers=1))
        r2, t_e2 = _timed(lambda: solvers.solve_near_auto(H, NUM, sigma, method="multifrontal", workers=1))
        e_op, t_op = _timed(lambda: _eigsh_opinv(H, sigma, f.solve))
        out.update(analysis_s=t_sym, factor_s=t_f, factor_single_s=t_f32, solve_s=t_s,
                   residual=float(np.linalg.norm(A @ x - b) / np.linalg.norm(b)), inertia_below=cnt, inertia_s=t_c,
                   eig8_s=t_e, eig8_warm_s=t_e2, eig8_solves=r.solves, values=np.sort(r.values).tolist(),
                   eig8_eigsh_opinv_s=t_op + t_f, values_eigsh_opinv=e_op.tolist())
    elif method == "pardiso":
        from ase_wannierml.tb.pardiso_backend import PardisoFactor

        A = _shifted(H, sigma)
        f, t_all = _timed(lambda: PardisoFactor(A))
        g, t_perm = _timed(lambda: PardisoFactor(A, perm=f.perm))  # ordering reused: what later k-points pay
        x, t_s = _timed(lambda: f.solve(b))
        fi, t_c = _timed(lambda: PardisoFactor(A, inertia=True))
        (e, solves), t_d = _timed(lambda: _davidson(H, f, sigma))
        e_op, t_op = _timed(lambda: _eigsh_opinv(H, sigma, f.solve))
        out.update(analysis_s=f.t_analysis, factor_s=f.t_factor, factor_reordered_s=t_perm,
                   analysis_with_perm_s=g.t_analysis, solve_s=t_s, factor_nnz=f.factor_nnz,
                   pardiso_peak_kb=f.peak_memory_kb, residual=float(np.linalg.norm(A @ x - b) / np.linalg.norm(b)),
                   inertia_below=fi.negative_eigenvalues, inertia_s=t_c, inertia_perturbed=fi.perturbed_pivots,
                   inertia_embedded=fi.embedded, eig8_s=t_all + t_d, eig8_warm_s=t_perm + t_d, eig8_solves=solves,
                   values=e.tolist(), eig8_eigsh_opinv_s=t_all + t_op, values_eigsh_opinv=e_op.tolist())
    elif method == "mumps":
        import mumps
        import scipy.sparse as sp

        A = _shifted(H, sigma)
        real = A.dtype.kind == "f"

        def factor():
            ctx = mumps.Context()
            ctx.set_matrix(A, symmetric=real)  # real: LDLᵀ of the upper triangle; complex: LU (no Hermitian type)
            ctx.analyze(ordering="auto")
            t0 = time.perf_counter()
            ctx.factor(reuse_analysis=True)
            return ctx, time.perf_counter() - t0

        (ctx, t_num), t_all = _timed(factor)
        x, t_s = _timed(lambda: ctx.solve(b))

        def count():
            M = A if real else _embed(A)
            c = mumps.Context()
            sig = c.signature(sp.csr_matrix(M))
            neg = (M.shape[0] - sig) // 2
            return neg if real else neg // 2

        cnt, t_c = _timed(count)
        (e, solves), t_d = _timed(lambda: _davidson(H, ctx, sigma))
        e_op, t_op = _timed(lambda: _eigsh_opinv(H, sigma, ctx.solve))
        out.update(analysis_s=t_all - t_num, factor_s=t_num, solve_s=t_s,
                   residual=float(np.linalg.norm(A @ x - b) / np.linalg.norm(b)), inertia_below=int(cnt),
                   inertia_s=t_c, eig8_s=t_all + t_d, eig8_solves=solves, values=e.tolist(),
                   eig8_eigsh_opinv_s=t_all + t_op, values_eigsh_opinv=e_op.tolist())
    else:
        raise ValueError(f"unknown method {method!r}")
    out["maxrss_GB"] = peak_rss_gb()
    return out


def peak_rss_gb() -> float:
    """This process's peak resident memory (GB): VmHWM (ru_maxrss would include the parent's peak: it survives
    fork + exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1e6
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6


SLEPC_WORKER = r"""
import sys, time, json, resource, numpy as np
import petsc4py, slepc4py
petsc4py.init(sys.argv[:1] + ["-mat_mumps_icntl_14", "50"]); slepc4py.init(sys.argv[:1])
from petsc4py import PETSc
from slepc4py import SLEPc
d = np.load(sys.argv[1]); sigma = float(sys.argv[2]); num = int(sys.argv[3])
indptr, indices = d["indptr"].astype(PETSc.IntType), d["indices"].astype(PETSc.IntType)
data = d["data"].astype(PETSc.ScalarType); n = int(d["shape"][0])
def matrix(shift):
    A = PETSc.Mat().createAIJ(size=(n, n), csr=(indptr, indices, data.copy()), comm=PETSc.COMM_SELF)
    if shift:
        A.shift(-shift)
    A.assemble(); return A
H, A = matrix(0.0), matrix(sigma)
b = A.createVecRight(); b.setArray(np.random.default_rng(0).standard_normal(n)); x = b.duplicate()
ksp = PETSc.KSP().create(PETSc.COMM_SELF); ksp.setOperators(A); ksp.setType("preonly")
pc = ksp.getPC(); pc.setType("lu"); pc.setFactorSolverType("mumps")
t = time.perf_counter(); ksp.setUp(); t_f = time.perf_counter() - t
t = time.perf_counter(); ksp.solve(b, x); t_s = time.perf_counter() - t
r = b.duplicate(); A.mult(x, r); r.axpy(-1.0, b)
t = time.perf_counter()
eps = SLEPc.EPS().create(PETSc.COMM_SELF); eps.setOperators(H); eps.setProblemType(SLEPc.EPS.ProblemType.HEP)
eps.setDimensions(num); eps.setTarget(sigma); eps.setWhichEigenpairs(SLEPc.EPS.Which.TARGET_MAGNITUDE)
eps.setTolerances(1e-12); st = eps.getST(); st.setType("sinvert")
sk = st.getKSP(); sk.setType("preonly"); spc = sk.getPC(); spc.setType("lu"); spc.setFactorSolverType("mumps")
eps.solve(); t_e = time.perf_counter() - t
vals = sorted(eps.getEigenvalue(i).real for i in range(eps.getConverged()))
vals = sorted(sorted(vals, key=lambda e: abs(e - sigma))[:num])
print(json.dumps({"method": "slepc", "factor_s": t_f, "solve_s": t_s, "residual": r.norm() / b.norm(),
                  "eig8_s": t_e, "values": vals, "converged": eps.getConverged(), "inertia_below": None,
                  "maxrss_GB": [int(l.split()[1]) / 1e6 for l in open("/proc/self/status") if l.startswith("VmHWM")][0],
                  "petsc": ".".join(map(str, PETSc.Sys.getVersion())), "python": sys.version.split()[0]}))
"""


def run_worker(method: str, matrix: Path, sigma: float, timeout: float = 1200) -> dict:
    """One measurement in a fresh process (its own peak memory)."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    if method == "slepc":
        env.update(PETSC_DIR=PETSC_DIR, SLEPC_DIR=SLEPC_DIR)
        cmd = [DEBIAN_PYTHON, "-c", SLEPC_WORKER, str(matrix), repr(sigma), str(NUM)]
    else:
        cmd = [sys.executable, __file__, "--worker", method, "--matrix", str(matrix), "--sigma", repr(sigma)]
    t = time.perf_counter()
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"method": method, "error": f"timeout after {timeout} s"}
    wall = time.perf_counter() - t
    if p.returncode != 0:
        return {"method": method, "error": p.stderr.strip().splitlines()[-1] if p.stderr.strip() else p.returncode}
    out = json.loads(p.stdout.strip().splitlines()[-1])
    out["process_wall_s"] = wall
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--matrix", help=argparse.SUPPRESS)
    parser.add_argument("--sigma", type=float, help=argparse.SUPPRESS)
    parser.add_argument("--methods", nargs="+", default=["naive", "ours", "pardiso", "mumps", "slepc"])
    parser.add_argument("--models", nargs="+", default=["mk", "learned"])
    parser.add_argument("--learned-cache", type=Path, default=ROOT / "scratch" / "solvers" / "learned_1p05_rigid.npz")
    parser.add_argument("--learned-sigma", type=float, default=-4.263293960582194,
                        help="eV: E_D of the learned rigid 1.05° cell (magic_angle_1p05_cellrelax_final.json)")
    parser.add_argument("--out", type=Path, default=RESULTS / "solver_libraries.json")
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.matrix, args.sigma)))
        return
    from ase_wannierml.slater_koster import moon_koshino_tb
    from ase_wannierml.structures import twisted_bilayer

    load0 = os.getloadavg()
    print(f"load average {load0}", flush=True)
    rows = []
    with tempfile.TemporaryDirectory(dir=ROOT / "scratch") as tmp:
        for model in args.models:
            if model == "mk":
                tb, sigma = moon_koshino_tb(twisted_bilayer("graphene", m=31, r=1)), E_D_MK
            else:
                tb, sigma = learned_tb(args.learned_cache), args.learned_sigma
            for kname, k in (("complex", K_COMPLEX), ("gamma", (0.0, 0.0, 0.0))):
                H = tb.hamiltonian_sparse(np.array(k), allow_real=True)
                path = Path(tmp) / f"{model}_{kname}.npz"
                save_matrix(H, path)
                ref = None
                for method in args.methods:
                    r = run_worker(method, path, sigma)
                    r.update(model=model, k=kname, norb=tb.norb, nnz=int(H.nnz), sigma_eV=sigma,
                             load_average=os.getloadavg())
                    if "values" in r and ref is None:
                        ref = np.array(r["values"])
                    if "values" in r:
                        r["max_abs_diff_vs_first_eV"] = float(np.abs(np.array(r["values"]) - ref).max())
                    rows.append(r)
                    print(f"{model:8s} {kname:8s} {method:8s} " + (
                        f"error: {r['error']}" if "error" in r else
                        f"factor {r.get('factor_s', float('nan')):7.2f} s  solve {r.get('solve_s', float('nan')):6.3f} s"
                        f"  eig8 {r['eig8_s']:7.2f} s  eig8(eigsh+OPinv) {r.get('eig8_eigsh_opinv_s', float('nan')):7.2f}"
                        f" s  below {r.get('inertia_below')} ({r.get('inertia_s', float('nan')):.2f} s)"
                        f"  {r['maxrss_GB']:.2f} GB  Δ {r.get('max_abs_diff_vs_first_eV', 0):.1e}"
                        f"  load {r['load_average'][0]:.1f}"), flush=True)
            del tb
    out = {"benchmark": "solver_libraries", "num_eigenvalues": NUM, "rows": rows, "load_average_start": load0,
           "load_average_end": os.getloadavg(), "threads": 1, "python": platform.python_version(),
           "cpus": os.cpu_count(), "date": time.strftime("%Y-%m-%d %H:%M:%S")}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out, json.dumps(out, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
