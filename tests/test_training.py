"""fit / evaluate / predict: sanity (initial loss, overfitting), the NaN guard, checkpoints (round trip, malformed
files, crash safety) and exact resume."""
import json
import math

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


def test_numpy_seed_and_augment_options_are_the_plain_values_data_order_records(tmp_path):
    # fit wrote its data order through json, which refused numpy scalars and arrays that Batches accepts
    x, y = tiny_data()
    model, loss, opt = setup_tiny()
    augment = {"normalize": (np.array([0.5], np.float32), np.float32(0.1))}  # 0.1: not a float32
    training.fit(model, loss, opt, (x, y), epochs=1, batch_size=16, seed=np.int64(3), augment=augment,
                 checkpoint_dir=tmp_path, progress=False)
    history = training.fit(model, loss, opt, (x, y), epochs=2, batch_size=16, seed=3,
                           augment={"normalize": ([0.5], 0.1)}, checkpoint_dir=tmp_path, resume=True, progress=False)
    assert len(history.loss) == 2  # the same data order: resumed


def test_fit_trains_a_float64_model_in_float64():
    # the batches were always float32, which a float64 model refused
    x, y = tiny_data()
    model, loss, opt = setup_tiny()
    model.to(np.float64)
    history = training.fit(model, loss, opt, (x, y), epochs=2, batch_size=16, val_data=(x, y), progress=False)
    assert all(p.data.dtype == np.float64 for p in model.parameters())
    assert len(history.loss) == 2 and np.isfinite(history.loss).all() and history.loss[1] < history.loss[0]
    with pytest.raises(ValueError, match=r"augment must be a dict of Batches' crop_padding, flip and normalize "
                                         r"options, got \{'dtype': <class 'numpy.float32'>\}"):
        training.fit(model, loss, opt, (x, y), augment={"dtype": np.float32}, progress=False)


def test_fit_with_keep_modes_keeps_a_batch_norm_kept_in_eval_frozen():
    # fine-tuning with frozen statistics: fit called model.train(), and the eval-mode BatchNorm's backward raised
    x, y = tiny_data()
    model = cc.nn.Sequential(cc.nn.Conv2d(1, 4, 3, padding=1, rng=0), cc.nn.BatchNorm2d(4), cc.nn.ReLU(),
                             cc.nn.MaxPool2d(2), cc.nn.Flatten(), cc.nn.Linear(144, 10, rng=1))
    model.train()
    model[1].eval()
    statistics = model[1].running_mean.copy(), model[1].running_var.copy()
    weight = model[0].weight.data.copy()
    opt = cc.optim.SGD(model.parameters(), lr=0.05)
    history = training.fit(model, cc.nn.CrossEntropyLoss(), opt, (x, y), epochs=2, batch_size=16, val_data=(x, y),
                           progress=False, keep_modes=True)
    assert not model[1].training and model[0].training  # the modes as given, after validation too
    assert np.array_equal(model[1].running_mean, statistics[0]) and np.array_equal(model[1].running_var, statistics[1])
    assert not np.array_equal(model[0].weight.data, weight) and history.loss[1] < history.loss[0]
    training.fit(model, cc.nn.CrossEntropyLoss(), opt, (x, y), batch_size=16, progress=False)  # by default: train()
    assert model[1].training and not np.array_equal(model[1].running_mean, statistics[0])
    model.eval()
    with pytest.raises(ValueError, match=r"keep_modes=True trains the model in its modules' own modes, but the model "
                                         r"itself is in eval mode"):
        training.fit(model, cc.nn.CrossEntropyLoss(), opt, (x, y), progress=False, keep_modes=True)


def test_resume_refuses_a_checkpoint_fit_did_not_write(tmp_path):
    model, loss, opt = setup_tiny()
    checkpoint.save(tmp_path, model, opt, {"step": 1})
    with pytest.raises(ValueError, match=r"lacks \['epoch', 'batch'"):
        training.fit(model, loss, opt, tiny_data(), checkpoint_dir=tmp_path, resume=True, progress=False)


