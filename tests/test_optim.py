"""Optimizers and schedules against PyTorch's update rules (and hand-computed values), state_dict, validation."""
import json
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


def _same_next_step(first, second, grads):
    """One more step of two (parameters, optimizer) pairs from the same gradients: the parameters come out equal."""
    for params, opt in (first, second):
        for p, g in zip(params, grads):
            p.grad = g
        opt.step()
    for p, q in zip(first[0], second[0]):
        assert np.array_equal(p.data, q.data)


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
    _same_next_step((params_a, a), (params_b, b), g)


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
    (lambda p: optim.SGD(p, lr=0.1, momentum=0.9, nesterov="False"), TypeError,
     r"^nesterov must be a bool, got 'False'$"),
    (lambda p: optim.SGD(p, lr=0.1, momentum=0.9, nesterov=1), TypeError, r"^nesterov must be a bool, got 1$"),
    (lambda p: optim.SGD(p, lr="fast"), TypeError, r"lr must be a finite real number, got 'fast'"),
    (lambda p: optim.Adam(p, betas=(0.9, 1.0)), ValueError, r"betas\[1\] must be >= 0.0 and < 1.0"),
    (lambda p: optim.SGD([], lr=0.1), ValueError, r"params is empty"),
    (lambda p: optim.SGD([np.zeros(2)], lr=0.1), TypeError, r"params must be Parameters"),
])
def test_bad_hyper_parameters(call, exc, match, rng):
    with pytest.raises(exc, match=match):
        call(_params(rng))


@pytest.mark.parametrize("make,name,value,exc,match", [
    (lambda p: optim.SGD(p, lr=0.1), "lr", -1.0, ValueError, r"^lr must be >= 0.0, got -1.0$"),
    (lambda p: optim.SGD(p, lr=0.1), "lr", float("nan"), TypeError, r"^lr must be a finite real number, got nan$"),
    (lambda p: optim.SGD(p, lr=0.1), "lr", "0.1", TypeError, r"^lr must be a finite real number, got '0.1'$"),
    (lambda p: optim.SGD(p, lr=0.1, momentum=0.9), "nesterov", "False", TypeError, r"^nesterov must be a bool"),
    (lambda p: optim.SGD(p, lr=0.1, momentum=0.9, nesterov=True), "momentum", 0.0, ValueError,
     r"nesterov needs momentum > 0"),
    (lambda p: optim.Adam(p), "beta1", 1.5, ValueError, r"^beta1 must be >= 0.0 and < 1.0, got 1.5$"),
    (lambda p: optim.AdamW(p), "eps", -1.0, ValueError, r"^eps must be >= 0.0, got -1.0$"),
])
def test_hyper_parameters_assigned_later_are_checked(make, name, value, exc, match, rng):
    # assigned after construction (a hand-written schedule) they went unchecked: lr = -1 stepped uphill, eps = -1
    # moved a parameter by 8e5, a string reached the native step as pybind11's "incompatible function arguments",
    # and a checkpoint saved with lr = -0.1 could not be loaded back
    params = _params(rng)
    opt = make(params)
    before = getattr(opt, name)
    with pytest.raises(exc, match=match):
        setattr(opt, name, value)
    assert getattr(opt, name) == before


def test_hyper_parameters_checked_together_load_and_a_custom_optimizer_sets_its_own(rng):
    # the checks on assignment (above) at first refused a valid state whose nesterov differs from the optimizer's (its
    # hyper-parameters set one at a time, lr already replaced when nesterov's turn came), and every assignment to a
    # hyper-parameter of an Optimizer subclass that defines no rules of its own (each raised NotImplementedError)
    plain = optim.SGD(_params(rng), lr=0.5, momentum=0.0)
    nesterov = optim.SGD(_params(rng), lr=0.1, momentum=0.9, nesterov=True)
    nesterov.load_state_dict(plain.state_dict())
    assert (nesterov.lr, nesterov.momentum, nesterov.nesterov) == (0.5, 0.0, False)
    damped = optim.SGD(_params(rng), lr=0.1, momentum=0.9, dampening=0.5)
    nesterov = optim.SGD(_params(rng), lr=0.1, momentum=0.9, nesterov=True)
    nesterov.load_state_dict(damped.state_dict())
    assert (nesterov.dampening, nesterov.nesterov) == (0.5, False)

    class SignSGD(optim.optimizers.Optimizer):
        hyper_names = ("lr",)

        def __init__(self, params, lr):
            super().__init__(params)
            self.lr = lr

        def _apply(self, datas, grads):
            for d, g in zip(datas, grads):
                d -= self.lr * np.sign(g)
    sign = SignSGD(_params(rng), lr=0.1)
    sched = optim.StepLR(sign, step_size=1, gamma=0.5)
    sched.step()
    assert sign.lr == pytest.approx(0.05)


