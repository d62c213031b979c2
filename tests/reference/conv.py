"""float64 numpy reference for 2-D convolution (NCHW) and its three gradients; conv1d is H == 1.

Padded input + strided windows: cols[n, g, c, r, s, p, q] = xpad[n, g*Cg + c, p*sh + r*dh, q*sw + s*dw].
"""
import numpy as np


def _out_size(size, kernel, stride, padding, dilation):
    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


def _windows(xpad, R, S, P, Q, stride, dilation):
    """xpad (N, C, Hp, Wp) -> (N, C, R, S, P, Q) strided windows."""
    sh, sw = stride
    dh, dw = dilation
    N, C = xpad.shape[:2]
    cols = np.empty((N, C, R, S, P, Q))
    for r in range(R):
        for s in range(S):
            cols[:, :, r, s] = xpad[:, :, r * dh: r * dh + sh * (P - 1) + 1: sh, s * dw: s * dw + sw * (Q - 1) + 1: sw]
    return cols


def _geometry(x_shape, w_shape, stride, padding, dilation):
    N, C, H, W = x_shape
    K, Cg, R, S = w_shape
    P = _out_size(H, R, stride[0], padding[0], dilation[0])
    Q = _out_size(W, S, stride[1], padding[1], dilation[1])
    return N, C, H, W, K, Cg, R, S, P, Q


def conv2d(x, w, b=None, stride=(1, 1), padding=(0, 0), dilation=(1, 1), groups=1):
    """x (N, C, H, W), w (K, C/groups, R, S), b (K,) or None -> (N, K, P, Q), float64."""
    x = np.asarray(x, np.float64)
    w = np.asarray(w, np.float64)
    N, C, H, W, K, Cg, R, S, P, Q = _geometry(x.shape, w.shape, stride, padding, dilation)
    xpad = np.pad(x, ((0, 0), (0, 0), (padding[0],) * 2, (padding[1],) * 2))
    cols = _windows(xpad, R, S, P, Q, stride, dilation).reshape(N, groups, Cg, R, S, P, Q)
    wg = w.reshape(groups, K // groups, Cg, R, S)
    y = np.einsum("ngcrspq,gkcrs->ngkpq", cols, wg).reshape(N, K, P, Q)
    if b is not None:
        y = y + np.asarray(b, np.float64)[None, :, None, None]
    return y


def conv2d_backward(dy, x, w, stride=(1, 1), padding=(0, 0), dilation=(1, 1), groups=1):
    """Gradients of conv2d: returns (dx (N, C, H, W), dw (K, C/groups, R, S), db (K,)), float64."""
    dy = np.asarray(dy, np.float64)
    x = np.asarray(x, np.float64)
    w = np.asarray(w, np.float64)
    N, C, H, W, K, Cg, R, S, P, Q = _geometry(x.shape, w.shape, stride, padding, dilation)
    sh, sw = stride
    dh, dw_ = dilation
    ph, pw = padding
    dyg = dy.reshape(N, groups, K // groups, P, Q)
    wg = w.reshape(groups, K // groups, Cg, R, S)
    xpad = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    cols = _windows(xpad, R, S, P, Q, stride, dilation).reshape(N, groups, Cg, R, S, P, Q)
    dw = np.einsum("ngkpq,ngcrspq->gkcrs", dyg, cols).reshape(K, Cg, R, S)
    dxpad = np.zeros_like(xpad).reshape(N, groups, Cg, H + 2 * ph, W + 2 * pw)
    for r in range(R):
        for s in range(S):
            dxpad[:, :, :, r * dh: r * dh + sh * (P - 1) + 1: sh, s * dw_: s * dw_ + sw * (Q - 1) + 1: sw] += \
                np.einsum("ngkpq,gkc->ngcpq", dyg, wg[:, :, :, r, s])
    dx = dxpad.reshape(N, C, H + 2 * ph, W + 2 * pw)[:, :, ph: ph + H, pw: pw + W]
    db = dy.sum(axis=(0, 2, 3))
    return dx, dw, db


def conv1d(x, w, b=None, stride=1, padding=0, dilation=1, groups=1):
    """x (N, C, L), w (K, C/groups, kernel) -> (N, K, L_out), float64."""
    y = conv2d(np.asarray(x)[:, :, None, :], np.asarray(w)[:, :, None, :], b, (1, stride), (0, padding),
               (1, dilation), groups)
    return y[:, :, 0, :]


def conv1d_backward(dy, x, w, stride=1, padding=0, dilation=1, groups=1):
    dx, dw, db = conv2d_backward(np.asarray(dy)[:, :, None, :], np.asarray(x)[:, :, None, :],
                                 np.asarray(w)[:, :, None, :], (1, stride), (0, padding), (1, dilation), groups)
    return dx[:, :, 0, :], dw[:, :, 0, :], db
