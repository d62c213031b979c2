"""Batch normalisation: BatchNorm2d on (N, C, H, W), BatchNorm1d on (N, C) or (N, C, L)."""
from __future__ import annotations

import numpy as np

from .._validate import as_int, as_tensor
from .module import Module, Parameter


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
