"""ReLU, softmax and cross-entropy (mean negative log-likelihood of softmax), with gradients."""
from __future__ import annotations

import numpy as np

from .. import _core
from .._validate import as_real, as_tensor


def relu(x: np.ndarray) -> np.ndarray:
    """max(x, 0) element-wise; NaN propagates."""
    return _core.relu(as_tensor(x, "x"))


def relu_backward(dy: np.ndarray, x: np.ndarray) -> np.ndarray:
    """dy where x > 0, else 0."""
    x = as_tensor(x, "x")
    dy = as_tensor(dy, "dy", dtype=x.dtype)
    if dy.shape != x.shape:
        raise ValueError(f"dy shape {dy.shape} must equal x shape {x.shape}")
    return _core.relu_backward(dy, x)


def softmax(x: np.ndarray) -> np.ndarray:
    """Softmax over the last axis of a 1-D or 2-D array."""
    x = as_tensor(x, "x", ndim=(1, 2))
    if x.shape[-1] == 0:  # rows of no classes: nothing to normalise (PyTorch returns the empty array too)
        return np.empty_like(x)
    return _core.softmax(x.reshape(-1, x.shape[-1]) if x.ndim == 2 else x[None, :]).reshape(x.shape)


def _labels(labels, logits: np.ndarray) -> np.ndarray:
    if labels is None or not isinstance(labels, np.ndarray):
        raise TypeError(f"labels must be a numpy integer array, got {type(labels).__name__}")
    if not np.issubdtype(labels.dtype, np.integer):
        raise TypeError(f"labels must have an integer dtype (class indices), got {labels.dtype}")
    if labels.shape != (logits.shape[0],):
        raise ValueError(f"labels must have shape ({logits.shape[0]},) to match logits {logits.shape}, "
                         f"got {labels.shape}")
    if labels.dtype == np.uint64:  # checked here: past 2**63 the cast to int64 would wrap them to negatives
        outside = np.flatnonzero(labels >= logits.shape[1])
        if outside.size:
            raise ValueError(f"labels must be in [0, {logits.shape[1]}) (number of classes), "
                             f"found {labels[outside[0]]}")
    return np.ascontiguousarray(labels, dtype=np.int64)  # the kernels refuse labels outside [0, classes)


def _cross_entropy(logits, labels):
    """(mean loss, softmax probabilities, labels as validated int64) for cross_entropy and CrossEntropyLoss."""
    logits = as_tensor(logits, "logits", ndim=2)
    labels = _labels(labels, logits)
    loss, probs = _core.cross_entropy(logits, labels)
    return float(loss), probs, labels


def _cross_entropy_gradient(probs, labels, grad_output):
    return _core.cross_entropy_backward(probs, labels, as_real(grad_output, "grad_output") / max(probs.shape[0], 1))


def cross_entropy(logits: np.ndarray, labels: np.ndarray) -> float:
    """Mean over the batch of -log softmax(logits)[n, labels[n]]; logits (N, C), labels (N,) ints."""
    return _cross_entropy(logits, labels)[0]


def cross_entropy_backward(logits: np.ndarray, labels: np.ndarray, grad_output: float = 1.0) -> np.ndarray:
    """d(cross_entropy)/d(logits) = (softmax(logits) - onehot(labels)) * grad_output / N."""
    _, probs, labels = _cross_entropy(logits, labels)
    return _cross_entropy_gradient(probs, labels, grad_output)
