"""Learning-rate schedules, stepped once per epoch: StepLR and CosineAnnealingLR (closed forms, as PyTorch)."""
from __future__ import annotations

import math

from .._validate import as_int
from .optimizers import Optimizer, _check_number


class _Scheduler:
    def __init__(self, optimizer):
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"optimizer must be a convcore optimizer, got {type(optimizer).__name__}")
        self.optimizer = optimizer
        self.base_lr = optimizer.lr
        self.last_epoch = 0

    def step(self) -> None:
        self.last_epoch += 1
        self.optimizer.lr = self.lr_at(self.last_epoch)

    def state_dict(self) -> dict:
        return {"last_epoch": self.last_epoch, "base_lr": self.base_lr}

    @staticmethod
    def checked_state(state: dict) -> tuple:
        """(last_epoch, base_lr) of what state_dict() returned, checked by the constructor's rules (an int
        last_epoch >= 0, a base_lr >= 0 as an optimizer's lr); nothing changes."""
        if not isinstance(state, dict) or set(state) != {"last_epoch", "base_lr"}:
            raise ValueError(f"scheduler state must be a dict with keys 'last_epoch', 'base_lr' (from state_dict()), "
                             f"got {state!r}")
        return (as_int(state["last_epoch"], "scheduler state last_epoch", minimum=0),
                _check_number(state["base_lr"], "scheduler state base_lr"))

    def load_state_dict(self, state: dict) -> None:
        """Restore what state_dict() returned, checked (checked_state) before anything changes; the optimizer's lr
        becomes the epoch's."""
        self.last_epoch, self.base_lr = self.checked_state(state)
        self.optimizer.lr = self.lr_at(self.last_epoch)


class StepLR(_Scheduler):
    """lr = base_lr * gamma ** (epoch // step_size)."""

    def __init__(self, optimizer, step_size, gamma=0.1):
        super().__init__(optimizer)
        self.step_size = as_int(step_size, "step_size", minimum=1)
        self.gamma = _check_number(gamma, "gamma")

    def lr_at(self, epoch):
        return self.base_lr * self.gamma ** (epoch // self.step_size)


class CosineAnnealingLR(_Scheduler):
    """lr = eta_min + (base_lr - eta_min) * (1 + cos(pi * epoch / T_max)) / 2."""

    def __init__(self, optimizer, T_max, eta_min=0.0):
        super().__init__(optimizer)
        self.T_max = as_int(T_max, "T_max", minimum=1)
        self.eta_min = _check_number(eta_min, "eta_min")

    def lr_at(self, epoch):
        return self.eta_min + (self.base_lr - self.eta_min) * (1 + math.cos(math.pi * epoch / self.T_max)) / 2
