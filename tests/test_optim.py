"""Optimizers and schedules against PyTorch's update rules (and hand-computed values), state_dict, validation."""
import math

import numpy as np
import pytest

from convcore import nn, optim


def _params(rng, shapes=((3, 4), (4,))):
    return [nn.Parameter(rng.standard_normal(s)) for s in shapes]


def _run(opt_cls, kwargs, rng, steps=4):
    params = _params(rng)
    start = [p.data.copy() for p in params]
    grads = [[rng.standard_normal(p.data.shape) for p in params] for _ in range(steps)]
    opt = opt_cls(params, **kwargs)
    for g in grads:
        for p, gi in zip(params, g):
            p.grad = gi
        opt.step()
    return start, grads, [p.data for p in params]


def test_sgd_momentum_by_hand(rng):
    p = nn.Parameter(np.array([1.0]))
    opt = optim.SGD([p], lr=0.1, momentum=0.9, weight_decay=0.5)
    for _ in range(2):
        p.grad = np.array([2.0])
        opt.step()
    # step 1: d = 2 + 0.5*1 = 2.5, buf = 2.5, p = 1 - 0.25 = 0.75
    # step 2: d = 2 + 0.375 = 2.375, buf = 0.9*2.5 + 2.375 = 4.625, p = 0.75 - 0.4625 = 0.2875
    assert p.data[0] == pytest.approx(0.2875, abs=1e-12)


@pytest.mark.parametrize("name,kwargs", [
    ("SGD", dict(lr=0.1)),
    ("SGD", dict(lr=0.1, momentum=0.9, weight_decay=1e-2)),
    ("SGD", dict(lr=0.05, momentum=0.8, nesterov=True)),
    ("SGD", dict(lr=0.05, momentum=0.8, dampening=0.3)),
    ("Adam", dict(lr=0.01)),
    ("Adam", dict(lr=0.01, betas=(0.8, 0.9), weight_decay=0.1)),
    ("AdamW", dict(lr=0.01, weight_decay=0.1)),
])
def test_matches_torch(name, kwargs, rng):
    torch = pytest.importorskip("torch")
    start, grads, ours = _run(getattr(optim, name), kwargs, rng)
    tparams = [torch.tensor(s, requires_grad=True) for s in start]
    topt = getattr(torch.optim, name)(tparams, **kwargs)
    for g in grads:
        for p, gi in zip(tparams, g):
            p.grad = torch.tensor(gi)
        topt.step()
    for a, b in zip(ours, tparams):
        np.testing.assert_allclose(a, b.detach().numpy(), rtol=1e-10, atol=1e-12)


def test_state_dict_round_trip_continues_identically(rng):
    params_a = _params(rng)
    params_b = [nn.Parameter(p.data.copy()) for p in params_a]
    a = optim.Adam(params_a, lr=0.01)
    b = optim.Adam(params_b, lr=0.01)
    g = [rng.standard_normal(p.data.shape) for p in params_a]
    for p, gi in zip(params_a, g):
        p.grad = gi
    a.step()
    b.load_state_dict(a.state_dict())
    for p, q in zip(params_a, params_b):
        q.data[...] = p.data
    for params, opt in ((params_a, a), (params_b, b)):
        for p, gi in zip(params, g):
            p.grad = gi
        opt.step()
    for p, q in zip(params_a, params_b):
        assert np.array_equal(p.data, q.data)


def test_schedulers():
    p = [nn.Parameter(np.zeros(1))]
    opt = optim.SGD(p, lr=1.0)
    step = optim.StepLR(opt, step_size=2, gamma=0.5)
    lrs = []
    for _ in range(5):
        step.step()
        lrs.append(opt.lr)
    assert lrs == [1.0, 0.5, 0.5, 0.25, 0.25]
    opt2 = optim.SGD(p, lr=1.0)
    cos = optim.CosineAnnealingLR(opt2, T_max=4, eta_min=0.1)
    for epoch in range(1, 5):
        cos.step()
        assert opt2.lr == pytest.approx(0.1 + 0.9 * (1 + math.cos(math.pi * epoch / 4)) / 2)


@pytest.mark.parametrize("call,exc,match", [
    (lambda p: optim.SGD(p, lr=-1), ValueError, r"lr must be >= 0.0, got -1"),
    (lambda p: optim.SGD(p, lr=0.1, momentum=-0.5), ValueError, r"momentum must be >= 0.0"),
    (lambda p: optim.SGD(p, lr=0.1, nesterov=True), ValueError, r"nesterov needs momentum > 0"),
    (lambda p: optim.SGD(p, lr="fast"), TypeError, r"lr must be a finite real number, got 'fast'"),
    (lambda p: optim.Adam(p, betas=(0.9, 1.0)), ValueError, r"betas\[1\] must be >= 0.0 and < 1.0"),
    (lambda p: optim.SGD([], lr=0.1), ValueError, r"params is empty"),
    (lambda p: optim.SGD([np.zeros(2)], lr=0.1), TypeError, r"params must be Parameters"),
])
def test_bad_hyper_parameters(call, exc, match, rng):
    with pytest.raises(exc, match=match):
        call(_params(rng))


