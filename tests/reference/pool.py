"""Reference max and average pooling on (N, C, H, W) in numpy (never imports convcore), PyTorch semantics.

Computes in the input's dtype (float64 normally; float32 reproduces the float32 kernels' rounding on integer
data). Windows are scanned row-major; first max wins; a NaN takes the max (the last NaN's index is kept).
"""
import numpy as np


def output_size(n, k, s, p, ceil_mode):
    # PyTorch's pooling_output_shape: (span + (s - 1 if ceil_mode else 0)) // s + 1 with floor division, so in
    # ceil_mode a window longer than the padded input by less than the stride still gives one (cut) window
    span = n + 2 * p - k
    if ceil_mode:
        out = (span + s - 1) // s + 1
        if (out - 1) * s >= n + p:
            out -= 1
        return max(out, 0)
    return max(span // s + 1, 0)


def _pair(v):
    return tuple(v) if isinstance(v, (tuple, list)) else (v, v)


def _windows(in_hw, kernel, stride, padding, ceil_mode):
    """Yields (oh, ow, ih0, ih1, iw0, iw1, padded_count): the window clipped to the input, and its size
    clipped to the padded input (PyTorch's count_include_pad divisor)."""
    (H, W), (KH, KW), (SH, SW), (PH, PW) = in_hw, _pair(kernel), _pair(stride), _pair(padding)
    OH, OW = output_size(H, KH, SH, PH, ceil_mode), output_size(W, KW, SW, PW, ceil_mode)
    for oh in range(OH):
        h0 = oh * SH - PH
        h_end = min(h0 + KH, H + PH)
        for ow in range(OW):
            w0 = ow * SW - PW
            w_end = min(w0 + KW, W + PW)
            yield oh, ow, max(h0, 0), min(h_end, H), max(w0, 0), min(w_end, W), (h_end - h0) * (w_end - w0)


def out_shape(shape, kernel, stride, padding, ceil_mode):
    (KH, KW), (SH, SW), (PH, PW) = _pair(kernel), _pair(stride), _pair(padding)
    return (shape[0], shape[1], output_size(shape[2], KH, SH, PH, ceil_mode),
            output_size(shape[3], KW, SW, PW, ceil_mode))


def max_pool2d(x, kernel, stride, padding=0, ceil_mode=False):
    """(y, indices): indices are int64 flat positions ih*W + iw in each plane."""
    N, C, H, W = x.shape
    shape = out_shape(x.shape, kernel, stride, padding, ceil_mode)
    y = np.empty(shape, x.dtype)
    indices = np.empty(shape, np.int64)
    for oh, ow, h0, h1, w0, w1, _ in _windows((H, W), kernel, stride, padding, ceil_mode):
        best = np.full((N, C), -np.inf, x.dtype)
        best_index = np.full((N, C), h0 * W + w0, np.int64)
        for ih in range(h0, h1):
            for iw in range(w0, w1):
                v = x[:, :, ih, iw]
                take = (v > best) | np.isnan(v)
                best = np.where(take, v, best)
                best_index = np.where(take, ih * W + iw, best_index)
        y[:, :, oh, ow] = best
        indices[:, :, oh, ow] = best_index
    return y, indices


def max_pool2d_backward(dy, indices, input_shape):
    N, C, H, W = input_shape
    dx = np.zeros((N * C, H * W), dy.dtype)
    outputs = dy.shape[2] * dy.shape[3]
    flat_dy, flat_idx = dy.reshape(N * C, outputs), indices.reshape(N * C, outputs)
    for p in range(N * C):
        for o in range(flat_dy.shape[1]):
            dx[p, flat_idx[p, o]] += flat_dy[p, o]
    return dx.reshape(input_shape)


def avg_pool2d(x, kernel, stride, padding=0, ceil_mode=False, count_include_pad=True):
    N, C, H, W = x.shape
    y = np.empty(out_shape(x.shape, kernel, stride, padding, ceil_mode), x.dtype)
    for oh, ow, h0, h1, w0, w1, padded in _windows((H, W), kernel, stride, padding, ceil_mode):
        total = np.zeros((N, C), x.dtype)
        for ih in range(h0, h1):
            for iw in range(w0, w1):
                total = total + x[:, :, ih, iw]
        divisor = padded if count_include_pad else (h1 - h0) * (w1 - w0)
        y[:, :, oh, ow] = total / x.dtype.type(divisor)
    return y


def avg_pool2d_backward(dy, input_shape, kernel, stride, padding=0, ceil_mode=False, count_include_pad=True):
    dx = np.zeros(input_shape, dy.dtype)
    for oh, ow, h0, h1, w0, w1, padded in _windows(input_shape[2:], kernel, stride, padding, ceil_mode):
        divisor = padded if count_include_pad else (h1 - h0) * (w1 - w0)
        share = dy[:, :, oh, ow] / dy.dtype.type(divisor)
        for ih in range(h0, h1):
            for iw in range(w0, w1):
                dx[:, :, ih, iw] = dx[:, :, ih, iw] + share
    return dx
