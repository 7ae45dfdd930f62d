"""/v1/vec, /v1/ten, /v1/flat, /v1/unflat: the contract, with a few hand-computed cases.

Problem bodies are compared as whole dicts. The one place where NumPy's own wording is embedded in
a detail (ragged lists) is matched by a regular expression for that part only.
"""

import base64
import itertools
import re
import struct
from collections.abc import AsyncIterator

import httpx
import numpy as np
import pytest

from service.config import Settings
from service.main import create_app

pytestmark = pytest.mark.anyio

PROBLEM_JSON = "application/problem+json"
REQUEST_ID = "test-operators-1"


class Matches:
    """Equal to any string that fully matches ``pattern`` (used inside whole-dict comparisons)."""

    def __init__(self, pattern: str) -> None:
        self.pattern = pattern

    def __eq__(self, other: object) -> bool:
        return isinstance(other, str) and re.fullmatch(self.pattern, other) is not None

    def __repr__(self) -> str:
        return f"Matches({self.pattern!r})"


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(
        Settings(max_body_bytes=100_000, max_tensor_elements=1000, max_index_count=100)
    )
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(
        transport=transport, base_url="http://testserver", headers={"X-Request-ID": REQUEST_ID}
    ) as c:
        yield c


async def post_raw(client: httpx.AsyncClient, path: str, body: str) -> httpx.Response:
    return await client.post(path, content=body, headers={"content-type": "application/json"})


def b64(array: np.ndarray) -> str:
    """Little-endian float64 bytes in C order, packed element by element (independent of NumPy)."""
    values = [float(array[i]) for i in itertools.product(*(range(d) for d in array.shape))]
    return base64.b64encode(struct.pack(f"<{len(values)}d", *values)).decode("ascii")


def from_b64(text: str, shape: list[int]) -> np.ndarray:
    return np.frombuffer(base64.b64decode(text, validate=True), dtype="<f8").reshape(shape)


def validation_problem(path: str, *errors: tuple[str, object]) -> dict:
    count = len(errors)
    return {
        "type": "/problems/request-validation",
        "title": "Request validation failed",
        "status": 422,
        "detail": f"{count} validation error{'s' if count != 1 else ''} in the request",
        "instance": path,
        "errors": [{"pointer": pointer, "detail": detail} for pointer, detail in errors],
    }


def assert_problem(response: httpx.Response, expected: dict) -> None:
    assert response.status_code == expected["status"]
    assert response.headers["content-type"] == PROBLEM_JSON
    assert response.headers["x-request-id"] == REQUEST_ID
    assert response.json() == expected | {"request_id": REQUEST_ID}


# -- flat / unflat -------------------------------------------------------------------------------


@pytest.mark.parametrize(("order", "expected"), [(None, 13), ("F", 13), ("C", 14)])
async def test_flat_worked_example(client, order: str | None, expected: int) -> None:
    body: dict = {"index": [1, 0, 2], "dims": [2, 3, 4]}
    if order:
        body["order"] = order
    response = await client.post("/v1/flat", json=body)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {"flat": expected, "dims": [2, 3, 4], "order": order or "F"}


@pytest.mark.parametrize(
    ("order", "expected"),
    # F: i1 + 2 i2 + 6 i3; C: 12 i1 + 4 i2 + i3.
    [("F", [13, 0, 23, 10]), ("C", [14, 0, 23, 9])],
)
async def test_flat_of_a_batch(client, order: str, expected: list[int]) -> None:
    body = {
        "index": [[1, 0, 2], [0, 0, 0], [1, 2, 3], [0, 2, 1]],
        "dims": [2, 3, 4],
        "order": order,
    }
    response = await client.post("/v1/flat", json=body)
    assert response.status_code == 200
    assert response.json() == {"flat": expected, "dims": [2, 3, 4], "order": order}


