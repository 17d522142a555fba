"""DFT frames for given structures (dft/compute.py, dft/engine.py, dft/material_files.py, ``wannierml dft``).

* material files: the shipped YAML files reproduce the specs recorded in real frames; bad files are clear errors;
* layers by z clustering (also across the periodic boundary), ambiguous cases refused;
* stable content-hash frame ids;
* the engine with a fake frame function (no QE) on a two-worker local cluster: retries, failure report, skipping;
* two cheap SCF-only frames with real QE on a two-worker local cluster (``dft`` marker).
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from ase import Atoms
from ase.io import read, write

from ase_wannierml.dft import material_files as mf
from ase_wannierml.dft.compute import (assign_layers, compute_frames, frame_id_for, frame_status, plan_frames,
                                       read_structures)
from ase_wannierml.dft.engine import EngineSettings
from ase_wannierml.dft.materials import GRAPHENE_BILAYER, MOS2_BILAYER
from ase_wannierml.dft.sampling import FrameParams, build_structure

REPO = Path(__file__).resolve().parents[1]
TINY = Path(__file__).resolve().parent / "data" / "dft_tiny_graphene.yaml"


def ab_bilayer(gap: float = 3.35, material=GRAPHENE_BILAYER) -> Atoms:
    p = FrameParams(frame_id="x", material=material.name, seed=0, shift=(1 / 3, 2 / 3), gap=gap)
    return build_structure(material, p)


# ------------------------------------------------------------------------------------------------ material files
# Material settings changed after frames were computed with an earlier value (docs/dft.md): the earlier values.
EARLIER_SETTINGS = {"graphene-bilayer": {"proj_threshold": (0.5,)}}   # 0.5 -> 0.7 in session 17


def test_shipped_files_reproduce_recorded_frame_specs():
    """The YAML files are the materials the existing frames were computed with (meta.json material_spec)."""
    for spec, pattern in ((GRAPHENE_BILAYER, "graphene-bilayer"), (MOS2_BILAYER, "mos2-bilayer")):
        metas = sorted((REPO / "datasets" / pattern / "frames").glob("*/meta.json"))
        if not metas:
            pytest.skip(f"no recorded {pattern} frames in this checkout")
        ours = json.loads(json.dumps(spec.to_dict()))
        for meta in (metas[0], metas[-1]):               # keys added later (references) are absent in old frames
            recorded = json.loads(meta.read_text())["material_spec"]
            # pseudo_dir is an absolute path of the machine that made the frame (shared/ moves between checkouts)
            for d in (recorded["dft"], ours["dft"]):
                d["pseudo_dir"] = Path(d["pseudo_dir"]).name
            for key, earlier in EARLIER_SETTINGS.get(pattern, {}).items():   # settings changed since, on record
                if recorded["dft"].get(key) in earlier:
                    recorded["dft"][key] = ours["dft"][key]
            assert {k: ours[k] for k in recorded} == recorded, meta
    assert set(mf.shipped_material_files()) == {"graphene-bilayer", "mos2-bilayer"}


def test_material_yaml_round_trip_and_template(tmp_path):
    path = tmp_path / "m.yaml"
    path.write_text(mf.material_to_yaml(MOS2_BILAYER))
    assert mf.load_material(path) == MOS2_BILAYER
    js = tmp_path / "m.json"
    js.write_text(json.dumps(mf.material_to_dict(GRAPHENE_BILAYER)))
    assert mf.load_material(js) == GRAPHENE_BILAYER
    tiny = mf.load_material(TINY)
    assert tiny.dft.n_orbitals == {"C": 1} and tiny.dft.excluded_bands_per_atom == {"C": 0}   # derived
    assert tiny.sites == () and tiny.dft.ecutwfc == 20.0


@pytest.mark.parametrize("edit, message", [
    (lambda d: d.update(lattice=1.0), r"unknown key\(s\) \['lattice'\]"),
    (lambda d: d["dft"].pop("masses"), r"missing key\(s\) \['masses'\]"),
    (lambda d: d["dft"]["pseudopotentials"].update(N="N.pbe.UPF"), r"masses: no entry for \['N'\]"),
    (lambda d: d["dft"].update(projections={"C": ["f"]}), r"shells \['f'\] unknown"),
    (lambda d: d["dft"].update(n_orbitals={"C": 3}), r"n_orbitals.C = 3 but projections \['pz'\] give 1"),
    (lambda d: d["dft"].update(ecutwfc=-5), r"ecutwfc must be positive"),
    (lambda d: d["dft"].update(ecutrho=10.0), r"ecutrho = 10.0 Ry is below ecutwfc"),
    (lambda d: d["dft"].update(frozen_window=[2, -2]), r"low 2.0 must be below high -2.0"),
    (lambda d: d.update(sites=[["B", 0, 0, 0]]), r"sites use \['B'\]"),
])
def test_bad_material_files_name_the_problem(tmp_path, edit, message):
    import yaml

    d = yaml.safe_load(TINY.read_text())
    edit(d)
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(d))
    with pytest.raises(mf.MaterialFileError, match=message):
        mf.load_material(path)


def test_missing_pseudopotential_and_unknown_species(tmp_path):
    import yaml

    d = yaml.safe_load(TINY.read_text())
    d["dft"]["pseudo_dir"] = "pseudos"                          # relative to the file: does not exist
    path = tmp_path / "m.yaml"
    path.write_text(yaml.safe_dump(d))
    spec = mf.load_material(path)
    assert spec.dft.pseudo_dir == str(tmp_path / "pseudos")
    with pytest.raises(FileNotFoundError, match=r"pseudopotential file\(s\) not found: .*C.pbe-rrkjus.UPF"):
        compute_frames(ab_bilayer(), spec, tmp_path / "ds", scf_only=True)
    bn = ab_bilayer()
    bn.symbols[0] = "N"
    with pytest.raises(ValueError, match=r"C3N\) contains \['N'\], which material 'tiny-graphene' does not define"):
        compute_frames(bn, spec, tmp_path / "ds", scf_only=True)
    with pytest.raises(ValueError, match="neither a shipped material"):
        compute_frames(ab_bilayer(), "graphene-trilayer", tmp_path / "ds")


# ---------------------------------------------------------------------------------------------------- layers, ids
def test_layers_by_z_graphene_mos2_and_across_the_boundary():
    g = ab_bilayer()
    assert (assign_layers(g) == g.arrays["layer"]).all()
    m = ab_bilayer(3.03, MOS2_BILAYER)                   # S-Mo-S planes 1.56 Å apart inside, 3.03 Å between
    assert (assign_layers(m) == m.arrays["layer"]).all()
    wrapped = g.copy()                                   # bilayer straddling z = 0 / c
    wrapped.positions[:, 2] -= wrapped.positions[:, 2].min() + 1.0
    assert (assign_layers(wrapped) == g.arrays["layer"]).all()
    rippled = g.repeat((3, 3, 1))
    rippled.rattle(0.1, seed=1)
    assert (assign_layers(rippled) == rippled.arrays["layer"]).all()


def test_ambiguous_layers_are_refused():
    planes = Atoms("C3", positions=[[0, 0, 8.0], [1.2, 0.7, 9.7], [0.0, 1.4, 11.4]], cell=[4, 4, 20], pbc=True)
    with pytest.raises(ValueError, match=r"separating gaps \[1.7\] Å are not clearly wider"):
        assign_layers(planes)
    with pytest.raises(ValueError, match="structure 0 .*per-atom 'layer' array"):
        plan_frames([planes], GRAPHENE_BILAYER)


def test_frame_ids_are_stable_content_hashes():
    a = ab_bilayer()
    fid = frame_id_for(a, GRAPHENE_BILAYER, scf_only=True, prefix="md")
    assert fid.startswith("md-scf-") and len(fid) == len("md-scf-") + 12
    b = a.copy()
    b.positions += 2e-7                                   # below the 1e-5 Å hash resolution
    assert frame_id_for(b, GRAPHENE_BILAYER, True, "md") == fid
    b.positions[0, 2] += 1e-3
    assert frame_id_for(b, GRAPHENE_BILAYER, True, "md") != fid
    full = frame_id_for(a, GRAPHENE_BILAYER, False, "md")
    assert full.startswith("md-") and full[3:] != fid[7:]                       # SCF-only is part of the hash
    import dataclasses

    other_dir = dataclasses.replace(GRAPHENE_BILAYER, dft=dataclasses.replace(GRAPHENE_BILAYER.dft, pseudo_dir="/x"))
    assert frame_id_for(a, other_dir, True, "md") == fid                         # machine-specific path: same
    hotter = dataclasses.replace(GRAPHENE_BILAYER, dft=dataclasses.replace(GRAPHENE_BILAYER.dft, ecutwfc=40.0))
    assert frame_id_for(a, hotter, True, "md") != fid                            # a DFT setting: new frame


def test_read_structures_and_provenance(tmp_path):
    images = [ab_bilayer(g) for g in (3.2, 3.4, 3.6)]
    for i, a in enumerate(images):
        a.info = {"md_step": 100 * i}
        del a.arrays["layer"]
    path = tmp_path / "snaps.extxyz"
    write(path, images)
    got = read_structures(path, "0:3:2")
    assert [a.info["source_index"] for a in got] == [0, 2]
    plan = plan_frames(got + got[:1], GRAPHENE_BILAYER, scf_only=True)          # duplicate kept once
    assert len(plan) == 2
    params, atoms = plan[1]
    assert params.kind == "user-scf" and params.notes["source_file"] == str(path.resolve())
    assert params.notes["source_index"] == 2 and params.notes["source_info"] == {"md_step": 200}
    assert params.notes["layer_source"].startswith("z clustering") and list(atoms.arrays["layer"]) == [0, 0, 1, 1]
    with pytest.raises(IndexError, match="has 3 structures; index 5"):
        read_structures(path, "5")


# --------------------------------------------------------------------------------------- engine, fake frames
def fake_frame(material, params, dataset_dir, scratch, runner, atoms=None):
    """Stands in for workflow.run_frame: source index 1 fails on its first attempt (an error recorded the way
    run_frame records it), index 2 always raises; every call is counted in scratch/<id>.attempts."""
    counter = Path(scratch) / f"{params.frame_id}.attempts"
    counter.parent.mkdir(parents=True, exist_ok=True)
    n = int(counter.read_text()) + 1 if counter.exists() else 1
    counter.write_text(str(n))
    idx = params.notes.get("source_index", 0)
    if idx == 3 and params.kind == "user":            # slow failure (max_failures test)
        import time

        time.sleep(1.0)
        raise RuntimeError("slow crash (fake)")
    if idx == 2:
        raise RuntimeError("pw.x crashed (fake)")
    status, reason = ("rejected", "error: RuntimeError: fake first failure") if idx == 1 and n == 1 else \
        ("ok", f"fake frame with {runner.nprocs} ranks")
    frame = Path(dataset_dir) / "frames" / params.frame_id
    frame.mkdir(parents=True, exist_ok=True)
    if atoms is not None:
        write(frame / "structure.extxyz", atoms)
    (frame / "meta.json").write_text(json.dumps({"status": status, "reason": reason, "sampling": params.to_dict()}))
    return {"status": status, "reason": reason}


@pytest.fixture(scope="module")
def client():
    """A two-worker Dask LocalCluster shared by the fake-frame engine tests (as compute_frames builds by default)."""
    distributed = pytest.importorskip("distributed")
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0")
    c = distributed.Client(cluster)
    yield c
    c.close()
    cluster.close()


def test_engine_retries_reports_and_skips(tmp_path, client):
    images = [ab_bilayer(g) for g in (3.2, 3.4, 3.6, 3.8)]
    for i, a in enumerate(images):
        a.info["source_index"] = i
    settings = EngineSettings(workers=2, ranks_per_task=3, retries=2)
    lines: list[str] = []
    s = compute_frames(images, GRAPHENE_BILAYER, tmp_path / "ds", scf_only=True, settings=settings,
                       scratch=tmp_path / "scr", frame_fn=fake_frame, client=client, progress=lines.append)
    ids = [p.frame_id for p, _ in plan_frames(images, GRAPHENE_BILAYER, scf_only=True)]
    assert sorted(s.ok) == sorted([ids[0], ids[1], ids[3]])
    assert list(s.failed) == [ids[2]] and "pw.x crashed (fake)" in s.failed[ids[2]]
    assert s.attempts == {ids[0]: 1, ids[1]: 2, ids[2]: 3, ids[3]: 1}
    assert sum("retry" in line for line in lines) == 3 and any(line.startswith("FAILED") for line in lines)
    assert (tmp_path / "scr" / f"{ids[1]}.attempts").read_text() == "2"
    assert frame_status(tmp_path / "ds", ids[1]) == ("ok", "fake frame with 3 ranks")
    runs = list((tmp_path / "ds" / "runs").glob("dft-*.json"))
    assert len(runs) == 1 and json.loads(runs[0].read_text())["failed"] == s.failed
    # second run: finished frames are skipped; the failed one is tried again (and fails again)
    s2 = compute_frames(images, GRAPHENE_BILAYER, tmp_path / "ds", scf_only=True, settings=settings,
                        scratch=tmp_path / "scr", frame_fn=fake_frame, client=client, progress=None)
    assert sorted(s2.skipped) == sorted([ids[0], ids[1], ids[3]]) and list(s2.failed) == [ids[2]]
    assert (tmp_path / "scr" / f"{ids[0]}.attempts").read_text() == "1"
    # a frame recorded with an error is rerun unless rerun_failed=False
    (tmp_path / "ds" / "frames" / ids[3] / "meta.json").write_text(json.dumps(
        {"status": "rejected", "reason": "error: RuntimeError: killed"}))
    assert frame_status(tmp_path / "ds", ids[3])[0] == "error"
    s3 = compute_frames(images[3:], GRAPHENE_BILAYER, tmp_path / "ds", scf_only=True, settings=settings,
                        scratch=tmp_path / "scr", frame_fn=fake_frame, client=client, progress=None, rerun_failed=False)
    assert s3.skipped == [ids[3]]
    s4 = compute_frames(images[3:], GRAPHENE_BILAYER, tmp_path / "ds", scf_only=True, settings=settings,
                        scratch=tmp_path / "scr", frame_fn=fake_frame, client=client, progress=None)
    assert s4.ok == [ids[3]] and (tmp_path / "scr" / f"{ids[3]}.attempts").read_text() == "2"


def test_max_failures_cancels_the_rest(tmp_path):
    images = [ab_bilayer(g) for g in (3.3, 3.5, 3.7)]
    for a in images:
        a.info["source_index"] = 3                       # all fail after 1 s
    s = compute_frames(images, GRAPHENE_BILAYER, tmp_path / "ds", settings=EngineSettings(
        workers=1, retries=0, max_failures=1), scratch=tmp_path / "scr", frame_fn=fake_frame, progress=None)
    # the first failure stops new starts: queued tasks are cancelled, a task already running is waited for
    assert len(s.failed) + len(s.cancelled) == 3 and 1 <= len(s.failed) <= 2 and s.cancelled and not s.ok


def test_sampler_batch_runs_on_the_engine(tmp_path):
    """dft.batch (the sampler's plan) goes through the same engine: two workers, resumable."""
    from ase_wannierml.dft import batch

    argv = ["--material", "graphene-bilayer", "--n-frames", "3", "--dataset-dir", str(tmp_path / "ds"),
            "--scratch", str(tmp_path / "scr"), "--workers", "2", "--np", "1", "--nk", "1"]
    assert batch.main(argv, frame_fn=fake_frame) == 0
    plan = json.loads((tmp_path / "ds" / "plan.json").read_text())
    assert len(plan) == 3
    assert all(frame_status(tmp_path / "ds", p["frame_id"])[0] == "ok" for p in plan)
    assert batch.main(argv, frame_fn=fake_frame) == 0                         # all skipped the second time
    assert all((tmp_path / "scr" / f"{p['frame_id']}.attempts").read_text() == "1" for p in plan)
    runs = sorted((tmp_path / "ds" / "runs").glob("dft-*.json"))
    assert len(json.loads(runs[-1].read_text())["skipped"]) == 3


def test_cli_dry_run_and_print_material(tmp_path, capsys):
    from ase_wannierml.cli import main

    assert main(["dft", "--print-material", "graphene-bilayer"]) == 0
    out = capsys.readouterr().out
    (tmp_path / "g.yaml").write_text(out)
    assert mf.load_material(tmp_path / "g.yaml") == GRAPHENE_BILAYER
    a = ab_bilayer().repeat((2, 2, 1))
    del a.arrays["layer"]
    write(tmp_path / "s.extxyz", [a])
    assert main(["dft", str(tmp_path / "s.extxyz"), "--material", str(TINY), "--dataset-dir", str(tmp_path / "d"),
                 "--scf-only", "--dry-run"]) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith("user-scf-") and "16 atoms C16  layers [8, 8] (z clustering" in line
    assert "SCF k 3x3x1" in line and line.endswith("to run")        # 6 / sqrt(4 primitive areas) = 3


# ------------------------------------------------------------------------------------------------------ real QE
@pytest.mark.dft
def test_two_cheap_scf_frames_on_two_workers(tmp_path):
    missing = [c for c in ("pw.x", "wannier90.x", "pp.x") if shutil.which(c) is None]
    if missing:
        pytest.skip(f"{missing} not installed (apt-get install quantum-espresso quantum-espresso-data wannier90)")
    spec = mf.load_material(TINY)
    images = []
    for gap in (3.0, 3.9):                               # compressed: layers repel; stretched: D3 pulls them in
        a = ab_bilayer(gap)
        del a.arrays["layer"]
        a.info["gap"] = gap
        images.append(a)
    write(tmp_path / "two.extxyz", images)
    settings = EngineSettings(workers=2, ranks_per_task=1, retries=1)
    s = compute_frames(tmp_path / "two.extxyz", spec, tmp_path / "ds", scf_only=True, settings=settings,
                       scratch=tmp_path / "scr", progress=None)
    assert len(s.ok) == 2 and not s.failed, s.to_dict()
    assert all(r["n_atoms"] == 4 and r["timings_s"]["scf"] > 0 for r in s.results.values())
    fz_top = {}
    for fid in s.ok:
        frame = tmp_path / "ds" / "frames" / fid
        assert sorted(x.name for x in frame.iterdir()) == ["meta.json", "structure.extxyz"]
        meta = json.loads((frame / "meta.json").read_text())
        assert meta["status"] == "ok" and meta["sampling"]["kind"] == "user-scf"
        assert meta["settings"]["kmesh_scf"] == [6, 6, 1] and meta["settings"]["scf_only"] is True
        notes = meta["sampling"]["notes"]
        assert notes["source_file"] == str((tmp_path / "two.extxyz").resolve())
        at = read(frame / "structure.extxyz")
        assert list(at.arrays["layer"]) == [0, 0, 1, 1]
        f = at.arrays["forces"] if "forces" in at.arrays else at.get_forces()
        assert np.abs(f.sum(axis=0)).max() < 1e-3                             # Newton's third law
        e = at.info["energy"] if "energy" in at.info else at.get_potential_energy()
        assert -160.0 < e / len(at) < -150.0
        fz_top[notes["source_info"]["gap"]] = f[2:, 2].sum()
    assert fz_top[3.0] > 0.05 > 0 > fz_top[3.9]           # repulsion when compressed, attraction when stretched
    # resumable: the same input again runs nothing
    s2 = compute_frames(tmp_path / "two.extxyz", spec, tmp_path / "ds", scf_only=True, settings=settings,
                        scratch=tmp_path / "scr", progress=None)
    assert sorted(s2.skipped) == sorted(s.ok) and not s2.ok


def test_slurm_cluster_file_gives_the_job_script(tmp_path):
    """The documented Slurm file (docs/dft.md, minus the site-specific network interface) is accepted by
    dask-jobqueue and gives a job script with the partition, the prologue and tasks_per_node worker processes."""
    pytest.importorskip("dask_jobqueue")
    from ase_wannierml.dft.engine import load_cluster_config, make_jobqueue_cluster

    doc = (REPO / "docs" / "dft.md").read_text()
    block = doc.split("```yaml\ntype: slurm")[1].split("```")[0]
    text = "type: slurm" + "\n".join(line for line in block.splitlines() if not line.startswith("interface:"))
    path = tmp_path / "slurm.yaml"
    path.write_text(text)
    cfg = load_cluster_config(path)
    assert cfg["processes"] == 4 and cfg["cores"] == 32
    cluster = make_jobqueue_cluster(cfg, tasks_per_node=2)
    try:
        script = cluster.job_script()
    finally:
        cluster.close()
    assert "#SBATCH -p compute" in script and "#SBATCH -A my-project" in script and "--exclusive" in script
    assert "module load quantum-espresso/6.7" in script and "--nworkers 2" in script
    bad = tmp_path / "bad.yaml"
    bad.write_text("queue: x\n")
    with pytest.raises(ValueError, match="needs 'type: slurm'"):
        load_cluster_config(bad)
    with pytest.raises(ValueError, match="unknown cluster type 'kubernetes'"):
        make_jobqueue_cluster({"type": "kubernetes"})


@pytest.mark.dft
@pytest.mark.slow
def test_full_frame_of_a_given_structure(tmp_path):
    """A full frame (SCF + Wannier90) of a user's 4-atom AB bilayer through compute_frames: the frame loads as a
    training frame with its Hamiltonian, and the Wannier bands at K show bilayer graphene's physics (two states at
    E_F from the non-dimer sites, two split by ±γ1 ≈ 0.3-0.5 eV from the dimer sites)."""
    missing = [c for c in ("pw.x", "wannier90.x", "pw2wannier90.x", "pp.x") if shutil.which(c) is None]
    if missing:
        pytest.skip(f"{missing} not installed (apt-get install quantum-espresso quantum-espresso-data wannier90)")
    from ase_wannierml.training.frames import load_frame_dir

    spec = mf.load_material(TINY)                                     # 6x6 meshes: K on both
    a = ab_bilayer(3.35)
    del a.arrays["layer"]
    s = compute_frames(a, spec, tmp_path / "ds", settings=EngineSettings(workers=1, ranks_per_task=1, retries=0),
                       scratch=tmp_path / "scr", progress=None)
    assert len(s.ok) == 1, s.to_dict()
    frame_dir = tmp_path / "ds" / "frames" / s.ok[0]
    assert s.ok[0].startswith("user-") and "-scf-" not in s.ok[0]
    assert {"wannier90_hr.dat.gz", "wannier90_centres.xyz", "meta.json", "structure.extxyz"} <= \
        {p.name for p in frame_dir.iterdir()}
    meta = json.loads((frame_dir / "meta.json").read_text())
    assert meta["sampling"]["kind"] == "user" and meta["settings"]["kmesh_nscf"] == [6, 6, 1]
    frame = load_frame_dir(frame_dir)
    assert frame.tb is not None and frame.tb.norb == 4 and frame.forces.shape == (4, 3)
    e_k = np.sort(frame.tb.eigenvalues([[1 / 3, 1 / 3, 0.0]])[0]) - frame.fermi_level
    assert np.all(np.abs(e_k[1:3]) < 0.1)                             # non-dimer pair at E_F
    assert 0.3 < e_k[3] - e_k[1:3].mean() < 0.5 and 0.3 < e_k[1:3].mean() - e_k[0] < 0.5   # ±γ1
