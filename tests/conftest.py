"""Fixtures shared by every test module: one ``xp`` fixture over the backends, Hypothesis profiles.

The ``backend`` fixture goes over :class:`tests.helpers.Backend`; a test marked
``@pytest.mark.skip_xp_backend(Backend.JAX, reason=...)`` is skipped on that backend.
"""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, settings

from tests.helpers import Backend

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


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "skip_xp_backend(*backends, reason): skip the test on these members of tests.helpers.Backend"
    )


@pytest.fixture(params=[backend.pytest_param() for backend in Backend])
def backend(request) -> Backend:
    """An available backend (a :class:`Backend`, equal to its name); tests for missing ones are skipped."""
    backend = request.param
    if backend.namespace() is None:
        pytest.skip(f"{backend} is not available here")
    for marker in request.node.iter_markers("skip_xp_backend"):
        if backend in marker.args:
            pytest.skip(marker.kwargs.get("reason", f"skipped on {backend}"))
    return backend


@pytest.fixture
def xp(backend):
    """The Array API namespace of each available backend."""
    return backend.namespace()