@pytest.mark.parametrize(
    ("order", "flat", "index"),
    [
        ("F", 13, [1, 0, 2]),
        ("C", 14, [1, 0, 2]),
        ("F", [13, 0, 23, 10], [[1, 0, 2], [0, 0, 0], [1, 2, 3], [0, 2, 1]]),
        ("C", [14, 0, 23, 9], [[1, 0, 2], [0, 0, 0], [1, 2, 3], [0, 2, 1]]),
    ],
)
async def test_unflat_inverts_flat(client, order: str, flat, index) -> None:
    response = await client.post(
        "/v1/unflat", json={"flat": flat, "dims": [2, 3, 4], "order": order}
    )
    assert response.status_code == 200
    assert response.json() == {"index": index, "dims": [2, 3, 4], "order": order}


async def test_out_of_range_index_is_named(client) -> None:
    response = await client.post("/v1/flat", json={"index": [1, 3, 2], "dims": [2, 3, 4]})
    assert_problem(
        response,
        {
            "type": "/problems/index-out-of-range",
            "title": "Index out of range",
            "status": 422,
            "detail": "index [1, 3, 2] is out of range for dims [2, 3, 4]",
            "instance": "/v1/flat",
        },
    )


async def test_out_of_range_flat_index_is_named(client) -> None:
    response = await client.post("/v1/unflat", json={"flat": 24, "dims": [2, 3, 4]})
    assert_problem(
        response,
        {
            "type": "/problems/index-out-of-range",
            "title": "Index out of range",
            "status": 422,
            "detail": "flat index 24 is out of range for dims [2, 3, 4] (size 24)",
            "instance": "/v1/unflat",
        },
    )


async def test_index_with_wrong_component_count(client) -> None:
    response = await client.post("/v1/flat", json={"index": [1, 0], "dims": [2, 3, 4]})
    assert_problem(
        response,
        {
            "type": "/problems/shape-mismatch",
            "title": "Shape mismatch",
            "status": 422,
            "detail": (
                "an index into dims [2, 3, 4] needs 3 components, got index array of shape [2]"
            ),
            "instance": "/v1/flat",
        },
    )


async def test_zero_dim_in_dims_points_at_it(client) -> None:
    response = await client.post("/v1/flat", json={"index": [0, 0, 0], "dims": [2, 0, 4]})
    assert_problem(
        response,
        validation_problem(
            "/v1/flat", ("/dims/1", "Input should be greater than or equal to 1 (got 0)")
        ),
    )


async def test_bool_in_a_single_index_is_reported_once(client) -> None:
    # Only /index/1 is wrong. Reporting /index/0 and /index/2 as "should be a valid array" comes
    # from the list-of-indices union branch and sends the client to places that are fine.
    response = await client.post("/v1/flat", json={"index": [1, True, 2], "dims": [2, 3, 4]})
    assert_problem(
        response,
        validation_problem("/v1/flat", ("/index/1", "Input should be a valid integer (got true)")),
    )


async def test_bool_in_a_batch_of_indices_is_reported_once(client) -> None:
    response = await client.post(
        "/v1/flat", json={"index": [[1, 0, 2], [0, True, 0]], "dims": [2, 3, 4]}
    )
    assert_problem(
        response,
        validation_problem(
            "/v1/flat", ("/index/1/1", "Input should be a valid integer (got true)")
        ),
    )


# -- vec / ten -----------------------------------------------------------------------------------

X = np.arange(24.0).reshape(2, 3, 4) * 1.5 - 7.0  # distinct values, shape (2, 3, 4)


@pytest.mark.parametrize("order", ["F", "C"])
@pytest.mark.parametrize("request_encoding", ["list", "base64"])
async def test_vec_equals_numpy_ravel(client, order: str, request_encoding: str) -> None:
    if request_encoding == "list":
        x = {"data": X.tolist()}
    else:
        x = {"encoding": "base64", "shape": [2, 3, 4], "data": b64(X)}
    expected = X.ravel(order=order)

    response = await client.post("/v1/vec", json={"x": x, "order": order})
    assert response.status_code == 200
    assert response.json() == {
        "vector": {
            "encoding": "list",
            "dtype": "float64",
            "shape": [24],
            "data": expected.tolist(),
        },
        "in_shape": [2, 3, 4],
        "order": order,
    }

    response = await client.post("/v1/vec", json={"x": x, "order": order, "encoding": "base64"})
    assert response.status_code == 200
    body = response.json()
    assert body["vector"]["encoding"] == "base64"
    assert body["vector"]["shape"] == [24]
    np.testing.assert_array_equal(from_b64(body["vector"]["data"], [24]), expected)
    assert (body["in_shape"], body["order"]) == ([2, 3, 4], order)


