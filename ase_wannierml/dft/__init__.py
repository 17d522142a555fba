"""Quantum ESPRESSO + Wannier90 data workflow: configuration sampling, per-frame runs, resumable batches."""
from .codes import Runner, check_codes, code_versions
from .materials import GRAPHENE_BILAYER, MATERIALS, MOS2_BILAYER, MaterialSpec, get_material
from .sampling import FrameParams, build_structure, frame_plan, sample_frame
from .workflow import prepare_inputs, run_frame

__all__ = ["Runner", "check_codes", "code_versions", "GRAPHENE_BILAYER", "MOS2_BILAYER", "MATERIALS",
           "MaterialSpec", "get_material", "FrameParams", "build_structure", "frame_plan", "sample_frame",
           "prepare_inputs", "run_frame"]
