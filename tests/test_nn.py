"""nn layers: float64 gradient checks of every layer (input and parameter gradients), eval mode, state_dict."""
import copy
import pickle
import re

import numpy as np
import pytest

import convcore as cc
from convcore import nn
from convcore.nn.container import _Checked, _InOrder
from gradcheck import numerical_grad, relative_error


def check_layer(layer, x, rng, tol=1e-6, prepare=None):
    """Compare backward with central differences for the input and every parameter (float64, train mode)."""
    layer.to(np.float64).train()
    x = x.astype(np.float64)
    prepare = prepare or (lambda: None)
    prepare()
    y = layer(x)
    dy = rng.standard_normal(y.shape)
    layer.zero_grad()
    dx = layer.backward(dy)

    def run(v):
        prepare()
        return layer.forward(v)
    assert relative_error(dx, numerical_grad(run, x.copy(), dy)) < tol
    for name, p in layer.named_parameters():
        num = numerical_grad(lambda _: run(x), p.data, dy)
        assert relative_error(p.grad, num) < tol, name


LAYERS = {
    "conv2d": (lambda r: nn.Conv2d(4, 6, 3, stride=2, padding=1, groups=2, rng=r), (2, 4, 7, 6)),
    "conv2d_nobias_dilated": (lambda r: nn.Conv2d(3, 2, (2, 3), dilation=(2, 1), bias=False, rng=r), (2, 3, 6, 6)),
    "conv1d": (lambda r: nn.Conv1d(3, 4, 3, stride=2, padding=1, rng=r), (2, 3, 9)),
    "linear": (lambda r: nn.Linear(5, 3, rng=r), (4, 5)),
    "maxpool2d": (lambda r: nn.MaxPool2d(3, 2, 1, ceil_mode=True), (2, 3, 7, 7)),
    "maxpool1d": (lambda r: nn.MaxPool1d(2), (2, 3, 8)),
    "avgpool2d": (lambda r: nn.AvgPool2d(3, 2, 1, count_include_pad=False), (2, 3, 7, 6)),
    "adaptive_avgpool": (lambda r: nn.AdaptiveAvgPool2d((3, 2)), (2, 3, 7, 5)),
    "global_avgpool": (lambda r: nn.GlobalAvgPool2d(), (2, 3, 4, 5)),
    "relu": (lambda r: nn.ReLU(), (3, 7)),
    "leaky_relu": (lambda r: nn.LeakyReLU(0.1), (3, 7)),
    "sigmoid": (lambda r: nn.Sigmoid(), (3, 7)),
    "tanh": (lambda r: nn.Tanh(), (3, 7)),
    "flatten": (lambda r: nn.Flatten(), (2, 3, 4)),
    "batchnorm2d": (lambda r: nn.BatchNorm2d(3), (4, 3, 3, 2)),
    "batchnorm1d": (lambda r: nn.BatchNorm1d(5), (6, 5)),
    "batchnorm1d_3d": (lambda r: nn.BatchNorm1d(3), (2, 3, 4)),
    "sequential_bn_relu": (lambda r: nn.Sequential(nn.Conv2d(2, 3, 3, padding=1, bias=False, rng=r),
                                                   nn.BatchNorm2d(3), nn.ReLU()), (3, 2, 4, 4)),
    "sequential_fused": (lambda r: nn.Sequential(nn.Conv2d(2, 3, 3, padding=1, rng=r), nn.ReLU(), nn.Flatten(),
                                                 nn.Linear(48, 4, rng=r), nn.ReLU(), nn.Linear(4, 2, rng=r)),
                         (2, 2, 4, 4)),
    "basic_block_B": (lambda r: nn.BasicBlock(2, 4, stride=2, shortcut="B", rng=r), (2, 2, 5, 5)),
    "basic_block_A": (lambda r: nn.BasicBlock(2, 4, stride=2, shortcut="A", rng=r), (2, 2, 5, 5)),
    "basic_block_identity": (lambda r: nn.BasicBlock(3, 3, rng=r), (2, 3, 4, 4)),
    "inception": (lambda r: nn.Inception(3, 2, 2, 3, 1, 2, 2, rng=r), (2, 3, 5, 5)),
}


@pytest.mark.parametrize("name", list(LAYERS))
def test_layer_gradients_float64(name, rng):
    build, shape = LAYERS[name]
    layer = build(np.random.default_rng(0))
    x = rng.standard_normal(shape)
    if name.startswith("batchnorm"):
        layer.weight.data[...] = rng.standard_normal(layer.weight.data.shape)
        layer.bias.data[...] = rng.standard_normal(layer.bias.data.shape)
    check_layer(layer, x, rng)


def test_dropout_gradient_with_a_fixed_mask(rng):
    layer = nn.Dropout(0.3, rng=0)
    x = rng.standard_normal((4, 6))

    def reset():
        layer.rng = np.random.default_rng(0)
    check_layer(layer, x, rng, prepare=reset)
    y = layer(x.astype(np.float32))
    kept = y != 0
    assert 0.4 < kept.mean() < 0.95
    np.testing.assert_allclose(y[kept], x.astype(np.float32)[kept] / 0.7, rtol=1e-6)
    assert np.array_equal(layer.eval()(x), x)


def test_eval_keeps_nothing_for_backward(rng):
    model = cc.models.lenet5(seed=0)
    x = rng.random((2, 1, 28, 28), dtype=np.float32)
    model.train()
    model(x)
    model.eval()
    assert all(getattr(m, "_x", None) is None for m in model.modules())
    model(x)
    with pytest.raises(RuntimeError, match="needs a forward pass in training mode"):
        model.backward(np.ones((2, 10), np.float32))


def test_batchnorm_running_statistics_and_eval(rng):
    bn = nn.BatchNorm2d(3)
    x = rng.standard_normal((8, 3, 4, 4)).astype(np.float32) * 2 + 1
    bn(x)
    mean = x.mean(axis=(0, 2, 3))
    var = x.var(axis=(0, 2, 3), ddof=1)
    np.testing.assert_allclose(bn.running_mean, 0.1 * mean, rtol=1e-5)
    np.testing.assert_allclose(bn.running_var, 0.9 + 0.1 * var, rtol=1e-5)
    assert int(bn.num_batches_tracked) == 1
    bn.eval()
    expected = (x - bn.running_mean[None, :, None, None]) / np.sqrt(bn.running_var[None, :, None, None] + 1e-5)
    np.testing.assert_allclose(bn(x), expected, rtol=1e-4, atol=1e-5)


def _batchnorm_reference(x, dy, gamma, beta, eps=1e-5):
    """Training-mode batch norm forward and backward over all axes but 1, in float64 numpy."""
    x, dy = x.astype(np.float64), dy.astype(np.float64)
    axes = (0,) + tuple(range(2, x.ndim))
    shape = (1, -1) + (1,) * (x.ndim - 2)
    mean, var = x.mean(axis=axes), x.var(axis=axes)
    xhat = (x - mean.reshape(shape)) / np.sqrt(var + eps).reshape(shape)
    y = xhat * gamma.reshape(shape) + beta.reshape(shape)
    dgamma, dbeta = (dy * xhat).sum(axis=axes), dy.sum(axis=axes)
    count = x.size // x.shape[1]
    dx = (gamma / np.sqrt(var + eps)).reshape(shape) * (
        dy - (dbeta / count).reshape(shape) - xhat * (dgamma / count).reshape(shape))
    return y, dx, dgamma, dbeta


@pytest.mark.parametrize("shape", [(16, 8, 9, 7), (33, 5), (4, 6, 50)])
def test_batchnorm_kernels_match_float64_reference_at_any_thread_count(rng, shape):
    # an offset of 100 with unit spread: a one-pass E[x^2] - E[x]^2 variance would lose most of its digits here
    x = (rng.standard_normal(shape) + 100).astype(np.float32)
    dy = rng.standard_normal(shape).astype(np.float32)
    gamma, beta = rng.standard_normal(shape[1]), rng.standard_normal(shape[1])
    y_ref, dx_ref, dgamma_ref, dbeta_ref = _batchnorm_reference(x, dy, gamma, beta)
    results = []
    for threads in (1, 2, 3):
        with cc.threads(threads):
            bn = (nn.BatchNorm2d if len(shape) == 4 else nn.BatchNorm1d)(shape[1])
            bn.weight.data[...] = gamma
            bn.bias.data[...] = beta
            y = bn(x)
            dx = bn.backward(dy)
            results.append((y, dx, bn.weight.grad, bn.bias.grad))
    for got, want in zip(results[0], (y_ref, dx_ref, dgamma_ref, dbeta_ref)):
        np.testing.assert_allclose(got, want, rtol=2e-4, atol=2e-4)
    for other in results[1:]:
        assert all(np.array_equal(a, b) for a, b in zip(results[0], other))


def test_state_dict_names_round_trip_and_strict_errors(rng):
    model = cc.models.resnet20(seed=0)
    state = model.state_dict()
    names = list(state)
    assert names[:6] == ["conv1.weight", "bn1.weight", "bn1.bias", "bn1.running_mean", "bn1.running_var",
                         "bn1.num_batches_tracked"]
    assert "layer2.0.conv1.weight" in names and names[-2:] == ["fc.weight", "fc.bias"]
    other = cc.models.resnet20(seed=1)
    other.load_state_dict({k: v.copy() for k, v in state.items()})
    x = rng.random((2, 3, 8, 8), dtype=np.float32)
    assert np.array_equal(other.eval()(x), model.eval()(x))
    with pytest.raises(KeyError, match=r"missing keys \['fc.bias'\]"):
        other.load_state_dict({k: v for k, v in state.items() if k != "fc.bias"})
    with pytest.raises(KeyError, match=r"unexpected keys \['extra'\]"):
        other.load_state_dict({**state, "extra": np.zeros(1)})
    with pytest.raises(ValueError, match=r"fc.weight has shape \(3, 64\), the model expects \(10, 64\)"):
        other.load_state_dict({**state, "fc.weight": np.zeros((3, 64), np.float32)})
    with pytest.raises(ValueError, match=r"fc.bias has dtype float64"):
        other.load_state_dict({**state, "fc.bias": np.zeros(10)})
    other.load_state_dict({"fc.bias": np.full(10, 7, np.float32)}, strict=False)
    assert (other.fc.bias.data == 7).all()


def test_sequential_fusion_matches_unfused(rng):
    seq = nn.Sequential(nn.Conv2d(2, 4, 3, rng=0), nn.ReLU(), nn.Flatten(), nn.Linear(36, 5, rng=1), nn.ReLU())
    x = rng.standard_normal((3, 2, 5, 5)).astype(np.float32)
    y = seq(x)
    z = x
    for layer in seq:
        z = layer.forward(z)
    assert np.array_equal(y, z)


def test_empty_batch_and_non_contiguous_input(rng):
    model = cc.models.lenet5(seed=0).eval()
    assert model(np.zeros((0, 1, 28, 28), np.float32)).shape == (0, 10)
    x = rng.random((2, 1, 28, 28), dtype=np.float32)
    assert np.array_equal(model(np.asfortranarray(x)), model(x))