@pytest.mark.parametrize("key, value, message", [
    ("totals", {}, r"totals must be a dict of loss, correct, seen and seconds"),
    ("epoch", "0", r"epoch must be an int >= 0, got '0'"),
    ("batch", -1, r"batch must be an int >= 0, got -1"),
    ("history", [], r"history must be a dict of lists of numbers"),
    ("history", {"loss": [0.5, "x"]}, r"history must be a dict of lists of numbers"),
    ("rng", {"5": {"bit_generator": "PCG64"}}, r"rng\['5'\] must be the state of a PCG64"),
    ("scheduler", {"last_epoch": -1, "base_lr": 0.05}, r"scheduler state last_epoch must be >= 0, got -1"),
    # past the epoch's 2 batches (fit writes the next epoch's 0 at an epoch's end): 2 divided by zero, 50 was refused
    # by the batches without naming the file, both after the checkpoint's weights had replaced the model's
    ("batch", 2, r"batch must be an int < 2 \(the batches in an epoch\), got 2"),
    ("batch", 50, r"batch must be an int < 2 \(the batches in an epoch\), got 50"),
])
def test_resume_refuses_a_malformed_state_before_loading_anything(tmp_path, key, value, message):
    # a malformed field failed inside fit (KeyError, TypeError, AttributeError) after the checkpoint's weights had
    # replaced the model's
    x, y = tiny_data(32)
    model, loss, opt, sched = _resume_setup(0)
    training.fit(model, loss, opt, (x, y), batch_size=16, seed=7, scheduler=sched, checkpoint_dir=tmp_path,
                 progress=False)
    state_file = checkpoint.latest(tmp_path) / "state.json"
    state = json.loads(state_file.read_text())
    state[key] = value
    state_file.write_text(json.dumps(state))
    fresh, loss, opt, sched = _resume_setup(99)
    weights = {k: v.copy() for k, v in fresh.state_dict().items()}
    with pytest.raises(ValueError, match=r"resume: .*state.json: " + message):
        training.fit(fresh, loss, opt, (x, y), epochs=2, batch_size=16, seed=7, scheduler=sched,
                     checkpoint_dir=tmp_path, resume=True, progress=False)
    assert all(np.array_equal(weights[k], v) for k, v in fresh.state_dict().items())
    assert sched.last_epoch == 0 and opt.lr == 0.05


def _resume_setup(seed):
    model = cc.nn.Sequential(cc.nn.Conv2d(1, 4, 3, padding=1, rng=seed), cc.nn.BatchNorm2d(4), cc.nn.ReLU(),
                             cc.nn.MaxPool2d(2), cc.nn.Flatten(), cc.nn.Dropout(0.2, rng=seed + 1),
                             cc.nn.Linear(144, 10, rng=seed + 2))
    opt = cc.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    return model, cc.nn.CrossEntropyLoss(), opt, cc.optim.StepLR(opt, step_size=1, gamma=0.5)


@pytest.mark.parametrize("killed_in_step", [8, 11])
def test_exact_resume_is_bitwise_equal(tmp_path, killed_in_step):
    x, y = tiny_data(80)
    val = tiny_data(24, seed=1)
    kwargs = dict(epochs=3, batch_size=16, seed=7, progress=False, val_data=val,
                  augment={"flip": True, "crop_padding": 2, "normalize": ([0.5], [0.3])})
    model_a, loss_a, opt_a, sched_a = _resume_setup(0)
    hist_a = training.fit(model_a, loss_a, opt_a, (x, y), scheduler=sched_a, **kwargs)
    # interrupted run: checkpoints every 3 steps and at each epoch's end (5 steps), killed inside a step; then a
    # fresh model, optimizer and scheduler resume from the newest checkpoint
    model_b, loss_b, opt_b, sched_b = _resume_setup(0)
    original_step = opt_b.step

    def interrupting_step():
        original_step()
        if opt_b.step_count == killed_in_step:
            raise KeyboardInterrupt
    opt_b.step = interrupting_step
    with pytest.raises(KeyboardInterrupt):
        training.fit(model_b, loss_b, opt_b, (x, y), scheduler=sched_b, checkpoint_dir=tmp_path, checkpoint_every=3,
                     **kwargs)
    newest = checkpoint.read_state(tmp_path)
    assert (newest["step"], newest["epoch"], newest["batch"]) == {8: (6, 1, 1), 11: (10, 2, 0)}[killed_in_step]
    model_c, loss_c, opt_c, sched_c = _resume_setup(99)  # other initial weights: all must come from the checkpoint
    hist_c = training.fit(model_c, loss_c, opt_c, (x, y), scheduler=sched_c, checkpoint_dir=tmp_path, resume=True,
                          **kwargs)
    for (name, a), c in zip(model_a.state_dict().items(), model_c.state_dict().values()):
        assert np.array_equal(a, c), name
    assert opt_a.buffers.keys() == opt_c.buffers.keys()
    assert all(np.array_equal(opt_a.buffers[k], opt_c.buffers[k]) for k in opt_a.buffers)
    assert opt_c.lr == opt_a.lr == 0.05 * 0.5 ** 3
    for field in ("loss", "accuracy", "val_loss", "val_accuracy", "lr"):
        assert getattr(hist_a, field) == getattr(hist_c, field), field


