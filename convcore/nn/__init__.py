"""convcore.nn: PyTorch-shaped layers with explicit backward, blocks and losses."""
from .blocks import BasicBlock, Inception
from .layers import (
    AdaptiveAvgPool2d,
    AvgPool2d,
    BatchNorm1d,
    BatchNorm2d,
    Conv1d,
    Conv2d,
    Dropout,
    Flatten,
    GlobalAvgPool2d,
    LeakyReLU,
    Linear,
    MaxPool1d,
    MaxPool2d,
    ReLU,
    Sigmoid,
    Tanh,
)
from .loss import CrossEntropyLoss, MSELoss
from .module import Module, Parameter, Sequential

__all__ = [
    "Module", "Parameter", "Sequential",
    "Conv1d", "Conv2d", "Linear", "MaxPool1d", "MaxPool2d", "AvgPool2d", "AdaptiveAvgPool2d", "GlobalAvgPool2d",
    "ReLU", "LeakyReLU", "Sigmoid", "Tanh", "Flatten", "Dropout", "BatchNorm1d", "BatchNorm2d",
    "BasicBlock", "Inception", "CrossEntropyLoss", "MSELoss",
]
