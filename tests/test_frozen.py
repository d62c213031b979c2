"""convcore.nn.freeze: an inference-only snapshot whose plans keep packed weights and fold batch norms."""
import threading

import numpy as np
import pytest

import convcore as cc
from convcore import nn


def _randomise_batch_norms(model, rng):
    """Running statistics and affine parameters away from the identity, so that a wrong fold shows."""
    for m in model.modules():
        if isinstance(m, (nn.BatchNorm2d, nn.BatchNorm1d)):
            c = m.running_mean.shape
            m.running_mean[...] = rng.standard_normal(c) * 0.5
            m.running_var[...] = rng.uniform(0.25, 4.0, c)
            m.weight.data[...] = rng.uniform(0.5, 2.0, c)
            m.bias.data[...] = rng.standard_normal(c) * 0.5
    return model


# (input shape, Conv2d arguments): a layer for each route whose weights a frozen plan keeps packed (the direct kernel
# with 6 and 16 filters a block, filter-vector with one and two vectors of filters, a batch-1 layer whose blocks go
# to the threads and whose block width follows the thread count, Winograd F(2x2) and F(4x4)) and one it does not
# (im2col on the GEMM)
LAYERS = [
    ((2, 1, 28, 28), (1, 6, 5)),
    ((1, 16, 32, 32), (16, 16, 3, 1, 1)),
    ((2, 64, 8, 8), (64, 64, 3, 1, 1)),
    ((1, 16, 8, 8), (16, 12, 3, 1, 1)),
    ((1, 16, 32, 32), (16, 32, 3, 2, 1)),
    ((1, 64, 16, 16), (64, 12, 3, 2, 1)),  # the same on AVX2
    ((1, 320, 16, 8), (320, 8, 3, 2, 1)),  # and with the portable kernels
    ((1, 64, 28, 28), (64, 64, 3, 1, 1)),
    ((2, 128, 14, 14), (128, 128, 3, 1, 1)),
    ((1, 32, 14, 14), (32, 200, 3, 1, 1)),  # Winograd at batch 1, the kept filters shared out between the threads
    ((1, 3, 56, 56), (3, 64, 7, 2, 3)),
]


@pytest.mark.parametrize("shape,conv", LAYERS, ids=str)
def test_frozen_layer_gives_the_eval_bits_at_any_thread_count(isa, rng, shape, conv):
    # no batch norm to fold: the kept packing must give the bits of packing at every call, also when the thread
    # count changes between calls (a batch-1 layer's block width follows it: a packing for each width, kept)
    model = nn.Sequential(nn.Conv2d(*conv, rng=rng), nn.ReLU())
    model.eval()
    frozen = nn.freeze(model)
    x = rng.standard_normal(shape).astype(np.float32)
    for n in (1, 2, 3, 1, 2):
        with cc.threads(n):
            np.testing.assert_array_equal(frozen(x), model(x), err_msg=f"{n} threads")


def test_frozen_plan_runs_its_calls_on_the_thread_count_timed_fastest(rng):
    # at 2 threads the plan times two calls on 2 threads, then two on 1, then runs on the faster, probing the other
    # now and then (ThreadChoice, whose policy cpp/tests/test_threads.cpp checks on given times): the same bits
    # on either; a new setting starts afresh on its own count
    model = nn.Sequential(nn.Conv2d(16, 16, 3, padding=1, rng=rng), nn.ReLU(),
                          nn.Conv2d(16, 16, 3, padding=1, rng=rng)).eval()
    frozen = nn.freeze(model)
    x = rng.standard_normal((1, 16, 32, 32)).astype(np.float32)
    want = model(x)
    with cc.threads(2):
        used = []
        for _ in range(8):
            np.testing.assert_array_equal(frozen(x), want)
            used.append(frozen._plans[(x.shape, x.dtype)].last_threads)
    assert used[:4] == [2, 2, 1, 1] and set(used[4:]) <= {1, 2}, used
    with cc.threads(3):
        np.testing.assert_array_equal(frozen(x), want)
        assert frozen._plans[(x.shape, x.dtype)].last_threads == 3


@pytest.mark.parametrize("name,shape", [("lenet5", (3, 1, 28, 28)), ("resnet20", (2, 3, 32, 32)),
                                        ("resnet20", (1, 3, 32, 32)), ("resnet18", (1, 3, 64, 64))], ids=str)
