"""Convolution (1-D and 2-D, NCHW / NCW), forward and backward, with PyTorch semantics.

conv1d runs the conv2d kernels with H == 1. Arguments are validated here; the kernels trust them.
"""
from __future__ import annotations

import numpy as np

from .. import _core
from .._validate import as_int, as_tensor, as_tuple, check_elements, output_size


def _conv_args(x, w, stride, padding, dilation, groups, spatial: int):
    """Validate x (N, C, *spatial) and w (K, C/groups, *kernel); returns (x, w, stride, padding, dilation,
    groups, out) with every option a tuple of `spatial` ints and out the output's spatial size."""
    dims = "(N, C, L)" if spatial == 1 else "(N, C, H, W)"
    wdims = "(K, C/groups, kernel_size)" if spatial == 1 else "(K, C/groups, R, S)"
    if isinstance(x, np.ndarray) and x.ndim == spatial + 2:
        check_elements(x.shape, "x")  # before a non-contiguous view is copied
    x = as_tensor(x, "x", ndim=spatial + 2)
    w = as_tensor(w, "w", ndim=spatial + 2, dtype=x.dtype)
    stride = as_tuple(stride, "stride", spatial, minimum=1)
    padding = as_tuple(padding, "padding", spatial, minimum=0)
    dilation = as_tuple(dilation, "dilation", spatial, minimum=1)
    groups = as_int(groups, "groups", minimum=1)
    if any(d == 0 for d in x.shape[1:]):
        raise ValueError(f"x must be {dims} with non-zero channel and spatial sizes, got shape {x.shape}")
    if any(d == 0 for d in w.shape):
        raise ValueError(f"w must be {wdims} with non-zero sizes, got shape {w.shape}")
    if w.shape[0] % groups != 0:
        raise ValueError(f"out channels w.shape[0] ({w.shape[0]}) must be divisible by groups ({groups})")
    if x.shape[1] != w.shape[1] * groups:
        raise ValueError(f"x has {x.shape[1]} channels but w {w.shape} with groups={groups} expects "
                         f"w.shape[1] * groups = {w.shape[1] * groups} (channel mismatch)")
    out = []
    for i in range(spatial):
        size, kernel = x.shape[2 + i], w.shape[2 + i]
        span = dilation[i] * (kernel - 1) + 1
        if span > size + 2 * padding[i]:
            raise ValueError(
                f"kernel size {tuple(w.shape[2:])} with dilation {dilation} spans {span} along axis {2 + i}, "
                f"larger than the padded input {size} + 2*{padding[i]} = {size + 2 * padding[i]} "
                f"(x shape {x.shape}, padding {padding})")
        out.append(output_size(size, kernel, stride[i], padding[i], dilation[i]))
    return x, w, stride, padding, dilation, groups, tuple(out)


def _as_2d(x: np.ndarray) -> np.ndarray:
    """(N, C, L) -> (N, C, 1, L)."""
    return x.reshape(x.shape[0], x.shape[1], 1, x.shape[2])


def _forward(x, w, b, stride, padding, dilation, groups, activation, spatial: int) -> np.ndarray:
    if activation not in (None, "relu"):
        raise ValueError(f"activation must be None or 'relu', got {activation!r}")
    x, w, stride, padding, dilation, groups, out = _conv_args(x, w, stride, padding, dilation, groups, spatial)
    K = w.shape[0]
    if b is not None:
        b = as_tensor(b, "b", ndim=1, dtype=x.dtype)
        if b.shape != (K,):
            raise ValueError(f"b must have shape ({K},) (one bias per output channel of w {w.shape}), "
                             f"got {b.shape}")
    y_shape = (x.shape[0], K) + out
    check_elements(y_shape, "the output")
    if spatial == 1:
        x, w, stride, padding, dilation, out = (_as_2d(x), _as_2d(w), (1,) + stride, (0,) + padding,
                                                (1,) + dilation, (1,) + out)
    y = _core.conv2d(x, w, b, out[0], out[1], stride[0], stride[1], padding[0], padding[1],
                     dilation[0], dilation[1], groups, activation == "relu")
    return y.reshape(y_shape)


def _backward(dy, x, w, stride, padding, dilation, groups, input_grad, bias_grad, spatial: int):
    x, w, stride, padding, dilation, groups, out = _conv_args(x, w, stride, padding, dilation, groups, spatial)
    for name, flag in (("input_grad", input_grad), ("bias_grad", bias_grad)):
        if not isinstance(flag, (bool, np.bool_)):
            raise TypeError(f"{name} must be a bool, got {flag!r}")
    dy = as_tensor(dy, "dy", ndim=spatial + 2, dtype=x.dtype)
    y_shape = (x.shape[0], w.shape[0]) + out
    if dy.shape != y_shape:
        raise ValueError(f"dy must have the output's shape {y_shape} for x {x.shape} and w {w.shape}, "
                         f"got {dy.shape}")
    x_shape, w_shape = x.shape, w.shape
    if spatial == 1:
        dy, x, w, stride, padding, dilation = (_as_2d(dy), _as_2d(x), _as_2d(w), (1,) + stride, (0,) + padding,
                                               (1,) + dilation)
    dx, dw, db = _core.conv2d_backward(dy, x, w, stride[0], stride[1], padding[0], padding[1],
                                       dilation[0], dilation[1], groups, bool(input_grad), bool(bias_grad))
    return (None if dx is None else dx.reshape(x_shape)), dw.reshape(w_shape), db


def conv2d(x, w, b=None, stride=1, padding=0, dilation=1, groups=1, activation=None) -> np.ndarray:
    """2-D convolution (cross-correlation, as PyTorch): x (N, C, H, W), w (K, C/groups, R, S), b (K,) or None
    -> y (N, K, P, Q). stride, padding, dilation: an int or an (h, w) pair; zero padding.
    activation="relu" fuses max(y, 0) into the output write; its backward is conv2d_backward with
    dy already masked by the output: F.conv2d_backward(F.relu_backward(dy, y), x, w, ...)."""
    return _forward(x, w, b, stride, padding, dilation, groups, activation, spatial=2)


def conv2d_backward(dy, x, w, stride=1, padding=0, dilation=1, groups=1, input_grad=True, bias_grad=True):
    """Gradients of conv2d given dy (N, K, P, Q): returns (dx, dw, db); dx is None (and not computed) when
    input_grad is False, db is None when bias_grad is False. After a fused activation="relu" forward, pass
    dy masked by the output (relu_backward(dy, y))."""
    return _backward(dy, x, w, stride, padding, dilation, groups, input_grad, bias_grad, spatial=2)


def conv1d(x, w, b=None, stride=1, padding=0, dilation=1, groups=1, activation=None) -> np.ndarray:
    """1-D convolution: x (N, C, L), w (K, C/groups, kernel_size), b (K,) or None -> y (N, K, L_out);
    activation as conv2d."""
    return _forward(x, w, b, stride, padding, dilation, groups, activation, spatial=1)


def conv1d_backward(dy, x, w, stride=1, padding=0, dilation=1, groups=1, input_grad=True, bias_grad=True):
    """Gradients of conv1d given dy (N, K, L_out): returns (dx, dw, db) as conv2d_backward."""
    return _backward(dy, x, w, stride, padding, dilation, groups, input_grad, bias_grad, spatial=1)
