"""GET /playground in headless Chromium against a live server: what a person sees and can do.

The oracles are independent of the page: the CONVENTIONS §2 output and Jacobian pattern written
out by hand, the server's own ``computations_in_flight`` gauge for the stop button, and the
browser's network log for "nothing leaves 127.0.0.1". Main actions are driven by the keyboard
(Enter on a focused button, Tab, arrow keys). Screenshots go to ``ci-artifacts/`` (and, with
``REGENERATE_DOCS_IMAGES=1``, to ``docs/images/`` for the README).
"""

import json
import math
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import numpy as np
import pytest

from tests.api.test_xcorr import WORKED_J
from tests.artifacts import save_artifact
from tests.e2e.browser import WAIT_S, chromium, element_png, loaded_urls, page_png, remote
from tests.e2e.live import serve
from tests.e2e.test_faults import metric

pytestmark = pytest.mark.slow
FINAL_STATUSES = ("converged_grad", "converged_f", "converged_x", "max_steps", "diverged")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with chromium() as driver:
        yield driver


@pytest.fixture(scope="module")
def network() -> list[str]:
    """Every URL the browser requested during this module's tests."""
    return []


@pytest.fixture
def page(browser: Any, live_server: str, network: list[str]) -> Iterator[Any]:
    """The playground, loaded fresh; the URLs it requests are added to ``network``."""
    open_playground(browser, live_server)
    yield browser
    network.extend(loaded_urls(browser))


def open_playground(browser: Any, base_url: str) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(f"{base_url}/playground")
    WebDriverWait(browser, WAIT_S).until(
        ec.presence_of_element_located((By.CSS_SELECTOR, "body[data-ready='true']"))
    )


def wait_for(browser: Any, condition: Callable[[Any], Any], timeout: float = WAIT_S) -> Any:
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(browser, timeout, poll_frequency=0.05).until(condition)


def by_id(browser: Any, element_id: str) -> Any:
    from selenium.webdriver.common.by import By

    return browser.find_element(By.ID, element_id)


def press(element: Any, *keys: str) -> None:
    """Focus ``element`` and send it keys, as a keyboard user would."""
    element.send_keys(*keys)


def set_value(browser: Any, element_id: str, value: str) -> None:
    from selenium.webdriver.common.keys import Keys

    field = by_id(browser, element_id)
    field.send_keys(Keys.CONTROL, "a")
    field.send_keys(value)


def choose(browser: Any, element_id: str, value: str) -> None:
    from selenium.webdriver.support.ui import Select

    Select(by_id(browser, element_id)).select_by_value(value)


def table_texts(browser: Any, element_id: str) -> list[list[str]]:
    result: list[list[str]] = browser.execute_script(
        "return Array.from(document.getElementById(arguments[0]).rows)"
        ".map(r => Array.from(r.cells).map(c => c.textContent))",
        element_id,
    )
    return result


def lit_mask(
    browser: Any, canvas_id: str, test: str = "d[k] < 250 || d[k+1] < 250 || d[k+2] < 250"
) -> np.ndarray:
    """The canvas' pixels that are not white (or pass ``test``), read back from the canvas."""
    rows: list[str] = browser.execute_script(
        "const c = document.getElementById(arguments[0]);"
        "const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;"
        "const out = [];"
        "for (let y = 0; y < c.height; y++) { let s = '';"
        "  for (let x = 0; x < c.width; x++) { const k = 4 * (y * c.width + x);"
        "    s += (" + test + ") ? '1' : '0'; }"
        "  out.push(s); }"
        "return out;",
        canvas_id,
    )
    return np.array([[ch == "1" for ch in row] for row in rows], dtype=bool)


def run_worked_example_by_keyboard(browser: Any) -> None:
    from selenium.webdriver.common.keys import Keys

    press(by_id(browser, "xc-run"), Keys.ENTER)
    wait_for(browser, lambda b: len(table_texts(b, "xc-output")) == 2)


