"""Progress bars for the engine's long loops over k-points (tqdm on stderr).

A bar appears only when stderr is a terminal and the loop has run for more than ``DELAY_S`` seconds, so short
calls, tests and logs stay quiet. ``ASE_WANNIERML_PROGRESS=0`` turns bars off, ``=1`` shows them also when stderr
is not a terminal. Imports nothing from ``tb`` (the bottom of its import order).
"""
from __future__ import annotations

import os
from typing import Iterable, TypeVar

PROGRESS_ENV = "ASE_WANNIERML_PROGRESS"
DELAY_S = 2.0  # s before a bar is drawn

T = TypeVar("T")


def progress(iterable: Iterable[T], total: int | None = None, desc: str = "k-points") -> Iterable[T]:
    """``iterable`` wrapped in a tqdm bar (``total`` items, labelled ``desc``) unless bars are off."""
    setting = os.environ.get(PROGRESS_ENV, "")
    if setting == "0":
        return iterable
    from tqdm import tqdm

    return tqdm(iterable, total=total, desc=desc, leave=False, delay=DELAY_S,
                disable=False if setting == "1" else None)
