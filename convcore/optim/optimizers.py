"""Optimizers with PyTorch's update rules: SGD (momentum, dampening, nesterov, weight decay), Adam, AdamW.

state_dict() holds plain numbers and numpy arrays (no pickle): hyper-parameters, the step count, and per-parameter
buffers keyed "<buffer>.<parameter index>": float arrays of the parameter's shape and, for Adam, "step.<index>", the
0-d int64 count of that parameter's own updates (as torch.optim.Adam's per-parameter state["step"]), which its bias
correction uses. A step is one native call for all the parameters; each parameter's update is one pass over its
arrays (in place, in the parameter's dtype: float32 or float64). The step flushes denormal results to zero and reads
denormal operands as zero (as with torch.set_flush_denormal(True), for the step only): a momentum or moment buffer
whose gradient stays zero decays through the denormals, where each operation costs a microcode assist on x86 (the
step of LeNet-5 ran 8-25x slower). Results of magnitude 2**-102 (~2e-31) or more come out the same.
"""
from __future__ import annotations

import numbers

import numpy as np

from .. import _core
from .._validate import as_bool, as_real
from ..nn.module import Parameter

# the largest count of updates a state may hold (step_count, Adam's per-parameter counts): exact as a float, as the
# bias corrections use it, and far from the int64 the kernels take it as (2**64 - 1 as uint64 became -1)
_MAX_COUNT = 2**53


def _check_number(value, name, minimum=0.0, below=None):
    number = as_real(value, name)
    if number < minimum or (below is not None and number >= below):
        rule = f">= {minimum}" + (f" and < {below}" if below is not None else "")
        raise ValueError(f"{name} must be {rule}, got {value}")
    return number


