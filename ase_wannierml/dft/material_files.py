"""Material definitions as data: YAML/JSON files for :class:`~.materials.MaterialSpec` and its ``DFTSettings``.

A user adds a material by writing one file (template: ``wannierml dft --print-material graphene-bilayer``) and
passing its path wherever a material name is accepted (``--material my.yaml``).  The shipped materials are such
files in ``ase_wannierml/dft/material_data/``.  Schema (units: Å, Ry for QE cut-offs/smearing, eV for windows):

    name: my-bilayer                 # used in frame meta and dataset paths
    a: 2.46                          # Å, in-plane lattice constant of the hexagonal primitive cell (k-mesh scale)
    n_layers: 2                      # layers to find by z when a structure has no 'layer' array
    sites: [[C, 0, 0, 0], [C, 1/3, 2/3, 0]]   # optional, sampler only: symbol, f1, f2, z (Å from layer centre)
    gap_range_core: [3.15, 3.65]     # optional, sampler only (Å); also gap_range_wide, gap_reference,
    top_variants: [R]                #   top_variants, references: [[name, variant, [s1, s2], dgap], ...]
    dft:
      pseudo_dir: /usr/share/espresso/pseudo   # absolute, ~, ${ENV} or relative to this file
      pseudopotentials: {C: C.pbe-rrkjus.UPF}
      masses: {C: 12.011}            # amu
      ecutwfc: 30.0                  # Ry
      ecutrho: 240.0                 # Ry or null (QE default 4 ecutwfc)
      smearing: mv
      degauss: 0.02                  # Ry
      vdw: {vdw_corr: dft-d3, dftd3_version: 4}   # extra &system keys
      conv_thr_per_atom: 1.0e-9      # Ry per atom
      mixing_beta: 0.5
      kmesh_scf_1x1: 15              # n of the n x n x 1 SCF mesh of the primitive cell (scaled by the cell)
      kmesh_nscf_1x1: 8              # NSCF (Wannier) mesh of the primitive cell
      projections: {C: [pz]}         # Wannier90 shells per species: s, p, pz, d (global frame)
      n_orbitals: {C: 1}             # optional: derived from projections
      excluded_bands_per_atom: {C: 0}   # optional (0): semicore bands below the Wannier manifold
      extra_bands_per_atom: {C: 5.0}    # optional (0): NSCF bands beyond excluded + Wannier
      frozen_window: [-2.5, 2.5]     # eV from E_F, or null (no disentanglement)
      proj_threshold: 0.5
      dis_num_iter: 400
      check_window: 2.0              # eV: band-error check within E_F ± this
      check_bands_per_atom: 3.0
      vacuum_c: 20.0                 # Å, cell height of sampled structures

Fractions may be written as strings ("1/3").  Unknown keys, missing keys, species defined in one table but not
another, unknown shells and non-positive cut-offs are errors naming the key and the file.
"""
from __future__ import annotations

import json
import os
from fractions import Fraction
from pathlib import Path
from typing import Any, Sequence

import yaml

DATA_DIR = Path(__file__).resolve().parent / "material_data"
SHELL_SIZE = {"s": 1, "p": 3, "pz": 1, "d": 5}
_SPEC_REQUIRED = ("name", "a", "dft")
_SPEC_OPTIONAL = ("n_layers", "sites", "gap_range_core", "gap_range_wide", "gap_reference", "top_variants",
                  "references", "description")
_DFT_REQUIRED = ("pseudo_dir", "pseudopotentials", "masses", "ecutwfc", "smearing", "degauss",
                 "conv_thr_per_atom", "mixing_beta", "kmesh_scf_1x1", "kmesh_nscf_1x1", "projections")
_DFT_OPTIONAL = {"ecutrho": None, "vdw": {}, "n_orbitals": None, "excluded_bands_per_atom": None,
                 "extra_bands_per_atom": None, "frozen_window": None, "proj_threshold": 0.5, "dis_num_iter": 400,
                 "check_window": 2.0, "check_bands_per_atom": 3.0, "vacuum_c": 20.0}


class MaterialFileError(ValueError):
    """A material file that cannot be used; the message names the file and the key."""


def _num(x: Any, where: str) -> float:
    if isinstance(x, bool):
        raise MaterialFileError(f"{where}: expected a number, got {x!r}")
    if isinstance(x, (int, float)):
        return float(x)
    if isinstance(x, str):
        try:
            return float(Fraction(x.strip()))
        except (ValueError, ZeroDivisionError):
            pass
    raise MaterialFileError(f"{where}: expected a number (or a fraction like '1/3'), got {x!r}")