def test_history_evaluate_predict_and_a_silent_progress_bar(capfd):
    model, loss, opt = setup_tiny()
    x, y = tiny_data(40)
    history = training.fit(model, loss, opt, (x, y), epochs=2, batch_size=16, val_data=tiny_data(8, seed=3))
    assert capfd.readouterr() == ("", "")  # not a terminal: no bar
    assert len(history.loss) == len(history.val_accuracy) == len(history.images_per_second) == 2
    assert all(v > 0 for v in history.images_per_second) and history.lr == [0.05, 0.05]
    assert training.History.from_dict(json.loads(json.dumps(history.to_dict()))) == history
    logits = training.predict(model, x, batch_size=7)
    assert logits.shape == (40, 10) and model.training
    model.eval()
    assert np.array_equal(logits, model(x))
    model.train()
    value, accuracy = training.evaluate(model, x, y, loss, batch_size=9)
    assert accuracy == np.mean(np.argmax(logits, 1) == y) and abs(value - loss(logits, y)) < 1e-6
    assert training.predict(model, x[:0]).shape == (0, 10)
    model.to(np.float64)  # the model's dtype: its inputs are cast to float64, not float32
    logits64 = training.predict(model, x, batch_size=7)
    assert logits64.dtype == np.float64 and np.allclose(logits64, logits, atol=1e-4)
    with pytest.raises(TypeError, match="x must hold numbers, got dtype <U1"):
        training.predict(model, np.array([["a"]]))


def test_predict_restores_each_modules_own_mode():
    model = cc.nn.Sequential(cc.nn.Linear(3, 3, rng=0), cc.nn.BatchNorm1d(3), cc.nn.ReLU())
    model[1].eval()  # a frozen batch norm while the rest trains
    out = training.predict(model, np.ones((2, 3), np.float32))
    assert out.shape == (2, 3) and [m.training for m in model.modules()] == [True, True, False, True]
    model.eval()
    model[2].train()
    training.evaluate(model, np.ones((2, 3), np.float32), np.zeros(2, np.int64))
    assert [m.training for m in model.modules()] == [False, False, False, True]


def test_predict_restores_every_mode_though_interrupted():
    # Ctrl-C raises KeyboardInterrupt where Python checks for signals: as a call ends and as a frame starts or resumes.
    # One just after evaluating()'s model.eval() left the whole model in eval; a second one inside its restoring loop
    # some modules (BatchNorm then trained on its running statistics); a helper's review. Interrupts are raised here
    # at each such point of evaluating() (a call of its own ending, its frame starting or resuming), the k-th and the
    # (k + j)-th, through a profile function.
    import sys
    from convcore.nn import module as module_code
    code = module_code.evaluating.__wrapped__.__code__
    x = np.ones((2, 3), np.float32)
    for first in range(1, 12):
        for gap in range(1, 8):
            model = cc.nn.Sequential(cc.nn.Linear(3, 3, rng=0), cc.nn.BatchNorm1d(3), cc.nn.Dropout(0.5), cc.nn.ReLU())
            model[2].eval()
            points = 0

            def profile(frame, event, arg):
                nonlocal points
                own = frame.f_code is code and event in ("call", "c_return")
                if own or (event == "return" and frame.f_back is not None and frame.f_back.f_code is code):
                    points += 1
                    if points in (first, first + gap):
                        raise KeyboardInterrupt
            sys.setprofile(profile)
            try:
                training.predict(model, x)
            except KeyboardInterrupt:
                pass
            finally:
                sys.setprofile(None)
            assert [m.training for m in model.modules()] == [True, True, True, False, True], (first, gap)


