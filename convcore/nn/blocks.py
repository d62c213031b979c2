"""Composite blocks: the residual BasicBlock (ResNet) and the Inception block (GoogLeNet).

Both route gradients through their branches explicitly and sum them where the branches meet.
"""
from __future__ import annotations

import numpy as np

from .. import _core
from .. import functional as F
from .._validate import as_int, as_size, as_tensor
from .activation import ReLU
from .container import Sequential, _add_steps, _all_native, _first_output
from .conv import Conv2d
from .module import Module, no_input_gradient
from .norm import BatchNorm2d
from .pool import MaxPool2d


class BasicBlock(Module):
    """ResNet basic block: relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x)), 3x3 convs without bias.

    When the shape changes (stride != 1 or in_channels != out_channels) the shortcut is, with shortcut="B",
    a 1x1 strided conv + BatchNorm (`downsample`, as torchvision), or with shortcut="A", the parameter-free
    option of the CIFAR ResNet paper: subsample by the stride and zero-pad the new channels.
    """
    _option_checks = {"stride": lambda layer, v: as_int(v, "stride", minimum=1)}

    def __init__(self, in_channels, out_channels, stride=1, shortcut="B", rng=None):
        super().__init__()
        in_channels = as_size(in_channels, "in_channels")
        out_channels = as_size(out_channels, "out_channels")
        self.stride = stride
        if not isinstance(shortcut, str) or shortcut not in ("A", "B"):  # (an array: an unclear truth-value error)
            raise ValueError(f"shortcut must be 'A' (zero-padded identity) or 'B' (1x1 projection), got {shortcut!r}")
        self.conv1 = Conv2d(in_channels, out_channels, 3, stride, 1, bias=False, rng=rng)
        self.bn1 = BatchNorm2d(out_channels)
        self.relu = ReLU()
        self.conv2 = Conv2d(out_channels, out_channels, 3, 1, 1, bias=False, rng=rng)
        self.bn2 = BatchNorm2d(out_channels)
        self.reshapes = self.stride != 1 or in_channels != out_channels
        self.shortcut = shortcut
        if self.reshapes and shortcut == "B":
            self.downsample = Sequential(Conv2d(in_channels, out_channels, 1, self.stride, bias=False, rng=rng),
                                         BatchNorm2d(out_channels))
        if self.reshapes and shortcut == "A" and out_channels < in_channels:
            raise ValueError(f"shortcut 'A' pads channels: out_channels ({out_channels}) must be >= in_channels "
                             f"({in_channels})")
        self.pad = out_channels - in_channels
        self._y = None

    def _skip(self, x):
        if not self.reshapes:
            return x
        if self.shortcut == "B":
            return self.downsample.forward(x)
        # option A: x subsampled by the stride into channels [pad // 2, pad // 2 + in_channels), zeros elsewhere, in one
        # parallel pass, as is its backward (in numpy, zeros and strided copies on one thread: 2.3% of a ResNet-20
        # training step on 2 threads; both builds in one process, steps alternated, median of per-pair time ratios,
        # AMD Zen 4: batch 128 1.02x, batch 32 1.015x on 2 threads, 1.00x on 1)
        return _core.shortcut_forward(x, self.stride, self.pad // 2, x.shape[1] + self.pad)

    def forward(self, x):
        out = self.relu.adopt_output(self.bn1.forward(self.conv1.forward(x), activation="relu"))
        # bn2 adds the skip and applies the final ReLU in its one pass, and masks its backward's dy with it
        y = self.bn2.forward(self.conv2.forward(out), activation="relu", residual=self._skip(x))
        self._y = y if self._keeps() else None
        return y

    def _inference_step(self, x, relu=False):
        """The eval forward as a plan step built from the children's steps; where they all have native ops, so does
        the block (bn2 adds the shortcut's value in its pass). None where the projection shortcut runs unplanned."""
        conv1 = self.conv1._inference_step(x)
        h = conv1(x)
        bn1 = self.bn1._inference_step(h, relu=True)
        h = bn1(h)
        conv2 = self.conv2._inference_step(h)
        y = conv2(h)
        bn2 = self.bn2._inference_step(y, relu=True)
        skips = []  # the shortcut's step, if any
        if self.reshapes and self.shortcut == "B":
            skips.append(self.downsample._inference_step(x))
            if skips[0] is None:
                return None
        elif self.reshapes:
            skips.append(lambda x: self._skip(x))
            skips[0].native = ("subsample_pad", self.stride, self.pad // 2)
        skip = _first_output(skips[0], x) if skips else x  # the shortcut's value for x
        main, shapes = (conv1, bn1, conv2), (h.shape, h.shape, y.shape)

        def run(x):
            return bn2(conv2(bn1(conv1(x))), skips[0](x) if skips else x)

        def add_native(native, value):
            residual = _add_steps(native, value, skips, (y.shape,))  # the input itself where there is no skip step
            _, *args = bn2.native
            return native.add_batch_norm(_add_steps(native, value, main, shapes), *args, list(y.shape),
                                         residual=residual)
        if _all_native((*main, bn2, *skips)):
            run.native = ("steps", add_native)
        run.built = bn2(y, skip)  # x's output, taken by the plan being built
        return run

    def backward(self, dy, input_grad=True):
        y = self._saved(self._y, "output")
        dy = as_tensor(dy, "dy", dtype=y.dtype)
        if dy.shape != y.shape:
            raise ValueError(f"dy must have the output's shape {y.shape}, got {dy.shape}")
        # bn2 and bn1 apply their ReLUs' masks inside their backward passes
        dmain = self.conv1.backward(self.bn1.backward(self.conv2.backward(self.bn2.backward(dy))),
                                    input_grad=input_grad)
        if input_grad and dmain is None:
            raise ValueError(no_input_gradient(self.conv1))
        # the skip's gradient is dy through the final ReLU, added into dmain (conv1's fresh input gradient) in the same
        # pass: for the identity at every element, for option A at the subsampled ones of its channels
        if not self.reshapes:
            if input_grad:
                _core.relu_backward_add(dy, y, dmain)
            return dmain
        if self.shortcut == "A":
            if input_grad:
                _core.shortcut_backward_add(dy, y, self.stride, self.pad // 2, dmain)
            return dmain
        dskip = self.downsample.backward(F.relu_backward(dy, y), input_grad=input_grad)  # and its parameters' gradients
        if not input_grad:
            return None
        dmain += dskip
        return dmain

    def _release(self):
        self._y = None


class Inception(Module):
    """GoogLeNet inception block (v1): four branches concatenated along channels:
    1x1 | 1x1 -> 3x3 | 1x1 -> 5x5 | 3x3 max-pool (stride 1) -> 1x1, each conv followed by ReLU."""

    def __init__(self, in_channels, ch1x1, ch3x3red, ch3x3, ch5x5red, ch5x5, pool_proj, rng=None):
        super().__init__()
        self.branch1 = Sequential(Conv2d(in_channels, ch1x1, 1, rng=rng), ReLU())
        self.branch2 = Sequential(Conv2d(in_channels, ch3x3red, 1, rng=rng), ReLU(),
                                  Conv2d(ch3x3red, ch3x3, 3, padding=1, rng=rng), ReLU())
        self.branch3 = Sequential(Conv2d(in_channels, ch5x5red, 1, rng=rng), ReLU(),
                                  Conv2d(ch5x5red, ch5x5, 5, padding=2, rng=rng), ReLU())
        self.branch4 = Sequential(MaxPool2d(3, 1, 1, ceil_mode=True), Conv2d(in_channels, pool_proj, 1, rng=rng),
                                  ReLU())
        self.out_channels = ch1x1 + ch3x3 + ch5x5 + pool_proj

    def _branches(self):
        return [self.branch1, self.branch2, self.branch3, self.branch4]

    def forward(self, x):
        return np.concatenate([b.forward(x) for b in self._branches()], axis=1)

    def backward(self, dy, input_grad=True):
        dx = None
        start = 0
        for branch in self._branches():
            width = branch[-2].out_channels
            g = branch.backward(np.ascontiguousarray(dy[:, start:start + width]), input_grad=input_grad)
            start += width
            if input_grad and g is None:
                raise ValueError(no_input_gradient(branch[0]))
            if input_grad:
                dx = g if dx is None else dx + g
        return dx
