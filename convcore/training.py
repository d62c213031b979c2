"""Training: fit (epochs of mini-batch SGD with validation, progress, checkpoints, exact resume), evaluate, predict."""
from __future__ import annotations

import contextlib
import json
import math
import os
import sys
import time
from dataclasses import asdict, dataclass, field

import numpy as np

from . import checkpoint
from ._runtime import ThreadChoice
from ._validate import as_bool, as_int
from .data import Batches
from .nn import Frozen, Module
from .nn.module import check_model, evaluating
from .optim.optimizers import Optimizer
from .optim.schedulers import _Scheduler


@dataclass
class History:
    """Per-epoch metrics of a fit: training loss and accuracy, validation loss and accuracy (if any), img/s, lr."""
    loss: list = field(default_factory=list)
    accuracy: list = field(default_factory=list)
    val_loss: list = field(default_factory=list)
    val_accuracy: list = field(default_factory=list)
    images_per_second: list = field(default_factory=list)
    lr: list = field(default_factory=list)

    def to_dict(self):
        return asdict(self)

    @classmethod
    def from_dict(cls, d):
        return cls(**{k: list(v) for k, v in d.items() if k in cls.__dataclass_fields__})


def _batches_of(data, batch_size, name, dtype):
    if not (isinstance(data, tuple) and len(data) == 2):
        raise TypeError(f"{name} must be a tuple (x, y) of numpy arrays, got {type(data).__name__}")
    return Batches(data[0], data[1], batch_size, shuffle=False, dtype=dtype)


