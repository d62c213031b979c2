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


def _tiny_data(n=64, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.random((n, 1, 12, 12), dtype=np.float32)
    y = rng.integers(0, 10, n).astype(np.int64)
    return x, y


def _tiny_model(seed=0):
    return cc.nn.Sequential(cc.nn.Conv2d(1, 4, 3, padding=1, rng=seed), cc.nn.ReLU(), cc.nn.MaxPool2d(2),
                            cc.nn.Flatten(), cc.nn.Dropout(0.2, rng=seed + 1), cc.nn.Linear(144, 10, rng=seed + 2))


def _setup(seed=0):
    model = _tiny_model(seed)
    return model, cc.nn.CrossEntropyLoss(), cc.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)


def test_initial_loss_is_about_log_classes():
    model = cc.models.lenet5(seed=0)
    x = np.random.default_rng(0).random((256, 1, 28, 28), dtype=np.float32)
    y = np.random.default_rng(1).integers(0, 10, 256)
    value, _ = training.evaluate(model, x, y, cc.nn.CrossEntropyLoss())
    assert abs(value - math.log(10)) < 0.15


def test_overfits_twenty_samples():
    x, y = _tiny_data(20)
    model = cc.nn.Sequential(cc.nn.Conv2d(1, 8, 3, padding=1, rng=0), cc.nn.ReLU(), cc.nn.Flatten(),
                             cc.nn.Linear(8 * 144, 10, rng=1))
    opt = cc.optim.Adam(model.parameters(), lr=0.01)
    history = training.fit(model, cc.nn.CrossEntropyLoss(), opt, (x, y), epochs=60, batch_size=20, progress=False)
    assert history.loss[-1] < 0.05 and history.accuracy[-1] == 1.0
    assert training.evaluate(model, x, y)[1] == 1.0


def test_nan_loss_stops_within_the_step_and_keeps_the_checkpoint(tmp_path):
    model, loss, opt = _setup()
    x, y = _tiny_data()
    training.fit(model, loss, opt, (x, y), epochs=1, batch_size=16, checkpoint_dir=tmp_path, progress=False)
    saved = checkpoint.latest(tmp_path)
    weights = model.state_dict()["5.weight"].copy()
    x_bad = x.copy()
    x_bad[20] = np.nan  # the second batch of epoch 2's order holds it somewhere: any batch with it fails
    with pytest.raises(FloatingPointError, match="loss is nan at epoch 2"):
        training.fit(model, loss, opt, (x_bad, y), epochs=2, batch_size=64, checkpoint_dir=tmp_path, resume=True,
                     progress=False)
    assert np.array_equal(model.state_dict()["5.weight"], weights)  # the failing step updated nothing
    assert checkpoint.latest(tmp_path) == saved


def test_exact_resume_is_bitwise_equal(tmp_path):
    x, y = _tiny_data(80)
    kwargs = dict(epochs=3, batch_size=16, seed=7, progress=False, augment={"flip": True})
    model_a, loss_a, opt_a = _setup()
    hist_a = training.fit(model_a, loss_a, opt_a, (x, y), **kwargs)
    # interrupted run: checkpoints every 3 steps, killed during step 8 (the newest checkpoint is from step 6, in
    # epoch 2); then a fresh model and optimizer resume from it
    model_b, loss_b, opt_b = _setup()
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
    model_c, loss_c, opt_c = _setup(seed=99)  # different initial weights: all must come from the checkpoint
    hist_c = training.fit(model_c, loss_c, opt_c, (x, y), checkpoint_dir=tmp_path, resume=True, **kwargs)
    for (name, a), c in zip(model_a.state_dict().items(), model_c.state_dict().values()):
        assert np.array_equal(a, c), name
    assert hist_a.loss == hist_c.loss and hist_a.accuracy == hist_c.accuracy


def test_checkpoint_round_trip_and_keep(tmp_path):
    model, loss, opt = _setup()
    x, y = _tiny_data()
    training.fit(model, loss, opt, (x, y), epochs=2, batch_size=16, checkpoint_dir=tmp_path, progress=False)
    assert [p.name for p in tmp_path.glob("step-*")] == ["step-00000008"]
    other, _, opt2 = _setup(seed=5)
    meta = checkpoint.load(tmp_path, other, opt2)
    assert meta["epoch"] == 2 and len(meta["history"]["loss"]) == 2
    for a, b in zip(model.state_dict().values(), other.state_dict().values()):
        assert np.array_equal(a, b)
    assert opt2.step_count == 8 and set(opt2.buffers) == set(opt.buffers)


