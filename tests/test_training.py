"""fit / evaluate / predict: sanity (initial loss, overfitting), the NaN guard, checkpoints (round trip, malformed
files, crash safety) and exact resume."""
import json
import math
import os

import numpy as np
import pytest

import convcore as cc
from convcore import checkpoint, training

pytest.importorskip("safetensors")


def tiny_data(n=64, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.random((n, 1, 12, 12), dtype=np.float32)
    y = rng.integers(0, 10, n).astype(np.int64)
    return x, y


def _tiny_model(seed=0):
    return cc.nn.Sequential(cc.nn.Conv2d(1, 4, 3, padding=1, rng=seed), cc.nn.ReLU(), cc.nn.MaxPool2d(2),
                            cc.nn.Flatten(), cc.nn.Dropout(0.2, rng=seed + 1), cc.nn.Linear(144, 10, rng=seed + 2))


def setup_tiny(seed=0):
    model = _tiny_model(seed)
    return model, cc.nn.CrossEntropyLoss(), cc.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)


def test_initial_loss_is_about_log_classes():
    model = cc.models.lenet5(seed=0)
    x = np.random.default_rng(0).random((256, 1, 28, 28), dtype=np.float32)
    y = np.random.default_rng(1).integers(0, 10, 256)
    value, _ = training.evaluate(model, x, y, cc.nn.CrossEntropyLoss())
    assert abs(value - math.log(10)) < 0.15


def test_overfits_twenty_samples():
    x, y = tiny_data(20)
    model = cc.nn.Sequential(cc.nn.Conv2d(1, 8, 3, padding=1, rng=0), cc.nn.ReLU(), cc.nn.Flatten(),
                             cc.nn.Linear(8 * 144, 10, rng=1))
    opt = cc.optim.Adam(model.parameters(), lr=0.01)
    history = training.fit(model, cc.nn.CrossEntropyLoss(), opt, (x, y), epochs=60, batch_size=20, progress=False)
    assert history.loss[-1] < 0.05 and history.accuracy[-1] == 1.0
    assert training.evaluate(model, x, y)[1] == 1.0


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_nan_or_inf_loss_stops_within_the_step_and_keeps_the_checkpoint(tmp_path, bad):
    model, loss, opt = setup_tiny()
    x, y = tiny_data()
    training.fit(model, loss, opt, (x, y), epochs=1, batch_size=16, checkpoint_dir=tmp_path, progress=False)
    x_bad = x.copy()
    x_bad[20] = bad  # lands in some batch of epoch 2; the batches before it train and are checkpointed
    with pytest.raises(FloatingPointError, match=r"loss is (nan|inf) at epoch 2, batch \d"):
        training.fit(model, loss, opt, (x_bad, y), epochs=2, batch_size=16, checkpoint_dir=tmp_path,
                     checkpoint_every=1, resume=True, progress=False)
    newest = checkpoint.latest(tmp_path)
    assert checkpoint.read_state(newest)["step"] == opt.step_count  # the last good step, not the failing one
    for k, v in checkpoint_state(newest).items():
        assert np.array_equal(model.state_dict()[k], v), k  # the failing step changed nothing


def checkpoint_state(folder):
    from safetensors.numpy import load_file

    return {k[len("model."):]: v for k, v in load_file(folder / "tensors.safetensors").items()
            if k.startswith("model.")}


def test_resume_refuses_a_different_data_order(tmp_path):
    model, loss, opt = setup_tiny()
    x, y = tiny_data()
    training.fit(model, loss, opt, (x, y), epochs=1, batch_size=16, seed=1, checkpoint_dir=tmp_path, progress=False)
    other, loss2, opt2 = setup_tiny(seed=9)
    before = {k: v.copy() for k, v in other.state_dict().items()}
    for change in ({"seed": 2}, {"batch_size": 32}, {"augment": {"flip": True}}):
        kwargs = {"epochs": 2, "batch_size": 16, "seed": 1, **change}
        with pytest.raises(ValueError, match="resume: the checkpoint .* was written for the data order"):
            training.fit(other, loss2, opt2, (x, y), checkpoint_dir=tmp_path, resume=True, progress=False, **kwargs)
    assert all(np.array_equal(v, before[k]) for k, v in other.state_dict().items())


def test_exact_resume_is_bitwise_equal(tmp_path):
    x, y = tiny_data(80)
    kwargs = dict(epochs=3, batch_size=16, seed=7, progress=False, augment={"flip": True})
    model_a, loss_a, opt_a = setup_tiny()
    hist_a = training.fit(model_a, loss_a, opt_a, (x, y), **kwargs)
    # interrupted run: checkpoints every 3 steps, killed during step 8 (the newest checkpoint is from step 6, in
    # epoch 2); then a fresh model and optimizer resume from it
    model_b, loss_b, opt_b = setup_tiny()
    calls = {"n": 0}
    original_step = opt_b.step

    def interrupting_step():
        original_step()
        calls["n"] += 1
        if calls["n"] == 8:
            raise KeyboardInterrupt
    opt_b.step = interrupting_step
    with pytest.raises(KeyboardInterrupt):
        training.fit(model_b, loss_b, opt_b, (x, y), checkpoint_dir=tmp_path, checkpoint_every=3, **kwargs)
    meta = json.loads((checkpoint.latest(tmp_path) / "state.json").read_text())
    assert meta["step"] == 6 and meta["epoch"] == 1 and meta["batch"] == 1
    model_c, loss_c, opt_c = setup_tiny(seed=99)  # different initial weights: all must come from the checkpoint
    hist_c = training.fit(model_c, loss_c, opt_c, (x, y), checkpoint_dir=tmp_path, resume=True, **kwargs)
    for (name, a), c in zip(model_a.state_dict().items(), model_c.state_dict().values()):
        assert np.array_equal(a, c), name
    assert hist_a.loss == hist_c.loss and hist_a.accuracy == hist_c.accuracy


def test_fit_argument_errors():
    model, loss, opt = setup_tiny()
    x, y = tiny_data()
    with pytest.raises(TypeError, match=r"train_data must be a tuple \(x, y\)"):
        training.fit(model, loss, opt, x, progress=False)
    with pytest.raises(ValueError, match="epochs must be >= 1, got 0"):
        training.fit(model, loss, opt, (x, y), epochs=0, progress=False)
    with pytest.raises(ValueError, match=r"labels must be in \[0, 10\)"):
        training.fit(model, loss, opt, (x, y + 10), progress=False)