class Optimizer:
    hyper_names: tuple = ()
    buffer_names: tuple = ()  # float arrays of their parameter's shape and dtype
    count_names: tuple = ()  # per-parameter counts: 0-d int64 arrays

    def __init__(self, params):
        self.params = list(params)
        if not self.params:
            raise ValueError("params is empty: the optimizer has nothing to update")
        first = {}  # id(parameter) -> its item
        for i, p in enumerate(self.params):
            if not isinstance(p, Parameter):
                raise TypeError(f"params must be Parameters (e.g. model.parameters()), item {i} is "
                                f"{type(p).__name__}")
            if first.setdefault(id(p), i) != i:
                raise ValueError(f"params holds the same Parameter twice (items {first[id(p)]} and {i}): it would be "
                                 f"updated twice a step")
        self.step_count = 0
        self.buffers: dict[str, np.ndarray] = {}
        self._keys: dict[str, list] = {}  # buffer name -> its key for each parameter

    def __setattr__(self, name, value):
        """A hyper-parameter assigned after construction (a hand-written schedule's lr, say) is checked by the
        constructor's rules (_check_hyper, where the optimizer defines them) with the others as they are, and kept
        as they keep it (a float or a bool), so that a step never runs on a value the constructor refuses and
        state_dict() stays loadable and JSON-writable."""
        if (name in self.hyper_names and type(self)._check_hyper is not Optimizer._check_hyper
                and all(k in self.__dict__ for k in self.hyper_names)):
            value = self._check_hyper({**{k: self.__dict__[k] for k in self.hyper_names}, name: value}, str)[name]
        object.__setattr__(self, name, value)

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    def step(self) -> None:
        """Update every parameter that has a gradient, in one native call: all of them are checked first (naming
        the parameter by index), and nothing changes when one is refused."""
        self._apply([p.data for p in self.params], [p.grad for p in self.params])
        self.step_count += 1

    def _key_list(self, name):
        """The state key of `name` for each parameter: "<name>.<index>"."""
        keys = self._keys.get(name)
        if keys is None:
            keys = self._keys[name] = [f"{name}.{i}" for i in range(len(self.params))]
        return keys

    def _buffers(self, name, datas, grads, make):
        """Buffer `name` of each parameter (None where it has none and no gradient), the missing ones made now by
        make(data); and the new ones by key, to be kept only once the step has succeeded. A kept buffer of another
        dtype than its parameter (the model was converted after the optimizer made it) is refused here."""
        bufs, made = [], {}
        for i, (key, data, grad) in enumerate(zip(self._key_list(name), datas, grads)):
            buf = self.buffers.get(key)
            if grad is not None and isinstance(data, np.ndarray):
                if buf is None:
                    buf = made[key] = make(data)
                elif buf.dtype != data.dtype:
                    raise TypeError(f"optimizer buffer {key!r} is {buf.dtype} but parameter {i} is now {data.dtype}: "
                                    f"the parameter was converted (e.g. model.to(np.{data.dtype})) after the "
                                    f"optimizer made its state; create the optimizer after converting the model, or "
                                    f"convert its state with optimizer.load_state_dict(optimizer.state_dict())")
            bufs.append(buf)
        return bufs, made

    def _check_hyper(self, hyper: dict, label) -> dict:
        """The hyper-parameters in `hyper` (every one of hyper_names) checked by this optimizer's rules, as they
        are kept; label(name) names one in a message. Each optimizer defines it (its constructor's rules)."""
        raise NotImplementedError(f"{type(self).__name__} does not define _check_hyper")

    def _set_hyper(self, hyper: dict) -> None:
        """Set hyper-parameters checked together (one at a time, the others' old values could refuse them)."""
        for k in self.hyper_names:
            object.__setattr__(self, k, hyper[k])

    def state_dict(self) -> dict:
        return {"hyper": {k: getattr(self, k) for k in self.hyper_names}, "step_count": self.step_count,
                "buffers": dict(self.buffers)}

    def load_state_dict(self, state: dict) -> None:
        """Restore what state_dict() returned; everything is checked (naming the key) before anything changes."""
        if not isinstance(state, dict) or set(state) != {"hyper", "step_count", "buffers"}:
            raise ValueError("optimizer state must be a dict with keys 'hyper', 'step_count', 'buffers' "
                             "(from state_dict())")
        hyper, buffers = state["hyper"], state["buffers"]
        if not isinstance(hyper, dict):
            raise TypeError(f"optimizer state 'hyper' must be a dict of hyper-parameters, got {hyper!r}")
        if set(hyper) != set(self.hyper_names):
            raise ValueError(f"optimizer state has hyper-parameters {sorted(hyper)}, {type(self).__name__} has "
                             f"{sorted(self.hyper_names)}")
        hyper = self._check_hyper(hyper, lambda k: f"hyper-parameter {k}")  # the constructor's rules
        if not isinstance(buffers, dict):
            raise TypeError(f"optimizer state 'buffers' must be a dict of numpy arrays keyed "
                            f"'<buffer>.<parameter index>' (empty for none), got {buffers!r}")
        kept = self.buffer_names + self.count_names
        for key, value in buffers.items():
            name, _, index = key.rpartition(".") if isinstance(key, str) else (None, None, "")
            # the index as state_dict writes it: ASCII digits without leading zeros ("00" or a non-ASCII digit,
            # loaded, went unused beside the "0" the next step made)
            if (name not in kept or not (index.isascii() and index.isdigit()) or str(int(index)) != index
                    or int(index) >= len(self.params)):
                raise ValueError(f"optimizer state has buffer {key!r}; {type(self).__name__} keeps "
                                 f"{list(kept)} for parameters 0..{len(self.params) - 1}")
            if name in self.count_names:  # a parameter's count of updates: kept from its first update on
                if (not isinstance(value, np.ndarray) or value.shape != () or value.dtype.kind not in "iu"
                        or not 1 <= int(value) <= _MAX_COUNT):
                    raise ValueError(f"optimizer state {key!r} must be a 0-d integer array in [1, 2**53] (a count "
                                     f"of updates), got {value!r}")
                missing = [f"{b}.{index}" for b in self.buffer_names if f"{b}.{index}" not in buffers]
                if missing:
                    raise ValueError(f"optimizer state has the count {key!r} without the buffers {missing} of the "
                                     f"same parameter")
                continue
            if not isinstance(value, np.ndarray) or value.shape != self.params[int(index)].data.shape:
                raise ValueError(f"optimizer buffer {key!r} has shape {getattr(value, 'shape', None)}, the parameter "
                                 f"has {self.params[int(index)].data.shape}")
            if value.dtype.kind != "f":
                raise TypeError(f"optimizer buffer {key!r} has dtype {value.dtype}; buffers are real floating point")
        step_count = state["step_count"]
        if (isinstance(step_count, bool) or not isinstance(step_count, numbers.Integral)
                or not 0 <= step_count <= _MAX_COUNT):
            raise ValueError(f"optimizer state step_count must be an int in [0, 2**53], got {step_count!r}")
        self._set_hyper(hyper)
        self.step_count = int(step_count)
        self.buffers = {k: np.array(v, dtype=np.int64 if k.rpartition(".")[0] in self.count_names
                                    else self.params[int(k.rpartition(".")[2])].data.dtype, order="C", copy=True)
                        for k, v in buffers.items()}


