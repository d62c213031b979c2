"""convcore.functional: numpy in, numpy out, PyTorch semantics.

float32 arrays run the fast kernels; float64 arrays run the float64 reference kernels.
"""
from .activation import cross_entropy, cross_entropy_backward, relu, relu_backward, softmax
from .conv import conv1d, conv1d_backward, conv2d, conv2d_backward
from .gemm import linear, linear_backward, matmul
from .pool import (
    avg_pool1d,
    avg_pool1d_backward,
    avg_pool2d,
    avg_pool2d_backward,
    max_pool1d,
    max_pool1d_backward,
    max_pool2d,
    max_pool2d_backward,
)

__all__ = [
    "matmul", "linear", "linear_backward",
    "relu", "relu_backward", "softmax", "cross_entropy", "cross_entropy_backward",
    "conv1d", "conv1d_backward", "conv2d", "conv2d_backward",
    "max_pool1d", "max_pool1d_backward", "max_pool2d", "max_pool2d_backward",
    "avg_pool1d", "avg_pool1d_backward", "avg_pool2d", "avg_pool2d_backward",
]
