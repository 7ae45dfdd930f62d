"""Pictures as representations (``Accept: image/png`` / ``image/svg+xml``).

The oracles are independent of the drawing code: the CONVENTIONS §2 Jacobian written out by
hand, block counts of the COO answer computed here with ``np.add.at``, matplotlib's own
``viridis_r`` table as the colour scale the service documents, and Pillow to decode.
"""

import base64
import io
import math
import re
import time
import tracemalloc
from collections.abc import AsyncIterator

import httpx
import numpy as np
import pytest
import scipy.sparse as sp
from matplotlib import colormaps
from PIL import Image

from service.config import Settings
from service.engine.jacobian import Jacobian
from service.main import create_app
from service.pictures import spy_picture
from tests.api.test_bounded_work import LONG_DESCENT
from tests.api.test_xcorr import WORKED_J as XCORR_WORKED_J
from tests.api.test_xcorr import b64
from tests.artifacts import save_artifact

pytestmark = pytest.mark.anyio
XCORR = "/v1/cross-correlation"
PNG = {"accept": "image/png"}
SVG = {"accept": "image/svg+xml"}
WHITE = (255, 255, 255)
# The documented raster bound (README): at most this many blocks along each side.
MAX_RASTER_PX = 768

# CONVENTIONS §2 worked example, with the Jacobian as the conventions write it (test_xcorr).
WORKED = {"x": {"data": [[[1, 2, 3], [4, 5, 6]]]}, "kernel": {"data": [[[1, 2]]]}}
WORKED_J = np.array(XCORR_WORKED_J)


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=create_app(Settings()))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
        yield c


def decode_png(response: httpx.Response) -> Image.Image:
    assert response.status_code == 200, response.text[:500]
    assert response.headers["content-type"] == "image/png"
    assert response.headers["vary"] == "Accept"
    image = Image.open(io.BytesIO(response.content))
    image.load()
    assert image.format == "PNG"
    width, height = image.size
    assert width <= 1024 and height <= 1024, image.size
    return image


def raster_of(image: Image.Image) -> np.ndarray:
    """The raster the PNG says it holds (tEXt 'raster' = left,top,width,height), as RGB."""
    left, top, width, height = (int(v) for v in image.text["raster"].split(","))
    pixels = np.asarray(image.convert("RGB"))
    return pixels[top : top + height, left : left + width]


def lit(raster: np.ndarray) -> np.ndarray:
    return np.any(raster != WHITE, axis=-1)


def svg_texts(svg: str) -> str:
    """The text of every <text> element (fonttype 'none' keeps labels as text)."""
    return " ".join(re.sub(r"<[^>]+>", "", m) for m in re.findall(r"<text[^>]*>.*?</text>", svg))


@pytest.mark.parametrize(
    ("layout", "pattern"), [("in_out", WORKED_J != 0), ("out_in", WORKED_J.T != 0)]
)
async def test_worked_example_spy_lights_exactly_the_non_zeros(
    client: httpx.AsyncClient, layout: str, pattern: np.ndarray
) -> None:
    body = {**WORKED, "jacobian": "coo", "layout": layout}
    response = await client.post(XCORR, json=body, headers=PNG)
    raster = raster_of(decode_png(response))
    rows, cols = pattern.shape
    assert raster.shape[0] % rows == 0 and raster.shape[1] % cols == 0, raster.shape
    cell_h, cell_w = raster.shape[0] // rows, raster.shape[1] // cols
    # Each entry is a block of pixels: lit exactly where the hand-written J is non-zero.
    expected = np.kron(pattern, np.ones((cell_h, cell_w), dtype=bool))
    assert np.array_equal(lit(raster), expected)
    if layout == "in_out":
        save_artifact("spy-worked-example.png", response.content, docs=True)


async def test_dense_request_draws_the_same_spy_plot(client: httpx.AsyncClient) -> None:
    coo = await client.post(XCORR, json={**WORKED, "jacobian": "coo"}, headers=PNG)
    dense = await client.post(XCORR, json={**WORKED, "jacobian": "dense"}, headers=PNG)
    assert coo.content == dense.content


