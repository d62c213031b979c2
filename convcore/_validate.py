"""Argument checks and the one output-size helper shared by the functional API and the layers.

Every check raises TypeError or ValueError naming the argument, its value and the rule.
Dtype rule: float32 runs the fast kernels; float64 runs the float64 reference kernels (for gradient
checks and validation); every other dtype is refused.
"""
from __future__ import annotations

import functools
import math
import numbers

import numpy as np

_FLOAT32 = np.dtype(np.float32)
FLOAT_DTYPES = (_FLOAT32, np.dtype(np.float64))
MAX_ELEMENTS = 1 << 40  # refuse absurd shapes before allocating


def as_tensor(x, name: str, ndim=None, dtype=None) -> np.ndarray:
    """Validate a float tensor and return it C-contiguous (copied once if it was not)."""
    # the common case first, in a few attribute reads: a C-contiguous float32 array of the wanted rank
    if (type(x) is np.ndarray and x.dtype is _FLOAT32 and (dtype is None or dtype is _FLOAT32)
            and (ndim is None or ndim == x.ndim or (type(ndim) is tuple and x.ndim in ndim)) and x.flags.c_contiguous):
        return x
    if x is None:
        raise TypeError(f"{name} must be a numpy array, got None")
    if not isinstance(x, np.ndarray):
        raise TypeError(f"{name} must be a numpy array, got {type(x).__name__}")
    if x.dtype not in FLOAT_DTYPES:
        raise TypeError(
            f"{name} has dtype {x.dtype}; convcore computes in float32 (float64 for reference checks): "
            f"convert with {name}.astype(np.float32)"
        )
    if dtype is not None and x.dtype != dtype:
        raise TypeError(f"{name} has dtype {x.dtype} but must match the other operands' dtype {np.dtype(dtype)}")
    if ndim is not None:
        allowed = (ndim,) if isinstance(ndim, int) else tuple(ndim)
        if x.ndim not in allowed:
            want = " or ".join(f"{d}-D" for d in allowed)
            raise ValueError(f"{name} must be {want}, got shape {x.shape} ({x.ndim}-D)")
    return np.ascontiguousarray(x).reshape(x.shape)  # a 0-d array kept 0-d (ascontiguousarray makes it 1-d)


def as_bool(v, name: str) -> bool:
    """A flag: a Python or numpy bool (not 0/1, strings or None)."""
    if not isinstance(v, (bool, np.bool_)):
        raise TypeError(f"{name} must be a bool, got {v!r}")
    return bool(v)


def as_real(v, name: str) -> float:
    """A finite real number (not a bool, a string or an array) as a float."""
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, numbers.Real) or not math.isfinite(v):
        raise TypeError(f"{name} must be a finite real number, got {v!r}")
    return float(v)


def as_int(v, name: str, minimum=None) -> int:
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {v!r}")
    v = int(v)
    if minimum is not None and v < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {v}")
    return v


def as_size(v, name: str) -> int:
    """A layer's or model's size (features, channels, groups, classes): an int in [1, MAX_ELEMENTS] (numpy refused
    2**70 channels as "Maximum allowed dimension exceeded", naming nothing)."""
    v = as_int(v, name, minimum=1)
    if v > MAX_ELEMENTS:
        raise ValueError(f"{name} must be at most 2**40, got {v}")
    return v


def as_tuple(v, name: str, n: int, minimum=None) -> tuple:
    """An int or a length-n sequence of ints -> a tuple of n ints, each >= minimum and at most MAX_ELEMENTS (sizes,
    strides and paddings past it describe no array that could exist, and the kernels take 64-bit ints)."""
    if isinstance(v, (list, tuple)):
        if len(v) != n:
            raise ValueError(f"{name} must be an int or a sequence of {n} ints, got {v!r}")
        items = v
    else:
        items = (v,) * n
    out = []
    for item in items:
        if isinstance(item, (bool, np.bool_)) or not isinstance(item, numbers.Integral):
            raise TypeError(f"{name} must be an int or a sequence of {n} ints, got {v!r}")
        if minimum is not None and int(item) < minimum:
            raise ValueError(f"{name} must be >= {minimum}, got {v!r}")
        if int(item) > MAX_ELEMENTS:
            raise ValueError(f"{name} must be at most 2**40, got {v!r}")
        out.append(int(item))
    return tuple(out)


def output_size(size: int, kernel: int, stride: int, padding: int, dilation: int = 1,
                ceil_mode: bool = False) -> int:
    """Output length of a convolution or pooling window sweep: floor((N + 2P - D(F-1) - 1)/S) + 1, or 0
    where no window fits.

    With ceil_mode the division rounds up (PyTorch's rule, also where the window is longer than the padded input
    by less than the stride: its one window is cut at the input's end), but the last window must start inside the
    input or the left padding, so no window lies entirely in the right padding.
    """
    span = size + 2 * padding - dilation * (kernel - 1) - 1
    if ceil_mode:
        out = -(-span // stride) + 1
        if (out - 1) * stride >= size + padding:
            out -= 1
        return max(out, 0)
    return max(span // stride + 1, 0)


def check_elements(shape, name: str) -> None:
    """Refuse shapes whose element count is absurd, before anything is allocated."""
    total = math.prod(shape)  # Python ints (array shapes, validated ints): no overflow
    if total > MAX_ELEMENTS:
        raise ValueError(f"{name} would have shape {tuple(shape)} = {total} elements, more than the "
                         f"limit of {MAX_ELEMENTS}")


def _cacheable(args) -> bool:
    for v in args:
        t = type(v)
        if t is tuple:
            for i in v:
                if type(i) is not int:
                    return False
        elif not (t is int or t is bool or t is str or v is None):
            return False
    return True


def memoize_checks(fn):
    """Cache a pure validation helper's result per argument values, for repeated calls with the same shapes and
    options (a layer's every forward). Only exact ints, bools, strings, None and tuples of exact ints make a key:
    1 == 1.0 == True, and a key compared by value would let 1.0 or True through where validation refuses them,
    so calls with any other argument types are validated afresh. Failures are not cached: a bad call raises
    every time."""
    cache = {}

    @functools.wraps(fn)
    def checked(*args):
        if not _cacheable(args):
            return fn(*args)
        key = (args, tuple(map(type, args)))
        result = cache.get(key)
        if result is None:
            result = fn(*args)
            if len(cache) >= 1024:
                cache.clear()
            cache[key] = result
        return result

    return checked
