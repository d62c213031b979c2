"""Training speed, convcore vs PyTorch CPU: a LeNet-5 epoch on Fashion-MNIST-shaped data and a ResNet-20 step on
CIFAR-shaped data (same model, optimizer SGD(lr=0.01, momentum=0.9) and batch size on both sides). convcore's steps
run as convcore.fit runs them: each full batch's under a ThreadChoice, on the thread count (--threads or a halving)
its steps have been timed fastest on; PyTorch is measured at each of those counts and given its fastest.

Run: python benchmarks/bench_train.py [--threads 1,2] [--filter lenet]
     python benchmarks/bench_train.py --accuracy     # `convcore train`: LeNet-5, 5 epochs on Fashion-MNIST
Speed runs use uniform random images and random labels (the kernels' speed does not depend on the values).
"""
import contextlib
import sys

import numpy as np

import harness
import lenet
import resnet20

LENET_BATCH = 64
RESNET_BATCH = 128
CASES = [
    {"name": f"lenet5 epoch 60000 b={LENET_BATCH}", "model": "lenet5", "images": 60000, "batch": LENET_BATCH},
    {"name": f"resnet20 step b={RESNET_BATCH}", "model": "resnet20", "images": RESNET_BATCH, "batch": RESNET_BATCH},
]


def _data(case):
    rng = np.random.default_rng(2)
    shape = lenet.INPUT_SHAPE if case["model"] == "lenet5" else resnet20.INPUT_SHAPE
    x = rng.random((case["images"], *shape), dtype=np.float32)
    y = rng.integers(0, 10, case["images"]).astype(np.int64)
    return x, y


def _timed(case, step, x, y):
    """Median seconds of one pass over (x, y) in batches, after a warm-up of five steps."""
    b = case["batch"]
    batches = [(x[i:i + b], y[i:i + b]) for i in range(0, len(x), b)]
    for i in range(5):
        step(*batches[i % len(batches)])

    def epoch():
        for xb, yb in batches:
            step(xb, yb)
    if len(batches) > 1:
        return harness.measure(epoch, warmup=0, repeat=3, min_seconds=0)
    return harness.measure(epoch)


def run_convcore(case, threads):
    import convcore as cc

    cc.set_num_threads(threads)
    model = lenet.convcore_model() if case["model"] == "lenet5" else resnet20.convcore_model()
    model.train()
    loss = cc.nn.CrossEntropyLoss()
    opt = cc.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    choice = cc.ThreadChoice()  # as convcore.fit runs its steps: full batches on the thread count timed fastest

    def step(xb, yb):
        with choice if len(yb) == case["batch"] else contextlib.nullcontext():
            opt.zero_grad()
            loss(model(xb), yb)
            model.backward(loss.backward(), input_grad=False)  # the input needs no gradient (PyTorch skips it too)
            opt.step()
    return _timed(case, step, *_data(case))


def run_torch(case, threads):
    import torch

    model = lenet.torch_model() if case["model"] == "lenet5" else resnet20.torch_model()
    model.train()
    loss = torch.nn.CrossEntropyLoss()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    data = _data(case)

    def step(xb, yb):
        opt.zero_grad()
        loss(model(torch.from_numpy(xb)), torch.from_numpy(yb)).backward()
        opt.step()

    def at(count):
        torch.set_num_threads(count)
        return _timed(case, step, *data)
    return harness.fastest_of_halvings(threads, at)


def accuracy():
    """Train LeNet-5 on the real Fashion-MNIST for 5 epochs with `convcore train` (its defaults) and print
    its per-epoch report and the final test accuracy."""
    import subprocess
    import tempfile

    with tempfile.TemporaryDirectory() as out:
        # run from the repository root so that a checkout build (scripts/dev-build.sh) is the one imported
        subprocess.run([sys.executable, "-m", "convcore", "train", "--epochs", "5", "--out", out, "--no-progress"],
                       check=True, cwd=harness.ROOT)


if __name__ == "__main__":
    if "--accuracy" in sys.argv:
        accuracy()
    else:
        if harness.main(CASES, sides={"convcore": run_convcore, "torch": run_torch}, metric="img/s") is not None:
            print("(convcore's steps run as convcore.fit runs them, under a ThreadChoice: each on the thread count, "
                  "the row's or a halving, its steps have been timed fastest on; PyTorch's time: its fastest of "
                  "those counts)")
