"""Data sets read from local files (nothing is downloaded): Fashion-MNIST (IDX) and CIFAR-10 (python batches)."""
from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np

from .idx import read_idx

DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
_FMNIST_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
                 "t10k-labels-idx1-ubyte")


def _find(folder: Path, stem: str):
    for name in (stem + ".gz", stem):
        if (folder / name).is_file():
            return folder / name
    return None


def fashion_mnist_dirs(root=None):
    """The folders searched, in order: root, $CONVCORE_DATA (and its fashion-mnist/), Debian's package folder."""
    dirs = []
    if root is not None:
        dirs.append(Path(root))
    env = os.environ.get("CONVCORE_DATA")
    if env:
        dirs += [Path(env), Path(env) / "fashion-mnist"]
    dirs.append(DEBIAN_FASHION_MNIST)
    return dirs


def load_fashion_mnist(root=None):
    """Fashion-MNIST as (x_train, y_train, x_test, y_test): images float32 (N, 1, 28, 28) scaled to [0, 1],
    labels int64 in [0, 10).

    Looks for the four IDX files (gzipped or not) in `root`, then $CONVCORE_DATA, then
    /usr/share/datasets/fashion-mnist (Debian package dataset-fashion-mnist)."""
    searched = fashion_mnist_dirs(root)
    for folder in searched:
        paths = [_find(folder, stem) for stem in _FMNIST_FILES]
        if all(paths):
            break
    else:
        raise FileNotFoundError(
            "Fashion-MNIST not found; looked in " + ", ".join(str(d) for d in searched) + " for "
            + ", ".join(s + "[.gz]" for s in _FMNIST_FILES) + ". Install it with "
            "`sudo apt-get install dataset-fashion-mnist` (Debian/Ubuntu), or put the four files in a folder and "
            "pass root= (or set CONVCORE_DATA).")
    x_train, y_train, x_test, y_test = (read_idx(p) for p in paths)
    for name, x, y in (("train", x_train, y_train), ("test", x_test, y_test)):
        if x.ndim != 3 or x.shape[1:] != (28, 28) or y.shape != (x.shape[0],):
            raise ValueError(f"Fashion-MNIST {name} files have shapes {x.shape} and {y.shape}, expected (N, 28, 28) "
                             f"images and (N,) labels")
        if y.size and y.max() > 9:
            raise ValueError(f"Fashion-MNIST {name} labels must be in [0, 10), found {int(y.max())}")

    def images(x):
        return (x.astype(np.float32) / 255.0).reshape(-1, 1, 28, 28)
    return images(x_train), y_train.astype(np.int64), images(x_test), y_test.astype(np.int64)


class _BatchUnpickler(pickle.Unpickler):
    """Unpickles only plain containers, strings, bytes and numbers: CIFAR batches hold numpy arrays, which arrive
    as a reconstruct call we allow for numpy's ndarray and dtype only."""

    _ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
                ("numpy", "ndarray"), ("numpy", "dtype")}

    def find_class(self, module, name):
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a CIFAR-10 batch file")


def _load_cifar_batch(path: Path):
    with open(path, "rb") as f:
        batch = _BatchUnpickler(f, encoding="bytes").load()
    if not isinstance(batch, dict) or b"data" not in batch or b"labels" not in batch:
        raise ValueError(f"{path}: not a CIFAR-10 batch (a dict with 'data' and 'labels')")
    data = np.asarray(batch[b"data"], dtype=np.uint8)
    labels = np.asarray(batch[b"labels"], dtype=np.int64)
    if data.ndim != 2 or data.shape[1] != 3072 or labels.shape != (data.shape[0],):
        raise ValueError(f"{path}: data {data.shape} / labels {labels.shape}, expected (N, 3072) and (N,)")
    if labels.size and (labels.min() < 0 or labels.max() > 9):
        raise ValueError(f"{path}: labels must be in [0, 10)")
    return data.reshape(-1, 3, 32, 32), labels


def load_cifar10(root):
    """CIFAR-10 from the python batches in `root` (data_batch_1..5, test_batch; the cifar-10-batches-py folder of
    the official archive, which the user provides). Returns (x_train, y_train, x_test, y_test): float32
    (N, 3, 32, 32) in [0, 1] and int64 labels. The pickles are read with an unpickler that only builds plain data
    and numpy arrays, never arbitrary objects."""
    root = Path(root)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    missing = [n for n in names if not (root / n).is_file()]
    if missing:
        raise FileNotFoundError(f"CIFAR-10 batches {missing} not found in {root}: pass the extracted "
                                f"cifar-10-batches-py folder of the official python archive")
    parts = [_load_cifar_batch(root / n) for n in names]
    x_train = np.concatenate([p[0] for p in parts[:5]]).astype(np.float32) / 255.0
    y_train = np.concatenate([p[1] for p in parts[:5]])
    return x_train, y_train, parts[5][0].astype(np.float32) / 255.0, parts[5][1]
