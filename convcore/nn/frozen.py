"""freeze(model): an inference-only snapshot of a model, for serving it.

The snapshot owns a copy of the model's parameters and buffers, made read-only, so its plans (the eval-mode forward
in one C++ call, per input shape) may do what a live model's cannot: keep each convolution's weights packed as its
kernel reads them from call to call, and fold each batch norm into the convolution before it. Its outputs are those
of model.eval() within float32 rounding (the same bits where it has no batch norm to fold) of the folded weights and
bias: a folded channel's bias, bias - running_mean * scale, is rounded once, so a channel whose |running_mean| * scale
is large against its outputs (a tiny running variance far from zero) loses that much precision, as any such fold
does (running_mean 1000, running_var 1e-4: ~6e-3 off, where model.eval() normalises x - mean first).
"""
from __future__ import annotations

import copy
import threading
from collections import OrderedDict

import numpy as np

from .container import Sequential, _InOrder
from .module import Module, check_model, keeping, not_keeping


class Frozen:
    """An inference-only snapshot of a model: frozen(x) is the model's eval-mode output for x, as of freeze time.

    Made by freeze(model). Later changes to the model (training, new weights) do not reach it, and its own arrays
    are read-only. Calls may come from several threads at once. A plan is built on the first call for each input
    shape and dtype (that call costs about two forwards more than a later one) and holds its own folded and packed
    copy of the weights (about twice the parameters' bytes; up to three packings of a layer whose packing follows
    the thread count); plans are kept for the `max_plans` shapes used last. A plan runs each call on the thread
    count its calls have been timed fastest on: the setting (set_num_threads) or a halving of it, each tried for
    two calls first (the first 2 * (1 + floor(log2(setting))) calls) and again now and then (small models at batch 1
    can run faster on one core than on two far apart); the outputs are the same bits on any count.
    An input or model the native plan does not take (float64, layers without native ops) runs the snapshot's eval
    forward instead."""

    def __init__(self, model: Module, max_plans: int = 4):
        check_model(model)
        if isinstance(max_plans, bool) or not isinstance(max_plans, int) or max_plans < 1:
            raise ValueError(f"max_plans must be an int >= 1, got {max_plans!r}")
        snapshot = copy.deepcopy(model)
        # a container whose plan is its forward (a subclass's own forward runs as a step of one around it)
        plain = isinstance(snapshot, _InOrder) and type(snapshot).forward is _InOrder.forward
        self._model = (snapshot if plain else Sequential(snapshot)).eval()
        for p in self._model.parameters():
            p.grad = None
        object.__setattr__(self._model, "_frozen", True)  # its plans: _Plan.go_native(frozen=True)
        self._max_plans = max_plans
        self._start()

    def _start(self):
        """Its arrays read-only, no plans yet (as made, and as copied or unpickled: plans are not copied)."""
        for p in self._model.parameters():
            p.data.flags.writeable = False
        for array in self._model.buffers():
            array.flags.writeable = False
        self._plans = OrderedDict()  # (shape, dtype) -> the native plan, or None where the eval forward runs
        self._lock = threading.Lock()  # builds (and the eval forward, which keeps its own plan) one at a time

    def __getstate__(self):
        """What copy.deepcopy and pickle take: the snapshot (its modules drop their own plans as they are copied) and
        max_plans; the copy builds its plans on its first calls (a spawned worker can be sent one)."""
        return {"_model": self._model, "_max_plans": self._max_plans}

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._start()

    @property
    def dtype(self) -> np.dtype:
        """The dtype the snapshot computes in: float32, or float64 for a model.to(np.float64)."""
        return self._model._compute_dtype()

    def __call__(self, x):
        if keeping():  # called from a training model's forward: inference only all the same
            with not_keeping():
                return self(x)
        if isinstance(x, np.ndarray):
            x = (x if x.flags.c_contiguous else np.ascontiguousarray(x)).view(np.ndarray)  # a subclass: its array
            key = (x.shape, x.dtype)
            native = self._plans.get(key)
            if native is not None:
                try:
                    self._plans.move_to_end(key)
                except KeyError:  # dropped by another thread's build meanwhile
                    pass
                return native.run(x)
        with self._lock:
            if isinstance(x, np.ndarray):
                if key not in self._plans:
                    self._build(x, key)
                self._plans.move_to_end(key)  # used last, whether it has a native plan or runs the eval forward
                native = self._plans[key]
                if native is not None:
                    return native.run(x)
            return self._model(x)

    def _build(self, x, key):
        """The frozen native plan for inputs like x, built by the snapshot's container (None where it has none)."""
        model = self._model
        model(x)  # validates x as the layers do, and builds the container's plan for it
        plan = model.__dict__.get("_plan")
        self._plans[key] = plan.native if plan is not None and (plan.shape, plan.dtype) == key else None
        if len(self._plans) > self._max_plans:
            self._plans.popitem(last=False)  # the one used longest ago

    def __repr__(self):
        inner = self._model[0] if type(self._model) is Sequential and len(self._model) == 1 else self._model
        return f"Frozen({inner!r})"


def freeze(model: Module, max_plans: int = 4) -> Frozen:
    """An inference-only snapshot of `model` (see Frozen): its parameters and buffers copied and read-only, each
    batch norm folded into the convolution before it, each convolution's weights packed once. The model itself is
    left as it was (its mode too)."""
    return Frozen(model, max_plans)
