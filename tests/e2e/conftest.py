"""A live server for the end-to-end tests: ``python -m service`` on a free loopback port.

The server runs as a subprocess exactly as it is deployed (settings from ``SERVICE_*``; the
caller's own are dropped), is awaited on ``/healthz``, and is stopped by its PID when the session
ends (:func:`tests.e2e.live.serve`).
"""

from collections.abc import Iterator

import pytest

from tests.e2e.live import serve


@pytest.fixture(scope="session")
def live_server() -> Iterator[str]:
    """Start ``python -m service`` on a free 127.0.0.1 port; yield its base URL."""
    with serve() as server:
        yield server.base_url
