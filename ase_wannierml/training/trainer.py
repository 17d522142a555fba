"""The training loop: AdamW, warm-up + cosine LR, EMA, early stopping, checkpoints, exact resume, data parallel.

Data order: epoch e visits the training frames in ``randperm(n, seed + e)``; batches are consecutive slices of
``optim.batch_size`` frames (the last one may be shorter). With ``world_size`` processes each takes
``batch[rank::world_size]``. Validation uses the EMA weights, all band k-points, and drives early stopping and
``<output>/model.pt`` (the EMA model of lowest validation loss, or the last one: ``run.save_model``).
``<output>/metrics.jsonl`` gets one JSON line per log/validation event.

Example::

    >>> trainer = Trainer(load_config("examples/train_config.yaml"))   # doctest: +SKIP
    >>> summary = trainer.train()                                       # doctest: +SKIP
"""
from __future__ import annotations

import dataclasses
import json
import math
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ase_wannierml.model import keys as K

from . import checkpoint as ckpt
from .config import TrainConfig
from .dataset import Dataset
from .distributed import DistInfo, all_sum, barrier, broadcast_flag
from .ema import EMA
from .loss import TERM_NAMES, Scales, Term, collate, combine, loss_terms, term_weight
from .setup import build_training_model, prepare_dataset

_DTYPES = {"float32": torch.float32, "float64": torch.float64}


