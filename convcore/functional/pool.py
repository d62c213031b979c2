"""Max and average pooling (1-D on (N, C, L), 2-D on (N, C, H, W)), forward and backward, PyTorch semantics.

Max pooling keeps its argmax two ways. The public `return_indices=True` form is PyTorch's: int64 flat
indices into each H*W (or L) plane. The layers use the compact form instead (`_prepare_max_pool_compact`, validated
once per input shape; `_max_pool2d_compact` and `_max_pool2d_compact_backward` validate every call): one uint8 per
output, the offset kh*KW + kw of the max inside its window (window origin (oh*SH - PH, ow*SW - PW), padding
included); 8x smaller, and the 2x2/2 backward routes each gradient with it while writing every input-gradient
element exactly once. A call that keeps no argmax (`return_indices=False`, an eval-mode or frozen layer) computes
the outputs alone.
"""
from __future__ import annotations

import numpy as np

from .. import _core
from .._validate import as_bool, as_tensor, as_tuple, check_elements, memoize_checks, output_size


def _window(kernel_size, stride, padding, spatial: int):
    """(kernel, stride, padding) tuples of `spatial` ints, checked against PyTorch's pooling rules."""
    kernel = as_tuple(kernel_size, "kernel_size", spatial, minimum=1)
    strides = kernel if stride is None else as_tuple(stride, "stride", spatial, minimum=1)
    pads = as_tuple(padding, "padding", spatial, minimum=0)
    if any(2 * p > k for p, k in zip(pads, kernel)):
        raise ValueError(f"padding must be at most half of kernel_size (padding <= kernel_size // 2), "
                         f"got padding {padding!r} with kernel_size {kernel_size!r}")
    return kernel, strides, pads


@memoize_checks
def _geometry(size: tuple, kernel_size, stride, padding, ceil_mode, spatial: int, name: str) -> tuple:
    """The kernels' (H, W, OH, OW, KH, KW, SH, SW, PH, PW) for an input of spatial `size`."""
    kernel, strides, pads = _window(kernel_size, stride, padding, spatial)
    ceil_mode = as_bool(ceil_mode, "ceil_mode")
    out = tuple(output_size(n, k, s, p, ceil_mode=ceil_mode) for n, k, s, p in zip(size, kernel, strides, pads))
    if min(out) <= 0:
        raise ValueError(f"{name} spatial size {size} is too small for kernel_size {kernel_size!r} with padding "
                         f"{padding!r} (output size would be {out}): the kernel must fit in the padded input")
    if spatial == 1:
        size, out, kernel, strides, pads = (1,) + size, (1,) + out, (1,) + kernel, (1,) + strides, (0,) + pads
    return size + out + kernel + strides + pads


def _input(x, spatial: int):
    """x as a C-contiguous (N, C, H, W) array (1-D input gets H = 1)."""
    x = as_tensor(x, "x", ndim=spatial + 2)
    if any(d == 0 for d in x.shape[1:]):
        raise ValueError(f"x must have non-zero channels and spatial size (only the batch may be 0), "
                         f"got shape {x.shape}")
    return x if spatial == 2 else x.reshape(x.shape[0], x.shape[1], 1, x.shape[2])


def _input_shape(input_shape, spatial: int) -> tuple:
    ndim = spatial + 2
    if not isinstance(input_shape, (tuple, list)) or len(input_shape) != ndim:
        form = "(N, C, H, W)" if spatial == 2 else "(N, C, L)"
        raise ValueError(f"input_shape must be a sequence of {ndim} ints {form}, got {input_shape!r}")
    shape = as_tuple(tuple(input_shape), "input_shape", ndim, minimum=0)
    if min(shape[1:]) < 1:
        raise ValueError(f"input_shape must have non-zero channels and spatial size, got {input_shape!r}")
    check_elements(shape, "the input gradient")
    return shape


def _gradient(dy, input_shape, kernel_size, stride, padding, ceil_mode, spatial: int):
    """Validated (N, C, H, W) view of dy, the geometry, and the input shape."""
    shape = _input_shape(input_shape, spatial)
    geometry = _geometry(shape[2:], kernel_size, stride, padding, ceil_mode, spatial, "input_shape")
    out_shape = shape[:2] + tuple(geometry[2:4] if spatial == 2 else geometry[3:4])
    dy = as_tensor(dy, "dy", ndim=spatial + 2)
    if dy.shape != out_shape:
        raise ValueError(f"dy must have the pooling output shape {out_shape} for input_shape {shape}, "
                         f"got {dy.shape}")
    return dy.reshape(shape[0], shape[1], geometry[2], geometry[3]), geometry, shape


