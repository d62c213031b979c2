"""Training speed, convcore vs PyTorch CPU: a LeNet-5 epoch on Fashion-MNIST-shaped data and a ResNet-20 step on
CIFAR-shaped data (same model, optimizer SGD(lr=0.01, momentum=0.9) and batch size on both sides).

Run: python benchmarks/bench_train.py [--threads 1,2] [--filter lenet]
     python benchmarks/bench_train.py --accuracy     # LeNet-5, 5 epochs on the real Fashion-MNIST: test accuracy
Speed runs use uniform random images and random labels (the kernels' speed does not depend on the values).
"""
import sys
import time

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
    model.train()
    loss = cc.nn.CrossEntropyLoss()
    opt = cc.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

    def step(xb, yb):
        opt.zero_grad()
        loss(model(xb), yb)
        model.backward(loss.backward())
        opt.step()
    return _timed(case, step, *_data(case))


def _torch_resnet20(num_params):
    """torchvision-style CIFAR ResNet-20 whose shortcut option (A: zero-pad identity, B: 1x1 conv + BN) gives the
    same parameter count as convcore's resnet20."""
    import torch
    from torch import nn

    class Block(nn.Module):
        def __init__(self, cin, cout, stride, option):
            super().__init__()
            self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(cout)
            self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(cout)
            self.option, self.pad = option, cout - cin
            self.proj = None
            if (stride != 1 or cin != cout) and option == "B":
                self.proj = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

        def forward(self, x):
            out = torch.relu(self.bn1(self.conv1(x)))
            out = self.bn2(self.conv2(out))
            if self.proj is not None:
                skip = self.proj(x)
            elif self.pad:
                skip = nn.functional.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, self.pad // 2, self.pad // 2))
            else:
                skip = x
            return torch.relu(out + skip)

    def build(option):
        layers = [nn.Conv2d(3, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU()]
        cin = 16
        for cout, stride in ((16, 1), (32, 2), (64, 2)):
            for i in range(3):
                layers.append(Block(cin, cout, stride if i == 0 else 1, option))
                cin = cout
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 10)]
        return nn.Sequential(*layers)

    for option in ("A", "B"):
        model = build(option)
        if sum(p.numel() for p in model.parameters()) == num_params:
            return model
    raise RuntimeError(f"no torch ResNet-20 shortcut option matches convcore's {num_params} parameters")


def run_torch(case, threads):
    import torch

    torch.set_num_threads(threads)
    if case["model"] == "lenet5":
        model = lenet.torch_model()
    else:
        import convcore as cc  # only to read the parameter count, before any timing
        n = sum(p.data.size for p in cc.models.resnet20(seed=0).parameters())
        model = _torch_resnet20(n)
    model.train()
    loss = torch.nn.CrossEntropyLoss()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

    def step(xb, yb):
        opt.zero_grad()
        loss(model(torch.from_numpy(xb)), torch.from_numpy(yb)).backward()
        opt.step()
    return _timed(case, step, *_data(case))


def accuracy(epochs=5):
    """Train LeNet-5 on the real Fashion-MNIST with convcore's fit(); print test accuracy per epoch."""
    import convcore as cc

    x_train, y_train, x_test, y_test = cc.data.load_fashion_mnist()
    model = cc.models.lenet5(seed=0)
    loss = cc.nn.CrossEntropyLoss()
    opt = cc.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    t0 = time.perf_counter()
    history = cc.training.fit(model, loss, opt, (x_train, y_train), epochs=epochs, batch_size=64,
                              val_data=(x_test, y_test), seed=0)
    seconds = time.perf_counter() - t0
    for e, acc in enumerate(history.val_accuracy, 1):
        print(f"epoch {e}: test accuracy {acc:.4f}")
    print(f"{epochs} epochs in {seconds:.1f} s ({epochs * len(x_train) / seconds:.0f} img/s incl. evaluation), "
          f"threads {cc.get_num_threads()}")


if __name__ == "__main__":
    if "--accuracy" in sys.argv:
        accuracy()
    else:
        harness.main(CASES, sides={"convcore": run_convcore, "torch": run_torch}, metric="img/s")
