"""Headless Debian Chromium under Debian's chromedriver, for the browser tests.

Selenium gets explicit paths, so Selenium Manager never runs (it would fetch a version list and
send telemetry), and ``SE_AVOID_STATS=true`` is set as well. The flags keep the browser off the
network: nothing but 127.0.0.1 resolves. :func:`loaded_urls` and :func:`remote` check from the
browser's own network log that a page loaded nothing from elsewhere.
"""

import base64
import contextlib
import json
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
INSTALL_HINT = "apt-get install -y --no-install-recommends chromium chromium-driver"
PAGE_LOAD_TIMEOUT_S = 30
WAIT_S = 30
LOOPBACK = {"127.0.0.1"}
LOCAL_SCHEMES = {"data", "blob", "about", "chrome", "chrome-error", "devtools"}
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-dev-shm-usage",
    "--disable-extensions",
    "--disable-default-apps",
    "--window-size=1280,1600",
    # Nothing but loopback can be reached: a page that asks for more fails the check below
    # without sending a byte off the machine.
    "--no-proxy-server",
    "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
]


@contextlib.contextmanager
def chromium() -> Iterator[Any]:
    """A headless Debian Chromium under Debian's chromedriver, with the performance log on."""
    missing = [str(path) for path in (CHROMIUM, CHROMEDRIVER) if not path.exists()]
    if missing:
        pytest.fail(f"{', '.join(missing)} not found: install them with `{INSTALL_HINT}`")
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError as error:
        pytest.fail(f"selenium is not installed (dev extra): {error}")

    with pytest.MonkeyPatch.context() as patch, tempfile.TemporaryDirectory() as tmp:
        patch.setenv("SE_AVOID_STATS", "true")  # no Selenium telemetry, whatever happens
        options = webdriver.ChromeOptions()
        options.binary_location = str(CHROMIUM)
        for flag in [*CHROMIUM_FLAGS, f"--user-data-dir={Path(tmp) / 'profile'}"]:
            options.add_argument(flag)
        options.set_capability("goog:loggingPrefs", {"performance": "ALL"})
        service = Service(
            executable_path=str(CHROMEDRIVER), log_output=str(Path(tmp) / "driver.log")
        )
        driver = webdriver.Chrome(service=service, options=options)
        try:
            driver.set_page_load_timeout(PAGE_LOAD_TIMEOUT_S)
            driver.set_script_timeout(WAIT_S)
            yield driver
        finally:
            driver.quit()


def capture(driver: Any, clip: dict[str, float]) -> bytes:
    """Return a PNG of the page area ``clip`` (x, y, width, height, in page pixels), which may
    reach beyond the viewport."""
    shot = driver.execute_cdp_cmd(
        "Page.captureScreenshot",
        {"format": "png", "captureBeyondViewport": True, "clip": {**clip, "scale": 1}},
    )
    return base64.b64decode(shot["data"])


def element_png(driver: Any, element: Any, margin: int = 8) -> bytes:
    """Return a PNG of ``element`` with ``margin`` pixels around it, wherever it is on the page."""
    x, y, width, height = driver.execute_script(
        "const r = arguments[0].getBoundingClientRect();"
        "return [r.left + window.scrollX, r.top + window.scrollY, r.width, r.height];",
        element,
    )
    return capture(
        driver,
        {
            "x": max(0, x - margin),
            "y": max(0, y - margin),
            "width": width + 2 * margin,
            "height": height + 2 * margin,
        },
    )


def page_png(driver: Any) -> bytes:
    """Return a PNG of the whole page, beyond the viewport."""
    width, height = driver.execute_script(
        "const d = document.documentElement; return [d.scrollWidth, d.scrollHeight];"
    )
    return capture(driver, {"x": 0, "y": 0, "width": width, "height": height})


def save_page_down_to(driver: Any, element: Any, path: Path) -> None:
    """Save a PNG of the page from its top to just below ``element`` (beyond the viewport)."""
    bottom, width = driver.execute_script(
        "const r = arguments[0].getBoundingClientRect();"
        "return [r.bottom + window.scrollY + 40, document.documentElement.scrollWidth];",
        element,
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(capture(driver, {"x": 0, "y": 0, "width": width, "height": bottom}))
    assert path.stat().st_size > 10_000, f"{path} is suspiciously small"


def loaded_urls(driver: Any) -> list[str]:
    """Every URL the page fetched or tried to fetch since the last call.

    From the network log, plus resource timing as a cross-check. A request the browser itself
    refused to send (``blockedReason``, e.g. by the page's Content-Security-Policy) never left
    the browser and is not counted; a request that failed on the network is.
    """
    sent: dict[str, str] = {}
    blocked: set[str] = set()
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        params = message.get("params", {})
        if message.get("method") == "Network.requestWillBeSent":
            sent[params["requestId"]] = params["request"]["url"]
        elif message.get("method") == "Network.loadingFailed" and params.get("blockedReason"):
            blocked.add(params["requestId"])
    urls = [url for request_id, url in sent.items() if request_id not in blocked]
    urls += driver.execute_script(
        "return performance.getEntriesByType('resource')"
        ".filter(e => e.responseStatus !== 0 || e.transferSize > 0).map(e => e.name)"
    )
    return urls


def remote(urls: list[str]) -> list[str]:
    return sorted(
        {
            url
            for url in urls
            if urlsplit(url).scheme not in LOCAL_SCHEMES and urlsplit(url).hostname not in LOOPBACK
        }
    )
