"""The IDX file format (MNIST, Fashion-MNIST): a header of magic bytes and big-endian dimensions, then the data.

Files may be gzip-compressed. Everything is checked against the header before use: magic, type code, number of
dimensions, and that the data is exactly as long as the dimensions say (read no further than that + 1 byte).
"""
from __future__ import annotations

import gzip
import math
import os
import struct
import zlib

import numpy as np

_TYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"), 0x0D: np.dtype(">f4"),
          0x0E: np.dtype(">f8")}
MAX_BYTES = 1 << 34  # refuse headers that promise more than 16 GiB


def read_idx(path) -> np.ndarray:
    """Read an IDX file (raw or .gz) into a numpy array of the dimensions its header gives."""
    path = os.fsdecode(path)  # a str, bytes or path-like path, as a str
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            header = f.read(4)
            if len(header) < 4:
                raise ValueError(f"{path}: not an IDX file (shorter than the 4-byte magic number)")
            zero1, zero2, code, ndim = header
            if zero1 or zero2 or code not in _TYPES or not 1 <= ndim <= 8:
                raise ValueError(f"{path}: not an IDX file (magic bytes {header.hex()}: expected 00 00, a type code "
                                 f"in {sorted(_TYPES)}, and 1-8 dimensions)")
            raw_dims = f.read(4 * ndim)
            if len(raw_dims) < 4 * ndim:
                raise ValueError(f"{path}: truncated IDX header ({ndim} dimensions announced)")
            dims = struct.unpack(f">{ndim}I", raw_dims)
            dtype = np.dtype(_TYPES[code])
            expected = math.prod(dims) * dtype.itemsize  # Python ints: no overflow
            if expected > MAX_BYTES:
                raise ValueError(f"{path}: IDX header announces {dims} = {expected} bytes, more than the limit")
            data = f.read(expected + 1)
    except (OSError, EOFError, gzip.BadGzipFile, zlib.error) as e:  # zlib.error: a corrupt deflate stream
        if isinstance(e, FileNotFoundError):
            raise
        raise ValueError(f"{path}: cannot read IDX data ({e})") from e
    if len(data) < expected:
        raise ValueError(f"{path}: IDX data is shorter than its header {dims} says ({expected} bytes expected, "
                         f"got {len(data)})")
    if len(data) > expected:
        raise ValueError(f"{path}: IDX data is longer than its header {dims} says ({expected} bytes expected)")
    return np.frombuffer(data, dtype).astype(dtype.newbyteorder("="), copy=False).reshape(dims)
