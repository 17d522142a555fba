"""Electron–phonon coupling and phonons from the one model (see docs/electron_phonon.md).

- dH/dR: ``WannierMLCalculator.get_hamiltonian_derivative`` (autograd, ``model/derivative.py``);
- :mod:`.phonons`: force constants (ASE ``Phonons``), modes at commensurate q, band paths, rigid-layer character;
- :mod:`.coupling`: g_mn^ν(k, q) of the Wannier-interpolated bands, Fermi-surface ⟨g²⟩;
- :mod:`.flatband`: Hellmann–Feynman coupling of a few states near an energy (moiré flat bands) to one pattern;
- :mod:`.frozen`: frozen-phonon tools (real pattern of a Bloch mode, frequency from forces at ±u, primitive matrix
  elements from a supercell dH along a real pattern) for DFT checks.
"""
from .coupling import fermi_average_g2, matrix_elements, zero_point_length
from .flatband import rigid_layer_pattern, state_coupling
from .frozen import frozen_phonon_frequency, matrix_from_real_pattern, real_pattern
from .phonons import commensurate_supercell, force_constants, layer_character, make_supercell, modes_at_q, phonon_bands

__all__ = ["commensurate_supercell", "fermi_average_g2", "force_constants", "frozen_phonon_frequency",
           "layer_character", "make_supercell", "matrix_elements", "matrix_from_real_pattern", "modes_at_q",
           "phonon_bands", "real_pattern", "rigid_layer_pattern", "state_coupling", "zero_point_length"]