def test_layer_argument_errors():
    with pytest.raises(ValueError, match=r"in_channels \(3\) and out_channels \(4\) must both be divisible by "
                                         r"groups \(2\)"):
        nn.Conv2d(3, 4, 3, groups=2)
    with pytest.raises(ValueError, match="kernel_size must be >= 1"):
        nn.Conv2d(3, 4, 0)
    with pytest.raises(ValueError, match=r"p must be a probability in \[0, 1\), got 1.5"):
        nn.Dropout(1.5)
    with pytest.raises(TypeError, match="rng must be a numpy Generator"):
        nn.Linear(2, 3, rng="seed")
    with pytest.raises(ValueError, match="rng must be a non-negative int seed .*, got -1"):
        nn.Conv2d(1, 2, 3, rng=-1)
    with pytest.raises(TypeError, match=r"p must be a real number \(a probability in \[0, 1\)\), got 'a'"):
        nn.Dropout("a")
    assert nn.Dropout(np.float32(0.5)).p == 0.5
    with pytest.raises(ValueError, match=r"eps must be > 0 .*, got -1.0"):  # all-NaN output before
        nn.BatchNorm2d(3, eps=-1.0)
    with pytest.raises(ValueError, match=r"momentum must be in \[0, 1\] .*, got 5.0"):  # a negative running_var
        nn.BatchNorm2d(3, momentum=5.0)
    with pytest.raises(TypeError, match="eps must be a finite real number, got 'x'"):
        nn.BatchNorm2d(3, eps="x")
    flatten = nn.Flatten()
    flatten(np.zeros((2, 3, 4), np.float32))
    with pytest.raises(ValueError, match=r"dy must have Flatten's output shape \(2, 12\) .* got \(2, 5\)"):
        flatten.backward(np.zeros((2, 5), np.float32))
    mse = nn.MSELoss()
    mse(np.zeros(3, np.float32), np.ones(3, np.float32))
    with pytest.raises(TypeError, match="grad_output must be a finite real number, got 'a'"):
        mse.backward("a")
    with pytest.raises(ValueError, match="x has 2 channels"):
        nn.BatchNorm2d(3)(np.zeros((2, 2, 3, 3), np.float32))
    with pytest.raises(ValueError, match=r"needs more than 1 value per channel, got x \(1, 3, 1, 1\)"):
        nn.BatchNorm2d(3)(np.zeros((1, 3, 1, 1), np.float32))
    with pytest.raises(TypeError, match="Sequential children must be Modules, got int for '1'"):
        nn.Sequential(nn.ReLU(), 3)
    with pytest.raises(ValueError, match="shortcut must be 'A'"):
        nn.BasicBlock(2, 2, shortcut="C")


@pytest.mark.parametrize("name", list(LAYERS))
def test_layer_batch_zero_train_forward_backward(name):
    build, shape = LAYERS[name]
    layer = build(np.random.default_rng(0))
    x = np.zeros((0, *shape[1:]), np.float32)
    y = layer(x)
    assert y.shape[0] == 0
    dx = layer.backward(np.zeros(y.shape, np.float32))
    assert dx.shape == x.shape
    for pname, p in layer.named_parameters():
        assert p.grad.shape == p.data.shape and not p.grad.any(), pname
    for m in layer.modules():  # an empty batch leaves running statistics alone, as PyTorch
        if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            assert not m.running_mean.any() and (m.running_var == 1).all() and int(m.num_batches_tracked) == 1


@pytest.mark.parametrize("name", list(LAYERS))
def test_layer_non_contiguous_input_matches_contiguous(name, rng):
    build, shape = LAYERS[name]
    wide = rng.standard_normal((*shape[:-1], 2 * shape[-1])).astype(np.float32)
    strided = wide[..., ::2]
    assert not strided.flags.c_contiguous
    results = []
    for x in (np.ascontiguousarray(strided), strided):
        layer = build(np.random.default_rng(0))
        y = layer(x)
        dy = np.random.default_rng(1).standard_normal(y.shape).astype(np.float32)
        dx = layer.backward(dy)
        results.append((y, dx, [p.grad for p in layer.parameters()]))
    (y0, dx0, g0), (y1, dx1, g1) = results
    assert np.array_equal(y0, y1) and np.array_equal(dx0, dx1)
    assert all(np.array_equal(a, b) for a, b in zip(g0, g1))


def test_batchnorm_eval_uses_running_statistics_and_keeps_nothing(rng):
    bn = nn.BatchNorm1d(4)
    bn.running_mean[...] = rng.standard_normal(4)
    bn.running_var[...] = rng.uniform(0.5, 2, 4)
    bn.weight.data[...] = rng.standard_normal(4)
    x = rng.standard_normal((3, 4)).astype(np.float32)
    bn.eval()
    expected = (x - bn.running_mean) / np.sqrt(bn.running_var + 1e-5) * bn.weight.data + bn.bias.data
    np.testing.assert_allclose(bn(x), expected, rtol=1e-5, atol=1e-6)
    assert int(bn.num_batches_tracked) == 0
    with pytest.raises(RuntimeError, match="BatchNorm1d.backward needs a forward pass in training mode"):
        bn.backward(np.ones((3, 4), np.float32))


def test_module_structure_buffers_and_float64():
    block = nn.BasicBlock(2, 4, stride=2, rng=0)
    assert [n for n, _ in block.named_children()] == ["conv1", "bn1", "relu", "conv2", "bn2", "downsample"]
    assert [n for n, _ in block.named_buffers()][:3] == ["bn1.running_mean", "bn1.running_var",
                                                         "bn1.num_batches_tracked"]
    assert len(list(block.buffers())) == 9
    block.to(np.float64)
    assert all(p.data.dtype == np.float64 for p in block.parameters())
    assert block.bn1.num_batches_tracked.dtype == np.int64
    assert block(np.ones((2, 2, 5, 5))).dtype == np.float64
    assert "(downsample): Sequential(" in repr(block)


def _held_for_backward(model):
    """Every private attribute a layer fills in forward (saved inputs, outputs, masks, indices) that is not None."""
    # the eval plan, the calls a layer prepared for its input shape, a container's order and the count of edits its
    # children were last checked at (_distinct_at): no activations
    registries = {"_parameters", "_buffers", "_modules", "_plan", "_prepared", "_scheduled", "_distinct_at"}
    return [(name, attr) for name, m in model.named_modules() for attr, value in vars(m).items()
            if attr.startswith("_") and attr not in registries and value is not None]


def test_eval_forward_keeps_nothing_in_any_layer(rng):
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1, rng=0), nn.BatchNorm2d(4), nn.LeakyReLU(), nn.MaxPool2d(2),
        nn.BasicBlock(4, 8, stride=2, shortcut="A", rng=0), nn.BasicBlock(8, 8, rng=0),
        nn.Inception(8, 2, 2, 2, 2, 2, 2, rng=0), nn.AvgPool2d(2, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        nn.Dropout(0.2, rng=0), nn.Linear(8, 6, rng=0), nn.Tanh(), nn.BatchNorm1d(6), nn.Sigmoid(),
        nn.Linear(6, 3, rng=0), nn.ReLU())
    x = rng.standard_normal((2, 3, 8, 8)).astype(np.float32)
    model.train()
    model(x)
    assert len(_held_for_backward(model)) > 20
    model.eval()
    assert _held_for_backward(model) == []
    model(x)
    assert _held_for_backward(model) == []
    model.train()
    y = model(x)
    assert model.backward(np.ones_like(y)).shape == x.shape


def test_init_bounds_and_explicit_seeding():
    rng = np.random.default_rng(0)
    w = nn.init.kaiming_uniform(rng, (400, 50), fan_in=50, a=0.0)   # He uniform: bound sqrt(6 / fan_in)
    assert w.dtype == np.float32 and np.abs(w).max() <= np.sqrt(6 / 50) < np.abs(w).max() * 1.01
    w = nn.init.kaiming_uniform(rng, (400, 50), fan_in=50)          # PyTorch's default a = sqrt(5): 1/sqrt(fan_in)
    assert np.abs(w).max() <= 1 / np.sqrt(50) < np.abs(w).max() * 1.01
    lin = nn.Linear(8, 3, bias=True, rng=7)
    assert np.array_equal(lin.weight.data, nn.Linear(8, 3, rng=7).weight.data)
    assert np.abs(lin.bias.data).max() <= 1 / np.sqrt(8)
    a, b = cc.models.resnet20(seed=3), cc.models.resnet20(seed=np.random.default_rng(3))
    assert all(np.array_equal(p.data, q.data) for p, q in zip(a.parameters(), b.parameters()))
    assert not np.array_equal(a.fc.weight.data, cc.models.resnet20(seed=4).fc.weight.data)
    with pytest.raises(TypeError, match="seed must be a numpy Generator, an int seed or None, got float"):
        cc.models.lenet5(seed=1.5)


@pytest.mark.parametrize("bn,shape", [(lambda: nn.BatchNorm2d(3), (4, 3, 2, 2)), (lambda: nn.BatchNorm1d(5), (6, 5))])
def test_batchnorm_eval_mode_derivatives_float64(bn, shape, rng):
    # eval keeps nothing, so backward refuses; the running-statistics forward is checked against its closed-form
    # derivatives: d/dx = weight / sqrt(running_var + eps), d/dweight = sum(dy * xhat), d/dbias = sum(dy)
    layer = bn().to(np.float64).eval()
    c = layer.num_features
    layer.running_mean[...] = rng.standard_normal(c)
    layer.running_var[...] = rng.uniform(0.5, 2, c)
    layer.weight.data[...] = rng.standard_normal(c)
    x = rng.standard_normal(shape)
    dy = rng.standard_normal(shape)
    view = (1, -1) + (1,) * (x.ndim - 2)
    axes = (0,) + tuple(range(2, x.ndim))
    inv_std = 1 / np.sqrt(layer.running_var + layer.eps)
    xhat = (x - layer.running_mean.reshape(view)) * inv_std.reshape(view)
    assert relative_error(dy * (layer.weight.data * inv_std).reshape(view),
                          numerical_grad(layer.forward, x.copy(), dy)) < 1e-7
    for p, expected in ((layer.weight, (dy * xhat).sum(axis=axes)), (layer.bias, dy.sum(axis=axes))):
        assert relative_error(expected, numerical_grad(lambda _: layer.forward(x), p.data, dy)) < 1e-7
    with pytest.raises(RuntimeError, match="needs a forward pass in training mode"):
        layer.backward(dy)


@pytest.mark.parametrize("build,shape", [
    (lambda: cc.models.lenet5(seed=0), (3, 1, 28, 28)),
    (lambda: cc.models.resnet20(seed=0), (2, 3, 8, 8)),
    (lambda: nn.Sequential(nn.Inception(3, 2, 2, 2, 2, 2, 2, rng=0), nn.Flatten()), (2, 3, 4, 4)),
])
def test_backward_without_input_grad_gives_the_same_parameter_gradients(build, shape, rng):
    x = rng.standard_normal(shape).astype(np.float32)
    grads = []
    for input_grad in (True, False):
        model = build()
        y = model(x)
        dx = model.backward(np.ones_like(y), input_grad=input_grad)
        assert (dx is None) == (not input_grad)
        grads.append([p.grad for p in model.parameters()])
    assert all(np.array_equal(a, b) for a, b in zip(*grads))


@pytest.mark.parametrize("build,shape,inner,starts_the_model", [
    (lambda: cc.models.lenet5(seed=0), (2, 1, 28, 28), lambda m: m[3], False),
    (lambda: nn.Sequential(nn.BasicBlock(2, 2, rng=0)), (1, 2, 4, 4), lambda m: m[0].conv1, True),
    (lambda: nn.Sequential(nn.Inception(3, 2, 2, 2, 2, 2, 2, rng=0)), (1, 3, 4, 4), lambda m: m[0].branch2[0], True),
])
def test_input_grad_false_inside_a_model_is_refused_by_name(build, shape, inner, starts_the_model, rng):
    # input_grad = False skips a layer's input gradient: fine on a model's first layer (on a path from the model's
    # input) when the model's input gradient is not wanted, but a layer with others before it leaves them no gradient:
    # a ValueError naming the rule, not a TypeError further on
    model = build()
    inner(model).input_grad = False
    y = model(rng.standard_normal(shape).astype(np.float32))
    with pytest.raises(ValueError, match="input_grad = False only on a model's first layer"):
        model.backward(np.ones_like(y))
    if starts_the_model:
        assert model.backward(np.ones_like(y), input_grad=False) is None
    else:
        with pytest.raises(ValueError, match="input_grad = False only on a model's first layer"):
            model.backward(np.ones_like(y), input_grad=False)


# --- the eval-mode plan of Sequential / Chain ---------------------------------------------------------------------

class _Doubler(nn.Module):
    """A child without a plan step whose output shape depends on the values (the plan must notice)."""

    def forward(self, x):
        return np.concatenate([x, x], axis=1) if x.sum() > 0 else x


