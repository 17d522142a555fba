"""Small torch helpers shared by the model modules (no state)."""
from __future__ import annotations

import contextlib
from typing import Iterator

import torch


@contextlib.contextmanager
def default_dtype(dtype: torch.dtype) -> Iterator[None]:
    """Temporarily set torch's default dtype (restored on exit, also on error).

    e3nn computes its constants (Wigner 3j symbols baked into tensor products, ``D_from_matrix`` generators) in the
    default dtype, so a float64 model must be *built* under float64 to be equivariant to ~1e-14 rather than ~1e-7.
    Not thread-safe (torch's default dtype is process-wide): build models from one thread.
    """
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


def scatter_sum(src: torch.Tensor, index: torch.Tensor, dim_size: int) -> torch.Tensor:
    """Sum rows of ``src`` (n, ...) into ``dim_size`` bins given by ``index`` (n,) int64 → (dim_size, ...)."""
    out = src.new_zeros((dim_size,) + tuple(src.shape[1:]))
    return out.index_add_(0, index, src)
