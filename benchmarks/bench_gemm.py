"""SGEMM: convcore's tiled engine vs torch.matmul (MKL) and numpy (OpenBLAS), float32, C = A @ B.

Run: python benchmarks/bench_gemm.py [--threads 1,2] [--filter conv] [--rounds 3] [--peak-gflops G]
Square sizes 64..2048, conv-shaped problems (M output channels x N output pixels x K = C*R*S, the GEMM a
convolution layer hands the engine) and fully connected layers' input gradients (a few rows against a large B).
Every side allocates its output, as the library calls do. The last table gives convcore's share of the FMA peak:
threads x --peak-gflops per core, by default the peak of one core measured here after the runs (convcore's 12
independent chains of the selected ISA's widest FMA, best of 8 timed runs): it differs by machine as much as the ISA
does, e.g. AVX-512 is 226 GFLOP/s a core on AMD Zen 5 and 117 on Zen 4, whose 512-bit FMAs take both of its 256-bit
units.
"""
import argparse

import numpy as np

import harness

SQUARES = [64, 128, 256, 512, 1024, 2048]
# name, M, N, K
CONV_SHAPED = [
    ("lenet.conv1 per image", 6, 784, 25),
    ("lenet.conv2 batch 64 folded", 16, 6400, 150),
    ("alexnet.conv1 per image", 96, 3025, 363),
    ("resnet50.conv1 per image", 64, 12544, 147),
    ("vgg.conv1_2 per image", 64, 50176, 576),
    ("res2a.3x3 per image", 64, 3136, 576),
    ("res2a.1x1 per image", 256, 3136, 64),
    ("res4a.3x3 batch 32 folded", 256, 6272, 2304),
    ("res5a.3x3 batch 32 folded", 512, 1568, 4608),
    ("cifar.3x3 per image", 64, 1024, 576),
]
# name, M, N, K: a fully connected layer's input gradient, dy (batch x out) @ w (out x in), its B (w, row-major)
# streamed from memory by a few rows
FULLY_CONNECTED = [
    ("alexnet.fc6 input grad batch 1", 1, 9216, 4096),
    ("vgg.fc7 input grad batch 4", 4, 4096, 4096),
    ("alexnet.fc6 input grad batch 16", 16, 9216, 4096),
]


def _cases():
    cases = [{"name": f"square n={n}", "m": n, "n": n, "k": n, "flops": 2 * n ** 3} for n in SQUARES]
    cases += [{"name": f"{name} {m}x{n}x{k}", "m": m, "n": n, "k": k, "flops": 2 * m * n * k}
              for name, m, n, k in CONV_SHAPED + FULLY_CONNECTED]
    return cases


CASES = _cases()


def _arrays(case):
    rng = np.random.default_rng(0)
    a = rng.standard_normal((case["m"], case["k"]), dtype=np.float32)
    b = rng.standard_normal((case["k"], case["n"]), dtype=np.float32)
    return a, b


def run_convcore(case, threads):
    import convcore as cc

    cc.set_num_threads(threads)
    a, b = _arrays(case)
    return harness.measure(lambda: cc.functional.matmul(a, b))


def run_torch(case, threads):
    import torch

    torch.set_num_threads(threads)
    a, b = (torch.from_numpy(x) for x in _arrays(case))
    return harness.measure(lambda: torch.matmul(a, b))


def run_numpy(case, threads):
    a, b = _arrays(case)  # OpenBLAS threads come from OPENBLAS_NUM_THREADS, set by the harness
    return harness.measure(lambda: a @ b)


def _print_peak_share(table, peak_per_core, source):
    print(f"\nconvcore share of FMA peak ({peak_per_core:.0f} GFLOP/s per core x threads, {source})")
    for (name, threads), row in table.items():
        case = next(c for c in CASES if c["name"] == name)
        gflops = case["flops"] / row["convcore"]["seconds"] / 1e9
        print(f"{name:38s} {threads:3d} {gflops:8.1f} GFLOP/s {100 * gflops / (peak_per_core * threads):5.1f}%")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--peak-gflops", type=float, default=None)
    ours, rest = parser.parse_known_args()
    table = harness.main(CASES, sides={"convcore": run_convcore, "torch": run_torch, "numpy": run_numpy},
                         argv=rest)
    if table is not None and all("convcore" in row for row in table.values()):  # the share of convcore's times
        if ours.peak_gflops is not None:
            _print_peak_share(table, ours.peak_gflops, "--peak-gflops")
        else:
            import convcore as cc  # the same convcore the sides ran (harness puts the checkout's build first)
            isa = cc.cpu_info()["selected_isa"]
            _print_peak_share(table, cc._core.fma_peak_gflops(), f"measured, {isa}")