async def test_spy_svg_names_shape_nnz_axes_and_layout(client: httpx.AsyncClient) -> None:
    response = await client.post(XCORR, json={**WORKED, "jacobian": "coo"}, headers=SVG)
    assert response.status_code == 200
    assert response.headers["content-type"] == "image/svg+xml"
    text = svg_texts(response.text)
    for expected in (
        "6 × 4, nnz 8",
        "layout in_out, order F",
        "rows: input (x) flat index",
        "order F over shape (1, 2, 3)",
        "columns: output flat index",
        "order F over shape (2, 2)",
    ):
        assert expected in text, (expected, text)
    again = await client.post(XCORR, json={**WORKED, "jacobian": "coo"}, headers=SVG)
    assert again.content == response.content  # reproducible bytes


async def test_kernel_jacobian_is_labelled_by_the_kernel(client: httpx.AsyncClient) -> None:
    body = {**WORKED, "jacobian": "coo", "wrt": ["kernel"]}
    text = svg_texts((await client.post(XCORR, json=body, headers=SVG)).text)
    # ∂output/∂kernel of the worked example: 2 kernel entries x 4 outputs, all non-zero.
    assert "∂output/∂kernel: 2 × 4, nnz 8" in text
    assert "rows: input (kernel) flat index" in text and "shape (1, 1, 2)" in text


