"""Looking inside (PNG files; matplotlib is an optional extra, used with the Agg backend): the first conv layer's
filters, a layer's activation maps for one image, and training curves."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from . import nn
from .nn.module import check_model, evaluating


def _pyplot():
    try:
        import matplotlib
    except ImportError as e:
        raise ImportError("plots need matplotlib: pip install 'convcore[viz]'") from e
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _save(plt, fig, path) -> Path:
    """Writes the figure and returns the file written: a path without a suffix gets ".png", as savefig's default
    format (the path given came back, naming no file, or a folder of that name)."""
    path = Path(path)
    if not path.suffix:
        path = path.with_name(path.name + ".png")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _grid(images, path, title, cmap="gray"):
    plt = _pyplot()
    n = len(images)
    cols = min(n, 8)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 1.2, rows * 1.2 + 0.4), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, img in zip(axes.flat, images):
        ax.imshow(img, cmap=cmap, interpolation="nearest")
    fig.suptitle(title)
    return _save(plt, fig, path)


def first_conv(model: nn.Module) -> nn.Conv2d:
    """The first Conv2d in named_modules() order."""
    check_model(model)
    for _, m in model.named_modules():
        if isinstance(m, nn.Conv2d):
            return m
    raise ValueError("the model has no Conv2d layer")


def plot_filters(model: nn.Module, path) -> Path:
    """The first Conv2d layer's filters as a grid (each filter scaled to its own range; RGB when it has 3 input
    channels, else the mean over input channels in grey)."""
    w = first_conv(model).weight.data
    images = []
    for f in w:
        img = f.transpose(1, 2, 0) if f.shape[0] == 3 else f.mean(axis=0)
        lo, hi = img.min(), img.max()
        images.append((img - lo) / (hi - lo) if hi > lo else np.zeros_like(img))
    return _grid(images, path, f"first conv layer: {w.shape[0]} filters {w.shape[2]}x{w.shape[3]}")


def plot_activations(model: nn.Module, image: np.ndarray, layer: str, path) -> Path:
    """The output channels of the named layer (a dotted name from named_modules) for one image (C, H, W), computed
    in eval mode (each module's mode is restored afterwards) in the model's dtype. Where the layer adds a residual
    block's shortcut or a fused ReLU to its own output (a BatchNorm ending a BasicBlock), the title says so: the maps
    are the block's output."""
    check_model(model)
    modules = dict(model.named_modules())
    if layer not in modules:
        raise ValueError(f"layer {layer!r} not found; layers: {[n for n in modules if n][:20]}...")
    if not isinstance(image, np.ndarray) or image.dtype.kind not in "biuf":
        raise TypeError(f"image must be a numpy array of numbers (C, H, W), got {type(image).__name__}"
                        + (f" of {image.dtype}" if isinstance(image, np.ndarray) else ""))
    image = np.asarray(image, model._compute_dtype())
    if image.ndim != 3:
        raise ValueError(f"image must be (C, H, W), got shape {image.shape}")
    target = modules[layer]
    captured = {}
    # a ReLU's output: ReLU.forward and the epilogue of a conv/linear it is fused into both end in adopt_output
    attr = "adopt_output" if isinstance(target, nn.ReLU) else "forward"
    original = getattr(target, attr)

    def capture(*args, **kwargs):
        captured["y"] = original(*args, **kwargs)
        captured["fused"] = kwargs.get("activation")  # Sequential fuses a following ReLU into conv/linear
        captured["residual"] = kwargs.get("residual") is not None  # a BasicBlock's bn2 adds its shortcut
        return captured["y"]
    object.__setattr__(target, attr, capture)
    try:
        with evaluating(model):
            model.forward(image[None])
    finally:
        del target.__dict__[attr]
    if "y" not in captured:
        raise ValueError(f"layer {layer!r} did not run in the forward pass")
    y = captured["y"][0]
    if y.ndim != 3:
        raise ValueError(f"layer {layer!r} outputs shape {y.shape}, not feature maps (C, H, W)")
    steps = []  # what the layer's step adds to its own output
    if captured["residual"]:
        steps.append("the block's shortcut added")
    if captured["fused"]:
        steps.append(f"the fused {captured['fused']}")
    after = f" (after {' and '.join(steps)})" if steps else ""
    return _grid(list(y), path, f"{layer}{after}: {y.shape[0]} activation maps {y.shape[1]}x{y.shape[2]}",
                 cmap="viridis")


def plot_history(history, path) -> Path:
    """Training curves: loss and accuracy per epoch (training and, if present, validation, None where an epoch had
    none: fit keeps one entry an epoch)."""
    if not all(isinstance(getattr(history, name, None), list) for name in ("loss", "accuracy", "val_loss",
                                                                            "val_accuracy")):
        raise TypeError(f"history must be a History (fit's result, with lists loss, accuracy, val_loss and "
                        f"val_accuracy), got {type(history).__name__}")
    epochs = len(history.loss)
    for name in ("accuracy", "val_loss", "val_accuracy"):
        entries = len(getattr(history, name))
        if entries != epochs and (entries or name == "accuracy"):
            raise ValueError(f"history.{name} has {entries} entries for {epochs} epochs of loss: which epochs "
                             f"they belong to is unknown")
    plt = _pyplot()
    values = lambda v: np.array([np.nan if e is None else e for e in v], float)  # None: no validation that epoch
    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.5))
    a.plot(range(1, epochs + 1), values(history.loss), "o-", label="train")
    b.plot(range(1, epochs + 1), values(history.accuracy), "o-", label="train")
    if history.val_loss:
        a.plot(range(1, epochs + 1), values(history.val_loss), "s-", label="validation")
        b.plot(range(1, epochs + 1), values(history.val_accuracy), "s-", label="validation")
    a.set(xlabel="epoch", ylabel="loss", title="loss")
    b.set(xlabel="epoch", ylabel="accuracy", title="accuracy")
    a.legend()
    b.legend()
    fig.tight_layout()
    return _save(plt, fig, path)