class Trainer:
    """One training run (see the module docstring); ``train()`` runs or resumes it and returns a summary."""

    def __init__(self, cfg: TrainConfig, dist_info: DistInfo = DistInfo(), resume: bool = False,
                 dataset: Dataset | None = None, overwrite: bool = False) -> None:
        self.cfg, self.dist, self.dtype = cfg, dist_info, _DTYPES[cfg.run.dtype]
        self.out = Path(cfg.run.output)
        if resume and overwrite:
            raise ValueError("--resume and --overwrite exclude each other: continue the run or start it again")
        if not resume:
            _claim_run_folder(self.out, overwrite, dist_info.is_main)
        state = ckpt.load_latest(self.out) if resume else None
        self._own_checkpoints = ckpt.list_checkpoints(self.out) if state is not None else []
        if resume and state is None and dist_info.is_main:
            print(f"--resume: no checkpoint in {ckpt.checkpoint_dir(self.out)}; starting a new run")
        _seed_everything(cfg.run.seed)
        self.data = dataset if dataset is not None else prepare_dataset(cfg, dist_info)
        self.train_idx, self.val_idx, self.test_idx = self.data.split(
            cfg.data.val_fraction, cfg.data.test_fraction, cfg.data.split_seed, cfg.data.split,
            cfg.data.test_frames, cfg.data.val_frames, cfg.data.train_frames)
        if state is not None and "val_frames" in state:
            self._restore_split(state)          # frames added since the checkpoint wait for the next (warm) start
        self._hold_out(heldout_frame_ids(cfg.data, self.data.frame_ids))
        if cfg.data.bootstrap_seed is not None and state is None:
            self.train_idx = bootstrap_indices(self.train_idx, self.data.frame_ids, cfg.data.train_frames,
                                               cfg.data.bootstrap_seed)
        if cfg.data.repeat and state is None:      # a resumed run's split already holds the repeats
            import fnmatch

            unmatched = [p for p in cfg.data.repeat
                         if not any(fnmatch.fnmatchcase(self.data.frame_ids[i], p) for i in self.train_idx)]
            if unmatched:                            # a typo would silently leave the weighting without effect
                raise ValueError(f"data.repeat: pattern(s) {unmatched} match no training frame "
                                 f"({len(self.train_idx)} training frames; validation/test frames are never repeated)")
            self.train_idx = repeat_indices(self.train_idx, self.data.frame_ids, cfg.data.repeat)
        if not self.train_idx:
            raise ValueError(f"no training frames: {len(self.data)} frames, val_fraction {cfg.data.val_fraction}")
        train_examples = [self.data.examples[i] for i in self.train_idx]
        model_kwargs = None if state is None else state["model_kwargs"]
        init = None
        if state is None and cfg.run.init_from:
            if not Path(cfg.run.init_from).is_file():
                from ase_wannierml.model.io import available_models

                raise FileNotFoundError(f"run.init_from {cfg.run.init_from}: no such model file and no shipped model "
                                        f"of that name (shipped: {available_models()})")
            init = torch.load(cfg.run.init_from, map_location="cpu", weights_only=True)
            model_kwargs = _init_model_kwargs(cfg, init["config"])
            if "e0s" not in model_kwargs:          # dispersion changed: refit e0s to the new targets
                from ase_wannierml.training.stats import fit_e0s
                model_kwargs["e0s"] = fit_e0s(train_examples, list(model_kwargs["species"]))
            refit_onsite = _energy_zero_changed(cfg, init)
            if refit_onsite:                       # H targets measured from another zero: new onsite reference
                from ase_wannierml.training.stats import default_fermi_level, onsite_reference
                model_kwargs["onsite_reference"] = onsite_reference(train_examples, model_kwargs["orbitals"])
                model_kwargs["fermi_level"] = default_fermi_level(train_examples, cfg.data.energy_zero)
        self.model, self.model_kwargs, self.scales = build_training_model(cfg, train_examples, model_kwargs,
                                                                          self.dtype)
        if init is not None:
            grown = _grow_pair_heads(self.model, cfg.run.init_from, init)   # pair heads given more capacity
            weights = {k: v.to(self.dtype) if v.is_floating_point() else v for k, v in init["state_dict"].items()
                       if "._compiled_" not in k      # e3nn's compiled constants are rebuilt by the model
                       and not (refit_onsite and k.endswith("onsite_reference"))
                       and not k.startswith(grown)}
            missing, unexpected = self.model.load_state_dict(weights, strict=False)
            bad = [k for k in missing if "._compiled_" not in k and not k.startswith(grown)
                   and not (refit_onsite and k.endswith("onsite_reference"))] + list(unexpected)
            if bad:
                raise ValueError(f"run.init_from {cfg.run.init_from}: weights do not fit the model: {bad[:5]}")
            if cfg.run.init_noise > 0:
                perturb_weights(self.model, cfg.run.init_noise, cfg.run.seed, cfg.run.freeze)
        freeze_parameters(self.model, cfg.run.freeze)
        if state is not None:
            self.scales = Scales(**state["scales"])
        self.needs = _global_needs(train_examples, cfg)
        self.ddp = _wrap_ddp(self.model, dist_info, self.needs)
        self.opt = torch.optim.AdamW([p for p in self.model.parameters() if p.requires_grad], lr=cfg.optim.lr,
                                     weight_decay=cfg.optim.weight_decay)
        self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, _lr_lambda(cfg))
        self.ema = EMA(self.model, cfg.optim.ema_decay)
        self.step, self.epoch, self.pos = 0, 0, 0
        self.best_val, self.bad_evals, self.stopped = math.inf, 0, False
        self.train_seconds = 0.0
        self._t0 = None
        if state is not None:
            self._load_state(state)

    # ------------------------------------------------------------------ loop
    def train(self) -> dict[str, Any]:
        """Run until ``optim.max_steps`` or early stopping; returns the final summary (also logged)."""
        from tqdm import tqdm

        import time

        self._t0 = time.time() - self.train_seconds
        self.out.mkdir(parents=True, exist_ok=True)
        bar = tqdm(total=self.cfg.optim.max_steps, initial=self.step, desc="train",
                   disable=not (self.cfg.run.progress and self.dist.is_main))
        while self.step < self.cfg.optim.max_steps and not self.stopped:
            metrics = self.train_step(self._next_batch())
            bar.update(1)
            bar.set_postfix(loss=f"{metrics['loss']:.4g}")
            if self.step % self.cfg.run.log_every == 0:
                self._log({"event": "train", **metrics})
            if self.step % self.cfg.run.eval_every == 0 or self.step == self.cfg.optim.max_steps:
                self._validate_and_maybe_stop()
            if self.step % self.cfg.run.checkpoint_every == 0 or self.stopped \
                    or self.step == self.cfg.optim.max_steps:
                self.save_checkpoint()
        bar.close()
        if (not self.val_idx or self.cfg.run.save_model == "last") and self.dist.is_main:
            with self.ema.applied():
                self._save_model(self.out / "model.pt")
        best = self.best_val if math.isfinite(self.best_val) else None
        summary = {"event": "done", "step": self.step, "epoch": self.epoch, "best_val": best,
                   "stopped_early": self.stopped}
        self._log(summary)
        return summary

    def _next_batch(self) -> list[int]:
        order = self._epoch_order(self.epoch)
        batch = order[self.pos:self.pos + self.cfg.optim.batch_size]
        self.pos += len(batch)
        if self.pos >= len(order):
            self.epoch, self.pos = self.epoch + 1, 0
        return batch

    def _epoch_order(self, epoch: int) -> list[int]:
        g = torch.Generator().manual_seed(self.cfg.run.seed * 1_000_003 + epoch)
        return [self.train_idx[i] for i in torch.randperm(len(self.train_idx), generator=g).tolist()]

    def train_step(self, batch_idx: list[int]) -> dict[str, float]:
        """One optimizer step on the global batch ``batch_idx`` (this process takes its slice)."""
        self.model.train()
        self.opt.zero_grad(set_to_none=True)
        local = batch_idx[self.dist.rank::self.dist.world_size]
        dummy = not local                     # keep collective calls in step on a process without frames
        keys = local or batch_idx[:1]
        batch = collate([self.data.examples[i] for i in keys], self.dtype, keys)
        out = self.ddp(batch.graph, **self.needs)
        loss_cfg = self._loss_config()
        band_seed = (self.cfg.run.seed * 1_000_003 + self.step) * 1_000_003
        terms = loss_terms(batch, out, self.scales, loss_cfg, band_seed)
        if dummy:
            terms = {n: Term(t.value * 0.0, 0.0, 0.0) for n, t in terms.items()}
        sums = all_sum(_flatten(terms), self.dist)
        counts = _counts(sums)
        loss = combine(terms, counts, loss_cfg, self.dist.world_size) + _touch(out)
        loss.backward()
        if self.cfg.optim.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.optim.grad_clip)
        self.opt.step()
        self.sched.step()
        self.ema.update()
        self.step += 1
        return {"step": self.step, "epoch": self.epoch, "lr": self.sched.get_last_lr()[0],
                "loss": _loss_value(sums, loss_cfg), **_rmse(sums)}

    # ------------------------------------------------------------------ validation
    def _loss_config(self):
        """The loss settings in force at the current step (the band term starts at ``loss.bands_start``)."""
        cfg = self.cfg.loss
        if self.step < cfg.bands_start:
            cfg = dataclasses.replace(cfg, bands=0.0)
        if self.step < cfg.hk_start:
            cfg = dataclasses.replace(cfg, hk=0.0)
        return cfg

    def evaluate_loss(self, indices: list[int]) -> dict[str, float]:
        """Loss and per-term RMSE (physical units) with the EMA weights on ``indices`` (all band k-points)."""
        loss_cfg = self._loss_config()
        local = indices[self.dist.rank::self.dist.world_size]
        sums = [0.0] * (3 * len(TERM_NAMES))
        self.model.eval()
        with self.ema.applied():
            for start in range(0, len(local), self.cfg.optim.batch_size):
                batch = collate([self.data.examples[i] for i in local[start:start + self.cfg.optim.batch_size]],
                                self.dtype)
                out = self.model(batch.graph, **self.needs)
                terms = loss_terms(batch, _detached(out), self.scales, loss_cfg)
                sums = [a + b for a, b in zip(sums, _flatten(terms))]
        sums = all_sum(sums, self.dist)
        return {"loss": _loss_value(sums, loss_cfg), **_rmse(sums)}

    def _validate_and_maybe_stop(self) -> None:
        if not self.val_idx:
            return
        for weight, start in ((self.cfg.loss.bands, self.cfg.loss.bands_start),
                              (self.cfg.loss.hk, self.cfg.loss.hk_start)):
            if weight > 0 and 0 < start <= self.step < start + self.cfg.run.eval_every:
                self.best_val, self.bad_evals = math.inf, 0     # the loss gained a term: compare anew
        metrics = self.evaluate_loss(self.val_idx)
        improved = metrics["loss"] < self.best_val
        if improved:
            self.best_val, self.bad_evals = metrics["loss"], 0
            if self.dist.is_main and self.cfg.run.save_model == "best":
                with self.ema.applied():
                    self._save_model(self.out / "model.pt")
        else:
            self.bad_evals += 1
        stop = self.cfg.run.patience > 0 and self.bad_evals >= self.cfg.run.patience
        self.stopped = broadcast_flag(stop, self.dist)
        self._log({"event": "val", "step": self.step, "epoch": self.epoch, "improved": improved, **metrics})

    # ------------------------------------------------------------------ files
    def _elapsed(self) -> float:
        import time

        return self.train_seconds if self._t0 is None else time.time() - self._t0

    def _save_model(self, path: Path) -> None:
        """Model file (``run.save_dtype``) with training metadata (written to a temporary name, then renamed)."""
        import datetime

        tmp = path.with_name(f".{path.name}.tmp")
        best = self.best_val if math.isfinite(self.best_val) else None
        ids = self.data.frame_ids
        meta = {"training": {"step": self.step, "epoch": self.epoch, "best_val_loss": best,
                             "train_frames": len(self.train_idx), "val_frames": len(self.val_idx),
                             "test_frames": len(self.test_idx),
                             "frame_ids": {"train": [ids[i] for i in self.train_idx],
                                           "val": [ids[i] for i in self.val_idx],
                                           "test": [ids[i] for i in self.test_idx]},
                             "training_time_s": round(self._elapsed(), 1),
                             "saved_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                             "init_from": self.cfg.run.init_from or None,
                             "energy_zero": energy_zero_description(self.cfg.data.energy_zero),
                             "config": self.cfg.to_dict()}}
        model = self.model
        save_dtype = _DTYPES[self.cfg.run.save_dtype]
        if save_dtype != self.dtype:          # a fresh model (deepcopy of e3nn modules adds state-dict entries)
            from ase_wannierml.model.model import WannierMLModel

            model = WannierMLModel(self.model.config, dtype=save_dtype)
            model.load_state_dict({k: v.to(save_dtype) if v.is_floating_point() else v
                                   for k, v in self.model.state_dict().items()})
            model.metadata = dict(self.model.metadata)
        model.save(tmp, metadata=json.loads(json.dumps(meta, default=str)))
        tmp.replace(path)

    def _log(self, record: dict[str, Any]) -> None:
        if self.dist.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
            with open(self.out / "metrics.jsonl", "a") as fh:
                fh.write(json.dumps(record) + "\n")

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue this run bit for bit (weights_only-safe)."""
        return {"model": self.model.state_dict(), "optimizer": self.opt.state_dict(),
                "scheduler": self.sched.state_dict(), "ema": self.ema.state_dict(), "rng": ckpt.rng_state(),
                "step": self.step, "epoch": self.epoch, "train_seconds": self._elapsed(),
                "pos": self.pos, "best_val": self.best_val, "bad_evals": self.bad_evals, "stopped": self.stopped,
                "scales": dataclasses.asdict(self.scales), "model_kwargs": self.model_kwargs,
                "train_frames": [self.data.frame_ids[i] for i in self.train_idx],
                "val_frames": [self.data.frame_ids[i] for i in self.val_idx],
                "test_frames": [self.data.frame_ids[i] for i in self.test_idx], "config": self.cfg.to_dict()}

    def save_checkpoint(self) -> None:
        """Write a checkpoint (main process) after all processes reached this step."""
        barrier(self.dist)
        if self.dist.is_main:
            ckpt.save_checkpoint(self.state_dict(), self.out, self.step, self.cfg.run.keep_checkpoints,
                                 own=self._own_checkpoints)

    def _hold_out(self, held: set[str]) -> None:
        """Move the frames in ``held`` (ids) to the test split, whatever the split rule or checkpoint said."""
        idx = {i for i, f in enumerate(self.data.frame_ids) if f in held}
        if not idx:
            return
        self.train_idx = [i for i in self.train_idx if i not in idx]
        self.val_idx = [i for i in self.val_idx if i not in idx]
        self.test_idx = sorted(set(self.test_idx) | idx)

    def _restore_split(self, state: dict[str, Any]) -> None:
        """The checkpoint's train/val/test frames (by id), so a run resumes exactly while the data set grows."""
        where = {fid: i for i, fid in enumerate(self.data.frame_ids)}
        parts = []
        for key in ("train_frames", "val_frames", "test_frames"):
            missing = [f for f in state[key] if f not in where]
            if missing:
                raise ValueError(f"cannot resume from {self.out}: checkpoint {key} {missing[:5]} are not in the data set")
            parts.append(sorted(where[f] for f in state[key]))
        new = len(self.data) - len(set().union(*map(set, parts)))      # data.repeat lists frames more than once
        if new and self.dist.is_main:
            print(f"--resume: {new} frames added since the checkpoint are not used by this run "
                  "(start a new stage with run.init_from to include them)")
        self.train_idx, self.val_idx, self.test_idx = parts

    def _load_state(self, state: dict[str, Any]) -> None:
        frames = [self.data.frame_ids[i] for i in self.train_idx]
        if frames != state["train_frames"]:
            raise ValueError(f"cannot resume from {self.out}: the training frames differ from the checkpoint's "
                             f"({len(frames)} vs {len(state['train_frames'])}); the data set changed")
        self.model.load_state_dict(state["model"])
        self.opt.load_state_dict(state["optimizer"])
        self.sched.load_state_dict(state["scheduler"])
        self.ema.load_state_dict(state["ema"])
        ckpt.set_rng_state(state["rng"])
        self.step, self.epoch, self.pos = state["step"], state["epoch"], state["pos"]
        self.train_seconds = float(state.get("train_seconds", 0.0))
        self.best_val, self.bad_evals, self.stopped = state["best_val"], state["bad_evals"], state["stopped"]
        if self.dist.is_main:
            _truncate_log(self.out / "metrics.jsonl", self.step)


