"""conv2d / conv1d forward and backward vs the float64 numpy reference, torch, gradcheck; bad-input corpus."""
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

import convcore as cc
import convcore.functional as F
from tests.gradcheck import numerical_grad
from tests.reference import conv as ref

# (x shape, w shape, stride, padding, dilation, groups)
GRID = [
    ((2, 3, 8, 8), (4, 3, 3, 3), (1, 1), (1, 1), (1, 1), 1),
    ((1, 2, 7, 5), (3, 2, 2, 3), (2, 1), (0, 2), (1, 1), 1),        # non-square input and kernel
    ((2, 3, 9, 9), (2, 3, 2, 2), (4, 3), (0, 0), (1, 1), 1),        # stride > kernel
    ((1, 4, 11, 10), (4, 2, 3, 3), (1, 2), (2, 1), (2, 3), 2),      # dilation, groups
    ((2, 6, 6, 7), (6, 1, 3, 3), (1, 1), (1, 1), (1, 1), 6),        # depthwise
    ((2, 4, 5, 5), (8, 1, 3, 1), (2, 2), (1, 0), (1, 1), 4),        # grouped, 2 filters per channel
    ((3, 2, 1, 1), (5, 2, 1, 1), (1, 1), (0, 0), (1, 1), 1),        # 1x1 image, 1x1 kernel
    ((1, 3, 1, 1), (2, 3, 3, 3), (1, 1), (1, 1), (1, 1), 1),        # 1x1 image, padded 3x3 kernel
    ((2, 8, 6, 6), (16, 8, 1, 1), (1, 1), (0, 0), (1, 1), 1),       # 1x1 conv
    ((1, 3, 6, 6), (2, 3, 3, 3), (2, 2), (3, 3), (1, 1), 1),        # padding larger than the kernel reach
    ((0, 3, 5, 5), (4, 3, 3, 3), (1, 1), (1, 1), (1, 1), 1),        # batch 0
]


def _run(x, w, b, stride, padding, dilation, groups):
    y = F.conv2d(x, w, b, stride, padding, dilation, groups)
    dy = np.linspace(-1, 1, y.size).reshape(y.shape).astype(x.dtype)
    grads = F.conv2d_backward(dy, x, w, stride, padding, dilation, groups)
    return y, dy, grads


@pytest.mark.parametrize("dtype, tol", [(np.float64, 1e-12), (np.float32, 2e-5)])
@pytest.mark.parametrize("xs, ws, stride, padding, dilation, groups", GRID)
def test_conv2d_grid_matches_reference(xs, ws, stride, padding, dilation, groups, dtype, tol, rng):
    x = rng.standard_normal(xs).astype(dtype)
    w = rng.standard_normal(ws).astype(dtype)
    b = rng.standard_normal(ws[0]).astype(dtype)
    y, dy, (dx, dw, db) = _run(x, w, b, stride, padding, dilation, groups)
    y_ref = ref.conv2d(x, w, b, stride, padding, dilation, groups)
    dx_ref, dw_ref, db_ref = ref.conv2d_backward(dy, x, w, stride, padding, dilation, groups)
    for got, want in ((y, y_ref), (dx, dx_ref), (dw, dw_ref), (db, db_ref)):
        assert got.dtype == dtype and got.shape == want.shape
        np.testing.assert_allclose(got, want, rtol=tol, atol=tol * max(1.0, float(np.abs(want).max(initial=0))))


