"""Matrix products: matmul and the fully connected layer (linear), forward and backward."""
from __future__ import annotations

import numpy as np

from .. import _core
from .._validate import as_tensor


def matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(M, K) @ (K, N) -> (M, N), float32 (or float64)."""
    a = as_tensor(a, "a", ndim=2)
    b = as_tensor(b, "b", ndim=2, dtype=a.dtype)
    if a.shape[1] != b.shape[0]:
        raise ValueError(f"a.shape[1] must equal b.shape[0] (inner dimensions), got a {a.shape} and b {b.shape}")
    return _core.matmul(a, b)


def linear(x: np.ndarray, w: np.ndarray, b: np.ndarray | None = None) -> np.ndarray:
    """y = x @ w.T + b with x (N, in), w (out, in), b (out,)."""
    x = as_tensor(x, "x", ndim=2)
    w = as_tensor(w, "w", ndim=2, dtype=x.dtype)
    if x.shape[1] != w.shape[1]:
        raise ValueError(f"x.shape[1] ({x.shape[1]}) must equal w.shape[1] (in_features {w.shape[1]}); "
                         f"x is {x.shape}, w is {w.shape}")
    y = _core.matmul(x, np.ascontiguousarray(w.T))
    if b is not None:
        b = as_tensor(b, "b", ndim=1, dtype=x.dtype)
        if b.shape[0] != w.shape[0]:
            raise ValueError(f"b must have shape ({w.shape[0]},) (out_features), got {b.shape}")
        y += b
    return y


def linear_backward(dy: np.ndarray, x: np.ndarray, w: np.ndarray, input_grad: bool = True,
                    bias_grad: bool = True):
    """Gradients of linear: returns (dx, dw, db); dx / db are None when not asked for."""
    x = as_tensor(x, "x", ndim=2)
    w = as_tensor(w, "w", ndim=2, dtype=x.dtype)
    dy = as_tensor(dy, "dy", ndim=2, dtype=x.dtype)
    if dy.shape != (x.shape[0], w.shape[0]):
        raise ValueError(f"dy must have shape {(x.shape[0], w.shape[0])} (batch, out_features), got {dy.shape}")
    dw = _core.matmul(np.ascontiguousarray(dy.T), x)
    dx = _core.matmul(dy, w) if input_grad else None
    db = dy.sum(axis=0) if bias_grad else None
    return dx, dw, db
