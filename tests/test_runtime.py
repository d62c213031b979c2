"""ISA dispatch and thread settings."""
import os
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

import convcore as cc


def test_cpu_info_reports_selection():
    info = cc.cpu_info()
    assert info["selected_isa"] in info["compiled_isas"]
    assert info["detected_isa"] in ("scalar", "avx2", "avx512")
    assert info["num_threads"] == cc.get_num_threads() >= 1


def test_threads_context_restores():
    before = cc.get_num_threads()
    with cc.threads(3):
        assert cc.get_num_threads() == 3
        with cc.threads(1):
            assert cc.get_num_threads() == 1
        assert cc.get_num_threads() == 3
    assert cc.get_num_threads() == before
    with pytest.raises(ValueError, match=r"n must be >= 1 and <= 4096 \(threads\), got 0"):
        with cc.threads(0):
            pass


def test_threads_blocks_hold_on_their_own_thread_only():
    # the block set the process-wide setting: two threads' overlapping blocks ran on each other's counts (the first on
    # 1, the second on 3 after the first ended), and the setting was left at 3 after both
    seen = {}
    first_in, second_in, first_out = threading.Event(), threading.Event(), threading.Event()

    def first():
        with cc.threads(3):
            first_in.set()
            second_in.wait()
            seen["first"] = cc.get_num_threads()
        first_out.set()

    def second():
        first_in.wait()
        with cc.threads(1):
            second_in.set()
            first_out.wait()
            seen["second"] = cc.get_num_threads()
            cc.set_num_threads(4)  # the process-wide setting: this block keeps its 1
            seen["second after set"] = cc.get_num_threads()
        seen["second after"] = cc.get_num_threads()

    before = cc.get_num_threads()
    try:
        cc.set_num_threads(2)
        workers = [threading.Thread(target=f) for f in (first, second)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        assert seen == {"first": 3, "second": 1, "second after set": 1, "second after": 4}
        assert cc.get_num_threads() == 4
    finally:
        cc.set_num_threads(before)


@pytest.mark.parametrize("bad", [0, -2, 4097, 2**31])
def test_set_num_threads_rejects_nonpositive_and_absurd(bad):
    with pytest.raises(ValueError, match=r"n must be >= 1 and <= 4096 \(threads\), got "):
        cc.set_num_threads(bad)


def test_set_num_threads_rejects_non_int():
    with pytest.raises(TypeError, match="n must be an int"):
        cc.set_num_threads(2.0)
    with pytest.raises(TypeError, match=r"^n must be an int, got np.True_$|^n must be an int, got True$"):
        cc.set_num_threads(np.bool_(True))


def test_thread_counts_and_cache_limits_take_numpy_ints():
    before = cc.get_num_threads()
    try:
        cc.set_num_threads(np.int64(2))
        assert cc.get_num_threads() == 2
        with cc.threads(np.int32(3)):
            assert cc.get_num_threads() == 3
        assert cc.get_num_threads() == 2
    finally:
        cc.set_num_threads(before)
    with pytest.raises(ValueError, match=r"^n must be >= 1 and <= 4096 \(threads\), got 0$"):
        cc.set_num_threads(np.uint8(0))
    limit = cc.buffer_cache_info()["limit_bytes"]
    try:
        cc.set_buffer_cache_limit(np.int64(1 << 20))
        assert cc.buffer_cache_info()["limit_bytes"] == 1 << 20
    finally:
        cc.set_buffer_cache_limit(limit)


def _run(env_extra, code):
    env = dict(os.environ, **env_extra)
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)


def test_isa_env_caps_selection():
    out = _run({"CONVCORE_ISA": "scalar"}, "import convcore as cc; print(cc.cpu_info()['selected_isa'])")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "scalar"
    out = _run({"CONVCORE_ISA": " Scalar "}, "import convcore as cc; print(cc.cpu_info()['selected_isa'])")
    assert out.returncode == 0 and out.stdout.strip() == "scalar", out.stderr  # was refused at import


def test_isa_env_invalid_value_is_named():
    out = _run({"CONVCORE_ISA": "sse9"}, "import convcore")
    assert out.returncode != 0
    assert "CONVCORE_ISA='sse9'" in out.stderr