def _plan_model():
    return nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1, rng=0), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(6, 8, 3, rng=1),
        nn.BatchNorm2d(8), nn.ReLU(), nn.AvgPool2d(2, 1, padding=1, count_include_pad=False), nn.Flatten(),
        nn.Dropout(0.3, rng=0), nn.Linear(8 * 3 * 3, 10, rng=2), nn.ReLU(), nn.Linear(10, 4, rng=3))


def _unplanned(model, x):
    return model._run(x, model._schedule()[0])


@pytest.mark.parametrize("copy_of", [copy.deepcopy, lambda m: pickle.loads(pickle.dumps(m))],
                         ids=["deepcopy", "pickle"])
def test_a_copied_model_computes_with_its_own_weights(copy_of, rng):
    """After training and eval forwards (prepared calls and a plan bound to the original's arrays), a deep copy or an
    unpickled model gives the same outputs, and its weights changed in place change its outputs only."""
    model = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                          nn.Linear(16, 3))
    x = rng.standard_normal((2, 2, 4, 4)).astype(np.float32)
    model(x)
    y = model.eval()(x)
    twin = copy_of(model)
    np.testing.assert_array_equal(twin(x), y)
    for p in twin.parameters():
        p.data *= 0  # in place: the twin's Linear now gives its zero bias
    np.testing.assert_array_equal(twin(x), np.zeros_like(y))
    np.testing.assert_array_equal(model(x), y)
    twin.train()
    np.testing.assert_array_equal(twin(x), np.zeros_like(y))


@pytest.mark.parametrize("copy_of", [copy.deepcopy, lambda m: pickle.loads(pickle.dumps(m))],
                         ids=["deepcopy", "pickle"])
def test_a_model_copied_after_a_training_forward_backpropagates_its_own_weights(copy_of, rng):
    # the backward a training forward prepared is bound to the original's weights: the copy needs its own forward
    model = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(16, 3))
    x = rng.standard_normal((2, 2, 4, 4)).astype(np.float32)
    dy = np.ones((2, 3), np.float32)
    model(x)
    twin = copy_of(model)
    with pytest.raises(RuntimeError, match="needs a forward pass in training mode first"):
        twin.backward(dy)
    for p in twin.parameters():
        p.data *= 0
    twin(x)
    np.testing.assert_array_equal(twin.backward(dy), np.zeros_like(x))  # through its own zero weights
    assert np.abs(model.backward(dy)).max() > 0


def test_eval_plan_runs_a_subclass_forward(rng):
    # a subclass overriding forward (a container's or a layer's) runs it: the plan's step for its base class would
    # skip it
    class Doubled(nn.Sequential):
        def forward(self, x):
            return 2 * super().forward(x)

    class Negated(nn.Conv2d):
        def forward(self, x, activation=None):
            return -super().forward(x, activation)

    x = rng.standard_normal((2, 3, 8, 8)).astype(np.float32)
    for model in (nn.Sequential(Doubled(nn.Conv2d(3, 4, 3, rng=rng), nn.ReLU()), nn.MaxPool2d(2)),
                  nn.Sequential(Negated(3, 4, 3, rng=rng), nn.MaxPool2d(2)),
                  nn.Sequential(nn.Sequential(Negated(3, 4, 3, rng=rng)), nn.Flatten())):
        want = model(x)  # training mode: layer by layer
        np.testing.assert_array_equal(model.eval()(x), want)
        np.testing.assert_array_equal(model(x), want)  # the plan's second call
        np.testing.assert_array_equal(nn.freeze(model)(x), want)


def test_eval_plan_gives_the_layer_by_layer_bits(rng):
    model = _plan_model()
    model.train()
    model(rng.standard_normal((4, 3, 8, 8)).astype(np.float32))  # running statistics away from their start
    model.eval()
    for shape in [(2, 3, 8, 8), (2, 3, 8, 8), (1, 3, 8, 8), (5, 3, 8, 8)]:  # build, reuse, rebuild per shape
        x = rng.standard_normal(shape).astype(np.float32)
        y = model(x)
        assert model._plan is not None and model._plan.shape == shape
        assert np.array_equal(y, _unplanned(model, x))
    # every child has a step (BatchNorm2d's with its running statistics): the whole chain runs in one native call
    assert not any(isinstance(s, _Checked) for s in model._plan.steps) and model._plan.native is not None


def test_eval_plan_follows_parameter_and_child_changes(rng):
    model = _plan_model().eval()
    x = rng.standard_normal((2, 3, 8, 8)).astype(np.float32)
    y0 = model(x)
    model[9].weight.data *= 2  # in place: the bound array is the parameter's
    y1 = model(x)
    assert not np.array_equal(y0, y1) and np.array_equal(y1, _unplanned(model, x))
    model[11].bias.data = model[11].bias.data + 1  # a new array: the plan is rebuilt
    y2 = model(x)  # (dot + (b + 1) need not round like (dot + b) + 1)
    assert np.allclose(y2, y1 + 1, rtol=0, atol=1e-6) and np.array_equal(y2, _unplanned(model, x))
    setattr(model, "11", nn.Linear(10, 2, rng=5).eval())  # a new child
    assert model(x).shape == (2, 2)
    model.to(np.float64)  # new arrays of another dtype: float32 input is refused as on the unplanned path
    with pytest.raises(TypeError, match="dtype"):
        model(x)
    assert model(x.astype(np.float64)).dtype == np.float64


def test_eval_plan_follows_replaced_parameters_and_options(rng):
    # a plan binds its children's parameter arrays and options: replacing a Parameter, removing a bias or changing
    # a stride or a pooling window must rebuild it (each was used stale before)
    x = rng.standard_normal((2, 3, 8, 8)).astype(np.float32)
    model = _plan_model().eval()
    model(x)
    model[0].weight = nn.Parameter(rng.standard_normal(model[0].weight.shape).astype(np.float32))
    assert np.array_equal(model(x), _unplanned(model, x))
    model[11].bias = None
    assert np.array_equal(model(x), _unplanned(model, x))
    model = nn.Sequential(nn.Conv2d(3, 4, 3, rng=0), nn.ReLU(), nn.MaxPool2d(2)).eval()
    assert model(x).shape == (2, 4, 3, 3)
    model[0].stride, model[0].padding = (2, 2), (1, 1)
    assert model(x).shape == (2, 4, 2, 2)
    model[2].kernel_size = (1, 1)
    assert model(x).shape == (2, 4, 4, 4) and np.array_equal(model(x), _unplanned(model, x))


def test_eval_plan_validates_like_the_layers(rng):
    model = _plan_model().eval()
    x = rng.standard_normal((2, 3, 8, 8)).astype(np.float32)
    y = model(x)
    with pytest.raises(TypeError, match="dtype float16"):
        model(x.astype(np.float16))
    with pytest.raises(ValueError, match="channels"):
        model(rng.standard_normal((2, 4, 8, 8)).astype(np.float32))
    with pytest.raises(TypeError, match="numpy array"):
        model(x.tolist())
    assert np.array_equal(model(np.asfortranarray(x)), y)  # non-contiguous input: copied, same answer
    model[9].weight.data.shape = (8 * 3 * 3, 10)  # reshaped in place: same array, wrong shape -> rebuilt, refused
    with pytest.raises(ValueError, match="in_features"):
        model(x)
    model[9].weight.data = np.asfortranarray(rng.standard_normal((10, 8 * 3 * 3)).astype(np.float32))
    y = model(x)  # a parameter that validation would copy: that layer runs unplanned, and in-place updates count
    model[9].weight.data *= 0
    assert np.array_equal(model(x), _unplanned(model, x)) and not np.array_equal(model(x), y)


class _Pair(nn.Module):
    """A child whose output is not an array (a tuple), consumed by the next child."""

    def forward(self, x):
        return (x, 2 * x)


class _Sum(nn.Module):
    def forward(self, pair):
        return pair[0] + pair[1]


def test_eval_plan_runs_unplanned_past_a_child_that_returns_no_array():
    model = nn.Sequential(nn.Linear(3, 3, rng=0), nn.ReLU(), _Pair(), _Sum(), nn.ReLU()).eval()
    x = np.array([[1.0, -2.0, 3.0]], np.float32)
    expected = 3 * np.maximum(model[0](x), 0)
    for _ in range(3):
        assert np.allclose(model(x), expected)
    assert model.__dict__.get("_plan") is None


def test_eval_plan_rechecks_children_without_a_step(rng):
    model = nn.Sequential(nn.Linear(3, 3, rng=0), _Doubler(), nn.Flatten()).eval()
    x = np.ones((2, 3), np.float32)
    model[0].weight.data[...] = np.eye(3)
    model[0].bias.data[...] = 0
    assert model(x).shape == (2, 6)  # plan built with the doubling branch
    assert model(-x).shape == (2, 3)  # the other branch: the plan notices and runs layer by layer
    assert model(x).shape == (2, 6)


@pytest.mark.parametrize("pool", [nn.MaxPool2d(2), nn.MaxPool2d(3, 2, padding=1, ceil_mode=True)], ids=repr)
def test_relu_then_max_pool_backward_masks_the_pooled_gradient_with_the_same_bits(rng, pool):
    model = nn.Sequential(nn.Conv2d(3, 5, 3, padding=1, rng=0), nn.ReLU(), pool)
    x = rng.standard_normal((2, 3, 9, 9)).astype(np.float32)
    x[0, :, :3, :3] = -50  # whole windows of zeros after the ReLU
    y = model(x)
    dy = rng.standard_normal(y.shape).astype(np.float32)
    dx = model.backward(dy)
    grads = [p.grad.copy() for p in model.parameters()]
    model.zero_grad()
    conv, relu, _ = list(model)  # the unfused chain, layer by layer
    expected = conv.backward(relu.backward(pool.backward(dy)))
    assert (y == 0).any() and np.array_equal(dx, expected)
    assert all(np.array_equal(g, p.grad) for g, p in zip(grads, model.parameters()))


def test_batch_norm_then_relu_fused_gives_the_unfused_bits(rng):
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1, rng=0), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(2),
                          nn.Flatten(), nn.Linear(4 * 4, 3, rng=1), nn.BatchNorm1d(3), nn.ReLU())
    model[1].bias.data[...] = [0.5, -0.5, 0.0, 1.0]  # channels mostly on, mostly off, and around the kink
    x = rng.standard_normal((6, 3, 5, 5)).astype(np.float32)
    y = model(x)
    dy = rng.standard_normal(y.shape).astype(np.float32)
    dx = model.backward(dy)
    grads = [p.grad.copy() for p in model.parameters()]
    model.zero_grad()
    h = x  # the same layers one by one: BatchNorm without the activation, then each ReLU's own backward
    for layer in model:
        h = layer.forward(h)
    assert np.array_equal(h, y) and (y == 0).any() and (y > 0).any()
    g = dy
    for layer in reversed(list(model)):
        g = layer.backward(g)
    assert np.array_equal(g, dx)
    assert all(np.array_equal(a, p.grad) for a, p in zip(grads, model.parameters()))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_batch_norm_adds_a_residual_before_its_relu_in_one_pass(rng, dtype):
    bn = nn.BatchNorm2d(3).to(dtype)
    bn.bias.data[...] = [0.5, -0.5, 0.0]
    x = rng.standard_normal((4, 3, 5, 5)).astype(dtype)
    skip = rng.standard_normal(x.shape).astype(dtype)
    y = bn.forward(x, activation="relu", residual=skip)
    plain = bn.forward(x)  # the same statistics (x is the same batch); the sum and ReLU in numpy
    expected = plain + skip
    expected[expected < 0] = 0
    assert np.array_equal(y, expected) and (y == 0).any() and (y > 0).any()
    with pytest.raises(ValueError, match="residual must have x's shape"):
        bn.forward(x, residual=skip[:, :2])
    with pytest.raises(TypeError, match="residual has dtype"):
        bn.forward(x, residual=skip.astype(np.float16))


