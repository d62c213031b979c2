"""convcore.nn: PyTorch-shaped layers with explicit backward, containers, blocks, losses and initialisation."""
from . import init
from .activation import LeakyReLU, ReLU, Sigmoid, Tanh
from .blocks import BasicBlock, Inception
from .container import Chain, Sequential
from .conv import Conv1d, Conv2d
from .dropout import Dropout
from .frozen import Frozen, freeze
from .linear import Flatten, Linear
from .loss import CrossEntropyLoss, MSELoss
from .module import Module, Parameter
from .norm import BatchNorm1d, BatchNorm2d
from .pool import AdaptiveAvgPool2d, AvgPool2d, GlobalAvgPool2d, MaxPool1d, MaxPool2d

__all__ = [
    "Module", "Parameter", "Sequential", "Chain", "init",
    "Conv1d", "Conv2d", "Linear", "MaxPool1d", "MaxPool2d", "AvgPool2d", "AdaptiveAvgPool2d", "GlobalAvgPool2d",
    "ReLU", "LeakyReLU", "Sigmoid", "Tanh", "Flatten", "Dropout", "BatchNorm1d", "BatchNorm2d",
    "BasicBlock", "Inception", "CrossEntropyLoss", "MSELoss", "freeze", "Frozen",
]
