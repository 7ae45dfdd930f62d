"""Live servers for the client tests: the default settings, and a guarded one (keys, one slot)."""

from collections.abc import Iterator

import pytest
from jacobian_client import Client

from tests.e2e.live import LiveServer, serve

API_KEY = "client-test-key"
ENCODINGS = ["binary", "base64", "list"]


@pytest.fixture(scope="session")
def server() -> Iterator[LiveServer]:
    """``python -m service`` with default settings."""
    with serve() as live:
        yield live


@pytest.fixture(scope="session")
def guarded() -> Iterator[LiveServer]:
    """A server that wants a key and runs one computation at a time, refusing at once (503)."""
    settings = {
        "SERVICE_API_KEYS": API_KEY,
        "SERVICE_MAX_CONCURRENT_COMPUTATIONS": "1",
        "SERVICE_COMPUTATION_WAIT_SECONDS": "0",
        "SERVICE_DESCENT_DEADLINE_SECONDS": "30",
    }
    with serve(settings) as live:
        yield live


@pytest.fixture(params=ENCODINGS)
def client(request: pytest.FixtureRequest, server: LiveServer) -> Iterator[Client]:
    """A client of ``server`` in each encoding."""
    with Client(server.base_url, encoding=request.param) as live:
        yield live
