"""Max and average pooling (1-D and 2-D), forward and backward, with PyTorch semantics.

1-D pooling is 2-D pooling on (N, C, 1, L): one code path. Max pooling returns int64 indices into each input
plane (flattened H*W, or L), as PyTorch does; the backward takes them.
"""
from __future__ import annotations

import numbers

import numpy as np

from .. import _core
from .._validate import as_tensor, as_tuple, check_elements, output_size


def _geometry(x_shape, kernel_size, stride, padding, ceil_mode, n_axes, shown_shape):
    """Validate pooling options for x (N, C, H, W); returns (geom for _core, output shape (N, C, P, Q))."""
    kernel = as_tuple(kernel_size, "kernel_size", n_axes, minimum=1)
    stride = kernel if stride is None else as_tuple(stride, "stride", n_axes, minimum=1)
    padding = as_tuple(padding, "padding", n_axes, minimum=0)
    if not isinstance(ceil_mode, (bool, np.bool_)):
        raise TypeError(f"ceil_mode must be a bool, got {ceil_mode!r}")
    for k, p in zip(kernel, padding):
        if 2 * p > k:
            raise ValueError(f"padding must be at most half the kernel size, got padding={padding} for "
                             f"kernel_size={kernel}")
    if n_axes == 1:
        kernel, stride, padding = (1, *kernel), (1, *stride), (0, *padding)
    N, C, H, W = x_shape
    P = output_size(H, kernel[0], stride[0], padding[0], ceil_mode=bool(ceil_mode))
    Q = output_size(W, kernel[1], stride[1], padding[1], ceil_mode=bool(ceil_mode))
    if P <= 0 or Q <= 0:
        raise ValueError(f"kernel_size={kernel_size} with padding={padding} is larger than the input {shown_shape}: "
                         f"the output would be empty")
    check_elements((N, C, P, Q), "the output")
    return (P, Q, kernel[0], kernel[1], stride[0], stride[1], padding[0], padding[1]), (N, C, P, Q)


def _as_4d(x, n_axes):
    return x if n_axes == 2 else x.reshape(x.shape[0], x.shape[1], 1, x.shape[2])


def _input_shape(input_shape, n_axes):
    ndim = n_axes + 2
    if (not isinstance(input_shape, (tuple, list)) or len(input_shape) != ndim
            or not all(isinstance(d, numbers.Integral) and not isinstance(d, bool) and d >= 0
                       for d in input_shape)):
        raise ValueError(f"input_shape must be a sequence of {ndim} non-negative ints, got {input_shape!r}")
    shape = tuple(int(d) for d in input_shape)
    check_elements(shape, "input_shape")
    return shape if n_axes == 2 else (shape[0], shape[1], 1, shape[2])


def _check_dy(dy, out_shape, n_axes, dtype=None):
    dy = as_tensor(dy, "dy", ndim=n_axes + 2, dtype=dtype)
    expected = out_shape if n_axes == 2 else (out_shape[0], out_shape[1], out_shape[3])
    if dy.shape != expected:
        raise ValueError(f"dy must have the pooled output's shape {expected}, got {dy.shape}")
    return dy


def _max_forward(x, kernel_size, stride, padding, ceil_mode, return_indices, n_axes):
    x = as_tensor(x, "x", ndim=n_axes + 2)
    geom, out_shape = _geometry(_as_4d(x, n_axes).shape, kernel_size, stride, padding, ceil_mode, n_axes, x.shape)
    y, idx = _core.max_pool2d_forward(_as_4d(x, n_axes), geom)
    shape = out_shape if n_axes == 2 else (out_shape[0], out_shape[1], out_shape[3])
    y, idx = y.reshape(shape), idx.reshape(shape)
    return (y, idx) if return_indices else y


