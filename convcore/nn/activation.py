"""Activation layers: ReLU (kernel in convcore.functional, fusable into a conv/linear epilogue), LeakyReLU,
Sigmoid, Tanh (numpy one-liners)."""
from __future__ import annotations

import numpy as np

from .. import _core
from .. import functional as F
from .._validate import as_real, as_tensor
from .module import Module, check_dy


class ReLU(Module):
    """max(x, 0). Keeps its output for backward (so a preceding conv/linear can fuse it into its epilogue)."""

    def __init__(self):
        super().__init__()
        self._y = None

    def forward(self, x):
        return self.adopt_output(F.relu(x))

    def adopt_output(self, y):
        """Take y = relu(z) computed elsewhere (a fused epilogue) as this layer's output."""
        self._y = y if self._keeps() else None
        return y

    def _inference_step(self, x, relu=False):
        as_tensor(x, "x")

        def run(x):
            return _core.relu(x)
        run.native = ("relu",)
        return run

    def backward(self, dy, input_grad=True):
        return F.relu_backward(dy, self._saved(self._y, "output"))

    def _release(self):
        self._y = None


class LeakyReLU(Module):
    """x for x > 0, negative_slope * x otherwise."""
    _option_checks = {"negative_slope": lambda layer, v: as_real(v, "negative_slope")}

    def __init__(self, negative_slope=0.01):
        super().__init__()
        self.negative_slope = negative_slope
        self._x = None

    def forward(self, x):
        x = as_tensor(x, "x")
        self._x = x if self._keeps() else None
        return np.where(x > 0, x, x * x.dtype.type(self.negative_slope))

    def backward(self, dy, input_grad=True):
        x = self._saved(self._x)
        dy = check_dy(dy, x)
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
        self._y = y if self._keeps() else None
        return y

    def backward(self, dy, input_grad=True):
        y = self._saved(self._y, "output")
        return check_dy(dy, y) * y * (1 - y)

    def _release(self):
        self._y = None


class Tanh(Module):
    def __init__(self):
        super().__init__()
        self._y = None

    def forward(self, x):
        y = np.tanh(as_tensor(x, "x"))
        self._y = y if self._keeps() else None
        return y

    def backward(self, dy, input_grad=True):
        y = self._saved(self._y, "output")
        return check_dy(dy, y) * (1 - y * y)

    def _release(self):
        self._y = None