@pytest.mark.parametrize(
    ("order", "expected"),
    [("F", [[1.0, 3.0, 5.0], [2.0, 4.0, 6.0]]), ("C", [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])],
)
async def test_ten_hand_computed(client, order: str, expected) -> None:
    body = {"vector": {"data": [1, 2, 3, 4, 5, 6]}, "shape": [2, 3], "order": order}
    response = await client.post("/v1/ten", json=body)
    assert response.status_code == 200
    assert response.json() == {
        "tensor": {"encoding": "list", "dtype": "float64", "shape": [2, 3], "data": expected},
        "order": order,
    }
    # base64 response: C-order bytes over the shape, whatever the math order.
    response = await client.post("/v1/ten", json=body | {"encoding": "base64"})
    assert response.json()["tensor"]["data"] == b64(np.array(expected))


@pytest.mark.parametrize("order", ["F", "C"])
async def test_base64_vec_then_ten_is_bit_exact(client, rng, order: str) -> None:
    # Full-mantissa values, a negative zero and a subnormal.
    x = rng.standard_normal((2, 3, 4)) * np.exp(rng.uniform(-30, 30, (2, 3, 4)))
    x[0, 0, 0], x[1, 2, 3] = -0.0, 5e-324
    request = {"x": {"encoding": "base64", "shape": [2, 3, 4], "data": b64(x)}}
    vec = await client.post("/v1/vec", json=request | {"order": order, "encoding": "base64"})
    assert vec.status_code == 200
    vector = vec.json()["vector"]
    ten = await client.post(
        "/v1/ten",
        json={
            "vector": {"encoding": "base64", "shape": vector["shape"], "data": vector["data"]},
            "shape": [2, 3, 4],
            "order": order,
            "encoding": "base64",
        },
    )
    assert ten.status_code == 200
    tensor = ten.json()["tensor"]
    assert tensor["shape"] == [2, 3, 4]
    assert tensor["data"] == b64(x)
    assert from_b64(tensor["data"], [2, 3, 4]).tobytes() == x.astype("<f8").tobytes()


async def test_ten_wrong_length_names_both_numbers(client) -> None:
    body = {"vector": {"data": [1, 2, 3, 4, 5]}, "shape": [2, 3]}
    response = await client.post("/v1/ten", json=body)
    assert_problem(
        response,
        {
            "type": "/problems/shape-mismatch",
            "title": "Shape mismatch",
            "status": 422,
            "detail": "vector of length 5 cannot become shape [2, 3] (needs 6 elements)",
            "instance": "/v1/ten",
        },
    )


async def test_ten_of_a_matrix_is_a_shape_mismatch(client) -> None:
    body = {"vector": {"data": [[1, 2], [3, 4]]}, "shape": [4]}
    response = await client.post("/v1/ten", json=body)
    assert_problem(
        response,
        {
            "type": "/problems/shape-mismatch",
            "title": "Shape mismatch",
            "status": 422,
            "detail": "ten expects a rank-1 vector, got a tensor of shape [2, 2]",
            "instance": "/v1/ten",
        },
    )


# -- validation problems -------------------------------------------------------------------------

