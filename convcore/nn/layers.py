"""Layers: convolution, linear, pooling, activations, flatten, dropout, batch norm.

Each layer's forward keeps what its backward needs only in training mode; the math is in convcore.functional
(numpy one-liners where no kernel exists). Default initialisation follows PyTorch's.
"""
from __future__ import annotations

import numpy as np

from .. import functional as F
from .._validate import as_int, as_tensor, as_tuple
from .module import Module, Parameter


def _rng(rng):
    """An explicit numpy Generator: pass a Generator or a seed; None draws fresh entropy."""
    if isinstance(rng, np.random.Generator):
        return rng
    if rng is None or isinstance(rng, (int, np.integer)):
        return np.random.default_rng(rng)
    raise TypeError(f"rng must be a numpy Generator, an int seed or None, got {type(rng).__name__}")


def _uniform(rng, bound, shape):
    """U(-bound, bound) in float32, drawn directly in float32 (large layers initialise quickly)."""
    u = rng.random(shape, dtype=np.float32)
    u *= np.float32(2 * bound)
    u -= np.float32(bound)
    return u


class _ConvNd(Module):
    fuses_relu = True
    n_axes = 2

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1, groups=1,
                 bias=True, rng=None):
        super().__init__()
        n = self.n_axes
        self.in_channels = as_int(in_channels, "in_channels", minimum=1)
        self.out_channels = as_int(out_channels, "out_channels", minimum=1)
        self.kernel_size = as_tuple(kernel_size, "kernel_size", n, minimum=1)
        self.stride = as_tuple(stride, "stride", n, minimum=1)
        self.padding = as_tuple(padding, "padding", n, minimum=0)
        self.dilation = as_tuple(dilation, "dilation", n, minimum=1)
        self.groups = as_int(groups, "groups", minimum=1)
        if self.in_channels % self.groups or self.out_channels % self.groups:
            raise ValueError(f"in_channels ({in_channels}) and out_channels ({out_channels}) must both be divisible "
                             f"by groups ({groups})")
        rng = _rng(rng)
        fan_in = self.in_channels // self.groups * int(np.prod(self.kernel_size))
        bound = 1.0 / np.sqrt(fan_in)  # kaiming_uniform(a=sqrt(5)), as PyTorch
        self.weight = Parameter(_uniform(rng, bound, (self.out_channels, self.in_channels // self.groups,
                                                      *self.kernel_size)))
        self.bias = Parameter(_uniform(rng, bound, (self.out_channels,))) if bias else None
        self.input_grad = True
        self._x = None

    def _options(self):
        return dict(stride=self.stride, padding=self.padding, dilation=self.dilation, groups=self.groups)

    def forward(self, x, activation=None):
        conv = F.conv2d if self.n_axes == 2 else F.conv1d
        y = conv(x, self.weight.data, None if self.bias is None else self.bias.data, activation=activation,
                 **self._options())
        self._x = as_tensor(x, "x") if self.training else None
        return y

    def backward(self, dy, input_grad=True):
        x = self._saved(self._x)
        back = F.conv2d_backward if self.n_axes == 2 else F.conv1d_backward
        dx, dw, db = back(dy, x, self.weight.data, input_grad=input_grad and self.input_grad,
                          bias_grad=self.bias is not None, **self._options())
        self.weight.accumulate(dw)
        if self.bias is not None:
            self.bias.accumulate(db)
        return dx

    def _release(self):
        self._x = None

    def extra_repr(self):
        s = (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
             f"padding={self.padding}")
        if self.dilation != (1,) * self.n_axes:
            s += f", dilation={self.dilation}"
        if self.groups != 1:
            s += f", groups={self.groups}"
        return s + ("" if self.bias is not None else ", bias=False")


class Conv2d(_ConvNd):
    """2-D convolution layer: (N, C, H, W) -> (N, out_channels, P, Q); weight (out, in/groups, kh, kw)."""
    n_axes = 2


class Conv1d(_ConvNd):
    """1-D convolution layer: (N, C, L) -> (N, out_channels, L_out); weight (out, in/groups, k)."""
    n_axes = 1


