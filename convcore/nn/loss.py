"""Losses: callable with (output, target) -> float (the batch mean); .backward() -> d(loss)/d(output)."""
from __future__ import annotations

import numpy as np

from .._validate import as_real, as_tensor
from ..functional import activation as activation_ops


class CrossEntropyLoss:
    """Mean negative log-likelihood of softmax(logits) (computed stably from log-softmax); labels are class
    indices."""

    def __init__(self):
        self._saved = None

    def __call__(self, logits, labels) -> float:
        value, probs, labels = activation_ops._cross_entropy(logits, labels)
        self._saved = (probs, labels)  # the backward needs only these (the functional one recomputes them)
        return value

    def backward(self, grad_output: float = 1.0) -> np.ndarray:
        if self._saved is None:
            raise RuntimeError("CrossEntropyLoss.backward needs a call loss(logits, labels) first")
        return activation_ops._cross_entropy_gradient(*self._saved, grad_output)


class MSELoss:
    """Mean of (output - target)^2 over all elements."""

    def __init__(self):
        self._saved = None

    def __call__(self, output, target) -> float:
        output = as_tensor(output, "output")
        target = as_tensor(target, "target", dtype=output.dtype)
        if output.shape != target.shape:
            raise ValueError(f"target must have the output's shape {output.shape}, got {target.shape}")
        diff = output - target
        self._saved = diff
        return float(np.mean(diff.astype(np.float64) ** 2)) if diff.size else 0.0

    def backward(self, grad_output: float = 1.0) -> np.ndarray:
        if self._saved is None:
            raise RuntimeError("MSELoss.backward needs a call loss(output, target) first")
        diff = self._saved
        return diff * diff.dtype.type(2.0 * as_real(grad_output, "grad_output") / max(diff.size, 1))