INVALID = {
    "bool-nested": (
        '{"x": {"data": [[1, true], [3, 4]]}}',
        [("/x/data/0/1", "Input should be a valid number (got true)")],
    ),
    "ragged": (
        '{"x": {"data": [[1, 2], [3]]}}',
        [
            (
                "/x/data/1",
                "this list has 1 entries but the first one at its depth has 2: nested lists "
                "need equal lengths at each depth (the data is ragged)",
            )
        ],
    ),
    "null": ('{"x": {"data": null}}', [("/x/data", "Input should be a valid number (got null)")]),
    "null-nested": (
        '{"x": {"data": [1, null]}}',
        [("/x/data/1", "Input should be a valid number (got null)")],
    ),
    "string": (
        '{"x": {"data": "abc"}}',
        [
            (
                "/x/data",
                "encoding 'list' needs data to be numbers or nested lists (got \"abc\")",
            )
        ],
    ),
    "string-nested": (
        '{"x": {"data": [[1, 2], [3, "4"]]}}',
        [("/x/data/1/1", 'Input should be a valid number (got "4")')],
    ),
    "nan": (
        '{"x": {"data": [1, NaN]}}',
        [("/x/data/1", "Input should be a finite number (got NaN)")],
    ),
    "infinity": (
        '{"x": {"data": [1, -Infinity]}}',
        [("/x/data/1", "Input should be a finite number (got -Infinity)")],
    ),
    "zero-dim": (
        '{"x": {"data": [[1, 2]], "shape": [1, 0]}}',
        [("/x/shape/1", "Input should be greater than or equal to 1 (got 0)")],
    ),
    "base64-byte-mismatch": (
        '{"x": {"encoding": "base64", "data": "AAAAAAAA8D8=", "shape": [2]}}',
        [
            (
                "/x/data",
                'base64 data holds 8 bytes but shape [2] of float64 needs 16 (got "AAAAAAAA8D8=")',
            )
        ],
    ),
    "shape-contradicts-list": (
        '{"x": {"data": [[1, 2], [3, 4]], "shape": [4]}}',
        [("/x/data", "data has shape [2, 2] but shape says [4]")],
    ),
    "extra-field-top": (
        '{"x": {"data": [1]}, "extra": 1}',
        [("/extra", "unknown field 'extra' (the fields here: encoding, order, x)")],
    ),
    "extra-field-in-tensor": (
        '{"x": {"data": [1], "units": "m"}}',
        [("/x/units", Matches(r"unknown field 'units' \(the fields here: .*data, dtype, .*\)"))],
    ),
    "extra-field-escaped": (
        '{"x": {"data": [1]}, "a/b~c": 1}',
        [("/a~1b~0c", "unknown field 'a/b~c' (the fields here: encoding, order, x)")],
    ),
    "missing-field": ("{}", [("/x", "Field required")]),
    "missing-data": ('{"x": {}}', [("/x/data", "Field required")]),
    "bad-order": (
        '{"x": {"data": [1]}, "order": "X"}',
        [("/order", "Input should be 'F' or 'C' (got \"X\")")],
    ),
    "not-an-object": ("[1, 2]", [("", "Input should be an object")]),
    "invalid-json": (
        '{"x": ',
        [("", "Invalid JSON: EOF while parsing a value at line 1 column 6")],
    ),
    "empty-body": ("", [("", "Invalid JSON: EOF while parsing a value at line 1 column 0")]),
}


@pytest.mark.parametrize(("body", "errors"), list(INVALID.values()), ids=list(INVALID))
async def test_invalid_vec_request_problem(client, body: str, errors) -> None:
    response = await post_raw(client, "/v1/vec", body)
    assert_problem(response, validation_problem("/v1/vec", *errors))


async def test_zero_dim_in_ten_shape_points_at_it(client) -> None:
    response = await post_raw(client, "/v1/ten", '{"vector": {"data": [1, 2]}, "shape": [2, 0]}')
    assert_problem(
        response,
        validation_problem(
            "/v1/ten", ("/shape/1", "Input should be greater than or equal to 1 (got 0)")
        ),
    )


async def test_several_errors_are_all_reported(client) -> None:
    body = '{"vector": {"data": [1, true]}, "shape": [0], "order": "Z"}'
    response = await post_raw(client, "/v1/ten", body)
    assert_problem(
        response,
        validation_problem(
            "/v1/ten",
            ("/vector/data/1", "Input should be a valid number (got true)"),
            ("/shape/0", "Input should be greater than or equal to 1 (got 0)"),
            ("/order", "Input should be 'F' or 'C' (got \"Z\")"),
        ),
    )
