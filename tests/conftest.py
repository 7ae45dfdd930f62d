"""Shared fixtures: Hypothesis profiles, a seeded random generator, the collector stopped.

``HYPOTHESIS_PROFILE=ci`` (set by ``.ci/run`` via CI=true) runs more examples than ``dev``, the
same ones every run (derandomized: a red CI is reproducible). ``.ci/run`` then runs the property
tests once more under ``ci-random``: a few new examples from a random seed it prints, so CI
also explores beyond the fixed set.
"""

# isort: off
# The service picks OpenBLAS's kernels when it is imported (service/blas.py), which must come
# before NumPy loads OpenBLAS: the answers pinned in tests/fixtures are those kernels'.
import service  # noqa: F401

# isort: on
import gc
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

COMMON: dict[str, Any] = {"deadline": None, "suppress_health_check": [HealthCheck.too_slow]}
settings.register_profile("dev", max_examples=25, **COMMON)
settings.register_profile("ci", max_examples=100, derandomize=True, **COMMON)
settings.register_profile("ci-random", max_examples=10, derandomize=False, database=None, **COMMON)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "dev"))

# The Python client is its own distribution (client/, package jacobian_client). pytest imports it
# in-process through `pythonpath` (pyproject.toml); subprocesses (README examples, the `jacobian`
# command) find it through PYTHONPATH, so a venv without `pip install -e ./client` runs them too.
CLIENT_SRC = str(Path(__file__).resolve().parents[1] / "client" / "src")
if CLIENT_SRC not in os.environ.get("PYTHONPATH", "").split(os.pathsep):
    os.environ["PYTHONPATH"] = os.pathsep.join(
        filter(None, [CLIENT_SRC, os.environ.get("PYTHONPATH")])
    )


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(20261126)


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def collector_off() -> Iterator[None]:
    """Run the test with the cyclic garbage collector stopped (reference counting only)."""
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()
