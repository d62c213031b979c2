"""float64 numpy reference for max and average pooling on NCHW (PyTorch semantics), forward and backward.

Loops over output positions; each window is clipped to the input (padding is -inf for max and excluded or
counted for avg), and ceil_mode never starts a window in the right padding.
"""
import numpy as np


def _pair(v):
    return tuple(v) if isinstance(v, (tuple, list)) else (v, v)


def _out(size, k, s, p, ceil_mode):
    span = size + 2 * p - k
    out = (-(-span // s) if ceil_mode else span // s) + 1
    if ceil_mode and (out - 1) * s >= size + p:
        out -= 1
    return out


def _windows(shape, kernel_size, stride, padding, ceil_mode):
    """Yields (p, q, rows, cols, padded window element count) for every output position."""
    _, _, H, W = shape
    (kh, kw), (ph, pw) = _pair(kernel_size), _pair(padding)
    sh, sw = _pair(kernel_size if stride is None else stride)
    for p in range(_out(H, kh, sh, ph, ceil_mode)):
        for q in range(_out(W, kw, sw, pw, ceil_mode)):
            h0, w0 = p * sh - ph, q * sw - pw
            h1, w1 = min(h0 + kh, H + ph), min(w0 + kw, W + pw)
            padded = (h1 - h0) * (w1 - w0)
            yield p, q, slice(max(h0, 0), min(h1, H)), slice(max(w0, 0), min(w1, W)), padded


def max_pool2d(x, kernel_size, stride=None, padding=0, ceil_mode=False):
    """(y, indices): the first maximum of each window wins; a NaN wins over numbers (the last NaN, as PyTorch)."""
    x = np.asarray(x, np.float64)
    N, C, H, W = x.shape
    wins = list(_windows(x.shape, kernel_size, stride, padding, ceil_mode))
    P, Q = wins[-1][0] + 1, wins[-1][1] + 1
    y, idx = np.zeros((N, C, P, Q)), np.zeros((N, C, P, Q), np.int64)
    cols = np.arange(W)
    for p, q, hs, ws, _ in wins:
        vals = x[:, :, hs, ws].reshape(N, C, (hs.stop - hs.start) * (ws.stop - ws.start))
        flat = (np.arange(H)[hs][:, None] * W + cols[ws][None, :]).reshape(-1)
        nan = np.isnan(vals)
        last_nan = vals.shape[2] - 1 - np.argmax(nan[:, :, ::-1], axis=2)
        pick = np.where(nan.any(axis=2), last_nan, np.argmax(vals, axis=2))
        y[:, :, p, q] = np.take_along_axis(vals, pick[:, :, None], 2)[:, :, 0]
        idx[:, :, p, q] = flat[pick]
    return y, idx


def max_pool2d_backward(dy, indices, input_shape):
    N, C, H, W = input_shape
    dx = np.zeros((N * C, H * W))
    PQ = dy.shape[2] * dy.shape[3]
    flat_dy, flat_idx = np.asarray(dy, np.float64).reshape(N * C, PQ), indices.reshape(N * C, PQ)
    for plane in range(N * C):
        np.add.at(dx[plane], flat_idx[plane], flat_dy[plane])
    return dx.reshape(input_shape)


def avg_pool2d(x, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True):
    x = np.asarray(x, np.float64)
    wins = list(_windows(x.shape, kernel_size, stride, padding, ceil_mode))
    y = np.zeros((*x.shape[:2], wins[-1][0] + 1, wins[-1][1] + 1))
    for p, q, hs, ws, padded in wins:
        inside = x[:, :, hs, ws]
        divisor = padded if count_include_pad else inside.shape[2] * inside.shape[3]
        y[:, :, p, q] = inside.sum(axis=(2, 3)) / divisor
    return y


def avg_pool2d_backward(dy, input_shape, kernel_size, stride=None, padding=0, ceil_mode=False,
                        count_include_pad=True):
    dy = np.asarray(dy, np.float64)
    dx = np.zeros(input_shape)
    for p, q, hs, ws, padded in _windows(input_shape, kernel_size, stride, padding, ceil_mode):
        count = (hs.stop - hs.start) * (ws.stop - ws.start)
        dx[:, :, hs, ws] += (dy[:, :, p, q] / (padded if count_include_pad else count))[:, :, None, None]
    return dx