def test_worked_example_output_spy_and_hover(page: Any) -> None:
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    run_worked_example_by_keyboard(page)
    # x = [[1, 2, 3], [4, 5, 6]] ⋆ [[1, 2]]: 1 + 4, 2 + 6, 4 + 10, 5 + 12.
    assert table_texts(page, "xc-output") == [["5", "8"], ["14", "17"]]
    assert table_texts(page, "xc-input") == [["1", "2", "3"], ["4", "5", "6"]]

    lit = lit_mask(page, "xc-spy")
    cell = int(by_id(page, "xc-spy").get_attribute("data-cell"))
    assert lit.shape == (6 * cell, 4 * cell)
    assert np.array_equal(lit, np.kron(np.array(WORKED_J) != 0, np.ones((cell, cell), bool)))
    assert "6 × 4, nnz 8" in by_id(page, "xc-spy-caption").text

    # Hover output[1, 1] = 17: column 1 + 1·2 = 3 of J (order F), reading x[0,1,1] and x[0,1,2].
    target = page.find_element(By.CSS_SELECTOR, "#xc-output tr:nth-child(2) td:nth-child(2)")
    ActionChains(page).move_to_element(target).perform()
    wait_for(page, lambda b: "column 3" in by_id(b, "xc-selection").text)
    read = page.execute_script(
        "return Array.from(document.querySelectorAll('#xc-input td.read'))"
        ".map(c => [Number(c.dataset.i), Number(c.dataset.j)])"
    )
    assert sorted(map(tuple, read)) == [(1, 1), (1, 2)]
    highlighted = lit_mask(page, "xc-spy-overlay", test="d[k+3] > 0")  # painted, not clear
    assert highlighted[:, 3 * cell : 4 * cell].all() and not highlighted[:, : 3 * cell].any()

    # The keyboard does the same: the first output cell takes focus, ArrowRight moves to [0, 1].
    first = page.find_element(By.CSS_SELECTOR, "#xc-output td")
    press(first, Keys.ARROW_RIGHT)
    wait_for(page, lambda b: "output[0, 1] is column 2" in by_id(b, "xc-selection").text)
    save_artifact("playground-xcorr.png", element_png(page, by_id(page, "xcorr")), docs=True)


def test_strided_random_image_with_an_edge_kernel(page: Any) -> None:
    from selenium.webdriver.common.keys import Keys

    choose(page, "xc-image", "random")
    choose(page, "xc-kernel", "sobel-x")
    set_value(page, "xc-stride-h", "2")
    set_value(page, "xc-stride-w", "2")
    choose(page, "xc-padding", "same")
    press(by_id(page, "xc-stride-w"), Keys.ENTER)  # Enter in a field submits its form
    # 8 x 8 with stride 2 and SAME padding: 4 x 4 outputs of 9 reads each (fewer at the edges).
    wait_for(page, lambda b: len(table_texts(b, "xc-output")) == 4)
    assert "64 × 16" in by_id(page, "xc-spy-caption").text


def test_hover_on_a_density_raster_highlights_the_block_column(page: Any) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    # A random 32 x 32 image and a 3 x 3 kernel: J is 1024 x 900, drawn in blocks of 3 entries.
    choose(page, "xc-image", "random")
    choose(page, "xc-kernel", "box")
    set_value(page, "xc-height", "32")
    set_value(page, "xc-width", "32")
    press(by_id(page, "xc-run"), Keys.ENTER)
    wait_for(page, lambda b: len(table_texts(b, "xc-output")) == 30)
    spy = by_id(page, "xc-spy")
    assert spy.get_attribute("data-block") == "3" and spy.get_attribute("data-cell") == "1"
    assert (int(spy.get_attribute("width")), int(spy.get_attribute("height"))) == (300, 342)
    # output[0, 1] is column 0 + 1 * 30 = 30 of J (order F): pixel column 30 // 3 = 10.
    press(page.find_element(By.CSS_SELECTOR, "#xc-output td"), Keys.ARROW_RIGHT)
    wait_for(page, lambda b: "output[0, 1] is column 30" in by_id(b, "xc-selection").text)
    highlighted = lit_mask(page, "xc-spy-overlay", test="d[k+3] > 0")
    assert highlighted[:, 10].all() and highlighted.sum() == highlighted.shape[0]


def test_drawn_image_is_edited_with_the_keyboard(page: Any) -> None:
    from selenium.webdriver.common.keys import Keys

    choose(page, "xc-image", "drawn")
    editor = by_id(page, "xc-draw")
    assert editor.is_displayed()
    press(editor, Keys.ARROW_RIGHT, Keys.SPACE)  # cursor to (0, 1), switch it on
    assert "cursor at row 0, column 1" in editor.get_attribute("aria-label")
    press(by_id(page, "xc-run"), Keys.ENTER)
    # 8 x 8 drawn image with the [[1, 2]] kernel: 8 x 7 outputs.
    wait_for(page, lambda b: len(table_texts(b, "xc-output")) == 8)
    assert table_texts(page, "xc-input")[0][1] == "1"