@pytest.mark.parametrize("block_args", [(3, 3, 1, "B"), (2, 4, 2, "A"), (2, 4, 2, "B")])
def test_basic_block_fused_skip_gives_the_unfused_bits(rng, block_args):
    # the block adds the skip inside bn2's pass and takes the identity skip's gradient with the ReLU's mask in one
    # pass; the same arithmetic spelled out layer by layer must give the same bits
    cin, cout, stride, shortcut = block_args
    block = nn.BasicBlock(cin, cout, stride, shortcut, rng=0)
    block.bn2.bias.data[...] = np.linspace(-0.5, 0.5, cout)
    x = rng.standard_normal((3, cin, 6, 6)).astype(np.float32)
    y = block(x)
    dy = rng.standard_normal(y.shape).astype(np.float32)
    dx = block.backward(dy)
    grads = [p.grad.copy() for p in block.parameters()]
    block.zero_grad()
    h = block.relu(block.bn1(block.conv1(x)))
    main = block.bn2(block.conv2(h))
    skip = block._skip(x)
    out = cc.functional.relu(main + skip)
    assert np.array_equal(out, y) and (y == 0).any()
    dsum = cc.functional.relu_backward(dy, out)
    dh = block.relu.backward(block.conv2.backward(block.bn2.backward(dsum)))
    dmain = block.conv1.backward(block.bn1.backward(dh))
    if not block.reshapes:
        dskip = dsum
    elif shortcut == "B":
        dskip = block.downsample.backward(dsum)
    else:  # option A: the subsampled pixels of the input's channels, zero elsewhere
        dskip = np.zeros_like(x)
        dskip[:, :, ::stride, ::stride] = dsum[:, block.pad // 2:block.pad // 2 + cin]
    assert np.array_equal(dmain + dskip, dx)
    assert all(np.array_equal(a, p.grad) for a, p in zip(grads, block.parameters()))
    with pytest.raises(ValueError, match="dy must have the output's shape"):
        block.backward(dy[:, :1])


@pytest.mark.parametrize("shape,out_channels,stride", [((2, 3, 7, 5), 8, 2), ((1, 4, 6, 6), 6, 1),
                                                       ((3, 2, 9, 10), 2, 3), ((2, 3, 4, 4), 5, 9),
                                                       ((32, 32, 32, 32), 64, 2)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_option_a_shortcut_kernels(rng, shape, out_channels, stride, dtype):
    # the block's shortcut and its backward through the final ReLU, added into dx, against numpy's strided slices;
    # the last shape is past both kernels' serial threshold (2 threads split the planes)
    from convcore import _core
    x = rng.standard_normal(shape).astype(dtype)
    lo = (out_channels - shape[1]) // 2
    with cc.threads(2):
        y = _core.shortcut_forward(x, stride, lo, out_channels)
    expected = np.zeros((shape[0], out_channels, -(-shape[2] // stride), -(-shape[3] // stride)), dtype)
    expected[:, lo:lo + shape[1]] = x[:, :, ::stride, ::stride]
    assert y.dtype == dtype and np.array_equal(y, expected)
    dy = rng.standard_normal(y.shape).astype(dtype)
    out = rng.standard_normal(y.shape).astype(dtype)  # the block's output: its ReLU passes dy where out > 0
    out.flat[::7] = np.nan
    dx = rng.standard_normal(shape).astype(dtype)
    expected_dx = dx.copy()
    expected_dx[:, :, ::stride, ::stride] += np.where(out > 0, dy, 0)[:, lo:lo + shape[1]]
    with cc.threads(2):
        _core.shortcut_backward_add(dy, out, stride, lo, dx)
    assert np.array_equal(dx, expected_dx)
    # bad arguments (the kernels are private, but a direct call must not reach memory out of bounds): an overflowing
    # lo + channels, a negative lo, a stride of 0; a huge stride subsamples to one pixel
    for bad_lo in (out_channels - shape[1] + 1, -1, 2**63 - 1 - shape[1] // 2):
        with pytest.raises(ValueError, match="channels within"):
            _core.shortcut_forward(x, stride, bad_lo, out_channels)
        with pytest.raises(ValueError, match="not the shortcut's output"):
            _core.shortcut_backward_add(dy, out, stride, bad_lo, dx)
    with pytest.raises(ValueError, match="stride >= 1"):
        _core.shortcut_forward(x, 0, lo, out_channels)
    assert _core.shortcut_forward(x, 2**63 - 1, lo, out_channels).shape == (shape[0], out_channels, 1, 1)
    with pytest.raises(ValueError, match="not the shortcut's output"):
        _core.shortcut_backward_add(dy[:, :, :-1], out[:, :, :-1], stride, lo, dx)
    with pytest.raises(ValueError, match="shapes differ"):
        _core.shortcut_backward_add(dy, out[:, :1], stride, lo, dx)


@pytest.mark.parametrize("L", [1, 10, 32, 40, 47, 56, 100, 1024])
def test_batch_norm_float_kernels_match_float64_on_every_isa_and_thread_count(isa, L):
    # float rows of >= 32 values go through the per-ISA row kernels (float lanes per row, float64 across rows), shorter
    # ones through float64 sums channel by channel (one value a row: along the channels); a large common offset checks
    # that the variance is centred, not E[x^2] - m^2 in float, and a spread of row means that the rows' centred squares
    # are combined about the channel's mean
    from convcore import _core
    rng = np.random.default_rng(L)
    C, eps = 3, 1e-5
    N = 70000 // (C * L) + 1  # past the kernels' serial threshold, so that 2 threads do split the channels
    x = (rng.standard_normal((N, C, L)) + 100.0 + rng.standard_normal((N, C, 1))).astype(np.float32)
    dy = rng.standard_normal((N, C, L)).astype(np.float32)
    weight, bias = rng.standard_normal(C).astype(np.float32), rng.standard_normal(C).astype(np.float32)
    results = []
    for n in (1, 2):
        with cc.threads(n):
            y, mean, var = _core.batch_norm_train(x, weight, bias, eps, None, True)
            grads = [_core.batch_norm_backward(dy, x, mean, var, weight, eps, relu_out, True)
                     for relu_out in (None, y)]
        results.append([y, mean, var] + [g for grad in grads for g in grad])
    y, mean, var = results[0][:3]
    x64, dy64 = x.astype(np.float64), dy.astype(np.float64)
    np.testing.assert_allclose(mean, x64.mean(axis=(0, 2)), rtol=1e-7)
    np.testing.assert_allclose(var, x64.var(axis=(0, 2)), rtol=1e-5)
    inv_std = 1 / np.sqrt(var + eps)
    xhat = (x64 - mean.astype(np.float32)[None, :, None]) * inv_std[None, :, None]
    expected_y = np.maximum(xhat * weight[None, :, None] + bias[None, :, None], 0)
    np.testing.assert_allclose(y, expected_y, rtol=1e-4, atol=1e-4)
    assert (y == 0).any() and (y > 0).any()
    count = N * L
    for (dweight, dbias, dx), g in zip((results[0][3:6], results[0][6:9]), (dy64, np.where(y > 0, dy64, 0.0))):
        sum_g, sum_gx = g.sum(axis=(0, 2)), (g * xhat).sum(axis=(0, 2))
        np.testing.assert_allclose(dbias, sum_g, rtol=1e-5, atol=1e-3)
        np.testing.assert_allclose(dweight, sum_gx, rtol=1e-5, atol=1e-3)
        expected_dx = (weight * inv_std)[None, :, None] * (
            g - (sum_g / count)[None, :, None] - xhat * (sum_gx / count)[None, :, None])
        np.testing.assert_allclose(dx, expected_dx, rtol=1e-3, atol=1e-5)
    one, two = results  # the same bits whatever the thread count
    assert all(np.array_equal(a, b) for a, b in zip(one, two))


@pytest.mark.parametrize("L", [1, 49])
def test_batch_norm_keeps_precision_where_the_mean_is_large_against_the_spread(isa, L):
    # channels at 1000 with a spread of 0.01 (|mean| * scale = 1e5) and a constant one: normalised as (x - mean) *
    # scale + shift, every output is within float32 rounding of the float64 value (x * scale + (bias - mean * scale)
    # was 0.004-0.03 off: the difference of two values near 1e5), and the constant channel gives exactly its bias
    from convcore import _core
    rng = np.random.default_rng(L)
    N, C, eps = 64, 4, 1e-5
    x = (1000.0 + 0.01 * rng.standard_normal((N, C, L))).astype(np.float32)
    x[:, 3] = 1000.0
    weight, bias = rng.standard_normal(C).astype(np.float32), rng.standard_normal(C).astype(np.float32)
    y, mean, var = _core.batch_norm_train(x, weight, bias, eps, None, False)
    running_mean, running_var = mean + 0.003, var * 1.5  # eval: statistics other than the batch's
    y_eval = _core.batch_norm_eval(x, running_mean, running_var, weight, bias, eps, None, False)
    x64 = x.astype(np.float64)
    for got, m, v in ((y, mean, var), (y_eval, running_mean, running_var)):
        want = (x64 - m[None, :, None]) / np.sqrt(v + eps)[None, :, None] * weight[None, :, None] + bias[None, :, None]
        np.testing.assert_allclose(got, want, rtol=0, atol=2e-5 * np.abs(want).max())
    assert np.all(y[:, 3] == bias[3])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_batch_norm_of_values_near_the_largest_float_stays_finite(isa, dtype):
    # x - mean for x and a mean of opposite signs near the largest float overflows: such a mean is not subtracted
    # first (the outputs as the float64 / exact values, not infinities, nor NaN where the weight is 0)
    from convcore import _core
    big = np.finfo(dtype).max
    weight, bias = np.array([1.0, 0.0], dtype), np.array([0.5, 0.5], dtype)
    if dtype == np.float32:  # training: statistics in float64 (float64 data this large overflows their sums)
        x = np.array([big, big, -big], dtype).reshape(3, 1, 1) * np.ones((1, 2, 1), dtype)
        y, mean, var = _core.batch_norm_train(x, weight, bias, 1e-5, None, False)
        assert np.isfinite(y).all()
        xhat = np.array([1, 1, -2]) / np.sqrt(2)  # x / (big / 3) = 3, 3, -3 about a mean of 1, spread sqrt(8)
        np.testing.assert_allclose(y[:, 0, 0], xhat + 0.5, rtol=1e-5)
        assert np.all(y[:, 1] == 0.5)
    x = np.full((1, 2, 1), 0.9 * big, dtype)
    running_mean, running_var = np.full(2, -0.9 * big), np.full(2, 1e30 if dtype == np.float32 else 1e300)
    y = _core.batch_norm_eval(x, running_mean, running_var, weight, bias, 1e-5, None, False)
    want = 1.8 * (float(big) / np.sqrt(running_var[0])) + 0.5
    np.testing.assert_allclose(y[0, 0, 0], want, rtol=1e-5)
    assert y[0, 1, 0] == 0.5


@pytest.mark.parametrize("dtype,shape", [(np.float32, (6, 5, 7, 9)), (np.float32, (9, 4, 4, 4)),
                                         (np.float32, (4, 130, 1, 1)), (np.float64, (6, 5, 7, 9))])
def test_batch_norm_same_bits_on_every_isa_and_thread_count(dtype, shape, on_every_isa):
    # the row kernels are compiled per ISA without fusing a multiply and an add: every variant, at 1 and 2 threads,
    # gives the baseline's bits, forward (statistics, the apply with a residual and ReLU) and backward
    rng = np.random.default_rng(0)
    scale = 70000 // int(np.prod(shape)) + 1  # past the kernels' serial threshold, so that 2 threads split the work
    shape = (shape[0] * scale,) + shape[1:]
    x, skip, dy = (rng.standard_normal(shape).astype(dtype) for _ in range(3))

    def forward_backward():
        bn = nn.BatchNorm2d(shape[1]).to(dtype)
        bn.weight.data[...] = np.linspace(0.5, 1.5, shape[1])
        y = bn.forward(x, activation="relu", residual=skip)
        dx = bn.backward(dy)
        return [y, dx, bn.weight.grad, bn.bias.grad, bn.running_mean, bn.running_var]
    results = on_every_isa(forward_backward)
    baseline = results["scalar", 1]
    assert (baseline[0] == 0).any() and (baseline[0] > 0).any()
    for key, arrays in results.items():
        assert all(np.array_equal(got, want) for got, want in zip(arrays, baseline)), key


def _native_model():
    # every kind of step the native plan takes: conv with and without a fused ReLU or bias, a ReLU on its own,
    # max and average pooling (padding, count_include_pad), a view (Flatten), Dropout in eval, linear with and
    # without a fused ReLU
    return nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1, rng=0), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(6, 8, 3, bias=False, rng=1),
        nn.MaxPool2d(1), nn.ReLU(), nn.AvgPool2d(2, 1, padding=1, count_include_pad=False), nn.Flatten(),
        nn.Dropout(0.3, rng=0), nn.Linear(8 * 3 * 3, 10, rng=2), nn.ReLU(), nn.Linear(10, 4, bias=False, rng=3))


def test_native_plan_gives_the_layer_by_layer_bits_at_any_thread_count(rng):
    model = _native_model().eval()
    for shape in [(2, 3, 8, 8), (2, 3, 8, 8), (1, 3, 8, 8), (7, 3, 8, 8)]:  # build, reuse, rebuild per shape
        x = rng.standard_normal(shape).astype(np.float32)
        outputs = []
        for n in (1, 2):
            with cc.threads(n):
                outputs.append(model(x))
        assert model._plan.native is not None  # the whole chain in one call
        assert all(np.array_equal(y, _unplanned(model, x)) for y in outputs)


def test_native_plan_reads_parameters_in_place_and_is_rebuilt_for_new_arrays(rng):
    model = _native_model().eval()
    x = rng.standard_normal((2, 3, 8, 8)).astype(np.float32)
    y0 = model(x)
    native = model._plan.native
    model[0].weight.data *= 2  # in place: the native plan reads the same memory
    y1 = model(x)
    assert model._plan.native is native and not np.array_equal(y0, y1) and np.array_equal(y1, _unplanned(model, x))
    model[9].bias.data = model[9].bias.data + 1  # a new array: rebuilt
    y2 = model(x)
    assert model._plan.native is not native and np.array_equal(y2, _unplanned(model, x))
    for dtype in (np.float32, np.float64):  # the native plan, and the plan of steps in Python
        model.to(dtype)
        model(x.astype(dtype))
        assert (model._plan.native is not None) == (dtype == np.float32)
        model[9].weight.data.shape = (8 * 3 * 3, 10)  # reshaped in place: same array, wrong shape -> rebuilt, refused
        with pytest.raises(ValueError, match="in_features"):
            model(x.astype(dtype))
        model[9].weight.data.shape = (10, 8 * 3 * 3)


def test_native_plan_only_where_every_step_is_native(rng):
    x = rng.standard_normal((2, 3, 8, 8))
    model = _native_model().eval()
    model(x.astype(np.float32))
    assert model._plan.native is not None
    model.to(np.float64)  # float64 runs the reference kernels, step by step
    model(x)
    assert model._plan is not None and model._plan.native is None
    uneven = nn.Sequential(nn.Conv2d(3, 4, 3, rng=0), nn.AdaptiveAvgPool2d(4)).eval()  # 6 -> 4: no pooling's step
    assert np.array_equal(uneven(x.astype(np.float32)), _unplanned(uneven, x.astype(np.float32)))
    assert isinstance(uneven._plan.steps[1], _Checked) and uneven._plan.native is None
    views = nn.Sequential(nn.Flatten(), nn.Dropout(0.5)).eval()  # nothing to compute: the input's own view
    x32 = x.astype(np.float32)
    for _ in range(2):
        y = views(x32)
        assert views._plan.native is None and np.shares_memory(y, x32) and y.shape == (2, 3 * 8 * 8)


def test_native_plan_refuses_an_input_of_another_shape_or_dtype(rng):
    from convcore import _core
    model = _native_model().eval()
    model(rng.standard_normal((2, 3, 8, 8)).astype(np.float32))
    native = model._plan.native
    with pytest.raises(ValueError, match="the input's shape differs"):
        native.run(np.zeros((3, 3, 8, 8), np.float32))
    with pytest.raises(TypeError):  # never a converted copy
        native.run(np.zeros((2, 3, 8, 8), np.float64))
    with pytest.raises(ValueError, match="a reshape keeps the element count"):
        _core.NativePlan([2, 3]).add_reshape(0, [7])
    plan = _core.NativePlan([2, 3, 4, 4])
    with pytest.raises(ValueError, match="no value 1"):
        plan.add_relu(1, [2, 3, 4, 4])
    ones, twos = np.ones(3, np.float32), np.ones(2, np.float32)
    with pytest.raises(ValueError, match="need C values"):
        plan.add_batch_norm(0, ones, ones, twos, ones, 1e-5, False, [2, 3, 4, 4])
    flat = plan.add_reshape(0, [2, 48])
    with pytest.raises(ValueError, match="the residual's shape differs"):
        plan.add_batch_norm(0, ones, ones, ones, ones, 1e-5, False, [2, 3, 4, 4], residual=flat)
    with pytest.raises(ValueError, match="channel-padded shortcut"):
        plan.add_subsample_pad(0, 2, 2, [2, 4, 2, 2])  # 3 channels from channel 2 of 4
    assert not plan.set_output(flat)  # a view of the input: nothing computed
    with pytest.raises(ValueError, match="no output"):
        plan.run(np.zeros((2, 3, 4, 4), np.float32))
    # geometry worked out for another input shape (6 x 4 maps, 3 x 3 filters, padding 1): refused when added, where it
    # ran past its buffers
    w = np.ones((5, 3, 3, 3), np.float32)
    for shape, geometry in (([2, 5, 6, 4], (6, 4, 1, 1, 1, 1, 1, 1, 1)), ([2, 5, 4, 4], (6, 4, 1, 1, 1, 1, 1, 1, 1)),
                            ([2, 5, 4, 4], (4, 4, 1, 1, 1, 1, 1, 1, 3))):
        with pytest.raises(ValueError, match="a convolution's geometry differs from its input's shape"):
            plan.add_conv(0, w, None, geometry, False, shape)
    assert plan.add_conv(0, w, None, (4, 4, 1, 1, 1, 1, 1, 1, 1), False, [2, 5, 4, 4]) > 0
    for shape, geometry in (([2, 3, 3, 2], (6, 4, 3, 2, 2, 2, 2, 2, 0, 0)),
                            ([2, 3, 3, 2], (4, 4, 2, 2, 2, 2, 2, 2, 0, 0))):
        with pytest.raises(ValueError, match="a pooling's geometry differs from its input's shape"):
            plan.add_max_pool(0, geometry, shape)
        with pytest.raises(ValueError, match="a pooling's geometry differs from its input's shape"):
            plan.add_avg_pool(0, geometry, True, shape)
    assert plan.add_max_pool(0, (4, 4, 2, 2, 2, 2, 2, 2, 0, 0), [2, 3, 2, 2]) > 0


def test_a_nested_container_built_by_two_threads_keeps_each_shape_s_plan(rng):
    # a shared eval model whose nested container built its plan for one shape, then (another thread's call with another
    # shape completing meanwhile) read back the plan kept for that other shape: the outer plan took its steps and
    # gave outputs of the other shape, or ran native steps past their buffers (heap corruption); a helper's review.
    # The interleaving is forced: thread A stops as the nested container's build returns, until B's call is done.
    import sys
    import threading
    inner = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1, rng=1), nn.ReLU())
    model = nn.Sequential(inner, nn.MaxPool2d(2)).eval()
    reference = copy.deepcopy(model)
    xa, xb = (rng.standard_normal(shape).astype(np.float32) for shape in ((1, 3, 12, 8), (1, 3, 8, 8)))
    paused, resume = threading.Event(), threading.Event()

    def tracer(frame, event, arg):
        if frame.f_code.co_name == "_plan_and_run" and frame.f_locals.get("self") is inner:
            def local(frame, event, arg):
                if event == "return" and not paused.is_set():
                    paused.set()
                    resume.wait(10)
                return local
            return local
        return None

    def thread_a():
        sys.settrace(tracer)
        try:
            model(xa)
        finally:
            sys.settrace(None)
    a = threading.Thread(target=thread_a)
    a.start()
    assert paused.wait(10)
    model(xb)
    resume.set()
    a.join(10)
    for x in (xa, xb, xa):
        assert np.array_equal(model(x), reference(x))


def _randomized(model, rng):
    """model with every batch norm's running statistics and affine parameters away from their start."""
    for bn in (m for m in model.modules() if isinstance(m, nn.BatchNorm2d)):
        bn.running_mean[...] = rng.standard_normal(bn.num_features) * 0.1
        bn.running_var[...] = rng.random(bn.num_features) + 0.5
        bn.weight.data[...] = rng.random(bn.num_features) + 0.5
        bn.bias.data[...] = rng.standard_normal(bn.num_features) * 0.1
    return model.eval()


def _layer_by_layer(model, x, monkeypatch):
    """model's eval output with no plan anywhere: every container runs its children's forward in turn."""
    with monkeypatch.context() as m:
        m.setattr(_InOrder, "_plan_and_run", lambda self, x, layers: (self._run(x, self._schedule()[0]), None))
        for module in model.modules():
            module.__dict__.pop("_plan", None)
        return model(x)


@pytest.mark.parametrize("make, shape", [
    (lambda: cc.models.resnet20(seed=0), (3, 32, 32)),
    (lambda: cc.models.resnet20(shortcut="B", seed=1), (3, 32, 32)),
    (lambda: cc.models.resnet18(num_classes=10, seed=2), (3, 48, 48))], ids=["resnet20-A", "resnet20-B", "resnet18"])
def test_native_plan_runs_residual_networks_with_the_layer_by_layer_bits(rng, monkeypatch, make, shape):
    # blocks and nested containers join the outer plan: conv, batch norm (the shortcut added, ReLU fused), option A's
    # subsampled and zero-padded shortcut, option B's projection, max and global average pooling, linear
    model = _randomized(make(), rng)
    for n in (1, 3):
        x = rng.standard_normal((n, *shape)).astype(np.float32)
        outputs = []
        for threads in (1, 2):
            with cc.threads(threads):
                outputs += [model(x), model(x)]
        assert model._plan.native is not None and len(model._plan.steps) == len(model._modules) - 1  # ReLU fused
        expected = _layer_by_layer(model, x, monkeypatch)
        assert all(np.array_equal(y, expected) for y in outputs)


def test_native_plan_writes_a_batch_norm_over_its_input_only_where_nothing_else_reads_it(rng):
    from convcore import _core
    x = rng.standard_normal((2, 3, 6, 6)).astype(np.float32)
    conv = nn.Conv2d(3, 4, 3, padding=1, bias=False, rng=0).eval()
    bn = _randomized(nn.Sequential(nn.BatchNorm2d(4)), rng)[0]
    y = conv(x)
    once = bn(y)
    twice = bn.forward(once, residual=y)  # reads the convolution's output again, after the first batch norm
    _, *conv_args = conv._inference_step(x).native
    _, *bn_args = bn._inference_step(y).native
    for residual, expected in [(False, once), (True, twice)]:
        plan = _core.NativePlan(list(x.shape))
        a = plan.add_conv(0, *conv_args, list(y.shape))
        b = plan.add_batch_norm(a, *bn_args, list(y.shape))  # in place where a has no other reader
        if residual:
            b = plan.add_batch_norm(b, *bn_args, list(y.shape), residual=a)
        assert plan.set_output(b)
        for _ in range(2):  # buffers come back from the cache holding the previous run's values
            assert np.array_equal(plan.run(x), expected)


@pytest.mark.parametrize("shortcut", ["A", "B"])
def test_plan_is_built_with_one_pass_over_each_layer(rng, monkeypatch, shortcut):
    # blocks and nested containers hand their output for x to the plan being built instead of computing it again
    from convcore import _core
    model = cc.models.resnet20(shortcut=shortcut, seed=0).eval()
    convs = sum(isinstance(m, nn.Conv2d) for m in model.modules())
    calls = []
    forward = _core.conv2d_forward
    monkeypatch.setattr(_core, "conv2d_forward", lambda *args: calls.append(1) or forward(*args))
    model(rng.standard_normal((2, 3, 32, 32)).astype(np.float32))
    assert model._plan.native is not None and len(calls) == convs


def test_native_plan_follows_changes_inside_blocks(rng, monkeypatch):
    model = _randomized(cc.models.resnet20(seed=0), rng)
    x = rng.standard_normal((2, 3, 32, 32)).astype(np.float32)
    y0 = model(x)
    native = model._plan.native
    bn = model.layer2[1].bn1
    bn.running_var[...] *= 4  # in place: read by the same native plan
    y1 = model(x)
    assert model._plan.native is native and not np.array_equal(y0, y1)
    assert np.array_equal(y1, _layer_by_layer(model, x, monkeypatch))
    model.layer3[2].conv2.weight.data = model.layer3[2].conv2.weight.data * 0.5  # a new array, two levels down
    y2 = model(x)
    assert model._plan.native is not native and np.array_equal(y2, _layer_by_layer(model, x, monkeypatch))
    model(x)
    native = model._plan.native
    model.to(np.float64).to(np.float32)  # new buffers too
    assert np.array_equal(model(x), y2) and model._plan.native is not native
    assert model._plan.native is not None
    bn.train()  # a module deep inside in training mode: no plan; the batch's statistics update its running ones
    tracked = int(bn.num_batches_tracked)
    model(x)
    assert int(bn.num_batches_tracked) == tracked + 1
    bn.eval()
    calls = []
    conv = model.layer1[0].conv2
    conv.forward = lambda x, activation=None, f=conv.forward: calls.append(1) or f(x, activation)  # as summary does
    y3 = model(x)
    assert calls and np.array_equal(y3, _layer_by_layer(model, x, monkeypatch))  # the block runs its children


def test_max_pool_backward_routes_with_the_windows_of_its_forward(rng):
    """Options changed between forward and backward do not apply to that backward (the argmax offsets are only
    meaningful for the windows they were taken over); the next forward uses them."""
    x = rng.standard_normal((2, 3, 9, 9)).astype(np.float32)
    pool = nn.MaxPool2d(3, stride=2)
    pool.train()
    y = pool(x)
    dy = rng.standard_normal(y.shape).astype(np.float32)
    expected = cc.functional.max_pool2d_backward(dy, cc.functional.max_pool2d(x, 3, 2, return_indices=True)[1],
                                                 x.shape, 3, 2)
    pool.kernel_size, pool.stride = 2, 2
    np.testing.assert_array_equal(pool.backward(dy), expected)
    assert pool(x).shape == (2, 3, 4, 4)


def test_avg_pool_layer_keeps_its_validated_calls_and_routes_with_the_windows_of_its_forward(rng):
    """AvgPool2d validates once per input shape and options: its backward has the functional bits, routes with the
    windows of the forward it follows (options changed in between apply from the next forward), refuses a dy of
    another shape by name, and a new input shape or option is prepared again."""
    pool = nn.AvgPool2d(3, 2, 1, count_include_pad=False).train()
    for shape in ((2, 3, 9, 9), (2, 3, 9, 9), (1, 4, 7, 6)):
        x = rng.standard_normal(shape).astype(np.float32)
        y = pool(x)
        np.testing.assert_array_equal(y, cc.functional.avg_pool2d(x, 3, 2, 1, count_include_pad=False))
        dy = rng.standard_normal(y.shape).astype(np.float32)
        expected = cc.functional.avg_pool2d_backward(dy, x.shape, 3, 2, 1, count_include_pad=False)
        pool.count_include_pad = True
        np.testing.assert_array_equal(pool.backward(dy), expected)
        pool.count_include_pad = False
        with pytest.raises(ValueError, match=r"dy must have the pooling output shape"):
            pool.backward(dy[:, :, :-1])
    pool.count_include_pad = True
    np.testing.assert_array_equal(pool(x), cc.functional.avg_pool2d(x, 3, 2, 1, count_include_pad=True))
    pool.eval()
    pool(x)
    with pytest.raises(RuntimeError, match="needs a forward pass in training mode"):
        pool.backward(dy)


def _functional_conv(layer, x, activation=None):
    return cc.functional.conv2d(x, layer.weight.data, layer.bias.data, layer.stride, layer.padding, layer.dilation,
                                layer.groups, activation=activation)


def test_layers_prepare_again_when_input_options_or_parameters_change(rng):
    """A layer's validated calls are kept per input shape and dtype, options and parameter arrays: each change
    below must give the functional result for the new state, not the kept one."""
    conv = nn.Conv2d(3, 4, 3, padding=1, rng=0).train()
    x, x2 = (rng.standard_normal(s).astype(np.float32) for s in ((2, 3, 8, 8), (3, 3, 6, 5)))
    for inp in (x, x2, x):  # input shape changes and back
        np.testing.assert_array_equal(conv(inp), _functional_conv(conv, inp))
    np.testing.assert_array_equal(conv.forward(x, activation="relu"), _functional_conv(conv, x, "relu"))
    conv.stride, conv.padding = (2, 2), (0, 0)  # options changed on the layer
    assert conv(x).shape == (2, 4, 3, 3)
    np.testing.assert_array_equal(conv(x), _functional_conv(conv, x))
    conv.weight.data *= 2  # updated in place (as optimizers do): the kept calls read the array itself
    np.testing.assert_array_equal(conv(x), _functional_conv(conv, x))
    conv.weight.data = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)  # a new array
    np.testing.assert_array_equal(conv(x), _functional_conv(conv, x))
    conv.weight.data = np.asfortranarray(conv.weight.data * 3)  # one validation copies: prepared at every call
    np.testing.assert_array_equal(conv(x), _functional_conv(conv, x))
    assert conv._prepared is None
    conv.weight.data[0, 0, 0, 0] += 1  # so the next call must see this change
    np.testing.assert_array_equal(conv(x), _functional_conv(conv, x))
    with pytest.raises(TypeError, match="x has dtype int64"):
        conv(np.ones((2, 3, 8, 8), np.int64))  # same shape, another dtype: validated, not taken from the kept calls

    lin = nn.Linear(5, 3, rng=0).train()
    h = rng.standard_normal((4, 5)).astype(np.float32)
    np.testing.assert_array_equal(lin(h), cc.functional.linear(h, lin.weight.data, lin.bias.data))
    lin.bias = None
    np.testing.assert_array_equal(lin(h), cc.functional.linear(h, lin.weight.data))
    with pytest.raises(ValueError, match=r"x.shape\[1\] \(6\) must equal w.shape\[1\]"):
        lin(np.ones((4, 6), np.float32))

    pool = nn.MaxPool1d(2).train()
    v = rng.standard_normal((2, 3, 9)).astype(np.float32)
    np.testing.assert_array_equal(pool(v), cc.functional.max_pool1d(v, 2))
    pool.stride = 1
    np.testing.assert_array_equal(pool(v), cc.functional.max_pool1d(v, 2, 1))


def test_layer_backward_checks_dy_like_the_functional_api(rng):
    x = rng.standard_normal((2, 3, 6, 6)).astype(np.float32)
    layers = [(nn.Conv2d(3, 4, 3, rng=0), x), (nn.Linear(6, 2, rng=0), x[:, 0, 0, :].copy()),
              (nn.MaxPool2d(2), x), (nn.Conv1d(3, 2, 3, rng=0), x[:, :, 0, :].copy()), (nn.MaxPool1d(2), x[:, :, 0])]
    for layer, inp in layers:
        layer.train()
        y = layer(inp)
        with pytest.raises(ValueError, match="dy must have"):
            layer.backward(np.ones((y.shape[0] + 1,) + y.shape[1:], np.float32))
        with pytest.raises(TypeError, match="dy must be a numpy array"):
            layer.backward(None)
        dy = rng.standard_normal(y.shape).astype(np.float32)
        expected = layer.backward(dy)
        strided = np.empty(y.shape + (2,), np.float32)[..., 0]  # the same values, not C-contiguous
        strided[...] = dy
        np.testing.assert_array_equal(layer.backward(strided), expected)


def test_argument_flags_and_slopes_are_checked():
    with pytest.raises(TypeError, match="mode must be a bool, got 'False'"):
        nn.Linear(2, 2).train("False")
    with pytest.raises(TypeError, match="mode must be a bool, got None"):
        nn.Sequential(nn.ReLU()).train(None)
    assert nn.Linear(2, 2).train(np.bool_(False)).training is False
    with pytest.raises(TypeError, match="bias must be a bool, got 'no'"):
        nn.Linear(2, 2, bias="no")
    with pytest.raises(TypeError, match="bias must be a bool, got 0"):
        nn.Conv2d(1, 1, 3, bias=0)
    assert nn.Linear(2, 2, bias=False).bias is None and nn.Conv1d(1, 1, 3, bias=False).bias is None
    with pytest.raises(TypeError, match="negative_slope must be a finite real number, got 'abc'"):
        nn.LeakyReLU("abc")
    with pytest.raises(TypeError, match="negative_slope must be a finite real number, got nan"):
        nn.LeakyReLU(float("nan"))
    assert nn.LeakyReLU(np.float32(0.25)).negative_slope == 0.25


def test_assigning_a_buffer_replaces_it_everywhere():
    bn = nn.BatchNorm1d(2).eval()
    mean = np.full(2, 5, np.float32)
    bn.running_mean = mean  # as PyTorch: the array becomes the buffer
    assert bn.running_mean is mean and bn.state_dict()["running_mean"] is mean
    assert list(bn.buffers())[0] is mean
    np.testing.assert_allclose(bn(np.full((1, 2), 5, np.float32)), 0, atol=1e-6)
    bn.load_state_dict({**bn.state_dict(), "running_mean": np.full(2, 7, np.float32)})
    assert (mean == 7).all()  # loaded into the array forward reads
    np.testing.assert_allclose(bn(np.full((1, 2), 7, np.float32)), 0, atol=1e-6)
    with pytest.raises(ValueError, match=r"BatchNorm1d.running_mean is a buffer of shape \(2,\), got an array of "
                                         r"shape \(3,\)"):
        bn.running_mean = np.zeros(3, np.float32)
    with pytest.raises(ValueError, match=r"BatchNorm1d.running_var is a buffer of dtype float32, got an array of "
                                         r"dtype float64 \(convert it: value.astype\(np.float32\)\)"):
        bn.running_var = np.ones(2)
    with pytest.raises(TypeError, match="BatchNorm1d.running_var is a buffer: assign a numpy array, got list"):
        bn.running_var = [1.0, 1.0]
    assert bn.running_mean is mean and (bn.running_var == 1).all()


@pytest.mark.parametrize("name, rule", [
    ("forward", "would hide the module's own attribute"), ("parameters", "would hide"), ("training", "would hide"),
    ("_modules", "would hide"), ("a.b", "without '.'"), ("", "non-empty")])
def test_names_that_state_dict_could_not_tell_apart_or_that_hide_the_module_are_refused(name, rule):
    # Chain(forward=layer) ran that layer alone as the container's forward; "a.b" and "" made ambiguous state_dict keys
    with pytest.raises(ValueError, match=rf"Chain: a child module.* {re.escape(rule)}"):
        nn.Chain(**{name: nn.Linear(2, 2)})
    model = nn.Linear(2, 2)
    with pytest.raises(ValueError, match=rf"Linear: a parameter.* {re.escape(rule)}"):
        setattr(model, name, nn.Parameter(np.zeros(2, np.float32)))
    with pytest.raises(ValueError, match=rf"Linear: a buffer.* {re.escape(rule)}"):
        model.register_buffer(name, np.zeros(2, np.float32))
    assert list(model.state_dict()) == ["weight", "bias"] and callable(model.forward) and model.training is True


def test_register_buffer_refuses_a_non_array_and_a_name_in_use():
    model = nn.Linear(2, 2)
    with pytest.raises(TypeError, match=r"Linear.register_buffer: value must be a numpy array \(PyTorch's None "
                                        r"buffers are not supported\), got list for 'x'"):
        model.register_buffer("x", [1.0, 2.0])
    with pytest.raises(ValueError, match="Linear.register_buffer: 'weight' is already a parameter of this module"):
        model.register_buffer("weight", np.zeros(2, np.float32))
    block = nn.Chain(fc=model)
    with pytest.raises(ValueError, match="Chain.register_buffer: 'fc' is already a child module of this module"):
        block.register_buffer("fc", np.zeros(2, np.float32))
    model.register_buffer("scale", np.ones(2, np.float32))
    model.register_buffer("scale", np.full(2, 3, np.float32))  # registering a buffer again replaces it
    model.head = None
    model.head = nn.ReLU()  # a plain attribute may become a child
    assert list(block.state_dict()) == ["fc.weight", "fc.bias", "fc.scale"] and (model.scale == 3).all()


def test_subclasses_with_their_own_passes_are_not_fused_with_their_neighbours():
    # a Linear/Conv2d/BatchNorm followed by a ReLU runs as one call, and a ReLU's backward folds into the max pooling
    # after it: a subclass overriding forward or backward was skipped (a ReLU6 after a Linear gave 10, not 6)
    class ReLU6(nn.ReLU):
        def forward(self, x):
            return self.adopt_output(np.minimum(super().forward(x), np.float32(6)))

    class Shifted(nn.Linear):
        def forward(self, x):
            return super().forward(x) - np.float32(100)

    class Halved(nn.ReLU):  # its gradient halved: a backward of its own
        def backward(self, dy, input_grad=True):
            return super().backward(dy, input_grad) * np.float32(0.5)

    x = np.full((1, 2), 10, np.float32)
    identity = nn.Linear(2, 2)
    identity.weight.data[...] = np.eye(2)
    identity.bias.data[...] = 0
    for model, expected in ((nn.Sequential(identity, ReLU6()), 6), (nn.Sequential(Shifted(2, 2), nn.ReLU()), 0)):
        np.testing.assert_array_equal(model(x), np.full((1, 2), expected, np.float32))
        np.testing.assert_array_equal(model.eval()(x), np.full((1, 2), expected, np.float32))
    conv = nn.Sequential(nn.Conv2d(1, 1, 1), Halved(), nn.MaxPool2d(2))
    conv[0].weight.data[...] = 1
    conv[0].bias.data[...] = 0
    images = np.arange(1, 5, dtype=np.float32).reshape(1, 1, 2, 2)
    assert conv(images).item() == 4
    dx = conv.backward(np.ones((1, 1, 1, 1), np.float32))
    np.testing.assert_array_equal(dx, [[[[0, 0], [0, 0.5]]]])


def test_a_parameter_or_child_takes_only_its_kind_or_none_and_del_unregisters_it():
    conv = nn.Conv2d(2, 3, 3)
    with pytest.raises(TypeError, match=r"Conv2d.weight is a parameter: assign a Parameter \(or None to remove it\), "
                                        r"got ndarray \(to change its values: .data\[...\] = array\)"):
        conv.weight = np.zeros((3, 2, 3, 3), np.float32)  # was unregistered silently; the forward then failed
    model = nn.Sequential(nn.Linear(3, 3), nn.ReLU(), nn.Linear(3, 2))
    with pytest.raises(TypeError, match=r"Sequential.1 is a child module: assign a Module \(or None to remove it\), "
                                        r"got int"):
        setattr(model, "1", 5)
    assert list(conv.state_dict()) == ["weight", "bias"] and len(model) == 3
    x = np.ones((1, 3), np.float32)
    assert model.eval()(x).shape == (1, 2)  # a plan built with three children
    delattr(model, "2")  # was kept: still run and saved
    assert len(model) == 2 and list(model.state_dict()) == ["0.weight", "0.bias"]
    np.testing.assert_array_equal(model(x), np.maximum(model[0](x), 0))
    linear = nn.Linear(3, 2)
    del linear.bias
    assert list(linear.state_dict()) == ["weight"] and [n for n, _ in linear.named_parameters()] == ["weight"]
    with pytest.raises(AttributeError):
        del linear.bias


def test_private_names_of_parameters_buffers_and_children_stay_registered():
    """Module.__setattr__ stores a private attribute set before (a forward's saved state) in one step; a private
    name that is a parameter, buffer or child keeps its registration's rules, and a Parameter or Module assigned to
    a plain private attribute is registered."""
    class Holder(nn.Module):
        def __init__(self):
            super().__init__()
            self._w = nn.Parameter(np.ones(2, np.float32))
            self.register_buffer("_stat", np.zeros(2, np.float32))
            self._child = nn.ReLU()
            self._plain = None

    h = Holder()
    with pytest.raises(TypeError, match="Holder._w is a parameter"):
        h._w = np.zeros(2, np.float32)
    with pytest.raises(TypeError, match="Holder._child is a child module"):
        h._child = 3
    h._stat = np.full(2, 5, np.float32)  # the buffer replaced, still saved
    h._plain = np.full(2, 7, np.float32)  # a plain attribute: not saved
    state = h.state_dict()
    assert list(state) == ["_w", "_stat"] and state["_stat"].tolist() == [5, 5] and h._plain.tolist() == [7, 7]
    h._plain = nn.Parameter(np.zeros(3, np.float32))
    assert [n for n, _ in h.named_parameters()] == ["_w", "_plain"]
    edits = nn.Module._edits
    h._plain = None  # unregistered: an edit, as any change of the parameters (a container's plan is rebuilt)
    assert [n for n, _ in h.named_parameters()] == ["_w"] and h._plain is None and nn.Module._edits > edits
    setattr(h, "", 1)
    setattr(h, "", 2)  # a name with no first character, set again
    assert getattr(h, "") == 2

    class Early(nn.Module):
        def __init__(self):
            object.__setattr__(self, "_x", 1)
            self._x = 2  # before super().__init__()

    with pytest.raises(RuntimeError, match="must call super"):
        Early()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_a_0d_array_stays_0d_in_either_dtype(dtype):
    # float64 went through np.ascontiguousarray, which made a 0-d array 1-d: (1,) for float64, () for float32
    a = np.array(-0.5, dtype)
    for out in (cc.functional.relu(a), nn.ReLU()(a), nn.Sigmoid()(a), nn.Tanh()(a),
                cc.functional.relu_backward(np.array(1, dtype), a)):
        assert out.shape == () and out.dtype == dtype
    loss = nn.MSELoss()
    loss(a, np.array(0, dtype))
    assert loss.backward().shape == ()


@pytest.mark.parametrize("pool", [nn.MaxPool2d, nn.AvgPool2d])
def test_pooling_keeps_its_window_options_as_values(pool):
    # a list kept as given, changed in place later, went unseen by the calls the layer had prepared (and its plan)
    x = np.arange(64, dtype=np.float32).reshape(1, 1, 8, 8)
    layer = pool([2, 2], stride=np.array([2, 2]))
    assert layer.kernel_size == (2, 2) and layer.stride == (2, 2) and layer(x).shape == (1, 1, 4, 4)
    with pytest.raises(TypeError):
        layer.kernel_size[0] = 4
    layer.kernel_size, layer.stride = (4, 2), (4, 2)
    assert layer(x).shape == (1, 1, 2, 4) and layer.eval()(x).shape == (1, 1, 2, 4)
    layer.train().stride = [2, 2]  # assigned later: kept as a value too (it was kept as the list)
    assert layer.stride == (2, 2) and layer(x).shape == (1, 1, 3, 4)
    with pytest.raises(TypeError):
        layer.stride[0] = 1


@pytest.mark.parametrize("model", [False, True])
def test_convolution_options_assigned_later_are_checked_and_kept_as_values(model):
    # a list assigned after construction was kept as given: changed in place, it went unseen by the calls the layer
    # had prepared, which went on with the old stride
    x = np.ones((1, 1, 6, 6), np.float32)
    conv = nn.Conv2d(1, 1, 1)
    run = nn.Sequential(conv).eval() if model else conv
    conv.stride = [2, 2]
    assert conv.stride == (2, 2) and run(x).shape == (1, 1, 3, 3)
    with pytest.raises(TypeError):
        conv.stride[0] = 1
    conv.stride = [1, 1]
    assert run(x).shape == (1, 1, 6, 6)
    with pytest.raises(ValueError, match="padding must be >= 0, got -1"):
        conv.padding = -1
    with pytest.raises(TypeError, match="dilation must be an int or a sequence"):
        conv.dilation = "2"
    assert conv.padding == (0, 0) and conv.dilation == (1, 1)


def test_layer_options_assigned_later_are_refused_as_the_constructor_refuses_them():
    # Dropout's p = 1.0 gave all-NaN output and BatchNorm's eps = -1 NaN, where their constructors refuse them
    cases = [(nn.Dropout(), "p", 1.0, ValueError, r"p must be a probability in \[0, 1\), got 1.0"),
             (nn.Dropout(), "rng", "seed", TypeError, "rng must be a numpy Generator"),
             (nn.BatchNorm2d(3), "eps", -1, ValueError, r"eps must be > 0 .*, got -1"),
             (nn.BatchNorm2d(3), "momentum", 2, ValueError, r"momentum must be in \[0, 1\] .*, got 2"),
             (nn.LeakyReLU(), "negative_slope", float("nan"), TypeError, "negative_slope must be a finite real"),
             (nn.Linear(2, 3), "in_features", 0, ValueError, "in_features must be >= 1, got 0"),
             (nn.AdaptiveAvgPool2d(2), "output_size", (2, 0), ValueError, "output_size must be >= 1"),
             (nn.BasicBlock(2, 2), "stride", 0, ValueError, "stride must be >= 1, got 0")]
    for layer, name, value, error, message in cases:
        before = getattr(layer, name)
        with pytest.raises(error, match=message):
            setattr(layer, name, value)
        assert getattr(layer, name) is before, name
    dropout = nn.Dropout()
    dropout.p = np.float32(0.25)
    assert type(dropout.p) is float and dropout.p == 0.25


def _check_model(model, x, rng, tol=1e-6):
    """Central differences against backward for the input and every parameter of a float64 model run as model(x)."""
    y = model(x)
    dy = rng.standard_normal(y.shape)
    model.zero_grad()
    dx = model.backward(dy)
    assert relative_error(dx, numerical_grad(model.forward, x.copy(), dy)) < tol
    for name, p in model.named_parameters():
        assert relative_error(p.grad, numerical_grad(lambda _: model.forward(x), p.data, dy)) < tol, name


def test_modules_kept_in_eval_inside_a_training_model_backpropagate(rng):
    # as in PyTorch (a BatchNorm with frozen statistics, a Dropout off, a frozen backbone): their backward raised
    # "needs a forward pass in training mode first"; model(x) of a training-mode model keeps what backward needs
    model = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1, rng=0), nn.BatchNorm2d(3), nn.ReLU(), nn.Dropout(0.5),
                          nn.MaxPool2d(2), nn.AvgPool2d(1), nn.AdaptiveAvgPool2d(2), nn.Flatten(),
                          nn.Sequential(nn.Linear(12, 4, rng=1), nn.ReLU(), nn.Linear(4, 2, rng=2))).to(np.float64)
    frozen = model[1]
    frozen.running_mean[...] = rng.standard_normal(3)
    frozen.running_var[...] = rng.random(3) + 0.5
    frozen.weight.data[...] = rng.standard_normal(3)
    x = rng.standard_normal((3, 2, 4, 4))
    model.train()
    for i in (0, 1, 3, 4, 5, 6, 7):
        model[i].eval()
    model[8].eval()(np.zeros((3, 12)))  # an eval container with a plan for x's shape, to be skipped inside model(x)
    statistics = frozen.running_mean.copy(), frozen.running_var.copy()
    _check_model(model, x, rng)
    assert np.array_equal(frozen.running_mean, statistics[0]) and np.array_equal(frozen.running_var, statistics[1])
    block = nn.BasicBlock(2, 4, stride=2, shortcut="B", rng=2).to(np.float64)  # the skip added in bn2's pass
    for bn in (block.bn1, block.bn2, block.downsample[1]):
        bn.running_mean[...] = rng.standard_normal(bn.num_features)
        bn.running_var[...] = rng.random(bn.num_features) + 0.5
        bn.eval()
    _check_model(block, rng.standard_normal((2, 2, 5, 5)), rng)
    model.eval()(np.zeros((1, 2, 4, 4)))  # an eval model keeps nothing: a backward now is an error, for the max
    with pytest.raises(RuntimeError, match="needs a forward pass in training mode first"):  # pooling too (its
        model.backward(np.zeros((1, 2)))  # argmax from the training-mode call above was used)
    pool = nn.MaxPool2d(2).eval()
    nn.Sequential(pool)(np.ones((1, 1, 2, 2)))  # kept for backward: the pool is in a training model
    pool.forward(np.ones((1, 1, 2, 2)))  # kept nothing: its backward is an error, not the first call's argmax
    with pytest.raises(RuntimeError, match="MaxPool2d.backward needs a forward pass"):
        pool.backward(np.zeros((1, 1, 1, 1)))


