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

import convcore as cc
from convcore import checkpoint

HERE = Path(__file__).resolve().parent


def test_eight_threads_share_models_and_match_serial_results():
    rng = np.random.default_rng(0)
    residual = cc.nn.Sequential(cc.nn.Conv2d(1, 8, 3, stride=2, rng=1), cc.nn.BatchNorm2d(8), cc.nn.ReLU(),
                                cc.nn.BasicBlock(8, 16, stride=2, rng=2), cc.nn.GlobalAvgPool2d(), cc.nn.Flatten(),
                                cc.nn.Linear(16, 10, rng=3))
    models = [cc.models.lenet5(seed=0).eval(), residual.eval()]
    inputs = [rng.random((1, 1, 28, 28), dtype=np.float32) for _ in range(8)]
    expected = [[m(x) for m in models] for x in inputs]
    failures = []

    def worker(t):
        for i in range(1000):
            m = i % 2
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