def _claim_run_folder(out: Path, overwrite: bool, is_main: bool) -> None:
    """A new run needs an output folder without another run's results (model.pt, checkpoints): FileExistsError
    naming them, unless ``overwrite`` (then the main process deletes them and the log first). A log alone (a run
    stopped before its first checkpoint: nothing to resume) is kept as ``metrics.previous.jsonl``. The dataset cache
    may live in the folder and is not touched."""
    log = out / "metrics.jsonl"
    found = [p for p in (out / "model.pt",) if p.exists()] + ckpt.list_checkpoints(out)
    if not found:
        if log.exists() and is_main:
            log.replace(out / "metrics.previous.jsonl")
        return
    found += [log] if log.exists() else []
    if not overwrite:
        names = ", ".join(str(p.relative_to(out)) for p in found[:4]) + (" ..." if len(found) > 4 else "")
        raise FileExistsError(f"run folder {out} already holds a run ({names}): pass --resume to continue it, "
                              f"--overwrite to start again (deletes those files), or choose another run.output")
    if is_main:
        for path in found:
            path.unlink()
        print(f"--overwrite: deleted {len(found)} file(s) of the previous run in {out}")


def _grow_pair_heads(model: torch.nn.Module, init_from: str, init: dict) -> tuple[str, ...]:
    """Warm start to heads with more capacity, keeping the saved model's function: a larger
    ``pair_sh_lmax`` (each grown pair net inherits the saved one, ``PairBlockNet.inherit``: new paths at zero)
    and/or ``pair_node_product`` switched on (its weights start at zero) and/or ``interlayer_radial`` switched on
    (``Backbone.inherit_radial``) and/or a wider energy readout (``EnergyHead.inherit``) and/or residual
    interactions appended to the backbone (``Backbone.grow``). Returns the state-dict prefixes handled
    here (not loaded from the file)."""
    from ase_wannierml.model import load_model
    from ase_wannierml.model.pair_heads import PairBlockNet

    grown = []
    if not init["config"].get("pair_node_product", False) and model.config.pair_node_product:
        grown += [name + "." for name, m in model.named_modules() if name.endswith(".product")]
        print(f"warm start: pair_node_product added to {len(grown)} pair heads (its weights start at zero)")
    if init["config"].get("pair_sh_lmax", 0) != model.config.pair_sh_lmax:
        old = dict(load_model(init_from, dtype=model.dtype).named_modules())
        nets = []
        for name, net in model.named_modules():
            if isinstance(net, PairBlockNet) and old[name].lmax_sh != net.lmax_sh:
                net.inherit(old[name])
                nets.append(name + ".")
        print(f"warm start: pair_sh_lmax {init['config'].get('pair_sh_lmax', 0)} -> {model.config.pair_sh_lmax}: "
              f"{len(nets)} pair nets gained bond-harmonic paths (started at zero)")
        grown += nets
    if init["config"].get("energy_hidden", 16) < model.config.energy_hidden:
        old = load_model(init_from, dtype=model.dtype)
        model.energy_head.inherit(old.energy_head)
        print(f"warm start: energy readout widened {old.config.energy_hidden} -> {model.config.energy_hidden} "
              "(new units start with zero output weights)")
        grown += ["energy_head.mlp."]
    if not init["config"].get("interlayer_radial", False) and model.config.interlayer_radial:
        old = load_model(init_from, dtype=model.dtype)
        model.backbone.inherit_radial(old.backbone)
        radial = [f"backbone.layers.{n}.radial." for n in range(len(model.backbone.layers))]
        print(f"warm start: interlayer_radial switched on: {len(radial)} radial MLPs split into intra- and "
              "interlayer inputs (same function at the start)")
        grown += radial
    old_onsite = init["config"].get("onsite_hidden", 0)
    if old_onsite != model.config.onsite_hidden:
        if old_onsite:
            raise ValueError(f"run.init_from {init_from}: onsite_hidden {old_onsite} -> {model.config.onsite_hidden}: "
                             "an onsite MLP can be added to a model without one, not resized")
        grown += ["hamiltonian.onsite.correction."]
        print(f"warm start: onsite_hidden 0 -> {model.config.onsite_hidden}: onsite level-shift MLP added "
              "(output weights start at zero: the Hamiltonian is unchanged at the start)")
    old_layers = init["config"].get("num_interactions", 2)
    if old_layers != model.config.num_interactions:
        old = load_model(init_from, dtype=model.dtype)
        new = model.backbone.grow(old.backbone)
        grown += [f"backbone.layers.{n}." for n in new]
        print(f"warm start: num_interactions {old_layers} -> {model.config.num_interactions}: residual "
              f"interaction(s) {list(new)} appended (they start as the identity: the saved function is kept)")
    if not init["config"].get("interlayer_pair_energy", False) and model.config.interlayer_pair_energy:
        grown += ["interlayer_energy."]
        print("warm start: interlayer_pair_energy switched on: the energy path now sees each layer alone and the "
              "new interlayer pair term starts at zero (energies change; the Hamiltonian heads are unchanged)")
    return tuple(grown)