def test_omp_num_threads_honoured():
    out = _run({"OMP_NUM_THREADS": "3"}, "import convcore as cc; print(cc.get_num_threads())")
    assert out.stdout.strip() == "3", out.stderr
    # past MAX_THREADS it is taken as MAX_THREADS: 100000 crashed the first parallel region (a segfault), 10**11
    # (read as 1215752191) aborted in libgomp
    for value in ("100000", str(10**11)):
        out = _run({"OMP_NUM_THREADS": value}, "import numpy as np, convcore as cc; a = np.ones((256, 256), "
                   "np.float32); print(cc.get_num_threads(), cc.functional.matmul(a, a)[0, 0])")
        assert out.returncode == 0 and out.stdout.split() == ["4096", "256.0"], out.stderr


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_forked_child_after_parallel_work_completes_serially():
    # libgomp's pool does not survive fork(); without the guard the child's first parallel region hangs forever.
    a = np.random.default_rng(0).random((300, 300), dtype=np.float32)
    with cc.threads(2):
        expected = cc.functional.matmul(a, a)  # runs a parallel region, creating the OpenMP pool
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:
            ok = np.array_equal(cc.functional.matmul(a, a), expected)
            os.write(write_end, b"%d %d" % (ok, cc.get_num_threads()))
            os._exit(0)
    os.close(write_end)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        time.sleep(0.02)
    else:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
        pytest.fail("forked child hung in a parallel region")
    assert os.waitstatus_to_exitcode(status) == 0
    assert os.read(read_end, 64) == b"1 1"  # correct result, computed with one thread
    os.close(read_end)
    assert not cc.cpu_info()["forked_child"]


# --- output-buffer cache ---

_REALLOCATION_FAULTS = """
import resource, sys
import numpy as np
import convcore as cc
cc.set_buffer_cache_limit(int(sys.argv[1]))
x = np.ones((64, 6, 28, 28), np.float32)   # 1.2 MB outputs, as LeNet-5's first layer at batch 64
y = cc.functional.relu(x)                   # allocated, written and freed
del y
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
y = cc.functional.relu(x)
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="page-fault counts from getrusage")
@pytest.mark.skipif("libasan" in os.environ.get("LD_PRELOAD", ""), reason="AddressSanitizer replaces malloc")
def test_output_of_a_repeated_shape_reuses_the_freed_block_without_page_faults():
    # glibc returns a freed 1.2 MB block to the OS (munmap) and its ~300 pages fault back in on the next
    # allocation; from the cache it comes back mapped. With the cache off the faults return (the test's control).
    def faults(limit):
        return int(subprocess.run([sys.executable, "-c", _REALLOCATION_FAULTS, str(limit)], capture_output=True,
                                  text=True, check=True).stdout)
    assert faults(256 << 20) < 30
    assert faults(0) > 200


@pytest.fixture
def buffer_cache():
    previous = cc.buffer_cache_info()["limit_bytes"]
    yield
    cc.set_buffer_cache_limit(previous)


def test_buffer_cache_reuses_freed_outputs_and_counts(buffer_cache):
    cc.set_buffer_cache_limit(0)  # empty: blocks earlier tests left idle could leave no room under the limit for y's
    cc.set_buffer_cache_limit(256 << 20)
    x = np.ones((8, 16, 32, 32), np.float32)  # 512 KiB
    y = cc.functional.relu(x)
    address = y.ctypes.data
    del y
    before = cc.buffer_cache_info()
    assert before["idle_bytes"] >= x.nbytes
    z = cc.functional.relu(x)
    after = cc.buffer_cache_info()
    assert z.ctypes.data == address and address % 64 == 0 and after["reused"] == before["reused"] + 1
    assert after["idle_bytes"] < before["idle_bytes"]
    np.testing.assert_array_equal(z, x)


def test_buffer_cache_never_hands_out_memory_a_view_still_uses(buffer_cache):
    cc.set_buffer_cache_limit(256 << 20)
    x = np.full((8, 16, 32, 32), 2.0, np.float32)
    y = cc.functional.relu(x)
    view = y[1:]
    del y  # the view keeps the block alive
    z = cc.functional.relu(-x)
    assert not np.shares_memory(view, z)
    assert (view == 2.0).all() and (z == 0.0).all()
    del z
    base = view.base
    del view, base
    w = cc.functional.relu(x)
    assert (w == 2.0).all()


def test_buffer_cache_limit_caps_idle_memory_and_zero_turns_it_off(buffer_cache):
    x = np.ones((4, 16, 32, 32), np.float32)  # 256 KiB
    cc.set_buffer_cache_limit(256 << 20)
    ys = [cc.functional.relu(x) for _ in range(4)]
    del ys
    assert cc.buffer_cache_info()["idle_bytes"] >= 4 * x.nbytes
    cc.set_buffer_cache_limit(x.nbytes + 8192)  # lowering the cap frees the excess at once
    assert cc.buffer_cache_info()["idle_bytes"] <= x.nbytes + 8192
    cc.set_buffer_cache_limit(0)
    assert cc.buffer_cache_info()["idle_bytes"] == 0
    allocated = cc.buffer_cache_info()["allocated"]
    for _ in range(3):
        cc.functional.relu(x)
    info = cc.buffer_cache_info()
    assert info["allocated"] == allocated + 3 and info["idle_bytes"] == 0


@pytest.mark.parametrize("bad,error", [(-1, ValueError), (1.5, TypeError), (True, TypeError), ("1", TypeError)])
def test_set_buffer_cache_limit_rejects_bad_values(bad, error):
    with pytest.raises(error, match="max_bytes"):
        cc.set_buffer_cache_limit(bad)



class _Clock:
    """A stand-in for convcore._runtime's time module: perf_counter() reads `now`, which blocks move on."""

    def __init__(self):
        self.now = 0.0

    def perf_counter(self):
        return self.now


