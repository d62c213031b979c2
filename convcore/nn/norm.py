"""Batch normalisation: BatchNorm2d on (N, C, H, W), BatchNorm1d on (N, C) or (N, C, L)."""
from __future__ import annotations

import math

import numpy as np

from .. import _core
from .._validate import as_size, as_real, as_tensor
from ..functional.gemm import check_activation
from .module import Module, Parameter, check_input_dtype


def _eps(layer, eps):
    eps = as_real(eps, "eps")
    if not eps > 0:
        raise ValueError(f"eps must be > 0 (added to the variance before its square root), got {eps!r}")
    return eps


def _momentum(layer, momentum):
    momentum = as_real(momentum, "momentum")
    if not 0 <= momentum <= 1:
        raise ValueError(f"momentum must be in [0, 1] (the running statistics' update weight), got {momentum!r}")
    return momentum


class _BatchNorm(Module):
    ndims = (4,)
    # forward(x, activation="relu") applies a following ReLU in the same pass (containers fuse BN -> ReLU), and
    # backward then takes the gradient of that ReLU's output and masks it itself, so containers skip the ReLU's
    # backward (it would mask again, to the same bits).
    fuses_relu = True
    masks_fused_relu = True
    _option_checks = {"num_features": lambda layer, v: as_size(v, "num_features"), "eps": _eps,
                      "momentum": _momentum}

    def __init__(self, num_features, eps=1e-5, momentum=0.1):
        super().__init__()
        self.num_features, self.eps, self.momentum = num_features, eps, momentum
        self.weight = Parameter(np.ones(self.num_features, np.float32))
        self.bias = Parameter(np.zeros(self.num_features, np.float32))
        self.register_buffer("running_mean", np.zeros(self.num_features, np.float32))
        self.register_buffer("running_var", np.ones(self.num_features, np.float32))
        self.register_buffer("num_batches_tracked", np.zeros((), np.int64))
        self._cache = None

    def _input(self, x):
        x = as_tensor(x, "x", ndim=self.ndims)
        check_input_dtype(x, self.weight.data)  # as Conv and Linear: a float64 x gave float64 gradients to float32 ones
        if x.shape[1] != self.num_features:
            raise ValueError(f"x has {x.shape[1]} channels (x.shape[1]), this layer normalises {self.num_features}")
        return x

    def forward(self, x, activation=None, residual=None):
        """Normalise x; `residual` (x's shape), when given, is added before the activation in the same pass (a
        residual block's skip). With activation="relu", backward's dy is the gradient of the ReLU's output; the
        residual's gradient, that dy masked by the ReLU, is the caller's to take."""
        relu = check_activation(activation)
        x = self._input(x)
        x3 = x.reshape(x.shape[0], x.shape[1], math.prod(x.shape[2:]))  # (N, C, L): the kernels' layout
        if residual is not None:
            residual = as_tensor(residual, "residual", dtype=x.dtype)
            if residual.shape != x.shape:
                raise ValueError(f"residual must have x's shape {x.shape}, got {residual.shape}")
            residual = residual.reshape(x3.shape)
        weight, bias = self.weight.data.astype(x.dtype, copy=False), self.bias.data.astype(x.dtype, copy=False)
        if self.training:
            count = x3.shape[0] * x3.shape[2]
            if count == 1:
                raise ValueError(f"batch norm in training needs more than 1 value per channel, got x {x.shape}")
            self.num_batches_tracked[...] += 1
            # the batch's statistics (float64, biased variance) and the normalised output in one call
            y3, mean, var = _core.batch_norm_train(x3, weight, bias, self.eps, residual, relu)
            if count > 0:  # an empty batch leaves the running statistics unchanged (as PyTorch)
                self.running_mean[...] = (1 - self.momentum) * self.running_mean + self.momentum * mean
                self.running_var[...] = ((1 - self.momentum) * self.running_var
                                         + self.momentum * var * count / (count - 1))
            self._cache = (x3, x.shape, mean, var, y3 if relu else None, False)
        else:
            mean, var = self.running_mean.astype(np.float64), self.running_var.astype(np.float64)
            y3 = _core.batch_norm_eval(x3, mean, var, weight, bias, self.eps, residual, relu)
            # kept in eval inside a model that trains (frozen statistics): backward through the fixed affine map
            self._cache = (x3, x.shape, mean, var, y3 if relu else None, True) if self._keeps() else None
        return y3.reshape(x.shape)

    def _inference_step(self, x, relu=False):
        """The eval forward as a plan step, run(x, residual=None); in float32 also the native plan's op, which reads
        the running statistics and the affine parameters in place."""
        x = self._input(x)
        activation = "relu" if relu else None
        run = lambda x, residual=None: self.forward(x, activation, residual)
        arrays = (self.running_mean, self.running_var, self.weight.data, self.bias.data)
        if x.dtype == np.float32 and all(type(a) is np.ndarray and a.dtype == np.float32 and a.flags.c_contiguous
                                         for a in arrays):
            run.native = ("batch_norm", *arrays, self.eps, relu)
        return run

    def backward(self, dy, input_grad=True):
        x3, shape, mean, var, relu_out, running = self._saved(self._cache, "input")
        dy = as_tensor(dy, "dy", dtype=x3.dtype)
        if dy.shape != shape:
            raise ValueError(f"dy must have shape {shape}, got {dy.shape}")
        if running:
            return self._backward_running(dy.reshape(x3.shape), x3, mean, var, relu_out, input_grad, shape)
        # dweight = sum(dy * xhat), dbias = sum(dy),
        # dx = weight * inv_std * (dy - mean(dy) - xhat * mean(dy * xhat)),
        # with xhat = (x - mean) * inv_std (dy masked by the fused ReLU's output)
        weight = self.weight.data.astype(x3.dtype, copy=False)
        dweight, dbias, dx = _core.batch_norm_backward(dy.reshape(x3.shape), x3, mean, var, weight, self.eps,
                                                       relu_out, input_grad)
        self.weight.accumulate(dweight)
        self.bias.accumulate(dbias)
        return None if dx is None else dx.reshape(shape)

    def _backward_running(self, dy3, x3, mean, var, relu_out, input_grad, shape):
        """The backward of an eval-mode forward (running statistics mean and var, float64): y = (x - mean) * scale +
        bias with scale = weight / sqrt(var + eps), so dx = dy * scale, dweight = sum(dy * (x - mean)) /
        sqrt(var + eps), dbias = sum(dy) (dy masked by the fused ReLU's output), the sums over (N, L) in float64."""
        if relu_out is not None:
            dy3 = np.where(relu_out > 0, dy3, dy3.dtype.type(0))
        inv_std = 1 / np.sqrt(var + self.eps)
        sums = lambda a: a.sum(axis=(0, 2), dtype=np.float64)
        dweight = sums(dy3 * (x3 - mean[:, None])) * inv_std
        self.weight.accumulate(dweight.astype(self.weight.data.dtype))
        self.bias.accumulate(sums(dy3).astype(self.bias.data.dtype))
        if not input_grad:
            return None
        scale = (self.weight.data.astype(np.float64) * inv_std).astype(x3.dtype)
        return (dy3 * scale[:, None]).reshape(shape)

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
