"""Pooling layers: max (1-D, 2-D), average, adaptive average and global average pooling."""
from __future__ import annotations

import functools

import numpy as np

from .. import functional as F
from .._validate import as_tensor, as_tuple
from ..functional import pool as pool_ops
from .module import Module


def _kept(layer, option):
    """A window option as a layer keeps it (checked when it is used): a list or array as a tuple, a value of its own
    (the list given, changed in place later, went unseen by the calls the layer had prepared for it)."""
    if isinstance(option, np.ndarray):
        option = option.tolist()
    return tuple(option) if isinstance(option, list) else option


_WINDOW_OPTIONS = {"kernel_size": _kept, "stride": _kept, "padding": _kept}


class _MaxPoolNd(Module):
    n_axes = 2
    _option_checks = _WINDOW_OPTIONS

    def __init__(self, kernel_size, stride=None, padding=0, ceil_mode=False):
        super().__init__()
        self.kernel_size, self.stride, self.padding = kernel_size, stride, padding
        self.ceil_mode = ceil_mode
        self._saved_state = None

    def _args(self):
        return self.kernel_size, self.stride, self.padding, self.ceil_mode

    def _steps(self, x):
        """(forward, backward) of the compact-argmax pooling prepared by convcore.functional for inputs shaped and
        typed like x (a C-contiguous array), validated once and kept while the input and the options stay the same
        (Module._prepared_for); None for windows too large for it."""
        args = self._args()
        return self._prepared_for((x.shape, x.dtype, args), None, None,
                                  lambda: pool_ops._prepare_max_pool_compact(as_tensor(x, "x", ndim=self.n_axes + 2),
                                                                             *args))

    def forward(self, x):
        pool = F.max_pool2d if self.n_axes == 2 else F.max_pool1d
        if not self._keeps():
            self._saved_state = None  # a backward now is an error, not a routing by an earlier input's argmax
            return pool(x, *self._args())
        if type(x) is not np.ndarray or not x.flags.c_contiguous:
            x = as_tensor(x, "x", ndim=self.n_axes + 2)
        steps = self._steps(x)
        if steps is not None:  # saved: the output, back(dy, offsets, relu_output=None) and the offsets
            y, offsets = steps[0](x)
            self._saved_state = (y, steps[1], offsets)
            return y
        args = self._args()  # kept: the backward routes with the windows the argmax was taken over
        y, indices = pool(x, *args, return_indices=True)
        back = functools.partial(F.max_pool2d_backward if self.n_axes == 2 else F.max_pool1d_backward,
                                 indices=indices, input_shape=x.shape, kernel_size=args[0], stride=args[1],
                                 padding=args[2], ceil_mode=args[3])
        self._saved_state = (y, back, None)  # back(dy)
        return y

    def _inference_step(self, x, relu=False):
        return pool_ops._prepare_pool(x, *self._args(), None, self.n_axes)

    def backward_through_relu(self, dy):
        """The input gradient of a ReLU followed by this pooling: ReLU.backward(self.backward(dy)) with the ReLU's
        mask taken on the pooled grid. Each output is the value of its argmax input (a ReLU output), so that input
        is > 0 exactly where the output is, and masking dy by the output gives the same bits (a quarter of the
        work for 2x2 windows). With the compact argmax the routing kernel applies the mask as it goes."""
        y, back, offsets = self._saved(self._saved_state, "argmax indices")
        if offsets is None:
            return back(F.relu_backward(dy, y))
        return back(dy, offsets, y)  # masks as it routes

    def backward(self, dy, input_grad=True):
        _, back, offsets = self._saved(self._saved_state, "argmax indices")
        return back(dy) if offsets is None else back(dy, offsets)

    def _release(self):
        self._saved_state = None

    def extra_repr(self):
        return (f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}, "
                f"ceil_mode={self.ceil_mode}")


class MaxPool2d(_MaxPoolNd):
    """Max pooling over (N, C, H, W); stride defaults to kernel_size."""
    n_axes = 2


class MaxPool1d(_MaxPoolNd):
    """Max pooling over (N, C, L)."""
    n_axes = 1


