"""convcore.optim: optimizers and learning-rate schedules."""
from .optimizers import SGD, Adam, AdamW, Optimizer
from .schedulers import CosineAnnealingLR, StepLR

__all__ = ["Optimizer", "SGD", "Adam", "AdamW", "StepLR", "CosineAnnealingLR"]
