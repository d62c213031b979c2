"""CIFAR-10 from the python batches in a folder the user provides (nothing is downloaded), read without ever letting
the pickles build arbitrary objects."""
from __future__ import annotations

import codecs
import pickle
from pathlib import Path

import numpy as np

BATCH_NAMES = tuple(f"data_batch_{i}" for i in range(1, 6)) + ("test_batch",)
_NUMERIC_DTYPES = frozenset({"u1", "i1", "u2", "i2", "u4", "i4", "u8", "i8", "f4", "f8"})


class Refused(pickle.UnpicklingError):
    """What a batch file may not build: a global, array or construction a CIFAR-10 batch never holds."""


_NDARRAY = object()  # stands for numpy.ndarray inside a batch file: only _reconstruct accepts it; it cannot be called


def _dtype(code, align=False, copy=True):
    if isinstance(code, bytes):  # written by Python 2 (the official archive), read with encoding="bytes"
        code = code.decode("ascii", "replace")
    if not isinstance(code, str) or code not in _NUMERIC_DTYPES:
        raise Refused(f"refusing dtype {code!r} in a CIFAR-10 batch (numeric dtypes only)")
    return np.dtype(code)


def _reconstruct(subtype, shape, typecode):
    # the first half of numpy's array pickle: an empty uint8 array whose state (shape, dtype, raw bytes) follows;
    # ndarray.__setstate__ then checks the bytes against the shape and dtype
    if subtype is not _NDARRAY or tuple(shape) != (0,) or typecode not in (b"b", "b"):
        raise Refused("refusing an unusual array construction in a CIFAR-10 batch")
    return np.ndarray((0,), np.uint8)


def _frombuffer(buffer, dtype, shape, order):
    if not isinstance(dtype, np.dtype) or dtype.hasobject:
        raise Refused("refusing a non-numeric array in a CIFAR-10 batch")
    return np.frombuffer(buffer, dtype).reshape(shape, order=order)


def _latin1(text, encoding):
    if not isinstance(text, str) or encoding != "latin1":
        raise Refused("refusing an unusual bytes construction in a CIFAR-10 batch")
    return codecs.encode(text, "latin1")


class _BatchUnpickler(pickle.Unpickler):
    """Builds only dicts, lists, bytes, strings, numbers and numeric numpy arrays: every global a batch may name is
    replaced by a guarded stand-in that checks its arguments; anything else is refused."""

    _GLOBALS = {
        ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
        ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
        ("numpy.core.numeric", "_frombuffer"): _frombuffer,
        ("numpy._core.numeric", "_frombuffer"): _frombuffer,
        ("numpy", "ndarray"): _NDARRAY,
        ("numpy", "dtype"): _dtype,
        ("_codecs", "encode"): _latin1,
    }

    def find_class(self, module, name):
        try:
            return self._GLOBALS[(module, name)]
        except KeyError:
            raise Refused(f"refusing to load {module}.{name} from a CIFAR-10 batch file") from None


def _load_batch(path: Path):
    with open(path, "rb") as f:
        try:
            batch = _BatchUnpickler(f, encoding="bytes").load()
        except Refused as e:
            raise Refused(f"{path}: {e}") from None
        except (pickle.UnpicklingError, EOFError, ValueError, TypeError, IndexError, KeyError, AttributeError,
                MemoryError, OverflowError) as e:  # truncated or not a pickle (OverflowError: a length of 2**63)
            raise ValueError(f"{path}: not a readable CIFAR-10 batch ({type(e).__name__}: {e})") from e
    if not isinstance(batch, dict) or b"data" not in batch or b"labels" not in batch:
        raise ValueError(f"{path}: not a CIFAR-10 batch (a dict with 'data' and 'labels')")
    data, labels = batch[b"data"], batch[b"labels"]
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8:
        raise ValueError(f"{path}: 'data' must be a uint8 array, got {getattr(data, 'dtype', type(data).__name__)}")
    if not isinstance(labels, list) or not all(type(v) is int for v in labels):
        raise ValueError(f"{path}: 'labels' must be a list of ints")
    if not all(0 <= v <= 9 for v in labels):  # checked as Python ints: 2**63 overflowed the int64 array
        raise ValueError(f"{path}: labels must be in [0, 10)")
    labels = np.asarray(labels, dtype=np.int64)
    if data.ndim != 2 or data.shape[1] != 3072 or labels.shape != (data.shape[0],):
        raise ValueError(f"{path}: data {data.shape} / labels {labels.shape}, expected (N, 3072) and (N,)")
    return data.reshape(-1, 3, 32, 32), labels


def load_cifar10(root):
    """CIFAR-10 from the python batches (data_batch_1..5, test_batch) in `root` or in its cifar-10-batches-py
    folder (the official python archive, extracted by the user). Returns (x_train, y_train, x_test, y_test): float32
    (N, 3, 32, 32) in [0, 1] and int64 labels. The pickles are read by an unpickler that builds only plain data and
    numeric numpy arrays (see _BatchUnpickler); pickle.load is never used."""
    root = Path(root)
    if not (root / BATCH_NAMES[0]).is_file() and (root / "cifar-10-batches-py").is_dir():
        root = root / "cifar-10-batches-py"
    missing = [n for n in BATCH_NAMES if not (root / n).is_file()]
    if missing:
        raise FileNotFoundError(f"CIFAR-10 batches {missing} not found in {root}: pass the extracted "
                                f"cifar-10-batches-py folder of the official python archive")
    parts = [_load_batch(root / n) for n in BATCH_NAMES]
    x_train = np.divide(np.concatenate([p[0] for p in parts[:5]]), 255, dtype=np.float32)  # cast as it divides
    y_train = np.concatenate([p[1] for p in parts[:5]])
    return x_train, y_train, np.divide(parts[5][0], 255, dtype=np.float32), parts[5][1]
