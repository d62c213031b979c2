"""convcore.models: the classic CNNs. Every builder takes num_classes, in_channels and seed (int or Generator)."""
from .classic import alexnet, lenet5, vgg16, zfnet
from .googlenet import googlenet
from .resnet import resnet18, resnet20, resnet34

__all__ = ["lenet5", "alexnet", "zfnet", "vgg16", "resnet18", "resnet34", "resnet20", "googlenet"]
