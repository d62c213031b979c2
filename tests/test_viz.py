"""PNG figures: first-layer filters, activation maps, training curves."""
import numpy as np
import pytest

import convcore as cc
from convcore import viz
from convcore.training import History

pytest.importorskip("matplotlib")


def _is_png(path):
    return path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 1000


def test_filters_activations_and_curves(tmp_path):
    model = cc.models.lenet5(seed=0)
    assert _is_png(viz.plot_filters(model, tmp_path / "filters.png"))
    image = np.random.default_rng(0).random((1, 28, 28), dtype=np.float32)
    assert _is_png(viz.plot_activations(model, image, "0", tmp_path / "maps.png"))
    history = History(loss=[2.0, 1.0], accuracy=[0.3, 0.6], val_loss=[1.5, 1.1], val_accuracy=[0.4, 0.55])
    assert _is_png(viz.plot_history(history, tmp_path / "sub" / "curves.png"))
    assert model.training  # restored after the activation pass


def test_bad_requests(tmp_path):
    model = cc.models.lenet5(seed=0)
    with pytest.raises(ValueError, match="layer 'nope' not found"):
        viz.plot_activations(model, np.zeros((1, 28, 28)), "nope", tmp_path / "x.png")
    with pytest.raises(ValueError, match="outputs shape .* not feature maps"):
        viz.plot_activations(model, np.zeros((1, 28, 28)), "7", tmp_path / "x.png")
    with pytest.raises(ValueError, match="the model has no Conv2d layer"):
        viz.plot_filters(cc.nn.Sequential(cc.nn.Linear(2, 3)), tmp_path / "x.png")
