"""Checkpoints: round trip, the malformed-file corpus (RELIABILITY row 12), and crash safety of the atomic save
(row 13): a crash at any point of a save leaves the previous checkpoint loadable."""
import json
import os

import numpy as np
import pytest

import convcore as cc
from convcore import checkpoint, training
from test_training import setup_tiny, tiny_data

pytest.importorskip("safetensors")


def test_checkpoint_round_trip_and_keep(tmp_path):
    model, loss, opt = setup_tiny()
    x, y = tiny_data()
    training.fit(model, loss, opt, (x, y), epochs=2, batch_size=16, checkpoint_dir=tmp_path, progress=False)
    assert [p.name for p in tmp_path.glob("step-*")] == ["step-00000008"]
    other, _, opt2 = setup_tiny(seed=5)
    meta = checkpoint.load(tmp_path, other, opt2)
    assert meta["epoch"] == 2 and len(meta["history"]["loss"]) == 2
    assert not {"format", "save_sequence", "optimizer", "tensors"} & set(meta)  # what save was given
    meta["run"] = "again"
    checkpoint.save(tmp_path, other, opt2, meta)  # a loaded state saved again
    assert checkpoint.read_state(tmp_path)["run"] == "again"
    for a, b in zip(model.state_dict().values(), other.state_dict().values()):
        assert np.array_equal(a, b)
    assert opt2.step_count == 8 and set(opt2.buffers) == set(opt.buffers)


def test_save_refuses_bad_arguments_before_writing(tmp_path):
    model, _, opt = setup_tiny()
    with pytest.raises(ValueError, match="keep must be >= 1, got 0"):
        checkpoint.save(tmp_path / "a", model, opt, {"step": 1}, keep=0)
    with pytest.raises(TypeError, match=r"state\['a'\] must be JSON-serialisable .* got ndarray"):
        checkpoint.save(tmp_path / "b", model, opt, {"step": 1, "a": np.ones(2)})
    with pytest.raises(ValueError, match=r"state\['step'\] must be >= 0, got -3"):
        checkpoint.save(tmp_path / "c", model, opt, {"step": -3})
    assert not any(tmp_path.iterdir())  # nothing written


def _saved(tmp_path):
    """A checkpoint after one SGD step (so the optimizer has momentum buffers)."""
    model, loss, opt = setup_tiny()
    x, y = tiny_data()
    training.fit(model, loss, opt, (x, y), epochs=1, batch_size=64, checkpoint_dir=tmp_path, progress=False)
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
    "extra key": lambda p: _put_tensor(p, "model.9.weight", np.zeros(3, np.float32)),
    "optimizer buffer of the wrong shape": lambda p: _put_tensor(p, _first_optimizer_tensor(p),
                                                                 np.zeros(3, np.float32)),
    "tensor file is not the manifest's": lambda p: _put_tensor(p, "model.0.bias", np.zeros(4, np.float64),
                                                               manifest=False),
    "manifest entry malformed": lambda p: _edit_manifest(p, "model.0.bias", shape=[-1]),
    "optimizer of another type": lambda p: _edit_state(p, optimizer={"type": "Adam", "hyper": {}, "step_count": 1}),
    "missing state file": lambda p: (p / "state.json").unlink(),
    "pointer to nowhere": lambda p: (p.parent / "latest").write_text("step-99999999"),
    "pointer not UTF-8": lambda p: (p.parent / "latest").write_bytes(b"step-\xff\xfe"),
    "optimizer entry null": lambda p: _edit_state(p, optimizer=None),
    "optimizer entry a list": lambda p: _edit_state(p, optimizer=["SGD"]),
}


def _edit_manifest(folder, key, **change):
    meta = json.loads((folder / "state.json").read_text())
    meta["tensors"][key].update(change)
    (folder / "state.json").write_text(json.dumps(meta))


def _edit_state(folder, **change):
    meta = json.loads((folder / "state.json").read_text())
    meta.update(change)
    (folder / "state.json").write_text(json.dumps(meta))


def _first_optimizer_tensor(folder):
    return next(k for k in json.loads((folder / "state.json").read_text())["tensors"] if k.startswith("optimizer."))


