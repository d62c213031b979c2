"""Convolution (1-D and 2-D), forward and backward, with PyTorch semantics (cross-correlation, NCHW / NCL).

conv1d is conv2d on (N, C, 1, L) with a (K, C/groups, 1, R) kernel: one code path.
"""
from __future__ import annotations

import numpy as np

from .. import _core
from .._validate import as_bool, as_int, as_tensor, as_tuple, check_elements, memoize_checks, output_size
from .gemm import check_activation


@memoize_checks
def _geometry(x_shape, w_shape, stride, padding, dilation, groups, n_axes):
    """Validate a convolution's options against x (N, C, H, W) and w (K, C/groups, R, S), or their 1-D forms
    (N, C, L) and (K, C/groups, R) when n_axes is 1.

    Returns (geom for _core, output shape (N, K, P, Q); Q is the output length in 1-D).
    """
    names = {"x": x_shape, "w": w_shape}
    if n_axes == 1:
        x_shape = (x_shape[0], x_shape[1], 1, x_shape[2])
        w_shape = (w_shape[0], w_shape[1], 1, w_shape[2])
    stride = as_tuple(stride, "stride", n_axes, minimum=1)
    padding = as_tuple(padding, "padding", n_axes, minimum=0)
    dilation = as_tuple(dilation, "dilation", n_axes, minimum=1)
    groups = as_int(groups, "groups", minimum=1)
    if n_axes == 1:
        stride, padding, dilation = (1, *stride), (0, *padding), (1, *dilation)
    N, C, H, W = x_shape
    K, Cg, R, S = w_shape
    if C == 0 or H == 0 or W == 0:
        raise ValueError(f"x must have non-zero channels and spatial sizes (only the batch may be empty), "
                         f"got shape {names['x']}")
    if C % groups:
        raise ValueError(f"x has {C} channels, which is not divisible by groups={groups}")
    if K % groups:
        raise ValueError(f"w has {K} filters (w.shape[0]), which is not divisible by groups={groups}")
    if Cg * groups != C:
        raise ValueError(f"w.shape[1] * groups must equal the input channels: w has shape {names['w']}, "
                         f"groups={groups}, so it expects {Cg * groups} channels, but x has shape {names['x']} "
                         f"with {C} channels")
    if K == 0 or Cg == 0 or R == 0 or S == 0:
        raise ValueError(f"w must have no zero dimension, got shape {names['w']}")
    spatial = [(H, R, 0), (W, S, 1)] if n_axes == 2 else [(W, S, 1)]
    for size, k, a in spatial:
        span = dilation[a] * (k - 1) + 1
        if span > size + 2 * padding[a]:
            label = ("height", "width")[a] if n_axes == 2 else "length"
            raise ValueError(
                f"kernel {label} {k} with dilation {dilation[a]} spans {span} elements, more than the padded "
                f"input {label} {size} + 2*{padding[a]} = {size + 2 * padding[a]} (x {names['x']}, w {names['w']})")
    P = output_size(H, R, stride[0], padding[0], dilation[0])
    Q = output_size(W, S, stride[1], padding[1], dilation[1])
    check_elements((N, K, P, Q), "the output")
    # the kernels' zero-padded copies of the images (and, for a stride-1 input gradient, of dy padded by dilation *
    # (kernel - 1) - padding), and the 64-bit offsets into them: refused past MAX_ELEMENTS (x with paddings and strides
    # near 2**40 gave offsets that wrapped and a wrong output, where no such copy could be allocated anyway)
    check_elements((max(N, 1), max(C, K), H + 2 * padding[0] + dilation[0] * (R - 1),
                    W + 2 * padding[1] + dilation[1] * (S - 1)), "the zero-padded input")
    # along an axis of one output any stride past the padded input's span takes the same window: the kernels get the
    # smallest such stride, span + 1, which keeps their geometry (stride 1 only where it has one output) and
    # bounds their workspace, which grows with the stride (10**7 took 443 MB)
    spans = (H + 2 * padding[0] - dilation[0] * (R - 1) - 1, W + 2 * padding[1] - dilation[1] * (S - 1) - 1)
    stride = tuple(min(st, span + 1) if out == 1 else st for out, st, span in zip((P, Q), stride, spans))
    geom = (P, Q, stride[0], stride[1], padding[0], padding[1], dilation[0], dilation[1], groups)
    return geom, (N, K, P, Q)


def _check_bias(b, K, dtype):
    b = as_tensor(b, "b", ndim=1, dtype=dtype)
    if b.shape != (K,):
        raise ValueError(f"b must have shape ({K},) (one per filter), got {b.shape}")
    return b


def _tensor(v, name, ndim, dtype=None):
    """as_tensor, with absurd shapes refused before a non-contiguous view is copied."""
    if isinstance(v, np.ndarray) and v.ndim == ndim:
        check_elements(v.shape, name)
    return as_tensor(v, name, ndim=ndim, dtype=dtype)