def test_keeping_is_per_thread_ends_with_the_call_and_not_inside_a_frozen_model():
    import threading
    from convcore.nn.module import keeping

    class Probe(nn.Module):
        def forward(self, x):
            seen.append((threading.current_thread().name, keeping()))
            if failing:
                raise KeyError("probe")
            return x

        def backward(self, dy, input_grad=True):
            return dy
    seen, failing = [], False
    model = nn.Sequential(nn.Linear(2, 2, rng=0), Probe())
    model(np.ones((1, 2), np.float32))
    other = threading.Thread(target=lambda: model[1].forward(np.ones((1, 2), np.float32)), name="other")
    other.start()
    other.join()
    failing = True
    with pytest.raises(KeyError):
        model(np.ones((1, 2), np.float32))
    assert seen == [("MainThread", True), ("other", False), ("MainThread", True)] and not keeping()
    # a frozen snapshot run from a training model's forward keeps nothing and serves from its native plan
    backbone = nn.freeze(nn.Sequential(nn.Conv2d(1, 2, 3, rng=0), nn.BatchNorm2d(2), nn.ReLU()))

    class Head(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(8, 2, rng=1)

        def forward(self, x):
            return self.fc(backbone(x).reshape(len(x), -1))
    Head()(np.ones((2, 1, 4, 4), np.float32))
    assert list(backbone._plans.values())[0] is not None
    assert all(getattr(m, "_saved_state", None) is None and getattr(m, "_cache", None) is None
               for m in backbone._model.modules())


def test_a_module_instance_in_two_places_is_refused():
    relu = nn.ReLU()
    with pytest.raises(ValueError, match=r"ReLU at '3' is already at '1' in this Sequential: a module instance may "
                                         r"appear only once in a model .* use a separate instance for each place"):
        nn.Sequential(nn.Linear(2, 2), relu, nn.Linear(2, 2), relu)
    with pytest.raises(ValueError, match=r"ReLU at '1' is already at '0'"):  # the first fault, child by child
        nn.Sequential(relu, relu, "not a module")
    with pytest.raises(TypeError, match=r"children must be Modules, got str for '1'"):
        nn.Sequential(relu, "not a module", relu)
    block = nn.Sequential(nn.Linear(2, 2), nn.ReLU())
    with pytest.raises(ValueError, match=r"Sequential at 'second' is already at 'first' in this Chain"):
        nn.Chain(first=block, second=block)
    with pytest.raises(ValueError, match=r"Sequential at 'me' is this Sequential itself"):
        block.me = block
    block.add_on = nn.ReLU()  # separate instances, and replacing a child by a module inside it, are fine
    block.add_on = block.add_on
    # a module added inside a child after the model was built: refused at the next training forward
    model = nn.Sequential(block, nn.ReLU())
    block.extra = model[1]
    with pytest.raises(ValueError, match=r"ReLU at '1' is already at '0.extra' in this Sequential"):
        model(np.ones((1, 2), np.float32))
    block.extra = None
    assert model(np.ones((1, 2), np.float32)).shape == (1, 2)
    block._hidden = model[1]  # under a private name too, after a training forward had checked the model
    with pytest.raises(ValueError, match=r"ReLU at '1' is already at '0._hidden' in this Sequential"):
        model(np.ones((1, 2), np.float32))


def test_a_removed_child_no_longer_runs():
    x = np.ones((1, 3), np.float32)
    model = nn.Sequential(nn.Linear(3, 3, rng=0), nn.Linear(3, 2, rng=1))
    assert model(x).shape == (1, 2)  # training: its schedule made
    setattr(model, "1", None)
    assert model(x).shape == (1, 3) and len(model) == 1
    model.eval()
    assert model(x).shape == (1, 3)


def test_parameters_lists_a_shared_parameter_once():
    first, second = nn.Linear(2, 2, rng=0), nn.Linear(2, 2, rng=1)
    second.weight = first.weight  # tied weights: gradients of both uses add up in the one parameter
    model = nn.Sequential(first, second)
    assert [name for name, _ in model.named_parameters()] == ["0.weight", "0.bias", "1.bias"]
    assert [id(p) for p in model.parameters()] == [id(first.weight), id(first.bias), id(second.bias)]
    assert list(model.state_dict()) == ["0.weight", "0.bias", "1.weight", "1.bias"]  # as PyTorch's


def test_a_replaced_child_or_parameter_keeps_its_place():
    model = nn.Sequential(nn.Linear(2, 2, rng=0), nn.ReLU(), nn.Linear(2, 3, rng=1))
    setattr(model, "1", nn.Tanh())
    assert [type(m).__name__ for m in model] == ["Linear", "Tanh", "Linear"]
    assert model(np.ones((1, 2), np.float32)).shape == (1, 3)
    weight = nn.Parameter(np.zeros((2, 2), np.float32))
    model[0].weight = weight
    assert list(model[0].named_parameters()) == [("weight", weight), ("bias", model[0].bias)]


@pytest.mark.parametrize("make", [lambda: nn.Dropout(0.5, rng=0), lambda: nn.Dropout(0.0), lambda: nn.LeakyReLU(),
                                  lambda: nn.Sigmoid(), lambda: nn.Tanh()], ids=["dropout", "dropout0", "leaky_relu",
                                                                                 "sigmoid", "tanh"])
def test_elementwise_backward_checks_dy(make, rng):
    layer = make().train()
    x = rng.standard_normal((2, 3)).astype(np.float32)
    y = layer(x)
    with pytest.raises(ValueError, match=r"dy must have the output's shape \(2, 3\), got \(5, 2, 3\)"):
        layer.backward(np.ones((5, 2, 3), np.float32))
    with pytest.raises(ValueError, match=r"dy must have the output's shape \(2, 3\), got \(3,\)"):
        layer.backward(np.ones(3, np.float32))
    with pytest.raises(TypeError, match="dy has dtype float64 but must match the other operands' dtype float32"):
        layer.backward(np.ones((2, 3)))
    assert layer.backward(np.ones_like(y)).shape == (2, 3)


@pytest.mark.parametrize("make", [lambda: nn.MaxPool2d(2), lambda: nn.AvgPool2d(2), lambda: nn.AvgPool2d(3, 2, 1)],
                         ids=["max", "avg", "avg_padded"])
def test_pooling_backward_takes_dy_of_the_input_dtype(make, rng):
    # average pooling took a float64 dy for a float32 input and returned a float64 gradient, which the layer before
    # refused naming its own dy; max pooling refused it by name
    layer = make().train()
    y = layer(rng.standard_normal((2, 3, 6, 6)).astype(np.float32))
    with pytest.raises(TypeError, match="dy has dtype float64 but must match the other operands' dtype float32"):
        layer.backward(np.ones(y.shape))
    assert layer.backward(np.ones_like(y)).dtype == np.float32


def test_an_input_of_another_dtype_than_the_parameters_is_named():
    x64 = np.zeros((1, 1, 28, 28))
    message = (r"x has dtype float64 but the layer's parameters are float32; convert x \(x.astype\(np.float32\)\) "
               r"or the model \(model.to\(np.float64\)\)")
    for model in (cc.models.lenet5(seed=0).eval(), cc.models.lenet5(seed=0).train()):
        with pytest.raises(TypeError, match=message):
            model(x64)
    with pytest.raises(TypeError, match=r"x has dtype float32 but the layer's parameters are float64; convert x "
                                        r"\(x.astype\(np.float64\)\) or the model \(model.to\(np.float32\)\)"):
        nn.Linear(2, 2).to(np.float64)(np.zeros((1, 2), np.float32))
    with pytest.raises(TypeError, match="x has dtype float32 but the layer's parameters are float64"):
        nn.Conv1d(2, 2, 1).to(np.float64)(np.zeros((1, 2, 3), np.float32))
    # batch norm computed in x's dtype and gave float64 gradients to float32 parameters
    with pytest.raises(TypeError, match="x has dtype float64 but the layer's parameters are float32"):
        nn.BatchNorm1d(3)(np.zeros((4, 3)))
    with pytest.raises(TypeError, match="x has dtype float32 but the layer's parameters are float64"):
        nn.BatchNorm2d(3).to(np.float64)(np.zeros((2, 3, 2, 2), np.float32))


def test_adaptive_pooling_refuses_empty_planes():
    # the means over no element came back as NaN (with numpy's warning) where the sizes do not divide
    for layer in (nn.AdaptiveAvgPool2d(2), nn.GlobalAvgPool2d()):
        for shape in ((1, 1, 0, 3), (1, 1, 3, 0)):
            with pytest.raises(ValueError, match=r"x must have non-empty planes to average, got shape"):
                layer(np.zeros(shape, np.float32))


def test_load_state_dict_into_a_read_only_array_changes_nothing():
    layer = nn.Linear(2, 1, rng=0)
    weight = layer.weight.data.copy()
    layer.bias.data.flags.writeable = False
    with pytest.raises(ValueError, match=r"load_state_dict: the model's bias is a read-only array"):
        layer.load_state_dict({"weight": np.zeros((1, 2), np.float32), "bias": np.zeros(1, np.float32)})
    assert np.array_equal(layer.weight.data, weight)  # checked before anything is written


def test_a_slice_of_a_container_is_a_container_of_the_same_children():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3)).astype(np.float32)
    model = nn.Sequential(nn.Linear(3, 4, rng=0), nn.ReLU(), nn.Linear(4, 2, rng=1))
    features = model[:-1]
    assert type(features) is nn.Sequential and len(features) == 2
    assert features[0] is model[0] and features[1] is model[1]  # the same instances, as PyTorch's slice
    np.testing.assert_array_equal(features(x), np.maximum(model[0](x), 0))
    assert list(model[1:].state_dict()) == ["2.weight", "2.bias"]  # names kept, as PyTorch's
    assert list(model[::-1]._modules) == ["2", "1", "0"] and len(model[5:]) == 0
    named = nn.Chain(body=nn.Linear(3, 4, rng=0), head=nn.Linear(4, 2, rng=1))
    head = named[1:]
    assert type(head) is nn.Chain and list(head.state_dict()) == ["head.weight", "head.bias"]
    assert named[-1] is named.head
    model.eval()
    model(x)
    plan = model._plan
    part = model[:2]
    model(x)
    assert not part.training and model._plan is plan  # in the model's mode; the model keeps its plan
    np.testing.assert_array_equal(part(x), features(x))
    assert part._plan is not None  # ran as an eval plan


@pytest.mark.parametrize("build,name", [
    (lambda: nn.Linear(84, 2**70), "out_features"), (lambda: nn.Linear(2**70, 3), "in_features"),
    (lambda: nn.Conv2d(3, 2**70, 3), "out_channels"), (lambda: nn.Conv2d(2**70, 3, 3), "in_channels"),
    (lambda: nn.BatchNorm2d(2**70), "num_features"), (lambda: nn.BasicBlock(2**70, 4), "in_channels"),
])
def test_layer_sizes_past_2_40_are_refused_by_name(build, name):
    # numpy refused them as "Maximum allowed dimension exceeded", naming nothing
    with pytest.raises(ValueError, match=rf"{name} must be at most 2\*\*40, got 1180591620717411303424"):
        build()
