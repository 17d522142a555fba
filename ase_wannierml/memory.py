"""How much memory a new allocation may use (bytes): the one place that reads ``$ASE_WANNIERML_MEMORY_GB`` /
``MemAvailable``. Used to refuse dense requests that cannot fit (``tb.solvers``) and to decide when the model
recomputes activations instead of storing them (``model.backbone``)."""
from __future__ import annotations

import os

__all__ = ["MEMORY_ENV", "available_memory_bytes"]

#: Environment variable (GB) overriding the memory a request may use (default: ``MemAvailable``).
MEMORY_ENV = "ASE_WANNIERML_MEMORY_GB"


def available_memory_bytes() -> int:
    """Memory a new allocation may use (bytes): ``$ASE_WANNIERML_MEMORY_GB`` if set, else ``MemAvailable`` from
    /proc/meminfo, else the physical memory."""
    env = os.environ.get(MEMORY_ENV, "").strip()
    if env:
        return int(float(env) * 1e9)
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):  # pragma: no cover - non-POSIX
        return 2**62