async def test_large_jacobian_is_a_density_raster_of_block_counts(
    client: httpx.AsyncClient, rng: np.random.Generator
) -> None:
    x = rng.standard_normal((2, 40, 500))
    kernel = rng.standard_normal((2, 3, 3))
    body = {
        "x": b64(x),
        "kernel": b64(kernel),
        "stride": [2, 2],
        "padding": "same",
        "jacobian": "coo",
        "encoding": "base64",
    }
    answer = (await client.post(XCORR, json=body)).json()["jacobian_x"]
    n_rows, n_cols = answer["shape"]
    row = np.frombuffer(base64.b64decode(answer["row"]), dtype="<i8")
    col = np.frombuffer(base64.b64decode(answer["col"]), dtype="<i8")
    # Independent block counts: blocks of ceil(n / 768) entries, counted with np.add.at.
    block_h = math.ceil(n_rows / MAX_RASTER_PX) if n_rows > MAX_RASTER_PX else 1
    block_w = math.ceil(n_cols / MAX_RASTER_PX) if n_cols > MAX_RASTER_PX else 1
    assert block_h > 1 and block_w > 1, (n_rows, n_cols)
    counts = np.zeros((math.ceil(n_rows / block_h), math.ceil(n_cols / block_w)), dtype=np.int64)
    np.add.at(counts, (row // block_h, col // block_w), 1)
    assert counts.sum() == answer["nnz"]

    response = await client.post(XCORR, json=body, headers=PNG)
    raster = raster_of(decode_png(response))
    assert raster.shape[:2] == counts.shape  # one pixel per block
    assert np.array_equal(lit(raster), counts > 0)
    # Colour = viridis_r(count / max count): recover the table index of every lit pixel.
    table = (colormaps["viridis_r"](np.arange(256))[:, :3] * 255).round().astype(np.int64)
    pixels = raster[counts > 0].astype(np.int64)
    index = np.argmin(((pixels[:, None, :] - table[None, :, :]) ** 2).sum(-1), axis=1)
    expected = np.minimum((counts[counts > 0] / counts.max() * 256).astype(np.int64), 255)
    assert np.abs(index - expected).max() <= 1
    save_artifact("spy-density.png", response.content, docs=True)


def banded_coo(n_rows: int, n_cols: int, nnz: int) -> sp.coo_array:
    """A banded COO with ``nnz`` entries (nnz / n_cols per column), column-major.

    Not sorted row-major (canonical): counting blocks does not depend on the entry order, and
    sorting 10^7 entries would be most of this test's time.
    """
    per_col = nnz // n_cols
    col = np.repeat(np.arange(n_cols, dtype=np.int32), per_col)
    offsets = np.tile(np.arange(per_col, dtype=np.int32), n_cols)
    row = (col.astype(np.int64) * (n_rows - per_col) // n_cols + offsets).astype(np.int32)
    return sp.coo_array((np.ones(row.size), (row, col)), shape=(n_rows, n_cols))


def test_a_ten_million_nnz_plot_stays_within_bounded_memory_and_time() -> None:
    coo = banded_coo(1_009_000, 1_000_000, 10_000_000)
    assert coo.nnz == 10_000_000
    jacobian = Jacobian(coo, (1, 1000, 1009), (1000, 1000), "in_out", "F")
    coo_bytes = coo.row.nbytes + coo.col.nbytes + coo.data.nbytes
    tracemalloc.start()
    try:
        start = time.perf_counter()
        png = spy_picture("output", "x", jacobian, "image/png")
        elapsed = time.perf_counter() - start
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    settings = Settings()
    # The dense matrix would be 8 TB; the plot's transient memory is chunks and a raster.
    assert peak < 64 * 2**20 < coo_bytes, (peak, coo_bytes)
    assert settings.max_coo_nnz >= coo.nnz
    assert elapsed < 10.0 < settings.descent_deadline_seconds, elapsed
    image = Image.open(io.BytesIO(png))
    assert image.size[0] <= 1024 and image.size[1] <= 1024


async def test_ten_million_nnz_spy_plot_through_the_api(client: httpx.AsyncClient) -> None:
    # x (1, 1000, 1009) with a (1, 1, 10) kernel: 10^6 outputs reading 10 inputs each.
    x = np.ones((1, 1000, 1009))
    body = {"x": b64(x), "kernel": b64(np.ones((1, 1, 10))), "jacobian": "coo"}
    start = time.perf_counter()
    image = decode_png(await client.post(XCORR, json=body, headers=PNG))
    elapsed = time.perf_counter() - start
    assert image.text["blocks"] == f"{math.ceil(1_009_000 / 768)},{math.ceil(1_000_000 / 768)}"
    assert elapsed < Settings().descent_deadline_seconds


# About a second or more of work each, computing and drawing: the 10^7-nnz spy plot, and the
# heatmaps of a 30 x 30 kernel over an image padded by 400 (830^2 outputs x 900 taps).
SLOW_PICTURES = {
    "spy": {
        "x": b64(np.ones((1, 1000, 1009))),
        "kernel": b64(np.ones((1, 1, 10))),
        "jacobian": "coo",
    },
    "heatmaps": {
        "x": {"data": [[[1.0]]]},
        "kernel": b64(np.ones((1, 30, 30))),
        "padding": [[400, 400], [400, 400]],
    },
}


@pytest.mark.parametrize("kind", sorted(SLOW_PICTURES))
async def test_a_picture_past_its_deadline_stops_with_the_deadline_problem(kind: str) -> None:
    # The picture stops at a checkpoint, as its JSON answer would. 10 ms: building the 10^7
    # entries alone takes longer; with 0.1 s a quiet machine with warm caches counted every
    # chunk in time (a 200 in a clean-clone CI run).
    app = create_app(Settings(computation_deadline_seconds=0.01))
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
        response = await c.post(XCORR, json=SLOW_PICTURES[kind], headers=PNG)
    assert response.status_code == 504, response.text[:300]
    assert response.json()["type"] == "/problems/deadline-exceeded"
    assert app.state.computations.busy == 0


async def test_a_descent_picture_past_its_deadline_draws_the_deadline_status() -> None:
    # Minutes of work (the bounded-work suite's long descent); descent ends with status
    # 'deadline' (not a 504), and its picture says so.
    app = create_app(Settings(computation_deadline_seconds=0.1))
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    body = {**LONG_DESCENT, "record_every": 1000}
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
        response = await c.post("/v1/gradient-descent", json=body, headers=SVG)
    assert response.status_code == 200
    assert "gradient descent: deadline at step" in svg_texts(response.text)


async def test_heatmaps_of_input_kernel_and_output(client: httpx.AsyncClient) -> None:
    png = await client.post(XCORR, json=WORKED, headers=PNG)
    image = decode_png(png)
    assert image.size == (990, 300)
    save_artifact("xcorr-heatmaps.png", png.content, docs=True)
    svg = await client.post(XCORR, json=WORKED, headers=SVG)
    text = svg_texts(svg.text)
    assert "x[c=0] (2 × 3)" in text and "kernel[c=0] (1 × 2)" in text and "output (2 × 2)" in text
    # Small maps print their values: the output of the worked example is [[5, 8], [14, 17]].
    for value in ("5", "8", "14", "17"):
        assert f">{value}<" in svg.text or f" {value} " in f" {text} "


def svg_text_positions(svg: str) -> dict[str, tuple[float, float]]:
    """Each <text> element's text and its anchor (x, y) in SVG user units (y down)."""
    found = re.findall(r'<text[^>]* x="([-\d.]+)" y="([-\d.]+)"[^>]*>([^<]*)</text>', svg)
    return {text: (float(x), float(y)) for x, y, text in found}


async def test_heatmaps_put_channels_kernel_and_output_side_by_side(
    client: httpx.AsyncClient, rng: np.random.Generator
) -> None:
    # Two channels: x[c=0] above x[c=1] in the first column, the kernel's channels in the
    # second, the one output map in the third.
    body = {"x": b64(rng.standard_normal((2, 5, 6))), "kernel": b64(rng.standard_normal((2, 1, 3)))}
    svg = await client.post(XCORR, json=body, headers=SVG)
    positions = svg_text_positions(svg.text)
    width = float(re.search(r'<svg[^>]* width="([\d.]+)pt"', svg.text).group(1))
    columns = {
        0: ["x[c=0] (5 × 6)", "x[c=1] (5 × 6)"],
        1: ["kernel[c=0] (1 × 3)", "kernel[c=1] (1 × 3)"],
        2: ["output (5 × 4)"],
    }
    for column, titles in columns.items():
        for title in titles:
            x, _ = positions[title]
            assert column * width / 3 < x < (column + 1) * width / 3, (title, x, width)
        ys = [positions[title][1] for title in titles]
        assert ys == sorted(ys)  # channels go down the column


async def test_two_jacobians_have_no_single_picture(client: httpx.AsyncClient) -> None:
    body = {**WORKED, "jacobian": "coo", "wrt": ["x", "kernel"]}
    response = await client.post(XCORR, json=body, headers=PNG)
    assert response.status_code == 406
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["type"] == "/problems/not-acceptable"
    assert "one Jacobian" in response.json()["detail"]


async def test_errors_stay_problem_json_when_a_picture_is_asked(
    client: httpx.AsyncClient,
) -> None:
    response = await client.post(XCORR, json={**WORKED, "stride": [0, 1]}, headers=PNG)
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["errors"][0]["pointer"] == "/stride/0"


@pytest.mark.parametrize(
    "accept", [None, "*/*", "application/json", "application/json, image/png;q=0.5"]
)
async def test_json_stays_the_answer_unless_a_picture_is_preferred(
    client: httpx.AsyncClient, accept: str | None
) -> None:
    headers = {"accept": accept} if accept else {}
    response = await client.post(XCORR, json=WORKED, headers=headers)
    assert response.headers["content-type"] == "application/json"
    assert response.json()["output"]["data"] == [[5.0, 8.0], [14.0, 17.0]]


async def test_jacobian_endpoint_spy_plot(client: httpx.AsyncClient) -> None:
    # h = tanh(xcorr2d(x, [[[1, 2]]])): same pattern as the worked example (tanh' > 0).
    body = {
        "x": {"data": [[[0.1, 0.2, 0.3], [0.4, 0.5, 0.6]]]},
        "function": [{"op": "xcorr2d", "kernel": {"data": [[[1, 2]]]}}, {"op": "tanh"}],
        "format": "dense",
    }
    image = decode_png(await client.post("/v1/jacobian", json=body, headers=PNG))
    raster = raster_of(image)
    cell_h, cell_w = raster.shape[0] // 6, raster.shape[1] // 4
    assert np.array_equal(lit(raster), np.kron(WORKED_J != 0, np.ones((cell_h, cell_w), bool)))
    svg = await client.post("/v1/jacobian", json=body, headers=SVG)
    assert "∂h/∂x: 6 × 4, nnz 8" in svg_texts(svg.text)


# h(a, b) = a * b[::2] + b[1::2] for a of size n and b of size 2n: output j reads b[2j] (times
# a[j], never 0 here) and b[2j + 1], so ∂h/∂b (in_out) is non-zero exactly at (2j, j), (2j + 1, j).
PROGRAM = "a * b[::2] + b[1::2]"


def program_body(n: int, **extra: object) -> dict[str, object]:
    inputs = {"a": {"data": list(range(1, n + 1))}, "b": {"data": [0.5] * (2 * n)}}
    return {"inputs": inputs, "function": PROGRAM, **extra}


def program_pattern_b(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows and columns of the non-zeros of ∂h/∂b, from the formula above."""
    j = np.arange(n)
    return np.concatenate([2 * j, 2 * j + 1]), np.concatenate([j, j])


async def test_program_spy_plot_of_the_one_input_in_wrt(client: httpx.AsyncClient) -> None:
    n = 4
    body = program_body(n, wrt=["b"], format="dense")
    image = decode_png(await client.post("/v1/jacobian", json=body, headers=PNG))
    raster = raster_of(image)
    pattern = np.zeros((2 * n, n), dtype=bool)
    pattern[program_pattern_b(n)] = True
    cell_h, cell_w = raster.shape[0] // (2 * n), raster.shape[1] // n
    assert np.array_equal(lit(raster), np.kron(pattern, np.ones((cell_h, cell_w), bool)))
    text = svg_texts((await client.post("/v1/jacobian", json=body, headers=SVG)).text)
    for expected in ("∂h/∂b: 8 × 4, nnz 8", "rows: input (b) flat index", "shape (8,)"):
        assert expected in text, (expected, text)


async def test_large_program_jacobian_is_a_density_raster(client: httpx.AsyncClient) -> None:
    n = 1000  # ∂h/∂b is 2000 x 1000: blocks of 3 rows x 2 columns
    body = program_body(n, wrt=["b"])
    image = decode_png(await client.post("/v1/jacobian", json=body, headers=PNG))
    row, col = program_pattern_b(n)
    block_h, block_w = math.ceil(2 * n / MAX_RASTER_PX), math.ceil(n / MAX_RASTER_PX)
    counts = np.zeros((math.ceil(2 * n / block_h), math.ceil(n / block_w)), dtype=np.int64)
    np.add.at(counts, (row // block_h, col // block_w), 1)
    assert image.text["blocks"] == f"{block_h},{block_w}"
    assert image.text["peak"] == str(counts.max())
    raster = raster_of(image)
    assert raster.shape[:2] == counts.shape
    assert np.array_equal(lit(raster), counts > 0)


async def test_a_gradient_is_one_column_with_integer_ticks(client: httpx.AsyncClient) -> None:
    # A scalar function of 4 inputs: J (in_out) is 4 x 1, every entry non-zero (Rosenbrock's
    # gradient at this point has no zero), and its axes index entries: integer ticks only.
    body = {
        "inputs": {"x": {"data": [-1.2, 1.0, 3.0, 4.0]}},
        "function": "sum(100 * (x[1:] - x[:-1] ** 2) ** 2 + (1 - x[:-1]) ** 2)",
    }
    raster = raster_of(decode_png(await client.post("/v1/jacobian", json=body, headers=PNG)))
    assert lit(raster).all()
    svg = (await client.post("/v1/jacobian", json=body, headers=SVG)).text
    assert "∂h/∂x: 4 × 1, nnz 4" in svg_texts(svg)
    texts = re.findall(r"<text[^>]*>([^<]*)</text>", svg)
    numbers = [text for text in texts if re.fullmatch(r"[-−\d.]+", text)]
    assert sorted(numbers) == ["0", "0", "1", "2", "3"], numbers  # one column, four rows


async def test_a_program_with_several_jacobians_has_no_single_picture(
    client: httpx.AsyncClient,
) -> None:
    for body in (program_body(3), program_body(3, wrt=["a", "b"])):
        response = await client.post("/v1/jacobian", json=body, headers=PNG)
        assert response.status_code == 406
        assert response.headers["content-type"] == "application/problem+json"
        assert "one Jacobian" in response.json()["detail"]
        assert "['a', 'b']" in response.json()["detail"]


async def test_program_pictures_obey_the_computation_limits() -> None:
    settings = Settings(max_coo_nnz=100)
    transport = httpx.ASGITransport(app=create_app(settings))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as small:
        body = program_body(100, wrt=["b"])  # 200 non-zeros
        as_json = await small.post("/v1/jacobian", json=body)
        as_png = await small.post("/v1/jacobian", json=body, headers=PNG)
    assert as_json.status_code == as_png.status_code == 413
    assert as_png.headers["content-type"] == "application/problem+json"
    assert as_png.json()["type"] == as_json.json()["type"] == "/problems/limit-exceeded"
    assert as_png.json()["estimate"] == as_json.json()["estimate"]


def line_points(svg: str, stroke: str) -> np.ndarray:
    """The vertices of the drawn line whose stroke is ``stroke`` (SVG user units, y down)."""
    for path in re.findall(r"<path d=\"([^\"]+)\"[^>]*style=\"[^\"]*stroke: " + stroke, svg):
        numbers = [float(v) for v in re.findall(r"-?\d+(?:\.\d+)?", path)]
        points = np.array(numbers).reshape(-1, 2)
        if len(points) > 2:
            return points
    raise AssertionError(f"no line drawn in {stroke}")


async def test_descent_curves_are_straight_on_log_scale(client: httpx.AsyncClient) -> None:
    # f(x) = 0.5 ||x - c||^2 with γ = 0.5 halves the error each step: f_t = 10 4^-t and
    # ||∇f_t|| = sqrt(20) 2^-t, geometric, so straight lines on a log scale.
    body = {
        "function": [
            {"op": "add", "constant": {"data": [-2.0, 0.0]}},
            {"op": "squared_norm"},
            {"op": "scale", "factor": 0.5},
        ],
        "x0": {"data": [0.0, 4.0]},
        "learning_rate": 0.5,
        "max_steps": 20,
    }
    png = await client.post("/v1/gradient-descent", json=body, headers=PNG)
    assert decode_png(png).size == (900, 640)
    save_artifact("descent-curves.png", png.content, docs=True)
    svg = (await client.post("/v1/gradient-descent", json=body, headers=SVG)).text
    text = svg_texts(svg)
    assert "gradient descent: max_steps at step 20" in text
    assert "log scale" in text
    for stroke in ("#1f3b73", "#b5453a"):
        points = line_points(svg, stroke)
        assert len(points) == 21
        slopes = np.diff(points[:, 1]) / np.diff(points[:, 0])
        np.testing.assert_allclose(slopes, slopes[0], rtol=1e-3)


async def test_a_curve_that_goes_negative_is_on_a_linear_scale(client: httpx.AsyncClient) -> None:
    # f(x) = x_0 + x_1 has the constant gradient (1, 1): f_t = 1 - 2 γ t goes negative while
    # ‖∇f_t‖ = √2 stays positive, so only the f panel falls back to a linear scale.
    body = {
        "function": [{"op": "sum"}],
        "x0": {"data": [0.5, 0.5]},
        "learning_rate": 0.25,
        "max_steps": 10,
    }
    text = svg_texts((await client.post("/v1/gradient-descent", json=body, headers=SVG)).text)
    assert "f(x_t) (linear scale)" in text
    assert "‖∇f(x_t)‖₂ (log scale)" in text


async def test_a_diverging_run_is_drawn_with_its_status(client: httpx.AsyncClient) -> None:
    body = {
        "function": [{"op": "squared_norm"}],
        "x0": {"data": [1.0, -1.0]},
        "learning_rate": 1.5,
        "max_steps": 200,
    }
    svg = (await client.post("/v1/gradient-descent", json=body, headers=SVG)).text
    assert "gradient descent: diverged" in svg_texts(svg)


async def test_minimize_draws_its_run_with_method_and_status(client: httpx.AsyncClient) -> None:
    # Newton-CG on ½‖x − c‖² with exact Hessian-vector products stops at the minimum at once.
    body = {
        "function": [
            {"op": "add", "constant": {"data": [-1.0, 2.0, 0.5]}},
            {"op": "squared_norm"},
            {"op": "scale", "factor": 0.5},
        ],
        "x0": {"data": [0.0, 0.0, 0.0]},
        "method": "newton-cg",
        "max_steps": 20,
        "tolerances": {"grad_tol": 1e-8},
    }
    png = await client.post("/v1/minimize", json=body, headers=PNG)
    assert decode_png(png).size == (900, 640)
    svg = await client.post("/v1/minimize", json=body, headers=SVG)
    assert svg.headers["content-type"] == "image/svg+xml"
    summary = (await client.post("/v1/minimize", json=body)).json()
    title = f"minimize (newton-cg): {summary['status']} at step {summary['steps']}"
    assert title in svg_texts(svg.text)


async def test_minimize_draws_a_program_run_point_by_point(client: httpx.AsyncClient) -> None:
    # Rosenbrock by L-BFGS-B from (-1.2, 1): one point per recorded step of the JSON answer.
    body = {
        "inputs": {"x": {"data": [-1.2, 1.0]}},
        "function": "sum(100 * (x[1:] - x[:-1] ** 2) ** 2 + (1 - x[:-1]) ** 2)",
        "method": "lbfgs",
        "max_steps": 200,
        "tolerances": {"grad_tol": 1e-8},
    }
    summary = (await client.post("/v1/minimize", json=body)).json()
    assert summary["status"] == "converged_grad"
    png = await client.post("/v1/minimize", json=body, headers=PNG)
    assert decode_png(png).size == (900, 640)
    save_artifact("minimize-curves.png", png.content, docs=True)
    svg = (await client.post("/v1/minimize", json=body, headers=SVG)).text
    assert f"minimize (lbfgs): converged_grad at step {summary['steps']}" in svg_texts(svg)
    f_line = line_points(svg, "#1f3b73")
    assert len(f_line) == len(summary["trajectory"]) == summary["steps"] + 1
    # On the log axis (y down in SVG) the last point, f ≈ 0, is the lowest of the curve.
    assert f_line[-1, 1] == f_line[:, 1].max()