# The function panel's default program: tanh(xcorr2d(x, k)) for x = [[0.1, 0.2, 0.3],
# [0.4, 0.5, 0.6]] and k = [[1, 2]], i.e. tanh of the worked example's correlation of that x.
FUNCTION_VALUE = np.tanh([[0.5, 0.8], [1.4, 1.7]])
# ∂h/∂k (in_out, order F): output (i, j) = k0 x[i, j] + k1 x[i, j + 1], and every x is non-zero
# (tanh' > 0), so both kernel rows are non-zero in all 4 output columns.
KERNEL_J_PATTERN = np.ones((2, 4), dtype=bool)


def spy_pattern(browser: Any, canvas_id: str, pattern: np.ndarray) -> None:
    """Assert the spy canvas lights exactly ``pattern``, one square of cell pixels per entry."""
    cell = int(by_id(browser, canvas_id).get_attribute("data-cell"))
    expected = np.kron(pattern, np.ones((cell, cell), bool))
    assert np.array_equal(lit_mask(browser, canvas_id), expected)


def run_function(browser: Any) -> str:
    """Press Enter on the function panel's button; return the check line once the answer is in."""
    from selenium.webdriver.common.keys import Keys

    press(by_id(browser, "fn-run"), Keys.ENTER)
    return str(wait_for(browser, lambda b: by_id(b, "fn-check-result").text))


def test_function_panel_expression_value_spies_and_check(page: Any) -> None:
    assert by_id(page, "fn-form").get_attribute("value") == "expression"  # the default form
    check = run_function(page)
    assert "Finite-difference check passed" in check, check
    value = np.array(json.loads(by_id(page, "fn-value").text))
    np.testing.assert_allclose(value, FUNCTION_VALUE, rtol=1e-12)
    spy_pattern(page, "fn-spy-x", np.array(WORKED_J) != 0)
    spy_pattern(page, "fn-spy-k", KERNEL_J_PATTERN)
    assert "∂h/∂k: 2 × 4, nnz 8" in by_id(page, "fn-spy-k-caption").text

    # Only the kernel: one spy plot.
    set_value(page, "fn-wrt", "k")
    run_function(page)
    wait_for(page, lambda b: not b.find_elements("id", "fn-spy-x"))
    spy_pattern(page, "fn-spy-k", KERNEL_J_PATTERN)
    save_artifact("playground-function.png", element_png(page, by_id(page, "function")), docs=True)