class Linear(Module):
    """Fully connected layer: (N, in_features) -> (N, out_features); weight (out, in)."""
    fuses_relu = True

    def __init__(self, in_features, out_features, bias=True, rng=None):
        super().__init__()
        self.in_features = as_int(in_features, "in_features", minimum=1)
        self.out_features = as_int(out_features, "out_features", minimum=1)
        rng = _rng(rng)
        bound = 1.0 / np.sqrt(self.in_features)
        self.weight = Parameter(_uniform(rng, bound, (self.out_features, self.in_features)))
        self.bias = Parameter(_uniform(rng, bound, (self.out_features,))) if bias else None
        self.input_grad = True
        self._x = None

    def forward(self, x, activation=None):
        y = F.linear(x, self.weight.data, None if self.bias is None else self.bias.data, activation=activation)
        self._x = as_tensor(x, "x") if self.training else None
        return y

    def backward(self, dy, input_grad=True):
        x = self._saved(self._x)
        dx, dw, db = F.linear_backward(dy, x, self.weight.data, input_grad=input_grad and self.input_grad,
                                       bias_grad=self.bias is not None)
        self.weight.accumulate(dw)
        if self.bias is not None:
            self.bias.accumulate(db)
        return dx

    def _release(self):
        self._x = None

    def extra_repr(self):
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


class _MaxPoolNd(Module):
    n_axes = 2

    def __init__(self, kernel_size, stride=None, padding=0, ceil_mode=False):
        super().__init__()
        self.kernel_size, self.stride, self.padding, self.ceil_mode = kernel_size, stride, padding, ceil_mode
        self._saved_state = None

    def _args(self):
        return self.kernel_size, self.stride, self.padding, self.ceil_mode

    def forward(self, x):
        pool = F.max_pool2d if self.n_axes == 2 else F.max_pool1d
        if not self.training:
            return pool(x, *self._args())
        y, idx = pool(x, *self._args(), return_indices=True)
        self._saved_state = (idx, x.shape)
        return y

    def backward(self, dy, input_grad=True):
        idx, shape = self._saved(self._saved_state, "argmax indices")
        back = F.max_pool2d_backward if self.n_axes == 2 else F.max_pool1d_backward
        return back(dy, idx, shape, *self._args())

    def _release(self):
        self._saved_state = None

    def extra_repr(self):
        return (f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}, "
                f"ceil_mode={self.ceil_mode}")


class MaxPool2d(_MaxPoolNd):
    """Max pooling over (N, C, H, W); stride defaults to kernel_size."""
    n_axes = 2


class MaxPool1d(_MaxPoolNd):
    """Max pooling over (N, C, L)."""
    n_axes = 1


class AvgPool2d(Module):
    """Average pooling over (N, C, H, W); count_include_pad as PyTorch."""

    def __init__(self, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True):
        super().__init__()
        self.kernel_size, self.stride, self.padding = kernel_size, stride, padding
        self.ceil_mode, self.count_include_pad = ceil_mode, count_include_pad
        self._shape = None

    def _args(self):
        return self.kernel_size, self.stride, self.padding, self.ceil_mode, self.count_include_pad

    def forward(self, x):
        y = F.avg_pool2d(x, *self._args())
        self._shape = x.shape if self.training else None
        return y

    def backward(self, dy, input_grad=True):
        return F.avg_pool2d_backward(dy, self._saved(self._shape, "input shape"), *self._args())

    def _release(self):
        self._shape = None

    def extra_repr(self):
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"


