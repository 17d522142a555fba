"""Quantum ESPRESSO + Wannier90 data workflow: configuration sampling, per-frame runs, frames for any structure
(``compute_frames``) and resumable batches, as tasks on Dask (``engine``); materials as YAML files."""
from .codes import Runner, check_codes, code_versions
from .materials import GRAPHENE_BILAYER, MATERIALS, MOS2_BILAYER, MaterialSpec, get_material
from .sampling import FrameParams, build_structure, frame_plan, sample_frame
from .workflow import prepare_inputs, run_frame
from .compute import assign_layers, compute_frames, frame_id_for, read_structures
from .engine import EngineSettings
from .material_files import load_material

__all__ = ["Runner", "check_codes", "code_versions", "GRAPHENE_BILAYER", "MOS2_BILAYER", "MATERIALS",
           "MaterialSpec", "get_material", "FrameParams", "build_structure", "frame_plan", "sample_frame",
           "prepare_inputs", "run_frame", "compute_frames", "assign_layers", "frame_id_for", "read_structures",
           "EngineSettings", "load_material"]