def test_frozen_model_matches_eval_within_rounding(rng, name, shape):
    # batch norms folded into the convolutions before them: within float32 rounding of the layer-by-layer output
    # (a fold that missed the mean, the epsilon or the bias is off by far more); without batch norms, the same bits
    model = _randomise_batch_norms(getattr(cc.models, name)(seed=0), rng).eval()
    frozen = nn.freeze(model)
    x = rng.standard_normal(shape).astype(np.float32)
    want, got = model(x), frozen(x)
    if name == "lenet5":
        np.testing.assert_array_equal(got, want)
    else:
        np.testing.assert_allclose(got, want, rtol=0, atol=2e-6 * np.abs(want).max())
        assert not np.array_equal(got, want)  # folded: the bits differ
    np.testing.assert_array_equal(frozen(x), got)  # the kept packing gives the first call's bits
    with cc.threads(1):
        np.testing.assert_array_equal(frozen(x), got)


def test_frozen_block_folds_batch_norms_into_its_convolutions(rng):
    # a BasicBlock with a projection shortcut: all three batch norms folded, the second adding the shortcut
    block = _randomise_batch_norms(nn.BasicBlock(16, 32, stride=2, shortcut="B", rng=rng), rng).eval()
    x = rng.standard_normal((2, 16, 16, 16)).astype(np.float32)
    want = block(x)
    np.testing.assert_allclose(nn.freeze(block)(x), want, rtol=0, atol=2e-6 * np.abs(want).max())


def test_frozen_folds_biased_and_grouped_convolutions_and_leaves_the_others(rng):
    # a biased convolution and a grouped one take their batch norms; a batch norm after a ReLU, after a Linear, or
    # one whose fold would overflow stays a pass of its own (alone, they give the eval bits)
    folded = _randomise_batch_norms(nn.Sequential(
        nn.Conv2d(4, 8, 3, padding=1, rng=rng), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=2, dilation=2, groups=4, rng=rng), nn.BatchNorm2d(8)), rng).eval()
    x = rng.standard_normal((2, 4, 9, 9)).astype(np.float32)
    want = folded(x)
    got = nn.freeze(folded)(x)
    np.testing.assert_allclose(got, want, rtol=0, atol=2e-6 * np.abs(want).max())
    assert not np.array_equal(got, want)
    for apart in (nn.Sequential(nn.Conv2d(4, 8, 3, rng=rng), nn.ReLU(), nn.BatchNorm2d(8)),
                  nn.Sequential(nn.Flatten(), nn.Linear(324, 5, rng=rng), nn.BatchNorm1d(5))):
        apart = _randomise_batch_norms(apart, rng).eval()
        np.testing.assert_array_equal(nn.freeze(apart)(x), apart(x))
    overflow = nn.Sequential(nn.Conv2d(4, 8, 3, rng=rng), nn.BatchNorm2d(8)).eval()
    overflow[0].weight.data[...] = 1e20
    overflow[1].weight.data[...] = 1e20
    tiny = np.full((1, 4, 5, 5), 1e-6, np.float32)
    assert np.isfinite(overflow(tiny)).all()
    np.testing.assert_array_equal(nn.freeze(overflow)(tiny), overflow(tiny))


def test_frozen_container_subclass_keeps_its_own_forward(rng):
    class Doubled(nn.Sequential):
        def forward(self, x):
            return 2 * super().forward(x)

    model = Doubled(nn.Conv2d(3, 4, 3, rng=rng), nn.ReLU()).eval()
    x = rng.standard_normal((2, 3, 8, 8)).astype(np.float32)
    np.testing.assert_array_equal(nn.freeze(model)(x), model(x))


def test_frozen_is_a_snapshot(rng):
    model = _randomise_batch_norms(cc.models.resnet20(seed=0), rng)
    assert model.training
    frozen = nn.freeze(model)
    assert model.training  # the model's mode is left as it was
    x = rng.standard_normal((2, 3, 32, 32)).astype(np.float32)
    before = frozen(x)
    for p in model.parameters():
        p.data *= 2  # in place: the snapshot has its own arrays
        assert p.data.flags.writeable
    for b in model.buffers():
        b[...] = 0
    np.testing.assert_array_equal(frozen(x), before)
    frozen_arrays = [p.data for p in frozen._model.parameters()]
    assert frozen_arrays and not any(a.flags.writeable for a in frozen_arrays)
    # a new input shape builds a plan from the snapshot, not from the changed model
    model.load_state_dict(cc.models.resnet20(seed=1).state_dict())
    np.testing.assert_allclose(frozen(x[:1]), before[:1], rtol=0, atol=1e-6 * np.abs(before).max())


