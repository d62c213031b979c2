"""Convolution layers: Conv2d on (N, C, H, W) and Conv1d on (N, C, L); math in convcore.functional."""
from __future__ import annotations

import numpy as np

from .._validate import as_bool, as_size, as_tuple
from ..functional import conv as conv_ops
from .init import as_generator, fan_in_bias, kaiming_uniform
from .module import Parameter, PreparedLayer, check_input_dtype


class _ConvNd(PreparedLayer):
    n_axes = 2
    _option_checks = {
        "in_channels": lambda layer, v: as_size(v, "in_channels"),
        "out_channels": lambda layer, v: as_size(v, "out_channels"),
        "kernel_size": lambda layer, v: as_tuple(v, "kernel_size", layer.n_axes, minimum=1),
        "stride": lambda layer, v: as_tuple(v, "stride", layer.n_axes, minimum=1),
        "padding": lambda layer, v: as_tuple(v, "padding", layer.n_axes, minimum=0),
        "dilation": lambda layer, v: as_tuple(v, "dilation", layer.n_axes, minimum=1),
        "groups": lambda layer, v: as_size(v, "groups"),
    }

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1, groups=1,
                 bias=True, rng=None):
        super().__init__()
        self.in_channels, self.out_channels, self.kernel_size = in_channels, out_channels, kernel_size
        self.stride, self.padding, self.dilation, self.groups = stride, padding, dilation, groups
        if self.in_channels % self.groups or self.out_channels % self.groups:
            raise ValueError(f"in_channels ({in_channels}) and out_channels ({out_channels}) must both be divisible "
                             f"by groups ({groups})")
        rng = as_generator(rng)
        fan_in = self.in_channels // self.groups * int(np.prod(self.kernel_size))
        self.weight = Parameter(kaiming_uniform(
            rng, (self.out_channels, self.in_channels // self.groups, *self.kernel_size), fan_in))
        self.bias = Parameter(fan_in_bias(rng, fan_in, self.out_channels)) if as_bool(bias, "bias") else None

    def _options(self):
        return dict(stride=self.stride, padding=self.padding, dilation=self.dilation, groups=self.groups)

    def _input(self, x):
        return conv_ops._tensor(x, "x", self.n_axes + 2)

    def _steps(self, x, activation):
        """(forward, backward) prepared by convcore.functional for inputs shaped and typed like x (a C-contiguous
        array): validated once, kept while the input, the activation, the options and the parameters stay the
        same (Module._prepared_for)."""
        w = self.weight.data
        b = None if self.bias is None else self.bias.data

        def build():
            x4 = conv_ops._tensor(x, "x", self.n_axes + 2)
            check_input_dtype(x4, w)
            options = self._options()
            return (conv_ops._prepare_forward(x4, w, b, activation=activation, n_axes=self.n_axes, **options),
                    conv_ops._prepare_backward(x4, w, n_axes=self.n_axes, **options))
        key = (x.shape, x.dtype, activation, self.stride, self.padding, self.dilation, self.groups)
        return self._prepared_for(key, w, b, build)

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
