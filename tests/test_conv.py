"""conv2d / conv1d forward and backward against the float64 reference, exactness, gradients, threads, bad input."""
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

import convcore as cc
from gradcheck import numerical_grad, relative_error
from reference import conv as ref

F = cc.functional

# (N, C, H, W, K, R, S, stride, padding, dilation, groups)
CASES = [
    (2, 3, 7, 9, 4, 3, 3, 1, 1, 1, 1),
    (1, 1, 28, 28, 6, 5, 5, 1, 2, 1, 1),        # LeNet conv1
    (2, 6, 14, 14, 16, 5, 5, 1, 0, 1, 1),       # LeNet conv2
    (1, 3, 23, 23, 8, 11, 11, 4, 0, 1, 1),      # AlexNet-style conv1
    (2, 4, 9, 9, 6, 3, 3, (2, 1), (1, 0), 1, 1),
    (2, 4, 10, 8, 4, 3, 2, 1, (2, 1), (2, 3), 1),
    (2, 4, 6, 6, 6, 3, 3, 1, 1, 1, 2),          # groups
    (2, 5, 7, 7, 5, 3, 3, 1, 1, 1, 5),          # depthwise
    (2, 4, 8, 8, 8, 3, 3, 2, 1, 1, 4),          # depthwise multiplier 2, stride 2
    (3, 4, 1, 1, 5, 1, 1, 1, 0, 1, 1),          # 1x1 image, 1x1 kernel
    (2, 3, 5, 5, 4, 1, 1, 1, 0, 1, 1),          # 1x1 kernel
    (1, 2, 9, 9, 3, 2, 2, 4, 0, 1, 1),          # stride > kernel
    (0, 3, 5, 5, 2, 3, 3, 1, 1, 1, 1),          # empty batch
    (0, 16, 8, 8, 16, 3, 3, 1, 1, 1, 1),        # empty batch for the fused Winograd kernel (divided by it: SIGFPE)
    (1, 2, 3, 3, 2, 3, 3, 1, 0, 1, 1),          # kernel == input
    (1, 2, 1, 1, 2, 3, 3, 1, 1, 1, 1),          # 1x1 image, 3x3 kernel in the padding
    (2, 3, 11, 10, 4, 3, 3, 1, 1, 1, 1),        # >= 100 pixels per image: one GEMM per image, not batch-folded
    (2, 3, 5, 4, 4, 1, 1, 1, 1, 1, 1),          # padded 1x1 kernel: stride-1 dx by col2im (padding > kernel reach)
    (1, 4, 6, 7, 6, 3, 2, 1, (3, 1), 1, 2),     # padding 3 > R-1 on one axis: dx by col2im
    (2, 3, 6, 40, 20, 3, 3, 1, 1, 1, 1),        # direct kernel: rows past two vectors, a partial filter block
    (1, 4, 12, 12, 17, 3, 5, 1, (2, 0), 1, 1),  # direct kernel: narrow rows, 17 filters, uneven padding
    (2, 20, 9, 13, 6, 3, 3, 1, 1, 1, 1),        # direct forward past 160 taps (weight gradient by GEMM)
    (1, 3, 10, 10, 5, 3, 3, 1, 1, 1, 1),        # direct kernel: narrow rows and at most 8 filters
    (1, 2, 4, 5, 3, 2, 2, 1, (3, 0), 1, 1),     # direct kernel: output rows that read only padding
    (2, 3, 11, 13, 12, 3, 5, (2, 1), (1, 2), (2, 1), 1),  # weight gradient over filters: strided, dilated, 3x5
    (10, 4, 6, 7, 20, 3, 3, 1, 1, 1, 1),        # weight gradient over filters: two vectors, more than 8 images
    (2, 5, 8, 7, 20, 3, 3, 1, 1, 1, 1),         # forward over filters (AVX-512): 7-pixel rows, a partial block
    (1, 2, 6, 6, 40, 3, 3, 1, 1, 1, 1),         # forward over filters (AVX-512): two filter blocks
    (2, 4, 15, 14, 12, 3, 3, 2, (1, 2), (1, 2), 1),  # forward over filters (AVX-512): strided, dilated
    (3, 5, 32, 30, 24, 3, 3, 2, 1, 1, 1),       # forward over filters (AVX-512): strided rows of 15 pixels
    (2, 3, 16, 15, 12, 3, 3, 2, 1, 1, 1),       # forward over filters (AVX2): strided rows of 8 pixels
    (2, 3, 9, 7, 12, 4, 2, 1, 1, 1, 1),         # forward over filters (AVX-512): a kernel width read at run time
    (2, 3, 6, 4, 7, 3, 3, 1, 1, 1, 1),          # forward over filters (AVX2): 4-pixel rows
    (2, 3, 5, 2, 5, 3, 3, 1, 1, 1, 1),          # forward over filters (portable): 2-pixel rows
    (11, 3, 7, 7, 72, 3, 3, 2, 1, 1, 1),        # weight gradient by one GEMM over all images' pixels (few per image)
    (3, 4, 6, 6, 69, 3, 3, 1, 1, 1, 1),         # the same, dY packed image by image: a partial panel of filters
    (3, 6, 7, 7, 18, 3, 3, 1, 1, 1, 2),         # and groups of 9 filters
    (2, 1, 6, 30, 6, 5, 5, 1, 2, 1, 1),         # direct kernel, 6-filter blocks (AVX-512): rows past one vector
    # weight gradient over one vector of filters, 5x5, with 16 registers (AVX2, portable): one kernel row per unit,
    # pixels in fours and the rows' remainders one by one; a stride of 2 takes them one by one
    (3, 2, 9, 11, 7, 5, 5, 1, (1, 2), 1, 1),
    (2, 2, 13, 13, 6, 5, 5, 2, 1, 1, 1),
    (1, 2, 5, 21, 5, 3, 3, 1, 1, 1, 1),         # direct kernel, 6-filter blocks: 5 filters, rows past one vector
    (2, 6, 14, 14, 16, 5, 5, 1, 0, 1, 1),       # LeNet conv2: input gradient direct with 6-filter blocks
    # weight gradient by GEMM on transposed im2col panels (more than 32 filters): runs of pixels past 16, strides,
    # dilation, padding, several panels of taps and partial ones
    (2, 6, 45, 40, 40, 3, 3, 2, 1, 1, 1),       # strided rows of 20 pixels, 54 taps
    (1, 4, 30, 60, 36, 3, 5, (1, 3), (2, 1), (2, 1), 1),  # dilated, uneven stride and padding, 60 taps
    (2, 8, 20, 20, 36, 3, 3, 1, 1, 1, 2),       # groups
    # strided layers whose im2col reads a phase-split copy (R*S >= 4 * strides): batch-folded and per image, with
    # dilation, padding and groups
    (3, 4, 17, 19, 8, 5, 5, 2, (2, 1), (1, 2), 2),
    (1, 4, 40, 42, 8, 5, 5, 2, 2, (2, 1), 2),
    (2, 6, 9, 11, 40, 1, 1, (2, 3), 0, 1, 1),   # strided 1x1: weight gradient pointwise on the subsampled input
    (2, 6, 9, 11, 40, 1, 1, 2, 0, 1, 2),        # the same with groups
    # Winograd F(2x2, 3x3) (more than 400 taps and 32 filters, so not the direct kernel; 49 tiles or more)
    (2, 48, 16, 16, 40, 3, 3, 1, 1, 1, 1),      # forward and the input gradient
    (3, 47, 9, 11, 33, 3, 3, 1, 1, 1, 1),       # odd output rows and columns (overhanging tiles)
    (3, 48, 12, 14, 40, 3, 3, 1, 0, 1, 1),      # no padding (the input gradient by col2im)
    (2, 48, 10, 9, 40, 3, 3, 1, 2, 1, 1),       # padding 2: tiles reading only padding
    (3, 46, 12, 12, 40, 3, 3, 1, (1, 0), 1, 1),  # uneven padding
    (1, 48, 20, 37, 40, 3, 3, 1, 1, 1, 1),      # rows of 19 tiles: whole vectors of tiles and a part, odd columns
    # the backward with dy's channels in the lanes (AVX-512 and AVX2: 9-16 filters, dy rows of 5-10 pixels, kernel
    # width 3 or 5): accumulators past the row from the padding, kernel rows past dy's, R != S, uneven padding;
    # more than 8 images (image chunks of unequal sizes) with all kernel rows in one weight unit, 3x3 and 5x5
    (11, 3, 9, 9, 11, 3, 3, 1, 1, 1, 1),
    (9, 2, 10, 8, 14, 5, 5, 1, 2, 1, 1),
    (3, 5, 9, 8, 9, 3, 5, 1, (0, 3), 1, 1),
    (2, 1, 7, 3, 12, 4, 3, 1, (3, 2), 1, 1),
    (5, 7, 6, 8, 16, 2, 3, 1, (1, 0), 1, 1),
    # weight gradient by GEMM in fixed chunks of pixels: one image in 3 (padded: copied once, shared by the chunks),
    # 3 images in 2 (a chunk ending inside an image), a 1x1 kernel's image in 3
    (1, 4, 40, 40, 36, 3, 3, 1, 1, 1, 1),
    (3, 2, 24, 24, 40, 3, 3, 1, 0, 1, 1),
    (1, 8, 40, 40, 40, 1, 1, 1, 0, 1, 1),
    # batch 1 with few pixels and many taps: the forward's filters shared out between the threads, each reading its
    # own copy of the padded image; so too the input gradient's (a forward convolution of dy)
    (1, 256, 12, 12, 128, 3, 3, 1, 1, 1, 1),
    # a pointwise layer with 512 Ki weights and few pixels: forward and both gradients folded over the batch
    (3, 1024, 3, 2, 512, 1, 1, 1, 0, 1, 1),
    # strided, 512 Ki weights, few pixels: the input gradient by one product per block of whole images (4 images'
    # im2col columns a block here, so 2 blocks), then col2im
    (5, 29128, 3, 3, 2, 3, 3, 2, 1, 1, 1),
    # weight gradient with the taps as its products' rows (147 taps x 64 filters pad to a smaller area so, on every
    # ISA): 400 pixels per image, in one chunk of pixels; 9 images in 8 chunks (the partials transposed back in chunk
    # order); 1225 pixels per image in blocks of 29 and 6 whole rows (1024 pixels of 64 filters at most); two groups
    # of 64 filters
    (2, 3, 40, 40, 64, 7, 7, 2, 3, 1, 1),
    (9, 3, 40, 36, 64, 7, 7, 2, 3, 1, 1),
    (8, 3, 70, 70, 64, 7, 7, 2, 3, 1, 1),
    (2, 6, 34, 34, 128, 7, 7, 2, 3, 1, 2),
    (2, 2, 12, 30, 5, 5, 5, 1, 1, 1, 1),        # 5 filters 5x5 on 28-wide rows: one zero filter in a block of 6
    # the weight gradient in blocks of two vectors of filters (AVX-512: 33-64 filters on maps of at most 256 output
    # pixels, two images or more): 64 filters on 8 x 8; 40 filters (the last block one vector and 8 lanes) strided,
    # 10 images (image chunks of unequal sizes); 5x5 with 50 filters
    (3, 6, 8, 8, 64, 3, 3, 1, 1, 1, 1),
    (10, 5, 12, 10, 40, 3, 3, 2, 1, 1, 1),
    (2, 4, 10, 10, 50, 5, 5, 1, 2, 1, 1),
]