def test_frozen_copies_and_pickles_without_its_plans(rng):
    # copy.deepcopy and pickle refused its lock and native plans: a frozen model could not go to a spawned worker
    import copy
    import pickle

    frozen = nn.freeze(_randomise_batch_norms(cc.models.resnet20(seed=0), rng), max_plans=2)
    x = rng.standard_normal((2, 3, 32, 32)).astype(np.float32)
    before = frozen(x)
    for other in (copy.deepcopy(frozen), pickle.loads(pickle.dumps(frozen))):
        assert other._plans == {} and other._max_plans == 2
        np.testing.assert_array_equal(other(x), before)  # its own plan, the same bits
        arrays = [p.data for p in other._model.parameters()] + list(other._model.buffers())
        assert arrays and not any(a.flags.writeable for a in arrays)
        assert not any(np.shares_memory(a, p.data) for a, p in zip(arrays, frozen._model.parameters()))
    np.testing.assert_array_equal(frozen(x), before)


def test_frozen_runs_what_the_native_plan_does_not_take_as_eval(rng):
    model64 = cc.models.lenet5(seed=0).to(np.float64).eval()
    x = rng.standard_normal((2, 1, 28, 28))
    np.testing.assert_array_equal(nn.freeze(model64)(x), model64(x))  # float64: the eval forward's path
    model = cc.models.lenet5(seed=0).eval()
    frozen = nn.freeze(model)
    with pytest.raises(TypeError, match="float64"):  # as the model itself
        frozen(x)
    xt = rng.standard_normal((28, 28, 1, 2)).astype(np.float32).T  # not C-contiguous
    np.testing.assert_array_equal(frozen(xt), model(np.ascontiguousarray(xt)))

    class Tagged(np.ndarray):
        pass
    xs = rng.standard_normal((4, 1, 28, 28)).astype(np.float32)
    np.testing.assert_array_equal(frozen(xs.view(Tagged)), model(xs))  # a subclass runs as its array
    assert frozen._plans[(xs.shape, xs.dtype)] is not None  # and builds the native plan
    inception = nn.Sequential(nn.Inception(8, 4, 4, 8, 2, 4, 4, rng=rng), nn.ReLU()).eval()
    xi = rng.standard_normal((2, 8, 10, 10)).astype(np.float32)
    np.testing.assert_array_equal(nn.freeze(inception)(xi), inception(xi))


def test_frozen_keeps_infinite_weights_as_eval_does(rng):
    # a Winograd layer with an infinity among its weights: no kept transform (it would hold NaN), the eval bits
    model = nn.Sequential(nn.Conv2d(64, 64, 3, padding=1, rng=rng)).eval()
    model[0].weight.data[3, 5, 1, 1] = np.inf
    x = rng.standard_normal((1, 64, 28, 28)).astype(np.float32)
    frozen = nn.freeze(model)
    for _ in range(2):
        np.testing.assert_array_equal(frozen(x), model(x))