def _compact_fits(geometry: tuple) -> bool:
    return geometry[4] * geometry[5] <= _core.pool_max_compact_window


def _max_pool(x, kernel_size, stride, padding, ceil_mode, return_indices, spatial: int):
    return_indices = as_bool(return_indices, "return_indices")
    x4 = _input(x, spatial)
    geometry = _geometry(x4.shape[2:] if spatial == 2 else x4.shape[3:], kernel_size, stride, padding, ceil_mode,
                         spatial, "x")
    if not return_indices:
        y = _core.max_pool2d_values(x4, geometry)
    elif _compact_fits(geometry):
        y, offsets = _core.max_pool2d_offsets(x4, geometry)
        indices = _core.pool_offsets_to_indices(offsets, geometry)
    else:
        y, indices = _core.max_pool2d_indices(x4, geometry)
    out_shape = x.shape[:2] + y.shape[2 if spatial == 2 else 3:]
    y = y.reshape(out_shape)
    return (y, indices.reshape(out_shape)) if return_indices else y


def _prepare_pool(x, kernel_size, stride, padding, ceil_mode, count_include_pad, spatial: int):
    """Validate a max pooling (count_include_pad None) or average pooling for inputs shaped and typed like x;
    returns run(x) -> y for any C-contiguous array of that shape and dtype (Sequential's eval plan keeps it)."""
    x4 = _input(x, spatial)
    geometry = _geometry(x4.shape[2:] if spatial == 2 else x4.shape[3:], kernel_size, stride, padding, ceil_mode,
                         spatial, "x")
    x4_shape, y_shape = x4.shape, x4.shape[:2] + tuple(geometry[2:4])
    out_shape = y_shape if spatial == 2 else y_shape[:2] + y_shape[3:]
    if count_include_pad is not None:
        count_include_pad = as_bool(count_include_pad, "count_include_pad")
        run = lambda x: _core.avg_pool2d(x.reshape(x4_shape), geometry, count_include_pad).reshape(out_shape)
        if spatial == 2:
            run.native = ("avg_pool", geometry, count_include_pad)  # the same call, for Sequential's native plan
        return run
    run = lambda x: _core.max_pool2d_values(x.reshape(x4_shape), geometry).reshape(out_shape)
    if spatial == 2:
        run.native = ("max_pool", geometry)
    return run


def _checked_dy(dy, y_shape, dtype, x_shape, required_dtype):
    """dy for a prepared backward: returned as it is when already a C-contiguous array of the output's shape y_shape
    and the input's dtype (one comparison), else validated (of required_dtype where not None) and checked against
    y_shape."""
    if type(dy) is not np.ndarray or dy.shape != y_shape or dy.dtype != dtype or not dy.flags.c_contiguous:
        dy = as_tensor(dy, "dy", ndim=len(y_shape), dtype=required_dtype)
        if dy.shape != y_shape:
            raise ValueError(f"dy must have the pooling output shape {y_shape} for input shape {x_shape}, "
                             f"got {dy.shape}")
    return dy


def _prepare_avg_pool(x, kernel_size, stride, padding, ceil_mode, count_include_pad):
    """Validate a 2-D average pooling for inputs shaped and typed like x (4-D, already through as_tensor); returns
    (run(x) -> y, back(dy) -> dx) for C-contiguous arrays of that shape and dtype (nn.AvgPool2d keeps them while its
    input's shape and options stay the same; dy is checked in one comparison when it is already a C-contiguous
    array of the output's shape and x's dtype)."""
    run = _prepare_pool(x, kernel_size, stride, padding, ceil_mode, count_include_pad, 2)
    count_include_pad = as_bool(count_include_pad, "count_include_pad")
    geometry = _geometry(x.shape[2:], kernel_size, stride, padding, ceil_mode, 2, "x")
    x_shape, dtype = x.shape, x.dtype
    y_shape = x_shape[:2] + tuple(geometry[2:4])

    def back(dy):  # of x's dtype, as max pooling's: a float64 dy for a float32 x gave a float64 dx
        dy = _checked_dy(dy, y_shape, dtype, x_shape, dtype)
        return _core.avg_pool2d_backward(dy, geometry, count_include_pad)
    return run, back


