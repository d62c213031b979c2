"""Model zoo: parameter counts against the reference definitions (and torchvision's layouts), forward shapes."""
import numpy as np
import pytest

import convcore as cc

COUNTS = [
    (lambda: cc.models.vgg16(), 138_357_544),
    (lambda: cc.models.vgg16(batch_norm=True), 138_365_992),    # torchvision's vgg16_bn
    (lambda: cc.models.zfnet(), 62_357_608),
    (lambda: cc.models.resnet18(), 11_689_512),
    (lambda: cc.models.resnet34(), 21_797_672),
    (lambda: cc.models.alexnet(), 62_378_344),
    (lambda: cc.models.alexnet(groups=2), 60_965_224),
    (lambda: cc.models.googlenet(), 6_998_552),
    (lambda: cc.models.resnet20(), 269_722),
    (lambda: cc.models.resnet20(shortcut="B"), 272_474),
    (lambda: cc.models.lenet5(), 61_706),
]


@pytest.mark.parametrize("build,count", COUNTS, ids=[str(c) for _, c in COUNTS])
def test_parameter_counts(build, count):
    assert sum(p.data.size for p in build().parameters()) == count


def test_vgg16_names_and_shapes_match_torchvision_layout():
    torch = pytest.importorskip("torch")
    from torch import nn as tnn

    vgg_cfg = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]
    with torch.device("meta"):  # shapes only, nothing allocated
        layers, c = [], 3
        for v in vgg_cfg:
            layers += [tnn.MaxPool2d(2)] if v == "M" else [tnn.Conv2d(c, v, 3, padding=1), tnn.ReLU()]
            c = v if v != "M" else c
        classifier = tnn.Sequential(tnn.Linear(25088, 4096), tnn.ReLU(), tnn.Dropout(), tnn.Linear(4096, 4096),
                                    tnn.ReLU(), tnn.Dropout(), tnn.Linear(4096, 1000))
        torch_vgg = tnn.ModuleDict({"features": tnn.Sequential(*layers), "classifier": classifier})
    theirs = {name: tuple(p.shape) for name, p in torch_vgg.named_parameters()}
    ours = {name: p.data.shape for name, p in cc.models.vgg16().named_parameters()}
    assert list(ours.items()) == list(theirs.items())


@pytest.mark.parametrize("build,shape,out", [
    (lambda: cc.models.lenet5(num_classes=7), (2, 1, 28, 28), (2, 7)),
    (lambda: cc.models.resnet20(in_channels=1), (2, 1, 16, 16), (2, 10)),
    (lambda: cc.models.resnet18(num_classes=5), (1, 3, 64, 64), (1, 5)),
    (lambda: cc.models.googlenet(num_classes=4), (1, 3, 64, 64), (1, 4)),
])
def test_forward_backward_shapes(build, shape, out, rng):
    model = build()
    x = rng.random(shape, dtype=np.float32)
    y = model(x)
    assert y.shape == out and np.isfinite(y).all()
    dx = model.backward(np.ones(out, np.float32))
    assert dx.shape == shape
    assert all(p.grad is not None and p.grad.shape == p.data.shape for p in model.parameters())


def test_model_argument_errors():
    with pytest.raises(ValueError, match="num_classes must be >= 1, got 0"):
        cc.models.lenet5(num_classes=0)
    with pytest.raises(ValueError, match=r"groups must be 1 \(single stream\) or 2"):
        cc.models.alexnet(groups=3)
    # each was taken, or failed with a message naming nothing: batch_norm="no" built the batch-norm variant, the
    # arrays gave numpy's "truth value ... is ambiguous", 2**70 classes "Maximum allowed dimension exceeded"
    with pytest.raises(TypeError, match="batch_norm must be a bool, got 'no'"):
        cc.models.vgg16(batch_norm="no")
    with pytest.raises(TypeError, match=r"groups must be an int, got array\(\[1, 2\]\)"):
        cc.models.alexnet(groups=np.array([1, 2]))
    with pytest.raises(ValueError, match="shortcut must be 'A' .* or 'B'"):
        cc.models.resnet20(shortcut=np.array(["A", "B"]))
    with pytest.raises(ValueError, match=r"num_classes must be at most 2\*\*40, got 1180591620717411303424"):
        cc.models.lenet5(num_classes=2**70)


def test_googlenet_count_against_torchvision_layout():
    # torchvision: 3x3 instead of 5x5 in the third branch, BatchNorm (weight + bias per channel) instead of conv bias
    total = 0
    for name, p in cc.models.googlenet().named_parameters():
        if name.endswith("branch3.2.weight"):
            total += p.data.size // 25 * 9
        elif name.endswith(".bias") and not name.startswith("fc"):
            total += 2 * p.data.size
        else:
            total += p.data.size
    assert total == 6_624_904


def test_an_empty_batch_runs_through_resnet20_in_every_mode():
    # its 16- to 64-channel 3x3 layers' fused Winograd kernel shared its tasks out by dividing by the batch: SIGFPE
    model = cc.models.resnet20(seed=0)
    x = np.zeros((0, 3, 32, 32), np.float32)
    assert model(x).shape == (0, 10)
    assert model.backward(np.zeros((0, 10), np.float32)).shape == x.shape
    assert all((p.grad == 0).all() for p in model.parameters())
    assert model.eval()(x).shape == (0, 10) and cc.nn.freeze(model)(x).shape == (0, 10)
