"""Band plots relative to the Fermi level (matplotlib, imported on use).

ASE's ``BandStructure.plot(emin, emax)`` draws absolute energies and reads ``emin``/``emax`` as absolute, while the
Hamiltonians here are referenced to the vacuum level (E_F ≈ −4.2 eV for graphene): ``plot_bands`` draws E − E_F
with the E_F line and a labelled axis, the view used by the CLI, the examples and the README.
"""
from __future__ import annotations

from typing import Any

import numpy as np

ENERGY_LABEL = "E − E_F (eV)"


def plot_bands(bs: Any, ax: Any = None, emin: float | None = -1.0, emax: float | None = 1.0, points: bool = False,
               color: str = "tab:blue", label: str | None = None, filename: str | None = None,
               ylabel: str = ENERGY_LABEL, markersize: float = 2.5) -> Any:
    """Draw an ASE ``BandStructure`` (energies eV, ``bs.reference`` = E_F) as E − E_F in [``emin``, ``emax``] eV
    (None: matplotlib's limits).

    ``points``: draw each state as a point; use it for the ``num`` states nearest E_F (sparse solver): that set
    changes along the path, so joining them by index would draw false lines. Returns the matplotlib ``Axes``; with
    ``filename`` the figure is also saved (PNG, 150 dpi).
    """
    import matplotlib.pyplot as plt

    if ax is None:
        ax = plt.figure(figsize=(5, 4)).add_subplot(111)
    x, label_x, labels = bs.get_labels()
    e_kn = np.asarray(bs.energies[0]) - bs.reference
    if points:
        ax.plot(np.repeat(x, e_kn.shape[1]), e_kn.ravel(), ".", ms=markersize, color=color, label=label)
    else:
        lines = ax.plot(x, e_kn, "-", lw=1.0, color=color)
        if label is not None:
            lines[0].set_label(label)
    for xi in label_x[1:-1]:
        ax.axvline(xi, color="0.5", lw=0.5)
    ax.axhline(0.0, color="k", lw=0.8, ls=":")
    ax.text(x[-1], 0.0, " " + ylabel.split("−")[-1].split("(")[0].strip(), va="center", ha="left", fontsize=8)
    ax.set_xticks(label_x, [lab.replace("G", "Γ") for lab in labels])
    ax.set_xlim(x[0], x[-1])
    ax.set_ylim(emin, emax)
    ax.set_ylabel(ylabel)
    if label is not None:
        ax.legend(loc="upper right", markerscale=4)
    if filename is not None:
        ax.figure.tight_layout()
        ax.figure.savefig(filename, dpi=150)
    return ax
