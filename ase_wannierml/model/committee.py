"""Committee of K models on one graph: means, standard deviations and per-member outputs (uncertainty).

A :class:`CommitteeModel` holds K :class:`WannierMLModel` members with the same graph-relevant settings (species,
orbitals, cut-offs, energy zero, dispersion). One call builds nothing twice: the graph (``atoms_to_graph``, with its
long Hamiltonian pair list), the edge geometry (vectors, spherical harmonics, radial basis) and every leading
backbone stage whose weights all members share (detected by comparing tensors: e.g. members fine-tuned with the
embedding frozen) are computed once; the rest of each backbone and its heads run per member. Forces need one
backward pass per member (measured: one batched ``is_grads_batched`` pass is 2.3× slower than K plain passes on
CPU), so the force cost is close to K× the differing part; ``benchmarks/committee_cost.py`` measures it.

Outputs of :meth:`CommitteeModel.forward` carry a leading member axis::

    out["energy"] (K, n_structures) eV; out["forces"] (K, n_atoms, 3) eV/Å; out["stress"] (K, n_structures, 3, 3)
    eV/Å³; out["ham_blocks"] (K, n_pairs, max_orb, max_orb) eV; out["ham_mask"] (n_pairs, max_orb, max_orb) bool

Committee files (``save_committee`` / ``load_committee``) are ``torch.load(weights_only=True)`` dicts::

    {"format": "ase_wannierml-committee", "format_version": 1, "base": <pretrained name or None>,
     "config": ModelConfig.to_dict(), "dtype": "float32", "metadata": {...},
     "base_state_dict": {...} (only if base is None),
     "members": [{"state_dict": {name: Tensor that differs from the base}, "metadata": {...}}, ...]}

so a member fine-tuned from the shipped model stores only the tensors it changed (float32).

Example::

    >>> committee = load_model("graphene-bilayer", committee=True)          # doctest: +SKIP
    >>> calc = WannierMLCalculator(committee)                                # doctest: +SKIP
    >>> atoms.calc = calc; atoms.get_forces(); calc.results["forces_std"]   # doctest: +SKIP
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, Mapping, Optional, Sequence

import numpy as np
import torch
from torch import nn

from . import keys as K
from .backbone import EDGE_CHUNK
from .config import ModelConfig
from .graph import atoms_to_graph
from .model import WannierMLModel, cell_volume, differentiable_geometry
from .utils import scatter_sum

if TYPE_CHECKING:  # pragma: no cover
    from ase import Atoms

    from ase_wannierml.tb.tightbinding import TightBinding

COMMITTEE_FORMAT = "ase_wannierml-committee"
COMMITTEE_VERSION = 1
#: ModelConfig fields that must agree between members (graph, orbital table, energy zero, dispersion, cut-offs).
SHARED_FIELDS = ("species", "orbitals", "cutoff", "ham_cutoff_near", "ham_cutoff_far", "ham_cutoff_inter",
                 "min_distance", "layer_bond_factor", "wannier_electrons", "dispersion", "fermi_level",
                 "sh_lmax", "num_radial", "envelope_p")


class CommitteeModel(nn.Module):
    """K models evaluated on one shared graph; ``members`` (``nn.ModuleList``) of :class:`WannierMLModel`.

    ``config`` is the first member's (the shared fields in ``SHARED_FIELDS`` are checked equal, ValueError naming
    the field otherwise). ``metadata``: JSON-able committee information (how the members were made, calibration).
    """

    def __init__(self, members: Sequence[WannierMLModel], metadata: Optional[Mapping[str, Any]] = None) -> None:
        super().__init__()
        members = list(members)
        if len(members) < 2:
            raise ValueError(f"a committee needs at least 2 members, got {len(members)}")
        first = members[0].config
        for k, m in enumerate(members[1:], start=1):
            for name in SHARED_FIELDS:
                a, b = getattr(first, name), getattr(m.config, name)
                if _plain(a) != _plain(b):
                    raise ValueError(f"committee member {k} has {name}={b!r}, member 0 has {a!r}; members must share "
                                     f"{', '.join(SHARED_FIELDS)}")
        self.members = nn.ModuleList(members)
        self.metadata: dict[str, Any] = dict(metadata or {})
        self._shared_depth: Optional[int] = None

    # ------------------------------------------------------------------ properties
    @property
    def config(self) -> ModelConfig:
        """The first member's ``ModelConfig`` (graph settings are shared by all members)."""
        return self.members[0].config

    @property
    def size(self) -> int:
        """Number of members K."""
        return len(self.members)

    dtype = WannierMLModel.dtype      # floating dtype / device of the parameters (same definition as one model)
    device = WannierMLModel.device

    def train(self, mode: bool = True) -> "CommitteeModel":
        self._shared_depth = None
        return super().train(mode)

    def _apply(self, fn, *args, **kwargs):  # .to(dtype/device): re-detect shared stages
        self._shared_depth = None
        return super()._apply(fn, *args, **kwargs)

    def shared_depth(self) -> int:
        """Number of leading backbone stages identical in every member: 0 none; 1 radial basis; 2 + embedding;
        2 + n: + the first n interactions (these are computed once per call)."""
        if self._shared_depth is None:
            stages = [lambda b: [b.radial_basis], lambda b: [b.embedding]]
            n_layers = min(len(m.backbone.layers) for m in self.members)
            stages += [lambda b, i=i: [b.layers[i]] for i in range(n_layers)]
            depth = 0
            for stage in stages:
                ref = [t for mod in stage(self.members[0].backbone) for t in _tensors(mod)]
                if not all(_same(ref, [t for mod in stage(m.backbone) for t in _tensors(mod)])
                           for m in self.members[1:]):
                    break
                depth += 1
            self._shared_depth = depth
        return self._shared_depth

    # ------------------------------------------------------------------ evaluation
    def forward(self, graph: Dict[str, torch.Tensor], compute_forces: bool = True, compute_stress: bool = False,
                compute_hamiltonian: bool = False, ham_chunk_size: int = 65536,
                edge_chunk: int = EDGE_CHUNK) -> Dict[str, torch.Tensor]:
        """Per-member outputs with a leading axis K (see the module docstring); same arguments as
        :meth:`WannierMLModel.forward`. Eval mode only (committees are for inference)."""
        if self.training:
            raise RuntimeError("CommitteeModel is for inference: call .eval() (train members one by one)")
        if any(m.interlayer_energy is not None for m in self.members):
            return self._forward_each(graph, compute_forces, compute_stress, compute_hamiltonian, ham_chunk_size,
                                      edge_chunk)
        batch, n_struct = graph[K.BATCH], graph[K.NUM_ATOMS].shape[0]
        need_grad = compute_forces or compute_stress
        depth = self.shared_depth()
        members = list(self.members)
        with torch.enable_grad() if need_grad else contextlib.nullcontext():
            pos_leaf, positions, cell, strain = differentiable_geometry(graph, compute_forces, compute_stress, batch)
            edge_index, shift = graph[K.EDGE_INDEX], graph[K.EDGE_SHIFT]
            i, j = edge_index[0], edge_index[1]
            vectors = positions[j] - positions[i] + (shift.to(positions.dtype).unsqueeze(-1) * cell[batch[i]]).sum(1)
            species = graph[K.SPECIES]
            onehot = nn.functional.one_hot(species, len(self.config.species)).to(positions.dtype)
            edge_inter = graph[K.LAYER][i] != graph[K.LAYER][j] if self.config.interlayer_radial else None
            geom = _geometry(members[0].backbone, vectors, edge_inter)
            shared = _stages(members[0].backbone, onehot, edge_index, geom, vectors, edge_chunk, 0, depth, None)
            feats, energies, learned = [], [], []
            for m in members:
                g = geom if depth >= 1 else _geometry(m.backbone, vectors, edge_inter)
                h = _stages(m.backbone, onehot, edge_index, g, vectors, edge_chunk, depth, None, shared)
                le = m.energy_head.learned(h)
                node = m.energy_head.e0[species] + le
                feats.append(h)
                learned.append(le)
                energies.append(scatter_sum(node, batch, n_struct))
        out: Dict[str, torch.Tensor] = {
            K.ENERGY: torch.stack(energies).detach(),
            K.NODE_ENERGY_LEARNED: torch.stack(learned).detach(),
        }
        out[K.NODE_ENERGY] = torch.stack([m.energy_head.e0[species] for m in members]) + out[K.NODE_ENERGY_LEARNED]
        if need_grad:
            leaves = ([pos_leaf] if compute_forces else []) + ([strain] if compute_stress else [])
            forces, stresses = [], []
            for k, e in enumerate(energies):
                grads = torch.autograd.grad(e.sum(), leaves, retain_graph=k < len(energies) - 1, allow_unused=True)
                grads = [torch.zeros_like(x) if gr is None else gr for gr, x in zip(grads, leaves)]
                if compute_forces:
                    forces.append(-grads[0])
                if compute_stress:
                    stresses.append(grads[-1] / cell_volume(graph[K.CELL])[:, None, None])
            if compute_forces:
                out[K.FORCES] = torch.stack(forces).detach()
            if compute_stress:
                out[K.STRESS] = torch.stack(stresses).detach()
        if compute_hamiltonian:
            positions, cell = positions.detach(), cell.detach()
            with torch.no_grad():
                out[K.HAM_BLOCKS] = torch.stack([m.hamiltonian(h.detach(), graph, positions, cell, ham_chunk_size)
                                                 for m, h in zip(members, feats)])
            out[K.HAM_MASK] = members[0].hamiltonian.mask(graph[K.SPECIES], graph[K.HAM_PAIR_INDEX])
        return out

    def _forward_each(self, graph: Dict[str, torch.Tensor], compute_forces: bool, compute_stress: bool,
                      compute_hamiltonian: bool, ham_chunk_size: int, edge_chunk: int) -> Dict[str, torch.Tensor]:
        """Members one after the other (members with ``interlayer_pair_energy`` run two backbone passes of their own,
        so no stage is shared); same outputs as :meth:`forward`."""
        outs = [m(graph, compute_forces=compute_forces, compute_stress=compute_stress,
                  compute_hamiltonian=compute_hamiltonian, ham_chunk_size=ham_chunk_size, edge_chunk=edge_chunk)
                for m in self.members]
        out = {key: torch.stack([o[key] for o in outs]) for key in outs[0] if key != K.HAM_MASK}
        if compute_hamiltonian:
            out[K.HAM_MASK] = outs[0][K.HAM_MASK]
        return out

    def predict_hamiltonian_blocks(self, atoms: "Atoms", chunk_size: int = 65536
                                   ) -> tuple[Dict[str, torch.Tensor], Dict[str, torch.Tensor]]:
        """(graph, output) with ``ham_blocks`` (K, n_pairs, max_orb, max_orb) eV of every member for ``atoms``."""
        graph = atoms_to_graph(atoms, self.config, dtype=self.dtype, device=self.device)
        with torch.no_grad():
            out = self(graph, compute_forces=False, compute_hamiltonian=True, ham_chunk_size=chunk_size)
        return graph, out

    def predict_tightbinding(self, atoms: "Atoms", chunk_size: int = 65536) -> "TightBinding":
        """The committee-mean Wannier Hamiltonian (eV) of ``atoms`` (mean of the members' blocks; Hermitian)."""
        from .export import blocks_to_tightbinding

        graph, out = self.predict_hamiltonian_blocks(atoms, chunk_size)
        mean = {K.HAM_BLOCKS: out[K.HAM_BLOCKS].mean(0), K.HAM_MASK: out[K.HAM_MASK]}
        return blocks_to_tightbinding(atoms, graph, mean, self.config)

    def predict_tightbinding_members(self, atoms: "Atoms", chunk_size: int = 65536) -> list["TightBinding"]:
        """One ``TightBinding`` per member (eV), from one graph and one shared backbone prefix."""
        from .export import blocks_to_tightbinding

        graph, out = self.predict_hamiltonian_blocks(atoms, chunk_size)
        return [blocks_to_tightbinding(atoms, graph, {K.HAM_BLOCKS: b, K.HAM_MASK: out[K.HAM_MASK]}, self.config)
                for b in out[K.HAM_BLOCKS]]

    def save(self, path: str | Path, base: Optional[str] = None,
             metadata: Optional[Mapping[str, Any]] = None) -> None:
        """Write a committee file; see :func:`save_committee`."""
        save_committee(self, path, base=base, metadata=metadata)


