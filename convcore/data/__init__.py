"""convcore.data: local data sets (Fashion-MNIST, CIFAR-10), the IDX reader, and mini-batch iteration."""
from .batches import Batches
from .cifar10 import load_cifar10
from .fashion_mnist import load_fashion_mnist
from .idx import read_idx

__all__ = ["Batches", "load_fashion_mnist", "load_cifar10", "read_idx"]
