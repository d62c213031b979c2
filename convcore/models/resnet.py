"""ResNets: resnet18 / resnet34 (ImageNet, torchvision's layout and names) and resnet20 (CIFAR, He et al. 2016)."""
from __future__ import annotations

from .. import nn
from ..nn.init import as_generator
from .classic import _check


def _stage(in_channels, out_channels, blocks, stride, shortcut, rng):
    layers = [nn.BasicBlock(in_channels, out_channels, stride, shortcut, rng=rng)]
    layers += [nn.BasicBlock(out_channels, out_channels, 1, shortcut, rng=rng) for _ in range(blocks - 1)]
    return nn.Sequential(*layers)


def _imagenet_resnet(blocks, num_classes, in_channels, seed):
    num_classes, in_channels = _check(num_classes, in_channels)
    rng = as_generator(seed, "seed")
    return nn.Chain(
        conv1=nn.Conv2d(in_channels, 64, 7, 2, 3, bias=False, rng=rng), bn1=nn.BatchNorm2d(64), relu=nn.ReLU(),
        maxpool=nn.MaxPool2d(3, 2, 1),
        layer1=_stage(64, 64, blocks[0], 1, "B", rng), layer2=_stage(64, 128, blocks[1], 2, "B", rng),
        layer3=_stage(128, 256, blocks[2], 2, "B", rng), layer4=_stage(256, 512, blocks[3], 2, "B", rng),
        avgpool=nn.AdaptiveAvgPool2d(1), flatten=nn.Flatten(), fc=nn.Linear(512, num_classes, rng=rng))


def resnet18(num_classes=1000, in_channels=3, seed=None) -> nn.Chain:
    """ResNet-18 as torchvision (11,689,512 parameters for 1000 classes)."""
    return _imagenet_resnet((2, 2, 2, 2), num_classes, in_channels, seed)


def resnet34(num_classes=1000, in_channels=3, seed=None) -> nn.Chain:
    """ResNet-34 as torchvision (21,797,672 parameters for 1000 classes)."""
    return _imagenet_resnet((3, 4, 6, 3), num_classes, in_channels, seed)


def resnet20(num_classes=10, in_channels=3, shortcut="A", seed=None) -> nn.Chain:
    """CIFAR ResNet-20 (He et al. 2016, section 4.2): 3x3 conv 16, three stages of 3 basic blocks (16, 32, 64
    channels), global average pooling, fc. shortcut="A" (the paper's CIFAR choice, parameter-free zero-padded
    identity; 269,722 parameters) or "B" (1x1 projections + BatchNorm; 272,474)."""
    num_classes, in_channels = _check(num_classes, in_channels)
    rng = as_generator(seed, "seed")
    return nn.Chain(
        conv1=nn.Conv2d(in_channels, 16, 3, 1, 1, bias=False, rng=rng), bn1=nn.BatchNorm2d(16), relu=nn.ReLU(),
        layer1=_stage(16, 16, 3, 1, shortcut, rng), layer2=_stage(16, 32, 3, 2, shortcut, rng),
        layer3=_stage(32, 64, 3, 2, shortcut, rng),
        avgpool=nn.AdaptiveAvgPool2d(1), flatten=nn.Flatten(), fc=nn.Linear(64, num_classes, rng=rng))