@pytest.mark.parametrize("name,kwargs", [("StepLR", dict(step_size=3, gamma=0.5)),
                                         ("CosineAnnealingLR", dict(T_max=5, eta_min=0.01))])
def test_schedulers_match_torch_and_resume(name, kwargs):
    torch = pytest.importorskip("torch")
    opt = optim.SGD([nn.Parameter(np.zeros(1))], lr=0.2)
    sched = getattr(optim, name)(opt, **kwargs)
    topt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.2)
    tsched = getattr(torch.optim.lr_scheduler, name)(topt, **kwargs)
    for _ in range(4):
        sched.step()
        topt.step()
        tsched.step()
        assert opt.lr == pytest.approx(topt.param_groups[0]["lr"], rel=1e-12)
    resumed_opt = optim.SGD([nn.Parameter(np.zeros(1))], lr=0.2)
    resumed = getattr(optim, name)(resumed_opt, **kwargs)
    resumed.load_state_dict(sched.state_dict())
    for _ in range(4):
        sched.step()
        resumed.step()
        assert resumed_opt.lr == opt.lr


def test_float32_parameters_stay_float32(rng):
    p = nn.Parameter(rng.standard_normal((3, 2)).astype(np.float32))
    for opt in (optim.SGD([p], lr=0.1, momentum=0.9), optim.Adam([p]), optim.AdamW([p])):
        p.grad = rng.standard_normal((3, 2))
        opt.step()
        assert p.data.dtype == np.float32
        assert all(b.dtype == np.float32 for b in opt.state_dict()["buffers"].values())


def test_load_state_dict_refuses_foreign_state(rng):
    params = _params(rng)
    sgd = optim.SGD(params, lr=0.1, momentum=0.9)
    for p in params:
        p.grad = np.ones_like(p.data)
    sgd.step()
    adam = optim.Adam(params)
    with pytest.raises(ValueError, match=r"has hyper-parameters \['dampening', 'lr', 'momentum', 'nesterov', "
                                         r"'weight_decay'\], Adam has"):
        adam.load_state_dict(sgd.state_dict())
    state = sgd.state_dict()
    fresh = optim.SGD(params, lr=0.1, momentum=0.9)
    with pytest.raises(ValueError, match=r"buffer 'exp_avg.0'; SGD keeps \['momentum_buffer'\]"):
        fresh.load_state_dict({**state, "buffers": {"exp_avg.0": np.zeros((3, 4))}})
    with pytest.raises(ValueError, match=r"buffer 'momentum_buffer.1' has shape \(3, 4\), the parameter has \(4,\)"):
        fresh.load_state_dict({**state, "buffers": {"momentum_buffer.1": np.zeros((3, 4))}})
    with pytest.raises(ValueError, match=r"hyper-parameter lr must be >= 0.0, got -1"):
        fresh.load_state_dict({**state, "hyper": {**state["hyper"], "lr": -1}})
    # the constructors' rules: a bool nesterov (with momentum > 0, dampening 0), betas in [0, 1), float buffers
    with pytest.raises(TypeError, match=r"hyper-parameter nesterov must be a bool, got 'yes'"):
        fresh.load_state_dict({**state, "hyper": {**state["hyper"], "nesterov": "yes"}})
    with pytest.raises(ValueError, match=r"nesterov needs momentum > 0 and dampening 0"):
        fresh.load_state_dict({**state, "hyper": {**state["hyper"], "nesterov": True, "dampening": 0.5}})
    with pytest.raises(TypeError, match=r"buffer 'momentum_buffer.0' has dtype complex64"):
        fresh.load_state_dict({**state, "buffers": {"momentum_buffer.0": np.ones((3, 4), np.complex64)}})
    adam_state = adam.state_dict()
    with pytest.raises(ValueError, match=r"hyper-parameter beta1 must be >= 0.0 and < 1.0, got 2.0"):
        optim.Adam(params).load_state_dict({**adam_state, "hyper": {**adam_state["hyper"], "beta1": 2.0}})
    assert fresh.step_count == 0 and fresh.buffers == {}
    fresh.load_state_dict(state)
    assert fresh.step_count == 1 and np.array_equal(fresh.buffers["momentum_buffer.0"], np.ones((3, 4)))


