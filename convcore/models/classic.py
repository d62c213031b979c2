"""The classic CNN case studies: LeNet-5, AlexNet, ZFNet, VGG-16."""
from __future__ import annotations

from .. import nn
from .._validate import as_bool, as_int, as_size
from ..nn.init import as_generator


def _check(num_classes, in_channels):
    return as_size(num_classes, "num_classes"), as_size(in_channels, "in_channels")


def lenet5(num_classes=10, in_channels=1, seed=None) -> nn.Sequential:
    """LeNet-5 for 28x28 inputs (MNIST, Fashion-MNIST): conv 6@5x5 pad 2, ReLU, max-pool 2, conv 16@5x5, ReLU,
    max-pool 2, fc 400-120-84-num_classes with ReLU. The 1998 original used tanh-like squashing, trainable average
    pooling and a 32x32 input; ReLU and max pooling are the modern reading (as taught today) and train faster;
    padding 2 keeps the 28x28 input equivalent to the original's 32x32 geometry."""
    num_classes, in_channels = _check(num_classes, in_channels)
    rng = as_generator(seed, "seed")
    return nn.Sequential(
        nn.Conv2d(in_channels, 6, 5, padding=2, rng=rng), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(6, 16, 5, rng=rng), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(16 * 5 * 5, 120, rng=rng), nn.ReLU(),
        nn.Linear(120, 84, rng=rng), nn.ReLU(),
        nn.Linear(84, num_classes, rng=rng),
    )


def _fc_head(in_features, num_classes, rng, dropout=0.5):
    return nn.Sequential(
        nn.Dropout(dropout, rng=rng), nn.Linear(in_features, 4096, rng=rng), nn.ReLU(),
        nn.Dropout(dropout, rng=rng), nn.Linear(4096, 4096, rng=rng), nn.ReLU(),
        nn.Linear(4096, num_classes, rng=rng),
    )


def alexnet(num_classes=1000, in_channels=3, groups=1, seed=None) -> nn.Chain:
    """AlexNet (Krizhevsky et al. 2012) as one stream on a 227x227 input with the paper's filter counts
    (96, 256, 384, 384, 256; local response normalisation omitted). groups=2 reproduces the paper's two-GPU split
    of conv2, conv4 and conv5. Parameters: 62,378,344 (groups=1), 60,965,224 (groups=2)."""
    num_classes, in_channels = _check(num_classes, in_channels)
    if as_int(groups, "groups") not in (1, 2):
        raise ValueError(f"groups must be 1 (single stream) or 2 (the paper's split), got {groups!r}")
    rng = as_generator(seed, "seed")
    features = nn.Sequential(
        nn.Conv2d(in_channels, 96, 11, stride=4, rng=rng), nn.ReLU(), nn.MaxPool2d(3, 2),        # 55 -> 27
        nn.Conv2d(96, 256, 5, padding=2, groups=groups, rng=rng), nn.ReLU(), nn.MaxPool2d(3, 2),  # 27 -> 13
        nn.Conv2d(256, 384, 3, padding=1, rng=rng), nn.ReLU(),
        nn.Conv2d(384, 384, 3, padding=1, groups=groups, rng=rng), nn.ReLU(),
        nn.Conv2d(384, 256, 3, padding=1, groups=groups, rng=rng), nn.ReLU(), nn.MaxPool2d(3, 2),  # 13 -> 6
    )
    return nn.Chain(features=features, flatten=nn.Flatten(), classifier=_fc_head(256 * 6 * 6, num_classes, rng))


def zfnet(num_classes=1000, in_channels=3, seed=None) -> nn.Chain:
    """ZFNet (Zeiler & Fergus 2013) on a 224x224 input: conv1 96@7x7 stride 2 (pad 1) -> 110, pool 3/2 (pad 1)
    -> 55, conv2 256@5x5 stride 2 -> 26, pool -> 13, conv3-5 384/384/256 @3x3, pool -> 6, fc 4096-4096.
    Parameters: 62,357,608 for 1000 classes."""
    num_classes, in_channels = _check(num_classes, in_channels)
    rng = as_generator(seed, "seed")
    features = nn.Sequential(
        nn.Conv2d(in_channels, 96, 7, stride=2, padding=1, rng=rng), nn.ReLU(), nn.MaxPool2d(3, 2, padding=1),
        nn.Conv2d(96, 256, 5, stride=2, rng=rng), nn.ReLU(), nn.MaxPool2d(3, 2, padding=1),
        nn.Conv2d(256, 384, 3, padding=1, rng=rng), nn.ReLU(),
        nn.Conv2d(384, 384, 3, padding=1, rng=rng), nn.ReLU(),
        nn.Conv2d(384, 256, 3, padding=1, rng=rng), nn.ReLU(), nn.MaxPool2d(3, 2),
    )
    return nn.Chain(features=features, flatten=nn.Flatten(), classifier=_fc_head(256 * 6 * 6, num_classes, rng))


def vgg16(num_classes=1000, in_channels=3, batch_norm=False, seed=None) -> nn.Chain:
    """VGG-16 (configuration D) with torchvision's layout (features, avgpool to 7x7, classifier); 138,357,544
    parameters, 138,365,992 with batch_norm=True (a BatchNorm2d after every conv, as torchvision's vgg16_bn)."""
    num_classes, in_channels = _check(num_classes, in_channels)
    batch_norm = as_bool(batch_norm, "batch_norm")  # (batch_norm="no" built the batch-norm variant)
    rng = as_generator(seed, "seed")
    layers, c = [], in_channels
    for v in (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"):
        if v == "M":
            layers.append(nn.MaxPool2d(2, 2))
            continue
        layers.append(nn.Conv2d(c, v, 3, padding=1, rng=rng))
        if batch_norm:
            layers.append(nn.BatchNorm2d(v))
        layers.append(nn.ReLU())
        c = v
    classifier = nn.Sequential(
        nn.Linear(512 * 7 * 7, 4096, rng=rng), nn.ReLU(), nn.Dropout(0.5, rng=rng),
        nn.Linear(4096, 4096, rng=rng), nn.ReLU(), nn.Dropout(0.5, rng=rng),
        nn.Linear(4096, num_classes, rng=rng),
    )
    return nn.Chain(features=nn.Sequential(*layers), avgpool=nn.AdaptiveAvgPool2d(7), flatten=nn.Flatten(),
                 classifier=classifier)
