"""IDX reader (valid, corrupted, truncated), Fashion-MNIST search order and missing-data message, CIFAR-10's
restricted unpickler, and the batch iterator's determinism and augmentation."""
import gzip
import os
import pickle
import struct

import numpy as np
import pytest

from convcore import data
from convcore.data import datasets


def write_idx(path, array, code=0x08):
    header = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    payload = header + array.astype(array.dtype.newbyteorder(">")).tobytes()
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "wb") as f:
        f.write(payload)


def make_fashion_mnist(folder, n_train=20, n_test=10, seed=0):
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        write_idx(folder / f"{prefix}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 28, 28)).astype(np.uint8))
        write_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", (np.arange(n) % 10).astype(np.uint8))
    return folder


def test_idx_round_trip_raw_and_gzip(tmp_path):
    a = np.arange(24, dtype=np.int32).reshape(2, 3, 4)
    for name in ("a.idx", "a.idx.gz"):
        write_idx(tmp_path / name, a, code=0x0C)
        assert np.array_equal(data.read_idx(tmp_path / name), a)


@pytest.mark.parametrize("payload,match", [
    (b"\x00\x00", "shorter than the 4-byte magic"),
    (b"\x01\x00\x08\x01" + struct.pack(">I", 3) + b"abc", "not an IDX file"),
    (b"\x00\x00\x07\x01" + struct.pack(">I", 3) + b"abc", "not an IDX file"),
    (b"\x00\x00\x08\x02" + struct.pack(">I", 3), "truncated IDX header"),
    (b"\x00\x00\x08\x01" + struct.pack(">I", 5) + b"abc", "shorter than its header"),
    (b"\x00\x00\x08\x01" + struct.pack(">I", 2) + b"abc", "longer than its header"),
    (b"\x00\x00\x08\x03" + struct.pack(">3I", 2**31, 2**31, 2**31), "more than the limit"),
])
def test_idx_rejects_corrupt_files(tmp_path, payload, match):
    (tmp_path / "bad.idx").write_bytes(payload)
    with pytest.raises(ValueError, match=match):
        data.read_idx(tmp_path / "bad.idx")


def test_idx_rejects_broken_gzip(tmp_path):
    (tmp_path / "bad.idx.gz").write_bytes(b"\x1f\x8b\x08\x00garbage")
    with pytest.raises(ValueError, match="cannot read IDX data"):
        data.read_idx(tmp_path / "bad.idx.gz")


def test_fashion_mnist_search_order_and_format(tmp_path, monkeypatch):
    root = make_fashion_mnist(tmp_path / "root", n_train=20)
    env = make_fashion_mnist(tmp_path / "env", n_train=30)
    monkeypatch.setenv("CONVCORE_DATA", str(env))
    x, y, xt, yt = data.load_fashion_mnist(root)
    assert x.shape == (20, 1, 28, 28) and x.dtype == np.float32 and 0 <= x.min() and x.max() <= 1
    assert y.dtype == np.int64 and xt.shape == (10, 1, 28, 28)
    assert data.load_fashion_mnist()[0].shape[0] == 30  # no root: $CONVCORE_DATA


def test_fashion_mnist_missing_says_how_to_get_it(tmp_path, monkeypatch):
    monkeypatch.setenv("CONVCORE_DATA", str(tmp_path / "nowhere"))
    monkeypatch.setattr(datasets, "DEBIAN_FASHION_MNIST", tmp_path / "debian")
    with pytest.raises(FileNotFoundError, match="apt-get install dataset-fashion-mnist"):
        data.load_fashion_mnist(tmp_path / "empty")


@pytest.mark.skipif(not os.path.isdir("/usr/share/datasets/fashion-mnist"),
                    reason="Debian package dataset-fashion-mnist not installed")
def test_real_fashion_mnist_from_the_debian_package():
    x, y, xt, yt = data.load_fashion_mnist("/usr/share/datasets/fashion-mnist")
    assert x.shape == (60000, 1, 28, 28) and xt.shape == (10000, 1, 28, 28)
    assert np.array_equal(np.bincount(y), np.full(10, 6000)) and np.array_equal(np.bincount(yt), np.full(10, 1000))


def test_cifar_loader_refuses_arbitrary_pickled_objects(tmp_path):
    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))
    for i in range(1, 6):
        (tmp_path / f"data_batch_{i}").write_bytes(pickle.dumps(Evil()))
    (tmp_path / "test_batch").write_bytes(pickle.dumps(Evil()))
    with pytest.raises(pickle.UnpicklingError, match="refusing to load"):
        data.load_cifar10(tmp_path)


def test_cifar_loader_reads_batches(tmp_path):
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {b"data": rng.integers(0, 256, (4, 3072)).astype(np.uint8), b"labels": [1, 2, 3, 9]}
        (tmp_path / name).write_bytes(pickle.dumps(batch))
    x, y, xt, yt = data.load_cifar10(tmp_path)
    assert x.shape == (20, 3, 32, 32) and y.tolist()[:4] == [1, 2, 3, 9] and xt.shape == (4, 3, 32, 32)


def test_batches_are_reproducible_and_resumable(rng):
    x = rng.random((50, 3, 8, 8), dtype=np.float32)
    y = np.arange(50)
    b = data.Batches(x, y, 8, seed=3, crop_padding=2, flip=True, normalize=([0.5] * 3, [0.25] * 3))
    assert len(b) == 7
    first = list(b.epoch(1))
    again = list(b.epoch(1))
    for (xa, ya), (xb, yb) in zip(first, again):
        assert np.array_equal(xa, xb) and np.array_equal(ya, yb)
    resumed = list(b.epoch(1, start=4))
    assert all(np.array_equal(a[0], c[0]) for a, c in zip(first[4:], resumed))
    assert sorted(np.concatenate([yb for _, yb in first]).tolist()) == list(range(50))
    assert not np.array_equal(np.concatenate([yb for _, yb in first]), np.concatenate([yb for _, yb in b.epoch(2)]))


def test_augmentation_is_a_shifted_or_mirrored_copy():
    x = np.arange(2 * 1 * 4 * 4, dtype=np.float32).reshape(2, 1, 4, 4) + 1
    b = data.Batches(x, np.arange(2), 2, shuffle=False, crop_padding=1)
    xb, _ = next(b.epoch(0))
    for img, src in zip(xb, x):
        padded = np.pad(src, ((0, 0), (1, 1), (1, 1)))
        assert any(np.array_equal(img, padded[:, i:i + 4, j:j + 4]) for i in range(3) for j in range(3))
    f = data.Batches(x, np.arange(2), 2, shuffle=False, flip=True, seed=1)
    for e in range(4):
        xb, _ = next(f.epoch(e))
        for img, src in zip(xb, x):
            assert np.array_equal(img, src) or np.array_equal(img, src[..., ::-1])


def test_batches_argument_errors():
    with pytest.raises(ValueError, match=r"x must be \(N, ...\) and y \(N,\)"):
        data.Batches(np.zeros((4, 2)), np.zeros(3), 2)
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        data.Batches(np.zeros((4, 2)), np.zeros(4), 0)
    with pytest.raises(ValueError, match="crop and flip augmentation need"):
        data.Batches(np.zeros((4, 2)), np.zeros(4), 2, flip=True)
