"""Inference, convcore vs ONNX Runtime vs PyTorch CPU: LeNet-5 (28x28), CIFAR ResNet-20 (32x32) and ImageNet
ResNet-18 (224x224), batch norm in eval mode; batch-1 latency and larger-batch throughput.

Run: python benchmarks/bench_infer.py [--threads 1,2] [--sides convcore,eval,onnxruntime,torch] [--filter resnet20]
All sides run the same network with the same weights (benchmarks/lenet.py, resnet20.py, resnet18.py) on the same
random input. The convcore side is the model frozen for serving (convcore.nn.freeze: batch norms folded, weights
packed once), as ONNX Runtime's session optimises its graph; `eval` is the same model run by model.eval() (every
call reads the weights as they are), and its ratio is what freezing gains.
A frozen model runs each call on the thread count (--threads or a halving of it) its calls have been timed fastest
on (a ThreadChoice), so the peers and `eval` are measured at each of those counts too and given their fastest.
"""
import numpy as np

import harness
import lenet
import resnet18
import resnet20

NETWORKS = {"lenet5": lenet, "resnet20": resnet20, "resnet18": resnet18}
BATCHES = {"lenet5": (1, 256), "resnet20": (1, 128), "resnet18": (1, 8)}
CASES = [{"name": f"{net} infer n={n}", "net": net, "n": n, "images": n} for net, sizes in BATCHES.items()
         for n in sizes]


def _input(case):
    return np.random.default_rng(1).random((case["n"], *NETWORKS[case["net"]].INPUT_SHAPE), dtype=np.float32)


def run_convcore(case, threads):
    import convcore as cc

    cc.set_num_threads(threads)
    model = cc.nn.freeze(NETWORKS[case["net"]].convcore_model())
    x = _input(case)
    return harness.measure(lambda: model(x))


def run_eval(case, threads):
    import convcore as cc

    model = NETWORKS[case["net"]].convcore_model().eval()
    x = _input(case)

    def at(count):
        cc.set_num_threads(count)
        return harness.measure(lambda: model(x))
    return harness.fastest_of_halvings(threads, at)


def run_onnxruntime(case, threads):
    import onnxruntime as ort

    x = _input(case)

    def at(count):
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = count
        opts.inter_op_num_threads = 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        sess = ort.InferenceSession(NETWORKS[case["net"]].onnx_model(), opts, providers=["CPUExecutionProvider"])
        return harness.measure(lambda: sess.run(None, {"x": x}))
    return harness.fastest_of_halvings(threads, at)


def run_torch(case, threads):
    import torch

    model = NETWORKS[case["net"]].torch_model().eval()
    x = torch.from_numpy(_input(case))

    def at(count):
        torch.set_num_threads(count)
        with torch.inference_mode():  # entered once, not in every timed call (~1.3 us each)
            return harness.measure(lambda: model(x))
    return harness.fastest_of_halvings(threads, at)


if __name__ == "__main__":
    harness.main(CASES, sides={"convcore": run_convcore, "eval": run_eval, "onnxruntime": run_onnxruntime,
                               "torch": run_torch}, metric="img/s")