# ---------------------------------------------------------------------------------------------------- helpers
def _geometry(backbone, vectors: torch.Tensor, edge_inter: Optional[torch.Tensor] = None
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """(spherical harmonics (n_edges, sh dim), radial inputs (``Backbone.edge_radial``)) of edge vectors."""
    return backbone.spherical_harmonics(vectors), backbone.edge_radial(vectors, edge_inter)


def _stages(backbone, onehot, edge_index, geom, vectors, edge_chunk, start: int, stop: Optional[int], h):
    """Run backbone stages [start, stop) (stage 1 = embedding, 2 + n = interaction n; stage 0 = geometry, done by
    the caller) from features ``h``; returns the features after the last stage run."""
    n_stages = 2 + len(backbone.layers)
    stop = n_stages if stop is None else stop
    sh, radial = geom
    checkpointed = backbone.needs_checkpointing(edge_index.shape[1], vectors.element_size())
    for s in range(max(start, 1), stop):
        if s == 1:
            h = backbone.embedding(onehot)
        else:
            h = backbone.layers[s - 2](h, onehot, edge_index, sh, radial, edge_chunk, checkpointed)
    return h


def _tensors(module: nn.Module) -> list[torch.Tensor]:
    return [t for _, t in sorted(module.state_dict().items()) if "._compiled_" not in _]


def _same(a: list[torch.Tensor], b: list[torch.Tensor]) -> bool:
    return len(a) == len(b) and all(x.shape == y.shape and torch.equal(x, y) for x, y in zip(a, b))


def _plain(value: Any) -> Any:
    return json.loads(json.dumps(value, default=list, sort_keys=True)) if value is not None else None


def member_spread(values: torch.Tensor | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(mean, standard deviation) over the member axis 0 of ``values`` (K, ...); std with ddof = 1 (the unbiased
    sample estimate; the calibration in docs/uncertainty.md is measured with this definition)."""
    v = values.detach().cpu().double().numpy() if isinstance(values, torch.Tensor) else np.asarray(values, float)
    return v.mean(axis=0), v.std(axis=0, ddof=1)


def forces_std_per_atom(forces: torch.Tensor | np.ndarray) -> np.ndarray:
    """Per-atom force uncertainty (n_atoms,) eV/Å from member forces (K, n_atoms, 3): the root-mean-square over
    x, y, z of the committee standard deviation, sqrt(mean_c std_c²)."""
    _, std = member_spread(forces)
    return np.sqrt((std ** 2).mean(axis=-1))


# ---------------------------------------------------------------------------------------------------- files
def _base_payload(base: str | Path) -> tuple[dict, Path]:
    from .io import resolve_model_path

    path = resolve_model_path(base)
    return torch.load(path, map_location="cpu", weights_only=True), path


def _sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def save_committee(committee: CommitteeModel, path: str | Path, base: Optional[str] = None,
                   metadata: Optional[Mapping[str, Any]] = None, dtype: torch.dtype = torch.float32) -> None:
    """Write ``committee`` to ``path`` (atomic: temporary file + rename).

    base: a pretrained name or model file the members were fine-tuned from; then each member stores only the
    tensors that differ from it (``load_committee`` needs the same base file: its SHA-256 is recorded and checked).
    Without ``base`` the first member is stored whole and the others as differences to it.
    dtype: floating dtype of the stored tensors (float32 keeps shipped files small).
    """
    from ase_wannierml import __version__

    meta = {**committee.metadata, **dict(metadata or {})}
    json.dumps(meta)
    cast = {k: (v.detach().cpu().to(dtype) if v.is_floating_point() else v.detach().cpu())
            for k, v in committee.members[0].state_dict().items()}
    payload: dict[str, Any] = {"format": COMMITTEE_FORMAT, "format_version": COMMITTEE_VERSION,
                               "package_version": __version__, "config": committee.config.to_dict(),
                               "dtype": str(dtype).replace("torch.", ""), "metadata": meta, "base": None}
    if base is not None:
        base_payload, base_path = _base_payload(base)
        reference = base_payload["state_dict"]
        payload["base"] = str(base)
        payload["base_sha256"] = _sha256(base_path)
    else:
        reference = cast
        payload["base_state_dict"] = cast
    members = []
    for m in committee.members:
        diff = {}
        for k, v in m.state_dict().items():
            if "._compiled_" in k:
                continue
            v = v.detach().cpu()
            v = v.to(dtype) if v.is_floating_point() else v
            ref = reference.get(k)
            if ref is None or ref.shape != v.shape or not torch.equal(ref.to(v.dtype), v):
                diff[k] = v
        members.append({"state_dict": diff, "config": m.config.to_dict(), "metadata": dict(m.metadata)})
    payload["members"] = members
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    torch.save(payload, tmp)
    os.replace(tmp, path)


def load_committee(path: str | Path, dtype: Optional[torch.dtype] = None,
                   device: str | torch.device = "cpu") -> CommitteeModel:
    """Load a committee file written by :func:`save_committee` (eval mode). ValueError for other files, another
    format version, or a base model file that is not the one the committee was made from."""
    path = Path(path)
    payload = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(payload, dict) or payload.get("format") != COMMITTEE_FORMAT:
        raise ValueError(f"{path} is not an ase_wannierml committee file (format {COMMITTEE_FORMAT!r} missing)")
    if payload.get("format_version") != COMMITTEE_VERSION:
        raise ValueError(f"{path} has committee format_version {payload.get('format_version')}; this ase_wannierml "
                         f"reads {COMMITTEE_VERSION}")
    if payload.get("base") is not None:
        base_payload, base_path = _base_payload(payload["base"])
        if payload.get("base_sha256") and _sha256(base_path) != payload["base_sha256"]:
            raise ValueError(f"{path}: its members were fine-tuned from a different {payload['base']!r} model file "
                             f"than {base_path} (SHA-256 differs); re-create the committee for this model")
        reference = base_payload["state_dict"]
    else:
        reference = payload["base_state_dict"]
    dtype = dtype if dtype is not None else getattr(torch, payload["dtype"])
    members = []
    for entry in payload["members"]:
        config = ModelConfig.from_dict(entry.get("config", payload["config"]))
        model = WannierMLModel(config, dtype=dtype, device=device)
        state = {**reference, **entry["state_dict"]}
        model.load_state_dict({k: v for k, v in state.items()}, strict=False)
        missing = [k for k in model.state_dict() if k not in state and "._compiled_" not in k]
        if missing:
            raise ValueError(f"{path}: committee member lacks weights {missing[:5]}")
        model.metadata = dict(entry.get("metadata", {}))
        members.append(model.eval())
    return CommitteeModel(members, metadata=payload.get("metadata", {})).eval()


# ---------------------------------------------------------------------------------------------------- calibration
def force_errors_and_spreads(committee: CommitteeModel, frame_dirs: Sequence[str | Path]
                             ) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(|error| of every force component (n,) eV/Å, the raw (unscaled) ``forces_std`` of its atom (n,) eV/Å,
    frame ids) of the committee mean against DFT frames with forces (status ok)."""
    from ase_wannierml.calculator import WannierMLCalculator
    from ase_wannierml.training.frames import find_frames, frame_status, load_frame_dir

    errs, sigs, names = [], [], []
    for p in find_frames(list(frame_dirs)):
        if frame_status(p)[0] != "ok":
            continue
        fr = load_frame_dir(p)
        if fr.forces is None:
            continue
        a = fr.atoms.copy()
        a.calc = WannierMLCalculator(committee)
        errs.append(np.abs(a.get_forces() - fr.forces).ravel())
        sigs.append(np.repeat(a.calc.results["forces_std_raw"], 3))
        names.append(p.name)
    if not errs:
        raise ValueError("no frame with forces (status ok) to calibrate on")
    return np.concatenate(errs), np.concatenate(sigs), names


#: Reference spread (eV/Å) of the power-law calibration σ = s · σ_ref · (σ_raw / σ_ref)^b: s is then the scale at
#: σ_raw = σ_ref, whatever b.
CALIBRATION_REFERENCE = 0.01


def calibrated_forces_std(raw: np.ndarray, calibration: Mapping[str, Any] | None) -> np.ndarray:
    """Calibrated per-atom ``forces_std`` (eV/Å) from the members' raw spread ``raw`` (n_atoms,) eV/Å:
    s · σ_ref · (σ_raw / σ_ref)^b with ``calibration`` = {"forces_std_scale": s, "forces_std_power": b (default 1),
    "forces_std_reference": σ_ref (default ``CALIBRATION_REFERENCE``)}; b = 1 is the plain scale s · σ_raw. No
    calibration: σ_raw."""
    raw = np.asarray(raw, dtype=float)
    if not calibration:
        return raw
    s = float(calibration.get("forces_std_scale", 1.0))
    b = float(calibration.get("forces_std_power", 1.0))
    ref = float(calibration.get("forces_std_reference", CALIBRATION_REFERENCE))
    if not (np.isfinite(s) and s > 0 and np.isfinite(b) and b > 0 and np.isfinite(ref) and ref > 0):
        raise ValueError(f"committee calibration needs finite forces_std_scale, forces_std_power and "
                         f"forces_std_reference > 0, got {s}, {b}, {ref}")
    if b == 1.0:
        return s * raw
    return s * ref * (np.maximum(raw, 0.0) / ref) ** b


def fit_power(err: np.ndarray, sig: np.ndarray, components_per_atom: int = 3) -> float:
    """Exponent b of |error| ∝ σ_raw^b: least-squares slope of log(RMS error of an atom's components) against
    log(σ_raw of the atom), over atoms (``err``, ``sig``: per component, ``components_per_atom`` consecutive
    entries per atom, as :func:`force_errors_and_spreads` returns them); clipped to [0.5, 3]."""
    e = np.sqrt(np.mean(np.asarray(err, float).reshape(-1, components_per_atom) ** 2, axis=1))
    x = np.asarray(sig, float).reshape(-1, components_per_atom)[:, 0]
    ok = (e > 0) & (x > 0)
    if ok.sum() < 3 or np.ptp(np.log(x[ok])) < 1e-6:
        return 1.0
    slope = np.polyfit(np.log(x[ok]), np.log(e[ok]), 1)[0]
    return float(np.clip(slope, 0.5, 3.0))


def calibrate_forces(committee: CommitteeModel, frame_dirs: Sequence[str | Path], quantile: float = 0.68,
                     power: float | None = 1.0) -> dict:
    """Fit the calibration of ``forces_std`` on DFT frames no member trained on (validation frames, and any other
    frames set aside for calibration; never those used to judge it). ``power``: the exponent b of
    σ = s · σ_ref · (σ_raw / σ_ref)^b (:func:`calibrated_forces_std`), 1 (a plain scale) or None (fitted,
    :func:`fit_power`: a committee of fine-tuned copies underestimates large errors more than small ones); then s =
    the ``quantile`` (68 %) of |error| / (σ_ref (σ_raw/σ_ref)^b) over all force components, so that on those frames
    68 % of the components lie within 1σ. Stores the result in ``committee.metadata["calibration"]`` (the
    calculator reports ``forces_std`` calibrated and keeps ``forces_std_raw``) and returns that dict (with the raw
    1σ / 2σ fractions on the fit frames)."""
    committee.metadata.pop("calibration", None)
    err, sig, names = force_errors_and_spreads(committee, frame_dirs)
    if not (np.all(np.isfinite(err)) and np.all(np.isfinite(sig))):
        raise ValueError(f"non-finite force errors or spreads on the calibration frames {names}")
    if power is not None and not (np.isfinite(power) and power > 0):
        raise ValueError(f"power must be None (fit it) or a finite number > 0, got {power}")
    b = fit_power(err, sig) if power is None else float(power)
    unit = calibrated_forces_std(sig, {"forces_std_scale": 1.0, "forces_std_power": b})
    ratio_raw = err / np.maximum(sig, 1e-12)
    scale = float(np.quantile(err / np.maximum(unit, 1e-12), quantile))
    info = {"forces_std_scale": scale, "forces_std_power": b, "forces_std_reference": CALIBRATION_REFERENCE,
            "quantile": quantile, "fit_frames": names, "fit_components": int(err.size),
            "raw_within_1sigma": float(np.mean(ratio_raw <= 1)), "raw_within_2sigma": float(np.mean(ratio_raw <= 2))}
    committee.metadata["calibration"] = info
    return info
