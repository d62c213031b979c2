"""Containers: Sequential (children "0", "1", ...) and Chain (named children), both running children in order."""
from __future__ import annotations

import functools
import operator

import numpy as np

from .. import _core
from .activation import ReLU
from .module import Module, check_distinct, keeping, no_input_gradient
from .pool import _MaxPoolNd


class _Plan:
    """The eval-mode forward of a container for one input shape and dtype: per child (a Conv/Linear/BatchNorm with
    the following ReLU fused, a residual block or a nested container), a step bound to the validated arrays, or the
    child's own forward (its output checked) where it has no step. Valid while no module's mode, public attribute
    (an option, a parameter or a child), buffer or parameter's array has changed since it was built (Module._edits
    counts them) and every array it binds keeps its shape (the native plan checks that itself at each run)."""

    __slots__ = ("shape", "dtype", "edits", "arrays", "shapes", "steps", "out_shapes", "native")

    def __init__(self, x, layers):
        self.shape, self.dtype, self.steps, self.out_shapes, self.native = x.shape, x.dtype, [], [], None
        self.edits = Module._edits
        self.arrays = tuple(p.data for layer in layers for p in layer.parameters())
        self.shapes = tuple(a.shape for a in self.arrays)

    def go_native(self, frozen: bool = False) -> None:
        """Hand the steps to one C++ call (_core.NativePlan: the same kernels with the same arguments, without a
        Python call and an array per layer) when every step has native ops (float32 conv2d, pooling, linear, ReLU,
        batch norm, views, and blocks and containers made of them) and at least one computes (views alone return
        the input itself, step by step). frozen: a frozen model's plan (convcore.nn.freeze), whose arrays do not
        change."""
        if self.dtype != np.float32 or not _all_native(self.steps):
            return
        native = _core.NativePlan(list(self.shape), frozen)
        if native.set_output(_add_steps(native, 0, self.steps, self.out_shapes)):
            self.native = native

    def valid_for(self, x) -> bool:
        if x.shape != self.shape or x.dtype != self.dtype or Module._edits != self.edits:
            return False
        return self.native is not None or tuple(map(_SHAPE, self.arrays)) == self.shapes


def _run_steps(steps, x):
    for step in steps:
        x = step(x)
    return x


def _all_native(steps) -> bool:
    return all(hasattr(step, "native") for step in steps)


def _overrides(module, *methods) -> bool:
    """Whether a subclass of the class that defines the module's step (_inference_step) defines any of methods."""
    mro = type(module).__mro__
    below_step = mro[:next(i for i, c in enumerate(mro) if "_inference_step" in c.__dict__)]
    return any(method in c.__dict__ for c in below_step for method in methods)


def _runs_own_forward(module) -> bool:
    """Whether a plan step would skip what the module's forward does: forward or adopt_output replaced on the
    instance (summary and viz wrap them to record outputs), or forward overridden by a subclass of the class that
    defines the module's step (_inference_step). Such a module runs its own forward in the plan."""
    return "forward" in module.__dict__ or "adopt_output" in module.__dict__ or _overrides(module, "forward")


def _own_passes(module) -> bool:
    """Whether the module's class overrides forward or backward below the class that defines its step
    (_inference_step): such a module is not fused with its neighbour (a Conv2d/Linear/BatchNorm and the ReLU after
    it, a ReLU and the max pooling after it), which would skip that forward or backward. (A forward replaced on the
    instance, as summary and viz wrap it to record outputs, still fuses: the wrapper passes activation= on.)"""
    return _overrides(module, "forward", "backward")


def _fused(layer, relu) -> bool:
    """Whether the container runs layer and the ReLU after it as one call (the ReLU in the layer's epilogue)."""
    return (isinstance(relu, ReLU) and getattr(layer, "fuses_relu", False) and not _own_passes(layer)
            and not _own_passes(relu))


def _first_output(step, x):
    """The step's output for x while a plan is built: the one a block's or container's step computed for x as it was
    built (its children's steps; taken, so not kept), else step(x)."""
    return step.__dict__.pop("built") if "built" in step.__dict__ else step(x)


def _add_steps(native, value, steps, shapes) -> int:
    """Add the native ops of steps (output shapes `shapes`) to a _core.NativePlan, the first reading its value
    `value`; returns the value the last defines. A step's `native` is (kind, *arguments) for the plan's
    add_<kind>(value, *arguments, shape), or ("steps", add) for a block or container adding its own:
    add(native, value) -> value."""
    for step, shape in zip(steps, shapes):
        kind, *args = step.native
        value = args[0](native, value) if kind == "steps" else getattr(native, "add_" + kind)(value, *args,
                                                                                            list(shape))
    return value


class _Replan(Exception):
    """A child without a step returned something other than what the plan was built on."""


