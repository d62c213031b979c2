"""Mini-batches: shuffling, normalisation and augmentation (random crop with padding, horizontal flip).

Every random choice is a pure function of (seed, epoch, batch index), so an epoch's order and augmentations are
reproducible and a run can resume at any batch exactly.
"""
from __future__ import annotations

import numpy as np

from .._validate import MAX_ELEMENTS, as_bool, as_int


class Batches:
    """Iterate over (x, y) in mini-batches; `epoch(e)` yields the batches of epoch e, optionally from batch `start`.

    normalize=(mean, std), each one number or one per channel (x.shape[1]), finite, std > 0, is applied after
    augmentation; crop_padding=p pads each image by p zeros and crops back to its size at a random offset; flip=True
    mirrors half of the images horizontally. shuffle, flip and drop_last must be bools. The batches' images are
    `dtype`: float32, or float64 for a model.to(np.float64)."""

    def __init__(self, x, y, batch_size, shuffle=True, seed=0, normalize=None, crop_padding=0, flip=False,
                 drop_last=False, dtype=np.float32):
        if not isinstance(x, np.ndarray) or not isinstance(y, np.ndarray):
            raise TypeError(f"x and y must be numpy arrays, got {type(x).__name__} and {type(y).__name__}")
        if x.ndim < 2 or y.shape != (x.shape[0],):
            raise ValueError(f"x must be (N, ...) and y (N,), got x {x.shape} and y {y.shape}")
        if x.dtype.kind not in "biuf":  # complex lost its imaginary part, strings were parsed, objects converted
            raise TypeError(f"x must hold real numbers (bool, integer or float), got dtype {x.dtype}")
        self.x, self.y = x, y
        try:
            self.dtype = None if dtype is None else np.dtype(dtype)  # np.dtype(None) is float64
        except TypeError:
            self.dtype = None
        if self.dtype not in (np.float32, np.float64):
            raise TypeError(f"dtype must be np.float32 or np.float64, got {dtype!r}")
        self.batch_size = as_int(batch_size, "batch_size", minimum=1)
        self.shuffle, self.seed = as_bool(shuffle, "shuffle"), as_int(seed, "seed", minimum=0)
        self.drop_last = as_bool(drop_last, "drop_last")
        self.crop_padding, self.flip = as_int(crop_padding, "crop_padding", minimum=0), as_bool(flip, "flip")
        if (self.crop_padding or self.flip) and x.ndim != 4:
            raise ValueError(f"crop and flip augmentation need (N, C, H, W) images, got x {x.shape}")
        if self.crop_padding and (min(len(x), self.batch_size) * x.shape[1] * (x.shape[2] + 2 * self.crop_padding)
                                  * (x.shape[3] + 2 * self.crop_padding)) > MAX_ELEMENTS:
            raise ValueError(f"crop_padding {crop_padding} pads a batch of {x.shape[1:]} images past convcore's "
                             f"{MAX_ELEMENTS:,}-element limit")
        self.mean = self.std = None
        if normalize is not None:
            if not isinstance(normalize, (tuple, list)) or len(normalize) != 2:
                raise TypeError(f"normalize must be a pair (mean, std), got {normalize!r}")
            try:
                # in the batches' dtype: float64 batches were normalised in float32 (3e-7 off CIFAR's)
                mean, std = (np.asarray(v, self.dtype) for v in normalize)
            except (TypeError, ValueError):
                raise TypeError(f"normalize must be a pair (mean, std) of numbers or sequences of numbers, got "
                                f"{normalize!r}") from None
            channels = x.shape[1]
            if any(v.ndim > 1 or v.size not in (1, channels) for v in (mean, std)):
                raise ValueError(f"normalize mean and std must each be one number or {channels} (one per channel of "
                                 f"x {x.shape}), got {normalize!r}")
            if not np.all(np.isfinite(mean)) or not np.all(np.isfinite(std)) or np.any(std <= 0):
                raise ValueError(f"normalize mean and std must be finite and std > 0, got {normalize!r}")
            self.mean, self.std = (v.reshape(1, -1, *([1] * (x.ndim - 2))) for v in (mean, std))

    def __len__(self):
        n = len(self.x)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def order(self, epoch: int) -> np.ndarray:
        """The sample order of an epoch (an int >= 0)."""
        epoch = as_int(epoch, "epoch", minimum=0)
        if not self.shuffle:
            return np.arange(len(self.x))
        return np.random.default_rng([self.seed, epoch]).permutation(len(self.x))

    def epoch(self, epoch: int, start: int = 0):
        """The (x, y) batches of an epoch from batch index `start` (0 <= start <= len(self); len(self) yields none).
        The arguments are checked when this is called, not when iteration begins."""
        order = self.order(epoch)
        start = as_int(start, "start", minimum=0)
        if start > len(self):
            raise ValueError(f"start must be a batch index <= len(self) = {len(self)}, got {start}")
        return self._batches(epoch, order, start)

    def _batches(self, epoch, order, start):
        for b in range(start, len(self)):
            idx = order[b * self.batch_size:(b + 1) * self.batch_size]
            xb = self.x[idx]
            if self.crop_padding or self.flip:
                xb = self._augment(xb, np.random.default_rng([self.seed, epoch, b, 1]))
            if self.mean is not None:
                xb = (xb - self.mean) / self.std
            yield np.ascontiguousarray(xb, dtype=self.dtype), self.y[idx]

    def __iter__(self):
        return self.epoch(0)

    def _augment(self, xb, rng):
        n, c, h, w = xb.shape
        if self.crop_padding:
            p = self.crop_padding
            padded = np.pad(xb, ((0, 0), (0, 0), (p, p), (p, p)))
            dy = rng.integers(0, 2 * p + 1, n)
            dx = rng.integers(0, 2 * p + 1, n)
            rows = (dy[:, None] + np.arange(h)[None, :])[:, None, :, None]
            cols = (dx[:, None] + np.arange(w)[None, :])[:, None, None, :]
            xb = padded[np.arange(n)[:, None, None, None], np.arange(c)[None, :, None, None], rows, cols]
        if self.flip:
            mirror = rng.random(n) < 0.5
            xb = xb.copy() if not self.crop_padding else xb
            xb[mirror] = xb[mirror][..., ::-1]
        return xb
