"""convcore.summary: per-layer output shape, parameters, multiply-adds and activation memory of a model.

How things are counted (per image; bytes at the model's dtype, 4 for float32):
- FLOPs are multiply-adds (MACs) of convolutions (K * C/groups * R * S per output pixel) and linear layers
  (in * out); pooling, activations, normalisation, residual additions and concatenations are counted as 0.
- Activation memory counts the input and the output of every layer that produces a new array; ReLU and Dropout
  are counted as in place (the lecture's convention) and Flatten is a view, so they add no memory. A composite
  block that makes its own output (a residual block's sum, an inception block's concatenation) adds a row for it.

For VGG-16 on a 224x224x3 image this gives 15,262,696 values (61.1 MB) in the forward pass. CS231n's VGG slide
lists the same per-layer figures (input 150K, conv 3.2M, ...), which sum to 15,237,608 (~15.2M; the 25,088 more
here are the output of torchvision's 7x7 adaptive average pool, kept in this VGG-16 so its weights line up with
torchvision's), yet the slide's total says "24M * 4 bytes ~= 93MB". Its own lines do not add up to that total:
15.2M is what they give. Counting every ReLU output as a separate array as well gives 28,818,408 values (115.3 MB);
the slide's 24M matches neither convention.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from . import nn
from ._validate import as_bool, as_tuple, check_elements
from .nn.module import check_model, evaluating


@dataclass
class LayerRow:
    name: str
    kind: str
    output_shape: tuple
    params: int  # its own parameters' values; one shared with a layer before it counts there only
    macs: int
    activations: int  # values this layer adds to the forward pass's memory, per image
    activation_bytes: int


@dataclass
class Summary:
    rows: list = field(default_factory=list)
    input_shape: tuple = ()
    itemsize: int = 4

    @property
    def total_params(self) -> int:
        return sum(r.params for r in self.rows)

    @property
    def total_macs(self) -> int:
        return sum(r.macs for r in self.rows)

    @property
    def total_activations(self) -> int:
        """Values per image in the forward pass: the input plus every counted layer output."""
        return int(np.prod(self.input_shape)) + sum(r.activations for r in self.rows)

    @property
    def total_activation_bytes(self) -> int:
        return self.total_activations * self.itemsize

    def table(self) -> str:
        lines = [f"{'layer':34s} {'type':18s} {'output':>18s} {'params':>12s} {'MACs':>15s} {'act. values':>12s} "
                 f"{'act. KB':>10s}"]
        lines.append("-" * len(lines[0]))
        inputs = int(np.prod(self.input_shape))
        lines.append(f"{'input':34s} {'':18s} {str(self.input_shape):>18s} {'':>12s} {'':>15s} "
                     f"{inputs:>12,d} {inputs * self.itemsize / 1e3:>10,.1f}")
        for r in self.rows:
            lines.append(f"{r.name:34s} {r.kind:18s} {str(r.output_shape):>18s} {r.params:>12,d} {r.macs:>15,d} "
                         f"{r.activations:>12,d} {r.activation_bytes / 1e3:>10,.1f}")
        lines.append("-" * len(lines[0]))
        lines.append(f"total parameters {self.total_params:,d}; multiply-adds per image {self.total_macs:,d}; "
                     f"activations per image {self.total_activations:,d} values "
                     f"({self.total_activation_bytes / 1e6:.2f} MB)")
        return "\n".join(lines)

    def __str__(self):
        return self.table()


_IN_PLACE = (nn.ReLU, nn.Dropout, nn.Flatten)
_CONTAINERS = (nn.Sequential, nn.Chain)  # pure containers: their output is their last child's


def _macs(module, out_shape):
    out_elems = int(np.prod(out_shape))
    if isinstance(module, (nn.Conv1d, nn.Conv2d)):
        return out_elems * (module.in_channels // module.groups) * int(np.prod(module.kernel_size))
    if isinstance(module, nn.Linear):
        return out_elems * module.in_features
    return 0


def summary(model: nn.Module, input_shape, print_table: bool = True) -> Summary:
    """Run one zero image of `input_shape` (C, H, W) or (C, L) through `model` in eval mode (each module's mode is
    restored afterwards) and record each layer (a composite block's row follows its children's; a parameter shared
    by several layers counts in the first one's row). Returns a Summary (rows and totals); prints its table unless
    print_table=False."""
    check_model(model)
    if not isinstance(input_shape, (tuple, list)) or len(input_shape) not in (1, 2, 3):
        raise ValueError(f"input_shape must be (C, H, W), (C, L) or (features,) without the batch, "
                         f"got {input_shape!r}")
    input_shape = as_tuple(tuple(input_shape), "input_shape", len(input_shape), minimum=1)
    print_table = as_bool(print_table, "print_table")  # (print_table="no" printed it)
    check_elements(input_shape, "the input image")  # refused before the zero image is allocated
    dtype = model._compute_dtype()
    result = Summary(input_shape=input_shape, itemsize=dtype.itemsize)
    names = {id(m): name for name, m in model.named_modules()}
    patched = []
    counted = set()  # the parameters a row has counted: a tied one once, as model.parameters() lists it

    def record(module, y):
        shape = tuple(y.shape[1:])
        activations = 0 if isinstance(module, _IN_PLACE) else int(np.prod(shape))
        own = [p for p in module._parameters.values() if p is not None and id(p) not in counted]
        counted.update(id(p) for p in own)
        result.rows.append(LayerRow(
            names.get(id(module), "?"), type(module).__name__, shape, sum(p.data.size for p in own),
            _macs(module, shape), activations, activations * dtype.itemsize))
        return y

    def wrap(module, attr):
        original = getattr(module, attr)

        def recorded(*args, **kwargs):
            return record(module, original(*args, **kwargs))
        object.__setattr__(module, attr, recorded)
        patched.append((module, attr))

    for m in model.modules():
        if isinstance(m, nn.ReLU):
            wrap(m, "adopt_output")  # ReLU.forward and a fused conv/linear epilogue both end here
        elif not isinstance(m, _CONTAINERS):
            wrap(m, "forward")
    try:
        with evaluating(model):
            model.forward(np.zeros((1, *input_shape), dtype))
    finally:
        for m, attr in patched:
            del m.__dict__[attr]
    if print_table:
        print(result.table())
    return result