def _prepare_forward(x, w, b, stride, padding, dilation, groups, activation, n_axes):
    """Validate a forward for inputs shaped and typed like x (already through _tensor); returns run(x) for any
    C-contiguous array of that shape and dtype, bound to w and b (Sequential's eval plan keeps it)."""
    relu = check_activation(activation)
    ndim = n_axes + 2
    w = as_tensor(w, "w", ndim=ndim, dtype=x.dtype)
    geom, out_shape = _geometry(x.shape, w.shape, stride, padding, dilation, groups, n_axes)
    if b is not None:
        b = _check_bias(b, w.shape[0], x.dtype)
    if n_axes == 2:
        run = lambda x: _core.conv2d_forward(x, w, b, geom, relu)
        run.native = ("conv", w, b, geom, relu)  # the same call, for Sequential's native plan
        return run
    w4 = w.reshape(w.shape[0], w.shape[1], 1, w.shape[2])
    x4_shape, y_shape = (x.shape[0], x.shape[1], 1, x.shape[2]), (out_shape[0], out_shape[1], out_shape[3])
    return lambda x: _core.conv2d_forward(x.reshape(x4_shape), w4, b, geom, relu).reshape(y_shape)


def _forward(x, w, b, stride, padding, dilation, groups, activation, n_axes):
    x = _tensor(x, "x", n_axes + 2)
    return _prepare_forward(x, w, b, stride, padding, dilation, groups, activation, n_axes)(x)


def _prepare_backward(x, w, stride, padding, dilation, groups, n_axes):
    """Validate a backward for inputs shaped and typed like x (already through _tensor) and weights w; returns
    run(dy, x, input_grad, bias_grad) -> (dx, dw, db) for any C-contiguous x of that shape and dtype, bound to w.
    dy is checked in run (in one comparison when it is already a C-contiguous array of the output's shape and x's
    dtype): a layer keeps run for its input shape (Conv2d/Conv1d)."""
    ndim, dtype = n_axes + 2, x.dtype
    w = as_tensor(w, "w", ndim=ndim, dtype=dtype)
    geom, out_shape = _geometry(x.shape, w.shape, stride, padding, dilation, groups, n_axes)
    dy_shape = out_shape if n_axes == 2 else (out_shape[0], out_shape[1], out_shape[3])
    x4_shape = x.shape if n_axes == 2 else (x.shape[0], x.shape[1], 1, x.shape[2])
    w4 = w if n_axes == 2 else w.reshape(w.shape[0], w.shape[1], 1, w.shape[2])

    def run(dy, x, input_grad, bias_grad):
        if type(dy) is not np.ndarray or dy.shape != dy_shape or dy.dtype != dtype or not dy.flags.c_contiguous:
            dy = _tensor(dy, "dy", ndim, dtype=dtype)
            if dy.shape != dy_shape:
                raise ValueError(f"dy must have the output's shape {dy_shape}, got {dy.shape}")
        dy4, x4 = (dy, x) if n_axes == 2 else (dy.reshape(out_shape), x.reshape(x4_shape))
        dx, dw, db = _core.conv2d_backward(dy4, x4, w4, geom, input_grad, bias_grad)
        if n_axes == 1:
            dw, dx = dw.reshape(w.shape), None if dx is None else dx.reshape(x.shape)
        return dx, dw, db

    return run


def _backward(dy, x, w, stride, padding, dilation, groups, input_grad, bias_grad, n_axes):
    input_grad = as_bool(input_grad, "input_grad")
    bias_grad = as_bool(bias_grad, "bias_grad")
    x = _tensor(x, "x", n_axes + 2)
    return _prepare_backward(x, w, stride, padding, dilation, groups, n_axes)(dy, x, input_grad, bias_grad)


def conv2d(x: np.ndarray, w: np.ndarray, b: np.ndarray | None = None, stride=1, padding=0, dilation=1,
           groups=1, activation=None) -> np.ndarray:
    """2-D convolution: x (N, C, H, W), w (K, C/groups, R, S), b (K,) -> (N, K, P, Q).

    stride, padding and dilation are each an int or an (h, w) pair; P = floor((H + 2p - d(R-1) - 1)/s) + 1.
    activation="relu" applies ReLU in the GEMM epilogue (the output is written once). Its backward: mask the
    incoming gradient with the output first, `conv2d_backward(relu_backward(dy, y), x, w, ...)` (y > 0 exactly
    where the pre-activation was > 0).
    """
    return _forward(x, w, b, stride, padding, dilation, groups, activation, 2)


def conv2d_backward(dy: np.ndarray, x: np.ndarray, w: np.ndarray, stride=1, padding=0, dilation=1, groups=1,
                    input_grad: bool = True, bias_grad: bool = True):
    """Gradients of conv2d given dy (N, K, P, Q): returns (dx, dw, db).

    dx is None (and not computed) when input_grad=False, db is None when bias_grad=False.
    """
    return _backward(dy, x, w, stride, padding, dilation, groups, input_grad, bias_grad, 2)


def conv1d(x: np.ndarray, w: np.ndarray, b: np.ndarray | None = None, stride=1, padding=0, dilation=1,
           groups=1, activation=None) -> np.ndarray:
    """1-D convolution: x (N, C, L), w (K, C/groups, R), b (K,) -> (N, K, L_out); activation as in conv2d."""
    return _forward(x, w, b, stride, padding, dilation, groups, activation, 1)


def conv1d_backward(dy: np.ndarray, x: np.ndarray, w: np.ndarray, stride=1, padding=0, dilation=1, groups=1,
                    input_grad: bool = True, bias_grad: bool = True):
    """Gradients of conv1d given dy (N, K, L_out): returns (dx, dw, db) (dx/db None when not asked for)."""
    return _backward(dy, x, w, stride, padding, dilation, groups, input_grad, bias_grad, 1)
