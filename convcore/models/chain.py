"""Chain: named children run in order (a Sequential whose children have names, as torchvision models do)."""
from __future__ import annotations

from ..nn.module import Module


class Chain(Module):
    """forward runs the children in registration order; backward runs them in reverse."""

    def __init__(self, **children: Module):
        super().__init__()
        for name, child in children.items():
            setattr(self, name, child)

    def forward(self, x):
        for child in self._modules.values():
            x = child.forward(x)
        return x

    def backward(self, dy, input_grad=True):
        children = list(self._modules.values())
        for i in range(len(children) - 1, -1, -1):
            dy = children[i].backward(dy, input_grad=input_grad or i > 0)
        return dy
