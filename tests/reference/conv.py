"""float64 numpy reference for 2-D convolution (cross-correlation, NCHW) and its three gradients.

Windows are strided slices of the zero-padded input, one (r, s) kernel tap at a time.
"""
import numpy as np


def _pair(v):
    return tuple(v) if isinstance(v, (tuple, list)) else (v, v)


def _taps(x_shape, w_shape, stride, padding, dilation):
    """Yields (r, s, slice of the padded input that tap (r, s) reads for every output pixel)."""
    _, _, H, W = x_shape
    _, _, R, S = w_shape
    (sh, sw), (ph, pw), (dh, dw) = _pair(stride), _pair(padding), _pair(dilation)
    P = (H + 2 * ph - dh * (R - 1) - 1) // sh + 1
    Q = (W + 2 * pw - dw * (S - 1) - 1) // sw + 1
    for r in range(R):
        for s in range(S):
            yield r, s, (slice(r * dh, r * dh + sh * (P - 1) + 1, sh), slice(s * dw, s * dw + sw * (Q - 1) + 1, sw))


def _pad(x, padding):
    ph, pw = _pair(padding)
    return np.pad(np.asarray(x, np.float64), ((0, 0), (0, 0), (ph, ph), (pw, pw)))


def conv2d(x, w, b=None, stride=1, padding=0, dilation=1, groups=1):
    xp, w = _pad(x, padding), np.asarray(w, np.float64)
    K, Cg = w.shape[:2]
    Kg = K // groups
    y = None
    for r, s, (hs, ws) in _taps(x.shape, w.shape, stride, padding, dilation):
        win = xp[:, :, hs, ws]  # (N, C, P, Q)
        if y is None:
            y = np.zeros((x.shape[0], K, win.shape[2], win.shape[3]))
        for g in range(groups):
            y[:, g * Kg:(g + 1) * Kg] += np.einsum("ncpq,kc->nkpq", win[:, g * Cg:(g + 1) * Cg],
                                                   w[g * Kg:(g + 1) * Kg, :, r, s])
    if b is not None:
        y += np.asarray(b, np.float64)[None, :, None, None]
    return y


def conv2d_backward(dy, x, w, stride=1, padding=0, dilation=1, groups=1):
    """(dx, dw, db) of sum(conv2d(x, w, b) * dy)."""
    xp, w, dy = _pad(x, padding), np.asarray(w, np.float64), np.asarray(dy, np.float64)
    K, Cg = w.shape[:2]
    Kg = K // groups
    dxp, dw = np.zeros_like(xp), np.zeros_like(w)
    for r, s, (hs, ws) in _taps(x.shape, w.shape, stride, padding, dilation):
        for g in range(groups):
            ks, cs = slice(g * Kg, (g + 1) * Kg), slice(g * Cg, (g + 1) * Cg)
            dxp[:, cs, hs, ws] += np.einsum("nkpq,kc->ncpq", dy[:, ks], w[ks, :, r, s])
            dw[ks, :, r, s] = np.einsum("nkpq,ncpq->kc", dy[:, ks], xp[:, cs, hs, ws])
    ph, pw = _pair(padding)
    dx = dxp[:, :, ph:ph + x.shape[2], pw:pw + x.shape[3]]
    return dx, dw, dy.sum(axis=(0, 2, 3))
