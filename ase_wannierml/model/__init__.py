"""The torch/e3nn model: graph building, backbone, heads, model files (see DEVELOPING.md, "Contract: model").

Public API::

    model = build_model(orbitals={"C": ["pz"]}, cutoff=5.0)            # WannierMLModel
    graph = atoms_to_graph(atoms, model.config, dtype=torch.float32)   # Dict[str, Tensor], keys in keys.py
    out = model(graph, compute_forces=True, compute_stress=False, compute_hamiltonian=False)
    tb = model.predict_tightbinding(atoms)                             # TightBinding (eV)
    model.save("my_model.pt"); model = load_model("my_model.pt")       # or load_model("graphene-bilayer")
"""
from . import keys
from .config import ModelConfig
from .graph import atoms_to_graph, batch_graphs, detect_layers
from .io import FORMAT_VERSION, available_models, load_model, save_model
from .model import WannierMLModel, build_model

__all__ = [
    "FORMAT_VERSION", "ModelConfig", "WannierMLModel", "atoms_to_graph", "available_models", "batch_graphs",
    "build_model", "detect_layers", "keys", "load_model", "save_model",
]