def _pair(x: Any, where: str) -> tuple[float, float] | None:
    if x is None:
        return None
    if not isinstance(x, (list, tuple)) or len(x) != 2:
        raise MaterialFileError(f"{where}: expected [low, high], got {x!r}")
    lo, hi = _num(x[0], where), _num(x[1], where)
    if not lo < hi:
        raise MaterialFileError(f"{where}: low {lo} must be below high {hi}")
    return (lo, hi)


def _species_table(d: Any, where: str, kind: type) -> dict:
    if not isinstance(d, dict) or not d:
        raise MaterialFileError(f"{where}: expected a mapping species -> value, got {d!r}")
    return {str(k): (_num(v, f"{where}.{k}") if kind is float else v) for k, v in d.items()}


def _check_keys(d: dict, required: tuple, optional: tuple, where: str) -> None:
    """MaterialFileError naming unknown keys (with the allowed ones) or missing required keys of mapping ``d``."""
    unknown = sorted(set(d) - set(required) - set(optional))
    if unknown:
        raise MaterialFileError(f"{where}: unknown key(s) {unknown}; allowed: {sorted(required + optional)}")
    missing = [k for k in required if k not in d]
    if missing:
        raise MaterialFileError(f"{where}: missing key(s) {missing}")


def material_from_dict(d: dict, source: str = "<dict>", base_dir: Path | None = None):
    """Build and validate a ``MaterialSpec`` from the file's mapping (see the module docstring)."""
    from .materials import MaterialSpec, Site

    if not isinstance(d, dict):
        raise MaterialFileError(f"{source}: a material file must be a mapping, got {type(d).__name__}")
    _check_keys(d, tuple(_SPEC_REQUIRED), tuple(_SPEC_OPTIONAL), source)
    name = str(d["name"])
    if not name or "/" in name or name.strip() != name:
        raise MaterialFileError(f"{source}: name {name!r} must be a non-empty word without '/'")
    a = _num(d["a"], f"{source}: a")
    if a <= 0:
        raise MaterialFileError(f"{source}: a = {a} Å must be positive")
    n_layers = int(d.get("n_layers", 2))
    if n_layers < 1:
        raise MaterialFileError(f"{source}: n_layers must be >= 1")
    sites = []
    for i, s in enumerate(d.get("sites") or []):
        if not isinstance(s, (list, tuple)) or len(s) != 4:
            raise MaterialFileError(f"{source}: sites[{i}] must be [symbol, f1, f2, z], got {s!r}")
        sites.append(Site(str(s[0]), *(_num(x, f"{source}: sites[{i}]") for x in s[1:])))
    refs = []
    for i, r in enumerate(d.get("references") or []):
        if not isinstance(r, (list, tuple)) or len(r) != 4 or len(r[2]) != 2:
            raise MaterialFileError(f"{source}: references[{i}] must be [name, variant, [s1, s2], dgap], got {r!r}")
        refs.append((str(r[0]), str(r[1]), tuple(_num(x, f"{source}: references[{i}]") for x in r[2]),
                     _num(r[3], f"{source}: references[{i}]")))
    variants = tuple(str(v) for v in (d.get("top_variants") or ("R",)))
    bad = [v for v in variants if v not in ("R", "H")]
    if bad:
        raise MaterialFileError(f"{source}: top_variants {bad}: use R (parallel) or H (rotated 180°)")
    dft = _dft_from_dict(d["dft"], f"{source}: dft", base_dir)
    spec = MaterialSpec(
        name=name, a=a, sites=tuple(sites),
        gap_range_core=_pair(d.get("gap_range_core"), f"{source}: gap_range_core"),
        gap_range_wide=_pair(d.get("gap_range_wide"), f"{source}: gap_range_wide"),
        gap_reference=None if d.get("gap_reference") is None else _num(d["gap_reference"], f"{source}: gap_reference"),
        top_variants=variants, references=tuple(refs), dft=dft, n_layers=n_layers)
    site_species = sorted({s.symbol for s in sites} - set(dft.pseudopotentials))
    if site_species:
        raise MaterialFileError(f"{source}: sites use {site_species}, which dft.pseudopotentials does not define")
    return spec