def test_a_large_jacobian_is_a_density_raster_on_the_page(page: Any) -> None:
    # h = x[1:] * x[:-1] for x of size 1000 (no zeros): ∂h_j/∂x_j = x_{j+1}, ∂h_j/∂x_{j+1} = x_j,
    # so J (in_out, 1000 x 999) has its non-zeros at (j, j) and (j + 1, j).
    n = 1000
    inputs = json.dumps({"x": list(range(1, n + 1))})
    page.execute_script("document.getElementById('fn-inputs').value = arguments[0]", inputs)
    set_value(page, "fn-expression", "x[1:] * x[:-1]")
    run_function(page)
    wait_for(page, lambda b: b.find_elements("id", "fn-spy-x"))
    spy = by_id(page, "fn-spy-x")
    block = int(spy.get_attribute("data-block"))
    assert block == math.ceil(n / 360) and spy.get_attribute("data-cell") == "1"
    # Block counts computed here from the formula above.
    j = np.arange(n - 1)
    rows, cols = np.concatenate([j, j + 1]), np.concatenate([j, j])
    counts = np.zeros((math.ceil(n / block), math.ceil((n - 1) / block)), dtype=np.int64)
    np.add.at(counts, (rows // block, cols // block), 1)
    assert np.array_equal(lit_mask(page, "fn-spy-x"), counts > 0)
    # Denser blocks are darker: the red channel falls as the count rises.
    red = np.array(
        page.execute_script(
            "const c = document.getElementById('fn-spy-x');"
            "const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;"
            "return Array.from(d.filter((_, k) => k % 4 === 0));"
        )
    ).reshape(counts.shape)
    by_count = {int(c): set(red[counts == c].tolist()) for c in np.unique(counts[counts > 0])}
    assert all(len(shades) == 1 for shades in by_count.values()), by_count
    shades = [next(iter(by_count[c])) for c in sorted(by_count)]
    assert shades == sorted(shades, reverse=True) and len(set(shades)) == len(shades)


def test_function_panel_operation_list_is_checked(page: Any) -> None:
    choose(page, "fn-form", "ops")
    assert by_id(page, "fn-x").is_displayed() and not by_id(page, "fn-expression").is_displayed()
    check = run_function(page)
    assert "Finite-difference check passed" in check, check
    value = np.array(json.loads(by_id(page, "fn-value").text))
    np.testing.assert_allclose(value, FUNCTION_VALUE, rtol=1e-12)
    spy_pattern(page, "fn-spy-x", np.array(WORKED_J) != 0)


def test_expression_errors_are_shown_at_their_fields(page: Any) -> None:
    from selenium.webdriver.common.keys import Keys

    set_value(page, "fn-expression", "tanh(xcorr2d(x, k)")  # unclosed: the parser refuses it
    press(by_id(page, "fn-run"), Keys.ENTER)
    message = wait_for(page, lambda b: by_id(b, "fn-expression-error").text)
    assert "never closed" in message
    assert by_id(page, "fn-expression").get_attribute("aria-invalid") == "true"
    assert "422" in by_id(page, "function-error").text
    # The op-list form's field with the same pointer (/function) is hidden and stays clean.
    assert by_id(page, "fn-ops-error").get_attribute("textContent") == ""
    assert by_id(page, "fn-inputs-error").text == ""

    set_value(page, "fn-expression", "tanh(xcorr2d(x, k))")
    set_value(page, "fn-inputs", '{"x": [[1, 2], [3]], "k": [[[1, 2]]]}')  # ragged
    press(by_id(page, "fn-run"), Keys.ENTER)
    message = wait_for(page, lambda b: by_id(b, "fn-inputs-error").text)
    assert "ragged" in message
    assert by_id(page, "fn-expression-error").text == ""

    set_value(page, "fn-inputs", '{"x": [[[1, 2, 3]]], "k": [[[1, 2]]]}')
    set_value(page, "fn-wrt", "q")
    press(by_id(page, "fn-run"), Keys.ENTER)
    message = wait_for(page, lambda b: by_id(b, "fn-wrt-error").text)
    assert "'q'" in message and "not an input" in message
    save_artifact("playground-function-error.png", element_png(page, by_id(page, "function")))


def run_descent_by_keyboard(browser: Any, loss: str, learning_rate: str, steps: str) -> None:
    """Fill the descent form, Tab from its last field to Run and press Enter."""
    from selenium.webdriver.common.keys import Keys

    choose(browser, "gd-loss", loss)
    set_value(browser, "gd-lr", learning_rate)
    set_value(browser, "gd-steps", steps)
    press(by_id(browser, "gd-grad-tol"), Keys.TAB)
    assert browser.switch_to.active_element.get_attribute("id") == "gd-run"
    press(browser.switch_to.active_element, Keys.ENTER)


def final_status(browser: Any) -> str:
    """Wait until the run has ended by a stopping rule; return that rule."""

    def ended(b: Any) -> str | None:
        status = by_id(b, "gd-status").get_attribute("data-status")
        return status if status in FINAL_STATUSES else None

    return str(wait_for(browser, ended))


def test_a_200_step_descent_draws_its_curve_and_status(page: Any) -> None:
    run_descent_by_keyboard(page, "quadratic", "0.1", "200")
    assert final_status(page) == "max_steps"
    assert "step 200: max_steps = 200 reached" in by_id(page, "gd-status").text
    assert by_id(page, "gd-points").text == "201"
    for chart in ("gd-f-chart", "gd-g-chart"):
        # The curve: a line of coloured (not grey, not white) pixels across the plot.
        coloured = page.execute_script(
            "const c = document.getElementById(arguments[0]);"
            "const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;"
            "const columns = new Set();"
            "for (let k = 0; k < d.length; k += 4) {"
            "  if (Math.max(d[k], d[k+1], d[k+2]) - Math.min(d[k], d[k+1], d[k+2]) > 60)"
            "    columns.add((k / 4) % c.width); }"
            "return columns.size;",
            chart,
        )
        assert coloured > 400, (chart, coloured)
    save_artifact("playground-descent.png", element_png(page, by_id(page, "descent")), docs=True)


def test_stop_ends_the_server_computation(page: Any, live_server: str) -> None:
    from selenium.webdriver.common.keys import Keys

    with httpx.Client(base_url=live_server, timeout=10) as client:
        assert metric(client, "computations_in_flight") == 0
        run_descent_by_keyboard(page, "deblur", "0.5", "100000")
        run_button = page.switch_to.active_element
        wait_for(page, lambda b: int(by_id(b, "gd-points").text) >= 2)
        assert metric(client, "computations_in_flight") == 1  # the run holds its slot
        press(run_button, Keys.TAB)  # focus moves to Stop
        assert page.switch_to.active_element.get_attribute("id") == "gd-stop"
        press(page.switch_to.active_element, Keys.ENTER)
        wait_for(page, lambda b: by_id(b, "gd-status").get_attribute("data-status") == "stopped")
        wait_for(page, lambda _: metric(client, "computations_in_flight") == 0, timeout=10)
    assert int(by_id(page, "gd-points").text) < 100000 // 200 + 1
    assert "stopped by you" in by_id(page, "gd-status").text


def test_a_422_is_shown_at_its_field(page: Any) -> None:
    from selenium.webdriver.common.keys import Keys

    set_value(page, "xc-stride-h", "0")
    press(by_id(page, "xc-run"), Keys.ENTER)
    message = wait_for(page, lambda b: by_id(b, "xc-stride-h-error").text)
    assert "greater than or equal to 1" in message
    assert by_id(page, "xc-stride-h").get_attribute("aria-invalid") == "true"
    assert "422" in by_id(page, "xcorr-error").text
    assert by_id(page, "xc-stride-w-error").text == ""

    set_value(page, "gd-lr", "0")
    press(by_id(page, "gd-run"), Keys.ENTER)
    message = wait_for(page, lambda b: by_id(b, "gd-lr-error").text)
    assert "greater than 0" in message
    save_artifact("playground-error.png", element_png(page, by_id(page, "xcorr")))


def test_every_control_has_a_label(page: Any) -> None:
    unlabelled = page.execute_script(
        "const bad = [];"
        "for (const el of document.querySelectorAll('input, select, textarea, button, canvas')) {"
        "  const named = (el.labels && el.labels.length) || el.getAttribute('aria-label')"
        "    || el.getAttribute('aria-labelledby') || el.getAttribute('aria-hidden') === 'true'"
        "    || (el.tagName === 'BUTTON' && el.textContent.trim());"
        "  if (!named) bad.push(el.id || el.outerHTML.slice(0, 80)); }"
        "return bad;"
    )
    assert unlabelled == []


def test_the_api_key_is_sent_from_session_storage(browser: Any, network: list[str]) -> None:
    from selenium.webdriver.common.keys import Keys

    with serve({"SERVICE_API_KEYS": "playground-secret"}) as server:
        open_playground(browser, server.base_url)
        press(by_id(browser, "xc-run"), Keys.ENTER)
        wait_for(browser, lambda b: "401" in by_id(b, "xcorr-error").text)
        set_value(browser, "api-key", "playground-secret")
        stored = browser.execute_script("return sessionStorage.getItem('jacobian-service.api-key')")
        assert stored == "playground-secret"
        run_worked_example_by_keyboard(browser)
        assert table_texts(browser, "xc-output") == [["5", "8"], ["14", "17"]]
        network.extend(loaded_urls(browser))


def test_nothing_left_127_0_0_1(page: Any, network: list[str]) -> None:
    # This test's own requests (every panel, for the README's picture of the whole page), and
    # every other test's before it in this module.

    run_worked_example_by_keyboard(page)
    run_function(page)
    run_descent_by_keyboard(page, "quadratic", "0.1", "200")
    final_status(page)
    urls = network + loaded_urls(page)
    assert any(url.endswith("/playground/playground.js") for url in urls), urls
    assert any(url.endswith("/v1/gradient-descent") for url in urls), urls
    assert not remote(urls), remote(urls)
    save_artifact("playground.png", page_png(page), docs=True)


def test_docs_link_to_the_playground(live_server: str) -> None:
    document = httpx.get(f"{live_server}/openapi.json").json()
    assert "(/playground)" in document["info"]["description"]
    page = httpx.get(f"{live_server}/playground")
    assert page.headers["content-type"].startswith("text/html")
    policy = page.headers["content-security-policy"]
    assert "default-src 'self'" in policy and "connect-src 'self'" in policy
