"""GoogLeNet (Inception v1, Szegedy et al. 2014) without the auxiliary classifiers or local response normalisation.

Layout of the paper's table 1 on a 224x224 input, every convolution followed by ReLU (with a bias), 5x5 convolutions
in the 5x5 branches, max-pooling with ceil_mode. Parameters for 1000 classes: 6,998,552 (6,990,272 weights +
8,280 biases), exactly what the table's filter columns give. The table's own "params" column sums to about 6.8M
but does not follow from its filter columns (conv1, 7x7x3x64, is 9,408 weights, listed as 2.7K; inception 4c is
509K, listed as 463K), so the filter columns are taken as the definition. torchvision's googlenet has 6,624,904:
it uses 3x3 instead of 5x5 convolutions in that branch and BatchNorm (2 per channel) instead of conv biases;
both changes applied to this count give exactly that figure.
"""
from __future__ import annotations

from .. import nn
from ..nn.init import as_generator
from .classic import _check


def googlenet(num_classes=1000, in_channels=3, seed=None) -> nn.Chain:
    num_classes, in_channels = _check(num_classes, in_channels)
    rng = as_generator(seed, "seed")

    def conv(cin, cout, k, stride=1, padding=0):
        return nn.Sequential(nn.Conv2d(cin, cout, k, stride, padding, rng=rng), nn.ReLU())

    def inception(*channels):
        return nn.Inception(*channels, rng=rng)

    return nn.Chain(
        conv1=conv(in_channels, 64, 7, 2, 3), maxpool1=nn.MaxPool2d(3, 2, ceil_mode=True),
        conv2=conv(64, 64, 1), conv3=conv(64, 192, 3, padding=1), maxpool2=nn.MaxPool2d(3, 2, ceil_mode=True),
        inception3a=inception(192, 64, 96, 128, 16, 32, 32), inception3b=inception(256, 128, 128, 192, 32, 96, 64),
        maxpool3=nn.MaxPool2d(3, 2, ceil_mode=True),
        inception4a=inception(480, 192, 96, 208, 16, 48, 64), inception4b=inception(512, 160, 112, 224, 24, 64, 64),
        inception4c=inception(512, 128, 128, 256, 24, 64, 64), inception4d=inception(512, 112, 144, 288, 32, 64, 64),
        inception4e=inception(528, 256, 160, 320, 32, 128, 128),
        maxpool4=nn.MaxPool2d(2, 2, ceil_mode=True),
        inception5a=inception(832, 256, 160, 320, 32, 128, 128), inception5b=inception(832, 384, 192, 384, 48, 128, 128),
        avgpool=nn.AdaptiveAvgPool2d(1), flatten=nn.Flatten(), dropout=nn.Dropout(0.4, rng=rng),
        fc=nn.Linear(1024, num_classes, rng=rng))
