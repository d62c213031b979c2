"""Model zoo: parameter counts against the reference definitions, forward shapes, summary figures."""
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


def test_summary_lecture_example(capsys):
    s = cc.summary(cc.nn.Sequential(cc.nn.Conv2d(3, 10, 5, padding=2)), (3, 32, 32))
    row = s.rows[0]
    assert row.output_shape == (10, 32, 32) and row.params == 760
    assert row.macs == 10 * 32 * 32 * 3 * 25
    assert "760" in capsys.readouterr().out


def test_summary_vgg16_figures():
    s = cc.summary(cc.models.vgg16(), (3, 224, 224), print_table=False)
    assert s.total_params == 138_357_544
    assert s.total_activations == 15_262_696          # see convcore/summary.py for the lecture's 24M
    assert s.total_macs == 15_470_264_320
    convs = [r for r in s.rows if r.kind == "Conv2d"]
    assert convs[0].output_shape == (64, 224, 224) and convs[-1].output_shape == (512, 14, 14)
    assert [r.output_shape for r in s.rows if r.kind == "Linear"] == [(4096,), (4096,), (1000,)]


def test_model_argument_errors():
    with pytest.raises(ValueError, match="num_classes must be >= 1, got 0"):
        cc.models.lenet5(num_classes=0)
    with pytest.raises(ValueError, match=r"groups must be 1 \(single stream\) or 2"):
        cc.models.alexnet(groups=3)
    with pytest.raises(TypeError, match="model must be a convcore.nn.Module"):
        cc.summary("vgg16", (3, 224, 224))
    with pytest.raises(ValueError, match="input_shape must be"):
        cc.summary(cc.models.lenet5(), (1, 1, 28, 28))


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


def test_summary_counts_composite_block_outputs():
    s = cc.summary(cc.models.resnet20(), (3, 32, 32), print_table=False)
    blocks = [r for r in s.rows if r.kind == "BasicBlock"]
    assert [r.name for r in blocks[:2]] == ["layer1.0", "layer1.1"] and len(blocks) == 9
    assert blocks[-1].output_shape == (64, 8, 8) and blocks[-1].activations == 64 * 8 * 8
    # input + conv1/bn1 + per block (conv1, bn1, conv2, bn2, sum) + avgpool + fc
    assert s.total_activations == 3072 + 2 * 16384 + 3 * 5 * (16384 + 8192 + 4096) + 64 + 10
    assert s.total_activation_bytes == 4 * s.total_activations
    g = cc.summary(cc.models.googlenet(), (3, 224, 224), print_table=False)
    assert [r.output_shape for r in g.rows if r.name == "inception3a"] == [(256, 28, 28)]
    lenet = cc.summary(cc.models.lenet5(), (1, 28, 28), print_table=False)
    assert [r.kind for r in lenet.rows].count("ReLU") == 4 and len(lenet.rows) == 12
