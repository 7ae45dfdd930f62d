"""Shared fixtures: Hypothesis profiles and a seeded random generator.

``HYPOTHESIS_PROFILE=ci`` (set by ``.ci/run`` via CI=true) runs more examples than ``dev``, the
same ones every run (derandomized: a red CI is reproducible). ``.ci/run`` then runs the property
tests once more under ``ci-random``: a few new examples from a random seed it prints, so CI
also explores beyond the fixed set.
"""

import os

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

settings.register_profile(
    "dev", max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile(
    "ci",
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    derandomize=True,
)
settings.register_profile(
    "ci-random",
    max_examples=10,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    derandomize=False,
    database=None,
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "dev"))


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(20261126)


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    return "asyncio"