def _put_tensor(folder, key, value, manifest=True):
    from safetensors.numpy import load_file, save_file

    tensors = load_file(folder / "tensors.safetensors")
    tensors[key] = value
    save_file(tensors, folder / "tensors.safetensors")
    if manifest:
        _edit_manifest_entry(folder, key, {"shape": list(value.shape), "dtype": str(value.dtype)})


def _edit_manifest_entry(folder, key, entry):
    meta = json.loads((folder / "state.json").read_text())
    meta["tensors"][key] = entry
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
    model, _, opt = setup_tiny(seed=3)
    before = {k: v.copy() for k, v in model.state_dict().items()}
    with pytest.raises((ValueError, FileNotFoundError), match=str(tmp_path)):  # naming the file
        checkpoint.load(tmp_path, model, opt)
    for k, v in model.state_dict().items():
        assert np.array_equal(v, before[k])


def test_checkpoint_for_another_model_is_rejected(tmp_path):
    _saved(tmp_path)
    with pytest.raises(ValueError, match="does not fit the model"):
        checkpoint.load(tmp_path, cc.models.lenet5(), None)


def _crash_in(monkeypatch, module_attr, when):
    """Make os.<module_attr> raise when `when(args)` holds, as a kill at that moment would stop the save."""
    real = getattr(os, module_attr)

    def crashing(*args, **kwargs):
        if when(args):
            raise OSError(f"simulated crash in os.{module_attr}")
        return real(*args, **kwargs)
    monkeypatch.setattr(os, module_attr, crashing)


CRASH_POINTS = {
    "while writing the tensors": ("fsync", lambda args: True),
    "between the temp folder and its rename": ("rename", lambda args: ".step-" in str(args[0])),
    "before the pointer moves": ("replace", lambda args: str(args[1]).endswith("latest")),
}


@pytest.mark.parametrize("point", list(CRASH_POINTS))
def test_a_crash_during_save_keeps_the_old_checkpoint(tmp_path, monkeypatch, point):
    model, _, opt = setup_tiny()
    checkpoint.save(tmp_path, model, opt, {"step": 1})
    saved = {k: v.copy() for k, v in model.state_dict().items()}
    for p in model.parameters():
        p.data += 1
    with monkeypatch.context() as m:
        _crash_in(m, *CRASH_POINTS[point])
        with pytest.raises(OSError, match="simulated crash"):
            checkpoint.save(tmp_path, model, opt, {"step": 2})
    if point == "while writing the tensors":  # an error while writing (a full disk) left the temp folder for good
        assert list(tmp_path.glob(".step-*")) == []
    assert checkpoint.latest(tmp_path).name == "step-00000001"
    fresh = setup_tiny(seed=4)[0]
    assert checkpoint.load(tmp_path, fresh, None)["step"] == 1
    for k, v in fresh.state_dict().items():
        assert np.array_equal(v, saved[k]), k
    checkpoint.save(tmp_path, model, opt, {"step": 2})  # the leftovers of the crash do not block the next save
    assert checkpoint.read_state(tmp_path)["step"] == 2
    assert [p.name for p in tmp_path.glob("step-*")] == [checkpoint.latest(tmp_path).name]


def test_saving_the_same_step_again_never_deletes_the_current_checkpoint(tmp_path, monkeypatch):
    model, _, opt = setup_tiny()
    checkpoint.save(tmp_path, model, opt, {"step": 5, "run": "first"})
    with monkeypatch.context() as m:
        _crash_in(m, "replace", lambda args: str(args[1]).endswith("latest"))
        with pytest.raises(OSError, match="simulated crash"):
            checkpoint.save(tmp_path, model, opt, {"step": 5, "run": "second"})
    assert checkpoint.load(tmp_path, setup_tiny(seed=2)[0])["run"] == "first"
    checkpoint.save(tmp_path, model, opt, {"step": 5, "run": "third"})
    assert checkpoint.read_state(tmp_path)["run"] == "third"
    assert len(list(tmp_path.glob("step-*"))) == 1


