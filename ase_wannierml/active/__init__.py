"""Active learning from the committee's own dynamics (see docs/uncertainty.md, "Active learning").

One round: MD with the committee on bilayer supercells (2×2 … 4×4, 100–900 K, strained, sheared) and small
commensurate twisted cells → the snapshots where the members disagree most (forces, optionally bands) → DFT frames
through a pluggable labelling function → warm-started retraining of every member → errors before/after, all in a
JSON log; resumable after a kill::

    python -m ase_wannierml.active run active.yaml          # or: wannierml active run active.yaml
    python -m ase_wannierml.active status active.yaml
"""
from .loop import (ActiveConfig, ActiveLoop, QEFrameLabeller, candidate_cells, frame_errors, load_active_config,
                   record_round, run_md_snapshots, select_frames, write_frame)

__all__ = ["ActiveConfig", "ActiveLoop", "QEFrameLabeller", "candidate_cells", "frame_errors", "load_active_config",
           "record_round", "run_md_snapshots", "select_frames", "write_frame"]
