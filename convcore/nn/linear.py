"""Fully connected layer (Linear) and Flatten, which feeds it from a feature map."""
from __future__ import annotations

import math

from .._validate import as_bool, as_size, as_tensor
from ..functional import gemm as gemm_ops
from .init import as_generator, fan_in_bias, kaiming_uniform
from .module import Module, Parameter, PreparedLayer, check_input_dtype


class Linear(PreparedLayer):
    """Fully connected layer: (N, in_features) -> (N, out_features); weight (out, in)."""
    _option_checks = {"in_features": lambda layer, v: as_size(v, "in_features"),
                      "out_features": lambda layer, v: as_size(v, "out_features")}

    def __init__(self, in_features, out_features, bias=True, rng=None):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        rng = as_generator(rng)
        self.weight = Parameter(kaiming_uniform(rng, (self.out_features, self.in_features), self.in_features))
        self.bias = Parameter(fan_in_bias(rng, self.in_features, self.out_features)) if as_bool(bias, "bias") else None

    def _input(self, x):
        return as_tensor(x, "x", ndim=2)

    def _steps(self, x, activation):
        """(forward, backward) prepared by convcore.functional for inputs shaped and typed like x (a C-contiguous
        array): validated once, kept while the input, the activation and the parameters stay the same
        (Module._prepared_for)."""
        w = self.weight.data
        b = None if self.bias is None else self.bias.data

        def build():
            x2 = as_tensor(x, "x", ndim=2)
            check_input_dtype(x2, w)
            return gemm_ops._prepare_linear(x2, w, b, activation), gemm_ops._prepare_linear_backward(x2, w)
        return self._prepared_for((x.shape, x.dtype, activation), w, b, build)

    def extra_repr(self):
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


class Flatten(Module):
    """(N, ...) -> (N, prod(...))."""

    def __init__(self):
        super().__init__()
        self._shape = None

    def forward(self, x):
        x = as_tensor(x, "x")
        if x.ndim < 1:
            raise ValueError(f"x must have a batch dimension, got shape {x.shape}")
        self._shape = x.shape if self._keeps() else None
        return x.reshape(x.shape[0], math.prod(x.shape[1:]))

    def _inference_step(self, x, relu=False):
        x = as_tensor(x, "x")
        if x.ndim < 1:
            raise ValueError(f"x must have a batch dimension, got shape {x.shape}")
        shape = (x.shape[0], math.prod(x.shape[1:]))
        run = lambda x: x.reshape(shape)
        run.native = ("reshape",)
        return run

    def backward(self, dy, input_grad=True):
        shape = self._saved(self._shape, "input shape")
        out_shape = (shape[0], math.prod(shape[1:]))
        dy = as_tensor(dy, "dy")
        if dy.shape != out_shape:
            raise ValueError(f"dy must have Flatten's output shape {out_shape} for its input {shape}, got {dy.shape}")
        return dy.reshape(shape)

    def _release(self):
        self._shape = None
