"""LeNet-5 inference, convcore vs ONNX Runtime vs PyTorch CPU: batch-1 latency and batch-256 throughput.

Run: python benchmarks/bench_infer.py [--threads 1,2] [--sides convcore,onnxruntime,torch]
All sides run the same network with the same weights (benchmarks/lenet.py) on the same random 28x28 input.
"""
import numpy as np

import harness
import lenet

CASES = [{"name": f"lenet5 infer n={n}", "n": n, "images": n} for n in (1, 256)]


def _input(case):
    return np.random.default_rng(1).random((case["n"], *lenet.INPUT_SHAPE), dtype=np.float32)


def run_convcore(case, threads):
    import convcore as cc

    cc.set_num_threads(threads)
    model = lenet.convcore_model().eval()
    x = _input(case)
    return harness.measure(lambda: model(x))


def run_onnxruntime(case, threads):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    sess = ort.InferenceSession(lenet.onnx_model(), opts, providers=["CPUExecutionProvider"])
    x = _input(case)
    return harness.measure(lambda: sess.run(None, {"x": x}))


def run_torch(case, threads):
    import torch

    torch.set_num_threads(threads)
    model = lenet.torch_model().eval()
    x = torch.from_numpy(_input(case))

    def step():
        with torch.inference_mode():
            model(x)
    return harness.measure(step)


if __name__ == "__main__":
    harness.main(CASES, sides={"convcore": run_convcore, "onnxruntime": run_onnxruntime, "torch": run_torch},
                 metric="img/s")