def test_saved_files_hold_no_pickle_and_tensors_keep_their_dtype(tmp_path):
    model, loss, opt = setup_tiny()
    x, y = tiny_data()
    training.fit(model, loss, opt, (x, y), epochs=1, batch_size=32, checkpoint_dir=tmp_path, progress=False)
    folder = checkpoint.latest(tmp_path)
    assert sorted(p.name for p in folder.iterdir()) == ["state.json", "tensors.safetensors"]
    from safetensors.numpy import load_file

    tensors = load_file(folder / "tensors.safetensors")
    assert {k for k in tensors if k.startswith("model.")} == {f"model.{k}" for k in model.state_dict()}
    assert all(v.dtype == np.float32 for v in tensors.values())
    state = checkpoint.read_state(tmp_path)
    assert state["step"] == 2 and state["epoch"] == 1 and state["data_order"]["batch_size"] == 32


def test_round_trip_keeps_every_shape_and_dtype_including_0d_buffers(tmp_path):
    model, other = cc.models.resnet20(seed=0), cc.models.resnet20(seed=1)
    model(np.random.default_rng(0).random((2, 3, 32, 32), dtype=np.float32))  # BatchNorm counters move to 1
    checkpoint.save(tmp_path, model, None, {"step": 3})
    checkpoint.load(tmp_path, other)
    for (name, a), b in zip(model.state_dict().items(), other.state_dict().values()):
        assert a.shape == b.shape and a.dtype == b.dtype and np.array_equal(a, b), name
    assert any(v.shape == () for v in other.state_dict().values())


def test_keep_removes_the_earliest_saves_not_the_smallest_steps(tmp_path):
    model = cc.nn.Linear(2, 2, rng=0)
    checkpoint.save(tmp_path / "a", model, None, {"step": 500}, keep=2)  # an earlier run's checkpoint
    for step in (1, 2, 3):  # a new run in the same folder
        checkpoint.save(tmp_path / "a", model, None, {"step": step}, keep=2)
    assert sorted(p.name for p in (tmp_path / "a").glob("step-*")) == ["step-00000002", "step-00000003"]
    assert checkpoint.latest(tmp_path / "a").name == "step-00000003"
    assert checkpoint.read_state(tmp_path / "a" / "step-00000002")["save_sequence"] == 2
    assert checkpoint.read_state(tmp_path / "a")["save_sequence"] == 3
    for step in (99999999, 100000000, 100000001):  # past 8 digits the names no longer sort as the steps do
        checkpoint.save(tmp_path / "b", model, None, {"step": step}, keep=2)
    assert sorted(p.name for p in (tmp_path / "b").glob("step-*")) == ["step-100000000", "step-100000001"]


def test_keep_removes_folders_without_a_save_sequence_first_by_numeric_step(tmp_path):
    model = cc.nn.Linear(2, 2, rng=0)
    for step in (100000000, 99999999, 7):  # as an earlier version wrote them: no save sequence in state.json
        folder = checkpoint.save(tmp_path, model, None, {"step": step}, keep=3)
        state = json.loads((folder / "state.json").read_text())
        del state["save_sequence"]
        (folder / "state.json").write_text(json.dumps(state))
    checkpoint.save(tmp_path, model, None, {"step": 1}, keep=3)
    assert sorted(p.name for p in tmp_path.glob("step-*")) == ["step-00000001", "step-100000000", "step-99999999"]
    assert checkpoint.read_state(tmp_path)["save_sequence"] == 0
    checkpoint.save(tmp_path, model, None, {"step": 2}, keep=2)
    assert sorted(p.name for p in tmp_path.glob("step-*")) == ["step-00000001", "step-00000002"]


def test_save_refuses_state_keys_it_writes_itself(tmp_path):
    model = cc.nn.Linear(2, 2, rng=0)
    for key in ("format", "save_sequence", "optimizer", "tensors"):
        with pytest.raises(ValueError, match=rf"state must not contain the keys \['{key}'\]: save writes "
                                             r"\['format', 'save_sequence', 'optimizer', 'tensors'\] itself"):
            checkpoint.save(tmp_path, model, None, {"step": 1, key: 0})
    with pytest.raises(TypeError, match=r"state must be a dict \(JSON-serialisable values under string keys\), got "
                                        r"list"):
        checkpoint.save(tmp_path, model, None, [1])  # was dict()'s message, naming no argument
    assert not any(tmp_path.iterdir())
