"""Convolution layers of classic CNNs, convcore vs PyTorch CPU (NCHW), forward and forward+backward.

Run: python benchmarks/bench_conv.py [--threads 1,2] [--filter res2a] [--sides convcore,torch]
First layers (1 or 3 input channels) skip the input gradient on both sides, as training does.
`--sides convcore,torch,reference` adds convcore's reference kernels (the foundation's direct loops, still the
oracle and fallback) as the baseline the fast kernels are measured against; they are slow, so pair it with
--filter (e.g. --filter "n=1 ").
"""
import statistics

import numpy as np

import harness

# name, in_channels, out_channels, kernel, stride, padding, image size, batch for the large batch
LAYERS = [
    ("lenet.conv1", 1, 6, 5, 1, 2, 28, 64),
    ("lenet.conv2", 6, 16, 5, 1, 0, 14, 64),
    ("alexnet.conv1", 3, 96, 11, 4, 0, 227, 8),
    ("resnet50.conv1", 3, 64, 7, 2, 3, 224, 8),
    ("res2a.3x3", 64, 64, 3, 1, 1, 56, 8),
    ("res2a.1x1", 64, 256, 1, 1, 0, 56, 8),
    ("res3a.1x1/2", 256, 512, 1, 2, 0, 56, 8),
    ("res3a.3x3/2", 128, 128, 3, 2, 1, 56, 8),
    ("res4a.3x3/2", 256, 256, 3, 2, 1, 28, 8),
    ("res4a.3x3", 256, 256, 3, 1, 1, 14, 32),
    ("res5a.3x3", 512, 512, 3, 1, 1, 7, 32),
    ("res5a.3x3/2", 512, 512, 3, 2, 1, 14, 8),
    ("vgg.conv1_2", 64, 64, 3, 1, 1, 224, 8),
    ("cifar.3x3", 64, 64, 3, 1, 1, 32, 32),
]


def _cases():
    cases = []
    for name, c, k, r, s, p, hw, big_batch in LAYERS:
        out = (hw + 2 * p - r) // s + 1
        for n in (big_batch, 1):
            fwd_flops = 2 * n * k * c * r * r * out * out
            first = c <= 3
            for mode in ("fwd", "fwd+bwd"):
                flops = fwd_flops if mode == "fwd" else fwd_flops * (2 if first else 3)
                cases.append({"name": f"{name} n={n} {mode}", "n": n, "c": c, "k": k, "r": r, "stride": s,
                              "pad": p, "hw": hw, "mode": mode, "first": first, "flops": flops})
    return cases


CASES = _cases()


def _arrays(case):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((case["n"], case["c"], case["hw"], case["hw"]), dtype=np.float32)
    w = rng.standard_normal((case["k"], case["c"], case["r"], case["r"]), dtype=np.float32) * 0.1
    b = rng.standard_normal(case["k"], dtype=np.float32)
    return x, w, b


def run_convcore(case, threads):
    import convcore as cc

    F = cc.functional
    cc.set_num_threads(threads)
    x, w, b = _arrays(case)
    kw = {"stride": case["stride"], "padding": case["pad"]}
    y = F.conv2d(x, w, b, **kw)
    dy = np.ones_like(y)
    if case["mode"] == "fwd":
        return harness.measure(lambda: F.conv2d(x, w, b, **kw))

    def step():
        F.conv2d(x, w, b, **kw)
        F.conv2d_backward(dy, x, w, **kw, input_grad=not case["first"])

    return harness.measure(step)


def run_reference(case, threads):
    import convcore as cc
    from convcore import _core
    from convcore.functional.conv import _geometry

    cc.set_num_threads(threads)
    x, w, b = _arrays(case)
    geom, _ = _geometry(x.shape, w.shape, case["stride"], case["pad"], 1, 1, 2)
    y = _core.conv2d_forward(x, w, b, geom, False, True)
    dy = np.ones_like(y)
    if case["mode"] == "fwd":
        return harness.measure(lambda: _core.conv2d_forward(x, w, b, geom, False, True), repeat=3, min_seconds=0)

    def step():
        _core.conv2d_forward(x, w, b, geom, False, True)
        _core.conv2d_backward(dy, x, w, geom, not case["first"], True, True)

    return harness.measure(step, repeat=3, min_seconds=0)


def run_torch(case, threads):
    import torch

    torch.set_num_threads(threads)
    x, w, b = (torch.from_numpy(a) for a in _arrays(case))
    kw = {"stride": case["stride"], "padding": case["pad"]}
    if case["mode"] == "fwd":
        with torch.no_grad():  # entered once, not in every timed call (~1.3 us each)
            return harness.measure(lambda: torch.nn.functional.conv2d(x, w, b, **kw))
    w.requires_grad_(True)
    b.requires_grad_(True)
    x.requires_grad_(not case["first"])
    dy = torch.ones_like(torch.nn.functional.conv2d(x.detach(), w.detach(), b.detach(), **kw))

    def step():
        w.grad = b.grad = x.grad = None
        torch.nn.functional.conv2d(x, w, b, **kw).backward(dy)

    return harness.measure(step)


def _print_by_mode(table, floor=0.8):
    """Per thread count and mode (forward, forward+backward): the geometric mean of the ratios vs PyTorch, the
    lowest, and the cases below `floor`."""
    for threads in sorted({t for _, t in table}):
        for mode in ("fwd", "fwd+bwd"):
            ratios = [(row["torch"]["ratio"], name) for (name, t), row in table.items()
                      if t == threads and name.endswith(" " + mode) and "torch" in row]
            ratios = [(r, name) for r, name in ratios if r == r and r > 0]
            if not ratios:
                continue
            gmean = statistics.geometric_mean(r for r, _ in ratios)
            low = ", ".join(f"{name} {r:.2f}" for r, name in sorted(ratios) if r < floor) or "none"
            print(f"{mode:8s} vs torch, {threads} thread(s): geometric mean {gmean:.2f}, lowest {min(ratios)[0]:.2f} "
                  f"({min(ratios)[1]}); below {floor}: {low}")


if __name__ == "__main__":
    table = harness.main(CASES, sides={"convcore": run_convcore, "torch": run_torch, "reference": run_reference},
                         metric="GFLOP/s", default_sides=("convcore", "torch"))
    if table is not None:
        _print_by_mode(table)