def _max_pool_backward(dy, indices, input_shape, kernel_size, stride, padding, ceil_mode, spatial: int):
    dy4, geometry, shape = _gradient(dy, input_shape, kernel_size, stride, padding, ceil_mode, spatial)
    if not isinstance(indices, np.ndarray):
        raise TypeError(f"indices must be a numpy int64 array, got {type(indices).__name__}")
    if indices.dtype != np.int64:
        raise TypeError(f"indices must have dtype int64 (as returned with return_indices=True), got {indices.dtype}")
    if indices.shape != dy.shape:
        raise ValueError(f"indices shape {indices.shape} must equal dy shape {dy.shape}")
    plane = geometry[0] * geometry[1]
    if indices.size and (indices.min() < 0 or indices.max() >= plane):
        bad = int(indices.min()) if indices.min() < 0 else int(indices.max())
        raise ValueError(f"indices must lie in [0, {plane}) (flat positions in one input plane), found {bad}")
    indices4 = np.ascontiguousarray(indices).reshape(dy4.shape)
    return _core.max_pool2d_indices_backward(dy4, indices4, geometry).reshape(shape)


def max_pool2d(x, kernel_size, stride=None, padding=0, ceil_mode=False, return_indices=False):
    """Max over kernel_size windows of x (N, C, H, W); stride defaults to kernel_size.

    Returns y (N, C, OH, OW), and with return_indices=True also int64 flat indices into each H*W plane.
    """
    return _max_pool(x, kernel_size, stride, padding, ceil_mode, return_indices, 2)


def max_pool2d_backward(dy, indices, input_shape, kernel_size, stride=None, padding=0, ceil_mode=False):
    """dx (input_shape): dy routed to the argmax `indices` from max_pool2d(..., return_indices=True)."""
    return _max_pool_backward(dy, indices, input_shape, kernel_size, stride, padding, ceil_mode, 2)


def max_pool1d(x, kernel_size, stride=None, padding=0, ceil_mode=False, return_indices=False):
    """max_pool2d on (N, C, L) with windows along L; indices are flat positions in L."""
    return _max_pool(x, kernel_size, stride, padding, ceil_mode, return_indices, 1)


def max_pool1d_backward(dy, indices, input_shape, kernel_size, stride=None, padding=0, ceil_mode=False):
    return _max_pool_backward(dy, indices, input_shape, kernel_size, stride, padding, ceil_mode, 1)


def _prepare_max_pool_compact(x, kernel_size, stride, padding, ceil_mode):
    """Validate a max pooling with the compact argmax for inputs shaped and typed like x (3-D or 4-D, already
    through as_tensor); returns (run(x) -> (y, offsets), back(dy, offsets, relu_output=None) -> dx) for C-contiguous
    arrays of that shape and dtype (back takes the offsets run returned; dy is checked in it, in one comparison when
    it is already a C-contiguous array of the output's shape and x's dtype). relu_output: the y run returned, where x
    is a ReLU's output whose backward is folded in (dy counts where y > 0). None where the window has more elements
    than a compact offset can name (max_pool2d(..., return_indices=True) pools those)."""
    spatial = x.ndim - 2
    x4 = _input(x, spatial)
    geometry = _geometry(x.shape[2:], kernel_size, stride, padding, ceil_mode, spatial, "x")
    if not _compact_fits(geometry):
        return None
    x_shape, x4_shape, dtype = x.shape, x4.shape, x.dtype
    y4_shape = x4_shape[:2] + geometry[2:4]
    y_shape = y4_shape if spatial == 2 else y4_shape[:2] + y4_shape[3:]

    def run(x):  # 4-D x as it is: no views made at every call
        return _core.max_pool2d_offsets(x, geometry)

    def back(dy, offsets, relu_output=None):
        return _core.max_pool2d_offsets_backward(_checked_dy(dy, y4_shape, dtype, x4_shape, dtype), offsets,
                                                 geometry, relu_output)

    if spatial == 2:
        return run, back

    def run_1d(x):
        y, offsets = run(x.reshape(x4_shape))
        return y.reshape(y_shape), offsets.reshape(y_shape)

    def back_1d(dy, offsets, relu_output=None):
        dy = _checked_dy(dy, y_shape, dtype, x_shape, dtype)
        relu_output = None if relu_output is None else relu_output.reshape(y4_shape)
        return _core.max_pool2d_offsets_backward(dy.reshape(y4_shape), offsets.reshape(y4_shape), geometry,
                                                 relu_output).reshape(x_shape)

    return run_1d, back_1d


