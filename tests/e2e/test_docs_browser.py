"""The docs in a real browser: Swagger UI and ReDoc render offline in headless Chromium.

Debian's ``chromium`` and ``chromium-driver`` are driven by Selenium with explicit paths, so
Selenium Manager never runs (it would fetch a version list and send telemetry), and
``SE_AVOID_STATS=true`` is set as well. Every resource the pages load must come from the live
server on 127.0.0.1. "Try it out" on ``/v1/cross-correlation`` sends the request model's example
and must show 200; the screenshot is kept as ``ci-artifacts/docs.png``.
"""

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.browser import (
    CHROMEDRIVER,
    CHROMIUM,
    INSTALL_HINT,
    WAIT_S,
    chromium,
    loaded_urls,
    remote,
    save_page_down_to,
)

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOT = ROOT / "ci-artifacts" / "docs.png"
TITLE = json.loads((ROOT / "openapi" / "openapi.json").read_text())["info"]["title"]
OPERATION = "cross_correlation"


def _operation_element_id() -> str:
    document = json.loads((ROOT / "openapi" / "openapi.json").read_text())
    for item in document["paths"].values():
        for operation in item.values():
            if isinstance(operation, dict) and operation.get("operationId") == OPERATION:
                return f"operations-{operation['tags'][0]}-{OPERATION}"
    pytest.fail(f"openapi.json has no operation {OPERATION}")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """A headless Debian Chromium for this module's tests."""
    with chromium() as driver:
        yield driver


def test_swagger_ui_renders_offline_and_try_it_out_answers_200(
    browser: Any, live_server: str
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    wait = WebDriverWait(browser, WAIT_S)
    browser.get_log("performance")  # start the network log empty
    browser.get(f"{live_server}/docs")
    assert TITLE in browser.title, browser.title
    heading = wait.until(ec.visibility_of_element_located((By.CSS_SELECTOR, ".info .title")))
    assert TITLE in heading.text, heading.text

    block_id = _operation_element_id()
    block = wait.until(ec.presence_of_element_located((By.ID, block_id)))
    summary = block.find_element(By.CSS_SELECTOR, ".opblock-summary")
    browser.execute_script("arguments[0].scrollIntoView({block: 'start'});", summary)
    wait.until(ec.element_to_be_clickable(summary)).click()
    try_out = (By.CSS_SELECTOR, f"#{block_id} .try-out__btn")
    wait.until(ec.element_to_be_clickable(try_out)).click()
    # The editable body is the request model's example (json_schema_extra).
    body = wait.until(
        ec.visibility_of_element_located(
            (By.CSS_SELECTOR, f"#{block_id} textarea.body-param__text")
        )
    )
    example = json.loads(body.get_attribute("value"))
    assert example["jacobian"] == "dense" and example["kernel"] == {"data": [[[1, 2]]]}, example
    execute = (By.CSS_SELECTOR, f"#{block_id} .execute")
    wait.until(ec.element_to_be_clickable(execute)).click()

    status_cell = (By.CSS_SELECTOR, f"#{block_id} .live-responses-table tbody .response-col_status")
    wait.until(ec.text_to_be_present_in_element(status_cell, "200"))
    status = browser.find_element(*status_cell)
    assert status.text.strip() == "200", status.text
    answer = browser.find_element(
        By.CSS_SELECTOR, f"#{block_id} .live-responses-table tbody .response-col_description"
    ).text
    assert '"jacobian_x"' in answer and "14" in answer and "17" in answer, answer[:500]

    save_page_down_to(browser, status, SCREENSHOT)

    urls = loaded_urls(browser)
    assert any(url.endswith("/openapi.json") for url in urls), urls
    assert any("/v1/cross-correlation" in url for url in urls), urls
    assert not remote(urls), f"/docs loaded resources from outside 127.0.0.1: {remote(urls)}"


def open_redoc(browser: Any, live_server: str) -> list[str]:
    """Open /redoc, wait until it has rendered the document; return the URLs it loaded."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get_log("performance")
    browser.get(f"{live_server}/redoc")
    assert TITLE in browser.title, browser.title
    heading = (By.CSS_SELECTOR, ".api-info h1")
    WebDriverWait(browser, WAIT_S).until(ec.text_to_be_present_in_element(heading, TITLE))
    menu = (By.CSS_SELECTOR, ".menu-content li")
    WebDriverWait(browser, WAIT_S).until(ec.presence_of_element_located(menu))
    return loaded_urls(browser)


def test_redoc_renders_offline(browser: Any, live_server: str) -> None:
    urls = open_redoc(browser, live_server)
    assert any(url.endswith("/redoc.standalone.js") for url in urls), urls


def test_redoc_loads_nothing_from_outside(browser: Any, live_server: str) -> None:
    # The bundled ReDoc 2 always renders the "API docs by Redocly" footer with an <img> from
    # cdn.redoc.ly; only the page's Content-Security-Policy (img-src 'self' data:) stops it.
    outside = remote(open_redoc(browser, live_server))
    assert not outside, (
        f"/redoc loaded resources from outside 127.0.0.1: {outside}; serve /redoc (and /docs) "
        "with a Content-Security-Policy whose img-src is 'self' data:"
    )


def test_debian_chromium_and_chromedriver_are_installed() -> None:
    for path in (CHROMIUM, CHROMEDRIVER):
        assert shutil.which(str(path)), f"{path} is missing: install it with `{INSTALL_HINT}`"