def test_hyper_parameters_assigned_later_are_kept_as_plain_numbers(rng):
    # a numpy float32 lr reached the checkpoint's JSON and failed its first save, after an epoch of training
    opt = optim.SGD(_params(rng), lr=0.1, momentum=0.9)
    opt.lr, opt.nesterov = np.float32(0.25), np.bool_(True)
    assert type(opt.lr) is float and opt.lr == 0.25 and opt.nesterov is True
    json.dumps(opt.state_dict()["hyper"])
    sched = optim.StepLR(opt, step_size=1, gamma=0.5)
    sched.step()
    assert type(opt.lr) is float and opt.lr == 0.125
    json.dumps(sched.state_dict())


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
        buffers = opt.state_dict()["buffers"]
        assert all(b.dtype == np.float32 for k, b in buffers.items() if not k.startswith("step."))
        assert all(b.dtype == np.int64 and b.shape == () for k, b in buffers.items() if k.startswith("step."))


def test_a_parameter_given_twice_is_refused():
    # it was updated twice a step (PyTorch warns of it)
    p, q = nn.Parameter(np.zeros(2)), nn.Parameter(np.zeros(3))
    for make in (lambda params: optim.SGD(params, lr=0.1), lambda params: optim.Adam(params)):
        with pytest.raises(ValueError, match=r"params holds the same Parameter twice \(items 0 and 2\)"):
            make([p, q, p])
    same_values = nn.Parameter(np.zeros(2))  # equal arrays, other Parameters: fine
    assert len(optim.SGD([p, same_values], lr=0.1).params) == 2


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
    for count in (-1, 2**53 + 1):
        with pytest.raises(ValueError, match=rf"step_count must be an int in \[0, 2\*\*53\], got {count}"):
            fresh.load_state_dict({**state, "step_count": count})
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
    with pytest.raises(TypeError, match=r"parameter 0 must be a float32 or float64 array, got int64"):
        optim.Adam([q]).step()
    for grad in (np.ones(3, np.int32), np.ones(3, bool), np.ones(3, np.complex64)):  # not converted: refused
        f = nn.Parameter(np.ones(3, np.float32))
        f.grad = grad
        with pytest.raises(TypeError, match=rf"parameter 0 has a gradient of dtype {grad.dtype}: gradients must be "
                                            r"floating-point"):
            optim.SGD([f], lr=0.1).step()
        assert np.array_equal(f.data, np.ones(3, np.float32))
    big_endian = nn.Parameter(np.ones(3, ">f4"))
    big_endian.grad = np.ones(3, np.float32)
    with pytest.raises(ValueError, match=r"parameter 0 must be a writeable C-contiguous float32 or float64 array to be "
                                         r"updated in place, got >f4"):
        optim.SGD([big_endian], lr=0.1).step()
    f.grad = np.ones(3, np.float64)  # a float gradient of another precision is converted to the parameter's
    optim.SGD([f], lr=0.5).step()
    assert np.array_equal(f.data, np.full(3, 0.5, np.float32))
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
                        False, [1])
    moments = ([np.zeros(4, np.float32)], [np.zeros(4, np.float32)], 0.1, 0.9, 0.99, 1e-8, 0.0, False)
    with pytest.raises(ValueError, match="one step per parameter"):
        _core.adam_step([p], [g], *moments, [1, 1])
    with pytest.raises(ValueError, match="every step must be >= 1"):
        _core.adam_step([p], [g], *moments, [0])
    assert np.all(p == 0)
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


def test_sgd_nesterov_takes_numpy_bools(rng):
    assert optim.SGD(_params(rng), lr=0.1, momentum=0.9, nesterov=np.bool_(True)).nesterov is True