def test_predict_refuses_an_input_without_a_batch_dimension():
    model = cc.models.lenet5(seed=0)
    with pytest.raises(ValueError, match=r"x must be a batch \(N, ...\) of at least 2 dimensions, got shape \(784,\)"):
        training.predict(model, np.zeros(784, np.float32))
    with pytest.raises(TypeError, match=r"x must be a numpy array \(N, ...\), got list"):
        training.predict(model, [[0.0]])


def test_progress_bar_shows_loss_accuracy_and_images_per_second(capfd):
    pytest.importorskip("tqdm")
    model, loss, opt = setup_tiny()
    training.fit(model, loss, opt, tiny_data(32), epochs=1, batch_size=16, progress=True)
    err = capfd.readouterr().err
    assert "epoch 1/1" in err and "loss=" in err and "acc=" in err and "img_s=" in err


def test_fit_argument_errors():
    model, loss, opt = setup_tiny()
    x, y = tiny_data()
    with pytest.raises(TypeError, match=r"train_data must be a tuple \(x, y\)"):
        training.fit(model, loss, opt, x, progress=False)
    with pytest.raises(ValueError, match="epochs must be >= 1, got 0"):
        training.fit(model, loss, opt, (x, y), epochs=0, progress=False)
    with pytest.raises(ValueError, match=r"train_data's y must hold class labels in \[0, 10\) \(the model's "
                                         r"outputs\), got labels from 10 to 19"):
        training.fit(model, loss, opt, (x, y + 10), progress=False)


def test_fit_refuses_what_would_fail_after_training_before_it(tmp_path):
    # each of these failed after the first epoch's updates (val_data is evaluated then, the scheduler stepped, the
    # callback called, the checkpoint written), or was taken as it came (resume="no" resumed, progress="no" drew a
    # bar, a complex x lost its imaginary part, another optimizer's scheduler left this one's lr alone)
    model, loss, opt = setup_tiny()
    x, y = tiny_data(32)
    other = cc.optim.SGD(model.parameters(), lr=0.1)
    (tmp_path / "file").write_text("")
    cases = [
        (dict(val_data=(x, y + 10)), ValueError, r"val_data's y must hold class labels in \[0, 10\)"),
        (dict(val_data=(x, y.astype(np.float64))), TypeError, "val_data's y must hold integer class labels"),
        (dict(val_data=(x[:0], y[:0])), ValueError, "val_data is empty"),
        (dict(val_data=(x[:, :, :10], y)), ValueError, r"val_data: the model does not take its samples of shape "
                                                       r"\(1, 10, 12\): "),
        (dict(scheduler=cc.optim.StepLR(other, 1)), ValueError, "scheduler must set this optimizer's lr: it was made "
                                                                "for another optimizer"),
        (dict(scheduler="cos"), TypeError, r"scheduler must have step\(\), state_dict\(\) and load_state_dict\(\)"),
        (dict(on_epoch=5), TypeError, r"on_epoch must be a callable on_epoch\(epoch, history\) or None, got 5"),
        (dict(checkpoint_dir=tmp_path / "file"), ValueError, "checkpoint_dir .*file' is a file, not a folder"),
        (dict(resume="no"), TypeError, "resume must be a bool, got 'no'"),
        (dict(progress="no"), TypeError, "progress must be a bool, got 'no'"),
        # an int was taken for a file descriptor by os.path.exists and failed at the first save, after an epoch
        (dict(checkpoint_dir=123), TypeError, r"checkpoint_dir must be a folder path \(str or os.PathLike\) or None, "
                                              r"got 123"),
    ]
    weights = {k: v.copy() for k, v in model.state_dict().items()}
    for kwargs, error, message in cases:
        with pytest.raises(error, match=message):
            training.fit(model, loss, opt, (x, y), batch_size=16, **{"progress": False, **kwargs})
    # the optimizer and loss: None failed inside the first step naming neither; another model's optimizer trained
    # epochs that changed nothing
    stranger = cc.optim.SGD(setup_tiny()[0].parameters(), lr=0.1)
    for optimizer, loss_fn, error, message in [
            (None, loss, TypeError, r"optimizer must have step\(\), zero_grad\(\) \(a convcore.optim optimizer "
                                    r"or one like it\), got None"),
            (opt, None, TypeError, r"loss must be a loss module such as convcore.nn.CrossEntropyLoss\(\) .*got None"),
            (stranger, loss, ValueError, "optimizer updates none of the model's parameters: it was made for another "
                                         "model")]:
        with pytest.raises(error, match=message):
            training.fit(model, loss_fn, optimizer, (x, y), batch_size=16, progress=False)
    assert all(np.array_equal(weights[k], v) for k, v in model.state_dict().items())
    with pytest.raises(TypeError, match="x must hold real numbers .*, got dtype complex64"):
        training.fit(model, loss, opt, (x.astype(np.complex64), y), progress=False)
    with pytest.raises(TypeError, match="train_data's y must hold integer class labels, got dtype float32"):
        training.fit(model, loss, opt, (x, y.astype(np.float32)), progress=False)


