"""Same weights, loaded by name into convcore and into the equivalent PyTorch modules, give the same logits and
parameter gradients (relative error <= 1e-4): LeNet-5, a ResNet basic block with BatchNorm (train and eval), an
inception block; and the whole ResNet-18 in float64 (relative error <= 1e-8)."""
import numpy as np
import pytest

import convcore as cc
from convcore import nn
from gradcheck import relative_error

torch = pytest.importorskip("torch")
tnn = torch.nn


def _torch_lenet():
    return tnn.Sequential(tnn.Conv2d(1, 6, 5, padding=2), tnn.ReLU(), tnn.MaxPool2d(2), tnn.Conv2d(6, 16, 5),
                          tnn.ReLU(), tnn.MaxPool2d(2), tnn.Flatten(), tnn.Linear(400, 120), tnn.ReLU(),
                          tnn.Linear(120, 84), tnn.ReLU(), tnn.Linear(84, 10))


class _TorchBlock(tnn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = tnn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = tnn.BatchNorm2d(cout)
        self.relu = tnn.ReLU()
        self.conv2 = tnn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = tnn.BatchNorm2d(cout)
        self.downsample = tnn.Sequential(tnn.Conv2d(cin, cout, 1, stride, bias=False), tnn.BatchNorm2d(cout))

    def forward(self, x):
        out = self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x)))))
        return torch.relu(out + self.downsample(x))


class _TorchInception(tnn.Module):
    def __init__(self, cin, c1, c3r, c3, c5r, c5, pp):
        super().__init__()
        self.branch1 = tnn.Sequential(tnn.Conv2d(cin, c1, 1), tnn.ReLU())
        self.branch2 = tnn.Sequential(tnn.Conv2d(cin, c3r, 1), tnn.ReLU(), tnn.Conv2d(c3r, c3, 3, padding=1),
                                      tnn.ReLU())
        self.branch3 = tnn.Sequential(tnn.Conv2d(cin, c5r, 1), tnn.ReLU(), tnn.Conv2d(c5r, c5, 5, padding=2),
                                      tnn.ReLU())
        self.branch4 = tnn.Sequential(tnn.MaxPool2d(3, 1, 1, ceil_mode=True), tnn.Conv2d(cin, pp, 1), tnn.ReLU())

    def forward(self, x):
        return torch.cat([self.branch1(x), self.branch2(x), self.branch3(x), self.branch4(x)], 1)


def _compare(ours, theirs, x, train, tol=1e-4):
    """Copy convcore's state into torch by name, run forward + backward of sum(logits * dy) on both."""
    state = ours.state_dict()
    theirs.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in state.items()}, strict=True)
    ours.train(train)
    theirs.train(train)
    y = ours(x)
    tx = torch.from_numpy(x.copy()).requires_grad_(True)
    ty = theirs(tx)
    assert relative_error(y, ty.detach().numpy()) <= tol
    if not train:
        return
    dy = np.random.default_rng(5).standard_normal(y.shape).astype(x.dtype)
    ours.zero_grad()
    dx = ours.backward(dy)
    ty.backward(torch.from_numpy(dy))
    assert relative_error(dx, tx.grad.numpy()) <= tol
    theirs_params = dict(theirs.named_parameters())
    names = [n for n, _ in ours.named_parameters()]
    assert names == list(theirs_params)
    for name, p in ours.named_parameters():
        assert relative_error(p.grad, theirs_params[name].grad.numpy()) <= tol, name
    for name, buf in theirs.named_buffers():
        assert relative_error(np.asarray(ours.state_dict()[name], np.float64), buf.numpy().astype(np.float64)) <= tol


def test_lenet5(rng):
    x = rng.random((8, 1, 28, 28), dtype=np.float32)
    _compare(cc.models.lenet5(seed=0), _torch_lenet(), x, train=True)


@pytest.mark.parametrize("train", [True, False])
def test_basic_block_with_batchnorm(rng, train):
    block = nn.BasicBlock(3, 6, stride=2, shortcut="B", rng=0)
    for m in block.modules():
        if isinstance(m, nn.BatchNorm2d):  # non-trivial affine and running statistics
            m.weight.data[...] = rng.uniform(0.5, 1.5, m.num_features)
            m.bias.data[...] = rng.uniform(-0.5, 0.5, m.num_features)
            m.running_mean[...] = rng.uniform(-0.2, 0.2, m.num_features)
            m.running_var[...] = rng.uniform(0.5, 2.0, m.num_features)
    x = rng.standard_normal((4, 3, 9, 9)).astype(np.float32)
    _compare(block, _TorchBlock(3, 6, 2), x, train)


def test_inception_block(rng):
    x = rng.standard_normal((2, 5, 7, 7)).astype(np.float32)
    _compare(nn.Inception(5, 3, 2, 4, 2, 3, 2, rng=0), _TorchInception(5, 3, 2, 4, 2, 3, 2), x, train=True)


def test_default_init_matches_torch_scale():
    # kaiming_uniform(a=sqrt(5)): bound 1/sqrt(fan_in) for weights and biases
    conv = nn.Conv2d(16, 8, 3, rng=0)
    bound = 1 / np.sqrt(16 * 9)
    assert np.abs(conv.weight.data).max() <= bound and np.abs(conv.weight.data).max() > 0.9 * bound
    t = tnn.Conv2d(16, 8, 3)
    assert abs(float(t.weight.detach().abs().max()) - bound) < 0.1 * bound


class _TorchResNet18(tnn.Module):
    """torchvision's resnet18 layout and parameter names, written out with torch.nn (torchvision is optional)."""

    def __init__(self, num_classes):
        super().__init__()
        self.conv1 = tnn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = tnn.BatchNorm2d(64)
        self.relu = tnn.ReLU()
        self.maxpool = tnn.MaxPool2d(3, 2, 1)
        stages, cin = [], 64
        for cout, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
            first = _TorchBlock(cin, cout, stride)
            if stride == 1 and cin == cout:
                del first.downsample
                first.downsample = tnn.Identity()
            second = _TorchBlock(cout, cout, 1)
            del second.downsample
            second.downsample = tnn.Identity()
            stages.append(tnn.Sequential(first, second))
            cin = cout
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.avgpool = tnn.AdaptiveAvgPool2d(1)
        self.fc = tnn.Linear(512, num_classes)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


@pytest.mark.parametrize("train", [True, False])
def test_resnet18_whole_model_float64(rng, train):
    # float64 on both sides: agreement to rounding shows the wiring (names, strides, paddings, shortcuts) is the same
    x = rng.standard_normal((2, 3, 16, 16))
    _compare(cc.models.resnet18(num_classes=7, seed=0).to(np.float64), _TorchResNet18(7).double(), x, train,
             tol=1e-8)
