"""Parameter initialisation as PyTorch's defaults, drawn from an explicit numpy Generator (no global state)."""
from __future__ import annotations

import math

import numpy as np


def as_generator(rng, name: str = "rng") -> np.random.Generator:
    """A numpy Generator from a Generator (used as is), an int seed, or None (fresh entropy)."""
    if isinstance(rng, np.random.Generator):
        return rng
    if rng is None or (isinstance(rng, (int, np.integer)) and not isinstance(rng, bool)):
        if rng is not None and rng < 0:
            raise ValueError(f"{name} must be a non-negative int seed (or a Generator or None), got {rng}")
        return np.random.default_rng(rng)
    raise TypeError(f"{name} must be a numpy Generator, an int seed or None, got {type(rng).__name__}")


def uniform(rng: np.random.Generator, bound: float, shape) -> np.ndarray:
    """U(-bound, bound) float32 samples of `shape`, drawn directly in float32 (large layers initialise quickly)."""
    u = rng.random(shape, dtype=np.float32)
    u *= np.float32(2 * bound)
    u -= np.float32(bound)
    return u


def kaiming_uniform(rng: np.random.Generator, shape, fan_in: int, a: float = math.sqrt(5)) -> np.ndarray:
    """He-uniform weights: U(-b, b) with b = sqrt(2 / (1 + a^2)) * sqrt(3 / fan_in); PyTorch's Conv and Linear
    default a = sqrt(5) gives b = 1 / sqrt(fan_in)."""
    return uniform(rng, math.sqrt(2.0 / (1.0 + a * a)) * math.sqrt(3.0 / fan_in), shape)


def fan_in_bias(rng: np.random.Generator, fan_in: int, n: int) -> np.ndarray:
    """PyTorch's default bias for Conv and Linear: U(-1/sqrt(fan_in), 1/sqrt(fan_in)), n values."""
    return uniform(rng, 1.0 / math.sqrt(fan_in), (n,))