def predict(model: Module | Frozen, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """The model's outputs for x in eval mode, computed in batches (each module's mode is restored afterwards); or
    a frozen model's (convcore.nn.freeze)."""
    batch_size = as_int(batch_size, "batch_size", minimum=1)
    if not isinstance(model, (Module, Frozen)):
        raise TypeError(f"model must be a convcore.nn.Module or a frozen one (convcore.nn.freeze), got "
                        f"{type(model).__name__}")
    if not isinstance(x, np.ndarray):
        raise TypeError(f"x must be a numpy array (N, ...), got {type(x).__name__}")
    if x.ndim < 2:
        raise ValueError(f"x must be a batch (N, ...) of at least 2 dimensions, got shape {x.shape}")
    if x.dtype.kind not in "biuf":
        raise TypeError(f"x must hold numbers, got dtype {x.dtype}")
    if isinstance(model, Frozen):
        return _in_batches(model, x, batch_size, model.dtype)
    with evaluating(model):
        return _in_batches(model, x, batch_size, model._compute_dtype())


def _in_batches(model, x, batch_size, dtype):
    outs = [model(np.ascontiguousarray(x[i:i + batch_size], dtype=dtype)) for i in range(0, len(x), batch_size)]
    if not outs:  # the output's trailing shape comes from one dummy image
        return np.zeros((0,) + model(np.zeros((1,) + x.shape[1:], dtype)).shape[1:], dtype)
    return np.concatenate(outs)


def evaluate(model: Module | Frozen, x: np.ndarray, y: np.ndarray, loss=None, batch_size: int = 256):
    """(mean loss or None, accuracy) of the model on (x, y) in eval mode (or of a frozen model); y holds integer
    class labels, each in [0, the model's number of outputs)."""
    if not isinstance(y, np.ndarray) or y.shape != (len(x),):
        raise ValueError(f"y must be a numpy array of shape ({len(x)},), got {getattr(y, 'shape', type(y))}")
    if y.dtype.kind not in "iu":
        raise TypeError(f"y must hold integer class labels, got dtype {y.dtype}")
    logits = predict(model, x, batch_size)
    if logits.ndim != 2:
        raise ValueError(f"evaluate needs a classifier, whose outputs are (N, classes); the model's are "
                         f"{logits.shape}")
    if len(y) and (y.min() < 0 or y.max() >= logits.shape[1]):
        raise ValueError(f"y must hold class labels in [0, {logits.shape[1]}) (the model's outputs), got labels "
                         f"from {y.min()} to {y.max()}")
    accuracy = float(np.mean(np.argmax(logits, axis=1) == y)) if len(y) else float("nan")
    value = None
    if loss is not None and len(y):
        value = float(loss(logits, y))
    return value, accuracy


def _generators(model):
    return [(name, m.rng) for name, m in model.named_modules() if isinstance(getattr(m, "rng", None),
                                                                          np.random.Generator)]


def _number(v) -> bool:
    """A number as JSON holds one (a diverged run's loss is NaN)."""
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _check_fit_state(checkpoint_dir, model, scheduler, data_order, batches_per_epoch) -> None:
    """What fit's newest checkpoint in checkpoint_dir saved for resuming, checked before anything is loaded: written
    by fit, for this model's generators and this call's data order (batches_per_epoch batches an epoch), each value as
    fit writes it (a ValueError names the file, the key and the rule)."""
    meta = checkpoint.read_state(checkpoint_dir)
    missing = [k for k in ("epoch", "batch", "step", "totals", "history", "rng", "data_order") if k not in meta]
    if missing:
        raise ValueError(f"resume: the checkpoint in {checkpoint_dir} lacks {missing}; it was not written by fit")
    generators = {name for name, _ in _generators(model)}
    rng = meta["rng"]
    if not isinstance(rng, dict) or set(rng) != generators:
        raise ValueError(f"resume: the checkpoint holds random generator states for "
                         f"{sorted(rng) if isinstance(rng, dict) else repr(rng)}, the model has generators in "
                         f"{sorted(generators)}")
    if meta["data_order"] != data_order:
        raise ValueError(f"resume: the checkpoint in {checkpoint_dir} was written for the data order "
                         f"{meta.get('data_order')}, this call asks for {data_order}; resuming would not continue "
                         f"the same run (pass the same data, batch_size, shuffle, seed and augment)")
    where = checkpoint.latest(checkpoint_dir) / "state.json"

    def refuse(key, value, rule):
        return ValueError(f"resume: {where}: {key} must be {rule}, got {value!r}")
    for key in ("epoch", "batch", "step"):
        if type(meta[key]) is not int or meta[key] < 0:
            raise refuse(key, meta[key], "an int >= 0")
    if meta["batch"] >= batches_per_epoch:  # the next batch of its epoch: fit writes the next epoch's 0 at an end
        raise refuse("batch", meta["batch"], f"an int < {batches_per_epoch} (the batches in an epoch)")
    totals = meta["totals"]
    if (not isinstance(totals, dict) or set(totals) != {"loss", "correct", "seen", "seconds"}
            or not all(_number(v) for v in totals.values())
            or not all(type(totals[k]) is int and totals[k] >= 0 for k in ("correct", "seen"))):
        raise refuse("totals", totals, "a dict of loss, correct, seen and seconds (counts as ints >= 0)")
    history = meta["history"]
    if (not isinstance(history, dict) or not set(history) <= set(History.__dataclass_fields__)
            or not all(isinstance(v, list) and all(_number(e) or e is None for e in v) for v in history.values())):
        raise refuse("history", history, f"a dict of lists of numbers under {sorted(History.__dataclass_fields__)}")
    for name, gen in _generators(model):
        try:  # a state the generator takes: tried on a copy
            probe = type(gen.bit_generator)()
            probe.state = meta["rng"][name]
        except (TypeError, ValueError, KeyError) as e:
            raise refuse(f"rng[{name!r}]", meta["rng"][name], f"the state of a {type(probe).__name__} ({e})") from e
    if isinstance(scheduler, _Scheduler) and meta.get("scheduler") is not None:  # another kind checks its own
        try:
            scheduler.checked_state(meta["scheduler"])
        except (TypeError, ValueError) as e:
            raise ValueError(f"resume: {where}: {e}") from e


def _progress_enabled(progress) -> bool:
    """Whether fit draws progress bars (progress: None, True or False), tqdm checked for before any work."""
    if progress is None:  # the bar is drawn on stderr; silent when either stream goes to a file or pipe
        return sys.stdout.isatty() and sys.stderr.isatty()
    if as_bool(progress, "progress"):
        try:
            import tqdm  # noqa: F401
        except ImportError as e:
            raise ImportError("progress bars need tqdm: pip install 'convcore[train]' (or pass progress=False)") from e
    return bool(progress)


def _progress(enabled, total, desc):
    if not enabled:
        return None
    from tqdm import tqdm
    return tqdm(total=total, desc=desc, unit="batch", leave=False, dynamic_ncols=True)


def _check_data(model, batches, val):
    """Before any training (val_data is evaluated after the first epoch: a bad one failed only after its updates):
    integer labels, a non-empty val_data, and every label within the model's outputs, taken from an eval forward of
    one sample of each set, which changes nothing and checks that the model takes val_data's samples."""
    for name, data in (("train_data", batches), ("val_data", val)):
        if data is not None and data.y.dtype.kind not in "iu":
            raise TypeError(f"{name}'s y must hold integer class labels, got dtype {data.y.dtype}")
    if val is not None and len(val.y) == 0:
        raise ValueError("val_data is empty")
    for name, data in (("train_data", batches), ("val_data", val)):
        if data is None:
            continue
        try:
            outputs = predict(model, data.x[:1]).shape
        except ValueError as e:
            raise ValueError(f"{name}: the model does not take its samples of shape {data.x.shape[1:]}: {e}") from e
        if len(outputs) != 2:
            raise ValueError(f"fit trains classifiers, whose outputs are (N, classes); the model's are {outputs}")
        classes = outputs[1]
        if data.y.min() < 0 or data.y.max() >= classes:
            raise ValueError(f"{name}'s y must hold class labels in [0, {classes}) (the model's outputs), got labels "
                             f"from {data.y.min()} to {data.y.max()}")


def _plain(value):
    """json's form of a numpy scalar or array, which Batches accepts for seed and augment's options (a checkpoint
    records them as the run's data order)."""
    if isinstance(value, (np.generic, np.ndarray)):
        return value.tolist()
    raise TypeError(f"seed and augment must hold numbers, sequences or numpy arrays, got {type(value).__name__}")


def fit(model: Module, loss, optimizer, train_data, epochs: int = 1, batch_size: int = 64, val_data=None,
        shuffle: bool = True, seed: int = 0, scheduler=None, checkpoint_dir=None, checkpoint_every: int | None = None,
        resume: bool = False, progress=None, on_epoch=None, augment: dict | None = None,
        keep_modes: bool = False, choose_threads: bool = True) -> History:
    """Train `model` for `epochs` on train_data = (x, y) and return its History.

    Each step: forward, loss, backward (the first layer's input gradient is skipped), optimizer step; with
    choose_threads (the default) the steps of full batches run on the thread count (get_num_threads or a halving)
    their steps have been timed fastest on (convcore.ThreadChoice; the results are the same on any), else every step
    on get_num_threads. The data order and augmentation come from `seed` (see convcore.data.Batches; `augment` takes
    its crop_padding, flip and normalize options). With checkpoint_dir, a checkpoint is written at the end of every
    epoch (and every `checkpoint_every` steps); resume=True continues from the newest one exactly as if never
    interrupted.
    A NaN or infinite loss raises FloatingPointError in that step, before any update or checkpoint. Every module is
    put in training mode (model.train()), or with keep_modes=True trains in the mode it is in (a BatchNorm kept in
    eval keeps its statistics frozen; gradients flow through it).
    progress: None (a tqdm bar when stdout and stderr are terminals), True or False. on_epoch(epoch, history) is called
    after each epoch. The arguments and data are checked before any training: among them every label of train_data
    and val_data against the model's outputs, taken from an eval forward of one sample."""
    check_model(model)
    epochs = as_int(epochs, "epochs", minimum=1)
    resume = as_bool(resume, "resume")
    progress = _progress_enabled(progress)
    if scheduler is not None:
        if not all(callable(getattr(scheduler, m, None)) for m in ("step", "state_dict", "load_state_dict")):
            raise TypeError(f"scheduler must have step(), state_dict() and load_state_dict() (a convcore.optim "
                            f"scheduler or one like it), got {scheduler!r}")
        if getattr(scheduler, "optimizer", optimizer) is not optimizer:
            raise ValueError("scheduler must set this optimizer's lr: it was made for another optimizer")
    if on_epoch is not None and not callable(on_epoch):
        raise TypeError(f"on_epoch must be a callable on_epoch(epoch, history) or None, got {on_epoch!r}")
    if not callable(loss) or not callable(getattr(loss, "backward", None)):
        raise TypeError(f"loss must be a loss module such as convcore.nn.CrossEntropyLoss() (called on the logits "
                        f"and labels, then loss.backward()), got {loss!r}")
    needed = ("step", "zero_grad") + (("state_dict", "load_state_dict") if checkpoint_dir is not None else ())
    if not all(callable(getattr(optimizer, m, None)) for m in needed):
        raise TypeError(f"optimizer must have {', '.join(m + '()' for m in needed)} (a convcore.optim optimizer or one "
                        f"like it), got {optimizer!r}")
    owned = {id(p) for p in model.parameters()}
    if isinstance(optimizer, Optimizer) and not any(id(p) in owned for p in optimizer.params):
        raise ValueError("optimizer updates none of the model's parameters: it was made for another model (make it "
                         "from model.parameters())")
    if checkpoint_dir is not None:
        if not isinstance(checkpoint_dir, (str, os.PathLike)):
            raise TypeError(f"checkpoint_dir must be a folder path (str or os.PathLike) or None, got {checkpoint_dir!r}")
        checkpoint.require_safetensors()
        if os.path.exists(checkpoint_dir) and not os.path.isdir(checkpoint_dir):
            raise ValueError(f"checkpoint_dir {os.fspath(checkpoint_dir)!r} is a file, not a folder")
    keep_modes = as_bool(keep_modes, "keep_modes")
    choose_threads = as_bool(choose_threads, "choose_threads")
    batch_size = as_int(batch_size, "batch_size", minimum=1)
    if checkpoint_every is not None:
        checkpoint_every = as_int(checkpoint_every, "checkpoint_every", minimum=1)
    if not (isinstance(train_data, tuple) and len(train_data) == 2):
        raise TypeError(f"train_data must be a tuple (x, y) of numpy arrays, got {type(train_data).__name__}")
    if augment is not None and (not isinstance(augment, dict) or set(augment) - {"crop_padding", "flip", "normalize"}):
        raise ValueError(f"augment must be a dict of Batches' crop_padding, flip and normalize options, got {augment!r}")
    dtype = model._compute_dtype()  # the batches', so that a model.to(np.float64) trains in float64
    batches = Batches(train_data[0], train_data[1], batch_size, shuffle=shuffle, seed=seed, **(augment or {}),
                      dtype=dtype)
    if len(batches) == 0:
        raise ValueError("train_data is empty")
    val = _batches_of(val_data, batch_size, "val_data", dtype) if val_data is not None else None
    _check_data(model, batches, val)

    augment = dict(augment or {})
    if augment.get("normalize") is not None:  # as the batches use them: in their dtype (float32: 0.1 and
        augment["normalize"] = [np.asarray(v, dtype).tolist() for v in augment["normalize"]]  # np.float32(0.1) alike
    data_order = json.loads(json.dumps({"samples": len(batches.x), "batch_size": batch_size, "shuffle": bool(shuffle),
                                        "seed": seed, "augment": augment}, default=_plain))
    history, epoch, start_batch = History(), 0, 0
    totals = {"loss": 0.0, "correct": 0, "seen": 0, "seconds": 0.0}
    step = 0
    if resume and checkpoint_dir is not None and checkpoint.latest(checkpoint_dir) is not None:
        _check_fit_state(checkpoint_dir, model, scheduler, data_order, len(batches))
        meta = checkpoint.load(checkpoint_dir, model, optimizer)
        history = History.from_dict(meta["history"])
        epoch, start_batch, step, totals = meta["epoch"], meta["batch"], meta["step"], meta["totals"]
        for name, gen in _generators(model):
            gen.bit_generator.state = meta["rng"][name]
        if scheduler is not None and meta.get("scheduler") is not None:
            scheduler.load_state_dict(meta["scheduler"])

    def save(next_epoch, next_batch):
        if checkpoint_dir is None:
            return
        checkpoint.save(checkpoint_dir, model, optimizer, {
            "step": step, "epoch": next_epoch, "batch": next_batch, "totals": totals,
            "history": history.to_dict(), "rng": {n: g.bit_generator.state for n, g in _generators(model)},
            "scheduler": scheduler.state_dict() if scheduler is not None else None, "data_order": data_order})

    if not keep_modes:
        model.train()
    elif not model.training:
        raise ValueError("keep_modes=True trains the model in its modules' own modes, but the model itself is in "
                         "eval mode: put it in training mode (model.train()), then the modules to keep in eval")
    choice = ThreadChoice() if choose_threads else None  # each full batch's step on the count timed fastest
    while epoch < epochs:
        bar = _progress(progress, len(batches) - start_batch, f"epoch {epoch + 1}/{epochs}")
        tick = time.perf_counter()  # img/s counts batching and augmentation too, not checkpoint writes
        for b, (xb, yb) in enumerate(batches.epoch(epoch, start_batch), start=start_batch):
            with choice if choice is not None and len(yb) == batch_size else contextlib.nullcontext():
                optimizer.zero_grad()
                logits = model(xb)
                value = loss(logits, yb)
                if not math.isfinite(value):
                    if bar is not None:
                        bar.close()
                    raise FloatingPointError(f"loss is {value} at epoch {epoch + 1}, batch {b + 1} (step {step + 1}): "
                                             f"training stopped before updating the model; the last checkpoint is "
                                             f"kept")
                model.backward(loss.backward(), input_grad=False)
                optimizer.step()
            step += 1
            totals["seconds"] += time.perf_counter() - tick
            totals["loss"] += value * len(yb)
            totals["correct"] += int(np.sum(np.argmax(logits, axis=1) == yb))
            totals["seen"] += len(yb)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{totals['loss'] / totals['seen']:.4f}",
                                acc=f"{totals['correct'] / totals['seen']:.4f}",
                                img_s=f"{totals['seen'] / max(totals['seconds'], 1e-9):.0f}")
            if checkpoint_every and step % checkpoint_every == 0 and b + 1 < len(batches):
                save(epoch, b + 1)
            tick = time.perf_counter()
        if bar is not None:
            bar.close()
        history.loss.append(totals["loss"] / totals["seen"])
        history.accuracy.append(totals["correct"] / totals["seen"])
        history.images_per_second.append(totals["seen"] / max(totals["seconds"], 1e-9))
        history.lr.append(float(optimizer.lr))
        if val is not None or history.val_loss:  # one entry an epoch, None where a run had no val_data then
            for values in (history.val_loss, history.val_accuracy):
                values[:0] = [None] * (len(history.loss) - 1 - len(values))
            v_loss, v_acc = (evaluate(model, val.x, val.y, loss, batch_size=max(batch_size, 256)) if val is not None
                             else (None, None))
            history.val_loss.append(v_loss)
            history.val_accuracy.append(v_acc)
        if scheduler is not None:
            scheduler.step()
        epoch, start_batch = epoch + 1, 0
        totals = {"loss": 0.0, "correct": 0, "seen": 0, "seconds": 0.0}
        save(epoch, 0)
        if on_epoch is not None:
            on_epoch(epoch, history)
    return history
