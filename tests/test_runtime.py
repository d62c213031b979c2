"""ISA dispatch and thread settings."""
import os
import subprocess
import sys

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
    assert cc.get_num_threads() == before


@pytest.mark.parametrize("bad", [0, -2])
def test_set_num_threads_rejects_nonpositive(bad):
    with pytest.raises(ValueError, match="n must be >= 1"):
        cc.set_num_threads(bad)


def test_set_num_threads_rejects_non_int():
    with pytest.raises(TypeError, match="n must be an int"):
        cc.set_num_threads(2.0)


def _run(env_extra, code):
    env = dict(os.environ, **env_extra)
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)


def test_isa_env_caps_selection():
    out = _run({"CONVCORE_ISA": "scalar"}, "import convcore as cc; print(cc.cpu_info()['selected_isa'])")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "scalar"


def test_isa_env_invalid_value_is_named():
    out = _run({"CONVCORE_ISA": "sse9"}, "import convcore")
    assert out.returncode != 0
    assert "CONVCORE_ISA='sse9'" in out.stderr


def test_omp_num_threads_honoured():
    out = _run({"OMP_NUM_THREADS": "3"}, "import convcore as cc; print(cc.get_num_threads())")
    assert out.stdout.strip() == "3", out.stderr


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_forked_child_after_parallel_work_completes_serially():
    # libgomp's pool does not survive fork(); without the guard the child's first parallel region hangs forever.
    import time

    import numpy as np

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
