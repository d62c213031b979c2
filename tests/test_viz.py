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


def test_the_path_returned_is_the_file_written(tmp_path):
    # savefig adds ".png" to a path without a suffix: the path given came back, naming no file (or a folder)
    model = cc.models.lenet5(seed=0)
    history = History(loss=[2.0, 1.0], accuracy=[0.3, 0.6])
    (tmp_path / "taken").mkdir()
    for written, want in ((viz.plot_history(history, tmp_path / "curves"), tmp_path / "curves.png"),
                          (viz.plot_filters(model, tmp_path / "taken"), tmp_path / "taken.png")):
        assert written == want and _is_png(written)


def test_curves_of_a_run_validated_in_some_epochs(tmp_path):
    # None for an epoch without validation (fit keeps one entry an epoch); lists that cover fewer epochs cannot be
    # placed (matplotlib's ValueError before)
    history = History(loss=[2.0, 1.5, 1.0], accuracy=[0.3, 0.5, 0.6], val_loss=[None, 1.1, None],
                      val_accuracy=[None, 0.55, None])
    assert _is_png(viz.plot_history(history, tmp_path / "curves.png"))
    history.val_loss, history.val_accuracy = [1.1], [0.55]
    with pytest.raises(ValueError, match="history.val_loss has 1 entries for 3 epochs of loss"):
        viz.plot_history(history, tmp_path / "curves.png")


def test_bad_requests(tmp_path):
    model = cc.models.lenet5(seed=0)
    with pytest.raises(ValueError, match="layer 'nope' not found"):
        viz.plot_activations(model, np.zeros((1, 28, 28)), "nope", tmp_path / "x.png")
    with pytest.raises(ValueError, match="outputs shape .* not feature maps"):
        viz.plot_activations(model, np.zeros((1, 28, 28)), "7", tmp_path / "x.png")
    with pytest.raises(ValueError, match=r"layer '6' outputs shape \(400,\), not feature maps"):  # said ()
        viz.plot_activations(model, np.zeros((1, 28, 28)), "6", tmp_path / "x.png")
    with pytest.raises(ValueError, match="the model has no Conv2d layer"):
        viz.plot_filters(cc.nn.Sequential(cc.nn.Linear(2, 3)), tmp_path / "x.png")
    # each raised an error naming nothing (AttributeError; numpy's "could not convert string to float")
    with pytest.raises(TypeError, match="model must be a convcore.nn.Module, got str"):
        viz.plot_filters("x", tmp_path / "x.png")
    with pytest.raises(TypeError, match="image must be a numpy array of numbers .*, got str"):
        viz.plot_activations(model, "abc", "0", tmp_path / "x.png")
    with pytest.raises(TypeError, match="history must be a History .*, got dict"):
        viz.plot_history({"loss": [1.0]}, tmp_path / "x.png")


def test_activation_maps_match_the_layer_output_and_rgb_filters(tmp_path, monkeypatch):
    model = cc.models.lenet5(seed=0)
    image = np.random.default_rng(1).random((1, 28, 28), dtype=np.float32)
    shown = []
    monkeypatch.setattr(viz, "_grid", lambda images, path, title, cmap="gray": shown.append((images, title)) or path)
    viz.plot_activations(model, image, "0", tmp_path / "a.png")
    maps, title = shown[-1]
    model.eval()
    expected = cc.functional.relu(model[0](image[None]))[0]  # layer 0 runs with its ReLU fused
    assert "after the fused relu" in title and np.array_equal(np.stack(maps), expected)
    viz.plot_filters(cc.models.resnet20(seed=0), tmp_path / "f.png")
    filters, title = shown[-1]
    assert len(filters) == 16 and filters[0].shape == (3, 3, 3) and "16 filters 3x3" in title
    assert all(f.min() == 0 and f.max() == 1 for f in filters if np.ptp(f) > 0)


def test_activation_maps_of_a_fused_relu_and_of_a_float64_model(tmp_path, monkeypatch):
    shown = []
    monkeypatch.setattr(viz, "_grid", lambda images, path, title, cmap="gray": shown.append((images, title)) or path)
    image = np.random.default_rng(2).random((1, 28, 28))
    model = cc.models.lenet5(seed=0)
    model[1].eval()  # mixed modes: each module's own is restored
    viz.plot_activations(model, image, "1", tmp_path / "relu.png")  # the ReLU fused into conv "0"
    maps, title = shown[-1]
    assert [m.training for m in model][:3] == [True, False, True]
    model.eval()
    expected = cc.functional.relu(model[0](image[None].astype(np.float32)))[0]
    assert title == "1: 6 activation maps 28x28" and np.array_equal(np.stack(maps), expected)
    model64 = cc.models.lenet5(seed=0).to(np.float64)
    viz.plot_activations(model64, image, "0", tmp_path / "conv64.png")
    maps, title = shown[-1]
    model64.eval()
    expected = cc.functional.relu(model64[0](image[None]))[0]
    assert np.stack(maps).dtype == np.float64 and np.array_equal(np.stack(maps), expected)


def test_missing_matplotlib_says_how_to_install_it(tmp_path, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(ImportError, match=r"pip install 'convcore\[viz\]'"):
        viz.plot_history(History(loss=[1.0], accuracy=[0.5]), tmp_path / "c.png")


def test_activation_maps_of_a_blocks_last_batch_norm_say_the_shortcut_was_added(tmp_path, monkeypatch):
    # a BasicBlock's bn2 adds the block's shortcut and applies the ReLU in one step: its maps are the block's output,
    # which the title said only of the ReLU
    shown = []
    monkeypatch.setattr(viz, "_grid", lambda images, path, title, cmap="gray": shown.append((images, title)) or path)
    model = cc.models.resnet20(seed=0)
    image = np.random.default_rng(0).random((3, 32, 32), dtype=np.float32)
    viz.plot_activations(model, image, "layer1.0.bn2", tmp_path / "bn2.png")
    maps, title = shown[-1]
    model.eval()
    stem = model.relu(model.bn1(model.conv1(image[None])))
    assert title.startswith("layer1.0.bn2 (after the block's shortcut added and the fused relu): 16 activation maps")
    assert np.array_equal(np.stack(maps), model.layer1[0](stem)[0])