@pytest.fixture
def clock(monkeypatch):
    fake = _Clock()
    monkeypatch.setattr(cc._runtime, "time", fake)
    return fake


def _timed_blocks(choice, clock, count, seconds_on):
    """Runs `count` blocks under choice, each taking seconds_on[threads it runs on] on the clock; the counts they
    ran on."""
    used = []
    for _ in range(count):
        with choice:
            n = cc.get_num_threads()
            assert n == choice.last_threads
            used.append(n)
            clock.now += seconds_on[n]
    return used


def test_thread_choice_times_each_count_then_runs_the_fastest(clock):
    # two blocks on the setting, two on its half, ... then the fastest; the setting is back after each block
    with cc.threads(4):
        choice = cc.ThreadChoice()
        assert choice.last_threads == 0
        used = _timed_blocks(choice, clock, 10, {4: 0.004, 2: 0.001, 1: 0.002})
        assert used[:6] == [4, 4, 2, 2, 1, 1] and used[6:] == [2] * 4, used
        assert cc.get_num_threads() == 4
        faster_on_4 = cc.ThreadChoice()
        assert _timed_blocks(faster_on_4, clock, 10, {4: 0.001, 2: 0.004, 1: 0.004})[6:] == [4] * 4
        # 2 threads get slower than 1 had been: the third such block moves the choice to 1 thread
        used = _timed_blocks(choice, clock, 6, {4: 0.004, 2: 0.006, 1: 0.002})
        assert used[:3] == [2, 2, 2] and used[3:] == [1] * 3, used
    with cc.threads(2):  # a new setting starts afresh
        assert _timed_blocks(choice, clock, 4, {2: 0.001, 1: 0.001}) == [2, 2, 1, 1]


def test_thread_choice_does_not_count_a_block_that_raises_and_refuses_a_second_block(clock):
    choice = cc.ThreadChoice()
    with cc.threads(2):
        with pytest.raises(KeyError):
            with choice:
                raise KeyError("step failed")
        assert cc.get_num_threads() == 2
        # the failed block was not counted: the setting still has its two blocks to run first
        assert _timed_blocks(choice, clock, 2, {2: 0.001}) == [2, 2]
        with choice:  # on 1 thread now, the half's first block
            with pytest.raises(RuntimeError, match="has a block open already: it times one block at a time"):
                with choice:
                    pass
            inner = cc.ThreadChoice()  # another choice inside: its setting is the block's count
            assert _timed_blocks(inner, clock, 3, {1: 0.001}) == [1, 1, 1]
            assert cc.get_num_threads() == 1
            with cc.threads(2):  # sets the setting, the block's cap still holds on this thread
                assert cc.get_num_threads() == 1
            assert cc._core.thread_setting() == 2
        assert cc.get_num_threads() == 2
        with pytest.raises(RuntimeError, match="without an open block"):
            choice.__exit__(None, None, None)