#: Model settings a warm start may raise (never lower): ``_grow_pair_heads`` keeps the saved model's function, except
#: that ``interlayer_pair_energy`` keeps only the Hamiltonian (the energy loses its interlayer messages: retrain it).
GROWABLE_SETTINGS = ("pair_sh_lmax", "pair_node_product", "interlayer_radial", "energy_hidden",
                     "interlayer_pair_energy", "onsite_hidden", "num_interactions", "residual_interactions")


def _init_model_kwargs(cfg: TrainConfig, saved: dict[str, Any]) -> dict[str, Any]:
    """Model settings of a warm start: the saved model's (weights only make sense with them), except that graph
    settings given in the config must agree.

    The analytic ``dispersion`` term may change (e.g. adding D3 to a model trained without it): it has no weights.
    The learned part then fits DFT − new dispersion, so the per-element reference energies ``e0s`` are dropped
    here and refitted from the training data.
    """
    from ase_wannierml.model.config import ModelConfig

    kwargs = ModelConfig.from_dict(saved).to_dict()
    given = {k: v for k, v in cfg.model.items() if k in kwargs}
    normalised = ModelConfig.from_dict({**kwargs, **given}).to_dict()   # same spelling as the saved settings

    def differs(k: str) -> bool:
        return json.dumps(normalised[k], default=str) != json.dumps(kwargs[k], default=str)

    clash = {k: (v, kwargs[k]) for k, v in given.items() if differs(k)
             and k not in ("e0s", "onsite_reference", "energy_scale", "ham_scale", "fermi_level", "dispersion",
                           *GROWABLE_SETTINGS)}
    if clash:
        raise ValueError(f"run.init_from {cfg.run.init_from}: model settings differ from the config: {clash}")
    for k in GROWABLE_SETTINGS:                 # more capacity, started so that the saved function is kept
        if k in given and differs(k):
            if normalised[k] < kwargs[k]:        # bools: True -> False is a shrink too
                what = "cannot be switched off" if isinstance(kwargs[k], bool) else "can only grow"
                raise ValueError(f"run.init_from {cfg.run.init_from}: {k} {what} in a warm start "
                                 f"({kwargs[k]} -> {normalised[k]}: trained weights would be dropped)")
            kwargs[k] = normalised[k]
    if "dispersion" in given and differs("dispersion"):
        print(f"warm start: dispersion {kwargs['dispersion'] or None} -> {normalised['dispersion'] or None}; "
              "e0s are refitted to the new targets")
        kwargs["dispersion"] = normalised["dispersion"]
        kwargs.pop("e0s", None)
    return kwargs


