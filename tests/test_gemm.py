"""The tiled SGEMM engine against the reference GEMM and float64 numpy, for every compiled ISA; matmul/linear API."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import convcore as cc
from convcore import _core

F = cc.functional
NONE, PER_ROW, PER_COL = 0, 1, 2


def _operands(rng, m, n, k, trans_a, trans_b, integer=True):
    draw = (lambda s: rng.integers(-3, 4, s)) if integer else (lambda s: rng.standard_normal(s))
    a = draw((k, m) if trans_a else (m, k)).astype(np.float32)
    b = draw((n, k) if trans_b else (k, n)).astype(np.float32)
    return a, b


def _expected(a, b, trans_a, trans_b, alpha=1.0, beta=0.0, c=None, bias=None, axis=NONE, relu=False):
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    out = alpha * ((a64.T if trans_a else a64) @ (b64.T if trans_b else b64))
    if beta:
        out += beta * c
    if axis == PER_ROW:
        out += bias[:, None]
    if axis == PER_COL:
        out += bias[None, :]
    return np.maximum(out, 0) if relu else out


# m up to past the largest MR (12) so that every tile is chosen (on AVX-512 mostly 6x64 for m <= 6, 8x48 for 7, 8, 16,
# 12x32 for 12), n up to the largest NR (64) and past it, k up to one K block (256) and past it (then in equal blocks)
SIZES = [(m, n, k) for m in (1, 5, 6, 7, 8, 12, 13, 16) for n in (1, 15, 16, 17, 33, 48, 49, 64, 65)
         for k in (1, 7)] + [
    (3, 5, 127), (6, 64, 129), (5, 65, 257), (8, 48, 161), (16, 50, 321), (6, 16, 256), (7, 17, 257),
    (13, 33, 513), (29, 71, 300), (150, 40, 31), (2, 3100, 9), (16, 1700, 150), (6, 1600, 25),
    (400, 49, 300)]  # past one packed A block of rows (a thread's 200 of 2): 8x48, one column added by the wide kernel


def test_sweep_reaches_every_tile(isa):
    chosen = {_core.gemm_tile_for(m, n) for m, n, _ in SIZES}
    assert chosen == set(_core.gemm_tiles())


def test_few_columns_past_one_a_block_take_fewer_panels(isa):
    # AVX-512: 12x32 and 6x64 pad 60 columns to the same 64; with A read in place each column panel reads all of
    # it again, so past one packed A block (144 rows) the one-panel tile is taken; within it, for an A that is
    # packed (transposed, scaled, or packed in advance) and for wide products the area and row rules stay
    if "6x64" not in _core.gemm_tiles():
        # the other ISAs' tiles (AVX2's 6x16 and 4x24, scalar): for these shapes an A that could be read in place
        # changes no tile
        for m, n in ((512, 60), (200, 60), (128, 60), (400, 20), (1024, 1024)):
            assert _core.gemm_tile_for(m, n, a_in_place=True) == _core.gemm_tile_for(m, n), (m, n)
        return
    assert _core.gemm_tile_for(512, 60, a_in_place=True) == "6x64"
    assert _core.gemm_tile_for(200, 60, a_in_place=True) == "6x64"
    assert _core.gemm_tile_for(128, 60, a_in_place=True) == "12x32"
    assert _core.gemm_tile_for(512, 60) == "12x32"
    assert _core.gemm_tile_for(1024, 1024, a_in_place=True) == "8x48"
    # 49 columns: 8x48's last panel of one column rides with the full one (a wide microkernel), costing less than
    # the 64 columns of either other tile
    assert _core.gemm_tile_for(512, 49, a_in_place=True) == _core.gemm_tile_for(512, 49) == "8x48"


# products whose last column panel has 1-3 columns (on AVX-512: 8x48 49 = 48 + 1, 51, 99 = 96 + 3; 12x32 34, 35,
# 67 = 64 + 3; 6x64 66; 13 rows end in a partial row panel; 300 rows: several row panels, split on 2 threads; A read
# in place by 49, 51, 34, 35 and 66 columns, panel by panel with K in one block of 100; 40 x 289 packs B panel by panel
# as its first row panel computes, 37 x 289 too with a partial last row panel, 29 x 289 the whole block; 3025
# columns: chunks)
WIDE = [(8, 49, 300), (8, 51, 300), (8, 49, 100), (8, 99, 200), (12, 34, 300), (12, 35, 300), (12, 67, 100),
        (6, 66, 300), (13, 50, 300), (300, 49, 800), (40, 289, 100), (37, 289, 100), (29, 289, 600),
        (24, 3025, 363)]


@pytest.mark.parametrize("m,n,k", WIDE)
def test_last_few_columns_ride_with_the_panel_before(isa, rng, m, n, k):
    # the wide microkernels (AVX-512) compute the last few columns in the same pass over k as the full panel before
    # them, one vector down the rows per column, A packed (transposed) or read in place, B in place, packed (given as
    # rows) or copied by the first row panel: exact with alpha, beta, either bias and ReLU on 1 and 2 threads, and
    # on floats the same bits as the same columns of a wider product, where full and edge tiles compute them
    for axis in (PER_ROW, PER_COL):
        a, b = _operands(rng, m, n, k, False, False)
        _exact_on_one_and_two_threads(rng, a, b, 1.0, -1.0, axis)
    for trans_a, trans_b in ((True, False), (False, True), (True, True)):
        a, b = _operands(rng, m, n, k, trans_a, trans_b)
        expected = _expected(a, b, trans_a, trans_b)
        for t in (1, 2):
            c = np.full((m, n), np.nan, np.float32)
            with cc.threads(t):
                _core.gemm(a, b, trans_a, trans_b, 1.0, 0.0, c, None, NONE, False, False)
            assert np.array_equal(c, expected), (trans_a, trans_b, t)
    af, bf = _operands(rng, m, n + 45, k, False, False, integer=False)
    af[m // 2, k // 2] = np.nan  # a NaN row, kept by ReLU
    col_bias, row_bias = rng.standard_normal(n + 45).astype(np.float32), rng.standard_normal(m).astype(np.float32)
    for t in (1, 2):
        with cc.threads(t):
            wider = F.matmul(af, bf)[:, :n]
            assert np.array_equal(F.matmul(af, bf[:, :n].copy()), wider, equal_nan=True), t
            packed = _core.gemm(af.T.copy(), bf[:, :n].copy(), True, False, 1.0, 0.0, None, None, NONE, False, False)
            assert np.array_equal(packed, wider, equal_nan=True), t
            for bias, axis, narrow in ((col_bias, PER_COL, col_bias[:n].copy()), (row_bias, PER_ROW, row_bias)):
                want = _core.gemm(af, bf, False, False, 1.0, 0.0, None, bias, axis, True, False)[:, :n]
                got = _core.gemm(af, bf[:, :n].copy(), False, False, 1.0, 0.0, None, narrow, axis, True, False)
                assert np.array_equal(got, want, equal_nan=True), (t, axis)


def test_rows_do_not_depend_on_the_row_count(isa, rng):
    # every tile sums a row's K blocks the same way, so a row's bits do not depend on which tile M picks
    a, b = _operands(rng, 40, 70, 700, False, False, integer=False)
    full = _core.gemm(a, b, False, False, 1.0, 0.0, None, None, NONE, False, False)
    for m in (1, 5, 6, 7, 8, 12, 13, 16, 25):
        got = _core.gemm(a[:m].copy(), b, False, False, 1.0, 0.0, None, None, NONE, False, False)
        assert np.array_equal(got, full[:m]), m


@pytest.mark.parametrize("m,n,k", SIZES)
def test_engine_exact_on_small_integers(isa, rng, m, n, k):
    for trans_a in (False, True):
        for trans_b in (False, True):
            a, b = _operands(rng, m, n, k, trans_a, trans_b)
            got = _core.gemm(a, b, trans_a, trans_b, 1.0, 0.0, None, None, NONE, False, False)
            assert np.array_equal(got, _expected(a, b, trans_a, trans_b))


# and last column panels of 1 to 4 columns, which AVX-512 runs as column vectors down the rows (on AVX-512: 8x48
# 49 = 48 + 1 and 52 = 48 + 4, 12x32 34 = 32 + 2, 6x64 67 = 64 + 3; k past one K block: C accumulated)
@pytest.mark.parametrize("m,n,k", [(7, 17, 5), (13, 33, 300), (64, 100, 70), (7, 49, 300), (7, 52, 40), (9, 34, 70),
                                   (5, 67, 300)])
def test_alpha_beta_bias_relu(isa, rng, m, n, k):
    a, b = _operands(rng, m, n, k, False, True)
    for alpha, beta in [(1.0, 0.0), (2.0, 1.0), (0.5, -2.0), (1.0, 3.0)]:
        for axis, relu in [(NONE, True), (PER_ROW, False), (PER_COL, True), (PER_ROW, True)]:
            bias = rng.integers(-20, 20, m if axis == PER_ROW else n).astype(np.float32)
            c = rng.integers(-3, 4, (m, n)).astype(np.float32)
            expected = _expected(a, b, False, True, alpha, beta, c.astype(np.float64), bias, axis, relu)
            got = _core.gemm(a, b, False, True, alpha, beta, c.copy(), bias if axis else None, axis, relu, False)
            assert np.array_equal(got, expected)
            ref = _core.gemm(a, b, False, True, alpha, beta, c.copy(), bias if axis else None, axis, relu, True)
            assert np.array_equal(ref, expected)


def test_beta_zero_never_reads_c(isa, rng):
    a, b = _operands(rng, 13, 33, 20, False, False)
    c = np.full((13, 33), np.nan, np.float32)
    got = _core.gemm(a, b, False, False, 1.0, 0.0, c, None, NONE, False, False)
    assert got is not None and np.array_equal(c, _expected(a, b, False, False))  # written in place, NaN gone


def test_binding_takes_arrays_as_they_are_or_converts_them(rng):
    # the binding's array caster takes a C-contiguous, aligned float32 array with numpy's own float32 dtype as it is;
    # an F-ordered copy, a big-endian copy and an unaligned view are converted (the same product), float64 goes to
    # the reference overload, and what numpy cannot cast safely (complex) is refused with a TypeError
    a, b = _operands(rng, 9, 11, 7, False, False)
    expected = _expected(a, b, False, False)
    run = lambda a, b: _core.gemm(a, b, False, False, 1.0, 0.0, None, None, NONE, False, False)
    assert np.array_equal(run(a, b), expected)
    assert np.array_equal(run(np.asfortranarray(a), b), expected)
    assert np.array_equal(run(a.astype(">f4"), b), expected)
    raw = np.zeros(a.size * 4 + 1, np.uint8)[1:].view(np.float32).reshape(a.shape)  # one byte off alignment
    raw[...] = a
    assert not raw.flags.aligned and np.array_equal(run(raw, b), expected)
    assert run(a.astype(np.float64), b.astype(np.float64)).dtype == np.float64
    with pytest.raises(TypeError):
        run(a.astype(np.complex64), b)


def test_relu_keeps_nan(isa):
    a = np.array([[np.nan, 1.0]], np.float32)
    b = np.ones((2, 3), np.float32)
    got = _core.gemm(a, b, False, False, 1.0, 0.0, None, None, NONE, True, False)
    assert np.isnan(got).all()


@pytest.mark.parametrize("axis", [NONE, PER_ROW, PER_COL])
def test_full_tiles_apply_the_epilogue_in_registers(isa, rng, axis):
    # 48 x 192 is whole tiles for every ISA: bias and ReLU are applied before the store, as edge tiles apply them
    # after; NaN rows stay NaN, results <= 0 become +0
    a = rng.integers(-3, 4, (48, 20)).astype(np.float32)
    a[5, 3] = np.nan
    b = rng.integers(-3, 4, (20, 192)).astype(np.float32)
    bias = rng.integers(-20, 20, 48 if axis == PER_ROW else 192).astype(np.float32)
    expected = _expected(a, b, False, False, bias=bias, axis=axis, relu=True)
    got = _core.gemm(a, b, False, False, 1.0, 0.0, None, bias if axis else None, axis, True, False)
    assert np.array_equal(got, expected, equal_nan=True)
    assert np.isnan(got[5]).all() and not np.signbit(got).any()
    edge = _core.gemm(a[:47].copy(), b[:, :191].copy(), False, False, 1.0, 0.0, None,
                      (bias[:47] if axis == PER_ROW else bias[:191]).copy() if axis else None, axis, True, False)
    assert np.array_equal(edge, got[:47, :191], equal_nan=True)


def test_random_floats_close_to_float64(isa, rng):
    a, b = _operands(rng, 97, 203, 611, False, False, integer=False)
    got = _core.gemm(a, b, False, False, 1.0, 0.0, None, None, NONE, False, False)
    np.testing.assert_allclose(got, _expected(a, b, False, False), rtol=1e-4, atol=1e-3)


# split N (300 x 700), split N in column chunks of a small A, split M (B read in place), and split M over two and
# three K blocks (each thread repacks its rows per block while the other may still read the last block), and products
# wide enough for column chunks, each thread's share first, from all of A packed once (chunks of 512-544 columns, then
# smaller ones towards the end; A in 3 K blocks, and in 3 row blocks of 144), by each thread (at most 4 MiB packed:
# 520 x 520) or by the threads together (1040 x 1040 on 2 threads); a square split by rows, each thread's rows of A
# packed once for its two column blocks (1100 x 1000)
@pytest.mark.parametrize("m,n,k", [(300, 700, 300), (40, 2000, 64), (500, 20, 33), (150, 70, 257), (100, 90, 600),
                                   (20, 4200, 600), (300, 4200, 300), (520, 2100, 520), (1040, 4100, 1040),
                                   (1100, 1000, 600)])
def test_bitwise_identical_at_any_thread_count(rng, m, n, k):
    a, b = _operands(rng, m, n, k, False, False, integer=False)
    results = []
    for t in (1, 2, 3, 4):
        with cc.threads(t):
            results += [F.matmul(a, b) for _ in range(5 if m * n * k < 10**9 else 2)]
    for r in results[1:]:
        assert np.array_equal(r, results[0])


# A packed once for several column chunks or blocks, with a transposed or plain A, alpha, beta -1 (a tile or chunk
# computed twice shows) and a bias epilogue, exact on small integers at 1-3 threads: a wide product (50 x 3600 x 270)
# on 2 and 3 threads in column chunks, each thread's share first, then the others' from the back, all of A packed
# once; on 1 thread all of A packed once for its 4 column blocks. N no wider than M and more than one column block
# (1100 x 1000 x 700; at most 1.25 x 768 columns a block): on 1 thread all of A, on 2 and 3 each thread's share of
# the rows (the later ones from a row past 0, in several row blocks of 144) packed once for both column blocks, over
# 3 K blocks (234, 234 and 232 deep).
@pytest.mark.parametrize("m,n,k,axis", [(50, 3600, 270, PER_COL), (1100, 1000, 700, PER_ROW)])
@pytest.mark.parametrize("trans_a", [False, True])
def test_all_of_a_packed_once(isa, rng, m, n, k, axis, trans_a):
    a, b = _operands(rng, m, n, k, trans_a, False)
    c = rng.integers(-3, 4, (m, n)).astype(np.float32)
    bias = rng.integers(-20, 20, n if axis == PER_COL else m).astype(np.float32)
    expected = _expected(a, b, trans_a, False, 2.0, -1.0, c.astype(np.float64), bias, axis, True)
    for t in (2, 3, 1):
        with cc.threads(t):
            got = _core.gemm(a, b, trans_a, False, 2.0, -1.0, c.copy(), bias, axis, True, False)
        assert np.array_equal(got, expected), t


@pytest.mark.parametrize("m,n,k", [(200, 120, 600), (170, 110, 2600)])
def test_narrow_products_split_by_rows(isa, rng, m, n, k):
    # a narrow product (fewer than 4 column panels per thread for every ISA's tile) with B given as rows (packed,
    # not read in place), several K blocks: on 2-3 threads each thread takes a share of the rows and packs all of B
    a, b = _operands(rng, m, n, k, False, True)
    expected = _expected(a, b, False, True)
    for t in (1, 2, 3):
        c = np.full((m, n), np.nan, np.float32)  # written in place (beta 0): an unwritten row stays NaN
        with cc.threads(t):
            _core.gemm(a, b, False, True, 1.0, 0.0, c, None, NONE, False, False)
        assert np.array_equal(c, expected), t


def _exact_on_one_and_two_threads(rng, a, b, alpha, beta, axis):
    """On 1 and 2 threads: a @ b into a C prefilled with NaN (beta 0: an unwritten element stays NaN), and alpha *
    a @ b + beta * C0 with a bias along axis and ReLU; both exact against float64 (a and b small integers)."""
    m, n = a.shape[0], b.shape[1]
    c0 = rng.integers(-3, 4, (m, n)).astype(np.float32)
    bias = rng.integers(-20, 20, m if axis == PER_ROW else n).astype(np.float32)
    plain = _expected(a, b, False, False)
    fused = _expected(a, b, False, False, alpha, beta, c0.astype(np.float64), bias, axis, True)
    for t in (1, 2):
        c = np.full((m, n), np.nan, np.float32)
        with cc.threads(t):
            _core.gemm(a, b, False, False, 1.0, 0.0, c, None, NONE, False, False)
            got = _core.gemm(a, b, False, False, alpha, beta, c0.copy(), bias, axis, True, False)
        assert np.array_equal(c, plain), t
        assert np.array_equal(got, fused), t


@pytest.mark.parametrize("m,n,k", [(100, 130, 120), (144, 128, 128), (37, 70, 200)])
def test_one_block_of_rows_reads_b_in_place(isa, rng, m, n, k):
    # products of one A block (at most 144 rows) with a B of 32-64 KiB in memory, rows at most 1024 floats apart:
    # every row panel reads B in place (only a partial last column panel is packed); 100 and 37 rows end in a
    # partial row panel, 130 and 70 columns in a partial column panel; split by rows on 2 threads
    a, b = _operands(rng, m, n, k, False, False)
    _exact_on_one_and_two_threads(rng, a, b, 0.5, -1.0, PER_COL)


@pytest.mark.parametrize("m,n,k", [(50, 64, 900), (16, 96, 700), (30, 128, 500), (300, 49, 800)])
def test_few_column_panels_read_a_in_place(isa, rng, m, n, k):
    # products of at most two column panels (on AVX-512 the 12x32, 8x48 and 6x64 tiles; 300 rows split over 2
    # threads), and deep ones (K >= 512) of at most 64 columns (AVX2's 4 of 16: 50 x 64 x 900, 300 x 49 x 800), read a
    # plain A's full row panels in place (a partial last one packed), K in 2-3 blocks; on floats the same bits as the
    # same columns of a wider product, which packs A
    a, b = _operands(rng, m, n, k, False, False)
    _exact_on_one_and_two_threads(rng, a, b, 1.0, -2.0, PER_ROW)
    af, bf = _operands(rng, m, 300, k, False, False, integer=False)
    for t in (1, 2):
        with cc.threads(t):
            assert np.array_equal(F.matmul(af, bf[:, :n].copy()), F.matmul(af, bf)[:, :n]), t


@pytest.mark.parametrize("m,n,k", [(40, 300, 100), (29, 200, 120), (60, 700, 200)])
def test_first_row_panel_packs_each_panel_as_it_computes(isa, rng, m, n, k):
    # few-row products (one A block) with B in memory, too big to read in place, in K blocks shallow enough to pack
    # B panel by panel: on AVX-512 the first row panel packs each whole panel for the others as it computes (8x48;
    # 6x64 with a partial last row panel; 12x32 split by columns on 2 threads), the partial last column panel
    # packed as before
    a, b = _operands(rng, m, n, k, False, False)
    _exact_on_one_and_two_threads(rng, a, b, 1.0, 1.0, PER_COL)


@pytest.mark.parametrize("m,n,k", [(36, 310, 300), (29, 333, 600), (54, 320, 600)])
def test_first_row_panel_packs_b_as_it_computes(isa, rng, m, n, k):
    # few-row products (one A block) with B in memory, too many row panels to read it in place and K blocks too deep
    # to pack it panel by panel: on AVX-512 their first row panel packs each B block for the others (the three take
    # 12x32, 8x48 and 6x64; 29 rows end in a partial row panel, 310 and 333 columns in a partial column panel), K
    # in one block of 300 or 3 of 200; on 2 threads split by columns (12x32) or rows
    a, b = _operands(rng, m, n, k, False, False)
    _exact_on_one_and_two_threads(rng, a, b, 1.0, 2.0, PER_ROW)


@pytest.mark.parametrize("m", [1, 3])
def test_few_rows_products_identical_at_any_thread_count_and_close_to_float64(isa, rng, m):
    # a fully connected layer at batch 1-3: unpacked dot products, B's rows in groups of four and column blocks
    # split over the threads; a product's sum order depends on neither
    x = rng.standard_normal((m, 1100)).astype(np.float32)
    w = rng.standard_normal((301, 1100)).astype(np.float32)
    results = []
    for t in (1, 2, 3):
        with cc.threads(t):
            results.append(F.linear(x, w))
    assert all(np.array_equal(r, results[0]) for r in results[1:])
    np.testing.assert_allclose(results[0], x.astype(np.float64) @ w.T.astype(np.float64), rtol=1e-4, atol=1e-3)
    one_by_one = [F.linear(x, w[j:j + 1])[:, 0] for j in (0, 3, 4, 300)]  # the same row alone: the same bits
    assert all(np.array_equal(results[0][:, j], col) for j, col in zip((0, 3, 4, 300), one_by_one))


@pytest.mark.parametrize("m", [1, 2, 3, 4])
def test_few_rows_against_row_major_b_take_the_engines_bits(isa, rng, m):
    # 1 to 4 rows against a row-major B of at least 2^20 elements (and any B for one row) read B a row at a time in
    # column blocks split over the threads; each K block (1030: blocks of 344 and 343) summed from zero and added to
    # C as the engine adds it, so a row's bits are those of the same row in a product of 40 rows, with any alpha,
    # beta and epilogue, at any thread count
    k, n = 1030, 1030  # K's last step of 1-3 rows, and each thread's last columns past whole vectors
    a = rng.standard_normal((40, k)).astype(np.float32)
    b = rng.standard_normal((k, n)).astype(np.float32)
    c = rng.standard_normal((40, n)).astype(np.float32)
    bias = {PER_ROW: rng.standard_normal(40).astype(np.float32), PER_COL: rng.standard_normal(n).astype(np.float32)}
    for alpha, beta, axis, relu in [(1.0, 0.0, NONE, False), (0.5, 0.0, PER_COL, True), (1.0, 1.0, PER_ROW, False),
                                    (-2.0, 0.75, PER_COL, False), (1.0, -1.5, NONE, True)]:
        bias_all = bias.get(axis)
        whole = _core.gemm(a, b, False, False, alpha, beta, c.copy(), bias_all, axis, relu, False)
        results = []
        for t in (1, 2, 3):
            with cc.threads(t):
                rows_bias = bias_all[:m].copy() if axis == PER_ROW else bias_all
                out = c[:m].copy() if beta else np.full((m, n), np.nan, np.float32)  # beta 0 never reads C
                results.append(_core.gemm(a[:m].copy(), b, False, False, alpha, beta, out, rows_bias, axis, relu,
                                          False))
        for r in results:
            assert np.array_equal(r, whole[:m]), (alpha, beta, axis, relu)
    np.testing.assert_allclose(F.matmul(a[:m], b), a[:m].astype(np.float64) @ b, rtol=1e-4, atol=1e-3)
    narrow = b[:, :5].copy()  # a small B: 2 to 4 rows stay on the engine, one row takes the row kernel; same bits
    assert np.array_equal(F.matmul(a[:m], narrow), F.matmul(a, narrow)[:m])
    assert np.array_equal(F.matmul(a[:m, :0].copy(), b[:0]), np.zeros((m, n), np.float32))


@pytest.mark.parametrize("n", [1365, 2730])
def test_few_rows_column_blocks_stay_within_their_sums(isa, rng, n):
    # 3 rows: a block holds at most 4096 sums, so at most 1360 columns (whole vectors); 1365 columns a thread are two
    # blocks, not one of 1376 rounded up to whole vectors (4128 sums, past the block's buffer: the sanitizer run
    # catches a write there)
    a = rng.standard_normal((40, 800)).astype(np.float32)
    b = rng.standard_normal((800, n)).astype(np.float32)
    whole = F.matmul(a, b)
    for t in (1, 2):
        with cc.threads(t):
            assert np.array_equal(F.matmul(a[:3].copy(), b), whole[:3]), t


@given(m=st.integers(1, 40), n=st.integers(1, 70), k=st.integers(1, 300), ta=st.booleans(), tb=st.booleans(),
       seed=st.integers(0, 2**32 - 1))
def test_engine_property_exact(m, n, k, ta, tb, seed):
    a, b = _operands(np.random.default_rng(seed), m, n, k, ta, tb)
    assert np.array_equal(_core.gemm(a, b, ta, tb, 1.0, 0.0, None, None, NONE, False, False),
                          _expected(a, b, ta, tb))


def test_matmul_takes_transposed_views_uncopied(rng, monkeypatch):
    a = rng.standard_normal((37, 300)).astype(np.float32)
    b = rng.standard_normal((300, 53)).astype(np.float32)
    at, bt = np.ascontiguousarray(a.T), np.ascontiguousarray(b.T)
    expected = F.matmul(a, b)
    copies = []
    real = np.ascontiguousarray
    monkeypatch.setattr(np, "ascontiguousarray", lambda x, *args, **kw: copies.append(x.shape) or real(x, *args, **kw))
    # the views at.T and bt.T are Fortran-ordered: the engine takes at and bt with its transpose flags, the same bits
    assert np.array_equal(F.matmul(at.T, b), expected)
    assert np.array_equal(F.matmul(a, bt.T), expected)
    assert np.array_equal(F.matmul(at.T, bt.T), expected)
    assert copies == []
    a64, bt64 = a.astype(np.float64), bt.astype(np.float64)
    np.testing.assert_allclose(F.matmul(a64, bt64.T), a64 @ bt64.T, rtol=1e-12)
    with pytest.raises(ValueError, match=r"a \(37, 300\) and b \(53, 300\)"):
        F.matmul(at.T, bt)


def test_linear_takes_a_transposed_weight_uncopied(rng, monkeypatch):
    # w given as the .T of an (in, out) array (Fortran-ordered): read through the engine's transpose flag, forward
    # and backward, with the bits of the C-ordered w (7 rows: the engine for both layouts)
    x = rng.standard_normal((7, 300)).astype(np.float32)
    w = rng.standard_normal((53, 300)).astype(np.float32)
    bias, dy = rng.standard_normal(53).astype(np.float32), rng.standard_normal((7, 53)).astype(np.float32)
    wt = np.ascontiguousarray(w.T)
    expected = F.linear(x, w, bias, activation="relu"), F.linear_backward(dy, x, w)
    copies = []
    real = np.ascontiguousarray
    monkeypatch.setattr(np, "ascontiguousarray", lambda v, *args, **kw: copies.append(v.shape) or real(v, *args, **kw))
    assert np.array_equal(F.linear(x, wt.T, bias, activation="relu"), expected[0])
    for got, want in zip(F.linear_backward(dy, x, wt.T), expected[1]):
        assert np.array_equal(got, want)
    assert copies == []
    with pytest.raises(ValueError, match=r"x.shape\[1\] \(299\) must equal w.shape\[1\] \(in_features 300\).*w is "
                                         r"\(53, 300\)"):
        F.linear(x[:, :299].copy(), wt.T)
    with pytest.raises(ValueError, match=r"b must have shape \(53,\)"):
        F.linear(x, wt.T, bias[:52].copy())


def test_matmul_and_linear(rng):
    a, b = _operands(rng, 9, 11, 13, False, False)
    assert np.array_equal(F.matmul(a, b), a @ b)
    # operands that are not C-contiguous float32 arrays take the checking path: copied, or the float64 reference
    assert np.array_equal(F.matmul(a, b[:, ::2]), a @ b[:, ::2])
    assert np.array_equal(F.matmul(np.asfortranarray(a), b), a @ b)
    np.testing.assert_allclose(F.matmul(a.astype(np.float64), b.astype(np.float64)), a.astype(np.float64) @ b,
                               rtol=1e-12)
    x = rng.standard_normal((5, 13)).astype(np.float32)
    w = rng.standard_normal((7, 13)).astype(np.float32)
    bias = rng.standard_normal(7).astype(np.float32)
    np.testing.assert_allclose(F.linear(x, w, bias), x @ w.T + bias, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(F.linear(x, w, bias, activation="relu"), np.maximum(x @ w.T + bias, 0),
                               rtol=1e-5, atol=1e-5)
    dy = rng.standard_normal((5, 7)).astype(np.float32)
    dx, dw, db = F.linear_backward(dy, x, w)
    np.testing.assert_allclose(dx, dy @ w, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(dw, dy.T @ x, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(db, dy.sum(0), rtol=1e-5, atol=1e-5)
    assert F.matmul(np.zeros((0, 3), np.float32), np.zeros((3, 4), np.float32)).shape == (0, 4)
    assert np.array_equal(F.matmul(np.zeros((2, 0), np.float32), np.zeros((0, 4), np.float32)), np.zeros((2, 4)))


def test_no_rows_against_a_large_b():
    # a product of no rows whose B has 2^20 elements or more (the few-row kernel's size, which divides by the rows)
    # gives an empty result: it ended the process with SIGFPE (an empty batch through VGG's or AlexNet's classifier)
    b = np.zeros((1024, 1024), np.float32)
    assert F.matmul(np.zeros((0, 1024), np.float32), b).shape == (0, 1024)
    assert F.linear(np.zeros((0, 1024), np.float32), b.T).shape == (0, 1024)  # the weight through its transpose
    dx, dw, db = F.linear_backward(np.zeros((0, 1024), np.float32), np.zeros((0, 1024), np.float32), b)
    assert dx.shape == (0, 1024) and np.array_equal(dw, np.zeros_like(b)) and np.array_equal(db, np.zeros(1024))


def test_matmul_common_case_recognised_in_cpp(rng):
    # _core.plain_matmul runs two C-contiguous, aligned float32 ndarrays whose inner dimensions agree and whose product
    # is within the element limit; it answers None for anything else, which matmul then validates and runs
    a, b = _operands(rng, 9, 11, 13, False, False)
    assert np.array_equal(_core.plain_matmul(a, b, 99), a @ b)
    unaligned = np.zeros(a.size * 4 + 1, np.uint8)[1:].view(np.float32).reshape(a.shape)
    unaligned[...] = a

    class Sub(np.ndarray):
        pass

    others = [(a.view(Sub), b), (unaligned, b), (np.asfortranarray(a), b), (a, b[:, ::2]),
              (a.astype(np.float64), b.astype(np.float64)), (a[0], b), (a, b[:12])]
    for x, y in others:
        assert _core.plain_matmul(x, y, 1 << 40) is None
    assert _core.plain_matmul(a, b, 98) is None  # 9 x 11 = 99 elements
    for x, y in others[:5]:
        assert np.array_equal(F.matmul(x, y), np.asarray(x, np.float64) @ np.asarray(y, np.float64))


def test_linear_float64_gradcheck(rng):
    from gradcheck import numerical_grad, relative_error

    x, w, b = rng.standard_normal((3, 4)), rng.standard_normal((5, 4)), rng.standard_normal(5)
    dy = rng.standard_normal((3, 5))
    dx, dw, db = F.linear_backward(dy, x, w)
    assert relative_error(dx, numerical_grad(lambda v: F.linear(v, w, b), x, dy)) < 1e-7
    assert relative_error(dw, numerical_grad(lambda v: F.linear(x, v, b), w, dy)) < 1e-7
    assert relative_error(db, numerical_grad(lambda v: F.linear(x, w, v), b, dy)) < 1e-7


A = np.zeros((3, 4), np.float32)
BAD = [
    (lambda: F.matmul(A, np.zeros((5, 2), np.float32)), ValueError, r"inner dimensions"),
    (lambda: F.matmul(A, np.zeros((4, 2), np.float64)), TypeError, r"b has dtype float64 but must match"),
    (lambda: F.matmul(A[0], A), ValueError, r"a must be 2-D"),
    (lambda: F.matmul(A.astype(np.int32), A), TypeError, r"a has dtype int32"),
    (lambda: F.matmul(np.zeros((1 << 21, 1), np.float32), np.zeros((1, 1 << 20), np.float32)), ValueError,
     r"the product would have shape \(2097152, 1048576\)"),
    (lambda: F.linear(A, np.zeros((2, 5), np.float32)), ValueError, r"must equal w.shape\[1\] \(in_features 5\)"),
    (lambda: F.linear(A, np.zeros((2, 4), np.float32), np.zeros(3, np.float32)), ValueError,
     r"b must have shape \(2,\)"),
    (lambda: F.linear(A, np.zeros((2, 4), np.float32), activation="tanh"), ValueError,
     r"activation must be None or 'relu', got 'tanh'"),
    (lambda: F.linear_backward(np.zeros((3, 3), np.float32), A, np.zeros((2, 4), np.float32)), ValueError,
     r"dy must have shape \(3, 2\)"),
    (lambda: F.linear_backward(np.zeros((3, 2), np.float32), A, np.zeros((2, 4), np.float32), bias_grad="no"),
     TypeError, r"bias_grad must be a bool, got 'no'"),
    (lambda: F.linear_backward(np.zeros((3, 2), np.float32), A, np.zeros((2, 4), np.float32), input_grad=0),
     TypeError, r"input_grad must be a bool, got 0"),
    (lambda: F.linear(A, np.zeros((2, 4), np.float32), activation=np.array([1, 2])), ValueError,
     r"activation must be None or 'relu', got array\(\[1, 2\]\)"),
]


@pytest.mark.parametrize("call,exc,match", BAD, ids=[str(i) for i in range(len(BAD))])
def test_rejects_bad_input(call, exc, match):
    with pytest.raises(exc, match=match):
        call()
