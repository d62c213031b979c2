"""Max and average pooling (1-D and 2-D), forward and backward, against tests/reference/pool.py and PyTorch."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import convcore as cc
from convcore import _core
from convcore.functional import pool as P
from tests.gradcheck import numerical_grad, relative_error
from tests.reference import pool as ref

F = cc.functional

# (shape, kernel, stride, padding, ceil_mode): 2x2/2 fast path around vector widths, overlapping and
# padded windows, stride > kernel, ceil_mode overhangs, non-square everything.
GEOMETRIES = [
    ((2, 3, 8, 8), 2, 2, 0, False),
    ((1, 2, 7, 33), 2, 2, 0, False),
    ((2, 2, 6, 34), 2, 2, 0, True),
    ((1, 3, 5, 65), 2, 2, 0, True),
    ((2, 2, 4, 18), 2, None, 0, False),
    ((2, 3, 11, 11), 3, 2, 1, False),
    ((2, 3, 11, 12), 3, 2, 1, True),
    ((1, 2, 9, 10), (3, 2), (2, 1), (1, 0), True),
    ((2, 1, 13, 7), (5, 3), (4, 3), (2, 1), False),
    ((1, 2, 10, 10), 2, 3, 1, True),
    ((1, 1, 1, 1), 1, 1, 0, False),
    ((3, 2, 6, 6), 4, 1, 2, False),
    ((1, 2, 9, 41), 3, 2, 1, True),
    ((1, 2, 8, 50), (2, 5), (3, 2), (1, 2), False),
    # ceil_mode windows longer than the padded input (one window, cut at the input's end), stride-2 rows too
    ((2, 2, 2, 2), 3, 2, 0, True),
    ((1, 3, 5, 3), 4, 3, (1, 0), True),
    ((1, 2, 1, 5), (2, 1), (2, 1), 0, True),
    ((1, 2, 3, 18), (5, 3), 2, 1, True),
]


def _ints(rng, shape, dtype=np.float32):
    return rng.integers(-3, 4, size=shape).astype(dtype)


def _kw(kernel, stride, padding, ceil_mode):
    return {"kernel_size": kernel, "stride": stride, "padding": padding, "ceil_mode": ceil_mode}


def _stride(kernel, stride):
    return kernel if stride is None else stride


def _available_isas():
    return [name for name in ("scalar", "avx2", "avx512") if _can_select(name)]


def _can_select(name):
    previous = _core.selected_isa()
    ok = _core.select_isa(name)
    _core.select_isa(previous)
    return ok


@pytest.mark.parametrize("shape,kernel,stride,padding,ceil_mode", GEOMETRIES)
def test_max_pool_exact_on_integers(isa, nthreads, rng, shape, kernel, stride, padding, ceil_mode):
    x = _ints(rng, shape)
    kw = _kw(kernel, stride, padding, ceil_mode)
    y, indices = F.max_pool2d(x, return_indices=True, **kw)
    ry, rindices = ref.max_pool2d(x, kernel, _stride(kernel, stride), padding, ceil_mode)
    assert np.array_equal(y, ry) and np.array_equal(indices, rindices)
    dy = _ints(rng, y.shape)
    expected = ref.max_pool2d_backward(dy, rindices, shape)
    assert np.array_equal(F.max_pool2d_backward(dy, indices, shape, **kw), expected)
    yc, offsets = P._max_pool2d_compact(x, **kw)
    assert np.array_equal(yc, ry)
    assert np.array_equal(P._max_pool2d_compact_backward(dy, offsets, shape, **kw), expected)


@pytest.mark.parametrize("count_include_pad", [True, False])
@pytest.mark.parametrize("shape,kernel,stride,padding,ceil_mode", GEOMETRIES)
def test_avg_pool_exact_on_integers(isa, nthreads, rng, shape, kernel, stride, padding, ceil_mode,
                                    count_include_pad):
    x = _ints(rng, shape)
    kw = dict(_kw(kernel, stride, padding, ceil_mode), count_include_pad=count_include_pad)
    y = F.avg_pool2d(x, **kw)
    rkw = dict(kernel=kernel, stride=_stride(kernel, stride), padding=padding, ceil_mode=ceil_mode,
               count_include_pad=count_include_pad)
    assert np.array_equal(y, ref.avg_pool2d(x, **rkw))
    dy = _ints(rng, y.shape)
    assert np.array_equal(F.avg_pool2d_backward(dy, shape, **kw), ref.avg_pool2d_backward(dy, shape, **rkw))


@pytest.mark.parametrize("w", [2, 4, 6, 8, 10, 12, 14, 16, 18, 22, 28, 30])
@pytest.mark.parametrize("n,c,h", [(1, 1, 2), (2, 3, 4), (3, 5, 10), (1, 7, 6), (2, 3, 5), (3, 2, 11), (8, 64, 11)])
def test_2x2_narrow_rows_several_rows_a_step(isa, nthreads, rng, n, c, h, w):
    """Narrow rows pool several rows per vector step, across planes where H is even, within each plane where it is
    odd (AVX-512: whole rows of at most 8 outputs a step; AVX2: forward steps of 8 outputs across the ends of rows
    of 4 to 15 outputs, backward whole dx vectors for rows of at most 7), with rows left over, near the array's end,
    for steps of one row, and on 2 threads each thread's run of planes (8 x 64 planes); ties, NaN (the later NaN's
    offset wins) and -0 against the reference."""
    x = _ints(rng, (n, c, h, w))
    x.flat[rng.choice(x.size, size=max(1, x.size // 16), replace=False)] = np.nan
    x.flat[rng.choice(x.size, size=max(1, x.size // 16), replace=False)] = -0.0
    ry, rindices = ref.max_pool2d(x, 2, 2)
    y, offsets = P._max_pool2d_compact(x, 2)
    np.testing.assert_array_equal(y, ry)
    assert np.array_equal(np.signbit(y), np.signbit(ry))
    np.testing.assert_array_equal(F.max_pool2d(x, 2, return_indices=True)[1], rindices)
    dy = _ints(rng, y.shape)
    np.testing.assert_array_equal(P._max_pool2d_compact_backward(dy, offsets, x.shape, 2),
                                  ref.max_pool2d_backward(dy, rindices, x.shape))
    x = _ints(rng, (n, c, h, w))
    np.testing.assert_array_equal(F.avg_pool2d(x, 2), ref.avg_pool2d(x, 2, 2))
    np.testing.assert_array_equal(F.avg_pool2d_backward(dy, x.shape, 2), ref.avg_pool2d_backward(dy, x.shape, 2, 2))


@pytest.mark.parametrize("shape,kernel,stride,padding,ceil_mode",
                         GEOMETRIES + [((2, 3, 10, 40), 3, 2, 1, False), ((1, 2, 40, 40), 17, 3, 2, True),
                                       ((1, 2, 9, 70), (3, 5), 2, (1, 2), True), ((3, 4, 14, 14), 2, 2, 0, False)])
def test_max_pool_values_alone_are_the_argmax_calls_bits(isa, nthreads, rng, shape, kernel, stride, padding,
                                                         ceil_mode):
    """A call that keeps no argmax (return_indices=False, eval, frozen) computes the outputs alone: the same bits
    as the reference's (NaNs of distinct payloads: the last one's kept; -0 against +0: the first), on the 2x2/2,
    narrow-row, stride-2 and generic paths and a window of more than 256 elements (17 x 17)."""
    x = rng.standard_normal(shape).astype(np.float32)
    bits = x.view(np.uint32)
    nan = rng.random(shape) < 0.05
    bits[nan] = 0x7FC00000 | rng.integers(1, 1 << 22, size=int(nan.sum()), dtype=np.uint32)  # distinct payloads
    zeros = rng.random(shape) < 0.2
    x[zeros] = np.where(rng.random(int(zeros.sum())) < 0.5, -0.0, 0.0)
    kw = _kw(kernel, stride, padding, ceil_mode)
    ry, _ = ref.max_pool2d(x, kernel, _stride(kernel, stride), padding, ceil_mode)
    y = F.max_pool2d(x, **kw)
    assert y.view(np.uint32).tobytes() == ry.view(np.uint32).tobytes()
    assert F.max_pool2d(x, return_indices=True, **kw)[0].tobytes() == y.tobytes()
    layer = cc.nn.MaxPool2d(**kw)
    assert layer(x).tobytes() == y.tobytes()
    assert layer.eval()(x).tobytes() == y.tobytes()
    assert cc.nn.freeze(cc.nn.Sequential(cc.nn.MaxPool2d(**kw)))(x).tobytes() == y.tobytes()


def test_random_floats_match_reference_bitwise(isa, rng):
    # float32 random data: the fast paths sum and compare in the reference's order, so equality is exact.
    x = rng.standard_normal((2, 3, 10, 37)).astype(np.float32)
    dy = rng.standard_normal((2, 3, 5, 18)).astype(np.float32)
    y, indices = F.max_pool2d(x, 2, return_indices=True)
    ry, rindices = ref.max_pool2d(x, 2, 2)
    assert np.array_equal(y, ry) and np.array_equal(indices, rindices)
    assert np.array_equal(F.max_pool2d_backward(dy, indices, x.shape, 2),
                          ref.max_pool2d_backward(dy, rindices, x.shape))
    assert np.array_equal(F.avg_pool2d(x, 2), ref.avg_pool2d(x, 2, 2))
    assert np.array_equal(F.avg_pool2d_backward(dy, x.shape, 2), ref.avg_pool2d_backward(dy, x.shape, 2, 2))


@pytest.mark.parametrize("width", [75, 66])
@pytest.mark.parametrize("kernel,stride,padding,ceil_mode,include",
                         [(3, 2, 1, False, False), (3, 2, 0, True, True), ((2, 5), (3, 2), (1, 2), False, False)])
def test_stride2_windows_random_floats_bitwise(isa, rng, width, kernel, stride, padding, ceil_mode, include):
    # overlapping windows with column stride 2 on rows of several vector steps, the last one partial (75) or
    # full (66, 3x3/2 p1: 32 interior outputs reaching the row's last column), with edge columns in the padding:
    # the vector paths add each dx element's contributions in the reference's order, so random floats match it
    # exactly
    x = rng.standard_normal((2, 3, 9, width)).astype(np.float32)
    geo = dict(kernel_size=kernel, stride=stride, padding=padding, ceil_mode=ceil_mode)
    ry, rindices = ref.max_pool2d(x, kernel, stride, padding, ceil_mode)
    dy = rng.standard_normal(ry.shape).astype(np.float32)
    y, offsets = P._max_pool2d_compact(x, **geo)
    assert np.array_equal(y, ry)
    assert np.array_equal(P._max_pool2d_compact_backward(dy, offsets, x.shape, **geo),
                          ref.max_pool2d_backward(dy, rindices, x.shape))
    assert np.array_equal(F.avg_pool2d(x, **geo, count_include_pad=include),
                          ref.avg_pool2d(x, kernel, stride, padding, ceil_mode, include))
    assert np.array_equal(F.avg_pool2d_backward(dy, x.shape, **geo, count_include_pad=include),
                          ref.avg_pool2d_backward(dy, x.shape, kernel, stride, padding, ceil_mode, include))


def test_ceil_mode_window_longer_than_input_is_pytorchs():
    # PyTorch 2.13: max_pool1d([[[1, 2]]], 3, stride=2, ceil_mode=True) is [[[2]]], avg_pool1d 1.5 (the window
    # cut at the input's end, divisor 2); a kernel of 3 on a 2x2 plane gives its max; without ceil_mode, refused
    x = np.array([[[1.0, 2.0]]], np.float32)
    np.testing.assert_array_equal(F.max_pool1d(x, 3, stride=2, ceil_mode=True), [[[2.0]]])
    np.testing.assert_array_equal(F.avg_pool1d(x, 3, stride=2, ceil_mode=True), [[[1.5]]])
    np.testing.assert_array_equal(F.avg_pool1d_backward(np.ones((1, 1, 1), np.float32), x.shape, 3, stride=2,
                                                        ceil_mode=True), [[[0.5, 0.5]]])
    plane = np.arange(4, dtype=np.float32).reshape(1, 1, 2, 2)
    np.testing.assert_array_equal(F.max_pool2d(plane, 3, stride=2, ceil_mode=True), [[[[3.0]]]])
    with pytest.raises(ValueError, match="too small"):
        F.max_pool1d(x, 3, stride=2)
    with pytest.raises(ValueError, match="too small"):  # longer by the stride or more: no window, as PyTorch
        F.max_pool1d(x, 4, stride=2, ceil_mode=True)


@pytest.mark.parametrize("kernel,stride,padding", [(2, 2, 0), (3, 2, 1), (3, 1, 1)])
def test_nan_propagates_with_its_index(isa, rng, kernel, stride, padding):
    x = rng.standard_normal((2, 2, 12, 20)).astype(np.float32)
    x[rng.random(x.shape) < 0.15] = np.nan
    y, indices = F.max_pool2d(x, kernel, stride, padding, return_indices=True)
    ry, rindices = ref.max_pool2d(x, kernel, stride, padding)
    assert np.array_equal(np.isnan(y), np.isnan(ry)) and np.isnan(y).any()
    assert np.array_equal(y[~np.isnan(y)], ry[~np.isnan(ry)])
    assert np.array_equal(indices, rindices)
    assert np.isnan(F.avg_pool2d(x, kernel, stride, padding)).sum() >= np.isnan(y).sum()


def test_nan_beats_inf_and_later_nan_index_wins(isa):
    x = np.array([[[[np.inf, np.nan], [np.nan, 5.0]]]], np.float32)
    y, indices = F.max_pool2d(x, 2, return_indices=True)
    assert np.isnan(y).all() and indices.item() == 2


@pytest.mark.parametrize("kernel,stride,padding", [(2, 2, 0), (3, 2, 1), (2, 1, 1)])
def test_ties_first_max_wins(isa, kernel, stride, padding):
    x = np.full((1, 2, 9, 18), 1.5, np.float32)
    x[0, 1] = -np.inf  # all -inf: the first input element of the window, never padding
    _, indices = F.max_pool2d(x, kernel, stride, padding, return_indices=True)
    _, rindices = ref.max_pool2d(x, kernel, stride, padding)
    assert np.array_equal(indices, rindices)


def test_windows_mostly_in_padding(isa):
    # 1x1 input, kernel 2 padding 1: each window holds one input element and three padding cells.
    x = np.array([[[[-7.0]]]], np.float32)
    y, indices = F.max_pool2d(x, 2, 1, 1, return_indices=True)
    assert y.shape == (1, 1, 2, 2) and (y == -7.0).all() and (indices == 0).all()
    assert (F.avg_pool2d(x, 2, 1, 1) == -7.0 / 4).all()
    assert (F.avg_pool2d(x, 2, 1, 1, count_include_pad=False) == -7.0).all()


@pytest.mark.parametrize("size", [5, 6, 7, 8, 9])
@pytest.mark.parametrize("kernel,stride,padding", [(2, 2, 0), (3, 2, 1), (3, 3, 1), (2, 3, 1), (4, 3, 2)])
def test_ceil_mode_never_yields_nan_or_inf(isa, rng, size, kernel, stride, padding):
    x = rng.standard_normal((1, 2, size, size)).astype(np.float32)
    for include in (True, False):
        assert np.isfinite(F.avg_pool2d(x, kernel, stride, padding, ceil_mode=True, count_include_pad=include)).all()
    assert np.isfinite(F.max_pool2d(x, kernel, stride, padding, ceil_mode=True)).all()


@pytest.mark.parametrize("kernel,stride,padding", [(2, 2, 0), (3, 2, 1)])
def test_thread_counts_bitwise_equal(isa, rng, kernel, stride, padding):
    x = rng.standard_normal((4, 16, 33, 34)).astype(np.float32)
    results = []
    for n in (1, 2, 3, 4):
        with cc.threads(n):
            y, indices = F.max_pool2d(x, kernel, stride, padding, return_indices=True)
            a = F.avg_pool2d(x, kernel, stride, padding)
            dx = F.max_pool2d_backward(y, indices, x.shape, kernel, stride, padding)
            da = F.avg_pool2d_backward(a, x.shape, kernel, stride, padding)
            results.append([r.tobytes() for r in (y, indices, a, dx, da)])
    assert all(r == results[0] for r in results[1:])


def _scaled_error(analytic, numeric):
    """max |a - n| / max |n|: avg pooling is linear, so central differences carry only float64 round-off
    (~1e-9 absolute), which the element-wise relative error magnifies on small entries."""
    return float(np.max(np.abs(analytic - numeric)) / np.max(np.abs(numeric)))


@pytest.mark.parametrize("kernel,stride,padding,ceil_mode", [(2, 2, 0, False), (3, 2, 1, True), (2, 1, 0, False)])
def test_gradcheck_float64(rng, kernel, stride, padding, ceil_mode):
    shape = (2, 2, 5, 6)
    x = rng.permutation(np.prod(shape)).astype(np.float64).reshape(shape) * 0.01  # distinct: argmax is stable
    kw = _kw(kernel, stride, padding, ceil_mode)
    y, indices = F.max_pool2d(x, return_indices=True, **kw)
    dy = rng.standard_normal(y.shape)
    num = numerical_grad(lambda t: F.max_pool2d(t, **kw), x, dy)
    assert relative_error(F.max_pool2d_backward(dy, indices, shape, **kw), num) < 1e-7
    for include in (True, False):
        f = lambda t: F.avg_pool2d(t, **kw, count_include_pad=include)  # noqa: E731
        num = numerical_grad(f, x, dy)
        assert _scaled_error(F.avg_pool2d_backward(dy, shape, **kw, count_include_pad=include), num) < 1e-7


def test_gradcheck_1d_float64(rng):
    x = rng.permutation(2 * 3 * 9).astype(np.float64).reshape(2, 3, 9) * 0.01
    y, indices = F.max_pool1d(x, 3, 2, 1, return_indices=True)
    dy = rng.standard_normal(y.shape)
    num = numerical_grad(lambda t: F.max_pool1d(t, 3, 2, 1), x, dy)
    assert relative_error(F.max_pool1d_backward(dy, indices, x.shape, 3, 2, 1), num) < 1e-7
    num = numerical_grad(lambda t: F.avg_pool1d(t, 3, 2, 1, ceil_mode=True), x, dy)
    assert _scaled_error(F.avg_pool1d_backward(dy, x.shape, 3, 2, 1, ceil_mode=True), num) < 1e-7


def test_1d_matches_2d_reference(isa, rng):
    x = _ints(rng, (2, 3, 17))
    y, indices = F.max_pool1d(x, 3, 2, 1, ceil_mode=True, return_indices=True)
    ry, rindices = ref.max_pool2d(x[:, :, None, :], (1, 3), (1, 2), (0, 1), True)
    assert np.array_equal(y, ry[:, :, 0]) and np.array_equal(indices, rindices[:, :, 0])
    dy = _ints(rng, y.shape)
    assert np.array_equal(F.max_pool1d_backward(dy, indices, x.shape, 3, 2, 1, True),
                          ref.max_pool2d_backward(dy[:, :, None], rindices, (2, 3, 1, 17))[:, :, 0])
    a = F.avg_pool1d(x, 4, 3, 2, count_include_pad=False)
    assert np.array_equal(a, ref.avg_pool2d(x[:, :, None], (1, 4), (1, 3), (0, 2), False, False)[:, :, 0])
    assert np.array_equal(F.avg_pool1d_backward(a, x.shape, 4, 3, 2, count_include_pad=False),
                          ref.avg_pool2d_backward(a[:, :, None], (2, 3, 1, 17), (1, 4), (1, 3), (0, 2), False,
                                                  False)[:, :, 0])
    yc, offsets = P._max_pool2d_compact(x, 3, 2, 1, True)
    assert np.array_equal(yc, y) and offsets.dtype == np.uint8


def test_non_contiguous_input(isa, rng):
    base = _ints(rng, (2, 3, 12, 20))
    x = base[:, :, :, ::2]
    assert not x.flags.c_contiguous
    y, indices = F.max_pool2d(x, 2, return_indices=True)
    ry, rindices = ref.max_pool2d(np.ascontiguousarray(x), 2, 2)
    assert np.array_equal(y, ry) and np.array_equal(indices, rindices)
    dy = _ints(rng, y.shape).transpose(0, 1, 3, 2).copy().transpose(0, 1, 3, 2)
    assert np.array_equal(F.avg_pool2d_backward(dy, x.shape, 2), ref.avg_pool2d_backward(dy, x.shape, 2, 2))


def test_batch_zero(isa):
    x = np.zeros((0, 3, 8, 8), np.float32)
    y, indices = F.max_pool2d(x, 2, return_indices=True)
    assert y.shape == indices.shape == (0, 3, 4, 4)
    assert F.max_pool2d_backward(y, indices, x.shape, 2).shape == x.shape
    assert F.avg_pool2d(x, 3, 2, 1).shape == (0, 3, 4, 4)
    assert F.avg_pool2d_backward(np.zeros((0, 3, 4, 4), np.float32), x.shape, 3, 2, 1).shape == x.shape


def test_large_window_uses_int64_indices(rng):
    x = _ints(rng, (1, 2, 17, 17))  # 17x17 = 289 window elements: no compact form
    y, indices = F.max_pool2d(x, 17, return_indices=True)
    ry, rindices = ref.max_pool2d(x, 17, 17)
    assert np.array_equal(y, ry) and np.array_equal(indices, rindices)
    assert np.array_equal(F.max_pool2d(x, 17), ry)
    with pytest.raises(ValueError, match="no compact argmax"):
        P._max_pool2d_compact(x, 17)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("stride", [None, 2])
def test_avg_pool_divisor_past_int64(isa, dtype, stride):
    # a 2**33 x 2**33 window padded by 2**32 (count_include_pad): its divisor, 2**66, wrapped to 0 as an int64 product
    # and every mean came out inf; now the input's sum / 2**66 (exact, float32 too), by the reference loops and (stride
    # 2) the stride-2 kernels; the reference backward spreads dy / 2**66 (with stride 2 too: the stride-2 kernel's
    # row of KW + W + PW floats, 48 GiB here, threw std::bad_alloc inside an OpenMP region and ended the process)
    x = np.arange(1, 5, dtype=dtype).reshape(1, 1, 2, 2)
    y = F.avg_pool2d(x, 2**33, stride=stride, padding=2**32)
    assert y.shape == ((1, 1, 1, 1) if stride is None else (1, 1, 2, 2))
    assert np.array_equal(y, np.full(y.shape, 10 * 2.0**-66, dtype))
    dx = F.avg_pool2d_backward(np.ones_like(y), x.shape, 2**33, stride=stride, padding=2**32)
    assert np.array_equal(dx, np.full(x.shape, y.size * 2.0**-66, dtype))  # every window covers all of x


@pytest.mark.parametrize("stride", [None, 2])
def test_avg_pool_sums_windows_past_256_elements_in_double(isa, rng, stride):
    # a float32 sum over a 224 x 224 plane (a global average) drifted 5e-4 for a constant 0.1 and ~5e-6 on random
    # data; windows of at most 256 elements keep their float32 row-major sum (PyTorch's avg_pool2d's)
    plane = np.full((1, 1, 224, 224), 0.1, np.float32)
    assert F.avg_pool2d(plane, 224).item() == np.float32(0.1)
    x = rng.standard_normal((2, 3, 40, 40)).astype(np.float32)
    for k in (17, 16):  # 289 elements (in double), 256 (in float32)
        y = F.avg_pool2d(x, k, stride=stride)
        windows = np.lib.stride_tricks.sliding_window_view(x.astype(np.float64), (k, k), axis=(2, 3))
        windows = windows[:, :, ::stride or k, ::stride or k]
        want = windows.mean(axis=(4, 5))
        if k == 17:
            np.testing.assert_array_max_ulp(y, want.astype(np.float32), maxulp=1)  # the double sum, rounded once
        else:
            np.testing.assert_allclose(y, want, rtol=0, atol=2e-6)
    np.testing.assert_array_max_ulp(cc.nn.GlobalAvgPool2d()(x), x.astype(np.float64).mean(axis=(2, 3), keepdims=True)
                                    .astype(np.float32), maxulp=1)


@given(n=st.integers(0, 3), c=st.integers(1, 8), h=st.integers(1, 17), w=st.integers(1, 17),
       kh=st.integers(1, 5), kw=st.integers(1, 5), sh=st.integers(1, 4), sw=st.integers(1, 4),
       ph=st.integers(0, 2), pw=st.integers(0, 2), ceil_mode=st.booleans(), include=st.booleans(),
       seed=st.integers(0, 2**32 - 1))
def test_random_shapes_match_reference(n, c, h, w, kh, kw, sh, sw, ph, pw, ceil_mode, include, seed):
    ph, pw = min(ph, kh // 2), min(pw, kw // 2)
    if ref.output_size(h, kh, sh, ph, ceil_mode) <= 0 or ref.output_size(w, kw, sw, pw, ceil_mode) <= 0:
        return
    rng = np.random.default_rng(seed)
    x = _ints(rng, (n, c, h, w))
    geo = dict(kernel_size=(kh, kw), stride=(sh, sw), padding=(ph, pw), ceil_mode=ceil_mode)
    ry, rindices = ref.max_pool2d(x, (kh, kw), (sh, sw), (ph, pw), ceil_mode)
    dy = _ints(rng, ry.shape)
    rdx = ref.max_pool2d_backward(dy, rindices, x.shape)
    ra = ref.avg_pool2d(x, (kh, kw), (sh, sw), (ph, pw), ceil_mode, include)
    rda = ref.avg_pool2d_backward(dy, x.shape, (kh, kw), (sh, sw), (ph, pw), ceil_mode, include)
    previous = _core.selected_isa()
    try:
        for name in _available_isas():
            _core.select_isa(name)
            y, indices = F.max_pool2d(x, return_indices=True, **geo)
            assert np.array_equal(y, ry) and np.array_equal(indices, rindices), name
            assert np.array_equal(F.max_pool2d_backward(dy, indices, x.shape, **geo), rdx), name
            _, offsets = P._max_pool2d_compact(x, **geo)
            assert np.array_equal(P._max_pool2d_compact_backward(dy, offsets, x.shape, **geo), rdx), name
            assert np.array_equal(F.avg_pool2d(x, **geo, count_include_pad=include), ra), name
            assert np.array_equal(F.avg_pool2d_backward(dy, x.shape, **geo, count_include_pad=include), rda), name
    finally:
        _core.select_isa(previous)


TORCH_CASES = [
    ((2, 3, 16, 16), 2, 2, 0, False),
    ((2, 3, 15, 17), 2, 2, 0, True),
    ((2, 4, 13, 13), 3, 2, 1, False),
    ((2, 4, 14, 13), 3, 2, 1, True),
    ((1, 2, 11, 9), (3, 2), (1, 2), (1, 1), True),
    ((1, 2, 12, 12), 3, 4, 1, True),
]


@pytest.mark.parametrize("shape,kernel,stride,padding,ceil_mode", TORCH_CASES)
def test_parity_with_torch(isa, rng, shape, kernel, stride, padding, ceil_mode):
    torch = pytest.importorskip("torch")
    tf = torch.nn.functional
    x = rng.standard_normal(shape).astype(np.float32)
    x[rng.random(shape) < 0.05] = np.nan
    x[rng.random(shape) < 0.05] = 0.5  # ties
    kw = _kw(kernel, stride, padding, ceil_mode)
    tkw = dict(kw, stride=_stride(kernel, stride))
    y, indices = F.max_pool2d(x, return_indices=True, **kw)
    ty, tindices = tf.max_pool2d(torch.from_numpy(x), return_indices=True, **tkw)
    np.testing.assert_array_equal(y, ty.numpy())
    np.testing.assert_array_equal(indices, tindices.numpy())
    dy = rng.standard_normal(y.shape).astype(np.float32)
    tx = torch.from_numpy(np.nan_to_num(x)).requires_grad_()
    xf = np.nan_to_num(x)
    for include in (True, False):
        a = F.avg_pool2d(xf, **kw, count_include_pad=include)
        ta = tf.avg_pool2d(tx, **tkw, count_include_pad=include)
        np.testing.assert_allclose(a, ta.detach().numpy(), rtol=1e-6, atol=1e-6)
        (tdx,) = torch.autograd.grad(ta, tx, torch.from_numpy(dy))
        np.testing.assert_allclose(F.avg_pool2d_backward(dy, shape, **kw, count_include_pad=include), tdx.numpy(),
                                   rtol=1e-6, atol=1e-6)
    ty, tindices = tf.max_pool2d(tx, return_indices=True, **tkw)
    (tdx,) = torch.autograd.grad(ty, tx, torch.from_numpy(dy))
    _, indices = F.max_pool2d(xf, return_indices=True, **kw)
    np.testing.assert_array_equal(F.max_pool2d_backward(dy, indices, shape, **kw), tdx.numpy())


X = np.zeros((1, 2, 6, 6), np.float32)
DY = np.zeros((1, 2, 3, 3), np.float32)
IDX = np.zeros((1, 2, 3, 3), np.int64)
BAD_CALLS = [
    (lambda: F.max_pool2d(None, 2), TypeError, "x must be a numpy array, got None"),
    (lambda: F.max_pool2d([[1.0]], 2), TypeError, "x must be a numpy array, got list"),
    (lambda: F.max_pool2d(X.astype(np.int32), 2), TypeError, "x has dtype int32"),
    (lambda: F.max_pool2d(X[0], 2), ValueError, r"x must be 4-D, got shape \(2, 6, 6\)"),
    (lambda: F.max_pool1d(X, 2), ValueError, r"x must be 3-D, got shape \(1, 2, 6, 6\)"),
    (lambda: F.max_pool2d(X, 0), ValueError, "kernel_size must be >= 1, got 0"),
    (lambda: F.max_pool2d(X, (2, -1)), ValueError, r"kernel_size must be >= 1, got \(2, -1\)"),
    (lambda: F.max_pool2d(X, (2, 2, 2)), ValueError, "kernel_size must be an int or a sequence of 2 ints"),
    (lambda: F.max_pool2d(X, 2.0), TypeError, "kernel_size must be an int or a sequence of 2 ints, got 2.0"),
    (lambda: F.max_pool2d(X, 2, stride=0), ValueError, "stride must be >= 1, got 0"),
    (lambda: F.avg_pool2d(X, 2, stride=(0, 1)), ValueError, r"stride must be >= 1, got \(0, 1\)"),
    (lambda: F.max_pool2d(X, 3, padding=-1), ValueError, "padding must be >= 0, got -1"),
    (lambda: F.max_pool2d(X, 3, padding=2), ValueError, "padding must be at most half of kernel_size"),
    (lambda: F.avg_pool1d(X[0], 2, padding=2), ValueError, "padding must be at most half of kernel_size"),
    (lambda: F.max_pool2d(X, 7), ValueError, r"x spatial size \(6, 6\) is too small for kernel_size 7"),
    (lambda: F.avg_pool2d(X, (2, 9), padding=1), ValueError, "the kernel must fit in the padded input"),
    (lambda: F.max_pool2d(np.zeros((1, 0, 4, 4), np.float32), 2), ValueError, "non-zero channels"),
    (lambda: F.max_pool2d(X, 2, ceil_mode=1), TypeError, "ceil_mode must be a bool, got 1"),
    (lambda: F.max_pool2d(X, 2, return_indices="compact"), TypeError, "return_indices must be a bool"),
    (lambda: F.avg_pool2d(X, 2, count_include_pad=None), TypeError, "count_include_pad must be a bool"),
    (lambda: F.max_pool2d_backward(DY, IDX.astype(np.int32), X.shape, 2), TypeError,
     "indices must have dtype int64"),
    (lambda: F.max_pool2d_backward(DY, IDX.tolist(), X.shape, 2), TypeError, "indices must be a numpy int64 array"),
    (lambda: F.max_pool2d_backward(DY, IDX[:, :1], X.shape, 2), ValueError, "indices shape .* must equal dy shape"),
    (lambda: F.max_pool2d_backward(DY, IDX + 36, X.shape, 2), ValueError, r"indices must lie in \[0, 36\)"),
    (lambda: F.max_pool2d_backward(DY, IDX - 1, X.shape, 2), ValueError, "found -1"),
    (lambda: F.max_pool2d_backward(DY[:, :, :2], IDX, X.shape, 2), ValueError,
     r"dy must have the pooling output shape \(1, 2, 3, 3\)"),
    (lambda: F.avg_pool2d_backward(DY.astype(np.int64), X.shape, 2), TypeError, "dy has dtype int64"),
    (lambda: F.avg_pool2d_backward(DY, (1, 2, 6), 2), ValueError, r"input_shape must be a sequence of 4 ints"),
    (lambda: F.avg_pool2d_backward(DY, "1,2,6,6", 2), ValueError, "input_shape must be a sequence of 4 ints"),
    (lambda: F.avg_pool2d_backward(DY, (1, 2, 6, 6.0), 2), TypeError, "input_shape must be an int or a sequence"),
    (lambda: F.avg_pool2d_backward(DY, (1, 2, 0, 6), 2), ValueError, "input_shape must have non-zero channels"),
    (lambda: F.avg_pool1d_backward(DY[0], (2, 6), 2), ValueError, r"input_shape must be a sequence of 3 ints"),
    (lambda: F.avg_pool2d_backward(DY, (1, 2, 1 << 30, 1 << 30), 2), ValueError, "more than the limit"),
    (lambda: F.avg_pool2d_backward(DY, (1, 2, 8, 8), 2), ValueError,
     r"dy must have the pooling output shape \(1, 2, 4, 4\)"),
    (lambda: P._max_pool2d_compact_backward(DY, IDX, X.shape, 2), TypeError, "offsets must be the uint8 array"),
    (lambda: P._max_pool2d_compact_backward(DY, np.full(DY.shape, 4, np.uint8), X.shape, 2), ValueError,
     r"offsets must be < 4"),
]


@pytest.mark.parametrize("call,error,message", BAD_CALLS)
def test_bad_input_is_refused(call, error, message):
    with pytest.raises(error, match=message):
        call()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape,kernel,stride,padding,ceil_mode",
                         [((12, 50, 8, 8), 2, 2, 0, False), ((2, 3, 28, 28), 2, 2, 0, False),
                          ((2, 70, 10, 34), 2, 2, 0, True), ((40, 30, 10, 10), 2, 2, 0, False),
                          ((2, 3, 11, 12), 3, 2, 1, True),
                          ((1, 2, 9, 10), (3, 2), (2, 1), (1, 0), True)])
def test_backward_with_the_relu_folded_in_equals_relu_backward_then_routing(isa, nthreads, rng, dtype, shape,
                                                                           kernel, stride, padding, ceil_mode):
    """relu_output masks dy where the pooled ReLU output is not > 0 (0, -0, NaN) as relu_backward does, across
    the several-plane steps the routing masks in (600, 140 and 1200 planes of 16, 85 and 25 outputs: steps of 256,
    48 and 163 planes, the last one short, on 1 or 2 threads), on the 2x2/2 fast paths and the generic routing."""
    x = np.maximum(_ints(rng, shape, dtype), 0)  # a ReLU's output: many zeros
    x.flat[rng.choice(x.size, size=max(1, x.size // 50), replace=False)] = np.nan
    kw = _kw(kernel, stride, padding, ceil_mode)
    y, offsets = P._max_pool2d_compact(x, **kw)
    y[0, 0, 0, 0] = -0.0
    dy = _ints(rng, y.shape, dtype)
    geometry = P._geometry(shape[2:], kernel, stride, padding, ceil_mode, 2, "x")
    folded = _core.max_pool2d_offsets_backward(dy, offsets, geometry, y)
    assert folded.dtype == dtype
    np.testing.assert_array_equal(folded, _core.max_pool2d_offsets_backward(_core.relu_backward(dy, y), offsets,
                                                                            geometry))
    assert (y > 0).any() and not (y > 0).all()
    with pytest.raises(ValueError, match="relu_output must have dy's shape"):
        _core.max_pool2d_offsets_backward(dy, offsets, geometry, y[:, :1])
    with pytest.raises(ValueError, match="offsets must have dy's shape"):  # fewer offsets than dy: none read past
        _core.max_pool2d_offsets_backward(dy, np.ascontiguousarray(offsets[:, :1]), geometry)
