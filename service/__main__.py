"""``python -m service``: serve the app with uvicorn, host/port/workers from the settings."""

import os
import shutil
import tempfile

import uvicorn

from .api.observability import MULTIPROCESS_DIR
from .config import get_settings


def _multiprocess_metrics() -> None:
    # Each worker must write its metrics where /metrics (in any worker) can add them up; the
    # variable is read when prometheus_client is imported, so it is set before workers start.
    if not os.environ.get(MULTIPROCESS_DIR):
        os.environ[MULTIPROCESS_DIR] = tempfile.mkdtemp(prefix="jacobian-metrics-")
    directory = os.environ[MULTIPROCESS_DIR]
    # Values of a previous run would be added to this one's.
    shutil.rmtree(directory, ignore_errors=True)
    os.makedirs(directory, exist_ok=True)


def main() -> None:
    """Start uvicorn on the configured interface."""
    settings = get_settings()
    if settings.workers > 1:
        _multiprocess_metrics()
    uvicorn.run(
        "service.main:serve_app",
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=settings.workers,
        log_level=settings.log_level,
        proxy_headers=True,
        # Logging is configured by the app (JSON lines with request ids), not by uvicorn.
        log_config=None,
    )


if __name__ == "__main__":
    main()
