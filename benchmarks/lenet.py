"""LeNet-5 (convcore.models.lenet5's layout) built for each peer from one layer list and one set of weights.

Used by bench_infer.py and bench_train.py so that every side runs the same network on the same numbers.
"""
import numpy as np

# (kind, args): conv = (in, out, kernel, padding), pool = kernel (= stride), linear = (in, out)
LAYERS = [
    ("conv", (1, 6, 5, 2)), ("relu", ()), ("maxpool", 2),
    ("conv", (6, 16, 5, 0)), ("relu", ()), ("maxpool", 2),
    ("flatten", ()),
    ("linear", (400, 120)), ("relu", ()),
    ("linear", (120, 84)), ("relu", ()),
    ("linear", (84, 10)),
]
INPUT_SHAPE = (1, 28, 28)


def weights(seed=0):
    """[(weight, bias), ...] per conv/linear layer in order, float32, PyTorch's default init scale."""
    rng = np.random.default_rng(seed)
    out = []
    for kind, args in LAYERS:
        if kind == "conv":
            c, k, r, _ = args
            shape, fan_in = (k, c, r, r), c * r * r
        elif kind == "linear":
            shape, fan_in = (args[1], args[0]), args[0]
        else:
            continue
        bound = 1.0 / np.sqrt(fan_in)
        out.append((rng.uniform(-bound, bound, shape).astype(np.float32),
                    rng.uniform(-bound, bound, shape[0]).astype(np.float32)))
    return out


def convcore_model(seed=0):
    """convcore.models.lenet5 with the weights of weights(seed), loaded by parameter order (shapes checked)."""
    import convcore as cc

    model = cc.models.lenet5()
    flat = [a for pair in weights(seed) for a in pair]
    params = list(model.parameters())
    assert len(params) == len(flat), (len(params), len(flat))
    for p, a in zip(params, flat):
        assert p.data.shape == a.shape, (p.data.shape, a.shape)
        p.data[...] = a
    return model


def torch_model(seed=0):
    """The same network as a torch.nn.Sequential with the same weights."""
    import torch
    from torch import nn

    layers = []
    for kind, args in LAYERS:
        if kind == "conv":
            layers.append(nn.Conv2d(args[0], args[1], args[2], padding=args[3]))
        elif kind == "linear":
            layers.append(nn.Linear(*args))
        elif kind == "relu":
            layers.append(nn.ReLU())
        elif kind == "maxpool":
            layers.append(nn.MaxPool2d(args))
        else:
            layers.append(nn.Flatten())
    model = nn.Sequential(*layers)
    params = [p for m in model if isinstance(m, (nn.Conv2d, nn.Linear)) for p in (m.weight, m.bias)]
    with torch.no_grad():
        for p, a in zip(params, [a for pair in weights(seed) for a in pair]):
            p.copy_(torch.from_numpy(a))
    return model


def onnx_model(seed=0):
    """The same network as an ONNX graph (opset 17, dynamic batch), serialised to bytes."""
    from onnx import helper, numpy_helper

    nodes, inits = [], []
    cur, ws = "x", iter(weights(seed))
    for i, (kind, args) in enumerate(LAYERS):
        out = f"t{i}"
        if kind == "conv":
            w, b = next(ws)
            inits += [numpy_helper.from_array(w, f"w{i}"), numpy_helper.from_array(b, f"b{i}")]
            p = args[3]
            nodes.append(helper.make_node("Conv", [cur, f"w{i}", f"b{i}"], [out], pads=[p, p, p, p]))
        elif kind == "linear":
            w, b = next(ws)
            inits += [numpy_helper.from_array(w, f"w{i}"), numpy_helper.from_array(b, f"b{i}")]
            nodes.append(helper.make_node("Gemm", [cur, f"w{i}", f"b{i}"], [out], transB=1))
        elif kind == "relu":
            nodes.append(helper.make_node("Relu", [cur], [out]))
        elif kind == "maxpool":
            nodes.append(helper.make_node("MaxPool", [cur], [out], kernel_shape=[args, args], strides=[args, args]))
        else:
            nodes.append(helper.make_node("Flatten", [cur], [out], axis=1))
        cur = out
    return onnx_bytes("lenet5", nodes, inits, cur, INPUT_SHAPE)


def onnx_bytes(name, nodes, inits, output, input_shape, classes=10):
    """A graph of `nodes` and initializers `inits` from input "x" (a batch of input_shape) to the `classes` values
    of `output`, as a checked ONNX model (opset 17) serialised to bytes (also resnet20.py's and resnet18.py's)."""
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        nodes, name,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", *input_shape])],
        [helper.make_tensor_value_info(output, TensorProto.FLOAT, ["N", classes])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    return model.SerializeToString()