def _dft_from_dict(d: Any, where: str, base_dir: Path | None):
    from .materials import DFTSettings

    if not isinstance(d, dict):
        raise MaterialFileError(f"{where}: expected a mapping of DFT settings")
    _check_keys(d, tuple(_DFT_REQUIRED), tuple(_DFT_OPTIONAL), where)
    v = {**_DFT_OPTIONAL, **d}
    pseudos = {str(k): str(x) for k, x in _species_table(v["pseudopotentials"], f"{where}.pseudopotentials",
                                                          str).items()}
    species = sorted(pseudos)
    masses = _species_table(v["masses"], f"{where}.masses", float)
    proj_in = _species_table(v["projections"], f"{where}.projections", str)
    projections = {}
    for s, shells in proj_in.items():
        shells = [shells] if isinstance(shells, str) else list(shells)
        bad = [x for x in shells if x not in SHELL_SIZE]
        if bad or not shells:
            raise MaterialFileError(f"{where}.projections.{s}: shells {bad or shells} unknown; "
                                    f"use {sorted(SHELL_SIZE)}")
        projections[s] = tuple(str(x) for x in shells)
    derived = {s: sum(SHELL_SIZE[x] for x in sh) for s, sh in projections.items()}
    n_orb = derived if v["n_orbitals"] is None else {k: int(x) for k, x in v["n_orbitals"].items()}
    for s in n_orb:
        if s in derived and n_orb[s] != derived[s]:
            raise MaterialFileError(f"{where}.n_orbitals.{s} = {n_orb[s]} but projections {list(projections[s])} "
                                    f"give {derived[s]} orbitals")
    excl = {s: 0 for s in species} if v["excluded_bands_per_atom"] is None else \
        {k: int(x) for k, x in v["excluded_bands_per_atom"].items()}
    extra = {s: 0.0 for s in species} if v["extra_bands_per_atom"] is None else \
        _species_table(v["extra_bands_per_atom"], f"{where}.extra_bands_per_atom", float)
    for table, tname in ((masses, "masses"), (projections, "projections"), (n_orb, "n_orbitals"),
                         (excl, "excluded_bands_per_atom"), (extra, "extra_bands_per_atom")):
        lacking = [s for s in species if s not in table]
        surplus = [s for s in table if s not in pseudos]
        if lacking:
            raise MaterialFileError(f"{where}.{tname}: no entry for {lacking} (every species with a "
                                    "pseudopotential needs one)")
        if surplus:
            raise MaterialFileError(f"{where}.{tname}: {surplus} have no pseudopotential in {where}.pseudopotentials")
    for key in ("ecutwfc", "degauss", "conv_thr_per_atom", "mixing_beta", "check_window", "vacuum_c"):
        if _num(v[key], f"{where}.{key}") <= 0:
            raise MaterialFileError(f"{where}.{key} must be positive, got {v[key]}")
    for key in ("kmesh_scf_1x1", "kmesh_nscf_1x1"):
        if int(v[key]) < 1 or int(v[key]) != v[key]:
            raise MaterialFileError(f"{where}.{key} must be a positive integer, got {v[key]}")
    ecutrho = None if v["ecutrho"] is None else _num(v["ecutrho"], f"{where}.ecutrho")
    if ecutrho is not None and ecutrho < _num(v["ecutwfc"], "ecutwfc"):
        raise MaterialFileError(f"{where}.ecutrho = {ecutrho} Ry is below ecutwfc = {v['ecutwfc']} Ry")
    if not isinstance(v["vdw"], dict):
        raise MaterialFileError(f"{where}.vdw must be a mapping of extra &system keys (or {{}})")
    return DFTSettings(
        pseudo_dir=_resolve_dir(str(v["pseudo_dir"]), base_dir), pseudopotentials=pseudos, masses=masses,
        ecutwfc=_num(v["ecutwfc"], "ecutwfc"), ecutrho=ecutrho, smearing=str(v["smearing"]),
        degauss=_num(v["degauss"], "degauss"), vdw=dict(v["vdw"]),
        conv_thr_per_atom=_num(v["conv_thr_per_atom"], "conv_thr_per_atom"),
        mixing_beta=_num(v["mixing_beta"], "mixing_beta"), kmesh_scf_1x1=int(v["kmesh_scf_1x1"]),
        kmesh_nscf_1x1=int(v["kmesh_nscf_1x1"]), projections=projections, n_orbitals=n_orb,
        excluded_bands_per_atom=excl, extra_bands_per_atom=extra,
        frozen_window=_pair(v["frozen_window"], f"{where}.frozen_window"),
        proj_threshold=_num(v["proj_threshold"], "proj_threshold"), dis_num_iter=int(v["dis_num_iter"]),
        check_window=_num(v["check_window"], "check_window"),
        check_bands_per_atom=_num(v["check_bands_per_atom"], "check_bands_per_atom"),
        vacuum_c=_num(v["vacuum_c"], "vacuum_c"))