def _adam_by_hand(p, g, m, v, t, lr, beta1=0.9, beta2=0.999, eps=1e-8):
    """One torch.optim.Adam update (no weight decay) of parameter p at its own step t; returns p, m, v."""
    m = beta1 * m + (1 - beta1) * g
    v = beta2 * v + (1 - beta2) * g * g
    return p - lr / (1 - beta1 ** t) * m / (np.sqrt(v) / np.sqrt(1 - beta2 ** t) + eps), m, v


def test_adam_bias_correction_counts_each_parameters_own_steps():
    # b's first gradient comes at the optimizer's 3rd step: it is corrected as at its own 1st step (an update of
    # lr * g / (|g| + eps)), not as at a 3rd (-0.0639 before)
    a, b = nn.Parameter(np.zeros(1)), nn.Parameter(np.zeros(1))
    opt = optim.Adam([a, b], lr=0.1)
    for s in range(3):
        a.grad, b.grad = np.ones(1), (np.ones(1) if s == 2 else None)
        opt.step()
    assert b.data[0] == -0.1 / (1 + 1e-8)
    assert int(opt.buffers["step.0"]) == 3 and int(opt.buffers["step.1"]) == 1 and opt.step_count == 3


@pytest.mark.parametrize("name,kwargs", [("Adam", dict(lr=0.1, weight_decay=0.1)),
                                         ("AdamW", dict(lr=0.1, weight_decay=0.1))])
def test_adam_with_late_parameters_matches_torch(name, kwargs, rng):
    """Parameters whose gradients start at different steps (three distinct counts in one step), and one skipping a
    step, against torch.optim, whose state keeps a step per parameter."""
    torch = pytest.importorskip("torch")
    start = [rng.standard_normal(s) for s in ((3, 2), (4,), (5,))]
    have = ["a", "a", "ab", "abc", "ac", "abc"]  # which parameters have a gradient at each step
    grads = [[rng.standard_normal(s.shape) if "abc"[j] in which else None for j, s in enumerate(start)]
             for which in have]
    params = [nn.Parameter(s.copy()) for s in start]
    tparams = [torch.tensor(s.copy(), requires_grad=True) for s in start]
    opt, topt = getattr(optim, name)(params, **kwargs), getattr(torch.optim, name)(tparams, **kwargs)
    for g in grads:
        for p, t, gi in zip(params, tparams, g):
            p.grad, t.grad = gi, (None if gi is None else torch.tensor(gi))
        opt.step()
        topt.step()
    for p, t in zip(params, tparams):
        np.testing.assert_allclose(p.data, t.detach().numpy(), rtol=1e-10, atol=1e-12)
    assert [int(opt.buffers[f"step.{i}"]) for i in range(3)] == [6, 3, 3]
    assert [int(topt.state[t]["step"]) for t in tparams] == [6, 3, 3]


def test_adam_state_dict_carries_each_parameters_steps(rng):
    start = [rng.standard_normal(4), rng.standard_normal(3)]
    grads = [rng.standard_normal(4), rng.standard_normal(3)]
    params = [nn.Parameter(s.copy()) for s in start]
    opt = optim.Adam(params, lr=0.1)
    params[0].grad = grads[0]
    opt.step()
    params[1].grad = grads[1]
    opt.step()
    state = opt.state_dict()
    assert state["buffers"]["step.0"].dtype == np.int64 and state["buffers"]["step.0"].shape == ()
    copies = [nn.Parameter(p.data.copy()) for p in params]
    resumed = optim.Adam(copies, lr=0.1)
    resumed.load_state_dict(state)
    _same_next_step((params, opt), (copies, resumed), grads)
    assert int(resumed.buffers["step.0"]) == 3 and int(resumed.buffers["step.1"]) == 2