@st.composite
def conv_cases(draw):
    groups = draw(st.integers(1, 4))
    C = groups * draw(st.integers(1, 8 // groups))
    K = groups * draw(st.integers(1, 8 // groups))
    H, W = draw(st.integers(1, 17)), draw(st.integers(1, 17))
    R, S = draw(st.integers(1, 5)), draw(st.integers(1, 5))
    stride = (draw(st.integers(1, 4)), draw(st.integers(1, 4)))
    dilation = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    padding = (draw(st.integers(0, 3)), draw(st.integers(0, 3)))
    assume(dilation[0] * (R - 1) < H + 2 * padding[0] and dilation[1] * (S - 1) < W + 2 * padding[1])
    N = draw(st.integers(0, 3))
    return (N, C, H, W), (K, C // groups, R, S), stride, padding, dilation, groups, draw(st.booleans())


@given(case=conv_cases(), seed=st.integers(0, 2**32 - 1))
def test_conv2d_random_shapes_exact_on_integers(case, seed):
    """Integers in [-3, 3] keep every partial sum exact in float32: results equal the float64 reference."""
    xs, ws, stride, padding, dilation, groups, with_bias = case
    rng = np.random.default_rng(seed)
    x = rng.integers(-3, 4, xs).astype(np.float32)
    w = rng.integers(-3, 4, ws).astype(np.float32)
    b = rng.integers(-3, 4, ws[0]).astype(np.float32) if with_bias else None
    y = F.conv2d(x, w, b, stride, padding, dilation, groups)
    assert np.array_equal(y, ref.conv2d(x, w, b, stride, padding, dilation, groups))
    dy = rng.integers(-3, 4, y.shape).astype(np.float32)
    dx, dw, db = F.conv2d_backward(dy, x, w, stride, padding, dilation, groups)
    dx_ref, dw_ref, db_ref = ref.conv2d_backward(dy, x, w, stride, padding, dilation, groups)
    assert np.array_equal(dx, dx_ref) and np.array_equal(dw, dw_ref) and np.array_equal(db, db_ref)


@pytest.mark.parametrize("xs, ws, stride, padding, dilation, groups", [
    ((2, 4, 9), (6, 2, 3), 2, 1, 2, 2),
    ((1, 3, 1), (2, 3, 1), 1, 0, 1, 1),
    ((0, 2, 5), (3, 2, 5), 1, 0, 1, 1),
    ((3, 4, 12), (4, 1, 4), 3, 2, 1, 4),
])
def test_conv1d_exact_on_integers(xs, ws, stride, padding, dilation, groups, rng):
    x = rng.integers(-3, 4, xs).astype(np.float32)
    w = rng.integers(-3, 4, ws).astype(np.float32)
    b = rng.integers(-3, 4, ws[0]).astype(np.float32)
    y = F.conv1d(x, w, b, stride, padding, dilation, groups)
    assert np.array_equal(y, ref.conv1d(x, w, b, stride, padding, dilation, groups))
    dy = rng.integers(-3, 4, y.shape).astype(np.float32)
    got = F.conv1d_backward(dy, x, w, stride, padding, dilation, groups)
    for g, want in zip(got, ref.conv1d_backward(dy, x, w, stride, padding, dilation, groups)):
        assert g.shape == want.shape and np.array_equal(g, want)


def _grad_error(got, numerical):
    """max |got - numerical| over the gradient's scale; element-wise relative error is dominated by the
    central difference's rounding (~1e-16 * |f| / eps) on near-zero elements."""
    if got.size == 0:
        return 0.0
    return float(np.max(np.abs(got - numerical)) / max(float(np.max(np.abs(numerical))), 1.0))


@pytest.mark.parametrize("xs, ws, stride, padding, dilation, groups", [
    ((2, 4, 5, 6), (4, 2, 3, 2), (2, 1), (1, 2), (1, 2), 2),
    ((1, 3, 4, 4), (2, 3, 1, 1), (1, 1), (0, 0), (1, 1), 1),
    ((0, 2, 4, 4), (3, 2, 3, 3), (1, 1), (1, 1), (1, 1), 1),
])
def test_conv2d_gradcheck_float64(xs, ws, stride, padding, dilation, groups, rng):
    x = rng.standard_normal(xs)
    w = rng.standard_normal(ws)
    b = rng.standard_normal(ws[0])
    y = F.conv2d(x, w, b, stride, padding, dilation, groups)
    dy = rng.standard_normal(y.shape)
    dx, dw, db = F.conv2d_backward(dy, x, w, stride, padding, dilation, groups)
    assert _grad_error(dx, numerical_grad(lambda v: F.conv2d(v, w, b, stride, padding, dilation, groups),
                                             x, dy)) <= 1e-7
    assert _grad_error(dw, numerical_grad(lambda v: F.conv2d(x, v, b, stride, padding, dilation, groups),
                                             w, dy)) <= 1e-7
    assert _grad_error(db, numerical_grad(lambda v: F.conv2d(x, w, v, stride, padding, dilation, groups),
                                             b, dy)) <= 1e-7


def test_conv1d_gradcheck_float64(rng):
    x, w, b = rng.standard_normal((2, 2, 7)), rng.standard_normal((3, 2, 3)), rng.standard_normal(3)
    y = F.conv1d(x, w, b, stride=2, padding=1, dilation=2)
    dy = rng.standard_normal(y.shape)
    dx, dw, db = F.conv1d_backward(dy, x, w, stride=2, padding=1, dilation=2)
    assert _grad_error(dx, numerical_grad(lambda v: F.conv1d(v, w, b, 2, 1, 2), x, dy)) <= 1e-7
    assert _grad_error(dw, numerical_grad(lambda v: F.conv1d(x, v, b, 2, 1, 2), w, dy)) <= 1e-7
    assert _grad_error(db, numerical_grad(lambda v: F.conv1d(x, w, v, 2, 1, 2), b, dy)) <= 1e-7


def test_non_contiguous_input(rng):
    base = rng.standard_normal((3, 7, 10, 9)).astype(np.float32)
    x = base[::2, ::2, 1::1, ::-1].transpose(0, 1, 3, 2)  # (2, 4, 9, 9), negative and odd strides
    w = rng.standard_normal((6, 4, 3, 3)).astype(np.float32)[:, :, ::-1, :]
    assert not x.flags.c_contiguous and not w.flags.c_contiguous
    y = F.conv2d(x, w, None, 2, 1)
    np.testing.assert_array_equal(y, F.conv2d(np.ascontiguousarray(x), np.ascontiguousarray(w), None, 2, 1))
    dy = rng.standard_normal(y.shape).astype(np.float32)[..., ::-1]
    got = F.conv2d_backward(dy, x, w, 2, 1)
    want = F.conv2d_backward(np.ascontiguousarray(dy), np.ascontiguousarray(x), np.ascontiguousarray(w), 2, 1)
    for g, e in zip(got, want):
        np.testing.assert_array_equal(g, e)


def test_optional_gradients_and_batch_zero(rng):
    x = rng.standard_normal((0, 3, 6, 6)).astype(np.float32)
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    y = F.conv2d(x, w, np.ones(4, np.float32), padding=1)
    assert y.shape == (0, 4, 6, 6) and y.dtype == np.float32
    dx, dw, db = F.conv2d_backward(y, x, w, padding=1)
    assert dx.shape == x.shape and np.array_equal(dw, np.zeros_like(w)) and np.array_equal(db, np.zeros(4))
    x = rng.standard_normal((2, 3, 6, 6)).astype(np.float32)
    dy = rng.standard_normal((2, 4, 4, 4)).astype(np.float32)
    dx, dw, db = F.conv2d_backward(dy, x, w, input_grad=False, bias_grad=False)
    assert dx is None and db is None
    np.testing.assert_array_equal(dw, F.conv2d_backward(dy, x, w)[1])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_fused_relu_equals_relu_of_conv(dtype, rng):
    x = rng.standard_normal((2, 4, 7, 6)).astype(dtype)
    x[0, 0, 0, 0] = np.nan  # NaN propagates through the fused ReLU as through F.relu
    w = rng.standard_normal((6, 2, 3, 3)).astype(dtype)
    b = rng.standard_normal(6).astype(dtype)
    kw = dict(stride=(1, 2), padding=1, groups=2)
    y = F.conv2d(x, w, b, activation="relu", **kw)
    assert np.isnan(y).any() and (y == 0).any() and (y > 0).any()
    np.testing.assert_array_equal(y, F.relu(F.conv2d(x, w, b, **kw)))
    x1, w1 = x[:, :, 1], w[:, :, 1]
    np.testing.assert_array_equal(F.conv1d(x1, w1, b, activation="relu", groups=2),
                                  F.relu(F.conv1d(x1, w1, b, groups=2)))


def test_thread_count_is_bitwise_irrelevant(rng):
    # 3 x 8 x 16 x 16 output, 8 x 3 x 3 taps: above the serial threshold, so the threads really split it
    x = rng.standard_normal((3, 8, 16, 16)).astype(np.float32)
    w = rng.standard_normal((8, 4, 3, 3)).astype(np.float32)
    b = rng.standard_normal(8).astype(np.float32)
    dy = rng.standard_normal((3, 8, 16, 16)).astype(np.float32)
    results = []
    for n in (1, 2, 3):
        with cc.threads(n):
            results.append((F.conv2d(x, w, b, 1, 1, 1, 2),) + F.conv2d_backward(dy, x, w, 1, 1, 1, 2))
    for other in results[1:]:
        for a, c in zip(results[0], other):
            assert np.array_equal(a, c)


def test_concurrent_python_threads_match_serial(rng):
    """8 Python threads calling conv forward and backward at once (GIL released) get the serial results."""
    x = rng.standard_normal((2, 4, 9, 9)).astype(np.float32)
    w = rng.standard_normal((6, 4, 3, 3)).astype(np.float32)
    b = rng.standard_normal(6).astype(np.float32)
    dy = rng.standard_normal((2, 6, 5, 5)).astype(np.float32)
    want = (F.conv2d(x, w, b, 2, 1),) + F.conv2d_backward(dy, x, w, 2, 1)

    def worker(_):
        for _ in range(50):
            got = (F.conv2d(x, w, b, 2, 1),) + F.conv2d_backward(dy, x, w, 2, 1)
            if not all(np.array_equal(g, e) for g, e in zip(got, want)):
                return False
        return True

    with ThreadPoolExecutor(max_workers=8) as pool:
        assert all(pool.map(worker, range(8)))


@pytest.mark.parametrize("xs, ws, stride, padding, dilation, groups", [
    ((2, 4, 9, 8), (6, 2, 3, 2), (2, 1), (1, 2), (1, 2), 2),
    ((2, 6, 7, 7), (6, 1, 3, 3), 1, 1, 1, 6),
    ((1, 3, 5, 5), (2, 3, 2, 2), 3, 0, 1, 1),
])
def test_conv2d_matches_torch(xs, ws, stride, padding, dilation, groups, rng):
    torch = pytest.importorskip("torch")
    x, w, b = (rng.standard_normal(s).astype(np.float32) for s in (xs, ws, (ws[0],)))
    tx, tw, tb = (torch.tensor(a, requires_grad=True) for a in (x, w, b))
    ty = torch.nn.functional.conv2d(tx, tw, tb, stride, padding, dilation, groups)
    y = F.conv2d(x, w, b, stride, padding, dilation, groups)
    np.testing.assert_allclose(y, ty.detach().numpy(), rtol=1e-5, atol=1e-5)
    dy = rng.standard_normal(y.shape).astype(np.float32)
    ty.backward(torch.tensor(dy))
    for got, t in zip(F.conv2d_backward(dy, x, w, stride, padding, dilation, groups), (tx, tw, tb)):
        np.testing.assert_allclose(got, t.grad.numpy(), rtol=1e-4, atol=1e-4)


def test_conv1d_matches_torch(rng):
    torch = pytest.importorskip("torch")
    x, w, b = (rng.standard_normal(s).astype(np.float32) for s in ((3, 4, 20), (6, 2, 4), (6,)))
    tx, tw, tb = (torch.tensor(a, requires_grad=True) for a in (x, w, b))
    ty = torch.nn.functional.conv1d(tx, tw, tb, stride=3, padding=2, dilation=2, groups=2)
    y = F.conv1d(x, w, b, stride=3, padding=2, dilation=2, groups=2)
    np.testing.assert_allclose(y, ty.detach().numpy(), rtol=1e-5, atol=1e-5)
    dy = rng.standard_normal(y.shape).astype(np.float32)
    ty.backward(torch.tensor(dy))
    for got, t in zip(F.conv1d_backward(dy, x, w, 3, 2, 2, 2), (tx, tw, tb)):
        np.testing.assert_allclose(got, t.grad.numpy(), rtol=1e-4, atol=1e-4)


_x = np.zeros((2, 4, 8, 8), np.float32)
_w = np.zeros((6, 4, 3, 3), np.float32)
_dy = np.zeros((2, 6, 6, 6), np.float32)
_x1 = np.zeros((2, 4, 8), np.float32)
_w1 = np.zeros((6, 4, 3), np.float32)

BAD_CALLS = [
    (lambda: F.conv2d(None, _w), TypeError, "x must be a numpy array, got None"),
    (lambda: F.conv2d(_x.tolist(), _w), TypeError, "x must be a numpy array, got list"),
    (lambda: F.conv2d(_x, None), TypeError, "w must be a numpy array"),
    (lambda: F.conv2d(_x.astype(np.int32), _w), TypeError, "x has dtype int32"),
    (lambda: F.conv2d(_x, _w.astype(np.float64)), TypeError, "w has dtype float64 but must match"),
    (lambda: F.conv2d(_x, _w, np.zeros(6, np.float64)), TypeError, "b has dtype float64"),
    (lambda: F.conv2d(_x, _w.astype(np.float16)), TypeError, "w has dtype float16"),
    (lambda: F.conv2d(_x[0], _w), ValueError, "x must be 4-D, got shape (4, 8, 8)"),
    (lambda: F.conv2d(_x, _w[0]), ValueError, "w must be 4-D"),
    (lambda: F.conv1d(_x, _w1), ValueError, "x must be 3-D"),
    (lambda: F.conv2d(_x, np.zeros((6, 3, 3, 3), np.float32)), ValueError, "x has 4 channels"),
    (lambda: F.conv2d(_x, _w, groups=2), ValueError, "w.shape[1] * groups = 8 (channel mismatch)"),
    (lambda: F.conv2d(_x, np.zeros((5, 2, 3, 3), np.float32), groups=2), ValueError,
     "w.shape[0] (5) must be divisible by groups (2)"),
    (lambda: F.conv2d(_x, _w, groups=0), ValueError, "groups must be >= 1, got 0"),
    (lambda: F.conv2d(_x, _w, groups=-1), ValueError, "groups must be >= 1, got -1"),
    (lambda: F.conv2d(_x, _w, groups=1.0), TypeError, "groups must be an int, got 1.0"),
    (lambda: F.conv2d(_x, _w, stride=0), ValueError, "stride must be >= 1, got 0"),
    (lambda: F.conv2d(_x, _w, stride=(1, -1)), ValueError, "stride must be >= 1, got (1, -1)"),
    (lambda: F.conv2d(_x, _w, dilation=0), ValueError, "dilation must be >= 1, got 0"),
    (lambda: F.conv2d(_x, _w, padding=-1), ValueError, "padding must be >= 0, got -1"),
    (lambda: F.conv2d(_x, _w, padding=(1, 1, 1)), ValueError, "padding must be an int or a sequence of 2 ints"),
    (lambda: F.conv2d(_x, _w, stride=(1,)), ValueError, "stride must be an int or a sequence of 2 ints"),
    (lambda: F.conv2d(_x, _w, stride=1.5), TypeError, "stride must be an int or a sequence of 2 ints, got 1.5"),
    (lambda: F.conv2d(_x, _w, padding="same"), TypeError, "padding must be an int or a sequence of 2 ints"),
    (lambda: F.conv2d(_x, _w, dilation=None), TypeError, "dilation must be an int"),
    (lambda: F.conv2d(_x, _w, stride=True), TypeError, "stride must be an int"),
    (lambda: F.conv2d(_x, np.zeros((6, 4, 9, 3), np.float32)), ValueError, "larger than the padded input 8 + 2*0"),
    (lambda: F.conv2d(_x, _w, dilation=4), ValueError, "spans 9 along axis 2, larger than the padded input"),
    (lambda: F.conv1d(_x1, np.zeros((6, 4, 11), np.float32), padding=1), ValueError,
     "larger than the padded input 8 + 2*1 = 10"),
    (lambda: F.conv2d(np.zeros((1, 4, 0, 8), np.float32), _w), ValueError, "non-zero channel and spatial sizes"),
    (lambda: F.conv2d(_x, np.zeros((0, 4, 3, 3), np.float32)), ValueError, "w must be (K, C/groups, R, S) with"),
    (lambda: F.conv2d(_x, _w, np.zeros(5, np.float32)), ValueError, "b must have shape (6,)"),
    (lambda: F.conv2d(_x, _w, np.zeros((6, 1), np.float32)), ValueError, "b must be 1-D"),
    (lambda: F.conv2d(_x, _w, padding=10**7), ValueError, "the output would have shape"),
    (lambda: F.conv2d(_x, _w, activation="tanh"), ValueError, "activation must be None or 'relu', got 'tanh'"),
    (lambda: F.conv2d_backward(_dy[:, :5], _x, _w), ValueError, "dy must have the output's shape (2, 6, 6, 6)"),
    (lambda: F.conv2d_backward(_dy, _x, _w, padding=1), ValueError, "dy must have the output's shape (2, 6, 8, 8)"),
    (lambda: F.conv2d_backward(_dy[0], _x, _w), ValueError, "dy must be 4-D"),
    (lambda: F.conv2d_backward(_dy.astype(np.float64), _x, _w), TypeError, "dy has dtype float64"),
    (lambda: F.conv2d_backward(None, _x, _w), TypeError, "dy must be a numpy array, got None"),
    (lambda: F.conv2d_backward(_dy, _x, _w, input_grad="no"), TypeError, "input_grad must be a bool"),
    (lambda: F.conv1d_backward(np.zeros((2, 6, 5), np.float32), _x1, _w1), ValueError,
     "dy must have the output's shape (2, 6, 6)"),
]


@pytest.mark.parametrize("call, exc, fragment", BAD_CALLS)
def test_bad_input_is_refused(call, exc, fragment):
    with pytest.raises(exc) as info:
        call()
    assert fragment in str(info.value)