class AvgPool2d(Module):
    """Average pooling over (N, C, H, W); count_include_pad as PyTorch."""
    _option_checks = _WINDOW_OPTIONS

    def __init__(self, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True):
        super().__init__()
        self.kernel_size, self.stride, self.padding = kernel_size, stride, padding
        self.ceil_mode, self.count_include_pad = ceil_mode, count_include_pad
        self._back = None

    def _args(self):
        return self.kernel_size, self.stride, self.padding, self.ceil_mode, self.count_include_pad

    def forward(self, x):
        if type(x) is not np.ndarray or not x.flags.c_contiguous:
            x = as_tensor(x, "x", ndim=4)
        # (forward, backward) prepared by convcore.functional for inputs shaped and typed like x, validated once and
        # kept while the input and the options stay the same (Module._prepared_for)
        args = self._args()
        run, back = self._prepared_for((x.shape, x.dtype, args), None, None,
                                       lambda: pool_ops._prepare_avg_pool(as_tensor(x, "x", ndim=4), *args))
        self._back = back if self._keeps() else None
        return run(x)

    def _inference_step(self, x, relu=False):
        return pool_ops._prepare_pool(x, *self._args(), 2)

    def backward(self, dy, input_grad=True):
        return self._saved(self._back, "input shape")(dy)

    def _release(self):
        self._back = None

    def extra_repr(self):
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"


class AdaptiveAvgPool2d(Module):
    """Average pooling to a fixed output size; window i spans [floor(i*H/out), ceil((i+1)*H/out)) as PyTorch (where
    the sizes divide, the average pooling kernel over those windows)."""
    _option_checks = {"output_size": lambda layer, v: as_tuple(v, "output_size", 2, minimum=1)}

    def __init__(self, output_size):
        super().__init__()
        self.output_size = output_size
        self._shape = None

    @staticmethod
    def _bounds(size, out):
        return [((i * size) // out, -(-((i + 1) * size) // out)) for i in range(out)]

    def _window(self, x):
        """The (kernel, stride) of an average pooling that gives the same windows, where the sizes divide."""
        H, W = x.shape[2:]
        oh, ow = self.output_size
        return ((H // oh, W // ow),) * 2 if H % oh == 0 and W % ow == 0 else None

    def _inference_step(self, x, relu=False):
        x = as_tensor(x, "x", ndim=4)
        window = self._window(x)
        return None if window is None else pool_ops._prepare_pool(x, *window, 0, False, True, 2)

    def forward(self, x):
        x = as_tensor(x, "x", ndim=4)
        N, C, H, W = x.shape
        if H == 0 or W == 0:  # the windows' means would be NaN
            raise ValueError(f"x must have non-empty planes to average, got shape {x.shape}")
        oh, ow = self.output_size
        window = self._window(x)
        if window is not None:
            y = F.avg_pool2d(x, *window)
        else:
            y = np.empty((N, C, oh, ow), x.dtype)
            for i, (h0, h1) in enumerate(self._bounds(H, oh)):
                for j, (w0, w1) in enumerate(self._bounds(W, ow)):
                    y[:, :, i, j] = x[:, :, h0:h1, w0:w1].mean(axis=(2, 3), dtype=x.dtype)
        self._shape = x.shape if self._keeps() else None
        return y

    def backward(self, dy, input_grad=True):
        N, C, H, W = self._saved(self._shape, "input shape")
        oh, ow = self.output_size
        dy = as_tensor(dy, "dy", ndim=4)
        if dy.shape != (N, C, oh, ow):
            raise ValueError(f"dy must have shape {(N, C, oh, ow)}, got {dy.shape}")
        dx = np.zeros((N, C, H, W), dy.dtype)
        for i, (h0, h1) in enumerate(self._bounds(H, oh)):
            for j, (w0, w1) in enumerate(self._bounds(W, ow)):
                dx[:, :, h0:h1, w0:w1] += (dy[:, :, i, j] / ((h1 - h0) * (w1 - w0)))[:, :, None, None]
        return dx

    def _release(self):
        self._shape = None

    def extra_repr(self):
        return f"output_size={self.output_size}"


class GlobalAvgPool2d(AdaptiveAvgPool2d):
    """Mean over each channel's whole plane: (N, C, H, W) -> (N, C, 1, 1)."""

    def __init__(self):
        super().__init__(1)
