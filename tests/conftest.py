"""Fixtures shared by every test module: one ``xp`` fixture over the backends, Hypothesis profiles."""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, settings

from tests.helpers import BACKENDS, load_namespace

settings.register_profile(
    "ci",
    derandomize=True,
    deadline=None,
    max_examples=40,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
settings.register_profile(
    "dev",
    deadline=None,
    max_examples=100,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


def _backend_params():
    params = []
    for name in BACKENDS:
        marks = [pytest.mark.gpu] if name == "cupy" else []
        params.append(pytest.param(name, id=name, marks=marks))
    return params


@pytest.fixture(params=_backend_params())
def backend(request):
    """The name of an available backend; tests for missing ones are skipped."""
    if load_namespace(request.param) is None:
        pytest.skip(f"{request.param} is not available here")
    return request.param


@pytest.fixture
def xp(backend):
    """The Array API namespace of each available backend."""
    return load_namespace(backend)