def _max_pool2d_compact(x, kernel_size, stride=None, padding=0, ceil_mode=False):
    """Max pooling of x (4-D or 3-D) with the compact argmax: (y, offsets), offsets uint8 window offsets per output.

    Windows larger than 256 elements have no compact form: use max_pool2d(..., return_indices=True).
    """
    x = as_tensor(x, "x", ndim=(3, 4))
    steps = _prepare_max_pool_compact(x, kernel_size, stride, padding, ceil_mode)
    if steps is None:
        raise ValueError(f"kernel_size {kernel_size!r} has more than {_core.pool_max_compact_window} elements: "
                         f"no compact argmax; use max_pool2d(..., return_indices=True)")
    return steps[0](x)


def _max_pool2d_compact_backward(dy, offsets, input_shape, kernel_size, stride=None, padding=0, ceil_mode=False):
    """dx (input_shape) from dy and the offsets of _max_pool2d_compact called with the same arguments; offsets
    outside the window are refused."""
    spatial = len(input_shape) - 2 if isinstance(input_shape, (tuple, list)) else 2
    dy4, geometry, shape = _gradient(dy, input_shape, kernel_size, stride, padding, ceil_mode, spatial)
    if not isinstance(offsets, np.ndarray) or offsets.dtype != np.uint8:
        raise TypeError(f"offsets must be the uint8 array from _max_pool2d_compact, got "
                        f"{getattr(offsets, 'dtype', type(offsets).__name__)}")
    if offsets.shape != dy.shape:
        raise ValueError(f"offsets shape {offsets.shape} must equal dy shape {dy.shape}")
    window = geometry[4] * geometry[5]
    if offsets.size and int(offsets.max()) >= window:
        raise ValueError(f"offsets must be < {window} (window elements), found {int(offsets.max())}")
    offsets4 = np.ascontiguousarray(offsets).reshape(dy4.shape)
    return _core.max_pool2d_offsets_backward(dy4, offsets4, geometry).reshape(shape)


def _avg_pool(x, kernel_size, stride, padding, ceil_mode, count_include_pad, spatial: int):
    count_include_pad = as_bool(count_include_pad, "count_include_pad")  # before None could mean max pooling
    x = as_tensor(x, "x", ndim=spatial + 2)
    return _prepare_pool(x, kernel_size, stride, padding, ceil_mode, count_include_pad, spatial)(x)


def _avg_pool_backward(dy, input_shape, kernel_size, stride, padding, ceil_mode, count_include_pad, spatial: int):
    count_include_pad = as_bool(count_include_pad, "count_include_pad")
    dy4, geometry, shape = _gradient(dy, input_shape, kernel_size, stride, padding, ceil_mode, spatial)
    return _core.avg_pool2d_backward(dy4, geometry, count_include_pad).reshape(shape)


def avg_pool2d(x, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True):
    """Mean over kernel_size windows of x (N, C, H, W); the divisor counts padding when count_include_pad
    (but never the ceil_mode overhang past the padding), else only input elements."""
    return _avg_pool(x, kernel_size, stride, padding, ceil_mode, count_include_pad, 2)


def avg_pool2d_backward(dy, input_shape, kernel_size, stride=None, padding=0, ceil_mode=False,
                        count_include_pad=True):
    """dx (input_shape): each dy spread evenly (by the forward's divisor) over its window."""
    return _avg_pool_backward(dy, input_shape, kernel_size, stride, padding, ceil_mode, count_include_pad, 2)


def avg_pool1d(x, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True):
    """avg_pool2d on (N, C, L) with windows along L."""
    return _avg_pool(x, kernel_size, stride, padding, ceil_mode, count_include_pad, 1)


def avg_pool1d_backward(dy, input_shape, kernel_size, stride=None, padding=0, ceil_mode=False,
                        count_include_pad=True):
    return _avg_pool_backward(dy, input_shape, kernel_size, stride, padding, ceil_mode, count_include_pad, 1)
