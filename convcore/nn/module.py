"""Module and Parameter: the base of every layer, with explicit layer-wise backward (no autograd).

`y = m(x)` runs forward (keeping what backward needs only in training mode); `dx = m.backward(dy)` returns the input
gradient and adds parameter gradients into `p.grad`. Parameters, buffers and children are registered by attribute
assignment, in order, so `named_parameters()` and `state_dict()` use PyTorch's dotted names and order; assigning an
array to a buffer's name replaces the buffer. A name that state_dict keys could not tell apart (empty, or with a '.')
or that would hide the module's own attributes (`training`, a method or property) is refused (ValueError), as PyTorch
refuses them. A module instance may appear only once in a model (ValueError): its backward uses what its own forward
kept, which a second call in the same forward would overwrite.
"""
from __future__ import annotations

import contextlib
import itertools
import threading
from collections import OrderedDict

import numpy as np

from .._validate import FLOAT_DTYPES, as_bool, as_tensor


class Parameter:
    """A trainable array (`.data`) and its accumulated gradient (`.grad`, None until a backward)."""

    __slots__ = ("_data", "grad")

    def __init__(self, data: np.ndarray):
        if not isinstance(data, np.ndarray):
            raise TypeError(f"Parameter data must be a numpy array, got {type(data).__name__}")
        self._data = data
        self.grad = None

    @property
    def data(self):
        return self._data

    @data.setter
    def data(self, value):
        if value is not self._data:  # a new array (not `data *= 2`): plans, which read arrays in place, are rebuilt
            Module._edits += 1
        self._data = value

    def accumulate(self, grad: np.ndarray) -> None:
        self.grad = grad if self.grad is None else self.grad + grad

    @property
    def shape(self):
        return self.data.shape

    def __repr__(self):
        return f"Parameter(shape={self.data.shape}, dtype={self.data.dtype})"


def no_input_gradient(layer) -> str:
    """The error for a layer inside a model that returned no input gradient (its input_grad attribute set to False)
    where the layers before it need one."""
    return (f"{type(layer).__name__}.backward returned no input gradient (its input_grad is False), but the layers "
            f"before it need one: set input_grad = False only on a model's first layer")


def check_dy(dy, like: np.ndarray) -> np.ndarray:
    """dy validated as the gradient of an output shaped and typed like `like` (what a layer's forward kept)."""
    dy = as_tensor(dy, "dy", dtype=like.dtype)
    if dy.shape != like.shape:
        raise ValueError(f"dy must have the output's shape {like.shape}, got {dy.shape}")
    return dy


def check_input_dtype(x: np.ndarray, weight: np.ndarray) -> None:
    """Refuse a float input whose dtype is not the layer's float parameters', naming x (not the weight) as the
    operand to convert."""
    if getattr(weight, "dtype", None) in FLOAT_DTYPES and x.dtype != weight.dtype:
        raise TypeError(f"x has dtype {x.dtype} but the layer's parameters are {weight.dtype}; convert x "
                        f"(x.astype(np.{weight.dtype})) or the model (model.to(np.{x.dtype}))")


def check_model(model) -> None:
    """Refuse anything but a Module as the `model` argument (freeze, fit, summary, viz)."""
    if not isinstance(model, Module):
        raise TypeError(f"model must be a convcore.nn.Module, got {type(model).__name__}")


def check_distinct(owner: str, modules, seen: dict | None = None) -> None:
    """Refuse a module instance found twice among `modules`, (dotted name, module) pairs of one model ("" for the
    model itself): its backward takes what its forward kept, which a second call in the same forward overwrites.
    `seen` (id -> first place) carries on from the modules of an earlier call, and takes these in."""
    seen = {} if seen is None else seen
    for where, module in modules:
        first = seen.setdefault(id(module), where)
        if first != where:
            place = f"is already at {first!r} in this {owner}" if first else f"is this {owner} itself"
            raise ValueError(f"{type(module).__name__} at {where!r} {place}: a module instance may appear only once "
                             f"in a model (its backward uses what its own forward kept, which a second call "
                             f"overwrites); use a separate instance for each place")


class _Calls(threading.local):
    keeping = False  # a training-mode model's forward runs on this thread (a class default: no AttributeError to
    # catch where a thread never set it, which cost a frozen LeNet-5's batch-1 call 4-6%)


_calls = _Calls()


