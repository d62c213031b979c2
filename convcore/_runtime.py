"""Runtime settings: kernel selection (ISA dispatch), the thread count and the output-buffer cache."""
from __future__ import annotations

import contextlib
import os
import platform
import time

from . import _core
from ._validate import as_int

_ISAS = ("scalar", "avx2", "avx512")
MAX_THREADS = _core.max_threads  # more OpenMP threads than any machine has cores: refused rather than created


def _apply_isa_cap() -> None:
    requested = os.environ.get("CONVCORE_ISA", "").strip().lower()  # "AVX2" and "avx2 " as "avx2"
    if requested == "":
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


def _thread_count(n) -> int:
    n = as_int(n, "n")
    if n < 1 or n > MAX_THREADS:
        raise ValueError(f"n must be >= 1 and <= {MAX_THREADS} (threads), got {n}")
    return n


def set_num_threads(n: int) -> None:
    """Set the number of threads every convcore kernel uses (1 <= n <= MAX_THREADS; a Python or numpy int): the
    process-wide setting, which a thread inside a `threads` block takes up again after it."""
    _core.set_num_threads(_thread_count(n))


def get_num_threads() -> int:
    """The number of threads convcore kernels called from this thread use: inside a `threads` block its count, else
    the process-wide setting (initially OMP_NUM_THREADS, at most MAX_THREADS, or the core count); inside a
    ThreadChoice block, at most that block's count.

    Always 1 in a process forked from one that loaded convcore: OpenMP's (libgomp's) thread pool does not survive
    fork(), and a parallel region there would wait forever, so a forked child computes serially (and correctly).
    Worker processes that should use threads must be started with the "spawn" or "forkserver" method.
    """
    return _core.get_num_threads()


@contextlib.contextmanager
def threads(n: int):
    """Run the body with `n` threads on the calling thread: its setting is n until the block ends, whatever other
    threads set or run meanwhile (their own blocks, set_num_threads), and then what it was. Blocks nest; a ThreadChoice
    block around one still caps the thread it runs on."""
    setting = _core.ThreadSetting(_thread_count(n))
    setting.__enter__()
    try:
        yield
    finally:
        setting.__exit__(None, None, None)


class ThreadChoice(_core.ThreadChoice):
    """Runs each `with` block on the thread count its blocks have been timed fastest on.

    For one piece of work repeated many times, such as a training step (convcore.fit runs its steps so)::

        choice = cc.ThreadChoice()
        for xb, yb in batches:
            with choice:
                ...  # forward, loss, backward, optimizer step

    Each block runs on the thread setting (get_num_threads) or one of its halvings (n, n / 2, ..., 1), as timed: every
    candidate runs two blocks first, the setting's first; then the fastest runs, and now and then another is timed
    again over two blocks, so that a change of the fastest shows: once the blocks since the last such probe (or since
    the fastest changed) have taken 200 times its time, twice that after each probe that finds it still the slower, up
    to 1600 times (the probes' blocks are 1% of the blocks' time at first, 0.125% at the widest). Results do not depend
    on the count: convcore's kernels give the same bits on any number of threads.

    Two threads are not always faster than one: where the cores are far apart (on different L3 caches or dies, or a
    cloud host running the two vCPUs there) what one thread writes and the other reads next costs more than a small
    network's work saves (a LeNet-5 training step at batch 32, AMD EPYC Zen 4, 2 vCPUs: 0.55 ms on 2 threads near,
    0.88 far, 0.81 on 1 thread in both).

    The count caps the thread that entered the block (its kernels, and the threads they start), which should not await
    or yield inside it (other work on that thread would run capped). A ThreadChoice times one block at a time: a
    second one entered while a block is open (nested, or from another thread) raises RuntimeError; use one per thread.
    Blocks that differ in size (a shorter last batch) should run outside it, and a block that raises is not counted.
    last_threads: the count the last block entered runs on, 0 before any. A KeyboardInterrupt at any moment leaves
    no block open: entering and leaving a block are each one native call.
    """

    def __init__(self):
        super().__init__(time.perf_counter)  # the module's clock, looked up now (the tests' stand-in clocks)


def set_buffer_cache_limit(max_bytes: int) -> None:
    """Cap the memory convcore keeps for reuse from freed output arrays and kernel workspace (default 256 MiB;
    0 turns caching off).

    Every array a convcore kernel returns is allocated from the output cache and its memory goes back to it when
    the array and all its views are gone, so a training step reuses the previous step's blocks instead of asking
    the OS for fresh pages (glibc returns large freed blocks to the OS, and faulting them back in cost ~25% of a
    LeNet-5 step). The workspace a kernel uses on one of its threads comes from that thread's own cache, so that
    it stays in that core's cache from call to call; a thread's cache is freed when the thread ends. Blocks of
    32 KiB and more are kept, matched by size rounded up to 4 KiB; the cap is on the idle bytes of all the caches
    together, and a block freed while they would pass it goes back to the allocator. Lowering the cap frees the
    excess at once. In a process forked from this one only the forking thread's cache and the output cache are
    kept (the other threads are gone there, and their blocks are freed).
    """
    max_bytes = as_int(max_bytes, "max_bytes", minimum=0)
    _core.set_buffer_cache_limit(min(max_bytes, 2 ** 63 - 1))


def buffer_cache_info() -> dict:
    """The buffer caches (set_buffer_cache_limit's) together: idle_bytes (held for reuse now), limit_bytes (the
    cap on idle_bytes), and how many output and workspace allocations were served from them (reused) or newly
    allocated (allocated), counting blocks of 32 KiB and more."""
    return _core.buffer_cache_info()