class SGD(Optimizer):
    """p -= lr * d with d = g + wd*p, buf = momentum*buf + (1 - dampening)*d (buf = d at the first step),
    d = d + momentum*buf (nesterov) or buf."""
    hyper_names = ("lr", "momentum", "dampening", "weight_decay", "nesterov")
    buffer_names = ("momentum_buffer",)

    def __init__(self, params, lr, momentum=0.0, weight_decay=0.0, nesterov=False, dampening=0.0):
        super().__init__(params)
        self._set_hyper(self._check_hyper(dict(lr=lr, momentum=momentum, dampening=dampening,
                                               weight_decay=weight_decay, nesterov=nesterov), str))

    def _check_hyper(self, hyper, label):
        out = {k: _check_number(hyper[k], label(k)) for k in ("lr", "momentum", "dampening", "weight_decay")}
        nesterov = as_bool(hyper["nesterov"], label("nesterov"))
        if nesterov and (out["momentum"] <= 0 or out["dampening"] != 0):
            raise ValueError(f"nesterov needs momentum > 0 and dampening 0, got momentum={out['momentum']}, "
                             f"dampening={out['dampening']}")
        return dict(out, nesterov=nesterov)

    def _apply(self, datas, grads):
        bufs, first, made = None, [False] * len(datas), {}
        if self.momentum:  # a new buffer is set to the gradient at its first step, not read
            bufs, made = self._buffers("momentum_buffer", datas, grads, lambda d: np.empty_like(d, order="C"))
            first = [key in made for key in self._keys["momentum_buffer"]]
        _core.sgd_step(datas, grads, bufs, first, self.lr, self.momentum, self.dampening, self.weight_decay,
                       self.nesterov)
        self.buffers.update(made)


class Adam(Optimizer):
    """Adam (Kingma & Ba) with PyTorch's bias correction, by each parameter's own count of updates (a parameter
    first updated at the optimizer's 3rd step is corrected as at its 1st); weight_decay adds wd*p to the gradient
    (L2)."""
    hyper_names = ("lr", "beta1", "beta2", "eps", "weight_decay")
    buffer_names = ("exp_avg", "exp_avg_sq")
    count_names = ("step",)
    decoupled = False

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
        super().__init__(params)
        if not isinstance(betas, (tuple, list)) or len(betas) != 2:
            raise ValueError(f"betas must be a pair (beta1, beta2), got {betas!r}")
        hyper = dict(lr=lr, beta1=betas[0], beta2=betas[1], eps=eps, weight_decay=weight_decay)
        self._set_hyper(self._check_hyper(hyper, lambda k: {"beta1": "betas[0]", "beta2": "betas[1]"}.get(k, k)))

    def _check_hyper(self, hyper, label):
        return {k: _check_number(hyper[k], label(k), 0.0, 1.0 if k in ("beta1", "beta2") else None)
                for k in self.hyper_names}

    def load_state_dict(self, state: dict) -> None:
        """As Optimizer.load_state_dict. A state saved before the per-parameter counts (moments without
        "step.<index>") gives each parameter with moments the optimizer's step_count, which its next step then
        continues as it did."""
        super().load_state_dict(state)
        for i, key in enumerate(self._key_list("step")):
            if key not in self.buffers and (f"exp_avg.{i}" in self.buffers or f"exp_avg_sq.{i}" in self.buffers):
                self.buffers[key] = np.array(self.step_count, dtype=np.int64)

    def _apply(self, datas, grads):
        zeros = lambda d: np.zeros_like(d, order="C")
        exp_avg, made = self._buffers("exp_avg", datas, grads, zeros)
        exp_avg_sq, made_sq = self._buffers("exp_avg_sq", datas, grads, zeros)
        step_keys = self._key_list("step")
        counts = [self.buffers.get(key) for key in step_keys]
        steps = [1 if count is None else int(count) + 1 for count in counts]  # each parameter's own step, this one
        _core.adam_step(datas, grads, exp_avg, exp_avg_sq, self.lr, self.beta1, self.beta2, self.eps,
                        self.weight_decay, self.decoupled, steps)
        self.buffers.update(made)
        self.buffers.update(made_sq)
        for key, count, grad, step in zip(step_keys, counts, grads, steps):
            if grad is None:
                continue
            if count is None:
                self.buffers[key] = np.array(step, dtype=np.int64)
            else:  # in place, as the moments are
                count[()] = step


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov & Hutter): p *= 1 - lr*wd before the Adam step."""
    decoupled = True

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2):
        super().__init__(params, lr, betas, eps, weight_decay)
