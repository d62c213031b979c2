"""Tensors just past 2**31 elements (slow: run with -m slow).

Each test runs the public API on an array, or a single plane, row or column, of more than 2**31 - 1 elements (so
that every flat offset, row offset and per-image offset past it would wrap in a 32-bit int) and checks the result's
first and last parts against an independent computation: numpy on the same slice, or the same function on a small
slice (whose offsets all fit in 32 bits). A kernel indexing with a wrapped int would write the tail's results
elsewhere (or read another part of the input), so the tail would not match.

Memory: the big inputs are np.zeros arrays with random data only in their first and last EDGE elements; the pages in
between are never written, so the kernels read them from the system's shared zero page (Linux) and they take no
memory. What a test needs is its outputs' memory (8 GiB for 2**31 float32): peaks of 8.3 to 12.2 GiB resident; it is
skipped where less is free.
Each test runs in a forked child process (one thread: convcore runs serially in a forked process), so that a kernel
that crashes on a wrapped offset fails its test instead of ending the session, a hang is cut short, and the child's
memory is all given back when it exits.
"""
import math
import multiprocessing
import os
import traceback

import numpy as np
import pytest

import convcore as cc

F = cc.functional
GiB = 1 << 30
BIG = 2**31 + 64              # elements: just past the largest 32-bit signed int
EDGE = 1 << 22                # random floats at each end of a big input (16 MiB)
SIDE = 46341                  # SIDE**2 = 2**31 + 264 (46341 x 46341 planes and products)
TIMEOUT = 300                 # seconds a child may take


def _free_bytes() -> int:
    """MemAvailable (free memory plus what the kernel can reclaim, such as the page cache), else the free pages."""
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def _needs(gib: float) -> None:
    try:
        free = _free_bytes()
    except (ValueError, OSError):
        pytest.skip("the free memory is not known here (no /proc/meminfo, and os.sysconf has no SC_AVPHYS_PAGES)")
    if free < gib * GiB:
        pytest.skip(f"needs about {gib} GiB of free memory for arrays past 2**31 elements, "
                    f"{free / GiB:.1f} GiB free")


def _child(conn, fn):
    try:
        conn.send(("ok", fn()))
    except BaseException:  # noqa: BLE001 - reported to the parent
        conn.send(("error", traceback.format_exc()))
    conn.close()


def _isolated(fn):
    """fn() in a forked child; returns its (picklable) result. A crash, a hang or an exception fails the test."""
    ctx = multiprocessing.get_context("fork")
    receive, send = ctx.Pipe(duplex=False)
    child = ctx.Process(target=_child, args=(send, fn))
    child.start()
    send.close()
    ready = receive.poll(TIMEOUT)  # True also where the child died: recv then finds the pipe closed
    try:
        message = receive.recv() if ready else None
    except EOFError:
        message = None
    child.join(10 if ready else 0)
    if child.is_alive():
        child.kill()
        child.join()
        pytest.fail(f"no result after {TIMEOUT} s (a loop over a wrapped count?)")
    if message is None:
        pytest.fail(f"the child process died (exit code {child.exitcode}): a crash on a wrapped offset?")
    status, value = message
    if status == "error":
        pytest.fail(value)
    return value


def _zeros_with_ends(shape, rng):
    """float32 zeros of `shape` with random values in the first and last EDGE elements (the rest is never touched)."""
    x = np.zeros(shape, np.float32)
    flat = x.reshape(-1)
    flat[:EDGE] = rng.standard_normal(EDGE, dtype=np.float32)
    flat[-EDGE:] = rng.standard_normal(EDGE, dtype=np.float32)
    return x


def _end_images(shape):
    """Slices of the first and last images of a batch of `shape` that hold _zeros_with_ends' random values."""
    touched = EDGE // (shape[2] * shape[3]) + 1
    return slice(0, touched), slice(shape[0] - touched, shape[0])


def _err(got, want) -> float:
    """Largest difference relative to want's magnitude (0 where equal); inf where shapes differ."""
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    if got.shape != want.shape:
        return math.inf
    return float(np.max(np.abs(got - want)) / max(1.0, float(np.max(np.abs(want)))))


# ---- element-wise ----