def _resolve_dir(path: str, base_dir: Path | None) -> str:
    """``${VAR}`` (``WANNIERML_SHARED`` defaults to the repository's ../shared), ``~``, relative to the file."""
    from .materials import SHARED

    env = dict(os.environ)
    env.setdefault("WANNIERML_SHARED", str(SHARED))
    expanded = path
    for key, val in env.items():
        expanded = expanded.replace("${" + key + "}", val)
    expanded = os.path.expanduser(expanded)
    if "${" in expanded:
        raise MaterialFileError(f"pseudo_dir {path!r}: environment variable not set")
    p = Path(expanded)
    if not p.is_absolute():
        p = (base_dir or Path.cwd()) / p
    return str(p)


def load_material(path: str | Path):
    """Read a material YAML (``.yaml``/``.yml``) or JSON file → validated ``MaterialSpec``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"material file {path} does not exist")
    text = path.read_text()
    try:
        d = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise MaterialFileError(f"{path}: not valid {'JSON' if path.suffix == '.json' else 'YAML'}: {exc}") from None
    return material_from_dict(d, str(path), path.resolve().parent)


def material_to_dict(spec) -> dict:
    """The file mapping of a ``MaterialSpec`` (inverse of :func:`material_from_dict`)."""
    d = spec.to_dict()
    d["sites"] = [[s["symbol"], s["f1"], s["f2"], s["z"]] for s in d["sites"]]
    d["references"] = [[r[0], r[1], list(r[2]), r[3]] for r in d["references"]]
    for k in ("gap_range_core", "gap_range_wide", "top_variants"):
        d[k] = None if d[k] is None else list(d[k])
    dft = d["dft"]
    dft["projections"] = {k: list(v) for k, v in dft["projections"].items()}
    dft["frozen_window"] = None if dft["frozen_window"] is None else list(dft["frozen_window"])
    order = ["name", "a", "n_layers", "sites", "gap_range_core", "gap_range_wide", "gap_reference",
             "top_variants", "references", "dft"]
    return {k: d[k] for k in order}


def material_to_yaml(spec) -> str:
    """YAML text of a material (a template for a new one)."""
    return yaml.safe_dump(material_to_dict(spec), sort_keys=False, default_flow_style=None, width=110)


def shipped_material_files() -> dict[str, Path]:
    """{name: path} of the material files shipped in the package."""
    return {p.stem: p for p in sorted(DATA_DIR.glob("*.yaml"))}


def resolve_material(material):
    """A ``MaterialSpec`` from a spec, a shipped name or a file path."""
    from .materials import MATERIALS, MaterialSpec

    if isinstance(material, MaterialSpec):
        return material
    text = str(material)
    if text in MATERIALS:
        return MATERIALS[text]
    p = Path(text)
    if p.suffix in (".yaml", ".yml", ".json") or p.is_file():
        return load_material(p)
    raise ValueError(f"material {text!r} is neither a shipped material {sorted(MATERIALS)} nor a .yaml/.json file")


def species_problems(spec, species: Sequence[str]) -> list[str]:
    """Reasons the material cannot treat these species (empty list: fine)."""
    dft = spec.dft
    out = []
    for s in species:
        for table in ("pseudopotentials", "masses", "projections", "n_orbitals", "excluded_bands_per_atom",
                      "extra_bands_per_atom"):
            if s not in getattr(dft, table):
                out.append(f"species {s} has no entry in dft.{table}")
    return out


def check_pseudopotentials(spec) -> None:
    """Every pseudopotential file must exist in ``pseudo_dir``; raises ``FileNotFoundError`` naming them."""
    d = Path(spec.dft.pseudo_dir)
    missing = [str(d / f) for f in spec.dft.pseudopotentials.values() if not (d / f).is_file()]
    if missing:
        raise FileNotFoundError(f"material {spec.name!r}: pseudopotential file(s) not found: {missing} "
                                f"(dft.pseudo_dir = {spec.dft.pseudo_dir})")