def keeping() -> bool:
    """Whether a forward called from a training-mode model's (model(x)) runs on this thread: every module in it
    keeps what its backward needs, whatever its own mode (which still chooses what it computes: a BatchNorm kept in
    eval normalises with its running statistics, a Dropout in eval passes x on), as PyTorch backpropagates through
    modules in eval mode."""
    return _calls.keeping


@contextlib.contextmanager
def not_keeping():
    """Within the block, forwards on this thread keep nothing for backward, even inside a training-mode model's
    forward: an inference-only model (a frozen snapshot, a teacher) run from one."""
    previous = keeping()
    _calls.keeping = False
    try:
        yield
    finally:
        _calls.keeping = previous


@contextlib.contextmanager
def evaluating(model):
    """model.eval() for the with block; afterwards each module's own mode is restored (a model may mix them, e.g.
    a BatchNorm kept in eval while the rest trains), though a KeyboardInterrupt (Ctrl-C) come meanwhile: Python
    raises it only at certain bytecodes (a call's end, a loop's back jump), so model.eval() runs inside the try, and
    the modes are restored by one call of builtins (none of those points inside). One after model.eval(), before
    the try, left the whole model in eval; one inside a restoring loop of Python, some of its modules (a BatchNorm
    then trained on its running statistics)."""
    modules, modes = zip(*[(m, m.training) for m in model.modules()])
    restore = map(object.__setattr__, modules, itertools.repeat("training"), modes)  # run by any(): one call
    try:
        model.eval()
        yield model
    finally:
        Module._edits += 1
        any(restore)


