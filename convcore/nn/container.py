"""Containers: Sequential (children "0", "1", ...) and Chain (named children), both running children in order."""
from __future__ import annotations

from .activation import ReLU
from .module import Module


class _InOrder(Module):
    """Children run in registration order, backward in reverse. A Conv2d/Conv1d/Linear followed by a ReLU runs
    as one call with the ReLU fused into the GEMM epilogue (the ReLU module still keeps the output its backward
    needs)."""

    def _add(self, name: str, layer) -> None:
        if not isinstance(layer, Module):
            raise TypeError(f"{type(self).__name__} children must be Modules, got {type(layer).__name__} "
                            f"for {name!r}")
        setattr(self, name, layer)

    def __len__(self):
        return len(self._modules)

    def __getitem__(self, i):
        return list(self._modules.values())[i]

    def __iter__(self):
        return iter(self._modules.values())

    def forward(self, x):
        layers = list(self._modules.values())
        i = 0
        while i < len(layers):
            layer = layers[i]
            nxt = layers[i + 1] if i + 1 < len(layers) else None
            if isinstance(nxt, ReLU) and getattr(layer, "fuses_relu", False):
                x = nxt.adopt_output(layer.forward(x, activation="relu"))
                i += 2
            else:
                x = layer.forward(x)
                i += 1
        return x

    def backward(self, dy, input_grad: bool = True):
        layers = list(self._modules.values())
        for i in range(len(layers) - 1, -1, -1):
            dy = layers[i].backward(dy, input_grad=input_grad or i > 0)
        return dy


class Sequential(_InOrder):
    """Positional children, named "0", "1", ... like PyTorch's."""

    def __init__(self, *layers: Module):
        super().__init__()
        for i, layer in enumerate(layers):
            self._add(str(i), layer)


class Chain(_InOrder):
    """Named children (keyword arguments), as torchvision models name theirs: Chain(features=..., fc=...)."""

    def __init__(self, **layers: Module):
        super().__init__()
        for name, layer in layers.items():
            self._add(name, layer)