def energy_zero_description(energy_zero: str) -> str:
    """What the zero of a model's predicted Hamiltonian is, for its metadata (``data.energy_zero``)."""
    return {"neutrality": "Hamiltonian relative to the charge-neutrality level of the Wannier bands (fermi_level = 0)",
            "vacuum": "Hamiltonian relative to the electrostatic vacuum level (eV); fermi_level: the mean "
                      "charge-neutrality level of the training frames in that zero",
            }.get(energy_zero, "Hamiltonian relative to the DFT Fermi level (fermi_level = 0)")


def _energy_zero_changed(cfg: TrainConfig, init: dict[str, Any]) -> bool:
    """True (and a message) if the warm-start model was trained with another ``data.energy_zero``: its onsite
    reference (a buffer, not a weight) is then refitted to the new targets."""
    saved = (((init.get("metadata") or {}).get("training") or {}).get("config") or {}).get("data", {})
    old = saved.get("energy_zero", "dft_fermi")
    if old == cfg.data.energy_zero:
        return False
    print(f"warm start: energy zero {old} -> {cfg.data.energy_zero}; the onsite reference is refitted")
    return True


def heldout_frame_ids(data_cfg, frame_ids: list[str]) -> set[str]:
    """Frame ids that must be test frames: ids matching ``data.test_patterns`` (fnmatch globs) and frame directories
    whose ``meta.json`` has ``sampling.notes.split == "test"`` (held-out sets chosen before training)."""
    import fnmatch

    from .frames import find_frames

    held = {f for f in frame_ids if any(fnmatch.fnmatchcase(f, pat) for pat in data_cfg.test_patterns)}
    known = set(frame_ids)
    for path in find_frames(data_cfg.frames):
        meta = path / "meta.json"
        if path.name in known and path.is_dir() and meta.is_file():
            notes = (json.loads(meta.read_text()).get("sampling") or {}).get("notes") or {}
            if isinstance(notes, dict) and notes.get("split") == "test":
                held.add(path.name)
    return held