def test_frozen_calls_from_several_threads(rng):
    model = _randomise_batch_norms(cc.models.resnet20(seed=0), rng)
    xs = [rng.standard_normal((n, 3, 32, 32)).astype(np.float32) for n in (1, 2, 1, 3)]
    want = [nn.freeze(model)(x) for x in xs]
    frozen = nn.freeze(model, max_plans=2)  # its plans built by the threads' first calls, two at once
    got = [None] * len(xs)

    def work(i):
        for _ in range(3):
            got[i] = frozen(xs[i])
    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(xs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for a, b in zip(got, want):
        np.testing.assert_array_equal(a, b)
    assert set(frozen._plans) <= {(x.shape, x.dtype) for x in xs} and len(frozen._plans) == 2


def test_frozen_calls_while_another_thread_changes_the_thread_count(rng):
    # a frozen convolution packed its filters for the tile of one thread count and shared its rows out by another's
    # when set_num_threads ran meanwhile on another thread: garbage (4 wrong outputs in 5,000 calls, up to 4.6e17 off);
    # each call into the core now reads the setting once (CallThreads)
    model = nn.Sequential(nn.Conv2d(128, 12, 3, 1, 1, rng=rng)).eval()  # 8x48 packed on 2 threads, 6x64 on 1
    x = rng.standard_normal((3, 128, 12, 20)).astype(np.float32)
    want, frozen = model(x), nn.freeze(model)
    before = cc.get_num_threads()
    stop = threading.Event()
    wrong, calls = [], [0]

    def caller():
        while not stop.is_set():
            calls[0] += 1
            if not np.array_equal(frozen(x), want):
                wrong.append(calls[0])
            if calls[0] >= 4000:  # enough calls (4 s here; under the sanitizers' build, longer)
                stop.set()

    def setter():
        i = 0
        while not stop.is_set():
            cc.set_num_threads(1 + i % 2)
            i += 1
    threads = [threading.Thread(target=caller) for _ in range(4)] + [threading.Thread(target=setter)]
    try:
        for t in threads:
            t.start()
        stop.wait(120.0)
    finally:
        stop.set()
        for t in threads:
            t.join()
        cc.set_num_threads(before)
    assert calls[0] > 1000 and not wrong


def test_frozen_keeps_the_shapes_used_last_where_the_eval_forward_runs(rng):
    # a float64 snapshot (no native plan) kept its shapes in the order first seen: a shape used last was dropped
    forwards = [0]

    class Counting(nn.ReLU):
        def forward(self, x, *args, **kwargs):
            forwards[0] += 1
            return super().forward(x, *args, **kwargs)
    frozen = nn.freeze(nn.Sequential(nn.Conv2d(3, 8, 3, rng=rng), Counting()).to(np.float64), max_plans=2)
    a, b, c = (rng.standard_normal((n, 3, 8, 8)) for n in (1, 2, 3))
    runs = []
    for x in (a, b, a, c, a):
        before = forwards[0]
        frozen(x)
        runs.append(forwards[0] - before)
    assert runs == [2, 2, 1, 2, 1]  # a new shape's first call builds (a forward more); a kept one runs once


def test_frozen_keeps_the_plans_used_last(rng):
    model = cc.models.lenet5(seed=0).eval()
    frozen = nn.freeze(model, max_plans=2)
    xs = {n: rng.standard_normal((n, 1, 28, 28)).astype(np.float32) for n in (1, 2, 3)}
    for n in (1, 2, 1, 3, 1, 2):  # 2 goes when 3 comes (1 was used since), then 3 when 2 comes back
        np.testing.assert_array_equal(frozen(xs[n]), model(xs[n]))
    assert [shape[0] for shape, _ in frozen._plans] == [1, 2]


def test_freeze_validates(rng):
    with pytest.raises(TypeError, match="model must be a convcore.nn.Module, got list"):
        nn.freeze([nn.ReLU()])
    with pytest.raises(ValueError, match=r"max_plans must be an int >= 1, got 0"):
        nn.freeze(nn.ReLU(), max_plans=0)
    frozen = nn.freeze(cc.models.lenet5(seed=0))
    with pytest.raises(ValueError, match="channels"):
        frozen(np.zeros((1, 3, 28, 28), np.float32))
    with pytest.raises(TypeError, match="numpy array"):
        frozen([[1.0]])
    assert repr(frozen).startswith("Frozen(Sequential(")


def test_predict_and_evaluate_take_a_frozen_model(rng):
    model = cc.models.lenet5(seed=0)
    frozen = nn.freeze(model)
    x = rng.random((70, 1, 28, 28))  # float64 images: converted to the model's float32, as for the model itself
    y = rng.integers(0, 10, 70)
    np.testing.assert_array_equal(cc.predict(frozen, x, batch_size=32), cc.predict(model, x, batch_size=32))
    assert cc.evaluate(frozen, x, y, batch_size=32) == cc.evaluate(model, x, y, batch_size=32)
    assert frozen.dtype == np.float32 and nn.freeze(model.to(np.float64)).dtype == np.float64
    assert cc.predict(frozen, x[:0]).shape == (0, 10)
    with pytest.raises(TypeError, match="model must be a convcore.nn.Module or a frozen one"):
        cc.predict(lambda v: v, x)
