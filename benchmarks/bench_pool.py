"""Pooling layers of classic CNNs, convcore vs PyTorch CPU (NCHW), max and avg, forward and forward+backward.

Run: python benchmarks/bench_pool.py [--threads 1,2] [--filter 2x2] [--rounds 3]
GB/s counts float32 traffic only: x read + y written (fwd), plus dy read + dx written (bwd); argmax traffic is
not counted. convcore runs the layers, nn.MaxPool2d and nn.AvgPool2d in training mode (max: the compact uint8
argmax; validated once per input shape, as in training); PyTorch's forward-only runs under no_grad, its fwd+bwd
through autograd. "peak MB" is the resident-memory high-water mark one call adds
(VmHWM after /proc/self/clear_refs, so C++ allocations count; tracemalloc would not see them).
"""
import numpy as np

import harness

# name, batch, channels, size, kernel, stride, padding
LAYERS = [
    ("cifar 2x2/2", 32, 64, 32, 2, 2, 0),
    ("resnet stem 3x3/2 p1", 8, 64, 112, 3, 2, 1),
    ("lenet s2 2x2/2", 64, 6, 28, 2, 2, 0),
    ("lenet s4 2x2/2", 64, 16, 10, 2, 2, 0),
    ("alexnet 3x3/2", 8, 96, 55, 3, 2, 0),
]


def _cases():
    cases = []
    for name, n, c, hw, k, s, p in LAYERS:
        out = (hw + 2 * p - k) // s + 1
        x_bytes, y_bytes = 4 * n * c * hw * hw, 4 * n * c * out * out
        for op in ("max", "avg"):
            for mode in ("fwd", "fwd+bwd"):
                traffic = x_bytes + y_bytes if mode == "fwd" else 2 * (x_bytes + y_bytes)
                cases.append({"name": f"{op} {name} {n}x{c}x{hw} {mode}", "op": op, "mode": mode, "n": n, "c": c,
                              "hw": hw, "k": k, "s": s, "p": p, "bytes": traffic})
    return cases


CASES = _cases()


def _arrays(case):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((case["n"], case["c"], case["hw"], case["hw"]), dtype=np.float32)
    out = (case["hw"] + 2 * case["p"] - case["k"]) // case["s"] + 1
    dy = rng.standard_normal((case["n"], case["c"], out, out), dtype=np.float32)
    return x, dy


def run_convcore(case, threads):
    import convcore as cc

    cc.set_num_threads(threads)
    x, dy = _arrays(case)
    kw = {"kernel_size": case["k"], "stride": case["s"], "padding": case["p"]}
    layer = cc.nn.MaxPool2d(**kw) if case["op"] == "max" else cc.nn.AvgPool2d(**kw)  # in training mode
    if case["mode"] == "fwd":
        return harness.measure(lambda: layer(x))

    def step():
        layer(x)
        layer.backward(dy)
    return harness.measure(step)


def run_torch(case, threads):
    import torch

    torch.set_num_threads(threads)
    x, dy = (torch.from_numpy(a) for a in _arrays(case))
    kw = {"kernel_size": case["k"], "stride": case["s"], "padding": case["p"]}
    pool = torch.nn.functional.max_pool2d if case["op"] == "max" else torch.nn.functional.avg_pool2d
    if case["mode"] == "fwd":
        with torch.no_grad():  # entered once, not in every timed call (~1.3 us each)
            return harness.measure(lambda: pool(x, **kw))
    xg = x.clone().requires_grad_()

    def step():
        y = pool(xg, **kw)
        torch.autograd.grad(y, xg, dy)
    return harness.measure(step)


if __name__ == "__main__":
    harness.main(CASES, sides={"convcore": run_convcore, "torch": run_torch}, metric="GB/s")