def _arrays(rng, case, dtype=np.float32, integer=False):
    N, C, H, W, K, R, S, stride, padding, dilation, groups = case
    draw = (lambda shape: rng.integers(-3, 4, shape)) if integer else (lambda shape: rng.standard_normal(shape))
    x = draw((N, C, H, W)).astype(dtype)
    w = draw((K, C // groups, R, S)).astype(dtype)
    b = draw((K,)).astype(dtype)
    return x, w, b, dict(stride=stride, padding=padding, dilation=dilation, groups=groups)


@pytest.mark.parametrize("case", CASES, ids=str)
def test_conv2d_matches_reference(rng, case, nthreads):
    x, w, b, kw = _arrays(rng, case)
    y = F.conv2d(x, w, b, **kw)
    expected = ref.conv2d(x, w, b, **kw)
    assert y.shape == expected.shape and y.dtype == np.float32
    np.testing.assert_allclose(y, expected, rtol=1e-4, atol=1e-4)
    dy = rng.standard_normal(y.shape).astype(np.float32)
    dx, dw, db = F.conv2d_backward(dy, x, w, **kw)
    edx, edw, edb = ref.conv2d_backward(dy, x, w, **kw)
    np.testing.assert_allclose(dx, edx, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(dw, edw, rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(db, edb, rtol=1e-4, atol=1e-3)


def _backward_exact(rng, x, w, kw, shape):
    # dy of small integers (returned): dx, dw and db equal the reference's bit for bit
    dy = rng.integers(-3, 4, shape).astype(np.float32)
    for got, want in zip(F.conv2d_backward(dy, x, w, **kw), ref.conv2d_backward(dy, x, w, **kw)):
        assert np.array_equal(got, want)
    return dy


@pytest.mark.parametrize("case", CASES, ids=str)
def test_conv2d_exact_on_small_integers(rng, case):
    x, w, b, kw = _arrays(rng, case, integer=True)
    y = F.conv2d(x, w, b, **kw)
    assert np.array_equal(y, ref.conv2d(x, w, b, **kw))
    _backward_exact(rng, x, w, kw, y.shape)


# RELIABILITY row 2: batch 0-3, channels 1-8, H/W 1-17, kernel 1-5, stride 1-4 (also > kernel), padding,
# dilation, groups
@given(n=st.integers(0, 3), groups=st.sampled_from([1, 2, 4]), cg=st.integers(1, 2), kg=st.integers(1, 2),
       h=st.integers(1, 17), w=st.integers(1, 17), r=st.integers(1, 5), s=st.integers(1, 5),
       sh=st.integers(1, 4), sw=st.integers(1, 4), ph=st.integers(0, 3), pw=st.integers(0, 3),
       dh=st.integers(1, 3), dw=st.integers(1, 3), bias=st.booleans(), seed=st.integers(0, 2**32 - 1))
def test_conv2d_property_exact(n, groups, cg, kg, h, w, r, s, sh, sw, ph, pw, dh, dw, bias, seed):
    # shapes whose kernel overhangs the padded input are rejected (covered by the bad-input tests)
    assume(dh * (r - 1) + 1 <= h + 2 * ph and dw * (s - 1) + 1 <= w + 2 * pw)
    case = (n, groups * cg, h, w, groups * kg, r, s, (sh, sw), (ph, pw), (dh, dw), groups)
    x, wt, b, kw = _arrays(np.random.default_rng(seed), case, integer=True)
    b = b if bias else None
    y = F.conv2d(x, wt, b, **kw)
    assert np.array_equal(y, ref.conv2d(x, wt, b, **kw))
    dy = np.random.default_rng(seed + 1).integers(-3, 4, y.shape).astype(np.float32)
    for got, want in zip(F.conv2d_backward(dy, x, wt, **kw), ref.conv2d_backward(dy, x, wt, **kw)):
        assert np.array_equal(got, want)


@pytest.mark.parametrize("case", [CASES[0], CASES[4], CASES[5], CASES[7]], ids=str)
def test_conv2d_float64_gradcheck(rng, case):
    x, w, b, kw = _arrays(rng, case, dtype=np.float64)
    x, w, b = x[:1, :, :5, :5].copy(), w, b
    y = F.conv2d(x, w, b, **kw)
    dy = rng.standard_normal(y.shape)
    dx, dw, db = F.conv2d_backward(dy, x, w, **kw)
    assert relative_error(dx, numerical_grad(lambda v: F.conv2d(v, w, b, **kw), x, dy)) < 1e-7
    assert relative_error(dw, numerical_grad(lambda v: F.conv2d(x, v, b, **kw), w, dy)) < 1e-7
    assert relative_error(db, numerical_grad(lambda v: F.conv2d(x, w, v, **kw), b, dy)) < 1e-7


def test_backward_skips_what_is_not_asked(rng):
    x, w, b, kw = _arrays(rng, CASES[0])
    dy = np.ones(F.conv2d(x, w, **kw).shape, np.float32)
    dx, dw, db = F.conv2d_backward(dy, x, w, input_grad=False, bias_grad=False, **kw)
    assert dx is None and db is None
    assert np.array_equal(dw, F.conv2d_backward(dy, x, w, **kw)[1])


def test_non_contiguous_input(rng):
    x, w, b, kw = _arrays(rng, CASES[0])
    xt = np.ascontiguousarray(x.transpose(0, 1, 3, 2)).transpose(0, 1, 3, 2)  # same values, Fortran-like strides
    assert not xt.flags.c_contiguous
    assert np.array_equal(F.conv2d(xt, w, b, **kw), F.conv2d(x, w, b, **kw))
    xs = np.repeat(x, 2, axis=3)[..., ::2]  # strided view
    assert np.array_equal(F.conv2d(xs, w, b, **kw), F.conv2d(x, w, b, **kw))


@pytest.mark.parametrize("case", [(4, 8, 16, 16, 16, 3, 3, 1, 1, 1, 1), (11, 6, 10, 10, 16, 5, 5, 1, 2, 1, 1),
                                  (11, 3, 9, 9, 24, 3, 3, 2, 1, 1, 1), (1, 256, 12, 12, 128, 3, 3, 1, 1, 1, 1),
                                  (1, 3, 224, 224, 8, 7, 7, 2, 3, 1, 1), (9, 1, 12, 12, 6, 5, 5, 1, 2, 1, 1),
                                  (3, 40, 20, 20, 36, 3, 3, 1, 1, 1, 1), (9, 8, 18, 18, 12, 3, 3, 1, 1, 1, 2),
                                  # taps as rows, the bias summed block by block (35 x 35 pixels, 29 rows a block)
                                  (8, 3, 70, 70, 64, 7, 7, 2, 3, 1, 1),
                                  # the weight gradient in blocks of two vectors of filters (AVX-512)
                                  (10, 5, 12, 10, 40, 3, 3, 2, 1, 1, 1)],
                         ids=str)
def test_results_identical_at_any_thread_count(rng, case):
    from convcore import _core

    x, w, b, kw = _arrays(rng, case)
    dy = rng.standard_normal(F.conv2d(x, w, b, **kw).shape).astype(np.float32)
    results = []
    for n in (1, 2, 3):
        with cc.threads(n):
            results.append((F.conv2d(x, w, b, **kw), *F.conv2d_backward(dy, x, w, **kw)))
    for other in results[1:]:
        for a, b_ in zip(results[0], other):
            assert np.array_equal(a, b_)
    # the bias gradient summed in the weight gradient's pass has the bits of the bias gradient alone
    assert np.array_equal(results[0][3], _core.conv2d_backward_bias(dy))


def test_concurrent_python_threads_match_serial(rng):
    """8 Python threads calling conv forward and backward at once (GIL released) get the serial results."""
    x, w, b, kw = _arrays(rng, (2, 4, 9, 9, 6, 3, 3, 2, 1, 1, 1))
    dy = rng.standard_normal((2, 6, 5, 5)).astype(np.float32)
    want = (F.conv2d(x, w, b, **kw), *F.conv2d_backward(dy, x, w, **kw))

    def worker(_):
        for _ in range(50):
            got = (F.conv2d(x, w, b, **kw), *F.conv2d_backward(dy, x, w, **kw))
            if not all(np.array_equal(g, e) for g, e in zip(got, want)):
                return False
        return True

    with ThreadPoolExecutor(max_workers=8) as pool:
        assert all(pool.map(worker, range(8)))


@pytest.mark.parametrize("stride,padding,dilation,groups", [(1, 0, 1, 1), (2, 1, 1, 1), (1, 2, 2, 1),
                                                            (3, 1, 1, 2), (1, 1, 1, 4)])
def test_conv1d_matches_reference(rng, stride, padding, dilation, groups):
    x = rng.standard_normal((3, 4, 17)).astype(np.float32)
    w = rng.standard_normal((8, 4 // groups, 3)).astype(np.float32)
    b = rng.standard_normal(8).astype(np.float32)
    kw = dict(stride=stride, padding=padding, dilation=dilation, groups=groups)
    kw2 = dict(stride=(1, stride), padding=(0, padding), dilation=(1, dilation), groups=groups)
    y = F.conv1d(x, w, b, **kw)
    np.testing.assert_allclose(y, ref.conv2d(x[:, :, None], w[:, :, None], b, **kw2)[:, :, 0], rtol=1e-4, atol=1e-4)
    dy = rng.standard_normal(y.shape).astype(np.float32)
    dx, dw, db = F.conv1d_backward(dy, x, w, **kw)
    edx, edw, edb = ref.conv2d_backward(dy[:, :, None], x[:, :, None], w[:, :, None], **kw2)
    np.testing.assert_allclose(dx, edx[:, :, 0], rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(dw, edw[:, :, 0], rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(db, edb, rtol=1e-4, atol=1e-3)


def test_conv1d_float64_gradcheck(rng):
    x, w, b = rng.standard_normal((2, 2, 7)), rng.standard_normal((3, 2, 3)), rng.standard_normal(3)
    kw = dict(stride=2, padding=1, dilation=1)
    dy = rng.standard_normal(F.conv1d(x, w, b, **kw).shape)
    dx, dw, db = F.conv1d_backward(dy, x, w, **kw)
    assert relative_error(dx, numerical_grad(lambda v: F.conv1d(v, w, b, **kw), x, dy)) < 1e-7
    assert relative_error(dw, numerical_grad(lambda v: F.conv1d(x, v, b, **kw), w, dy)) < 1e-7
    assert relative_error(db, numerical_grad(lambda v: F.conv1d(x, w, v, **kw), b, dy)) < 1e-7


def test_matches_torch(rng):
    torch = pytest.importorskip("torch")
    x, w, b, kw = _arrays(rng, (2, 6, 11, 9, 9, 3, 2, (2, 1), (1, 1), (1, 2), 3), dtype=np.float64)
    tx, tw, tb = (torch.tensor(a, requires_grad=True) for a in (x, w, b))
    ty = torch.nn.functional.conv2d(tx, tw, tb, **kw)
    dy = rng.standard_normal(ty.shape)
    ty.backward(torch.tensor(dy))
    y = F.conv2d(x, w, b, **kw)
    dx, dw, db = F.conv2d_backward(dy, x, w, **kw)
    for ours, theirs in ((y, ty), (dx, tx.grad), (dw, tw.grad), (db, tb.grad)):
        np.testing.assert_allclose(ours, theirs.detach().numpy(), rtol=1e-10, atol=1e-10)
    x1, w1 = x[:, :, 0], w[:, :, 0]
    t1 = torch.nn.functional.conv1d(torch.tensor(x1), torch.tensor(w1), stride=2, padding=1, groups=3)
    np.testing.assert_allclose(F.conv1d(x1, w1, stride=2, padding=1, groups=3), t1.numpy(), rtol=1e-10)


X = np.zeros((2, 4, 8, 8), np.float32)
W = np.zeros((6, 4, 3, 3), np.float32)
BAD = [
    (dict(x=X[0]), ValueError, r"x must be 4-D, got shape \(4, 8, 8\)"),
    (dict(w=W[0]), ValueError, r"w must be 4-D"),
    (dict(x=X.astype(np.int32)), TypeError, r"x has dtype int32"),
    (dict(w=W.astype(np.float64)), TypeError, r"w has dtype float64 but must match"),
    (dict(x=[[1.0]]), TypeError, r"x must be a numpy array, got list"),
    (dict(w=np.zeros((6, 3, 3, 3), np.float32)), ValueError, r"expects 3 channels, but x has shape"),
    (dict(groups=3), ValueError, r"x has 4 channels, which is not divisible by groups=3"),
    (dict(w=np.zeros((5, 2, 3, 3), np.float32), groups=2), ValueError, r"5 filters .* not divisible by groups=2"),
    (dict(groups=0), ValueError, r"groups must be >= 1, got 0"),
    (dict(stride=0), ValueError, r"stride must be >= 1, got 0"),
    (dict(stride=(1, -1)), ValueError, r"stride must be >= 1, got \(1, -1\)"),
    (dict(stride=2**63), ValueError, r"stride must be at most 2\*\*40, got 9223372036854775808"),
    (dict(dilation=0), ValueError, r"dilation must be >= 1, got 0"),
    (dict(padding=-1), ValueError, r"padding must be >= 0, got -1"),
    (dict(padding=(1, 2, 3)), ValueError, r"padding must be an int or a sequence of 2 ints"),
    (dict(stride=1.5), TypeError, r"stride must be an int or a sequence of 2 ints, got 1.5"),
    (dict(w=np.zeros((6, 4, 11, 3), np.float32)), ValueError, r"kernel height 11 .* more than the padded input"),
    (dict(w=np.zeros((6, 4, 3, 3), np.float32), dilation=5), ValueError, r"spans 11 elements"),
    (dict(b=np.zeros(5, np.float32)), ValueError, r"b must have shape \(6,\)"),
    (dict(b=np.zeros(6, np.float64)), TypeError, r"b has dtype float64"),
    (dict(b=np.zeros((6, 1), np.float32)), ValueError, r"b must be 1-D"),
    (dict(x=None), TypeError, r"x must be a numpy array, got None"),
    (dict(w=None), TypeError, r"w must be a numpy array, got None"),
    (dict(w=W.astype(np.float16)), TypeError, r"w has dtype float16"),
    (dict(x=np.zeros((1, 4, 0, 8), np.float32), padding=2), ValueError, r"x must have non-zero channels and spatial"),
    (dict(x=np.zeros((1, 0, 8, 8), np.float32), w=np.zeros((6, 0, 3, 3), np.float32)), ValueError,
     r"x must have non-zero channels"),
    (dict(w=np.zeros((0, 4, 3, 3), np.float32)), ValueError, r"w must have no zero dimension"),
    (dict(groups=-1), ValueError, r"groups must be >= 1, got -1"),
    (dict(groups=2.0), TypeError, r"groups must be an int, got 2.0"),
    (dict(stride=True), TypeError, r"stride must be an int or a sequence of 2 ints, got True"),
    (dict(stride=(1,)), ValueError, r"stride must be an int or a sequence of 2 ints, got \(1,\)"),
    (dict(padding="same"), TypeError, r"padding must be an int or a sequence of 2 ints, got 'same'"),
    (dict(dilation=None), TypeError, r"dilation must be an int or a sequence of 2 ints, got None"),
    (dict(activation="tanh"), ValueError, r"activation must be None or 'relu', got 'tanh'"),
    # a broadcast view of 2**42 elements: refused before as_tensor would copy it
    (dict(x=np.broadcast_to(np.float32(0), (1, 4, 2**20, 2**20))), ValueError, r"x would have shape"),
]


@pytest.mark.parametrize("change,exc,match", BAD, ids=[str(i) for i in range(len(BAD))])
def test_conv2d_rejects_bad_input(change, exc, match):
    args = dict(x=X, w=W, b=None)
    args.update(change)
    with pytest.raises(exc, match=match):
        F.conv2d(args.pop("x"), args.pop("w"), args.pop("b"), **args)


@pytest.mark.parametrize("call, exc, match", [
    (lambda: F.conv2d_backward(None, X, W), TypeError, r"dy must be a numpy array, got None"),
    (lambda: F.conv2d_backward(np.zeros((2, 6, 6, 6)), X, W), TypeError, r"dy has dtype float64 but must match"),
    (lambda: F.conv2d_backward(np.zeros((2, 6, 6, 6), np.float32), X, W, padding=1), ValueError,
     r"dy must have the output's shape \(2, 6, 8, 8\)"),
    (lambda: F.conv2d_backward(np.zeros((2, 6, 6, 6), np.float32), X, W, input_grad="no"), TypeError,
     r"input_grad must be a bool, got 'no'"),
    (lambda: F.conv2d_backward(np.zeros((2, 6, 6, 6), np.float32), X, W, bias_grad=None), TypeError,
     r"bias_grad must be a bool, got None"),
    (lambda: F.conv1d_backward(np.zeros((2, 6, 5), np.float32), X[:, :, 0], W[:, :, 0]), ValueError,
     r"dy must have the output's shape \(2, 6, 6\), got \(2, 6, 5\)"),
])
def test_backward_rejects_bad_input(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


def test_backward_rejects_wrong_dy_shape():
    with pytest.raises(ValueError, match=r"dy must have the output's shape \(2, 6, 6, 6\), got \(2, 6, 5, 6\)"):
        F.conv2d_backward(np.zeros((2, 6, 5, 6), np.float32), X, W)
    with pytest.raises(ValueError, match=r"dy must be 3-D"):
        F.conv1d_backward(np.zeros((2, 6, 5, 6), np.float32), X[:, :, 0], W[:, :, 0])


def test_conv1d_rejects_bad_input():
    with pytest.raises(ValueError, match=r"x must be 3-D"):
        F.conv1d(X, W[:, :, 0])
    with pytest.raises(ValueError, match=r"kernel length 9 .* padded input length 8"):
        F.conv1d(X[:, :, 0], np.zeros((6, 4, 9), np.float32))
    with pytest.raises(ValueError, match=r"stride must be an int or a sequence of 1 ints"):
        F.conv1d(X[:, :, 0], W[:, :, 0], stride=(1, 1))


def test_validation_cache_never_lets_a_bad_call_through():
    # stride=1 is validated once and then cached; True and 1.0 equal 1 but must still be refused, every time
    F.conv2d(X, W, stride=1, padding=(1, 1))
    for _ in range(2):
        with pytest.raises(TypeError, match=r"stride must be an int or a sequence of 2 ints, got True"):
            F.conv2d(X, W, stride=True, padding=(1, 1))
        with pytest.raises(TypeError, match=r"stride must be an int or a sequence of 2 ints, got \(1, True\)"):
            F.conv2d(X, W, stride=(1, True), padding=(1, 1))
        with pytest.raises(TypeError, match=r"padding must be an int or a sequence of 2 ints, got 1.0"):
            F.conv2d(X, W, stride=1, padding=1.0)
        with pytest.raises(ValueError, match=r"kernel height 3 .* padded input height"):
            F.conv2d(X[:, :, :1, :1], W)
    # a cached geometry answers for its own shapes only: another batch size gets its own output shape
    assert F.conv2d(X[:1], W, stride=1, padding=(1, 1)).shape[0] == 1


def test_padding_past_what_the_kernels_could_copy_is_refused():
    # strides and paddings near 2**40 keep the output small (3 x 2 here), but the zero-padded, phase-split copy of x
    # the im2col route makes, (2**41 + 2) x 2**24 floats, took 64-bit offsets past 2**63: they wrapped, and output row
    # 0 read row 1's window (y[0, 0, 0, 1] came out 7, not 0). Refused before any kernel runs, forward and backward.
    x = np.zeros((1, 1, 2, 2**22 + 1), np.float32)
    w = np.ones((1, 1, 1, 1), np.float32)
    kw = dict(stride=(2**40, 2**23), padding=(2**40, 2**22))
    with pytest.raises(ValueError, match=r"the zero-padded input would have shape \(1, 1, 2199023255554, 12582913\)"):
        F.conv2d(x, w, **kw)
    with pytest.raises(ValueError, match="the zero-padded input would have shape"):
        F.conv2d_backward(np.zeros((1, 1, 3, 2), np.float32), x, w, **kw)


def test_absurd_output_refused_before_allocating():
    # (1, 2**20, 2**21 + 1, 2**21 + 1) outputs would need ~18 PB: refused by the size check, nothing allocated
    x = np.zeros((1, 1, 1, 1), np.float32)
    w = np.zeros((2**20, 1, 1, 1), np.float32)
    with pytest.raises(ValueError, match=r"the output would have shape \(1, 1048576, 2097153, 2097153\)"):
        F.conv2d(x, w, padding=2**20)


def _core_args(x, w, kw):
    from convcore.functional.conv import _geometry

    geom, _ = _geometry(x.shape, w.shape, kw["stride"], kw["padding"], kw["dilation"], kw["groups"], 2)
    return geom


@pytest.mark.parametrize("case", CASES, ids=str)
def test_fast_kernels_equal_reference_kernels_for_every_isa(isa, rng, case):
    from convcore import _core

    x, w, b, kw = _arrays(rng, case, integer=True)
    geom = _core_args(x, w, kw)
    for relu in (False, True):
        fast = _core.conv2d_forward(x, w, b, geom, relu, False)
        slow = _core.conv2d_forward(x, w, b, geom, relu, True)
        assert np.array_equal(fast, slow)
    dy = rng.integers(-3, 4, fast.shape).astype(np.float32)
    for input_grad in (False, True):
        fast = _core.conv2d_backward(dy, x, w, geom, input_grad, True, False)
        slow = _core.conv2d_backward(dy, x, w, geom, input_grad, True, True)
        assert (fast[0] is None) == (not input_grad)
        for a, b in zip(fast, slow):
            assert (a is None and b is None) or np.array_equal(a, b)
    assert np.array_equal(_core.conv2d_backward_bias(dy, False), _core.conv2d_backward_bias(dy, True))


FEW_FILTER_CASES = [
    (3, 6, 28, 28, 1, 5, 5, 1, 2, 1, 1),    # one filter, rows of two vectors (LeNet conv1's input gradient)
    (2, 8, 12, 9, 1, 3, 3, 1, 1, 1, 1),     # one filter, rows of one vector: 12 rows, in blocks of 8 (AVX2's 6)
    (2, 5, 13, 37, 1, 3, 3, 1, 0, 1, 1),    # one filter, 11 rows (blocks of 4 or 3 and a remainder), 35 columns
    (1, 2, 9, 9, 1, 7, 7, 1, 3, 1, 1),      # one filter, 7-wide kernel
    (2, 7, 9, 40, 2, 5, 5, 1, 2, 1, 1),     # two filters in a block of 4
    (2, 16, 32, 32, 3, 3, 3, 1, 1, 1, 1),   # three (a 3-channel layer's input gradient), rows of two vectors
    (2, 16, 10, 10, 3, 5, 5, 1, 2, 1, 1),   # three, rows of one vector
    (2, 4, 15, 14, 4, 3, 3, 1, 1, 1, 1),    # four, 15 rows
    (2, 32, 12, 12, 1, 3, 3, 1, 1, 1, 1),   # one filter of 288 taps: its weight gradient direct (not GEMM)
    (2, 44, 8, 8, 2, 3, 3, 1, 1, 1, 1),     # two of 396 taps: the weight gradient in a block of 3
    (2, 1, 28, 28, 6, 5, 5, 1, 2, 1, 1),    # a one-channel layer: its input gradient convolves with one filter
    (2, 3, 32, 32, 16, 3, 3, 1, 1, 1, 1),   # a three-channel layer: three
]


@pytest.mark.parametrize("case", FEW_FILTER_CASES, ids=str)
def test_direct_forward_with_few_filters(isa, rng, case):
    # up to 4 filters (or input channels, for the input gradient by the transposed convolution) in blocks of 1 or 4
    # with rows in blocks of up to 8, and their weight gradients by the direct kernel in blocks of 1 or 3: exact on
    # small integers against the reference kernels, forward (with and without ReLU) and backward, at 1 and 2 threads
    from convcore import _core

    x, w, b, kw = _arrays(rng, case, integer=True)
    geom = _core_args(x, w, kw)
    dy = rng.integers(-3, 4, F.conv2d(x, w, **kw).shape).astype(np.float32)
    want = [_core.conv2d_forward(x, w, b, geom, relu, True) for relu in (False, True)]
    want_back = _core.conv2d_backward(dy, x, w, geom, True, True, True)
    for n in (1, 2):
        with cc.threads(n):
            for relu, expected in zip((False, True), want):
                assert np.array_equal(_core.conv2d_forward(x, w, b, geom, relu, False), expected), (n, relu)
            for got, expected in zip(_core.conv2d_backward(dy, x, w, geom, True, True, False), want_back):
                assert np.array_equal(got, expected), n


@pytest.mark.parametrize("multiplier, stride", [(1, 1), (2, 1), (1, 2), (3, (2, 1))])
def test_depthwise_direct_path_exact_and_thread_independent(rng, multiplier, stride):
    # rows of 21 and 19 pixels: full 8-lane runs and remainders in the weight gradient's partial sums
    C = 6
    x, w, b, kw = _arrays(rng, (3, C, 21, 19, C * multiplier, 3, 3, stride, 1, 1, C), integer=True)
    y = F.conv2d(x, w, b, **kw)
    assert np.array_equal(y, ref.conv2d(x, w, b, **kw))
    assert np.array_equal(F.conv2d(x, w, b, activation="relu", **kw), np.maximum(y, 0))
    _backward_exact(rng, x, w, kw, y.shape)
    # 4 x 8 x 40 x 37 images: above the serial threshold, so the planes and filters are split over threads
    x, w, b, kw = _arrays(rng, (4, 8, 40, 37, 8 * multiplier, 3, 3, stride, 1, 1, 8))
    dy = rng.standard_normal(F.conv2d(x, w, **kw).shape).astype(np.float32)
    results = []
    for n in (1, 2, 3):
        with cc.threads(n):
            results.append((F.conv2d(x, w, b, **kw), *F.conv2d_backward(dy, x, w, **kw)))
    for other in results[1:]:
        for a, b_ in zip(results[0], other):
            assert np.array_equal(a, b_)


def test_fused_relu_and_its_backward(rng):
    x, w, b, kw = _arrays(rng, CASES[0])
    y = F.conv2d(x, w, b, activation="relu", **kw)
    assert np.array_equal(y, np.maximum(F.conv2d(x, w, b, **kw), 0))
    dy = rng.standard_normal(y.shape).astype(np.float32)
    z = ref.conv2d(x, w, b, **kw)
    expected = ref.conv2d_backward(dy * (z > 0), x, w, **kw)
    for got, want in zip(F.conv2d_backward(F.relu_backward(dy, y), x, w, **kw), expected):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-3)
    with pytest.raises(ValueError, match=r"activation must be None or 'relu', got 'gelu'"):
        F.conv2d(x, w, activation="gelu")
    assert np.array_equal(F.conv1d(x[:, :, 0], w[:, :, 0], activation="relu"),
                          np.maximum(F.conv1d(x[:, :, 0], w[:, :, 0]), 0))


@pytest.mark.parametrize("case", [
    # F(4x4, 3x3), 2 x 25 tile rows of 16 tiles: on one thread one shared block, on two threads blocks of 12 tile
    # rows taken by one thread each (the last of 2), on three blocks of 8 (a sixth of the tile rows)
    (2, 48, 100, 64, 40, 3, 3, 1, 1, 1, 1),
    # F(2x2, 3x3) (10 x 10 maps: F(4x4) would compute 0.81 of its products), 150 x 5 tile rows of 5 tiles: more than
    # one block of whole tile rows (at most 4 Mi floats of V and M), on one thread shared blocks of 595 tile rows, on
    # two threads blocks of 148 taken by one thread each, on three blocks of 125 (as 148 leave a thread fewer than two)
    (150, 48, 10, 10, 40, 3, 3, 1, 1, 1, 1),
    # one image of 28 tile rows of 28 tiles: one shared block on one thread, on two threads four blocks of 7 rows
    # (196 tiles), on three seven of 4 rows (112 tiles), each thread with its own transformed filters
    (1, 16, 56, 56, 40, 3, 3, 1, 1, 1, 1),
    # 16 tile rows of 16 (CIFAR's 32 x 32): on two threads four blocks of 64 tiles, on three one shared block
    (1, 16, 32, 32, 40, 3, 3, 1, 1, 1, 1),
])
def test_winograd_over_several_tile_blocks(rng, case):
    x, w, b, kw = _arrays(rng, case, integer=True)
    results = []
    for n in (1, 2, 3):
        with cc.threads(n):
            results.append(F.conv2d(x, w, b, activation="relu", **kw))
    assert np.array_equal(results[0], np.maximum(ref.conv2d(x, w, b, **kw), 0))
    assert np.array_equal(results[0], results[1])
    assert np.array_equal(results[0], results[2])


@pytest.mark.parametrize("case", [
    # layers the Winograd route runs as F(4x4, 3x3) (products at most 0.6 of F(2x2)'s, N*P*Q*C*K >= 2^23):
    (12, 128, 7, 7, 128, 3, 3, 1, 1, 1, 1),  # 7 x 7 maps: 2 tiles a row, four tile rows a vector
    (2, 64, 27, 27, 96, 3, 3, 1, 1, 1, 1),   # overhanging last tile rows and columns, two tile rows a vector
    (4, 64, 26, 26, 64, 3, 3, 1, 2, 1, 1),   # padding 2: tiles reading only padding
    (1, 64, 56, 56, 64, 3, 3, 1, 1, 1, 1),   # 14 tiles a row, blocks of each thread's own on 2 and 3 threads
])
def test_winograd_4x4_tiles(rng, case):
    # exact on small integers at 1, 2 and 3 threads (the transforms keep integers, the division by 36 is correctly
    # rounded); on normal data within 1e-5 of the largest sum of |x| |w| over a window (F(4x4)'s transforms scale
    # the products up to 49 x 100 times before they cancel: measured up to 2e-6 of it, F(2x2)'s 1e-7)
    x, w, b, kw = _arrays(rng, case, integer=True)
    want = np.maximum(ref.conv2d(x, w, b, **kw), 0)
    for n in (1, 2, 3):
        with cc.threads(n):
            assert np.array_equal(F.conv2d(x, w, b, activation="relu", **kw), want), n
    # the input gradient by the transposed route: a forward convolution of dy of the same size
    dy = rng.integers(-3, 4, want.shape).astype(np.float32)
    for got, expected in zip(F.conv2d_backward(dy, x, w, **kw), ref.conv2d_backward(dy, x, w, **kw)):
        assert np.array_equal(got, expected)
    x, w, b, kw = _arrays(rng, case)
    scale = ref.conv2d(np.abs(x), np.abs(w), None, **kw)
    assert np.abs(F.conv2d(x, w, b, **kw) - ref.conv2d(x, w, b, **kw)).max() <= 1e-5 * scale.max()


@pytest.mark.parametrize("case, tile", [
    # layers whose weight gradient takes Winograd (at least 128 channels and filters, 192 output tiles, none
    # overhanging much), F(2x2, 3x3) with fewer than 192 4x4 tiles or rows of fewer than 14:
    ((1, 128, 28, 28, 128, 3, 3, 1, 1, 1, 1), 2),  # 196 tiles in one block
    ((2, 128, 26, 24, 144, 3, 3, 1, 0, 1, 1), 2),  # no padding, 12 x 11 tiles a map
    ((1, 136, 33, 33, 128, 3, 3, 1, 2, 1, 1), 2),  # padding 2, odd maps (an overhanging tile row and column)
    # F(4x4, 3x3) with 192 or more and rows of 14 or more:
    ((1, 128, 56, 56, 136, 3, 3, 1, 1, 1, 1), 4),  # 14 x 14 4x4 tiles
    ((1, 128, 59, 61, 128, 3, 3, 1, 0, 1, 1), 4),  # no padding, 57 x 59 outputs: an overhanging tile row and column
], ids=str)
def test_winograd_weight_gradient(rng, case, tile):
    # exact on small integers at 1, 2 and 3 threads (the transforms add and subtract integers, G's halves go into one
    # exact multiplication by 1/4, F(4x4)'s scales into a division by 36); on normal data within 1e-6 of the largest
    # sum of |x| |dy| over an element's products with F(2x2) tiles (measured up to ~3e-7), 5e-6 with F(4x4)'s (~1.3e-6).
    # (That layers like these take the Winograd route, by the tile given, is checked in C++: test_winograd's
    # conv2d_winograd_weight_applies and conv2d_winograd_weight_tile cases; a wrong coefficient fails the cases here.)
    x, w, _, kw = _arrays(rng, case, integer=True)
    dy = rng.integers(-3, 4, ref.conv2d(x, w, None, **kw).shape).astype(np.float32)
    want = ref.conv2d_backward(dy, x, w, **kw)
    for n in (1, 2, 3):
        with cc.threads(n):
            dx, dw, db = F.conv2d_backward(dy, x, w, **kw)
            assert np.array_equal(dw, want[1]) and np.array_equal(db, want[2]) and np.array_equal(dx, want[0]), n
    x, w, _, kw = _arrays(rng, case)
    dy = rng.standard_normal(ref.conv2d(x, w, None, **kw).shape).astype(np.float32)
    scale = ref.conv2d_backward(np.abs(dy), np.abs(x), w, **kw)[1]
    got = F.conv2d_backward(dy, x, w, input_grad=False, **kw)[1]
    assert np.abs(got - ref.conv2d_backward(dy, x, w, **kw)[1]).max() <= (1e-6 if tile == 2 else 5e-6) * scale.max()


def test_winograd_from_49_tiles(rng):
    # a 3x3 layer of 14 x 14 outputs (49 tiles) takes Winograd at batch 1, as in a batch of two: the same bits
    # (Winograd's products sum each output over the channels whatever the batch; the im2col GEMM rounds otherwise)
    x = rng.standard_normal((2, 128, 14, 14)).astype(np.float32)
    w = (0.1 * rng.standard_normal((128, 128, 3, 3))).astype(np.float32)
    for n in (1, 2):
        with cc.threads(n):
            assert np.array_equal(F.conv2d(x[:1], w, padding=1), F.conv2d(x, w, padding=1)[:1]), n
    np.testing.assert_allclose(F.conv2d(x[:1], w, padding=1), ref.conv2d(x[:1], w, padding=1), rtol=1e-4, atol=1e-4)


def test_winograd_filters_shared_out_between_threads(isa, rng):
    # 293 filters at batch 1 (at least 96 a thread at 2 and 3 threads): each thread transforms its run of the filters
    # (runs of whole row panels, the last one partial: 37 panels of 8 rows, 49 of 6, 25 of 12; unequal runs at 2 and
    # 3 threads) and all the inputs itself, and computes its filters' products and outputs: exact on small integers,
    # with each filter's bias and ReLU, at 2, 3 and 1 threads (several threads first: a buffer left by a one-thread
    # run could hold a missed row's values)
    x, w, b, kw = _arrays(rng, (1, 16, 14, 14, 293, 3, 3, 1, 1, 1, 1), integer=True)
    want = ref.conv2d(x, w, b, **kw)
    for n in (2, 3, 1):
        with cc.threads(n):
            assert np.array_equal(F.conv2d(x, w, b, **kw), want), n
            assert np.array_equal(F.conv2d(x, w, b, activation="relu", **kw), np.maximum(want, 0)), n


def test_a_stride_past_the_input_costs_no_memory():
    # one output along an axis takes the same window whatever the stride: the same results as the smallest such
    # stride, and no workspace that grows with it (a stride of 10**7 took 443 MB, 10**9 would take ~40 GB)
    rng = np.random.default_rng(0)
    x, w = rng.integers(-3, 4, (2, 3, 9, 7)).astype(np.float32), rng.integers(-3, 4, (4, 3, 3, 3)).astype(np.float32)
    for huge, small in (((10**9, 1), (11, 1)), ((1, 10**9), (1, 9)), (10**9, (11, 9))):
        y = F.conv2d(x, w, stride=huge, padding=1)
        assert np.array_equal(y, F.conv2d(x, w, stride=small, padding=1))
        dy = rng.integers(-3, 4, y.shape).astype(np.float32)
        for got, want in zip(F.conv2d_backward(dy, x, w, stride=huge, padding=1),
                             F.conv2d_backward(dy, x, w, stride=small, padding=1)):
            assert np.array_equal(got, want)


@pytest.mark.parametrize("value", [np.inf, -np.inf, np.nan])
@pytest.mark.parametrize("n,hw", [(2, 14), (1, 32)])
def test_winograd_keeps_infinities_as_the_direct_sum_does(isa, rng, value, n, hw):
    # Winograd's transforms subtract inputs (inf - inf = NaN); with an infinity or NaN in x, w or (for the input
    # gradient's transposed route) dy the layer runs another path: non-finite outputs exactly where the float64
    # reference has them, of the same sign, and the finite ones close (one shared block of tiles; at 32 x 32, on two
    # threads, blocks of each thread's own)
    x, w, b, kw = _arrays(rng, (n, 20, hw, hw, 48, 3, 3, 1, 1, 1, 1), integer=True)
    dy = rng.integers(-3, 4, (n, 48, hw, hw)).astype(np.float32)

    def same_as_reference(got, want):
        _same_non_finite(got, want)
        finite = np.isfinite(want)
        np.testing.assert_allclose(got[finite], want[finite], rtol=1e-5, atol=1e-3)

    x_bad, w_bad, dy_bad = x.copy(), w.copy(), dy.copy()
    x_bad[n - 1, 3, 6, 7], w_bad[5, 2, 1, 1], dy_bad[0, 7, 9, 2] = value, value, value
    f64 = lambda *arrays: [a.astype(np.float64) for a in arrays]
    with cc.threads(2):  # the blocks as described (at 32 x 32 on three threads one shared block)
        same_as_reference(F.conv2d(x_bad, w, b, **kw), ref.conv2d(*f64(x_bad, w, b), **kw))
        same_as_reference(F.conv2d(x, w_bad, b, **kw), ref.conv2d(*f64(x, w_bad, b), **kw))
        same_as_reference(F.conv2d_backward(dy_bad, x, w, **kw)[0], ref.conv2d_backward(*f64(dy_bad, x, w), **kw)[0])


@pytest.mark.parametrize("value", [np.inf, -np.inf, np.nan])
def test_winograd_weight_gradient_keeps_infinities(rng, value):
    # an infinity or NaN in x or dy: the weight gradient runs another path (Winograd's transforms would give inf - inf
    # = NaN): non-finite elements exactly where the float64 reference has them, the finite ones close
    x, w, _, kw = _arrays(rng, (1, 128, 28, 28, 128, 3, 3, 1, 1, 1, 1), integer=True)
    dy = rng.integers(-3, 4, (1, 128, 28, 28)).astype(np.float32)
    x_bad, dy_bad = x.copy(), dy.copy()
    x_bad[0, 3, 6, 7], dy_bad[0, 7, 9, 2] = value, value
    f64 = lambda *arrays: [a.astype(np.float64) for a in arrays]
    for args in ((dy, x_bad, w), (dy_bad, x, w)):
        got, want = F.conv2d_backward(*args, input_grad=False, **kw)[1], ref.conv2d_backward(*f64(*args), **kw)[1]
        _same_non_finite(got, want)
        finite = np.isfinite(want)
        np.testing.assert_allclose(got[finite], want[finite], rtol=1e-5, atol=1e-3)


def _kinds(a):
    # 0 finite, 1 +inf, 2 -inf, 3 NaN
    return np.select([np.isnan(a), np.isposinf(a), np.isneginf(a)], [3, 1, 2], 0)


def _same_non_finite(got, want):
    # infinities and NaN where the float64 reference has them, of the same sign
    assert np.array_equal(_kinds(got), _kinds(want))


@pytest.mark.parametrize("case", [
    (2, 6, 14, 14, 16, 5, 5, 1, 0, 1, 1),     # LeNet conv2 (no padding: dy's transposed copy is padded by 4)
    (2, 6, 14, 13, 16, 5, 5, 1, 0, 1, 1),     # dy's channels in the lanes (AVX-512, AVX2), its rows of 9 read as 10
    (2, 1, 12, 12, 6, 5, 5, 1, 2, 1, 1),      # LeNet conv1-like, padding 2
    (2, 3, 7, 9, 4, 3, 3, 1, 1, 1, 1),        # 3x3, padding 1
    (2, 48, 10, 10, 40, 3, 3, 1, 1, 1, 1),    # the transposed route by Winograd
    (2, 4, 10, 8, 4, 3, 2, 1, (2, 1), (2, 3), 1),  # dilated, uneven padding
], ids=str)
def test_input_gradient_of_a_non_finite_weight_sums_only_dys_elements(isa, rng, case):
    # dx[c][h][w] sums w[k][c][r][t] * dy[k][p][q] over the (p, q) inside dy; the input gradient as the transposed
    # convolution reads dy zero-padded, and a non-finite weight times that padding (inf * 0) gave NaN in dx where the
    # sum is finite: with a non-finite weight dx takes a route that multiplies only dy's elements
    x, w, b, kw = _arrays(rng, case)
    dy = rng.standard_normal(F.conv2d(x, w, b, **kw).shape).astype(np.float32)
    f64 = lambda *arrays: [a.astype(np.float64) for a in arrays]
    taps = [(0, 0, 0, 0), (w.shape[0] - 1, w.shape[1] - 1, w.shape[2] - 1, w.shape[3] - 1), (1, 0, 1, 0)]
    for tap in taps:
        for value in (np.inf, -np.inf, np.nan):
            w_bad = w.copy()
            w_bad[tap] = value
            got = F.conv2d_backward(dy, x, w_bad, **kw)[0]
            want = ref.conv2d_backward(*f64(dy, x, w_bad), **kw)[0]
            _same_non_finite(got, want)
            assert np.isfinite(want).any()  # the case has dx elements the bad tap never meets
            finite = np.isfinite(want)
            np.testing.assert_allclose(got[finite], want[finite], rtol=1e-5, atol=1e-4)


@pytest.mark.slow
def test_non_finite_values_land_where_the_reference_or_the_exact_sum_puts_them(isa):
    # an infinity or NaN in x, w or dy (first, last and random elements) over every case of this file: each output,
    # dx, dw and db element is finite, +-inf or NaN as the float64 reference has it, or as the exact sum does (the
    # reference multiplies padding zeros, which the sum skips: w's infinity there gives NaN or not by route). The exact
    # sum: the bad value as +-1e300 in float64, whose outputs it reaches are huge
    rng = np.random.default_rng(7)
    mismatches = []
    with np.errstate(invalid="ignore"):  # the references' inf * 0 and inf - inf are the point
        _non_finite_sweep(rng, mismatches)
    assert not mismatches, mismatches[:10]


def _non_finite_sweep(rng, mismatches):
    for case in CASES + ROW_WINOGRAD_CASES + ROW_WINOGRAD_WEIGHT_CASES:
        if case[0] == 0:
            continue
        x, w, b, kw = _arrays(rng, case)
        dy = rng.standard_normal(ref.conv2d(x, w, b, **kw).shape).astype(np.float32)
        forward = lambda x_, w_, b_, dy_: [ref.conv2d(x_, w_, b_, **kw)]
        backward = lambda x_, w_, b_, dy_: list(ref.conv2d_backward(dy_, x_, w_, **kw))
        for slot, name in ((0, "x"), (1, "w"), (3, "dy")):
            shape = (x, w, b, dy)[slot].shape
            spots = {(0, 0, 0, 0), tuple(d - 1 for d in shape), (0, 0, 0, shape[3] - 1),
                     *(tuple(int(rng.integers(d)) for d in shape) for _ in range(2))}
            for spot in spots:
                for value in (np.inf, -np.inf, np.nan):
                    arrays = [x.copy(), w.copy(), b, dy.copy()]
                    arrays[slot][spot] = value
                    exact = [a.astype(np.float64) for a in (x, w, b, dy)]
                    exact[slot][spot] = -1e300 if value == -np.inf else 1e300
                    runs = [(("dx", "dw", "db"), backward, F.conv2d_backward(arrays[3], *arrays[:2], **kw))]
                    if slot != 3:
                        runs.append((("y",), forward, [F.conv2d(*arrays[:3], **kw)]))
                    for names, oracle, got in runs:
                        want = oracle(*[a.astype(np.float64) for a in arrays])
                        for out, g, r, e in zip(names, got, want, oracle(*exact)):
                            big = np.abs(e) > 1e200
                            e = np.where(big, np.nan if np.isnan(value) else np.copysign(np.inf, e), e)
                            off = (_kinds(g) != _kinds(r)) & (_kinds(g) != _kinds(e))
                            if off.any():
                                mismatches.append((case, name, spot, value, out, int(off.sum())))


@pytest.mark.parametrize("stride", [1, 2])
def test_batch1_padded_copy_on_the_threads(rng, stride):
    # one image of 48 x 24 x 24 floats (past 2**14): its zero-padded (and, strided, phase-split) copy, which the
    # im2col and the weight gradient read, is written by channel planes (stride 1) or rows (stride 2) on the threads
    x, w, b, kw = _arrays(rng, (1, 48, 24, 24, 40, 3, 3, stride, 1, 1, 1), integer=True)
    dy = rng.integers(-3, 4, F.conv2d(x, w, **kw).shape).astype(np.float32)
    expected = (ref.conv2d(x, w, b, **kw), *ref.conv2d_backward(dy, x, w, **kw))
    for n in (1, 2, 3):
        with cc.threads(n):
            for got, want in zip((F.conv2d(x, w, b, **kw), *F.conv2d_backward(dy, x, w, **kw)), expected):
                assert np.array_equal(got, want)


@pytest.mark.parametrize("case", [
    (1, 16, 32, 32, 20, 3, 3, 1, 1, 1, 1),  # direct, 32-pixel rows: blocks of 8 filters (the last of 4) shared out
    (1, 32, 16, 16, 24, 3, 3, 1, 1, 1, 1),  # direct, 16-pixel rows: blocks of 16 filters (the last of 8)
    (1, 64, 8, 8, 40, 3, 3, 1, 1, 1, 1),    # filter-vector, two vectors a block: 32 filters and 8
    (1, 64, 8, 8, 128, 3, 3, 1, 1, 1, 1),   # filter-vector, 72 Ki weights in 4 blocks
    (1, 16, 32, 32, 24, 3, 3, 2, 1, 1, 1),  # filter-vector, strided: its one block of two vectors run as two of one
    (1, 128, 4, 4, 24, 3, 3, 1, 1, 1, 1),   # filter-vector on 4-pixel rows (AVX2's too)
    (1, 64, 16, 16, 12, 3, 3, 2, 1, 1, 1),  # AVX2's one block of two vectors run as two of one
    (1, 320, 16, 8, 8, 3, 3, 2, 1, 1, 1),   # the portable kernels' one block of two vectors run as two of one
], ids=str)
def test_batch1_forward_shares_filter_blocks_over_threads(isa, rng, case):
    # one image's filter blocks go to the threads, each packing its own weights and padding its own copy: every
    # output is the reference's at 1, 2 and 3 threads (small integers: exact), and on random floats has the same bits
    # at any thread count (where a shared one-block layer runs as blocks of one vector, so each lane's sum must round
    # as the two-vector kernel's does)
    x, w, b, kw = _arrays(rng, case, integer=True)
    expected = ref.conv2d(x, w, b, **kw)
    xf, wf, bf, _ = _arrays(rng, case)
    for relu in (False, True):
        activation = "relu" if relu else None
        floats = []
        for n in (1, 2, 3):
            with cc.threads(n):
                got = F.conv2d(x, w, b, activation=activation, **kw)
                floats.append(F.conv2d(xf, wf, bf, activation=activation, **kw))
            assert np.array_equal(got, np.maximum(expected, 0) if relu else expected), (n, relu)
        for other in floats[1:]:
            assert np.array_equal(other, floats[0]), relu


@pytest.mark.parametrize("case", [
    (1, 128, 28, 28, 256, 1, 1, 2, 0, 1, 1),  # ResNet-18's second shortcut: 14-pixel output rows
    (1, 256, 14, 14, 512, 1, 1, 2, 0, 1, 1),  # its third: 7-pixel rows
    (3, 32, 15, 16, 64, 1, 1, 2, 0, 1, 1),    # odd map height, a batch
], ids=str)
def test_strided_pointwise_forward(isa, rng, case):
    # 1x1 strided layers (downsampling shortcuts), which go to the im2col GEMM (not the filter-vector kernel, whose
    # rows they would fit): the reference's outputs (small integers: exact) at 1 to 3 threads, with and without ReLU
    x, w, b, kw = _arrays(rng, case, integer=True)
    expected = ref.conv2d(x, w, b, **kw)
    for n in (1, 2, 3):
        with cc.threads(n):
            assert np.array_equal(F.conv2d(x, w, b, **kw), expected), n
            assert np.array_equal(F.conv2d(x, w, b, activation="relu", **kw), np.maximum(expected, 0)), n


def test_large_layer_fast_matches_reference_and_is_thread_independent(rng):
    # big enough for blocked K (C*R*S > 256), several column blocks in the input gradient, and image chunks
    x, w, b, kw = _arrays(rng, (9, 40, 12, 12, 20, 3, 3, 1, 1, 1, 1), integer=True)
    dy = rng.integers(-3, 4, (9, 20, 12, 12)).astype(np.float32)
    results = []
    for n in (1, 2, 3, 4):
        with cc.threads(n):
            results.append((F.conv2d(x, w, b, **kw), *F.conv2d_backward(dy, x, w, **kw)))
    expected = (ref.conv2d(x, w, b, **kw), *ref.conv2d_backward(dy, x, w, **kw))
    for got, want in zip(results[0], expected):
        assert np.array_equal(got, want)
    for other in results[1:]:
        for a, b_ in zip(results[0], other):
            assert np.array_equal(a, b_)


FUSED_WINOGRAD_CASES = [  # F(2x2, 3x3): fewer than 256 4x4 tiles a batch, or 4x4 tiles leaving lanes idle
    (2, 16, 32, 32, 16, 3, 3, 1, 1, 1, 1),   # ResNet-20's first stage: 16 tiles a row (a vector on AVX-512)
    (3, 32, 16, 16, 32, 3, 3, 1, 1, 1, 1),   # its second stage: 8 tiles a row, two tile rows a vector on AVX-512
    (1, 20, 17, 15, 24, 3, 3, 1, 1, 1, 1),   # odd rows and columns (overhanging tiles), 24 filters (blocks of 8, 16)
    (2, 16, 13, 33, 32, 3, 3, 1, 0, 1, 1),   # no padding: 11 x 31 outputs
    (1, 32, 9, 47, 16, 3, 3, 1, (1, 0), 1, 1),  # 45-wide rows: 23 tiles, the last vector of a row in part
    (2, 64, 8, 8, 64, 3, 3, 1, 1, 1, 1),     # its third stage: 4 tiles a row, four tile rows a vector on AVX-512
    (1, 48, 7, 7, 64, 3, 3, 1, 1, 1, 1),     # 7 x 7: overhanging tiles; one image's filters split over the threads
    (3, 16, 9, 8, 40, 3, 3, 1, (0, 1), 1, 1),   # 7 x 8 outputs, 40 filters (a partial block of 16 or 8)
    (2, 16, 8, 8, 32, 3, 3, 1, 1, 1, 1),     # the filter-vector kernel's block (32 filters) is the fused kernel's key
]
FUSED_QUAD_CASES = [  # F(4x4, 3x3) (conv2d_winograd_fused_tile; on AVX2 and AVX-512 alike): 256 4x4 tiles a batch
    (4, 16, 32, 32, 16, 3, 3, 1, 1, 1, 1),   # ResNet-20's first stage: two tile rows a vector on AVX-512
    (16, 32, 16, 16, 32, 3, 3, 1, 1, 1, 1),  # its second: four tile rows a vector on AVX-512, two on AVX2
    (4, 20, 31, 29, 24, 3, 3, 1, 1, 1, 1),   # 31 x 29 outputs: overhanging tiles; 20 channels, 24 filters
    (4, 16, 59, 19, 16, 3, 3, 1, 1, 1, 1),   # 5 tiles a row: a last group of tile rows in part (AVX-512), lanes idle
    (5, 16, 15, 49, 16, 3, 3, 1, 1, 1, 1),   # 13 tiles a row: one tile row a vector on AVX-512, its last in part
]


def _widened(x, w):
    # x and w with zero channels appended: the direct and filter-vector kernels sum the same taps and then +0.0 terms,
    # the same bits as for x and w, on a route the fused Winograd kernel does not take (more than 32 channels with rows
    # of 15 outputs or more, more than 64 with rows of 7 or 8)
    pad = (40 if x.shape[3] >= 15 else 72) - x.shape[1]
    return (np.concatenate([x, np.zeros((x.shape[0], pad) + x.shape[2:], x.dtype)], 1),
            np.concatenate([w, np.zeros((w.shape[0], pad) + w.shape[2:], w.dtype)], 1))


@pytest.mark.parametrize("case, tile", [(c, 2) for c in FUSED_WINOGRAD_CASES] + [(c, 4) for c in FUSED_QUAD_CASES],
                         ids=str)
def test_fused_winograd_forward(isa, rng, case, tile):
    # 3x3 layers of 16 to 32 channels and filters with rows of at least 15 outputs, or up to 64 on rows of 7 or 8, run
    # the fused Winograd kernel on AVX2 and AVX-512 (other routes on the portable ISA): exact on small integers with
    # the bias and ReLU, and its input gradient by the transposed route; on floats within 1e-6 of the sum of |x| |w|
    # with F(2x2, 3x3) tiles, 1e-5 with F(4x4, 3x3)'s (errors up to ~2e-6 of the sum); the same bits at 1, 2 and 3
    # threads, whether or not a frozen model keeps its filters, and for an image alone or in the batch where both take
    # F(2x2) (an image alone is too few 4x4 tiles: F(2x2), within the tolerance)
    x, w, b, kw = _arrays(rng, case, integer=True)
    want = ref.conv2d(x, w, b, **kw)
    for relu in ("relu", None):
        assert np.array_equal(F.conv2d(x, w, b, **kw, activation=relu), np.maximum(want, 0) if relu else want)
    dy = rng.integers(-3, 4, want.shape).astype(np.float32)
    assert np.array_equal(F.conv2d_backward(dy, x, w, **kw)[0], ref.conv2d_backward(dy, x, w, **kw)[0])
    x, w, b, kw = _arrays(rng, case)
    with cc.threads(2):
        y = F.conv2d(x, w, b, **kw)
    f64 = lambda *arrays: [a.astype(np.float64) for a in arrays]
    scale = ref.conv2d(*f64(np.abs(x), np.abs(w)), None, **kw).max()
    tolerance = (1e-6 if tile == 2 else 1e-5) * scale
    assert np.abs(y - ref.conv2d(*f64(x, w, b), **kw)).max() <= tolerance
    for n in (1, 3):
        with cc.threads(n):
            assert np.array_equal(F.conv2d(x, w, b, **kw), y), n
            alone = F.conv2d(x[-1:], w, b, **kw)
            if tile == 2 or isa == "scalar":  # (the portable ISA runs other routes)
                assert np.array_equal(alone, y[-1:]), n
            else:
                assert not np.array_equal(alone, y[-1:]), n  # the route
                np.testing.assert_allclose(alone, y[-1:], rtol=0, atol=2 * tolerance)
    layer = cc.nn.Conv2d(x.shape[1], w.shape[0], 3, **{k: v for k, v in kw.items() if k != "dilation"})
    layer.load_state_dict({"weight": w, "bias": b})
    frozen = cc.nn.freeze(cc.nn.Sequential(layer))
    assert np.array_equal(frozen(x), y) and np.array_equal(frozen(x), y)  # the filters transformed, then kept
    vector_isa = isa != "scalar"
    if vector_isa:  # the route: Winograd rounds otherwise than the direct sum
        direct = F.conv2d(*_widened(x, w), b, **kw)
        assert not np.array_equal(direct, y)
        np.testing.assert_allclose(direct, y, rtol=0, atol=tolerance)
    # a non-finite value (inf - inf would give NaN): the layer runs another route, non-finite outputs exactly where
    # the float64 reference has them, the finite ones close
    for value in (np.inf, -np.inf, np.nan):
        x_bad, w_bad = x.copy(), w.copy()
        x_bad[0, 1, 4, 5], w_bad[3, 0, 1, 1] = value, value
        for xb, wb in ((x_bad, w), (x, w_bad)):
            got = F.conv2d(xb, wb, b, **kw, activation="relu")
            want = np.maximum(ref.conv2d(*f64(xb, wb, b), **kw), 0)
            _same_non_finite(got, want)
            finite = np.isfinite(want)
            np.testing.assert_allclose(got[finite], want[finite], rtol=0, atol=1e-6 * scale)
        # the frozen model (its filters kept for the fused kernel) on the other route and back: the functional bits
        assert np.array_equal(frozen(x_bad), F.conv2d(x_bad, w, b, **kw), equal_nan=True)
        assert np.array_equal(frozen(x), y)


FUSED_WINOGRAD_WEIGHT_CASES = [  # F(2x2, 3x3): fewer than 64 4x4 tiles a chunk, or 4x4 tiles overhanging
    (1, 16, 32, 32, 16, 3, 3, 1, 1, 1, 1),   # ResNet-20's first stage: 4 chunks of 4 tile rows of 16 tiles (a group)
    (4, 32, 16, 16, 32, 3, 3, 1, 1, 1, 1),   # its second stage: an image a group
    (16, 64, 8, 8, 64, 3, 3, 1, 1, 1, 1),    # its third stage: 8 image chunks of 2 images (a group each)
    (4, 20, 17, 15, 24, 3, 3, 1, 1, 1, 1),   # odd rows and columns (overhanging tiles), channels and filters in part
    (3, 16, 13, 33, 32, 3, 3, 1, 0, 1, 1),   # no padding: 11 x 31 outputs, groups of 4 tile rows of 16 (64)
    (1, 17, 40, 40, 33, 3, 3, 1, (1, 0), 1, 1),  # uneven padding, 17 channels, 33 filters; 4 chunks of tile rows
    (16, 48, 7, 7, 64, 3, 3, 1, 1, 1, 1),    # 7 x 7
    (3, 16, 20, 20, 16, 3, 3, 1, 2, 1, 1),   # padding 2
    (9, 16, 12, 12, 16, 3, 3, 1, 1, 1, 1),   # 9 images: chunks of 1 and 2
    (1, 16, 8, 140, 16, 3, 3, 1, 1, 1, 1),   # rows of 70 tiles: a group of one tile row
    (1, 16, 6, 260, 16, 3, 3, 1, 1, 1, 1),   # one image of 3 tile rows (a chunk each) of 130 tiles
]
FUSED_QUAD_WEIGHT_CASES = [  # F(4x4, 3x3) (conv2d_winograd_fused_weight_tile): 64 4x4 tiles a chunk or more
    (2, 16, 32, 32, 16, 3, 3, 1, 1, 1, 1),   # ResNet-20's first stage: an image a chunk, groups of 4 tile rows of 8
    (32, 32, 16, 16, 32, 3, 3, 1, 1, 1, 1),  # its second: 8 chunks of 4 images, groups of 8 tile rows (2 images)
    (4, 20, 31, 31, 24, 3, 3, 1, 1, 1, 1),   # 31 x 31 outputs: overhanging tiles; channels and filters in part
    (1, 17, 64, 64, 33, 3, 3, 1, (1, 0), 1, 1),  # uneven padding, one image: 4 chunks of 4 tile rows
    (1, 16, 16, 260, 16, 3, 3, 1, 1, 1, 1),  # rows of 65 tiles: a group of one tile row
    (2, 16, 30, 30, 16, 3, 3, 1, 2, 1, 1),   # padding 2: tiles reading only padding
]


@pytest.mark.parametrize("case, tile", [(c, 2) for c in FUSED_WINOGRAD_WEIGHT_CASES] +
                         [(c, 4) for c in FUSED_QUAD_WEIGHT_CASES], ids=str)
def test_fused_winograd_weight(isa, rng, case, tile):
    # the weight gradients of 3x3 stride-1 layers of 16 to 64 channels and filters with at least 256 2x2 output tiles
    # run the fused Winograd kernel on AVX2 and AVX-512 (other routes on the portable ISA), the bias gradient in the
    # same pass: exact on small integers; on floats within 1e-6 of the sum of |dy| |x| with F(2x2, 3x3) tiles, 2e-6
    # with F(4x4, 3x3)'s (errors up to ~5e-7 of the sum on ResNet-20's layers, F(2x2)'s ~1e-7); the same bits at 1, 2
    # and 3 threads; db the bits of the other routes'
    x, w, b, kw = _arrays(rng, case, integer=True)
    dy = _backward_exact(rng, x, w, kw, ref.conv2d(x, w, b, **kw).shape)
    x, w, b, kw = _arrays(rng, case)
    dy = rng.standard_normal(dy.shape).astype(np.float32)
    with cc.threads(2):
        _, dw, db = F.conv2d_backward(dy, x, w, **kw, input_grad=False)
    f64 = lambda *arrays: [a.astype(np.float64) for a in arrays]
    scale = ref.conv2d_backward(*f64(np.abs(dy), np.abs(x), w), **kw)[1].max()
    tolerance = (1e-6 if tile == 2 else 2e-6) * scale
    _, dw64, db64 = ref.conv2d_backward(*f64(dy, x, w), **kw)
    assert np.abs(dw - dw64).max() <= tolerance
    for n in (1, 3):
        with cc.threads(n):
            _, dw_n, db_n = F.conv2d_backward(dy, x, w, **kw, input_grad=False)
        assert np.array_equal(dw_n, dw) and np.array_equal(db_n, db), n
    # the route: Winograd rounds otherwise than the direct sum of the layer widened with zero channels (72: more than
    # the fused kernel takes)
    widen = ((0, 0), (0, 72 - x.shape[1]), (0, 0), (0, 0))
    _, dw_direct, db_direct = F.conv2d_backward(dy, np.pad(x, widen), np.pad(w, widen), **kw, input_grad=False)
    assert np.array_equal(db_direct, db)
    if isa != "scalar":
        assert not np.array_equal(dw_direct[:, :x.shape[1]], dw)
    np.testing.assert_allclose(dw_direct[:, :x.shape[1]], dw, rtol=0, atol=tolerance)
    # a non-finite value in x or dy (inf - inf would give NaN): another route, non-finite gradients exactly where the
    # float64 reference has them
    for value in (np.inf, -np.inf, np.nan):
        x_bad, dy_bad = x.copy(), dy.copy()
        x_bad[-1, 1, 4, 5], dy_bad[0, 2, 3, 1] = value, value
        for xb, dyb in ((x_bad, dy), (x, dy_bad)):
            _, dw_bad, db_bad = F.conv2d_backward(dyb, xb, w, **kw, input_grad=False)
            _, dw_want, db_want = ref.conv2d_backward(*f64(dyb, xb, w), **kw)
            _same_non_finite(dw_bad, dw_want)
            _same_non_finite(db_bad, db_want)
            finite = np.isfinite(dw_want)
            np.testing.assert_allclose(dw_bad[finite], dw_want[finite], rtol=0, atol=1e-6 * scale)


ROW_WINOGRAD_CASES = [
    (2, 6, 14, 14, 16, 5, 5, 1, 0, 1, 1),          # LeNet conv2
    (2, 6, 14, 13, 16, 5, 5, 1, 0, 1, 1),          # 9 columns: the last pair's second pixel dropped
    (2, 4, 12, 11, 12, 5, 5, 1, 1, 1, 1),          # 9 columns, padded (the image copied, widened by a column)
    (2, 5, 10, 10, 12, 3, 5, 1, (1, 2), 1, 1),     # 3 kernel rows
    (2, 3, 24, 14, 9, 5, 5, 1, 0, 1, 1),           # 20 output rows (two blocks of 10), 9 filters
]


@pytest.mark.parametrize("case", ROW_WINOGRAD_CASES, ids=str)
def test_winograd_rows_forward(isa, rng, case):
    # 5-wide kernels on rows of 9 or 10 outputs with at most 16 filters (whole blocks of 10 output rows) run F(4, 5)
    # and F(2, 5) along the rows on AVX-512 (tiles of 4, 4 and 2 outputs; the direct kernels elsewhere): exact on
    # small integers with the bias and ReLU, close to float64 on floats, the same bits at 1 and 2 threads and for an
    # image alone or in the batch
    x, w, b, kw = _arrays(rng, case, integer=True)
    for relu in ("relu", None):
        want = ref.conv2d(x, w, b, **kw)
        assert np.array_equal(F.conv2d(x, w, b, **kw, activation=relu), np.maximum(want, 0) if relu else want)
    x, w, b, kw = _arrays(rng, case)
    f64 = lambda *arrays: [a.astype(np.float64) for a in arrays]
    with cc.threads(2):
        y = F.conv2d(x, w, b, **kw)
    want = ref.conv2d(*f64(x, w, b), **kw)
    np.testing.assert_allclose(y, want, rtol=0, atol=2e-6 * np.abs(want).max())
    with cc.threads(1):
        assert np.array_equal(F.conv2d(x, w, b, **kw), y)
        assert np.array_equal(F.conv2d(x[-1:], w, b, **kw), y[-1:])
    if isa == "avx512":  # the route: Winograd rounds otherwise than the direct sum (AVX2's kernel, the same order)
        from convcore import _core

        _core.select_isa("avx2")
        direct = F.conv2d(x, w, b, **kw)
        _core.select_isa(isa)
        assert not np.array_equal(direct, y)
    # a non-finite value in one image (inf - inf would give NaN): that image runs the direct kernel, the other is
    # unchanged; in the weights (a tap that never meets the padding, which the direct kernels multiply), every image
    for value in (np.inf, -np.inf, np.nan):
        x_bad, w_bad = x.copy(), w.copy()
        x_bad[0, 1, 4, 5], w_bad[3, 0, 1, 2] = value, value
        got = F.conv2d(x_bad, w, b, **kw, activation="relu")
        _same_non_finite(got, np.maximum(ref.conv2d(*f64(x_bad, w, b), **kw), 0))
        assert np.array_equal(got[1:], np.maximum(y[1:], 0))
        _same_non_finite(F.conv2d(x, w_bad, b, **kw), ref.conv2d(*f64(x, w_bad, b), **kw))


FORWARD_LANE_CASES = [
    (64, 6, 14, 14, 16, 5, 5, 1, 0, 1, 1),     # LeNet conv2 at batch 64: eight groups of 8 images
    (17, 6, 14, 14, 16, 5, 5, 1, 0, 1, 1),     # two groups; the 17th image by the direct kernel
    (16, 3, 14, 14, 9, 5, 5, 1, 0, 1, 1),      # 9 filters: a block of 6 and one of 3 (3 unused)
    (24, 1, 12, 14, 12, 5, 5, 1, 0, 1, 1),     # 8 output rows, one channel; three groups on two threads
    (16, 2, 13, 14, 14, 5, 5, 1, 0, 1, 1),     # 9 output rows: a last block of one row
]


@pytest.mark.parametrize("case", FORWARD_LANE_CASES, ids=str)
def test_forward_with_images_in_the_lanes(isa, rng, case):
    # unpadded 5 x 5 kernels at stride 1 on rows of 10 outputs with 9-16 filters, from 16 images on: on AVX2 8 images
    # a group in the lanes (the images past whole groups by the direct kernel), each row's outputs by F(4, 5) and
    # F(2, 5) (AVX-512 runs them with the filters in the lanes, the scalar unit the direct sum): exact on small integers
    # with the bias and ReLU, close to float64, the same bits at 1 and 2 threads and for a group whatever the others;
    # a group with a non-finite x, or values that overflow in the transforms, runs again by the direct kernel, the
    # other groups unchanged
    x, w, b, kw = _arrays(rng, case, integer=True)
    want = ref.conv2d(x, w, b, **kw)
    assert np.array_equal(F.conv2d(x, w, b, **kw), want)
    assert np.array_equal(F.conv2d(x, w, b, **kw, activation="relu"), np.maximum(want, 0))
    x, w, b, kw = _arrays(rng, case)
    f64 = lambda *arrays: [a.astype(np.float64) for a in arrays]
    with cc.threads(2):
        y = F.conv2d(x, w, b, **kw)
    want = ref.conv2d(*f64(x, w, b), **kw)
    scale = ref.conv2d(*f64(np.abs(x), np.abs(w), np.abs(b)), **kw)
    assert np.all(np.abs(y - want) <= 2e-6 * scale)
    with cc.threads(1):
        assert np.array_equal(F.conv2d(x, w, b, **kw), y)
    mixed = np.concatenate([x[:8], rng.standard_normal((8,) + x.shape[1:]).astype(np.float32)])
    assert np.array_equal(F.conv2d(mixed, w, b, **kw)[:8], y[:8])
    if isa == "avx2":  # the route: Toom-Cook rounds otherwise than the direct sum, which an image alone takes
        assert not np.array_equal(F.conv2d(x[:1], w, b, **kw), y[:1])

    def on_threads(*args, **extra):  # y at 2 threads, the same bits at 1
        with cc.threads(2):
            got = F.conv2d(*args, **kw, **extra)
        with cc.threads(1):
            np.testing.assert_array_equal(F.conv2d(*args, **kw, **extra), got)
        return got

    for image in (0, len(x) - 1):  # the first group's; the last image (past the groups where N is odd)
        group = image // 8 * 8
        for value in (np.inf, -np.inf, np.nan):
            x_bad = x.copy()
            x_bad[image, 0, 3, -2] = value
            got = on_threads(x_bad, w, b, activation="relu")
            want_bad = np.maximum(ref.conv2d(*f64(x_bad, w, b), **kw), 0)
            _same_non_finite(got, want_bad)
            finite = np.isfinite(want_bad)
            assert np.all(np.abs(got[finite] - want_bad[finite]) <= 2e-6 * scale[finite])
            others = np.r_[0:group, group + 8:len(x)] if group + 8 <= len(x) else np.r_[0:group]
            assert np.array_equal(got[others], np.maximum(y[others], 0))
    w_bad = w.copy()
    w_bad[-1, -1, 2, 2] = np.inf
    _same_non_finite(on_threads(x, w_bad, b), ref.conv2d(*f64(x, w_bad, b), **kw))
    # near the float range: 90 times the sums overflows in the transforms, not in the direct sum
    huge = (x * np.float32(3e36)).astype(np.float32)
    w_small = (w / np.abs(w).sum(axis=(1, 2, 3), keepdims=True)).astype(np.float32)
    got = on_threads(huge, w_small, b)
    want_huge = ref.conv2d(*f64(huge, w_small, b), **kw)
    assert np.isfinite(want_huge).all() and np.isfinite(got).all()
    np.testing.assert_allclose(got, want_huge, rtol=1e-4, atol=1e-5 * np.abs(want_huge).max())


IMAGE_LANE_CASES = [
    (64, 6, 14, 14, 16, 5, 5, 1, 0, 1, 1),         # LeNet conv2 at batch 64: four groups of 16 images (AVX2: 8 of 8)
    (33, 6, 14, 13, 16, 5, 5, 1, 0, 1, 1),         # 9 columns (a last chunk of 1); the 33rd image by the other kernel
    (32, 5, 12, 11, 12, 5, 5, 1, 1, 1, 1),         # padded; 5 channels (a block of 6, one unused)
    (48, 7, 12, 8, 9, 3, 5, 1, (1, 2), 1, 1),      # 3 kernel rows, uneven padding, 7 channels (two blocks); 3 groups
    (32, 3, 9, 9, 10, 5, 5, 1, 0, 1, 1),           # 5 columns: a chunk of 4 and one of 1
    (48, 4, 13, 3, 12, 7, 5, 1, (6, 4), 1, 1),     # 7 columns (chunks of 4, 2 and 1), 7 kernel rows, widest padding
    (32, 3, 7, 8, 10, 1, 5, 1, (0, 3), 1, 1),      # one kernel row
    (24, 6, 14, 14, 16, 5, 5, 1, 0, 1, 1),         # AVX2: 3 groups on 2 threads (each group's rows in two tasks)
]


@pytest.mark.parametrize("case", IMAGE_LANE_CASES, ids=str)
def test_input_gradient_with_images_in_the_lanes(isa, rng, case):
    # the input gradient of 5-wide kernels on rows of 5-10 outputs with 9-16 filters, from two groups of images on: on
    # AVX-512 16 images a group in the lanes, on AVX2 8 (the images past whole groups as below two groups), each dx row
    # the full convolution of dy's rows by Toom-Cook along the row (the channel-lane kernel elsewhere): exact on small
    # integers, close to float64, the same bits at 1 and 2 threads (an odd number of groups on 2 threads: each group's
    # rows in two tasks) and for an image whatever the other groups; a group with a non-finite dy, or values that
    # overflow in the transforms, runs again by the direct kernel, the other groups unchanged
    x, w, b, kw = _arrays(rng, case, integer=True)
    shape = ref.conv2d(x, w, b, **kw).shape
    _backward_exact(rng, x, w, kw, shape)
    x, w, b, kw = _arrays(rng, case)
    dy = rng.standard_normal(shape).astype(np.float32)
    f64 = lambda *arrays: [a.astype(np.float64) for a in arrays]
    with cc.threads(2):
        dx = F.conv2d_backward(dy, x, w, **kw)[0]
    want = ref.conv2d_backward(*f64(dy, x, w), **kw)[0]
    scale = ref.conv2d_backward(*f64(np.abs(dy), x, np.abs(w)), **kw)[0]
    assert np.all(np.abs(dx - want) <= 2e-6 * scale + 1e-30)
    with cc.threads(1):
        assert np.array_equal(F.conv2d_backward(dy, x, w, **kw)[0], dx)
    lanes = 16 if isa == "avx512" else 8
    # the first 16 images followed by others, twice: their dx the same bits (and dx's where that ran this route too:
    # from two groups of images on; 24 images on AVX-512 take the channel-lane kernel)
    firsts = [F.conv2d_backward(np.concatenate([dy[:16], rng.standard_normal((16,) + shape[1:]).astype(np.float32)]),
                                np.concatenate([x[:16]] * 2), w, **kw)[0][:16] for _ in range(2)]
    assert np.array_equal(firsts[0], firsts[1])
    if len(x) >= 2 * lanes:
        assert np.array_equal(firsts[0], dx[:16])
    if isa != "scalar":  # the route: Toom-Cook rounds otherwise than the direct sum (the scalar unit's)
        from convcore import _core

        _core.select_isa("scalar")
        direct = F.conv2d_backward(dy, x, w, **kw)[0]
        _core.select_isa(isa)
        assert not np.array_equal(direct, dx)

    def on_threads(*args):  # dx at 2 threads, the same bits at 1 (3 groups on 2 threads: two tasks each)
        with cc.threads(2):
            got = F.conv2d_backward(*args, **kw)[0]
        with cc.threads(1):
            np.testing.assert_array_equal(F.conv2d_backward(*args, **kw)[0], got)
        return got

    for image in (0, len(x) - 1):  # the first group's; the last image (past the groups where N is odd)
        group = image // lanes * lanes
        for value in (np.inf, -np.inf, np.nan):
            dy_bad = dy.copy()
            dy_bad[image, 1, 2, -1] = value
            got = on_threads(dy_bad, x, w)
            want_bad = ref.conv2d_backward(*f64(dy_bad, x, w), **kw)[0]
            _same_non_finite(got, want_bad)
            finite = np.isfinite(want_bad)
            assert np.all(np.abs(got[finite] - want_bad[finite]) <= 2e-6 * scale[finite] + 1e-30)
            others = np.r_[0:group, group + lanes:len(x)] if group + lanes <= len(x) else np.r_[0:group]
            assert np.array_equal(got[others], dx[others])
    # near the float range: 90 times the sums overflows in the transforms, not in the direct sum
    huge = (dy * np.float32(3e36)).astype(np.float32)
    w_small = (w / np.abs(w).sum(axis=(0, 2, 3), keepdims=True)).astype(np.float32)
    got = on_threads(huge, x, w_small)
    want_huge = ref.conv2d_backward(*f64(huge, x, w_small), **kw)[0]
    assert np.isfinite(want_huge).all() and np.isfinite(got).all()
    np.testing.assert_allclose(got, want_huge, rtol=1e-4, atol=1e-5 * np.abs(want_huge).max())


# the same route over its gate's shapes: 1-7 kernel rows with paddings up to past them, rows of 5-10 outputs, 9-16
# filters, 1-8 channels, an image past the groups (33), each group's rows in two tasks (48 images on 2 threads, 32 on
# 3): exact on small integers against the reference at 1, 2 and 3 threads (the dy rows each task transforms are
# bounded row by row: a row missed or read unwritten would show)
@given(n=st.sampled_from([32, 33, 48]), c=st.integers(1, 8), k=st.integers(9, 16), r=st.integers(1, 7),
       p=st.integers(1, 12), q=st.integers(5, 10), ph=st.integers(0, 8), pw=st.integers(0, 5),
       seed=st.integers(0, 2**32 - 1))
def test_input_gradient_with_images_in_the_lanes_property(n, c, k, r, p, q, ph, pw, seed):
    h, w = p - 1 + r - 2 * ph, q + 4 - 2 * pw
    assume(h >= 1 and w >= 1)
    rng = np.random.default_rng(seed)
    x = rng.integers(-3, 4, (n, c, h, w)).astype(np.float32)
    wt = rng.integers(-3, 4, (k, c, r, 5)).astype(np.float32)
    dy = rng.integers(-3, 4, (n, k, p, q)).astype(np.float32)
    want = ref.conv2d_backward(dy, x, wt, padding=(ph, pw))
    for threads in (1, 2, 3):
        with cc.threads(threads):
            got = F.conv2d_backward(dy, x, wt, padding=(ph, pw))
        for g, expected in zip(got, want):
            assert np.array_equal(g, expected)


ROW_WINOGRAD_WEIGHT_CASES = [
    (2, 6, 14, 14, 16, 5, 5, 1, 0, 1, 1),       # LeNet conv2
    (3, 4, 10, 10, 12, 5, 5, 1, 2, 1, 1),       # padded, 12 filters, three images
    (2, 5, 12, 10, 9, 5, 5, 1, (1, 0), 1, 1),   # 6 columns (a tile of 4 and one of 2), 10 rows, 9 filters
    (2, 3, 12, 12, 10, 5, 5, 1, 0, 1, 1),       # 8 columns: two tiles of 4, no pair
    (2, 3, 12, 6, 10, 5, 5, 1, 0, 1, 1),        # 2 columns: one pair, no tile of 4
]


@pytest.mark.parametrize("case", ROW_WINOGRAD_WEIGHT_CASES, ids=str)
def test_winograd_rows_weight_gradient(isa, rng, case):
    # the weight gradient of 5 x 5 layers with 9-16 filters on rows of an even number (at most 10) of outputs: on
    # AVX-512 by F(5, 4) and F(5, 2) along the rows (the direct units elsewhere), with dx or without it: exact on
    # small integers, close to float64, the same bits at 1 and 2 threads and with or without dx; with an infinity or
    # NaN in x or dy the direct units run again (inf - inf would give NaN), dx and db as without the rerun
    x, w, b, kw = _arrays(rng, case, integer=True)
    dy = _backward_exact(rng, x, w, kw, ref.conv2d(x, w, b, **kw).shape)
    x, w, b, kw = _arrays(rng, case)
    dy = rng.standard_normal(dy.shape).astype(np.float32)
    f64 = lambda *arrays: [a.astype(np.float64) for a in arrays]
    with cc.threads(2):
        dx, dw, db = F.conv2d_backward(dy, x, w, **kw)
    want = ref.conv2d_backward(*f64(dy, x, w), **kw)[1]
    np.testing.assert_allclose(dw, want, rtol=0, atol=5e-6 * np.abs(want).max())
    with cc.threads(1):
        for got, expected in zip(F.conv2d_backward(dy, x, w, **kw), (dx, dw, db)):
            assert np.array_equal(got, expected)
    assert np.array_equal(F.conv2d_backward(dy, x, w, **kw, input_grad=False)[1], dw)
    if isa == "avx512":  # the route: Winograd rounds otherwise than the direct sum (AVX2's units, the same order)
        from convcore import _core

        _core.select_isa("avx2")
        direct = F.conv2d_backward(dy, x, w, **kw)[1]
        _core.select_isa(isa)
        assert not np.array_equal(direct, dw)
    for value in (np.inf, -np.inf, np.nan):
        x_bad, dy_bad = x.copy(), dy.copy()
        x_bad[1, 2, 3, 4], dy_bad[1, 2, 3, -1] = value, value
        got = F.conv2d_backward(dy, x_bad, w, **kw)
        assert np.array_equal(got[0], dx) and np.array_equal(got[2], db)
        for input_grad in (True, False):
            for args in ((dy, x_bad), (dy_bad, x)):
                got = F.conv2d_backward(*args, w, **kw, input_grad=input_grad)[1]
                want = ref.conv2d_backward(*f64(*args, w), **kw)[1]
                _same_non_finite(got, want)
                finite = np.isfinite(want)
                np.testing.assert_allclose(got[finite], want[finite], rtol=1e-5, atol=1e-4)


WEIGHT_LANE_CASES = [
    (64, 6, 14, 14, 16, 5, 5, 1, 0, 1, 1),     # LeNet conv2 at batch 64: eight groups of 8 images
    (16, 3, 14, 14, 9, 5, 5, 1, 0, 1, 1),      # 9 filters: blocks of 2 (the last with one unused)
    (24, 2, 13, 14, 13, 5, 5, 1, 0, 1, 1),     # 9 dy rows; three groups on two threads
    (16, 1, 16, 14, 10, 5, 5, 1, 0, 1, 1),     # 10 filters, one channel: 700 sums, lane-summed in runs of 8
]


@pytest.mark.parametrize("case", WEIGHT_LANE_CASES, ids=str)
def test_weight_gradient_with_images_in_the_lanes(isa, rng, case):
    # the weight gradient of unpadded 5 x 5 layers at stride 1 on rows of 10 outputs with 9-16 filters, the batch in
    # whole groups of 8 images from 16 on: on AVX2 the images in the lanes, F(5, 4) and F(5, 2) along the rows, each
    # group's terms added in group order (AVX-512: the filters in the lanes), with dx or without it: exact on small
    # integers, close to float64, the same bits at 1, 2 and 3 threads and with or without dx, db the bias pass's; with
    # an infinity or NaN in x or dy, or sums past the float range, the direct units run again
    x, w, b, kw = _arrays(rng, case, integer=True)
    dy = _backward_exact(rng, x, w, kw, ref.conv2d(x, w, b, **kw).shape)
    x, w, b, kw = _arrays(rng, case)
    dy = rng.standard_normal(dy.shape).astype(np.float32)
    f64 = lambda *arrays: [a.astype(np.float64) for a in arrays]
    with cc.threads(2):
        dx, dw, db = F.conv2d_backward(dy, x, w, **kw)
    want = ref.conv2d_backward(*f64(dy, x, w), **kw)[1]
    scale = ref.conv2d_backward(*f64(np.abs(dy), np.abs(x), w), **kw)[1]
    assert np.all(np.abs(dw - want) <= 2e-6 * scale)
    for threads in (1, 3):
        with cc.threads(threads):
            for got, expected in zip(F.conv2d_backward(dy, x, w, **kw), (dx, dw, db)):
                assert np.array_equal(got, expected)
    _, dw_alone, db_alone = F.conv2d_backward(dy, x, w, **kw, input_grad=False)
    assert np.array_equal(dw_alone, dw) and np.array_equal(db_alone, db)
    if isa == "avx2":  # the route: Winograd rounds otherwise than the direct sum (the batch and one image short of it)
        assert not np.array_equal(dw, F.conv2d_backward(dy[:-1], x[:-1], w, **kw)[1]
                                  + F.conv2d_backward(dy[-1:], x[-1:], w, **kw)[1])
        from convcore import _core

        _core.select_isa("scalar")
        direct = F.conv2d_backward(dy, x, w, **kw)[1]
        _core.select_isa(isa)
        assert not np.array_equal(direct, dw)
    for value in (np.inf, -np.inf, np.nan):
        x_bad, dy_bad = x.copy(), dy.copy()
        x_bad[-1, -1, 3, 4], dy_bad[0, 2, 3, -1] = value, value
        for input_grad in (True, False):
            for args in ((dy, x_bad), (dy_bad, x)):
                got = F.conv2d_backward(*args, w, **kw, input_grad=input_grad)[1]
                want_bad = ref.conv2d_backward(*f64(*args, w), **kw)[1]
                _same_non_finite(got, want_bad)
                finite = np.isfinite(want_bad)
                np.testing.assert_allclose(got[finite], want_bad[finite], rtol=1e-5, atol=1e-4)
        assert np.array_equal(F.conv2d_backward(dy, x_bad, w, **kw)[0], dx)
    # near the float range: 90 times the sums overflows in the transforms, not in the direct sum
    huge = (dy * np.float32(1e36)).astype(np.float32)
    x_small = (x / np.abs(x).sum()).astype(np.float32)
    got = F.conv2d_backward(huge, x_small, w, **kw, input_grad=False)[1]
    want_huge = ref.conv2d_backward(*f64(huge, x_small, w), **kw)[1]
    assert np.isfinite(want_huge).all() and np.isfinite(got).all()
    np.testing.assert_allclose(got, want_huge, rtol=1e-4, atol=1e-5 * np.abs(want_huge).max())


@pytest.mark.parametrize("case", [
    (1, 160, 28, 28, 100, 3, 3, 2, 1, 1, 1),  # 196 pixels: 100 filters in unequal shares
    (1, 64, 56, 56, 72, 3, 3, 2, 1, 1, 1),   # 784 pixels, more than filters (sgemm would take columns in chunks)
    (1, 40, 32, 32, 48, 5, 5, 1, 2, 1, 1),   # padded, stride 1, 1024 pixels
    (1, 256, 40, 39, 150, 1, 1, 2, 0, 1, 1),  # strided 1x1: the subsampled image, 400 pixels
    (3, 160, 14, 14, 100, 3, 3, 2, 1, 1, 1),  # a batch of few pixels folded into one product's 147 columns
], ids=str)
def test_few_pixels_each_thread_copies_the_images(rng, case):
    # a forward of at most 1024 output pixels (the product's columns: one image's, or a folded batch's) from a padded,
    # strided or subsampled copy: each thread copies the images itself and computes its share of the filters from its
    # copy (and scatters them, folded); exact on small integers, with the bias and ReLU of the right filters, and the
    # same bits at any thread count on random floats
    x, w, b, kw = _arrays(rng, case, integer=True)
    expected = ref.conv2d(x, w, b, **kw)
    xf, wf, bf, _ = _arrays(rng, case)
    floats = []
    for n in (1, 2, 3):
        with cc.threads(n):
            assert np.array_equal(F.conv2d(x, w, b, **kw), expected), n
            assert np.array_equal(F.conv2d(x, w, b, activation="relu", **kw), np.maximum(expected, 0)), n
            floats.append(F.conv2d(xf, wf, bf, activation="relu", **kw))
    for other in floats[1:]:
        assert np.array_equal(other, floats[0])


@pytest.mark.parametrize("case", [
    (1, 50, 48, 48, 100, 3, 3, 2, 1, 1, 1),  # strided: runs of 25 channels at 2 threads, 16, 17, 17 at 3
    (1, 128, 56, 56, 160, 1, 1, 2, 0, 1, 1),  # strided 1x1: the input gradient by columns and col2im
], ids=str)
def test_batch1_backward_takes_channels_in_runs(rng, case):
    # a batch-1 backward: each thread takes a run of the channels, copying them and summing their taps' weight
    # gradient, and computing their columns and input-gradient planes; exact on small integers at any thread count,
    # and the same bits at any thread count on random floats, the bias gradient included
    x, w, b, kw = _arrays(rng, case, integer=True)
    dy = rng.integers(-3, 4, F.conv2d(x, w, **kw).shape).astype(np.float32)
    expected = ref.conv2d_backward(dy, x, w, **kw)
    xf, wf, bf, _ = _arrays(rng, case)
    dyf = rng.standard_normal(dy.shape).astype(np.float32)
    results = []
    for n in (2, 3, 1):
        with cc.threads(n):
            for got, want in zip(F.conv2d_backward(dy, x, w, **kw), expected):
                assert np.array_equal(got, want), n
            results.append(F.conv2d_backward(dyf, xf, wf, **kw))
    for other in results[1:]:
        for a, b_ in zip(results[0], other):
            assert np.array_equal(a, b_)


def test_batch1_backward_channel_runs_without_or_apart_from_the_bias(isa, rng):
    # 2x2 filters on 48 channels (192 taps: the weight gradient's chunks run by pixels, the bias gradient in a pass of
    # its own; 400 filters: too many weights for taps as rows on any ISA): the runs of channels leave the bias
    # gradient to that pass, which must still run; and a layer without a bias gradient (a layer without bias) gets
    # its weight gradient alone
    x, w, b, kw = _arrays(rng, (1, 48, 60, 60, 400, 2, 2, 2, 0, 1, 1), integer=True)
    dy = rng.integers(-3, 4, F.conv2d(x, w, **kw).shape).astype(np.float32)
    want_dx, want_dw, want_db = ref.conv2d_backward(dy, x, w, **kw)
    for n in (2, 1):
        with cc.threads(n):
            dx, dw, db = F.conv2d_backward(dy, x, w, **kw)
            assert np.array_equal(dw, want_dw) and np.array_equal(db, want_db) and np.array_equal(dx, want_dx), n
    layer = cc.nn.Conv2d(48, 400, 2, stride=2, bias=False, rng=rng)
    layer.weight.data[...] = w
    with cc.threads(2):
        layer(x)
        layer.backward(dy)
    assert np.array_equal(layer.weight.grad, want_dw)
