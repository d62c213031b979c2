"""The `convcore` command: info (CPU, kernels, threads, one timed conv layer)."""
from __future__ import annotations

import argparse
import sys
import time

import numpy as np


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors: `convcore: error: ...` and exit code 2, no usage dump."""

    def error(self, message):
        self.exit(2, f"convcore: error: {message}\n")


def _positive_int(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
    return value


def _info(args):
    import convcore as cc

    if args.threads:
        cc.set_num_threads(args.threads)
    info = cc.cpu_info()
    print(f"convcore {cc.__version__} on {info['machine']}")
    print(f"  CPU instruction set : {info['detected_isa']} (compiled: {', '.join(info['compiled_isas'])})")
    print(f"  selected kernels    : {info['selected_isa']} (gemm {info['gemm_kernel']}, pool {info['pool_kernel']})"
          + (f", capped by CONVCORE_ISA={info['isa_cap']}" if info["isa_cap"] else ""))
    print(f"  threads             : {info['num_threads']}")
    # LeNet-5 conv2 on a batch of 64: 6 -> 16 channels, 5x5, 14x14 -> 10x10
    rng = np.random.default_rng(0)
    x = rng.standard_normal((64, 6, 14, 14), dtype=np.float32)
    w = rng.standard_normal((16, 6, 5, 5), dtype=np.float32)
    b = rng.standard_normal(16, dtype=np.float32)
    flops = 2 * 64 * 16 * 6 * 25 * 10 * 10
    cc.functional.conv2d(x, w, b)
    times = []
    for _ in range(args.repeat):
        t0 = time.perf_counter()
        cc.functional.conv2d(x, w, b)
        times.append(time.perf_counter() - t0)
    best = float(np.median(times))
    print(f"  conv2d LeNet-5 conv2, batch 64 (64x6x14x14 * 16x6x5x5): {best * 1e3:.3f} ms median of "
          f"{args.repeat}, {flops / best / 1e9:.1f} GFLOP/s")
    return 0


def build_parser():
    parser = _Parser(prog="convcore", description="convcore: CPU-first convolutional neural networks")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    info = sub.add_parser("info", help="CPU features, selected kernels, threads, and one timed conv layer")
    info.add_argument("--threads", type=_positive_int, default=None, help="threads to use (default: all)")
    info.add_argument("--repeat", type=_positive_int, default=20, help="timed runs of the conv layer (default 20)")
    info.set_defaults(run=_info)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
