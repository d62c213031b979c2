"""Matrix products: matmul and the fully connected layer (linear), forward and backward.

float32 runs the tiled SGEMM engine (bias and ReLU fused into its epilogue); float64 runs the reference GEMM.
"""
from __future__ import annotations

import numpy as np

from .. import _core
from .._validate import MAX_ELEMENTS, as_bool, as_tensor, check_elements

BIAS_NONE, BIAS_PER_ROW, BIAS_PER_COL = 0, 1, 2


def check_activation(activation):
    """The fused activations: None or "relu"."""
    if activation is not None and not (isinstance(activation, str) and activation == "relu"):
        raise ValueError(f"activation must be None or 'relu', got {activation!r}")
    return activation is not None


def _gemm(a, b, trans_a=False, trans_b=False, bias=None, bias_axis=BIAS_NONE, relu=False):
    return _core.gemm(a, b, trans_a, trans_b, 1.0, 0.0, None, bias, bias_axis, relu, False)


def matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(M, K) @ (K, N) -> (M, N), float32 (or float64). Transposed views (a.T of a C-ordered array) are read as they
    are; other non-contiguous operands are copied once."""
    # the common case, recognised in C++ by the rules below: two C-contiguous float32 matrices whose inner
    # dimensions agree (as_tensor and check_elements took 1.6 of a 6 x 25 @ 25 x 784 product's 5.5 us; the same
    # checks in Python attribute reads, 0.4 us of a 1 x 1 @ 1 x 1 product's 1.3)
    c = _core.plain_matmul(a, b, MAX_ELEMENTS)
    if c is not None:
        return c
    a, trans_a = _matrix(a, "a")
    b, trans_b = _matrix(b, "b", dtype=a.dtype)
    (m, k), (k_b, n) = a.T.shape if trans_a else a.shape, b.T.shape if trans_b else b.shape
    if k != k_b:
        raise ValueError(f"a.shape[1] must equal b.shape[0] (inner dimensions), got a {(m, k)} and b {(k_b, n)}")
    check_elements((m, n), "the product")
    return _gemm(a, b, trans_a, trans_b)


def _matrix(x, name, dtype=None):
    """x as a validated C-contiguous 2-D array and whether that array is x transposed: a Fortran-ordered x (a
    transposed view such as w.T) goes to the engine as its C-ordered transpose with the transpose flag, uncopied (a
    Fortran-ordered 512 x 4608 A times a 4608 x 49 B, 2 threads: 16.8 ms with numpy's copy of A, 1.31 without)."""
    if isinstance(x, np.ndarray) and x.ndim == 2 and not x.flags.c_contiguous and x.T.flags.c_contiguous:
        return as_tensor(x.T, name, ndim=2, dtype=dtype), True
    return as_tensor(x, name, ndim=2, dtype=dtype), False


def linear(x: np.ndarray, w: np.ndarray, b: np.ndarray | None = None, activation=None) -> np.ndarray:
    """y = x @ w.T + b with x (N, in), w (out, in), b (out,); activation="relu" fuses a ReLU. A transposed view as w
    (the .T of a C-ordered (in, out) array) is read as it is; other non-contiguous operands are copied once."""
    x = as_tensor(x, "x", ndim=2)
    return _prepare_linear(x, w, b, activation)(x)


def _prepare_linear(x, w, b, activation):
    """Validate linear for inputs shaped and typed like x (already through as_tensor); returns run(x) for any
    C-contiguous array of that shape and dtype, bound to w and b (Sequential's eval plan keeps it)."""
    relu = check_activation(activation)
    w, w_transposed = _weight(x, w)
    out_features = w.shape[1] if w_transposed else w.shape[0]
    if b is not None:
        b = as_tensor(b, "b", ndim=1, dtype=x.dtype)
        if b.shape[0] != out_features:
            raise ValueError(f"b must have shape ({out_features},) (out_features), got {b.shape}")
    check_elements((x.shape[0], out_features), "the output")
    axis = BIAS_NONE if b is None else BIAS_PER_COL
    run = lambda x: _core.gemm(x, w, False, not w_transposed, 1.0, 0.0, None, b, axis, relu, False)
    if not w_transposed:
        run.native = ("linear", w, b, relu)  # the same call, for Sequential's native plan
    return run


def _weight(x, w):
    """linear's w (out, in) validated against x: returns (array, transposed), where a Fortran-ordered w (a transposed
    view, such as the .T of an (in, out) array) is its C-ordered transpose, uncopied (2 threads, a 4096 -> 4096
    layer at batch 1: 147 ms with numpy's copy of w, 1.4 without)."""
    w, transposed = _matrix(w, "w", dtype=x.dtype)
    in_features = w.shape[0] if transposed else w.shape[1]
    if x.shape[1] != in_features:
        shape = w.T.shape if transposed else w.shape
        raise ValueError(f"x.shape[1] ({x.shape[1]}) must equal w.shape[1] (in_features {in_features}); "
                         f"x is {x.shape}, w is {shape}")
    return w, transposed


def _prepare_linear_backward(x, w):
    """Validate linear's backward for inputs shaped and typed like x (already through as_tensor) and weights w;
    returns run(dy, x, input_grad, bias_grad) -> (dx, dw, db) for any C-contiguous x of that shape and dtype, bound
    to w. dy is checked in run (in one comparison when it is already a C-contiguous array of the output's shape
    and x's dtype): a Linear layer keeps run for its input shape."""
    w, w_transposed = _weight(x, w)
    dy_shape, dtype = (x.shape[0], w.shape[1] if w_transposed else w.shape[0]), x.dtype

    def run(dy, x, input_grad, bias_grad):
        if type(dy) is not np.ndarray or dy.shape != dy_shape or dy.dtype != dtype or not dy.flags.c_contiguous:
            dy = as_tensor(dy, "dy", ndim=2, dtype=dtype)
            if dy.shape != dy_shape:
                raise ValueError(f"dy must have shape {dy_shape} (batch, out_features), got {dy.shape}")
        dw = _gemm(dy, x, trans_a=True)
        dx = _gemm(dy, w, trans_b=w_transposed) if input_grad else None
        # the per-column sum is a conv bias gradient over (N, out, 1, 1): one pass, the same order at any thread count
        db = _core.conv2d_backward_bias(dy.reshape(dy_shape + (1, 1))) if bias_grad else None
        return dx, dw, db

    return run


def linear_backward(dy: np.ndarray, x: np.ndarray, w: np.ndarray, input_grad: bool = True,
                    bias_grad: bool = True):
    """Gradients of linear given dy (N, out): returns (dx, dw, db); dx / db are None when not asked for."""
    input_grad, bias_grad = as_bool(input_grad, "input_grad"), as_bool(bias_grad, "bias_grad")
    x = as_tensor(x, "x", ndim=2)
    return _prepare_linear_backward(x, w)(dy, x, input_grad, bias_grad)
