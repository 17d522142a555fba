"""Typed training configuration and its plain YAML form.

A config file has five sections; every key is optional except ``data.frames`` (see
``examples/train_config.yaml`` for a documented example). Unknown keys are errors, so a typo never
silently falls back to a default.

Example::

    >>> cfg = TrainConfig.from_dict({"data": {"frames": ["datasets/graphene-bilayer/frames"]}})
    >>> cfg.optim.lr
    0.001
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import yaml

#: Hamiltonian element categories of the model's pair list (index = category id in the graph).
HAM_CATEGORIES: tuple[str, ...] = ("onsite", "intra_near", "intra_far", "inter")


#: Zeros of the Hamiltonian targets (``DataConfig.energy_zero``).
ENERGY_ZEROS = ("dft_fermi", "neutrality", "vacuum")


@dataclass
class DataConfig:
    """Where the frames are and how they become training examples.

    frames: frame directories, or folders whose sub-directories are frames (``<id>/structure.extxyz``).
    cache: compact cache file (graphs + targets); default ``<output>/dataset_cache.pt``.
    val_fraction / test_fraction: split of frame ids. ``split: "random"``: a seeded permutation (``split_seed``;
        changes when frames are added). ``split: "hash"``: each frame id goes to test / val / train by a hash of
        (``split_seed``, id) alone, so a frame's role never changes as the data set grows (use it for held-out sets).
    test_frames / val_frames / train_frames: frame ids always put in that split (before the fraction rule; ids not
        present are ignored), e.g. to hold out one frame of each kind or to always train on reference structures.
    test_patterns: frame-id globs (``fnmatch``) that are always test frames, like frames whose ``meta.json`` says
        ``sampling.notes.split == "test"`` (held-out sets chosen before training, e.g. the MD snapshots
        ``md2x2-T300-test-s7-001``); these override ``train_frames`` / ``val_frames`` and a resumed checkpoint.
    bootstrap_seed: if set, the training frames are a bootstrap resample (same count, drawn with replacement,
        seeded) of the training split; ``train_frames`` stay in at least once (committee members: different data).
    repeat: frame-id glob (``fnmatch``) → n ≥ 1: each matching training frame is visited n times per epoch (after
        the split and any bootstrap), so a few large frames (e.g. 16-atom MD snapshots next to 60 4-atom cells)
        weigh in; never applied to validation or test frames.
    max_centre_distance: Å; a Wannier centre farther than this from every atom rejects the frame.
    gauge_tolerance: eV; largest allowed violation of the onsite-block symmetry check (see ``assign.py``).
    band_kgrid: n; reference bands on a Γ-centred n×n grid over the periodic axes (3n contains K).
    energy_zero: zero of the Hamiltonian targets and reference bands: ``"dft_fermi"`` (the frame's DFT Fermi level)
        or ``"neutrality"`` (the T = 0 charge-neutrality level of the frame's Wannier bands on a
        ``neutrality_kgrid``² grid, with ``model.wannier_electrons``; see ``targets.py`` for why) or ``"vacuum"``
        (the frame's electrostatic vacuum level, ``meta.json`` ``vacuum_level_eV`` from ``dft.vacuum``: keeps the
        level shifts between differently strained layers that a per-frame neutrality level removes).
    on_error: ``"raise"`` stops at the first bad frame; ``"skip"`` leaves it out and records why.
    forces_only: frame-id globs (``fnmatch``) whose energy and stress labels are dropped (forces, and a Hamiltonian
        if any, stay): frames computed with other DFT settings (e.g. a higher ``ecutrho``, docs/accuracy.md session
        16) whose total energies carry a constant offset against the rest of the data.
    scf_of_rejected: keep the energy, forces and stress of frames whose ``meta.json`` says ``status: rejected``
        because the Wannier step failed the quality gate (band error, centre distance); their Hamiltonian is
        ignored. Frames rejected with an error (``reason: "error: ..."``) stay out. Off by default.
    """

    frames: list[str] = field(default_factory=list)
    cache: str | None = None
    val_fraction: float = 0.1
    test_fraction: float = 0.0
    split_seed: int = 0
    split: str = "random"
    test_frames: list[str] = field(default_factory=list)
    val_frames: list[str] = field(default_factory=list)
    train_frames: list[str] = field(default_factory=list)
    test_patterns: list[str] = field(default_factory=lambda: ["*-test-*"])
    bootstrap_seed: int | None = None
    repeat: dict[str, int] = field(default_factory=dict)
    max_centre_distance: float = 0.7
    gauge_tolerance: float = 0.05
    band_kgrid: int = 6
    on_error: str = "raise"
    energy_zero: str = "dft_fermi"
    neutrality_kgrid: int = 48
    forces_only: list[str] = field(default_factory=list)
    scf_of_rejected: bool = False


@dataclass
class LossConfig:
    """Weights of the joint loss (each term is a mean square divided by its own scale², see ``loss.py``).

    layer_forces: weight of the mean-force-per-layer term (0: off; see ``loss.layer_mean_force_errors``): the
        rigid-layer force per atom, whose error sets the interlayer binding curve and sliding barrier in MD.
    layer_forces_scale: eV/Å, the mean-force-per-layer error that counts as 1.
    hamiltonian_categories: extra weight per category (onsite, intra_near, intra_far, inter).
    ham_distance_bin: Å; width of the distance shells of the Hamiltonian scales (0: one scale per category).
    ham_bin_power: p in σ = σ_category^(1−p) · σ_shell^p (see ``loss.py``).
    band_window: eV; band eigenvalues whose *target* lies within E_F ± band_window enter the band loss.
    band_kpoints: random k-points per frame and step for the band loss (0 disables it).
    band_scale: eV; the band error that counts as 1.
    bands_start: optimizer step from which the band term is on. Bands alone cannot tell t from −t (a bipartite
        lattice's spectrum is symmetric about E_F), so let the element loss fix the signs first.
    hk: weight of the Bloch-Hamiltonian term: the error of the predicted H(k) = Σ_R H(R) e^{2πik·R} (pair list,
        known elements only) at every k-point of the frame's reference grid, as a complex matrix, |ΔH(k)|² / hk_scale².
        Unlike per-element errors, small systematic errors of the many hoppings that add up at one k (e.g. the
        Dirac point at K, set by the sublattice-diagonal sums) are seen as one large error. Linear in H (no
        eigenvector degeneracies), so it can be on from the start.
    hk_scale: eV, the H(k) error that counts as 1.
    hk_start: optimizer step from which the H(k) term is on (early H(k) errors of the untrained model are huge).
    hk_window_weight: k-points whose reference bands reach E_F ± band_window get weight 1, the others this weight.
    onsite_centred: weight of the frame-centred onsite term (0: off; ``loss.onsite_centred_errors``): the error of
        each onsite diagonal element minus its structure's mean, at the onsite scale. It weighs the pattern of
        levels inside a frame (curvature of thermal snapshots, session 16) apart from frame-wide offsets.
    scale_floor: minimum per-term scale (eV, eV/Å, eV/Å³ resp. for H, forces, stress), so an all-zero target
        category does not blow up its weight.
    """

    energy: float = 1.0
    forces: float = 1.0
    layer_forces: float = 0.0
    layer_forces_scale: float = 0.01
    stress: float = 0.1
    hamiltonian: float = 1.0
    bands: float = 0.0
    hamiltonian_categories: list[float] = field(default_factory=lambda: [1.0, 1.0, 1.0, 1.0])
    ham_distance_bin: float = 0.5
    ham_bin_power: float = 0.5
    band_window: float = 1.0
    band_kpoints: int = 2
    band_scale: float = 0.05
    bands_start: int = 0
    hk: float = 0.0
    hk_scale: float = 0.02
    hk_start: int = 0
    hk_window_weight: float = 0.2
    onsite_centred: float = 0.0
    scale_floor: float = 1e-3


@dataclass
class OptimConfig:
    """AdamW, linear warm-up then cosine decay to ``lr * min_lr_ratio``; EMA of weights; gradient clipping."""

    lr: float = 1e-3
    weight_decay: float = 1e-6
    batch_size: int = 4
    max_steps: int = 1000
    warmup_steps: int = 20
    min_lr_ratio: float = 0.05
    ema_decay: float = 0.99
    grad_clip: float = 10.0


@dataclass
class RunConfig:
    """Book-keeping: output folder, seed, checkpoint/validation cadence, early stopping, dtype.

    patience: stop after this many validations without improvement of the validation loss (0: never).
    save_dtype: dtype of the written model files (``<output>/model.pt``); training runs in ``dtype``.
    init_from: model file (or a shipped model's name, e.g. ``mos2-bilayer``) whose weights *and* model settings (e0s, scales, onsite reference, architecture) start
        a new run (warm start, e.g. continue on a grown data set; ``--resume`` needs unchanged training frames).
    init_noise: with ``init_from``, multiply every trainable weight by (1 + init_noise · N(0, 1)) (seeded by
        ``seed``) before training: committee members start apart (their spread then grows where data are missing).
    freeze: parameter-name prefixes kept fixed (e.g. ``hamiltonian.near.nets``), so a committee member stores only
        the tensors it trained.
    save_model: which EMA model ``<output>/model.pt`` holds: ``"best"`` (lowest validation loss; the default) or
        ``"last"`` (the end of training). Use ``"last"`` when the validation split is too small to choose by, e.g. a
        warm start whose few validation frames cannot see the new data (a single-frame validation set once kept the
        step-250 model of a 2000-step MoS2 run).
    """

    output: str = "runs/train"
    seed: int = 0
    checkpoint_every: int = 100
    eval_every: int = 50
    log_every: int = 10
    patience: int = 10
    dtype: str = "float64"
    progress: bool = True
    keep_checkpoints: int = 2
    save_dtype: str = "float32"
    init_from: str = ""
    init_noise: float = 0.0
    freeze: list[str] = field(default_factory=list)
    save_model: str = "best"


@dataclass
class TrainConfig:
    """The whole training configuration. ``model`` is passed as keyword arguments to ``build_model``."""

    data: DataConfig = field(default_factory=DataConfig)
    model: dict[str, Any] = field(default_factory=dict)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    run: RunConfig = field(default_factory=RunConfig)

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any], base_dir: str | Path | None = None) -> "TrainConfig":
        """Build from a nested mapping; relative paths are taken relative to ``base_dir`` (if given)."""
        raw = dict(raw or {})
        _check_keys("config", raw, {"data", "model", "loss", "optim", "run"})
        cfg = cls(
            data=_section(DataConfig, raw.get("data"), "data"),
            model=dict(raw.get("model") or {}),
            loss=_section(LossConfig, raw.get("loss"), "loss"),
            optim=_section(OptimConfig, raw.get("optim"), "optim"),
            run=_section(RunConfig, raw.get("run"), "run"),
        )
        if base_dir is not None:
            cfg._resolve_paths(Path(base_dir))
        if cfg.run.init_from and _is_shipped_name(cfg.run.init_from, Path(base_dir or ".")):
            from ase_wannierml.model.io import resolve_model_path

            cfg.run.init_from = str(resolve_model_path(cfg.run.init_from))
        cfg.validate()
        return cfg

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (YAML/JSON-serialisable)."""
        return dataclasses.asdict(self)

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first inconsistent setting."""
        if isinstance(self.data.frames, str):
            self.data.frames = [self.data.frames]
        if not self.data.frames:
            raise ValueError("config: data.frames is empty; give frame directories or folders of frames")
        if self.data.on_error not in ("raise", "skip"):
            raise ValueError(f"config: data.on_error must be 'raise' or 'skip', got {self.data.on_error!r}")
        if not 0 <= self.data.val_fraction + self.data.test_fraction < 1:
            raise ValueError("config: data.val_fraction + data.test_fraction must lie in [0, 1)")
        if len(self.loss.hamiltonian_categories) != len(HAM_CATEGORIES):
            raise ValueError(f"config: loss.hamiltonian_categories needs {len(HAM_CATEGORIES)} weights "
                             f"({', '.join(HAM_CATEGORIES)}), got {self.loss.hamiltonian_categories}")
        if self.run.save_model not in ("best", "last"):
            raise ValueError(f"config: run.save_model must be 'best' or 'last', got {self.run.save_model!r}")
        for name in ("dtype", "save_dtype"):
            if getattr(self.run, name) not in ("float32", "float64"):
                raise ValueError(f"config: run.{name} must be 'float32' or 'float64', got {getattr(self.run, name)!r}")
        if self.data.energy_zero not in ENERGY_ZEROS:
            raise ValueError(f"config: data.energy_zero must be one of {', '.join(map(repr, ENERGY_ZEROS))}, "
                             f"got {self.data.energy_zero!r}")
        if self.data.split not in ("random", "hash"):
            raise ValueError(f"config: data.split must be 'random' or 'hash', got {self.data.split!r}")
        for name in ("batch_size", "max_steps"):
            if getattr(self.optim, name) < 1:
                raise ValueError(f"config: optim.{name} must be >= 1")
        for name in ("checkpoint_every", "eval_every", "log_every"):
            if getattr(self.run, name) < 1:
                raise ValueError(f"config: run.{name} must be >= 1")
        for pattern, n in (self.data.repeat or {}).items():
            if isinstance(n, bool) or not isinstance(n, int) or n < 1:
                raise ValueError(f"config: data.repeat[{pattern!r}] must be an integer >= 1, got {n!r}")
        if self.data.band_kgrid < 1:
            raise ValueError("config: data.band_kgrid must be >= 1")
        if not isinstance(self.data.forces_only, (list, tuple)) or \
                not all(isinstance(p, str) and p for p in self.data.forces_only):
            raise ValueError("config: data.forces_only must be a list of frame-id patterns (e.g. [rigid480-*]), "
                             f"got {self.data.forces_only!r}")
        if not self.loss.onsite_centred >= 0:
            raise ValueError(f"config: loss.onsite_centred must be >= 0, got {self.loss.onsite_centred!r}")
        if not self.loss.layer_forces >= 0:
            raise ValueError(f"config: loss.layer_forces must be >= 0, got {self.loss.layer_forces!r}")
        if not self.loss.layer_forces_scale > 0:
            raise ValueError(f"config: loss.layer_forces_scale must be > 0 (eV/Å), got {self.loss.layer_forces_scale!r}")

    def cache_path(self) -> Path:
        """The dataset cache file (``data.cache`` or ``<run.output>/dataset_cache.pt``)."""
        return Path(self.data.cache) if self.data.cache else Path(self.run.output) / "dataset_cache.pt"

    def _resolve_paths(self, base: Path) -> None:
        def fix(p: str) -> str:
            return str(p) if Path(p).is_absolute() else str(base / p)

        self.data.frames = [fix(p) for p in ([self.data.frames] if isinstance(self.data.frames, str)
                                             else self.data.frames)]
        if self.data.cache:
            self.data.cache = fix(self.data.cache)
        self.run.output = fix(self.run.output)
        if self.run.init_from and not _is_shipped_name(self.run.init_from, base):
            self.run.init_from = fix(self.run.init_from)


def _is_shipped_name(init_from: str, base: Path) -> bool:
    """``init_from`` names a shipped model (e.g. ``mos2-bilayer``) and no file of that name exists (a file wins)."""
    from ase_wannierml.model.io import available_models

    return init_from in available_models() and not (base / init_from).exists()


def load_config(path: str | Path) -> TrainConfig:
    """Read a YAML config; relative paths in it are relative to the current directory."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"training config {path} does not exist")
    with open(path) as fh:
        raw = yaml.safe_load(fh) or {}
    if not isinstance(raw, dict):
        raise ValueError(f"training config {path}: top level must be a mapping, got {type(raw).__name__}")
    return TrainConfig.from_dict(raw)


def _check_keys(where: str, raw: Mapping[str, Any], allowed: set[str]) -> None:
    unknown = sorted(set(raw) - allowed)
    if unknown:
        raise ValueError(f"{where}: unknown keys {unknown}; allowed: {sorted(allowed)}")


def _to_float(value: int | str, where: str) -> float:
    try:
        return float(value)
    except ValueError:
        raise ValueError(f"config: {where} must be a number, got {value!r}") from None


def _section(cls: type, raw: Mapping[str, Any] | None, name: str) -> Any:
    raw = dict(raw or {})
    fields = {f.name: f for f in dataclasses.fields(cls)}
    _check_keys(f"config section '{name}'", raw, set(fields))
    out = cls()
    for key, value in raw.items():
        default = getattr(out, key)
        if isinstance(default, float) and not isinstance(value, bool) and isinstance(value, (int, str)):
            value = _to_float(value, f"{name}.{key}")  # YAML reads "1e-3" (no dot) as a string
        if isinstance(default, bool) != isinstance(value, bool) or (
                default is not None and not isinstance(default, list) and not isinstance(value, type(default))):
            raise ValueError(f"config: {name}.{key} must be {type(default).__name__}, got {value!r}")
        setattr(out, key, value)
    return out