def _max_backward(dy, indices, input_shape, kernel_size, stride, padding, ceil_mode, n_axes):
    x_shape = _input_shape(input_shape, n_axes)
    geom, out_shape = _geometry(x_shape, kernel_size, stride, padding, ceil_mode, n_axes, tuple(input_shape))
    dy = _check_dy(dy, out_shape, n_axes)
    if not isinstance(indices, np.ndarray) or indices.dtype != np.int64 or indices.shape != dy.shape:
        got = (f"{indices.dtype} array of shape {indices.shape}" if isinstance(indices, np.ndarray)
               else type(indices).__name__)
        raise ValueError(f"indices must be the int64 array of shape {dy.shape} returned by the forward "
                         f"(return_indices=True), got {got}")
    plane = x_shape[2] * x_shape[3]
    if indices.size and (indices.min() < 0 or indices.max() >= plane):
        raise ValueError(f"indices must lie in [0, {plane}) (offsets into each input plane), got values in "
                         f"[{indices.min()}, {indices.max()}]")
    dx = _core.max_pool2d_backward(dy.reshape(out_shape), np.ascontiguousarray(indices).reshape(out_shape),
                                   x_shape, geom)
    return dx.reshape(tuple(input_shape))


def _avg_forward(x, kernel_size, stride, padding, ceil_mode, count_include_pad, n_axes):
    x = as_tensor(x, "x", ndim=n_axes + 2)
    geom, out_shape = _geometry(_as_4d(x, n_axes).shape, kernel_size, stride, padding, ceil_mode, n_axes, x.shape)
    y = _core.avg_pool2d_forward(_as_4d(x, n_axes), geom, bool(count_include_pad))
    return y if n_axes == 2 else y.reshape(out_shape[0], out_shape[1], out_shape[3])


def _avg_backward(dy, input_shape, kernel_size, stride, padding, ceil_mode, count_include_pad, n_axes):
    x_shape = _input_shape(input_shape, n_axes)
    geom, out_shape = _geometry(x_shape, kernel_size, stride, padding, ceil_mode, n_axes, tuple(input_shape))
    dy = _check_dy(dy, out_shape, n_axes)
    dx = _core.avg_pool2d_backward(dy.reshape(out_shape), x_shape, geom, bool(count_include_pad))
    return dx.reshape(tuple(input_shape))


def max_pool2d(x, kernel_size, stride=None, padding=0, ceil_mode=False, return_indices=False):
    """Max pooling of x (N, C, H, W) -> y (N, C, P, Q) [, int64 indices into each H*W plane].

    stride defaults to kernel_size; padding (at most half the kernel) counts as -inf; ceil_mode rounds the output
    size up without starting a window in the right padding. Ties: the first maximum wins; NaN propagates.
    """
    return _max_forward(x, kernel_size, stride, padding, ceil_mode, return_indices, 2)


def max_pool2d_backward(dy, indices, input_shape, kernel_size, stride=None, padding=0, ceil_mode=False):
    """Gradient of max_pool2d: dy routed to the input elements named by `indices` (summed where windows overlap)."""
    return _max_backward(dy, indices, input_shape, kernel_size, stride, padding, ceil_mode, 2)


def avg_pool2d(x, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True):
    """Average pooling of x (N, C, H, W) -> (N, C, P, Q).

    The divisor counts padding elements when count_include_pad, never the ceil_mode overhang (PyTorch's rule).
    """
    return _avg_forward(x, kernel_size, stride, padding, ceil_mode, count_include_pad, 2)


def avg_pool2d_backward(dy, input_shape, kernel_size, stride=None, padding=0, ceil_mode=False,
                        count_include_pad=True):
    """Gradient of avg_pool2d: each dy spread evenly (by the same divisor) over its window."""
    return _avg_backward(dy, input_shape, kernel_size, stride, padding, ceil_mode, count_include_pad, 2)


def max_pool1d(x, kernel_size, stride=None, padding=0, ceil_mode=False, return_indices=False):
    """Max pooling of x (N, C, L) -> (N, C, L_out) [, int64 indices into each row of length L]."""
    return _max_forward(x, kernel_size, stride, padding, ceil_mode, return_indices, 1)


def max_pool1d_backward(dy, indices, input_shape, kernel_size, stride=None, padding=0, ceil_mode=False):
    """Gradient of max_pool1d."""
    return _max_backward(dy, indices, input_shape, kernel_size, stride, padding, ceil_mode, 1)


def avg_pool1d(x, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True):
    """Average pooling of x (N, C, L) -> (N, C, L_out)."""
    return _avg_forward(x, kernel_size, stride, padding, ceil_mode, count_include_pad, 1)


def avg_pool1d_backward(dy, input_shape, kernel_size, stride=None, padding=0, ceil_mode=False,
                        count_include_pad=True):
    """Gradient of avg_pool1d."""
    return _avg_backward(dy, input_shape, kernel_size, stride, padding, ceil_mode, count_include_pad, 1)