class Module:
    """Base class of layers and models."""

    # assignments to public attributes (options, parameters, children), buffers and parameters' arrays, and mode
    # changes, of any module so far: what a container's plan was built on
    _edits = 0
    # what is bound to this module's own arrays (plans, prepared calls, the backward a training forward prepared) or
    # its children (the schedule): a copy or an unpickled module starts without them
    _BOUND = ("_plan", "_prepared", "_scheduled", "_saved_state")
    # a layer's options, each checked and kept as its constructor keeps it at every assignment, then and later:
    # name -> check(layer, value), which returns the value to keep or raises (layer.stride = [2, 2] is kept as (2, 2),
    # so a change of that list in place cannot go unseen by the calls the layer prepared for it; Dropout's p = 1.0
    # is refused after construction as in it)
    _option_checks = {}

    def __init__(self):
        object.__setattr__(self, "_parameters", OrderedDict())
        object.__setattr__(self, "_buffers", OrderedDict())
        object.__setattr__(self, "_modules", OrderedDict())
        object.__setattr__(self, "training", True)

    def __setattr__(self, name, value):
        state = self.__dict__
        if name[:1] == "_" and not isinstance(value, _REGISTERED):
            try:
                registered = name in state["_parameters"] or name in state["_modules"] or name in state["_buffers"]
            except KeyError:  # before super().__init__(): the path below says so
                registered = True
            if not registered:
                # a private attribute (what a training forward keeps for its backward, at every step): nothing to
                # register or check, no edit to count. One the instance holds already is stored in its __dict__
                # directly, in half object.__setattr__'s time (a property of the class under a private name, with a
                # setter, would be bypassed: convcore's modules have none)
                if name in state:
                    state[name] = value
                else:
                    object.__setattr__(self, name, value)
                return
        parameters, modules, buffers = state.get("_parameters"), state.get("_modules"), state.get("_buffers")
        if parameters is None:
            raise RuntimeError(f"{type(self).__name__}.__init__ must call super().__init__() before setting {name}")
        check = type(self)._option_checks.get(name)
        if check is not None:
            value = check(self, value)
        if isinstance(value, _REGISTERED) and name not in parameters and name not in modules:
            self._check_new_name(name, "parameter" if isinstance(value, Parameter) else "child module")
        elif (name in parameters or name in modules) and not (value is None or isinstance(value, _REGISTERED)):
            kind = "parameter" if name in parameters else "child module"
            raise TypeError(f"{type(self).__name__}.{name} is a {kind}: assign a "
                            f"{'Parameter' if name in parameters else 'Module'} (or None to remove it), got "
                            f"{type(value).__name__}" + (" (to change its values: .data[...] = array)"
                                                         if name in parameters else ""))
        if isinstance(value, Module):
            check_distinct(type(self).__name__, [("", self), *(
                entry for child_name, child in modules.items() if child_name != name
                for entry in child.named_modules(child_name)), *value.named_modules(name)])
        elif name in buffers and not isinstance(value, Parameter):
            self._replace_buffer(name, value)
            return
        held = name in parameters or name in modules  # a parameter or child of this name, replaced or removed
        if isinstance(value, _REGISTERED) or held or name in buffers:
            registry = parameters if isinstance(value, Parameter) else modules if isinstance(value, Module) else None
            for other in (parameters, modules, buffers):
                if other is not registry:
                    other.pop(name, None)
            if registry is not None:
                registry[name] = value  # one of its kind replaced keeps its place in the order, as in PyTorch
        object.__setattr__(self, name, value)
        # an option, a parameter or a child (under any name): what a container's plan and check_distinct were done on
        if not name.startswith("_") or isinstance(value, _REGISTERED) or held:
            Module._edits += 1

    def __delattr__(self, name):
        """`del module.<name>`: a parameter, buffer or child is unregistered too, as in PyTorch (state_dict,
        parameters() and a container's forward no longer see it)."""
        object.__delattr__(self, name)
        for registry in (self._parameters, self._buffers, self._modules):
            registry.pop(name, None)
        Module._edits += 1

    def __getstate__(self):
        """The state copy.deepcopy and pickle take: the calls bound to this module's arrays left out (None: a copy
        that kept them would compute with the original's weights), so a copy made after a training forward needs a
        forward of its own before a backward."""
        return {name: None if name in Module._BOUND else value for name, value in self.__dict__.items()}

    def register_buffer(self, name: str, value: np.ndarray) -> None:
        """A state array that is saved in state_dict but not trained (e.g. BatchNorm running statistics)."""
        if not isinstance(value, np.ndarray):
            raise TypeError(f"{type(self).__name__}.register_buffer: value must be a numpy array (PyTorch's None "
                            f"buffers are not supported), got {type(value).__name__} for {name!r}")
        if name in self._parameters or name in self._modules:
            kind = "parameter" if name in self._parameters else "child module"
            raise ValueError(f"{type(self).__name__}.register_buffer: {name!r} is already a {kind} of this module")
        if name not in self._buffers:
            self._check_new_name(name, "buffer")
        self._set_buffer(name, value)

    # the module's own state, set by Module.__init__ or bound by its calls
    _OWN = ("_parameters", "_buffers", "_modules", "training", *_BOUND)

    def _check_new_name(self, name, kind: str) -> None:
        """Refuse a new parameter's, buffer's or child's name that state_dict keys could not tell apart (empty, or
        holding the '.' that joins nested names) or that would hide the module's own state or a method or property
        of its class (Chain(forward=layer) would have run that layer alone; PyTorch refuses such names too)."""
        where = type(self).__name__
        if not isinstance(name, str) or not name or "." in name:
            raise ValueError(f"{where}: a {kind}'s name must be a non-empty string without '.' (state_dict keys "
                             f"join nested names with '.'), got {name!r}")
        own = getattr(type(self), name, None)
        if name in Module._OWN or callable(own) or isinstance(own, property):
            raise ValueError(f"{where}: a {kind} named {name!r} would hide the module's own attribute of that name "
                             f"(its state or a method); choose another name")

    def _replace_buffer(self, name: str, value) -> None:
        """`module.<buffer> = array`: the array becomes the buffer (as in PyTorch), so forward, state_dict and
        load_state_dict all use it; it must have the buffer's shape and dtype, as load_state_dict requires."""
        old = self._buffers[name]
        where = f"{type(self).__name__}.{name}"
        if not isinstance(value, np.ndarray):
            raise TypeError(f"{where} is a buffer: assign a numpy array, got {type(value).__name__}")
        if value.shape != old.shape:
            raise ValueError(f"{where} is a buffer of shape {old.shape}, got an array of shape {value.shape}")
        if value.dtype != old.dtype:
            raise ValueError(f"{where} is a buffer of dtype {old.dtype}, got an array of dtype {value.dtype} "
                             f"(convert it: value.astype(np.{old.dtype}))")
        self._set_buffer(name, value)

    def _set_buffer(self, name: str, value: np.ndarray) -> None:
        self._buffers[name] = value
        object.__setattr__(self, name, value)
        Module._edits += 1  # plans read buffers in place: a new array is a new plan

    # --- computation -------------------------------------------------------------------------------------------
    def forward(self, x):
        raise NotImplementedError(f"{type(self).__name__} does not define forward")

    def backward(self, dy, input_grad: bool = True):
        """Gradient of the input given the output gradient; parameter gradients are added into p.grad.

        input_grad=False skips computing the input gradient where the layer can (returns None).
        """
        raise NotImplementedError(f"{type(self).__name__} does not define backward")

    def __call__(self, x):
        if not self.training or _calls.keeping:
            return self.forward(x)
        _calls.keeping = True  # for the modules inside, eval-mode ones too (keeping())
        try:
            return self.forward(x)
        finally:
            _calls.keeping = False

    def _keeps(self) -> bool:
        """Whether this forward keeps what backward needs: in training mode, or run by a training-mode model's
        forward (keeping()); in eval mode otherwise nothing is kept."""
        return self.training or _calls.keeping

    def _inference_step(self, x, relu: bool = False):
        """For the eval-mode plan of Sequential / Chain: validate this layer for inputs shaped and typed like x and
        return step(x) -> output (with ReLU applied when relu, for layers that fuse it) for any C-contiguous array
        of that shape and dtype, bound to the current arrays of this layer's parameters and buffers (a block's or
        container's step is made of its children's). None (the default)
        where the layer has no such step: the plan calls its forward instead."""
        return None

    def _prepared_for(self, key, w, b, build):
        """The calls build() prepares (validating everything) for this layer's key (its input's shape and dtype and
        its options) and parameter arrays w and b (either may be None), kept while both stay the same: the key by
        value, the arrays by identity and shape. The calls are bound to the arrays, which optimizers update in place;
        arrays that validation would copy (anything but C-contiguous numpy arrays) are not kept but prepared afresh
        at every call."""
        kept = self.__dict__.get("_prepared")
        if (kept is not None and kept[1] is w and kept[2] is b and kept[0] == key
                and kept[3] == (None if w is None else w.shape) and kept[4] == (None if b is None else b.shape)):
            return kept[5]
        steps = build()
        bindable = all(type(a) is np.ndarray and a.flags.c_contiguous for a in (w, b) if a is not None)
        shapes = (None if w is None else w.shape, None if b is None else b.shape)
        object.__setattr__(self, "_prepared", (key, w, b, *shapes, steps) if bindable else None)
        return steps

    def _saved(self, value, what: str = "input"):
        """What forward kept for backward, or a clear error when there was no training-mode forward."""
        if value is None:
            raise RuntimeError(f"{type(self).__name__}.backward needs a forward pass in training mode first "
                               f"(no saved {what}; in eval mode nothing is kept for backward, except inside a "
                               f"training-mode model called as model(x))")
        return value

    # --- structure ---------------------------------------------------------------------------------------------
    def named_children(self):
        return iter(self._modules.items())

    def children(self):
        return iter(self._modules.values())

    def named_modules(self, prefix: str = ""):
        yield prefix, self
        for name, child in self._modules.items():
            yield from child.named_modules(f"{prefix}.{name}" if prefix else name)

    def modules(self):
        for _, m in self.named_modules():
            yield m

    def named_parameters(self, prefix: str = ""):
        """(dotted name, parameter) of this module's and its children's parameters, each parameter once (under its
        first name) where modules share it, as PyTorch's."""
        seen = set()
        for name, p in self._named_parameters(prefix):
            if id(p) not in seen:
                seen.add(id(p))
                yield name, p

    def _named_parameters(self, prefix):
        for name, p in self._parameters.items():
            yield (f"{prefix}.{name}" if prefix else name), p
        for name, child in self._modules.items():
            yield from child._named_parameters(f"{prefix}.{name}" if prefix else name)

    def parameters(self):
        for _, p in self.named_parameters():
            yield p

    def named_buffers(self, prefix: str = ""):
        for name, b in self._buffers.items():
            yield (f"{prefix}.{name}" if prefix else name), b
        for name, child in self._modules.items():
            yield from child.named_buffers(f"{prefix}.{name}" if prefix else name)

    def buffers(self):
        for _, b in self.named_buffers():
            yield b

    def zero_grad(self) -> None:
        for p in self.parameters():
            p.grad = None

    def train(self, mode: bool = True):
        mode = as_bool(mode, "mode")
        for m in self.modules():
            object.__setattr__(m, "training", mode)
            if not mode:
                m._release()
        Module._edits += 1
        return self

    def eval(self):
        return self.train(False)

    def _release(self) -> None:
        """Drop what a training forward kept for backward (called on eval())."""

    # --- state -------------------------------------------------------------------------------------------------
    def state_dict(self) -> "OrderedDict[str, np.ndarray]":
        """Parameters then buffers of each module, PyTorch's names and order (arrays are not copied)."""
        out = OrderedDict()
        self._collect_state("", out)
        return out

    def _collect_state(self, prefix, out):
        for name, p in self._parameters.items():
            out[prefix + name] = p.data
        for name, b in self._buffers.items():
            out[prefix + name] = b
        for name, child in self._modules.items():
            child._collect_state(f"{prefix}{name}.", out)

    def load_state_dict(self, state: dict, strict: bool = True) -> None:
        """Copy arrays into the parameters and buffers by name. With strict, missing or unexpected keys raise;
        shape or dtype mismatches and read-only destinations always raise (naming the key); nothing is changed when
        anything is wrong."""
        own = self.check_state_dict(state, strict)
        for key, target in own.items():
            if key in state:
                target[...] = state[key]

    def check_state_dict(self, state: dict, strict: bool = True):
        """Raise (naming the keys) if load_state_dict(state, strict) would fail; returns the own state dict."""
        if not isinstance(state, dict):
            raise TypeError(f"state must be a dict of numpy arrays, got {type(state).__name__}")
        own = self.state_dict()
        missing = [k for k in own if k not in state]
        unexpected = [k for k in state if k not in own]
        if strict and (missing or unexpected):
            raise KeyError(f"load_state_dict: missing keys {missing}, unexpected keys {unexpected}")
        for key, target in own.items():
            if key not in state:
                continue
            value = state[key]
            if not isinstance(value, np.ndarray):
                raise TypeError(f"load_state_dict: {key} must be a numpy array, got {type(value).__name__}")
            if value.shape != target.shape:
                raise ValueError(f"load_state_dict: {key} has shape {value.shape}, the model expects {target.shape}")
            if value.dtype != target.dtype:
                raise ValueError(f"load_state_dict: {key} has dtype {value.dtype}, the model expects {target.dtype}")
            if not target.flags.writeable:
                raise ValueError(f"load_state_dict: the model's {key} is a read-only array (its writeable flag is "
                                 f"False): it cannot be loaded into")
        return own

    def _compute_dtype(self) -> np.dtype:
        """The dtype the module computes in: its parameters' (float32, or float64 after to(np.float64)); float32
        where it has none."""
        return next((p.data.dtype for p in self.parameters()), np.dtype(np.float32))

    def to(self, dtype):
        """Convert parameters and floating buffers to float32 (fast kernels) or float64 (reference kernels)."""
        dtype = np.dtype(dtype)
        if dtype not in (np.float32, np.float64):
            raise TypeError(f"dtype must be float32 or float64, got {dtype}")
        for m in self.modules():
            for p in m._parameters.values():
                p.data = p.data.astype(dtype)
                p.grad = None
            for name, b in list(m._buffers.items()):
                if np.issubdtype(b.dtype, np.floating):
                    m._set_buffer(name, b.astype(dtype))
        return self

    # --- display -----------------------------------------------------------------------------------------------
    def extra_repr(self) -> str:
        return ""

    def __repr__(self):
        lines = [f"{type(self).__name__}({self.extra_repr()}" + ("" if self._modules else ")")]
        if self._modules:
            for name, child in self._modules.items():
                body = repr(child).replace("\n", "\n  ")
                lines.append(f"  ({name}): {body}")
            lines.append(")")
        return "\n".join(lines)


