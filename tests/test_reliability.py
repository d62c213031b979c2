"""Reliability: concurrency, thread-count determinism, crash-safe checkpoints under SIGKILL, and the checkpoint
fuzz run (the last two are long: marked slow, run by CI)."""
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import convcore as cc
from convcore import checkpoint

HERE = Path(__file__).resolve().parent


def test_eight_threads_share_models_and_match_serial_results():
    rng = np.random.default_rng(0)
    residual = cc.nn.Sequential(cc.nn.Conv2d(1, 8, 3, stride=2, rng=1), cc.nn.BatchNorm2d(8), cc.nn.ReLU(),
                                cc.nn.BasicBlock(8, 16, stride=2, rng=2), cc.nn.GlobalAvgPool2d(), cc.nn.Flatten(),
                                cc.nn.Linear(16, 10, rng=3))
    models = [cc.models.lenet5(seed=0).eval(), residual.eval(), cc.nn.freeze(residual)]
    inputs = [rng.random((1, 1, 28, 28), dtype=np.float32) for _ in range(8)]
    expected = [[m(x) for m in models] for x in inputs]
    failures = []

    def worker(t):
        for i in range(1000):
            m = i % 3
            if not np.array_equal(models[m](inputs[t]), expected[t][m]):
                failures.append((t, i))
                return

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert failures == []


def _train_few_steps(threads):
    with cc.threads(threads):
        rng = np.random.default_rng(0)
        model = cc.models.resnet20(in_channels=1, seed=0)
        opt = cc.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
        loss = cc.nn.CrossEntropyLoss()
        for _ in range(3):
            x = rng.random((8, 1, 16, 16), dtype=np.float32)
            y = rng.integers(0, 10, 8)
            opt.zero_grad()
            loss(model(x), y)
            model.backward(loss.backward())
            opt.step()
        big = cc.functional.conv2d(rng.random((4, 32, 20, 20), dtype=np.float32),
                                   rng.random((32, 32, 3, 3), dtype=np.float32), padding=1)
        return model.state_dict(), big


def test_training_is_bitwise_identical_for_1_to_4_threads_and_across_runs():
    reference_state, reference_big = _train_few_steps(1)
    for threads in (2, 3, 4, 2):
        state, big = _train_few_steps(threads)
        assert np.array_equal(big, reference_big)
        for key, value in reference_state.items():
            assert np.array_equal(state[key], value), (threads, key)


@pytest.mark.slow
def test_checkpoints_survive_100_kills_during_save(tmp_path):
    pytest.importorskip("safetensors")
    model = cc.nn.Sequential(cc.nn.Conv2d(3, 16, 3, rng=0), cc.nn.ReLU(), cc.nn.Flatten(),
                             cc.nn.Linear(16 * 36, 10, rng=1))
    chooser = random.Random(0)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE.parent), os.environ.get("PYTHONPATH", "")])}
    last_step, kills = 0, 0
    while kills < 100:
        child = subprocess.Popen([sys.executable, str(HERE / "reliability_save_loop.py"), str(tmp_path),
                                  str(last_step)], stdout=subprocess.PIPE, env=env)
        assert child.stdout.readline().strip() == b"ready"
        time.sleep(chooser.uniform(0.0, 0.05))
        child.send_signal(signal.SIGKILL)
        child.wait()
        kills += 1
        if checkpoint.latest(tmp_path) is None:
            continue
        meta = checkpoint.load(tmp_path, model)  # must load: the last complete checkpoint
        assert meta["step"] >= last_step
        for p in model.parameters():
            assert (p.data == meta["step"]).all()
        last_step = meta["step"]
    assert last_step > 0


@pytest.mark.slow
def test_fuzz_checkpoint_loader():
    pytest.importorskip("atheris")
    pytest.importorskip("safetensors")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE.parent), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, str(HERE / "fuzz" / "fuzz_checkpoint.py"), "-runs=20000",
                           "-max_len=4096"], capture_output=True, text=True, env=env, timeout=1200)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Done 20000 runs" in proc.stderr


@given(n=st.integers(0, 3), c=st.integers(1, 4), k=st.integers(1, 4), hw=st.integers(3, 9), r=st.integers(1, 3),
       stride=st.integers(1, 3), padding=st.integers(0, 1), pool=st.booleans(), seed=st.integers(0, 2**32 - 1))
def test_layer_stack_property_matches_float64_reference(n, c, k, hw, r, stride, padding, pool, seed):
    # a Conv2d -> ReLU [-> MaxPool2d] -> Flatten -> Linear stack, forward and input gradient, on small integers:
    # the float32 layers (fused conv+ReLU epilogue, fast kernels) equal the float64 numpy reference exactly
    from reference import conv as ref_conv
    from reference import pool as ref_pool

    rng = np.random.default_rng(seed)
    conv = cc.nn.Conv2d(c, k, r, stride=stride, padding=padding, rng=rng)
    conv.weight.data[...] = rng.integers(-2, 3, conv.weight.data.shape)
    conv.bias.data[...] = rng.integers(-2, 3, k)
    p = (hw + 2 * padding - r) // stride + 1
    pooled = p // 2 if pool and p >= 2 else p
    use_pool = pool and p >= 2
    layers = [conv, cc.nn.ReLU()] + ([cc.nn.MaxPool2d(2)] if use_pool else []) + [cc.nn.Flatten()]
    fc = cc.nn.Linear(k * pooled * pooled, 3, rng=rng)
    fc.weight.data[...] = rng.integers(-2, 3, fc.weight.data.shape)
    fc.bias.data[...] = 0
    model = cc.nn.Sequential(*layers, fc)
    x = rng.integers(-2, 3, (n, c, hw, hw)).astype(np.float32)
    y = model(x)
    z = np.maximum(ref_conv.conv2d(x, conv.weight.data, conv.bias.data, stride, padding), 0)
    if use_pool:
        z, idx = ref_pool.max_pool2d(z, 2, 2)
    expected = z.reshape(n, k * pooled * pooled) @ fc.weight.data.astype(np.float64).T
    assert np.array_equal(y, expected)
    dy = rng.integers(-2, 3, y.shape).astype(np.float32)
    dx = model.backward(dy)
    dz = (dy.astype(np.float64) @ fc.weight.data.astype(np.float64)).reshape(z.shape)
    a = ref_conv.conv2d(x, conv.weight.data, conv.bias.data, stride, padding)
    if use_pool:
        dz = ref_pool.max_pool2d_backward(dz, idx, a.shape)
    expected_dx = ref_conv.conv2d_backward(dz * (a > 0), x, conv.weight.data, stride, padding)[0]
    assert np.array_equal(dx, expected_dx)
