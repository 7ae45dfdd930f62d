"""``python -m service``: serve the app with uvicorn, host/port/workers from the settings."""

import uvicorn

from .config import get_settings


def main() -> None:
    """Start uvicorn on the configured interface."""
    settings = get_settings()
    uvicorn.run(
        "service.main:create_app",
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