def test_a_keyboard_interrupt_anywhere_leaves_no_thread_choice_block_open():
    # Ctrl-C raises KeyboardInterrupt between Python bytecodes: with __enter__ and __exit__ written in Python, one that
    # landed inside them (after the cap, before the with statement held __exit__; or in __exit__ before the block was
    # cleared) left the block open: every later block refused, the thread capped (a helper's review). Interrupts are
    # raised here at each Python line run inside the with statement's own calls in turn, as a signal would be.
    import sys
    x, w = np.ones((2, 8, 16, 16), np.float32), np.ones((8, 8, 3, 3), np.float32)
    for target in range(1, 12):
        choice = cc.ThreadChoice()
        lines = 0

        def tracer(frame, event, arg):
            def local(frame, event, arg):
                nonlocal lines
                if event == "line":
                    lines += 1
                    if lines == target:
                        raise KeyboardInterrupt
                return local
            return local if frame.f_code.co_name in ("__enter__", "__exit__") else None
        with cc.threads(2):
            for _ in range(3):
                try:
                    sys.settrace(tracer)
                    with choice:
                        sys.settrace(None)
                        cc.functional.conv2d(x, w)
                        sys.settrace(tracer)
                except KeyboardInterrupt:
                    pass
                finally:
                    sys.settrace(None)
            assert cc.get_num_threads() == 2, target
            with choice:  # not refused as open already
                assert cc.get_num_threads() == choice.last_threads
            assert cc.get_num_threads() == 2


def test_thread_choice_caps_only_the_thread_that_entered(clock):
    choice = cc.ThreadChoice()
    seen = {}
    entered, done = threading.Event(), threading.Event()

    def other():
        entered.wait()
        with cc.threads(2):  # a threads block holds on its own thread: this one's, as the main thread's below
            seen["other"] = cc.get_num_threads()
        try:
            with choice:  # one block at a time, from any thread
                pass
        except RuntimeError:
            seen["refused"] = True
        done.set()

    with cc.threads(2):
        _timed_blocks(choice, clock, 2, {2: 0.001})
        worker = threading.Thread(target=other)
        worker.start()
        with choice:  # on 1 thread here, 2 on the other thread
            seen["inside"] = cc.get_num_threads()
            entered.set()
            done.wait()
        worker.join()
    assert seen == {"inside": 1, "other": 2, "refused": True}


def test_a_thread_choice_block_may_end_on_another_thread(clock):
    # the cap a block holds ends wherever its __exit__ runs (a with-block held by a generator may close on another
    # thread; the caps' order and threads: cpp/tests/test_threads.cpp)
    choice = cc.ThreadChoice()
    with cc.threads(2):
        assert _timed_blocks(choice, clock, 2, {2: 0.001}) == [2, 2]
        choice.__enter__()  # the half's first block: 1 thread
        assert cc.get_num_threads() == 1
        ender = threading.Thread(target=choice.__exit__, args=(None, None, None))
        ender.start()
        ender.join()
        assert cc.get_num_threads() == 2
        with choice:  # not open any more
            pass
    with pytest.raises(RuntimeError, match="exited without being entered"):
        cc._core.ThreadSetting(3).__exit__(None, None, None)


def test_a_thread_choice_block_closes_though_its_clock_raises():
    # a clock that raised in __exit__ (a stand-in's KeyboardInterrupt) left the block open: every later one refused
    calls = []

    def clock():
        calls.append(None)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return float(len(calls))
    choice = cc._core.ThreadChoice(clock)
    with cc.threads(2):
        with pytest.raises(KeyboardInterrupt):
            with choice:
                assert cc.get_num_threads() == 2
        assert cc.get_num_threads() == 2
        with choice:  # not refused as open already
            pass
