"""CIFAR ResNet-20 (convcore.models.resnet20's layout, option A shortcuts) built for each peer with one set of
weights: convcore's model from a seed, its BatchNorm running statistics set from the same seed (so that eval-mode
normalisation is not the identity), and the same arrays loaded into PyTorch and written into an ONNX graph.

Used by bench_infer.py and bench_train.py so that every side runs the same network on the same numbers.
"""
import numpy as np

import lenet

PARAMS = 269_722  # option A shortcuts (zero-padded identity), convcore.models.resnet20's default
INPUT_SHAPE = (3, 32, 32)
STAGES = ((16, 1), (32, 2), (64, 2))  # (channels, first block's stride), 3 blocks each


def with_running_statistics(model, seed):
    """model with its BatchNorm2d running means set in [-0.5, 0.5] and variances in [0.5, 2] from seed (so that
    eval-mode normalisation is not the identity); also resnet18.py's."""
    import convcore as cc

    rng = np.random.default_rng(seed)
    for module in model.modules():
        if isinstance(module, cc.nn.BatchNorm2d):
            module.running_mean[...] = rng.uniform(-0.5, 0.5, module.num_features)
            module.running_var[...] = rng.uniform(0.5, 2.0, module.num_features)
    return model


def convcore_model(seed=0):
    """convcore.models.resnet20(seed=seed) with running means in [-0.5, 0.5] and variances in [0.5, 2]."""
    import convcore as cc

    model = with_running_statistics(cc.models.resnet20(seed=seed), seed)
    assert sum(p.data.size for p in model.parameters()) == PARAMS
    return model


def _arrays(seed):
    """Every parameter and running statistic of convcore_model(seed), in the order PyTorch lists them (per
    module: weight, bias, then running mean and variance)."""
    import convcore as cc

    model = convcore_model(seed)
    out = []
    for module in model.modules():
        if isinstance(module, (cc.nn.Conv2d, cc.nn.Linear)):
            out += [module.weight.data] + ([] if module.bias is None else [module.bias.data])
        elif isinstance(module, cc.nn.BatchNorm2d):
            out += [module.weight.data, module.bias.data, module.running_mean, module.running_var]
    return out


def torch_model(seed=0):
    """The same network in PyTorch with the same weights and running statistics."""
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
    for cout, stride in STAGES:
        for i in range(3):
            layers.append(Block(cin, cout, stride if i == 0 else 1))
            cin = cout
    model = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 10))
    assert sum(p.numel() for p in model.parameters()) == PARAMS
    targets = [t for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear, nn.BatchNorm2d))
               for t in ([m.weight] + ([] if m.bias is None else [m.bias])
                         + ([m.running_mean, m.running_var] if isinstance(m, nn.BatchNorm2d) else []))]
    arrays = _arrays(seed)
    assert len(targets) == len(arrays)
    with torch.no_grad():
        for t, a in zip(targets, arrays):
            t.copy_(torch.from_numpy(a).reshape(t.shape))
    return model


def onnx_model(seed=0):
    """The same network as an ONNX graph (opset 17, dynamic batch) with the same weights, serialised to bytes."""
    from onnx import helper, numpy_helper

    arrays = iter(_arrays(seed))
    nodes, inits = [], []

    def const(array):
        name = f"c{len(inits)}"
        inits.append(numpy_helper.from_array(np.asarray(array), name))
        return name

    def node(op, inputs, **attrs):
        out = f"t{len(nodes)}"
        nodes.append(helper.make_node(op, inputs, [out], **attrs))
        return out

    def conv_bn(x, stride, relu):
        y = node("Conv", [x, const(next(arrays))], pads=[1, 1, 1, 1], strides=[stride, stride])
        y = node("BatchNormalization", [y] + [const(next(arrays)) for _ in range(4)], epsilon=1e-5)
        return node("Relu", [y]) if relu else y

    cur = conv_bn("x", 1, True)
    cin = 16
    for cout, first_stride in STAGES:
        for i in range(3):
            stride = first_stride if i == 0 else 1
            out = conv_bn(conv_bn(cur, stride, True), 1, False)
            skip = cur
            if stride != 1 or cout != cin:  # option A: subsample, then zero channels on both sides
                skip = node("Slice", [cur, const(np.array([0, 0])), const(np.array([1 << 30, 1 << 30])),
                                      const(np.array([2, 3])), const(np.array([stride, stride]))])
                lo = (cout - cin) // 2
                skip = node("Pad", [skip, const(np.array([0, lo, 0, 0, 0, cout - cin - lo, 0, 0]))])
            cur = node("Relu", [node("Add", [out, skip])])
            cin = cout
    cur = node("Flatten", [node("GlobalAveragePool", [cur])], axis=1)
    cur = node("Gemm", [cur, const(next(arrays)), const(next(arrays))], transB=1)
    return lenet.onnx_bytes("resnet20", nodes, inits, cur, INPUT_SHAPE)
