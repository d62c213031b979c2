"""The benchmark networks (benchmarks/lenet.py, resnet20.py, resnet18.py) give every side of bench_infer.py and
bench_train.py the same network with the same weights: convcore's, PyTorch's and ONNX Runtime's outputs on one input
agree to float32 rounding (a wrong stride, padding, shortcut, weight order or running statistic would not). The harness
(benchmarks/harness.py) gives a peer the thread counts a convcore ThreadChoice picks from and sees a side still busy
after its call."""
import subprocess
import sys
import time
import types
from pathlib import Path

import numpy as np
import pytest

import convcore as cc

torch = pytest.importorskip("torch")
pytest.importorskip("onnx")  # the graphs are written with it
ort = pytest.importorskip("onnxruntime")

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
import harness  # noqa: E402
import lenet  # noqa: E402
import resnet18  # noqa: E402
import resnet20  # noqa: E402


@pytest.mark.parametrize("net,n", [(lenet, 3), (resnet20, 3), (resnet18, 2)], ids=lambda v: getattr(v, "__name__", v))
def test_every_side_computes_the_same_network(net, n):
    x = np.random.default_rng(1).random((n, *net.INPUT_SHAPE), dtype=np.float32)
    model = net.convcore_model().eval()
    ours = model(x)
    frozen = cc.nn.freeze(model)(x)  # bench_infer's convcore side
    with torch.inference_mode():
        theirs = net.torch_model().eval()(torch.from_numpy(x)).numpy()
    session = ort.InferenceSession(net.onnx_model(), providers=["CPUExecutionProvider"])
    onnx_out = session.run(None, {"x": x})[0]
    assert ours.shape == theirs.shape == onnx_out.shape == (n, getattr(net, "CLASSES", 10))
    scale = np.abs(theirs).max()
    assert scale > 0.01  # the logits are not all near zero, where any network would agree
    assert np.abs(ours - theirs).max() <= 1e-5 * scale
    assert np.abs(ours - onnx_out).max() <= 1e-5 * scale
    assert np.abs(ours - frozen).max() <= 1e-5 * scale
    # and the inputs are told apart (by 100 times the tolerance at least): the network is not constant
    assert np.abs(ours[0] - ours[1]).max() > 1e-3 * scale


def test_peers_get_the_thread_counts_a_thread_choice_picks_from():
    h = harness
    assert h.thread_halvings(1) == [1] and h.thread_halvings(2) == [2, 1] and h.thread_halvings(6) == [6, 3, 1]
    times = {2: 0.5, 1: 0.25}
    result = h.fastest_of_halvings(2, lambda count: {"seconds": times[count], "peak_bytes": 7})
    assert result == {"seconds": 0.25, "peak_bytes": 7, "threads": 1}
    assert h.fastest_of_halvings(4, lambda count: 1.0 / count) == {"seconds": 0.25, "peak_bytes": None, "threads": 4}


def test_a_side_spinning_after_its_call_is_seen_busy():
    # the harness waits for the side measured last to stop using the CPU (OpenBLAS's pool spins ~0.1 s after a
    # call) before it measures the next
    spin = "import time\nend = time.time() + 0.6\nwhile time.time() < end: pass\n"
    proc = subprocess.Popen([sys.executable, "-c", spin])
    worker = types.SimpleNamespace(proc=proc)
    ticks = harness._Worker._cpu_ticks
    first = ticks(worker)
    proc.wait()
    assert first is not None and ticks(worker) is None  # reaped: no /proc entry, wait_idle then sleeps instead
    busy = subprocess.Popen([sys.executable, "-c", spin])
    worker.proc = busy
    try:
        start = ticks(worker)
        time.sleep(0.3)
        assert ticks(worker) > start
    finally:
        busy.wait()


def test_every_measurement_after_the_first_waits_for_the_side_before(monkeypatch, capsys):
    log = []

    class FakeWorker:
        def __init__(self, script_args, side, threads):
            self.side = side

        def measure(self, name):
            log.append(("measure", self.side, name))
            return {"seconds": 1e-3, "peak_bytes": None}

        def wait_idle(self):
            log.append(("wait_idle", self.side))

        def close(self):
            pass

    monkeypatch.setattr(harness, "_Worker", FakeWorker)
    cases = [{"name": "c1", "flops": 1}, {"name": "c2", "flops": 1}]
    harness.main(cases, sides={"a": None, "b": None}, argv=["--threads", "1", "--rounds", "3"])
    measures = [i for i, entry in enumerate(log) if entry[0] == "measure"]
    assert len(measures) == 12  # 2 cases x 3 rounds x 2 sides
    for before, at in zip(measures, measures[1:]):
        assert log[at - 1] == ("wait_idle", log[before][1])  # the side measured just before, across cases too
    assert "c2" in capsys.readouterr().out