def bootstrap_indices(train_idx: list[int], frame_ids: list[str], keep: list[str], seed: int) -> list[int]:
    """A bootstrap resample of ``train_idx`` (same count, with replacement, ``seed``), sorted; frames whose id is
    in ``keep`` are included at least once."""
    rng = np.random.default_rng(seed)
    draw = rng.choice(np.asarray(train_idx), size=len(train_idx), replace=True).tolist()
    kept = {i for i in train_idx if frame_ids[i] in set(keep)}
    out = list(draw)
    for m in sorted(kept - set(draw)):
        # replace a draw from the end that is not the only draw of a kept frame
        j = next(j for j in range(len(out) - 1, -1, -1) if out[j] not in kept or out.count(out[j]) > 1)
        out[j] = m
    return sorted(out)


def repeat_indices(train_idx: list[int], frame_ids: list[str], repeat: dict[str, int]) -> list[int]:
    """``train_idx`` with each frame whose id matches a glob of ``repeat`` listed n times (the largest n of the
    matching globs), sorted; the epoch order shuffles them (``data.repeat``)."""
    import fnmatch

    out = []
    for i in train_idx:
        n = max([int(k) for pat, k in repeat.items() if fnmatch.fnmatchcase(frame_ids[i], pat)], default=1)
        out += [i] * n
    return sorted(out)


