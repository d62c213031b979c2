"""Inverted dropout with the layer's own random Generator."""
from __future__ import annotations

import numbers

import numpy as np

from .._validate import as_tensor
from .init import as_generator
from .module import Module, check_dy


def _probability(layer, p):
    if isinstance(p, (bool, np.bool_)) or not isinstance(p, numbers.Real):
        raise TypeError(f"p must be a real number (a probability in [0, 1)), got {p!r}")
    if not 0 <= p < 1:
        raise ValueError(f"p must be a probability in [0, 1), got {p!r}")
    return float(p)


class Dropout(Module):
    """Inverted dropout: in training, zero each element with probability p and scale the rest by 1/(1-p);
    identity in eval. The mask comes from the layer's own Generator (`rng`: Generator or seed)."""
    _option_checks = {"p": _probability, "rng": lambda layer, v: as_generator(v)}

    def __init__(self, p=0.5, rng=None):
        super().__init__()
        self.p, self.rng = p, rng
        self._mask = None

    def forward(self, x):
        x = as_tensor(x, "x")
        if not self.training or self.p == 0:
            # the identity (eval, or p == 0): a mask of ones (a view) where backward may follow, for its dy check
            self._mask = np.broadcast_to(np.ones((), x.dtype), x.shape) if self._keeps() else None
            return x
        self._mask = (self.rng.random(x.shape) >= self.p).astype(x.dtype) / x.dtype.type(1 - self.p)
        return x * self._mask

    def _inference_step(self, x, relu=False):
        as_tensor(x, "x")
        run = lambda x: x  # the identity in eval (the plan runs only in eval)
        run.native = ("reshape",)
        return run

    def backward(self, dy, input_grad=True):
        mask = self._saved(self._mask, "mask")
        return check_dy(dy, mask) * mask

    def _release(self):
        self._mask = None

    def extra_repr(self):
        return f"p={self.p}"
