"""Runtime settings: kernel selection (ISA dispatch) and the thread count."""
from __future__ import annotations

import contextlib
import os
import platform

from . import _core

_ISAS = ("scalar", "avx2", "avx512")


def _apply_isa_cap() -> None:
    requested = os.environ.get("CONVCORE_ISA")
    if requested is None or requested == "":
        return
    if requested not in _ISAS:
        raise ValueError(f"CONVCORE_ISA={requested!r} is not one of {', '.join(_ISAS)}")
    detected = _core.detected_isa()
    capped = _ISAS[min(_ISAS.index(requested), _ISAS.index(detected))]
    _core.select_isa(capped)


def cpu_info() -> dict:
    """What the CPU supports, which kernel variants were compiled and which are in use, and the threads."""
    return {
        "machine": platform.machine(),
        "detected_isa": _core.detected_isa(),
        "compiled_isas": list(_core.compiled_isas()),
        "selected_isa": _core.selected_isa(),
        "gemm_kernel": _core.gemm_kernel_name(),
        "pool_kernel": _core.pool_kernel_name(),
        "num_threads": _core.get_num_threads(),
        "forked_child": _core.in_forked_child(),
        "isa_cap": os.environ.get("CONVCORE_ISA") or None,
    }


def set_num_threads(n: int) -> None:
    """Set the number of threads every convcore kernel uses (n >= 1)."""
    if isinstance(n, bool) or not isinstance(n, int):
        raise TypeError(f"n must be an int, got {type(n).__name__}")
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    _core.set_num_threads(n)


def get_num_threads() -> int:
    """The number of threads convcore kernels use (initially OMP_NUM_THREADS or the core count).

    Always 1 in a process forked from one that loaded convcore: OpenMP's (libgomp's) thread pool does not survive
    fork(), and a parallel region there would wait forever, so a forked child computes serially (and correctly).
    Worker processes that should use threads must be started with the "spawn" or "forkserver" method.
    """
    return _core.get_num_threads()


@contextlib.contextmanager
def threads(n: int):
    """Run the body with `n` threads, restoring the previous setting afterwards."""
    previous = get_num_threads()
    set_num_threads(n)
    try:
        yield
    finally:
        _core.set_num_threads(previous)