def perturb_weights(model: torch.nn.Module, scale: float, seed: int, frozen: list[str]) -> None:
    """Multiply each trainable floating parameter not under a ``frozen`` prefix by (1 + scale · N(0, 1))."""
    gen = torch.Generator().manual_seed(10_007 + seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.is_floating_point() and not any(name.startswith(f) for f in frozen):
                p.mul_(1 + scale * torch.randn(p.shape, generator=gen, dtype=p.dtype))


def freeze_parameters(model: torch.nn.Module, prefixes: list[str]) -> None:
    """requires_grad = False for parameters whose name starts with one of ``prefixes`` (ValueError if a prefix
    matches nothing)."""
    names = [n for n, _ in model.named_parameters()]
    for prefix in prefixes:
        if not any(n.startswith(prefix) for n in names):
            raise ValueError(f"run.freeze: no parameter name starts with {prefix!r}")
    for name, p in model.named_parameters():
        if any(name.startswith(f) for f in prefixes):
            p.requires_grad_(False)


def _seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)


def _lr_lambda(cfg: TrainConfig):
    warm, total, floor = cfg.optim.warmup_steps, cfg.optim.max_steps, cfg.optim.min_lr_ratio

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        t = min(1.0, (step - warm) / max(1, total - warm))
        return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * t))

    return factor