def test_adam_loads_a_state_saved_without_steps_as_before():
    """A state from before the per-parameter counts (moments, no "step.<index>"): a parameter with moments
    continues from the optimizer's step_count, as its next step then did; one without starts at its own 1st."""
    p, q = nn.Parameter(np.array([1.0, -2.0])), nn.Parameter(np.array([0.5]))
    opt = optim.Adam([p, q], lr=0.1)
    m, v = np.array([0.3, -0.1]), np.array([0.02, 0.05])
    opt.load_state_dict({"hyper": opt.state_dict()["hyper"], "step_count": 2,
                         "buffers": {"exp_avg.0": m.copy(), "exp_avg_sq.0": v.copy()}})
    assert opt.buffers["step.0"].dtype == np.int64 and int(opt.buffers["step.0"]) == 2 and "step.1" not in opt.buffers
    g, h = np.array([0.4, 0.7]), np.array([-1.0])
    p.grad, q.grad = g, h
    opt.step()
    want_p, _, _ = _adam_by_hand(np.array([1.0, -2.0]), g, m, v, 3, 0.1)
    want_q, _, _ = _adam_by_hand(np.array([0.5]), h, 0.0, 0.0, 1, 0.1)
    np.testing.assert_allclose(p.data, want_p, rtol=1e-12)
    np.testing.assert_allclose(q.data, want_q, rtol=1e-12)
    assert int(opt.buffers["step.0"]) == 3 and int(opt.buffers["step.1"]) == 1


# 2**64 - 1 as uint64 was kept as int64 -1, refused by the next step without naming the key; 2**63 - 1 reached the
# kernel as a count it could not take one past (a raw pybind11 TypeError)
@pytest.mark.parametrize("value", [np.array(-1), np.array(0), np.array(2.0), np.array([2]), 2,
                                   np.array(2**64 - 1, np.uint64), np.array(2**63 - 1), np.array(2**53 + 1)])
def test_adam_load_state_dict_refuses_bad_steps(value):
    p = nn.Parameter(np.zeros(2))
    opt = optim.Adam([p])
    moments = {"exp_avg.0": np.zeros(2), "exp_avg_sq.0": np.zeros(2)}
    state = {"hyper": opt.state_dict()["hyper"], "step_count": 2, "buffers": {"step.0": value, **moments}}
    with pytest.raises(ValueError, match=r"optimizer state 'step.0' must be a 0-d integer array in \[1, 2\*\*53\] "
                                         r"\(a count of updates\)"):
        opt.load_state_dict(state)
    with pytest.raises(ValueError, match=r"the count 'step.0' without the buffers \['exp_avg_sq.0'\]"):
        opt.load_state_dict({**state, "buffers": {"step.0": np.array(2), "exp_avg.0": np.zeros(2)}})
    with pytest.raises(ValueError, match=r"buffer 'step.0'; SGD keeps \['momentum_buffer'\]"):
        optim.SGD([p], lr=0.1, momentum=0.9).load_state_dict(
            {**optim.SGD([p], lr=0.1, momentum=0.9).state_dict(), "buffers": {"step.0": np.array(1)}})
    assert opt.buffers == {} and opt.step_count == 0


def test_adam_refused_step_over_several_counts_changes_nothing():
    """Parameters at different counts are updated in one native call, each at its own step: when it refuses a
    parameter, no parameter, moment or count changes."""
    a, b, c = nn.Parameter(np.ones(2)), nn.Parameter(np.ones(3)), nn.Parameter(np.ones(10))
    opt = optim.Adam([a, b, c], lr=0.1)
    a.grad = np.ones(2)
    opt.step()  # a: count 1; b and c: none yet
    before = {k: v.copy() for k, v in opt.buffers.items()}
    a_before = a.data.copy()
    a.grad, b.grad, c.grad = np.ones(2), np.ones(3), np.ones(11)  # a at its step 2, b and c at their first
    with pytest.raises(ValueError, match=r"parameter 2 has shape \(10,\) but its gradient has \(11,\)"):
        opt.step()
    assert np.array_equal(a.data, a_before) and np.all(b.data == 1) and np.all(c.data == 1)
    assert opt.buffers.keys() == before.keys() and all(np.array_equal(opt.buffers[k], before[k]) for k in before)
    assert opt.step_count == 1
    c.grad = np.ones(10)
    a.data.setflags(write=False)  # refused by the native checks
    with pytest.raises(ValueError, match=r"parameter 0 must be a writeable C-contiguous"):
        opt.step()
    assert np.array_equal(a.data, a_before) and np.all(b.data == 1) and np.all(c.data == 1)


