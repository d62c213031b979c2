"""Fashion-MNIST from the four IDX files on this machine (nothing is downloaded): root, $CONVCORE_DATA, then the
Debian package dataset-fashion-mnist."""
from __future__ import annotations

import os
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
    """The folders searched, in order: root alone where given (a root lacking the files is an error, not a reason to
    train on other data); else $CONVCORE_DATA (and its fashion-mnist/), then Debian's package folder."""
    if root is not None:
        return [Path(root)]
    dirs = []
    env = os.environ.get("CONVCORE_DATA")
    if env:
        dirs += [Path(env), Path(env) / "fashion-mnist"]
    dirs.append(DEBIAN_FASHION_MNIST)
    return dirs


def load_fashion_mnist(root=None):
    """Fashion-MNIST as (x_train, y_train, x_test, y_test): images float32 (N, 1, 28, 28) scaled to [0, 1],
    labels int64 in [0, 10).

    Reads the four IDX files (gzipped or not) from `root` where given; else looks in $CONVCORE_DATA, then
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
    x_train, y_train, x_test, y_test = arrays = [read_idx(p) for p in paths]
    for path, a in zip(paths, arrays):  # pixels and labels are bytes (IDX type 0x08): others would be misread
        if a.dtype != np.uint8:
            raise ValueError(f"{path}: Fashion-MNIST files hold unsigned bytes (IDX type 0x08), this one {a.dtype}")
    for name, x, y in (("train", x_train, y_train), ("test", x_test, y_test)):
        if x.ndim != 3 or x.shape[1:] != (28, 28) or y.shape != (x.shape[0],):
            raise ValueError(f"Fashion-MNIST {name} files have shapes {x.shape} and {y.shape}, expected (N, 28, 28) "
                             f"images and (N,) labels")
        if y.size and y.max() > 9:
            raise ValueError(f"Fashion-MNIST {name} labels must be in [0, 10), found {int(y.max())}")

    def images(x):  # one float32 array, divided as it is cast (not a cast copy, then a divided one)
        return np.divide(x, 255, dtype=np.float32).reshape(-1, 1, 28, 28)
    return images(x_train), y_train.astype(np.int64), images(x_test), y_test.astype(np.int64)