@pytest.mark.slow
def test_relu_forward_and_backward_past_2_31_elements():
    _needs(9.5)

    def run():
        rng = np.random.default_rng(0)
        x = _zeros_with_ends((BIG,), rng)
        y = F.relu(x)
        out = {"y_head": _err(y[:EDGE], np.maximum(x[:EDGE], 0)), "y_tail": _err(y[-EDGE:], np.maximum(x[-EDGE:], 0)),
               "y_middle": float(np.abs(y[BIG // 2 - 1024:BIG // 2 + 1024]).max())}
        del y
        dy = _zeros_with_ends((BIG,), rng)
        dx = F.relu_backward(dy, x)
        out["dx_tail"] = _err(dx[-EDGE:], np.where(x[-EDGE:] > 0, dy[-EDGE:], 0))
        out["dx_head"] = _err(dx[:EDGE], np.where(x[:EDGE] > 0, dy[:EDGE], 0))
        return out

    assert _isolated(run) == {"y_head": 0, "y_tail": 0, "y_middle": 0, "dx_tail": 0, "dx_head": 0}


# ---- matrix products ----

@pytest.mark.slow
def test_matmul_and_linear_with_more_than_2_31_outputs():
    # (46341, 8) @ (8, 47000): row offsets i * 47000 past 2**31 from row 45693 on (the last register tiles of rows
    # start past it); linear: x @ w.T + b with ReLU fused
    _needs(9.5)

    def run():
        rng = np.random.default_rng(1)
        M, N = SIDE, 47000
        a = rng.standard_normal((M, 8), dtype=np.float32)
        b = rng.standard_normal((8, N), dtype=np.float32)
        rows = [slice(0, 4), slice(M // 2, M // 2 + 4), slice(M - 700, M - 696), slice(M - 4, M)]
        c = F.matmul(a, b)
        out = {f"matmul {r.start}": _err(c[r], a[r].astype(np.float64) @ b) for r in rows}
        del c
        bias = rng.standard_normal(N, dtype=np.float32)
        y = F.linear(a, b.T.copy(), bias, activation="relu")
        for r in rows:
            out[f"linear {r.start}"] = _err(y[r], np.maximum(a[r].astype(np.float64) @ b + bias, 0))
        return out

    errors = _isolated(run)
    assert max(errors.values()) < 1e-5, errors


@pytest.mark.slow
@pytest.mark.parametrize("form", ["row", "column", "linear_row"])
def test_product_of_one_row_or_column_past_2_31(form):
    # one row of C wider than 2**31 (column offsets), one column taller (row offsets with ldc 1), and a linear layer
    # at batch 1 with more than 2**31 outputs (its few-row dot products: rows of w past 2**31)
    _needs(9.5)

    def run():
        rng = np.random.default_rng(2)
        if form == "row":
            v = _zeros_with_ends((1, BIG), rng)
            got = F.matmul(np.array([[1.5]], np.float32), v)[0]
        elif form == "column":
            v = _zeros_with_ends((BIG, 1), rng)
            got = F.matmul(v, np.array([[1.5]], np.float32))[:, 0]
        else:
            v = _zeros_with_ends((BIG, 1), rng)
            got = F.linear(np.array([[1.5]], np.float32), v)[0]
        v = v.reshape(-1)
        return {"head": _err(got[:EDGE], 1.5 * v[:EDGE]), "tail": _err(got[-EDGE:], 1.5 * v[-EDGE:]),
                "middle": float(np.abs(got[BIG // 2:BIG // 2 + 4096]).max())}

    assert _isolated(run) == {"head": 0, "tail": 0, "middle": 0}


# ---- convolution ----

@pytest.mark.slow
def test_conv2d_1x1_on_one_plane_past_2_31_forward_and_backward():
    # (1, 1, 46341, 46341): one image's plane past 2**31 elements (the pointwise route: one product of 2**31 columns)
    _needs(9.5)

    def run():
        rng = np.random.default_rng(3)
        x = _zeros_with_ends((1, 1, SIDE, SIDE), rng)
        w = np.full((1, 1, 1, 1), 1.5, np.float32)
        b = np.array([0.25], np.float32)
        y = F.conv2d(x, w, b).reshape(-1)
        xf = x.reshape(-1)
        out = {"y_head": _err(y[:EDGE], xf[:EDGE] * 1.5 + 0.25), "y_tail": _err(y[-EDGE:], xf[-EDGE:] * 1.5 + 0.25),
               "y_middle": _err(y[BIG // 2:BIG // 2 + 4096], np.full(4096, 0.25))}
        del y
        dy = _zeros_with_ends(x.shape, rng)
        dx, dw, db = F.conv2d_backward(dy, x, w)
        dyf, dx = dy.reshape(-1), dx.reshape(-1)
        out["dx_head"] = _err(dx[:EDGE], 1.5 * dyf[:EDGE])
        out["dx_tail"] = _err(dx[-EDGE:], 1.5 * dyf[-EDGE:])
        ends = (slice(0, EDGE), slice(-EDGE, None))
        dw_want = sum(xf[e].astype(np.float64) @ dyf[e] for e in ends)
        db_want = sum(dyf[e].sum(dtype=np.float64) for e in ends)
        scale = sum(np.abs(dyf[e]).sum(dtype=np.float64) for e in ends)  # float32 sums: error relative to this
        out["dw"] = abs(float(dw[0, 0, 0, 0]) - dw_want) / scale
        out["db"] = abs(float(db[0]) - db_want) / scale
        return out

    errors = _isolated(run)
    assert errors["dw"] < 1e-5 and errors["db"] < 1e-5, errors
    assert {k: v for k, v in errors.items() if k not in ("dw", "db")} == dict.fromkeys(
        ["y_head", "y_tail", "y_middle", "dx_head", "dx_tail"], 0.0)


@pytest.mark.slow
@pytest.mark.parametrize("case", ["1x1", "3x3_stride2"])
def test_conv2d_batch_past_2_31_forward_and_backward(case):
    # 32769 images of 256 x 256: each image's offset n * C * H * W past 2**31 for the last ones. 1x1: one product per
    # image; 3x3/2 padded: im2col through the padded, phase-split copy (forward), the weight gradient and col2im
    # (backward). The first and last images are compared with the same calls on those images alone.
    _needs(9.5)

    def run():
        rng = np.random.default_rng(4)
        x = _zeros_with_ends((32769, 1, 256, 256), rng)
        if case == "1x1":
            w, options = np.full((1, 1, 1, 1), 1.5, np.float32), {}
        else:
            w, options = rng.standard_normal((4, 1, 3, 3), dtype=np.float32), {"stride": 2, "padding": 1}
        b = rng.standard_normal(w.shape[0], dtype=np.float32)
        ends = _end_images(x.shape)
        y = F.conv2d(x, w, b, **options)
        assert y.size > 2**31
        out = {f"y {e.start}": _err(y[e], F.conv2d(np.ascontiguousarray(x[e]), w, b, **options)) for e in ends}
        dy = _zeros_with_ends(y.shape, rng)
        del y
        dx, dw, db = F.conv2d_backward(dy, x, w, **options)
        dw_want, db_want = 0.0, 0.0
        for e in ends:
            dx_e, dw_e, db_e = F.conv2d_backward(np.ascontiguousarray(dy[e]), np.ascontiguousarray(x[e]), w, **options)
            out[f"dx {e.start}"] = _err(dx[e], dx_e)
            dw_want, db_want = dw_want + dw_e.astype(np.float64), db_want + db_e.astype(np.float64)
        out["dw"], out["db"] = _err(dw, dw_want), _err(db, db_want)
        return out

    errors = _isolated(run)
    assert max(errors.values()) < 1e-4, errors
    assert max(v for k, v in errors.items() if k.startswith(("y", "dx"))) < 1e-6, errors


# ---- pooling ----

# (input shape, pooling arguments): 32769 images of 256 x 256 3x3/2 padded (the stride-2 kernels, each image's offset
# past 2**31 for the last ones), 2**27 + 8 images of 4 x 4 2x2/2 (the narrow-row kernels), one plane past 2**31 2x2/2
POOL_CASES = {"batch_3x3_stride2_pad1": ((32769, 1, 256, 256), (3, 2, 1)), "narrow_2x2": ((2**27 + 8, 1, 4, 4), (2,)),
              "plane_2x2": ((1, 1, SIDE + 1, SIDE + 1), (2,))}

def _max_2x2_rows(rows):
    """numpy 2x2/2 max pooling of an (2r, W) block: (values, flat offsets 0..3 of the first max in each window)."""
    r, w = rows.shape[0] // 2, rows.shape[1] // 2
    windows = rows[:2 * r, :2 * w].reshape(r, 2, w, 2).transpose(0, 2, 1, 3).reshape(r, w, 4)
    return windows.max(axis=2), windows.argmax(axis=2)


@pytest.mark.slow
def test_max_pool2d_with_indices_on_one_plane_past_2_31():
    # (1, 1, 46342, 46342) 2x2/2: the indices of the last rows lie past 2**31 in the plane; the backward routes dy to
    # them (dx written whole: 8 GiB)
    _needs(13)

    def run():
        rng = np.random.default_rng(5)
        H = W = SIDE + 1  # even
        x = _zeros_with_ends((1, 1, H, W), rng)
        y, idx = F.max_pool2d(x, 2, return_indices=True)
        OH, OW = H // 2, W // 2
        rows = EDGE // W // 2 - 1  # output rows whose windows lie in the random ends
        out = {}
        for oh0 in (0, OH - rows):
            want, k = _max_2x2_rows(x[0, 0, 2 * oh0:2 * (oh0 + rows)])
            want_idx = (2 * (oh0 + np.arange(rows))[:, None] + k // 2) * W + 2 * np.arange(OW)[None, :] + k % 2
            out[f"y {oh0}"] = _err(y[0, 0, oh0:oh0 + rows], want)
            out[f"idx {oh0}"] = int(np.abs(idx[0, 0, oh0:oh0 + rows] - want_idx).max())
        out["last index past 2**31"] = bool(idx[0, 0, -1, -1] > 2**31)
        del y
        dy = _zeros_with_ends((1, 1, OH, OW), rng)
        dx = F.max_pool2d_backward(dy, idx, x.shape, 2)
        tail_idx, tail_dy = idx[0, 0, OH - rows:].reshape(-1), dy[0, 0, OH - rows:].reshape(-1)
        out["dx at argmax"] = _err(dx.reshape(-1)[tail_idx], tail_dy)
        out["dx tail sum"] = _err(dx[0, 0, 2 * (OH - rows):].sum(dtype=np.float64), tail_dy.sum(dtype=np.float64))
        out["dx head"] = _err(dx[0, 0, :2], F.max_pool2d_backward(
            np.ascontiguousarray(dy[:, :, :1]), np.ascontiguousarray(idx[:, :, :1]), (1, 1, 2, W), 2)[0, 0])
        return out

    errors = _isolated(run)
    assert errors.pop("last index past 2**31") is True
    assert max(errors.values()) < 1e-12, errors  # exact but for the float64 sums' order


@pytest.mark.slow
@pytest.mark.parametrize("case", ["batch_3x3_stride2_pad1", "narrow_2x2"])
def test_max_pool2d_layer_past_2_31_forward_and_backward(case):
    # nn.MaxPool2d (compact argmax) on 32769 images of 256 x 256 (the stride-2 vector kernel, overlapping windows,
    # padding) and on 2**27 + 8 images of 4 x 4 (the narrow-row 2x2/2 kernel: several images a vector step); the
    # first and last images against a layer run on those images alone
    _needs(11.5)

    def run():
        rng = np.random.default_rng(6)
        shape, args = POOL_CASES[case]
        x = _zeros_with_ends(shape, rng)
        layer = cc.nn.MaxPool2d(*args)
        y = layer(x)
        ends = _end_images(shape)
        dy = _zeros_with_ends(y.shape, rng)
        out = {}
        for e in ends:
            small = cc.nn.MaxPool2d(*args)
            out[f"y {e.start}"] = _err(y[e], small(np.ascontiguousarray(x[e])))
            out[f"dx {e.start}"] = small.backward(np.ascontiguousarray(dy[e]))
        del y
        dx = layer.backward(dy)
        for e in ends:
            out[f"dx {e.start}"] = _err(dx[e], out[f"dx {e.start}"])
        return out

    errors = _isolated(run)
    assert errors == dict.fromkeys(errors, 0), errors


@pytest.mark.slow
@pytest.mark.parametrize("case", ["plane_2x2", "batch_3x3_stride2_pad1", "narrow_2x2"])
def test_avg_pool2d_past_2_31_forward_and_backward(case):
    # one plane past 2**31 (2x2/2 fast path), 32769 images of 256 x 256 (3x3/2 padded: the stride-2 kernels) and
    # 2**27 + 8 images of 4 x 4 (narrow rows); compared with numpy (the plane) or the same calls on the end images
    _needs(9.5)

    def run():
        rng = np.random.default_rng(7)
        shape, args = POOL_CASES[case]
        x = _zeros_with_ends(shape, rng)
        y = F.avg_pool2d(x, *args)
        dy = _zeros_with_ends(y.shape, rng)
        out = {}
        if case == "plane_2x2":
            W, OH = shape[3], y.shape[2]
            rows = EDGE // W // 2 - 1
            for oh0 in (0, OH - rows):
                block = x[0, 0, 2 * oh0:2 * (oh0 + rows)]
                a, b, c, d = block[0::2, 0::2], block[0::2, 1::2], block[1::2, 0::2], block[1::2, 1::2]
                out[f"y {oh0}"] = _err(y[0, 0, oh0:oh0 + rows], (((a + b) + c) + d) * np.float32(0.25))
            del y
            dx = F.avg_pool2d_backward(dy, shape, *args)
            for oh0 in (0, OH - rows):
                g = np.repeat(np.repeat(dy[0, 0, oh0:oh0 + rows] * np.float32(0.25), 2, axis=0), 2, axis=1)
                out[f"dx {oh0}"] = _err(dx[0, 0, 2 * oh0:2 * (oh0 + rows)], g)
            return out
        ends = _end_images(shape)
        for e in ends:
            out[f"y {e.start}"] = _err(y[e], F.avg_pool2d(np.ascontiguousarray(x[e]), *args))
        del y
        dx = F.avg_pool2d_backward(dy, shape, *args)
        for e in ends:
            want = F.avg_pool2d_backward(np.ascontiguousarray(dy[e]), (e.stop - e.start,) + shape[1:], *args)
            out[f"dx {e.start}"] = _err(dx[e], want)
        return out

    errors = _isolated(run)
    assert max(errors.values()) < 1e-6, errors
