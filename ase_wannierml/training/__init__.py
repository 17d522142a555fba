"""Training: frames → cached graphs + targets, the joint loss, the trainer, evaluation, command lines.

    wannierml train config.yaml [--resume]          # see examples/train_config.yaml
    wannierml evaluate model.pt frames/ ...          # accuracy table (meV)

Energy zero: Hamiltonian targets are H − E_F (the frame's DFT Fermi level), so trained models have
``fermi_level = 0`` and ``predict_tightbinding`` returns energies relative to E_F.
Modules: ``config`` (typed YAML config), ``frames`` (reading frame folders), ``assign`` (Wannier functions →
atoms/shells, gauge checks), ``targets`` (H(R) → the model's pair list), ``dataset`` (compact cache), ``loss``,
``bands`` (differentiable H(k)), ``stats`` (loss scales, e0s), ``trainer``, ``checkpoint``, ``ema``,
``distributed`` (torchrun/gloo), ``evaluate``, ``cli``, ``synthetic`` (known-physics frames for tests).
"""