@pytest.mark.parametrize("name,kwargs", [
    ("SGD", dict(lr=0.1, momentum=0.9, weight_decay=1e-2)),
    ("SGD", dict(lr=0.05, momentum=0.8, nesterov=True)),
    ("SGD", dict(lr=0.05, momentum=0.8, dampening=0.3)),
    ("Adam", dict(lr=0.01, betas=(0.8, 0.9), weight_decay=0.1)),
    ("AdamW", dict(lr=0.01, weight_decay=0.1)),
])
def test_float32_matches_torch(name, kwargs, rng):
    torch = pytest.importorskip("torch")
    start = [rng.standard_normal(s).astype(np.float32) for s in ((5, 7), (7,))]
    grads = [[rng.standard_normal(s.shape).astype(np.float32) for s in start] for _ in range(4)]
    params = [nn.Parameter(s.copy()) for s in start]
    opt = getattr(optim, name)(params, **kwargs)
    tparams = [torch.tensor(s, requires_grad=True) for s in start]
    topt = getattr(torch.optim, name)(tparams, **kwargs)
    for g in grads:
        for p, t, gi in zip(params, tparams, g):
            p.grad, t.grad = gi, torch.tensor(gi)
        opt.step()
        topt.step()
    for p, t in zip(params, tparams):
        np.testing.assert_allclose(p.data, t.detach().numpy(), rtol=2e-6, atol=1e-7)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("make", [lambda p: optim.SGD(p, lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.01),
                                  lambda p: optim.SGD(p, lr=0.05, momentum=0.8, dampening=0.3),
                                  lambda p: optim.SGD(p, lr=0.1),
                                  lambda p: optim.Adam(p, lr=0.01, betas=(0.8, 0.9), weight_decay=0.1),
                                  lambda p: optim.AdamW(p, lr=0.01, weight_decay=0.1)])
def test_steps_same_bits_on_every_isa_and_thread_count(make, dtype, rng, on_every_isa):
    # the step loops are compiled per ISA without fusing a multiply and an add (an FMA rounds once where the
    # baseline rounds twice): every variant, at 1 and 2 threads, gives the baseline's bits. Sizes: odd vector tails,
    # and 23K elements in all, so that the parameters' blocks are spread over the threads together.
    start = [rng.standard_normal(n).astype(dtype) for n in (3, 1001, 9000, 13001)]
    grads = [[rng.standard_normal(s.shape).astype(dtype) for s in start] for _ in range(3)]

    def steps():
        params = [nn.Parameter(s.copy()) for s in start]
        opt = make(params)
        for g in grads:
            for p, gi in zip(params, g):
                p.grad = gi
            opt.step()
        return [p.data for p in params]
    results = on_every_isa(steps)
    baseline = results["scalar", 1]
    assert not np.array_equal(baseline[3], start[3])
    for key, data in results.items():
        for got, want in zip(data, baseline):
            assert got.dtype == dtype and np.array_equal(got, want), key


@pytest.mark.parametrize("size", [3, 40_000])  # serial, and blocks over 2 threads
@pytest.mark.parametrize("name", ["SGD", "AdamW"])
def test_steps_flush_denormals_and_leave_the_rest_of_the_process_alone(name, size):
    # a buffer whose gradient is zero decays by the momentum (beta1) each step: from 2e-38 (normal) it would reach
    # float32's denormals (below 1.18e-38) after ~6 steps and stay there for ~150 more; the step flushes them to
    # zero (each denormal result costs a microcode assist). Afterwards numpy on this thread, and a product split
    # over the kernels' threads, still produce denormals: the flush is confined to the step.
    import convcore
    tiny = np.finfo(np.float32).tiny
    p = nn.Parameter(np.ones(size, np.float32))
    opt = optim.SGD([p], lr=0.1, momentum=0.9) if name == "SGD" else optim.AdamW([p], lr=0.1, weight_decay=0.0)
    key = "momentum_buffer" if name == "SGD" else "exp_avg"
    with convcore.threads(2):
        p.grad = np.full(size, 2e-38, np.float32)
        opt.step()
        for _ in range(12):
            p.grad = np.zeros(size, np.float32)
            opt.step()
    buf = next(iter(v for k, v in opt.buffers.items() if key in str(k)))
    assert np.all(buf == 0)  # without the flush: 2e-38 * 0.9**12 ~ 5.6e-39
    assert np.float32(tiny) * np.float32(0.25) > 0
    a = np.full((300, 200), 1e-20, np.float32)
    with convcore.threads(2):
        c = convcore.functional.matmul(a, a.T.copy())  # 200 products of 1e-40 each: 2e-38, summed in denormals
    assert np.all(c > 0)