@pytest.mark.parametrize("buffers,exc,match", [
    (None, TypeError, r"optimizer state 'buffers' must be a dict of numpy arrays keyed '<buffer>.<parameter index>' "
                      r"\(empty for none\), got None"),
    ({0: np.zeros(2)}, ValueError, r"optimizer state has buffer 0; SGD keeps \['momentum_buffer'\]"),
    # indices state_dict never writes: loaded, they went unused beside the "0" the next step made
    ({"momentum_buffer.00": np.zeros(2)}, ValueError, r"buffer 'momentum_buffer.00'; SGD keeps"),
    ({"momentum_buffer.\u0660": np.zeros(2)}, ValueError, r"buffer 'momentum_buffer.\u0660'; SGD keeps"),
    ({"momentum_buffer.\u00b2": np.zeros(2)}, ValueError, r"buffer 'momentum_buffer.\u00b2'; SGD keeps"),
])
def test_load_state_dict_refuses_malformed_buffers(buffers, exc, match):
    opt = optim.SGD([nn.Parameter(np.zeros(2))], lr=0.1, momentum=0.9)
    with pytest.raises(exc, match=match):
        opt.load_state_dict({**opt.state_dict(), "buffers": buffers})
    with pytest.raises(TypeError, match=r"optimizer state 'hyper' must be a dict of hyper-parameters, got None"):
        opt.load_state_dict({**opt.state_dict(), "hyper": None})
    opt.load_state_dict({**opt.state_dict(), "buffers": {}})  # no buffers: an empty dict
    assert opt.buffers == {}


@pytest.mark.parametrize("make,key", [(lambda p: optim.SGD(p, lr=0.1, momentum=0.9), "momentum_buffer.0"),
                                      (lambda p: optim.AdamW(p, lr=0.1), "exp_avg.0")])
def test_step_after_the_model_changed_dtype_says_why_and_what_to_do(make, key):
    model = nn.Linear(3, 2, rng=0)
    opt = make(model.parameters())
    x = np.ones((2, 3), np.float32)
    model(x)
    model.backward(np.ones((2, 2), np.float32))
    opt.step()
    model.to(np.float64)
    model(x.astype(np.float64))
    model.backward(np.ones((2, 2)))
    weight = model.weight.data.copy()
    with pytest.raises(TypeError, match=rf"^optimizer buffer '{key}' is float32 but parameter 0 is now float64: the "
                                        r"parameter was converted \(e.g. model.to\(np.float64\)\) after the optimizer "
                                        r"made its state; create the optimizer after converting the model, or convert "
                                        r"its state with optimizer.load_state_dict\(optimizer.state_dict\(\)\)$"):
        opt.step()
    assert np.array_equal(model.weight.data, weight)
    opt.load_state_dict(opt.state_dict())  # the advice works
    opt.step()
    assert opt.buffers[key].dtype == np.float64 and not np.array_equal(model.weight.data, weight)


@pytest.mark.parametrize("state,exc,match", [
    ({"last_epoch": -5, "base_lr": 0.1}, ValueError, r"^scheduler state last_epoch must be >= 0, got -5$"),
    ({"last_epoch": 2, "base_lr": -1}, ValueError, r"^scheduler state base_lr must be >= 0.0, got -1$"),
    ({"last_epoch": 2.5, "base_lr": 0.1}, TypeError, r"^scheduler state last_epoch must be an int, got 2.5$"),
    ({"last_epoch": 2, "base_lr": "0.1"}, TypeError, r"^scheduler state base_lr must be a finite real number"),
    ({"last_epoch": 2}, ValueError, r"^scheduler state must be a dict with keys 'last_epoch', 'base_lr'"),
    (None, ValueError, r"^scheduler state must be a dict with keys 'last_epoch', 'base_lr'"),
])
@pytest.mark.parametrize("name,kwargs", [("StepLR", dict(step_size=2)), ("CosineAnnealingLR", dict(T_max=4))])
def test_scheduler_load_state_dict_checks_like_the_constructor(state, exc, match, name, kwargs):
    opt = optim.SGD([nn.Parameter(np.zeros(1))], lr=0.2)
    sched = getattr(optim, name)(opt, **kwargs)
    sched.step()
    lr = opt.lr
    with pytest.raises(exc, match=match):
        sched.load_state_dict(state)
    assert sched.last_epoch == 1 and sched.base_lr == 0.2 and opt.lr == lr
    sched.load_state_dict({"last_epoch": np.int64(3), "base_lr": 0.4})
    assert sched.last_epoch == 3 and sched.base_lr == 0.4 and opt.lr == sched.lr_at(3)