def test_fit_takes_a_scheduler_of_its_own_kind_and_validation_images_of_another_size(tmp_path):
    # refused by the first version of the checks above: a scheduler not derived from convcore's, and val_data of
    # another image size that the model takes (adaptive pooling)
    class WarmUp:
        def __init__(self, optimizer):
            self.optimizer, self.epoch = optimizer, 0

        def step(self):
            self.epoch += 1
            self.optimizer.lr = 0.1

        def state_dict(self):
            return {"epoch": self.epoch}

        def load_state_dict(self, state):
            self.epoch = state["epoch"]
    model = cc.nn.Sequential(cc.nn.Conv2d(1, 4, 3, rng=0), cc.nn.AdaptiveAvgPool2d(2), cc.nn.Flatten(),
                             cc.nn.Linear(16, 10, rng=1))
    opt = cc.optim.SGD(model.parameters(), lr=0.05)
    x, y = tiny_data(32)
    val = tiny_data(8, seed=1)[0][:, :, :10], y[:8]
    kwargs = dict(batch_size=16, progress=False, val_data=val, scheduler=WarmUp(opt), checkpoint_dir=tmp_path)
    history = training.fit(model, cc.nn.CrossEntropyLoss(), opt, (x, y), epochs=2, **kwargs)
    assert history.lr == [0.05, 0.1] and len(history.val_accuracy) == 2
    history = training.fit(model, cc.nn.CrossEntropyLoss(), opt, (x, y), epochs=3, resume=True, **kwargs)
    assert len(history.loss) == 3


def test_a_float64_run_records_its_normalisation_in_float64(tmp_path):
    # recorded rounded to float32 while float64 batches use it in float64: a resume with np.float32(0.1) passed as
    # the same data order and trained on other inputs
    x, y = tiny_data(32)
    model, loss, opt = setup_tiny()
    model.to(np.float64)
    opt = cc.optim.SGD(model.parameters(), lr=0.05)
    kwargs = dict(batch_size=16, progress=False, checkpoint_dir=tmp_path, resume=True)
    training.fit(model, loss, opt, (x, y), augment={"normalize": (0.1, 0.3)}, **kwargs)
    with pytest.raises(ValueError, match="was written for the data order"):
        training.fit(model, loss, opt, (x, y), epochs=2, augment={"normalize": (np.float32(0.1), 0.3)}, **kwargs)
    assert len(training.fit(model, loss, opt, (x, y), epochs=2, augment={"normalize": (0.1, 0.3)}, **kwargs).loss) == 2


def test_history_keeps_one_validation_entry_an_epoch(tmp_path):
    # a run resumed with val_data after epochs without (or without after epochs with) had validation lists shorter
    # than the loss's, which nothing could place: None now stands for an epoch without validation
    x, y = tiny_data(32)
    val = tiny_data(8, seed=1)
    model, loss, opt = setup_tiny()
    run = lambda epochs, **kw: training.fit(model, loss, opt, (x, y), epochs=epochs, batch_size=16, progress=False,
                                            checkpoint_dir=tmp_path, resume=True, **kw)
    assert run(1).val_loss == []
    history = run(2, val_data=val)
    assert history.val_loss[0] is None and history.val_accuracy[0] is None and history.val_loss[1] > 0
    history = run(3)
    assert len(history.val_loss) == len(history.val_accuracy) == 3 and history.val_loss[2] is None


