"""Shared pytest fixtures: every compiled ISA variant forced in turn, and 1 / 2 threads."""
import os

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

import convcore as cc
from convcore import _core

settings.register_profile("dev", max_examples=100, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("ci", max_examples=1000, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("CONVCORE_HYPOTHESIS_PROFILE", "dev"))

ISAS = ("scalar", "avx2", "avx512")


@pytest.fixture(params=ISAS)
def isa(request):
    """Forces one kernel variant for the test, skipped with a reason where the CPU lacks it."""
    name = request.param
    previous = _core.selected_isa()
    if not _core.select_isa(name):
        pytest.skip(f"this CPU does not support {name} (detected {_core.detected_isa()})")
    yield name
    _core.select_isa(previous)


@pytest.fixture(params=[1, 2])
def nthreads(request):
    with cc.threads(request.param):
        yield request.param


@pytest.fixture
def on_every_isa():
    """A function that calls fn() with each compiled ISA variant this CPU runs selected, at 1 and at 2 threads, and
    returns {(isa, threads): fn's result}; the test's own selection is restored afterwards."""
    previous = _core.selected_isa()

    def run(fn):
        results = {}
        for name in ISAS:
            if _core.select_isa(name):
                for threads in (1, 2):
                    with cc.threads(threads):
                        results[name, threads] = fn()
        return results
    yield run
    _core.select_isa(previous)


@pytest.fixture
def rng():
    return np.random.default_rng(1234)
