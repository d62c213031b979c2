"""Inference, convcore vs ONNX Runtime vs PyTorch CPU: LeNet-5 (28x28) and CIFAR ResNet-20 (32x32, batch norm in
eval mode), batch-1 latency and large-batch throughput.

Run: python benchmarks/bench_infer.py [--threads 1,2] [--sides convcore,onnxruntime,torch] [--filter resnet20]
All sides run the same network with the same weights (benchmarks/lenet.py, benchmarks/resnet20.py) on the same
random input.
"""
import numpy as np

import harness
import lenet
import resnet20

NETWORKS = {"lenet5": lenet, "resnet20": resnet20}
CASES = ([{"name": f"lenet5 infer n={n}", "net": "lenet5", "n": n, "images": n} for n in (1, 256)]
         + [{"name": f"resnet20 infer n={n}", "net": "resnet20", "n": n, "images": n} for n in (1, 128)])


def _input(case):
    return np.random.default_rng(1).random((case["n"], *NETWORKS[case["net"]].INPUT_SHAPE), dtype=np.float32)


def run_convcore(case, threads):
    import convcore as cc

    cc.set_num_threads(threads)
    model = NETWORKS[case["net"]].convcore_model().eval()
    x = _input(case)
    return harness.measure(lambda: model(x))


def run_onnxruntime(case, threads):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    sess = ort.InferenceSession(NETWORKS[case["net"]].onnx_model(), opts, providers=["CPUExecutionProvider"])
    x = _input(case)
    return harness.measure(lambda: sess.run(None, {"x": x}))


def run_torch(case, threads):
    import torch

    torch.set_num_threads(threads)
    model = NETWORKS[case["net"]].torch_model().eval()
    x = torch.from_numpy(_input(case))

    def step():
        with torch.inference_mode():
            model(x)
    return harness.measure(step)


if __name__ == "__main__":
    harness.main(CASES, sides={"convcore": run_convcore, "onnxruntime": run_onnxruntime, "torch": run_torch},
                 metric="img/s")