def _wrap_ddp(model: torch.nn.Module, info: DistInfo, needs: dict[str, bool]) -> torch.nn.Module:
    """DistributedDataParallel for multi-process runs; heads that are never evaluated (no Hamiltonian labels)
    make DDP look for unused parameters."""
    if not info.enabled:
        return model
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(model, find_unused_parameters=not needs["compute_hamiltonian"])


def _global_needs(examples: list[dict], cfg: TrainConfig) -> dict[str, bool]:
    """Model outputs to compute in every step (the same on every process, so DDP sees the same graph)."""
    has = {k: any(bool(ex[k]) for ex in examples) for k in ("has_forces", "has_stress", "has_ham")}
    return {"compute_forces": has["has_forces"] and cfg.loss.forces > 0,
            "compute_stress": has["has_stress"] and cfg.loss.stress > 0,
            "compute_hamiltonian": has["has_ham"] and (cfg.loss.hamiltonian > 0 or cfg.loss.bands > 0)}


def _touch(out: dict[str, torch.Tensor]) -> torch.Tensor:
    """0 × every output, so every parameter takes part in backward on every process (DDP requirement)."""
    total = None
    for key in (K.ENERGY, K.FORCES, K.STRESS, K.HAM_BLOCKS):
        if key in out and out[key].requires_grad:
            part = out[key].sum() * 0.0
            total = part if total is None else total + part
    return total if total is not None else torch.zeros(())


def _detached(out: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach() for k, v in out.items()}


def _flatten(terms: dict[str, Term]) -> list[float]:
    """[normalised sums..., counts..., physical squared sums...] in ``TERM_NAMES`` order (for all-reduce)."""
    empty = Term(torch.zeros(()), 0.0, 0.0)
    got = [terms.get(n, empty) for n in TERM_NAMES]
    return [float(t.value.detach()) for t in got] + [t.count for t in got] + [t.sq for t in got]


def _counts(flat: list[float]) -> dict[str, float]:
    n = len(TERM_NAMES)
    return dict(zip(TERM_NAMES, flat[n:2 * n]))


def _loss_value(flat: list[float], cfg) -> float:
    """The weighted loss from flattened global sums."""
    counts = _counts(flat)
    return float(sum(term_weight(name, cfg) * flat[k] / counts[name]
                     for k, name in enumerate(TERM_NAMES) if counts[name] > 0))


def _rmse(flat: list[float]) -> dict[str, float]:
    """Per-term RMSE in physical units (eV/atom, eV/Å, eV/Å³, eV) from flattened global sums."""
    counts, n = _counts(flat), len(TERM_NAMES)
    return {f"rmse_{name}": math.sqrt(flat[2 * n + k] / counts[name])
            for k, name in enumerate(TERM_NAMES) if counts[name] > 0}


def _truncate_log(path: Path, step: int) -> None:
    """Drop log lines written after the checkpoint we resume from (they will be written again)."""
    if not path.is_file():
        return
    keep = [ln for ln in path.read_text().splitlines() if ln.strip() and json.loads(ln).get("step", 0) <= step]
    path.write_text("".join(ln + "\n" for ln in keep))