class AdaptiveAvgPool2d(Module):
    """Average pooling to a fixed output size; window i spans [floor(i*H/out), ceil((i+1)*H/out)) as PyTorch."""

    def __init__(self, output_size):
        super().__init__()
        self.output_size = as_tuple(output_size, "output_size", 2, minimum=1)
        self._shape = None

    @staticmethod
    def _bounds(size, out):
        return [((i * size) // out, -(-((i + 1) * size) // out)) for i in range(out)]

    def forward(self, x):
        x = as_tensor(x, "x", ndim=4)
        N, C, H, W = x.shape
        oh, ow = self.output_size
        if (H, W) == (oh, ow):
            y = x.copy()
        elif H % oh == 0 and W % ow == 0:
            y = x.reshape(N, C, oh, H // oh, ow, W // ow).mean(axis=(3, 5), dtype=x.dtype)
        else:
            y = np.empty((N, C, oh, ow), x.dtype)
            for i, (h0, h1) in enumerate(self._bounds(H, oh)):
                for j, (w0, w1) in enumerate(self._bounds(W, ow)):
                    y[:, :, i, j] = x[:, :, h0:h1, w0:w1].mean(axis=(2, 3), dtype=x.dtype)
        self._shape = x.shape if self.training else None
        return y

    def backward(self, dy, input_grad=True):
        N, C, H, W = self._saved(self._shape, "input shape")
        oh, ow = self.output_size
        dy = as_tensor(dy, "dy", ndim=4)
        if dy.shape != (N, C, oh, ow):
            raise ValueError(f"dy must have shape {(N, C, oh, ow)}, got {dy.shape}")
        dx = np.zeros((N, C, H, W), dy.dtype)
        for i, (h0, h1) in enumerate(self._bounds(H, oh)):
            for j, (w0, w1) in enumerate(self._bounds(W, ow)):
                dx[:, :, h0:h1, w0:w1] += (dy[:, :, i, j] / ((h1 - h0) * (w1 - w0)))[:, :, None, None]
        return dx

    def _release(self):
        self._shape = None

    def extra_repr(self):
        return f"output_size={self.output_size}"


class GlobalAvgPool2d(AdaptiveAvgPool2d):
    """Mean over each channel's whole plane: (N, C, H, W) -> (N, C, 1, 1)."""

    def __init__(self):
        super().__init__(1)


class ReLU(Module):
    """max(x, 0). Keeps its output for backward (so a preceding conv/linear can fuse it into its epilogue)."""

    def __init__(self):
        super().__init__()
        self._y = None

    def forward(self, x):
        return self.adopt_output(F.relu(x))

    def adopt_output(self, y):
        """Take y = relu(z) computed elsewhere (a fused epilogue) as this layer's output."""
        self._y = y if self.training else None
        return y

    def backward(self, dy, input_grad=True):
        return F.relu_backward(dy, self._saved(self._y, "output"))

    def _release(self):
        self._y = None


class LeakyReLU(Module):
    """x for x > 0, negative_slope * x otherwise."""

    def __init__(self, negative_slope=0.01):
        super().__init__()
        self.negative_slope = float(negative_slope)
        self._x = None

    def forward(self, x):
        x = as_tensor(x, "x")
        self._x = x if self.training else None
        return np.where(x > 0, x, x * x.dtype.type(self.negative_slope))

    def backward(self, dy, input_grad=True):
        x = self._saved(self._x)
        return np.where(x > 0, dy, dy * x.dtype.type(self.negative_slope))

    def _release(self):
        self._x = None


class Sigmoid(Module):
    """1 / (1 + exp(-x)), computed without overflow."""

    def __init__(self):
        super().__init__()
        self._y = None

    def forward(self, x):
        x = as_tensor(x, "x")
        e = np.exp(-np.abs(x))
        y = np.where(x >= 0, 1 / (1 + e), e / (1 + e)).astype(x.dtype)
        self._y = y if self.training else None
        return y

    def backward(self, dy, input_grad=True):
        y = self._saved(self._y, "output")
        return dy * y * (1 - y)

    def _release(self):
        self._y = None


class Tanh(Module):
    def __init__(self):
        super().__init__()
        self._y = None

    def forward(self, x):
        y = np.tanh(as_tensor(x, "x"))
        self._y = y if self.training else None
        return y

    def backward(self, dy, input_grad=True):
        y = self._saved(self._y, "output")
        return dy * (1 - y * y)

    def _release(self):
        self._y = None


class Flatten(Module):
    """(N, ...) -> (N, prod(...))."""

    def __init__(self):
        super().__init__()
        self._shape = None

    def forward(self, x):
        x = as_tensor(x, "x")
        if x.ndim < 1:
            raise ValueError(f"x must have a batch dimension, got shape {x.shape}")
        self._shape = x.shape if self.training else None
        return x.reshape(x.shape[0], int(np.prod(x.shape[1:])))

    def backward(self, dy, input_grad=True):
        return np.asarray(dy).reshape(self._saved(self._shape, "input shape"))

    def _release(self):
        self._shape = None


class Dropout(Module):
    """Inverted dropout: in training, zero each element with probability p and scale the rest by 1/(1-p);
    identity in eval. The mask comes from the layer's own Generator (`rng`: Generator or seed)."""

    def __init__(self, p=0.5, rng=None):
        super().__init__()
        if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0 <= p < 1:
            raise ValueError(f"p must be a probability in [0, 1), got {p!r}")
        self.p = float(p)
        self.rng = _rng(rng)
        self._mask = None

    def forward(self, x):
        x = as_tensor(x, "x")
        if not self.training or self.p == 0:
            self._mask = None if not self.training else np.ones((), x.dtype)
            return x
        self._mask = (self.rng.random(x.shape) >= self.p).astype(x.dtype) / x.dtype.type(1 - self.p)
        return x * self._mask

    def backward(self, dy, input_grad=True):
        return dy * self._saved(self._mask, "mask")

    def _release(self):
        self._mask = None

    def extra_repr(self):
        return f"p={self.p}"


class _BatchNorm(Module):
    axes = (0, 2, 3)
    ndims = (4,)

    def __init__(self, num_features, eps=1e-5, momentum=0.1):
        super().__init__()
        self.num_features = as_int(num_features, "num_features", minimum=1)
        self.eps, self.momentum = float(eps), float(momentum)
        self.weight = Parameter(np.ones(self.num_features, np.float32))
        self.bias = Parameter(np.zeros(self.num_features, np.float32))
        self.register_buffer("running_mean", np.zeros(self.num_features, np.float32))
        self.register_buffer("running_var", np.ones(self.num_features, np.float32))
        self.register_buffer("num_batches_tracked", np.zeros((), np.int64))
        self._cache = None

    def _shape(self, x):
        return (1, -1) + (1,) * (x.ndim - 2)

    def forward(self, x):
        x = as_tensor(x, "x", ndim=self.ndims)
        if x.shape[1] != self.num_features:
            raise ValueError(f"x has {x.shape[1]} channels (x.shape[1]), this layer normalises {self.num_features}")
        axes = tuple(a for a in self.axes if a < x.ndim)
        shape = self._shape(x)
        if self.training:
            count = x.size // self.num_features
            if count == 1:
                raise ValueError(f"batch norm in training needs more than 1 value per channel, got x {x.shape}")
            self.num_batches_tracked[...] += 1
            if count == 0:  # empty batch: empty output, running statistics unchanged (as PyTorch)
                inv_std, xhat = np.ones(self.num_features, x.dtype), x
            else:
                mean = x.mean(axis=axes, dtype=np.float64)
                var = x.var(axis=axes, dtype=np.float64)
                self.running_mean[...] = (1 - self.momentum) * self.running_mean + self.momentum * mean
                self.running_var[...] = ((1 - self.momentum) * self.running_var
                                         + self.momentum * var * count / (count - 1))
                inv_std = (1.0 / np.sqrt(var + self.eps)).astype(x.dtype)
                xhat = (x - mean.astype(x.dtype).reshape(shape)) * inv_std.reshape(shape)
            self._cache = (xhat, inv_std, axes)
        else:
            inv_std = (1.0 / np.sqrt(self.running_var.astype(np.float64) + self.eps)).astype(x.dtype)
            xhat = (x - self.running_mean.astype(x.dtype).reshape(shape)) * inv_std.reshape(shape)
        return xhat * self.weight.data.reshape(shape) + self.bias.data.reshape(shape)

    def backward(self, dy, input_grad=True):
        xhat, inv_std, axes = self._saved(self._cache, "normalised input")
        dy = as_tensor(dy, "dy", dtype=xhat.dtype)
        if dy.shape != xhat.shape:
            raise ValueError(f"dy must have shape {xhat.shape}, got {dy.shape}")
        shape = self._shape(dy)
        dbeta = dy.sum(axis=axes)
        dgamma = (dy * xhat).sum(axis=axes)
        self.weight.accumulate(dgamma)
        self.bias.accumulate(dbeta)
        if not input_grad:
            return None
        count = max(dy.size // self.num_features, 1)
        g = (self.weight.data * inv_std).reshape(shape)
        return g * (dy - dbeta.reshape(shape) / count - xhat * (dgamma.reshape(shape) / count))

    def _release(self):
        self._cache = None

    def extra_repr(self):
        return f"{self.num_features}, eps={self.eps}, momentum={self.momentum}"


class BatchNorm2d(_BatchNorm):
    """Batch norm over (N, C, H, W): batch statistics in training (running averages updated with the unbiased
    variance, as PyTorch), running statistics in eval."""
    ndims = (4,)


class BatchNorm1d(_BatchNorm):
    """Batch norm over (N, C) or (N, C, L)."""
    ndims = (2, 3)