def test_parameters_must_be_updatable_in_place(rng):
    p = nn.Parameter(rng.standard_normal((4, 6))[:, ::2])
    p.grad = np.ones((4, 3))
    with pytest.raises(ValueError, match=r"parameter 0 must be a writeable C-contiguous float32 or float64 array"):
        optim.SGD([p], lr=0.1).step()
    q = nn.Parameter(np.zeros(3, dtype=np.int64))
    q.grad = np.ones(3)
    with pytest.raises(ValueError, match=r"got int64"):
        optim.Adam([q]).step()
    r = nn.Parameter(np.zeros(3))
    r.grad = np.ones(4)
    with pytest.raises(ValueError, match=r"parameter 0 has shape \(3,\) but its gradient has \(4,\)"):
        optim.SGD([r], lr=0.1).step()


def test_native_steps_refuse_mismatched_arrays():
    from convcore import _core
    p, q, g = np.zeros(4, np.float32), np.zeros(2, np.float32), np.ones(4, np.float32)
    with pytest.raises(ValueError, match="momentum needs buffers"):
        _core.sgd_step([p], [g], None, [False], 0.1, 0.9, 0.0, 0.0, False)
    with pytest.raises(ValueError, match="parameter 0's optimizer buffer must be"):
        _core.adam_step([p], [g], [np.zeros(3, np.float32)], [np.zeros(4, np.float32)], 0.1, 0.9, 0.99, 1e-8, 0.0,
                        False, 1)
    with pytest.raises(ValueError, match="parameter 1's optimizer buffer must be"):  # float64: not its dtype
        _core.sgd_step([p, q], [g, np.ones(2)], [np.zeros(4, np.float32), np.zeros(2)], [False, False], 0.1, 0.9,
                       0.0, 0.0, False)
    with pytest.raises(ValueError, match="parameter 1 must be a writeable"):  # a copy's update would be lost
        _core.sgd_step([p, p.astype(np.float64)[::2]], [g, g[::2]], None, [False, False], 0.1, 0.0, 0.0, 0.0, False)
    with pytest.raises(ValueError, match="one gradient"):
        _core.sgd_step([p, q], [g], None, [False, False], 0.1, 0.0, 0.0, 0.0, False)
    assert np.all(p == 0) and np.all(q == 0)  # nothing changed: every parameter is checked before any update


def test_a_refused_step_changes_nothing(rng):
    """The last parameter refused: the first is not updated, no buffer is kept, the step count stays."""
    a, b = nn.Parameter(np.ones(3, np.float32)), nn.Parameter(np.ones(2, np.float32))
    a.grad, b.grad = np.ones(3, np.float32), np.ones(5, np.float32)
    for opt in (optim.SGD([a, b], lr=0.1, momentum=0.9), optim.Adam([a, b])):
        with pytest.raises(ValueError, match=r"parameter 1 has shape \(2,\) but its gradient has \(5,\)"):
            opt.step()
        assert np.all(a.data == 1) and opt.buffers == {} and opt.step_count == 0


def test_mixed_dtypes_and_converted_gradients(rng):
    """float32 and float64 parameters in one optimizer, a float64 and a strided gradient: each update as the
    parameter's own, alone."""
    start = [rng.standard_normal(5).astype(np.float32), rng.standard_normal((2, 3))]
    grads = [rng.standard_normal(10)[::2], rng.standard_normal((2, 3))]
    together = [nn.Parameter(s.copy()) for s in start]
    opt = optim.SGD(together, lr=0.1, momentum=0.9)
    for _ in range(2):
        for p, g in zip(together, grads):
            p.grad = g
        opt.step()
    for s, g, p in zip(start, grads, together):
        alone = nn.Parameter(s.copy())
        solo = optim.SGD([alone], lr=0.1, momentum=0.9)
        for _ in range(2):
            alone.grad = np.ascontiguousarray(g, dtype=s.dtype)
            solo.step()
        assert p.data.dtype == s.dtype and np.array_equal(p.data, alone.data)


def test_loaded_buffers_take_the_parameter_dtype(rng):
    p = nn.Parameter(np.ones(3, dtype=np.float32))
    opt = optim.SGD([p], lr=0.1, momentum=0.9)
    opt.load_state_dict({"hyper": opt.state_dict()["hyper"], "step_count": 1,
                         "buffers": {"momentum_buffer.0": np.full(3, 2.0)}})
    p.grad = np.ones(3, dtype=np.float32)
    opt.step()
    assert opt.buffers["momentum_buffer.0"].dtype == np.float32
    np.testing.assert_allclose(p.data, 1 - 0.1 * (0.9 * 2 + 1))