class _Checked:
    """A child's own forward inside a plan, its output checked against the one seen when the plan was built (the
    steps after it rely on the shape, dtype and layout)."""

    __slots__ = ("forward", "shape", "dtype")

    def __init__(self, forward):
        self.forward, self.shape, self.dtype = forward, None, None

    def __call__(self, x):
        y = self.forward(x)
        if type(y) is not np.ndarray or y.shape != self.shape or y.dtype != self.dtype or not y.flags.c_contiguous:
            raise _Replan
        return y

    def first(self, x):
        """Run once while the plan is built; returns (y, whether steps can follow it)."""
        y = self.forward(x)
        if type(y) is not np.ndarray or not y.flags.c_contiguous:
            return y, False
        self.shape, self.dtype = y.shape, y.dtype
        return y, True


_TRAINING = operator.attrgetter("training")
_SHAPE = operator.attrgetter("shape")


def _in_training(module) -> bool:
    """Whether the module or any module inside it is in training mode."""
    return any(map(_TRAINING, module.modules()))


class _InOrder(Module):
    """Children run in registration order, backward in reverse.

    A Conv2d/Conv1d/Linear/BatchNorm followed by a ReLU runs as one call, the ReLU fused into the GEMM epilogue or
    the normalisation pass (the ReLU module still keeps the output its backward needs; a BatchNorm masks in its own
    backward, so that ReLU's backward is skipped). The backward of a ReLU followed by a max pooling masks the
    pooled gradient instead of the full one (MaxPool2d.backward_through_relu). In eval mode the forward runs a
    plan (_Plan) built on the first call for an input shape and dtype: each child validated once, then called
    straight into the kernels (the whole chain in one C++ call where every child allows it, nested containers and
    residual blocks included); rebuilt whenever the input shape or dtype, a module's mode or public attribute (an
    option, a parameter replaced or removed, a child) anywhere inside, a parameter's or buffer's array, or an
    array's shape changes (arrays updated in place are used as they are)."""

    def _add_children(self, layers) -> None:
        """The constructor's (name, layer) pairs registered in order, each checked as setattr checks a new child (a
        Module, under a name state_dict keys can tell apart, holding no module instance already in the model), the
        instances seen kept from child to child: setattr's check walked every child before it (a Sequential of 2000
        layers took 0.8 s to build; now 4 ms)."""
        seen = {}
        check_distinct(type(self).__name__, [("", self)], seen)
        for name, layer in layers:
            if not isinstance(layer, Module):
                raise TypeError(f"{type(self).__name__} children must be Modules, got {type(layer).__name__} "
                                f"for {name!r}")
            self._check_new_name(name, "child module")
            check_distinct(type(self).__name__, layer.named_modules(name), seen)
            self._modules[name] = layer
            object.__setattr__(self, name, layer)

    def __len__(self):
        return len(self._modules)

    def __getitem__(self, i):
        """The child at position i; a slice gives a new container of the same kind (Sequential or Chain) holding
        those children under their names, as PyTorch's does (the same module instances, not copies), in this
        container's mode (an eval model's slice runs its eval plan)."""
        if not isinstance(i, slice):
            return list(self._modules.values())[i]
        part = Sequential() if isinstance(self, Sequential) else Chain()
        # registered directly: distinct already (children of one model), and no model's plan depends on the new
        # container (setattr would count an edit, which makes every container re-plan)
        for name, layer in list(self._modules.items())[i]:
            part._modules[name] = layer
            object.__setattr__(part, name, layer)
        object.__setattr__(part, "training", self.training)
        return part

    def __iter__(self):
        return iter(self._modules.values())

    def __setattr__(self, name, value):
        was_child = name in self._modules
        super().__setattr__(name, value)
        if was_child or name in self._modules:  # a child added, replaced or removed
            self._forget_plan()

    def __delattr__(self, name):
        was_child = name in self._modules
        super().__delattr__(name)
        if was_child:
            self._forget_plan()

    def _forget_plan(self):
        """Drop the eval plan and the schedule, both made for the children as they were."""
        object.__setattr__(self, "_plan", None)
        object.__setattr__(self, "_scheduled", None)

    def forward(self, x):
        plan = self.__dict__.get("_plan")
        kept = keeping()  # run by a training-mode model: every child keeps what its backward needs
        if (plan is not None and not self.training and not kept and type(x) is np.ndarray and x.flags.c_contiguous
                and plan.valid_for(x)):
            try:
                return plan.native.run(x) if plan.native is not None else _run_steps(plan.steps, x)
            except (_Replan, _core.StalePlanError):
                object.__setattr__(self, "_plan", None)
        if kept or _in_training(self) or type(x) is not np.ndarray or not x.flags.c_contiguous:
            if self.__dict__.get("_distinct_at") != Module._edits:  # a module added deeper inside since the last check
                check_distinct(type(self).__name__, self.named_modules())
                object.__setattr__(self, "_distinct_at", Module._edits)
            return self._run(x, self._schedule()[0])
        return self._plan_and_run(x, tuple(self._modules.values()))[0]

    def _inference_step(self, x, relu=False):
        """As a child of another container: this container's plan for x (built here) as one step, its steps'
        native ops joined to the outer plan's. None where x runs unplanned."""
        if _in_training(self):
            return None
        # the plan this call built, not the one kept in self._plan when the call returns: another thread's build for
        # another shape may have replaced that one meanwhile (the outer plan then took that shape's steps: outputs
        # of the other shape, or native steps writing past their buffers)
        y, plan = self._plan_and_run(x, tuple(self._modules.values()))
        if plan is None:
            return None
        steps, shapes = plan.steps, plan.out_shapes
        run = lambda x: _run_steps(steps, x)
        run.built = y  # x's output, taken by the plan being built
        if _all_native(steps):
            run.native = ("steps", lambda native, value: _add_steps(native, value, steps, shapes))
        return run

    @staticmethod
    def _pairs(layers):
        """(layer, the ReLU fused into it or None, the index of the layer after them), in order."""
        i = 0
        while i < len(layers):
            layer, nxt = layers[i], layers[i + 1] if i + 1 < len(layers) else None
            fused = _fused(layer, nxt)
            i += 2 if fused else 1
            yield layer, nxt if fused else None, i

    def _schedule(self):
        """(forward pairs, backward steps) of the children, worked out once (until a child is added or replaced).

        Forward: (layer, the ReLU fused into it or None) in order. Backward, in reverse: (layer, whether the ReLU
        before it is folded into its backward (backward_through_relu), whether it is the first child); a ReLU fused
        into a layer that masks in its own backward has no step."""
        order = self.__dict__.get("_scheduled")
        if order is None:
            layers = tuple(self._modules.values())
            pairs = [(layer, relu) for layer, relu, _ in self._pairs(layers)]
            steps, i = [], len(layers) - 1
            while i >= 0:
                if (i > 0 and isinstance(layers[i - 1], ReLU) and isinstance(layers[i], _MaxPoolNd)
                        and not _own_passes(layers[i - 1]) and not _own_passes(layers[i])):
                    steps.append((layers[i], True, i == 1))
                    i -= 2
                elif i > 0 and _fused(layers[i - 1], layers[i]) and getattr(layers[i - 1], "masks_fused_relu", False):
                    i -= 1
                else:
                    steps.append((layers[i], False, i == 0))
                    i -= 1
            order = (pairs, steps)
            object.__setattr__(self, "_scheduled", order)
        return order

    @staticmethod
    def _run(x, pairs):
        for layer, relu in pairs:
            x = relu.adopt_output(layer.forward(x, activation="relu")) if relu else layer.forward(x)
        return x

    def _plan_and_run(self, x, layers):
        """(the output for x, the plan built for x and kept as self._plan; None where x runs unplanned)."""
        object.__setattr__(self, "_plan", None)  # a build that fails leaves no plan behind
        plan = _Plan(x, layers)
        for layer, relu, after in self._pairs(layers):
            pair = (layer, relu) if relu else (layer,)
            patched = any(_runs_own_forward(m) for module in pair for m in module.modules())
            # a step binds the parameter arrays themselves: one that validation would copy runs unplanned
            copied = not all(isinstance(p.data, np.ndarray) and p.data.flags.c_contiguous for p in layer.parameters())
            step = None if patched or copied else layer._inference_step(x, relu=relu is not None)
            if step is None:
                step = _Checked(functools.partial(self._run, pairs=[(layer, relu)]))
                x, plannable = step.first(x)
                if not plannable:  # not an array a step could take: this input runs layer by layer, unplanned
                    return self._run(x, [(layer, relu) for layer, relu, _ in self._pairs(layers[after:])]), None
            else:
                x = _first_output(step, x)
            plan.steps.append(step)
            plan.out_shapes.append(x.shape)
        plan.go_native(frozen=self.__dict__.get("_frozen", False))
        object.__setattr__(self, "_plan", plan)
        return x, plan

    def _release(self):
        object.__setattr__(self, "_plan", None)  # eval() starts from a fresh plan

    def backward(self, dy, input_grad: bool = True):
        for layer, through_relu, first in self._schedule()[1]:
            if through_relu:
                dy = layer.backward_through_relu(dy)  # the ReLU's backward too, on the pooled gradient
            else:
                dy = layer.backward(dy, input_grad=input_grad or not first)
                if dy is None and not first:
                    raise ValueError(no_input_gradient(layer))
        return dy


class Sequential(_InOrder):
    """Positional children, named "0", "1", ... like PyTorch's."""

    def __init__(self, *layers: Module):
        super().__init__()
        self._add_children((str(i), layer) for i, layer in enumerate(layers))


class Chain(_InOrder):
    """Named children (keyword arguments), as torchvision models name theirs: Chain(features=..., fc=...)."""

    def __init__(self, **layers: Module):
        super().__init__()
        self._add_children(layers.items())