def test_evaluate_refuses_labels_that_are_not_class_indices():
    model, loss, _ = setup_tiny()
    x, y = tiny_data(6)
    with pytest.raises(TypeError, match="y must hold integer class labels, got dtype float64"):
        training.evaluate(model, x, y.astype(np.float64))
    for bad, shown in ((10, r"from \d+ to 10$"), (-1, r"from -1 to \d+$")):  # without a loss, accuracy 0.0 came back
        labels = y.copy()
        labels[0] = bad
        with pytest.raises(ValueError, match=rf"y must hold class labels in \[0, 10\) \(the model's outputs\), got "
                                             rf"labels {shown}"):
            training.evaluate(model, x, labels)
    assert training.evaluate(model, x, y)[1] >= 0.0
    class FirstColumn(cc.nn.Module):  # one score per image
        def forward(self, x):
            return x[:, 0]

    flat = cc.nn.Sequential(cc.nn.Linear(3, 2, rng=0), FirstColumn())
    with pytest.raises(ValueError, match=r"evaluate needs a classifier, whose outputs are \(N, classes\); the "
                                         r"model's are \(2,\)"):
        training.evaluate(flat, np.ones((2, 3), np.float32), np.zeros(2, np.int64))



class _ThreadsSeen(cc.nn.Module):
    """Passes x and dy through, noting the thread count of each forward and moving `clock` on by the time a step on
    that count is to take."""

    def __init__(self, clock, seconds_on):
        super().__init__()
        self.clock, self.seconds_on, self.seen = clock, seconds_on, []

    def forward(self, x):
        n = cc.get_num_threads()
        self.seen.append(n)
        self.clock.now += self.seconds_on[n]
        return x

    def backward(self, dy, input_grad=True):
        return dy


class _Clock:
    def __init__(self):
        self.now = 0.0

    def perf_counter(self):
        return self.now


def test_fit_runs_full_batches_on_the_thread_count_timed_fastest_with_the_same_results(monkeypatch):
    # LeNet-5 (whose convolutions at batch 32 run on the threads), 100 samples in batches of 32: three full steps an
    # epoch, then one of 4. The full ones run under a ThreadChoice: two steps on 2 threads, two on 1, then the faster
    # (steps timed on a stand-in clock: 4 ms on 2 threads, 1 on 1); the short one on the setting. The weights come out
    # the same as on 1 thread throughout, and as with choose_threads=False (every step on the setting)
    clock = _Clock()
    monkeypatch.setattr(cc._runtime, "time", clock)
    rng = np.random.default_rng(0)
    x, y = rng.random((100, 1, 28, 28), dtype=np.float32), rng.integers(0, 10, 100)
    trained = {}
    for threads, choose in ((2, True), (1, True), (2, False)):
        seen = _ThreadsSeen(clock, {2: 0.004, 1: 0.001})
        model = cc.nn.Sequential(seen, cc.models.lenet5(seed=0))
        opt = cc.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
        with cc.threads(threads):
            training.fit(model, cc.nn.CrossEntropyLoss(), opt, (x, y), epochs=2, batch_size=32, progress=False,
                         choose_threads=choose)
        trained[threads, choose] = [p.data.copy() for p in model.parameters()]
        want = [2, 2, 1, 2, 1, 1, 1, 2] if (threads, choose) == (2, True) else [threads] * 8
        assert seen.seen == [threads] + want, (threads, choose, seen.seen)  # first: the labels' check, one sample
    for a, b, c in zip(*trained.values()):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(a, c)
    tiny = _tiny_model()
    with pytest.raises(TypeError, match="choose_threads must be a bool"):
        training.fit(tiny, cc.nn.CrossEntropyLoss(), cc.optim.SGD(tiny.parameters(), lr=0.1), tiny_data(),
                     choose_threads="yes")
