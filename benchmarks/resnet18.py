"""ImageNet ResNet-18 (convcore.models.resnet18, torchvision's layout and parameter names) built for each peer with
one set of weights: convcore's model from a seed with its BatchNorm running statistics set from the same seed (as
resnet20.py), the same state loaded by name into a PyTorch model and written into an ONNX graph.

Used by bench_infer.py so that every side runs the same network on the same numbers.
"""
import numpy as np

import lenet
import resnet20

PARAMS = 11_689_512
INPUT_SHAPE = (3, 224, 224)
CLASSES = 1000
STAGES = ((64, 1), (128, 2), (256, 2), (512, 2))  # (channels, first block's stride), 2 blocks each


def convcore_model(seed=0):
    """convcore.models.resnet18(seed=seed) with running means in [-0.5, 0.5] and variances in [0.5, 2]."""
    import convcore as cc

    model = resnet20.with_running_statistics(cc.models.resnet18(seed=seed), seed)
    assert sum(p.data.size for p in model.parameters()) == PARAMS
    return model


def torch_model(seed=0):
    """The same network in PyTorch (torchvision's resnet18 written out: torchvision is not needed) with
    convcore_model(seed)'s state loaded by name."""
    import torch
    from torch import nn

    class Block(nn.Module):
        def __init__(self, cin, cout, stride):
            super().__init__()
            self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(cout)
            self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(cout)
            self.downsample = None
            if stride != 1 or cin != cout:
                self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

        def forward(self, x):
            out = self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x)))))
            return torch.relu(out + (x if self.downsample is None else self.downsample(x)))

    class ResNet18(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
            self.bn1 = nn.BatchNorm2d(64)
            self.maxpool = nn.MaxPool2d(3, 2, 1)
            cin = 64
            for i, (cout, stride) in enumerate(STAGES):
                setattr(self, f"layer{i + 1}", nn.Sequential(Block(cin, cout, stride), Block(cout, cout, 1)))
                cin = cout
            self.fc = nn.Linear(512, CLASSES)

        def forward(self, x):
            x = self.maxpool(torch.relu(self.bn1(self.conv1(x))))
            x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
            return self.fc(torch.flatten(x.mean((2, 3)), 1))

    model = ResNet18()
    state = {name: torch.from_numpy(np.array(value)) for name, value in convcore_model(seed).state_dict().items()}
    loaded = model.load_state_dict(state, strict=False)
    assert not loaded.unexpected_keys, loaded.unexpected_keys
    assert all(key.endswith("num_batches_tracked") for key in loaded.missing_keys), loaded.missing_keys  # not kept
    assert sum(p.numel() for p in model.parameters()) == PARAMS
    return model


def onnx_model(seed=0):
    """The same network as an ONNX graph (opset 17, dynamic batch) with the same weights, serialised to bytes."""
    from onnx import helper, numpy_helper

    state = convcore_model(seed).state_dict()
    nodes, inits = [], []

    def const(name):
        inits.append(numpy_helper.from_array(np.asarray(state[name]), name))
        return name

    def node(op, inputs, **attrs):
        out = f"t{len(nodes)}"
        nodes.append(helper.make_node(op, inputs, [out], **attrs))
        return out

    def conv_bn(x, conv, bn, kernel, stride, relu):
        pad = kernel // 2
        y = node("Conv", [x, const(f"{conv}.weight")], pads=[pad] * 4, strides=[stride, stride])
        y = node("BatchNormalization", [y] + [const(f"{bn}.{p}") for p in ("weight", "bias", "running_mean",
                                                                             "running_var")], epsilon=1e-5)
        return node("Relu", [y]) if relu else y

    cur = node("MaxPool", [conv_bn("x", "conv1", "bn1", 7, 2, True)], kernel_shape=[3, 3], strides=[2, 2],
               pads=[1, 1, 1, 1])
    cin = 64
    for i, (cout, first_stride) in enumerate(STAGES):
        for b in range(2):
            block, stride = f"layer{i + 1}.{b}", first_stride if b == 0 else 1
            out = conv_bn(conv_bn(cur, f"{block}.conv1", f"{block}.bn1", 3, stride, True), f"{block}.conv2",
                          f"{block}.bn2", 3, 1, False)
            skip = cur
            if stride != 1 or cin != cout:
                skip = conv_bn(cur, f"{block}.downsample.0", f"{block}.downsample.1", 1, stride, False)
            cur = node("Relu", [node("Add", [out, skip])])
            cin = cout
    cur = node("Flatten", [node("GlobalAveragePool", [cur])], axis=1)
    cur = node("Gemm", [cur, const("fc.weight"), const("fc.bias")], transB=1)
    return lenet.onnx_bytes("resnet18", nodes, inits, cur, INPUT_SHAPE, CLASSES)
