"""Max and average pooling against the float64 reference: values, argmax, NaN, ties, ceil_mode, gradients, threads,
bad input."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import convcore as cc
from gradcheck import numerical_grad, relative_error
from reference import pool as ref

F = cc.functional

# (shape, kernel, stride, padding, ceil_mode)
CASES = [
    ((2, 3, 8, 8), 2, None, 0, False),
    ((2, 3, 7, 9), 2, 2, 0, False),
    ((2, 3, 7, 9), 2, 2, 0, True),
    ((1, 4, 11, 11), 3, 2, 1, False),
    ((1, 4, 11, 11), 3, 2, 1, True),
    ((2, 2, 10, 7), (3, 2), (2, 1), (1, 0), True),
    ((1, 2, 9, 9), 2, 3, 0, False),          # stride > kernel
    ((3, 2, 1, 1), 1, 1, 0, False),          # 1x1 image
    ((1, 1, 2, 2), 3, 1, 1, False),          # window larger than the image
    ((0, 3, 4, 4), 2, 2, 0, False),          # empty batch
    ((2, 3, 6, 6), (1, 3), 1, (0, 1), True),
]


def _x(rng, shape, integer=False, dtype=np.float32):
    return (rng.integers(-4, 5, shape) if integer else rng.standard_normal(shape)).astype(dtype)


@pytest.mark.parametrize("shape,k,s,p,ceil", CASES, ids=str)
def test_max_pool_matches_reference(rng, shape, k, s, p, ceil, nthreads):
    x = _x(rng, shape, integer=True)  # many ties: the first maximum must win
    y, idx = F.max_pool2d(x, k, s, p, ceil, return_indices=True)
    ey, eidx = ref.max_pool2d(x, k, s, p, ceil)
    assert np.array_equal(y, ey) and np.array_equal(idx, eidx)
    dy = _x(rng, y.shape, integer=True)
    dx = F.max_pool2d_backward(dy, idx, x.shape, k, s, p, ceil)
    assert np.array_equal(dx, ref.max_pool2d_backward(dy, eidx, x.shape))


@pytest.mark.parametrize("count_include_pad", [True, False])
@pytest.mark.parametrize("shape,k,s,p,ceil", CASES, ids=str)
def test_avg_pool_matches_reference(rng, shape, k, s, p, ceil, count_include_pad, nthreads):
    x = _x(rng, shape, integer=True)
    y = F.avg_pool2d(x, k, s, p, ceil, count_include_pad)
    assert np.array_equal(y, ref.avg_pool2d(x, k, s, p, ceil, count_include_pad).astype(np.float32))
    dy = _x(rng, y.shape)
    dx = F.avg_pool2d_backward(dy, x.shape, k, s, p, ceil, count_include_pad)
    np.testing.assert_allclose(dx, ref.avg_pool2d_backward(dy, x.shape, k, s, p, ceil, count_include_pad),
                               rtol=1e-6, atol=1e-6)


@given(n=st.integers(0, 2), c=st.integers(1, 3), h=st.integers(1, 10), w=st.integers(1, 10),
       kh=st.integers(1, 4), kw=st.integers(1, 4), sh=st.integers(1, 4), sw=st.integers(1, 4),
       ph=st.integers(0, 2), pw=st.integers(0, 2), ceil=st.booleans(), include=st.booleans(),
       seed=st.integers(0, 2**32 - 1))
def test_pool_property_exact(n, c, h, w, kh, kw, sh, sw, ph, pw, ceil, include, seed):
    if 2 * ph > kh or 2 * pw > kw or kh > h + 2 * ph or kw > w + 2 * pw:
        return  # rejected options are covered by the bad-input tests
    rng = np.random.default_rng(seed)
    x = _x(rng, (n, c, h, w), integer=True)
    args = ((kh, kw), (sh, sw), (ph, pw), ceil)
    y, idx = F.max_pool2d(x, *args, return_indices=True)
    ey, eidx = ref.max_pool2d(x, *args)
    assert np.array_equal(y, ey) and np.array_equal(idx, eidx)
    assert np.isfinite(y).all()  # ceil_mode never produces a window entirely in the padding
    dy = _x(rng, y.shape, integer=True)
    assert np.array_equal(F.max_pool2d_backward(dy, idx, x.shape, *args), ref.max_pool2d_backward(dy, eidx, x.shape))
    ya = F.avg_pool2d(x, *args, count_include_pad=include)
    assert np.array_equal(ya, ref.avg_pool2d(x, *args, count_include_pad=include).astype(np.float32))
    dxa = F.avg_pool2d_backward(dy, x.shape, *args, count_include_pad=include)
    np.testing.assert_allclose(dxa, ref.avg_pool2d_backward(dy, x.shape, *args, count_include_pad=include),
                               rtol=1e-6, atol=1e-6)


def test_nan_propagates_and_ties_take_the_first():
    x = np.array([[[[1, 5, 5, 0], [5, 2, np.nan, 3], [7, 7, 1, 1], [7, 7, 1, 1]]]], np.float32)
    y, idx = F.max_pool2d(x, 2, return_indices=True)
    assert y[0, 0, 0, 0] == 5 and idx[0, 0, 0, 0] == 1           # first of three 5s
    assert np.isnan(y[0, 0, 0, 1]) and idx[0, 0, 0, 1] == 6      # NaN wins
    assert y[0, 0, 1, 0] == 7 and idx[0, 0, 1, 0] == 8
    assert np.isnan(F.avg_pool2d(x, 2)[0, 0, 0, 1])


def test_float64_gradcheck(rng):
    x = rng.standard_normal((2, 2, 6, 5))  # distinct values: max is differentiable
    for k, s, p, ceil in [(2, 2, 0, False), (3, 2, 1, True), ((2, 3), 1, (1, 1), False)]:
        y, idx = F.max_pool2d(x, k, s, p, ceil, return_indices=True)
        dy = rng.standard_normal(y.shape)
        num = numerical_grad(lambda v: F.max_pool2d(v, k, s, p, ceil), x, dy)
        assert relative_error(F.max_pool2d_backward(dy, idx, x.shape, k, s, p, ceil), num) < 1e-7
        for include in (True, False):
            dy = rng.standard_normal(F.avg_pool2d(x, k, s, p, ceil, include).shape)
            num = numerical_grad(lambda v: F.avg_pool2d(v, k, s, p, ceil, include), x, dy)
            assert relative_error(F.avg_pool2d_backward(dy, x.shape, k, s, p, ceil, include), num) < 1e-7


def test_pool1d_matches_2d_on_one_row(rng):
    x = rng.standard_normal((2, 3, 13)).astype(np.float32)
    for k, s, p, ceil in [(2, None, 0, False), (3, 2, 1, True), (4, 1, 2, False)]:
        y, idx = F.max_pool1d(x, k, s, p, ceil, return_indices=True)
        s2 = None if s is None else (1, s)
        y2, idx2 = F.max_pool2d(x[:, :, None], (1, k), s2, (0, p), ceil, return_indices=True)
        assert np.array_equal(y, y2[:, :, 0]) and np.array_equal(idx, idx2[:, :, 0])
        dy = rng.standard_normal(y.shape).astype(np.float32)
        assert np.array_equal(F.max_pool1d_backward(dy, idx, x.shape, k, s, p, ceil),
                              F.max_pool2d_backward(dy[:, :, None], idx2, (2, 3, 1, 13), (1, k), s2, (0, p), ceil)[:, :, 0])
        ya = F.avg_pool1d(x, k, s, p, ceil, False)
        assert np.array_equal(ya, F.avg_pool2d(x[:, :, None], (1, k), s2, (0, p), ceil, False)[:, :, 0])
        assert F.avg_pool1d_backward(dy, x.shape, k, s, p, ceil, False).shape == x.shape


def test_non_contiguous_input_and_threads(rng):
    x = rng.standard_normal((4, 8, 16, 18)).astype(np.float32)
    xt = np.asfortranarray(x)
    results = []
    for n in (1, 2, 3):
        with cc.threads(n):
            y, idx = F.max_pool2d(xt, 3, 2, 1, return_indices=True)
            ya = F.avg_pool2d(xt, 3, 2, 1, True, False)
            results.append((y, idx, ya, F.max_pool2d_backward(y, idx, x.shape, 3, 2, 1),
                            F.avg_pool2d_backward(ya, x.shape, 3, 2, 1, True, False)))
    assert np.array_equal(results[0][0], F.max_pool2d(x, 3, 2, 1))
    for other in results[1:]:
        for a, b in zip(results[0], other):
            assert np.array_equal(a, b)


def test_matches_torch(rng):
    torch = pytest.importorskip("torch")
    x = rng.standard_normal((2, 3, 9, 11))
    tx = torch.tensor(x, requires_grad=True)
    for k, s, p, ceil in [(2, 2, 0, False), (3, 2, 1, True), ((3, 2), (2, 1), (1, 1), True)]:
        ty, tidx = torch.nn.functional.max_pool2d(tx, k, s, p, ceil_mode=ceil, return_indices=True)
        y, idx = F.max_pool2d(x, k, s, p, ceil, return_indices=True)
        assert np.array_equal(y, ty.detach().numpy()) and np.array_equal(idx, tidx.numpy())
        for include in (True, False):
            ta = torch.nn.functional.avg_pool2d(tx, k, s, p, ceil_mode=ceil, count_include_pad=include)
            dy = rng.standard_normal(ta.shape)
            (g,) = torch.autograd.grad(ta, tx, torch.tensor(dy))
            np.testing.assert_allclose(F.avg_pool2d(x, k, s, p, ceil, include), ta.detach().numpy(), rtol=1e-12)
            np.testing.assert_allclose(F.avg_pool2d_backward(dy, x.shape, k, s, p, ceil, include), g.numpy(),
                                       rtol=1e-12, atol=1e-14)


X = np.zeros((2, 3, 8, 8), np.float32)
BAD = [
    (lambda: F.max_pool2d(X[0], 2), ValueError, r"x must be 4-D, got shape \(3, 8, 8\)"),
    (lambda: F.max_pool2d(X.astype(np.int64), 2), TypeError, r"x has dtype int64"),
    (lambda: F.max_pool2d(X, 0), ValueError, r"kernel_size must be >= 1, got 0"),
    (lambda: F.max_pool2d(X, 2, stride=0), ValueError, r"stride must be >= 1, got 0"),
    (lambda: F.avg_pool2d(X, 2, padding=-1), ValueError, r"padding must be >= 0, got -1"),
    (lambda: F.max_pool2d(X, 3, padding=2), ValueError, r"padding must be at most half the kernel size"),
    (lambda: F.max_pool2d(X, 9), ValueError, r"kernel_size=9 .* larger than the input \(2, 3, 8, 8\)"),
    (lambda: F.max_pool2d(X, (2, 2, 2)), ValueError, r"kernel_size must be an int or a sequence of 2 ints"),
    (lambda: F.max_pool2d(X, 2.0), TypeError, r"kernel_size must be an int or a sequence of 2 ints, got 2.0"),
    (lambda: F.max_pool2d(X, 2, ceil_mode="yes"), TypeError, r"ceil_mode must be a bool"),
    (lambda: F.max_pool1d(X, 2), ValueError, r"x must be 3-D"),
    (lambda: F.avg_pool2d_backward(np.zeros((2, 3, 3, 4), np.float32), X.shape, 2), ValueError,
     r"dy must have the pooled output's shape \(2, 3, 4, 4\), got \(2, 3, 3, 4\)"),
    (lambda: F.avg_pool2d_backward(np.zeros((2, 3, 4, 4), np.float32), (2, 3, 8), 2), ValueError,
     r"input_shape must be a sequence of 4 non-negative ints"),
    (lambda: F.max_pool2d_backward(np.zeros((2, 3, 4, 4), np.float32), np.zeros((2, 3, 4, 4), np.int32),
                                   X.shape, 2), ValueError, r"indices must be the int64 array"),
    (lambda: F.max_pool2d_backward(np.zeros((2, 3, 4, 4), np.float32), np.full((2, 3, 4, 4), 64),
                                   X.shape, 2), ValueError, r"indices must lie in \[0, 64\)"),
    (lambda: F.max_pool2d_backward(np.zeros((2, 3, 4, 4), np.float32), np.full((2, 3, 4, 4), -1),
                                   X.shape, 2), ValueError, r"indices must lie in \[0, 64\)"),
]


@pytest.mark.parametrize("call,exc,match", BAD, ids=[str(i) for i in range(len(BAD))])
def test_rejects_bad_input(call, exc, match):
    with pytest.raises(exc, match=match):
        call()