def _saved(tmp_path):
    model, loss, opt = _setup()
    checkpoint.save(tmp_path, model, opt, {"step": 1})
    return checkpoint.latest(tmp_path)


def _tensor_file_with_header(header: dict, body: bytes = b"") -> bytes:
    raw = json.dumps(header).encode()
    return len(raw).to_bytes(8, "little") + raw + body


MALFORMED = {
    "truncated": lambda p: (p / "tensors.safetensors").write_bytes((p / "tensors.safetensors").read_bytes()[:100]),
    "oversized header": lambda p: (p / "tensors.safetensors").write_bytes((2**40).to_bytes(8, "little") + b"{}"),
    "overlapping offsets": lambda p: (p / "tensors.safetensors").write_bytes(_tensor_file_with_header(
        {"model.0.weight": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
         "model.0.bias": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}}, bytes(12))),
    "gapped offsets": lambda p: (p / "tensors.safetensors").write_bytes(_tensor_file_with_header(
        {"model.0.weight": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}}, bytes(8))),
    "shape product overflow": lambda p: (p / "tensors.safetensors").write_bytes(_tensor_file_with_header(
        {"model.0.weight": {"dtype": "F32", "shape": [2**32, 2**32, 2**32], "data_offsets": [0, 8]}}, bytes(8))),
    "wrong dtype": lambda p: _edit_manifest(p, "model.0.bias", dtype="float64"),
    "shape mismatch in manifest": lambda p: _edit_manifest(p, "model.0.bias", shape=[5]),
    "bad json": lambda p: (p / "state.json").write_text("{not json"),
    "not our format": lambda p: (p / "state.json").write_text(json.dumps({"format": "other"})),
    "missing key": lambda p: _drop_tensor(p, "model.0.bias"),
    "pointer to nowhere": lambda p: (p.parent / "latest").write_text("step-99999999"),
}


def _edit_manifest(folder, key, **change):
    meta = json.loads((folder / "state.json").read_text())
    meta["tensors"][key].update(change)
    (folder / "state.json").write_text(json.dumps(meta))


def _drop_tensor(folder, key):
    from safetensors.numpy import load_file, save_file

    tensors = load_file(folder / "tensors.safetensors")
    del tensors[key]
    save_file(tensors, folder / "tensors.safetensors")
    meta = json.loads((folder / "state.json").read_text())
    del meta["tensors"][key]
    (folder / "state.json").write_text(json.dumps(meta))


@pytest.mark.parametrize("damage", list(MALFORMED))
def test_malformed_checkpoints_are_rejected_and_leave_the_model_alone(tmp_path, damage):
    folder = _saved(tmp_path)
    MALFORMED[damage](folder)
    model, _, opt = _setup(seed=3)
    before = {k: v.copy() for k, v in model.state_dict().items()}
    with pytest.raises((ValueError, FileNotFoundError)):
        checkpoint.load(tmp_path, model, opt)
    for k, v in model.state_dict().items():
        assert np.array_equal(v, before[k])


def test_checkpoint_for_another_model_is_rejected(tmp_path):
    _saved(tmp_path)
    with pytest.raises(ValueError, match="does not fit the model"):
        checkpoint.load(tmp_path, cc.models.lenet5(), None)


def test_crash_before_the_pointer_moves_keeps_the_old_checkpoint(tmp_path, monkeypatch):
    model, _, opt = _setup()
    checkpoint.save(tmp_path, model, opt, {"step": 1})
    real_replace = os.replace

    def crash(src, dst):
        if str(dst).endswith("latest"):
            raise OSError("simulated crash between writing and renaming")
        return real_replace(src, dst)
    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="simulated crash"):
        checkpoint.save(tmp_path, model, opt, {"step": 2})
    monkeypatch.setattr(os, "replace", real_replace)
    assert checkpoint.latest(tmp_path).name == "step-00000001"
    assert checkpoint.load(tmp_path, _setup(seed=4)[0], None)["step"] == 1


def test_fit_argument_errors():
    model, loss, opt = _setup()
    x, y = _tiny_data()
    with pytest.raises(TypeError, match=r"train_data must be a tuple \(x, y\)"):
        training.fit(model, loss, opt, x, progress=False)
    with pytest.raises(ValueError, match="epochs must be >= 1, got 0"):
        training.fit(model, loss, opt, (x, y), epochs=0, progress=False)
    with pytest.raises(ValueError, match=r"labels must be in \[0, 10\)"):
        training.fit(model, loss, opt, (x, y + 10), progress=False)
