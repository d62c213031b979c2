"""Training speed, convcore vs PyTorch CPU: a LeNet-5 epoch on Fashion-MNIST-shaped data and a ResNet-20 step on
CIFAR-shaped data (same model, optimizer SGD(lr=0.01, momentum=0.9) and batch size on both sides).

Run: python benchmarks/bench_train.py [--threads 1,2] [--filter lenet]
     python benchmarks/bench_train.py --accuracy     # `convcore train`: LeNet-5, 5 epochs on Fashion-MNIST
Speed runs use uniform random images and random labels (the kernels' speed does not depend on the values).
"""
import sys

import numpy as np

import harness
import lenet

LENET_BATCH = 64
RESNET_BATCH = 128
CASES = [
    {"name": f"lenet5 epoch 60000 b={LENET_BATCH}", "model": "lenet5", "images": 60000, "batch": LENET_BATCH},
    {"name": f"resnet20 step b={RESNET_BATCH}", "model": "resnet20", "images": RESNET_BATCH, "batch": RESNET_BATCH},
]


def _data(case):
    rng = np.random.default_rng(2)
    shape = lenet.INPUT_SHAPE if case["model"] == "lenet5" else (3, 32, 32)
    x = rng.random((case["images"], *shape), dtype=np.float32)
    y = rng.integers(0, 10, case["images"]).astype(np.int64)
    return x, y


def _timed(case, step, x, y):
    """Median seconds of one pass over (x, y) in batches, after a warm-up of a few steps."""
    b = case["batch"]
    batches = [(x[i:i + b], y[i:i + b]) for i in range(0, len(x), b)]
    for xb, yb in batches[:5]:
        step(xb, yb)

    def epoch():
        for xb, yb in batches:
            step(xb, yb)
    if len(batches) > 1:
        return harness.measure(epoch, warmup=0, repeat=3, min_seconds=0)
    return harness.measure(epoch)


def run_convcore(case, threads):
    import convcore as cc

    cc.set_num_threads(threads)
    model = lenet.convcore_model() if case["model"] == "lenet5" else cc.models.resnet20(seed=0)
    assert case["model"] == "lenet5" or sum(p.data.size for p in model.parameters()) == RESNET20_PARAMS
    model.train()
    loss = cc.nn.CrossEntropyLoss()
    opt = cc.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

    def step(xb, yb):
        opt.zero_grad()
        loss(model(xb), yb)
        model.backward(loss.backward(), input_grad=False)  # the input needs no gradient (PyTorch skips it too)
        opt.step()
    return _timed(case, step, *_data(case))


RESNET20_PARAMS = 269_722  # option A shortcuts (zero-padded identity), convcore.models.resnet20's default


def _torch_resnet20():
    """CIFAR ResNet-20 with option A shortcuts in PyTorch, the same network as convcore.models.resnet20()."""
    import torch
    from torch import nn

    class Block(nn.Module):
        def __init__(self, cin, cout, stride):
            super().__init__()
            self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(cout)
            self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(cout)
            self.stride, self.pad = stride, cout - cin

        def forward(self, x):
            out = self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x)))))
            skip = x
            if self.stride != 1 or self.pad:
                skip = nn.functional.pad(x[:, :, ::self.stride, ::self.stride],
                                         (0, 0, 0, 0, self.pad // 2, self.pad - self.pad // 2))
            return torch.relu(out + skip)

    layers = [nn.Conv2d(3, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU()]
    cin = 16
    for cout, stride in ((16, 1), (32, 2), (64, 2)):
        for i in range(3):
            layers.append(Block(cin, cout, stride if i == 0 else 1))
            cin = cout
    model = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 10))
    assert sum(p.numel() for p in model.parameters()) == RESNET20_PARAMS
    return model


def run_torch(case, threads):
    import torch

    torch.set_num_threads(threads)
    model = lenet.torch_model() if case["model"] == "lenet5" else _torch_resnet20()
    model.train()
    loss = torch.nn.CrossEntropyLoss()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

    def step(xb, yb):
        opt.zero_grad()
        loss(model(torch.from_numpy(xb)), torch.from_numpy(yb)).backward()
        opt.step()
    return _timed(case, step, *_data(case))


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
        harness.main(CASES, sides={"convcore": run_convcore, "torch": run_torch}, metric="img/s")