class PreparedLayer(Module):
    """A layer with a weight and an optional bias whose forward and backward convcore.functional prepares for its
    input's shape (Linear and the convolutions). A subclass gives _input(x), x checked as the layer's input and made a
    C-contiguous array, and _steps(x, activation), the (forward, backward) prepared for inputs like that array."""
    fuses_relu = True

    def __init__(self):
        super().__init__()
        self.input_grad = True
        self._saved_state = None  # (x, the backward prepared for it)

    def forward(self, x, activation=None):
        if type(x) is not np.ndarray or not x.flags.c_contiguous:
            x = self._input(x)
        run, back = self._steps(x, activation)
        y = run(x)
        self._saved_state = (x, back) if self._keeps() else None
        return y

    def _inference_step(self, x, relu=False):
        return self._steps(self._input(x), "relu" if relu else None)[0]

    def backward(self, dy, input_grad=True):
        x, back = self._saved(self._saved_state)
        dx, dw, db = back(dy, x, input_grad and self.input_grad, self.bias is not None)
        self.weight.accumulate(dw)
        if self.bias is not None:
            self.bias.accumulate(db)
        return dx

    def _release(self):
        self._saved_state = None


# what Module.__setattr__ registers as a parameter or child, under any name
_REGISTERED = (Parameter, Module)
