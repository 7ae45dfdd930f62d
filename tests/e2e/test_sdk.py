"""The generated Python SDK drives every operation of a live server.

``openapi-python-client`` generates a client from the committed ``openapi/openapi.json`` (with
``openapi/oapc.yaml``) into a temporary directory, ``--fail-on-warning`` so that a schema part the
generator cannot handle fails here instead of silently dropping endpoints. The package is
imported from there (never installed, never committed) and every operation of the document is
called against ``python -m service`` with small inputs whose results are known by hand.

Every operationId of the document needs a driver in :data:`DRIVERS`: a new endpoint without one
fails :func:`test_every_operation_has_a_driver`.
"""

import base64
import importlib
import json
import os
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import numpy as np
import pytest

from service.engine.op import op_names

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
DOCUMENT = ROOT / "openapi" / "openapi.json"
CONFIG = ROOT / "openapi" / "oapc.yaml"
PACKAGE = "jacobian_service_client"
GENERATE_TIMEOUT_S = 180
REQUEST_TIMEOUT_S = 30.0

SPEC: dict[str, Any] = json.loads(DOCUMENT.read_text())
# operationId -> (method, path, first tag): the generator puts each in api/<tag>/<operationId>.py
OPERATIONS: dict[str, tuple[str, str, str]] = {
    operation["operationId"]: (method.upper(), path, operation.get("tags", ["default"])[0])
    for path, item in SPEC["paths"].items()
    for method, operation in item.items()
    if method in {"get", "put", "post", "delete", "patch", "head", "options"}
}

# CONVENTIONS §2: x (1, 2, 3) = [[1, 2, 3], [4, 5, 6]], kernel (1, 1, 2) = [[1, 2]]
XCORR_X = [[[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]]
XCORR_KERNEL = [[[1.0, 2.0]]]
XCORR_OUTPUT = [[5.0, 8.0], [14.0, 17.0]]
XCORR_JACOBIAN = [  # d out / d x, in_out, F order: 6 x 4
    [1.0, 0.0, 0.0, 0.0],
    [0.0, 1.0, 0.0, 0.0],
    [2.0, 0.0, 1.0, 0.0],
    [0.0, 2.0, 0.0, 1.0],
    [0.0, 0.0, 2.0, 0.0],
    [0.0, 0.0, 0.0, 2.0],
]


@dataclass
class Sdk:
    """The imported generated package and a client bound to the live server."""

    package: ModuleType
    models: ModuleType
    client: Any  # jacobian_service_client.Client

    def endpoint(self, operation_id: str) -> ModuleType:
        """Return the generated module of one operation (``api/<tag>/<operationId>.py``)."""
        tag = re.sub(r"\W+", "_", OPERATIONS[operation_id][2]).strip("_").lower()
        name = f"{PACKAGE}.api.{tag}.{operation_id}"
        try:
            return importlib.import_module(name)
        except ImportError as error:
            pytest.fail(f"the generator produced no module {name} for {operation_id}: {error}")

    def call(self, operation_id: str, status: int = 200, **kwargs: Any) -> Any:
        """Call an operation with ``sync_detailed``; check the status; return ``.parsed``."""
        response = self.endpoint(operation_id).sync_detailed(client=self.client, **kwargs)
        assert response.status_code == status, (operation_id, response.content[:2000])
        return response.parsed


def b64(array: np.ndarray) -> str:
    """Base64 of the little-endian C-order float64 bytes, as the wire format wants."""
    return base64.b64encode(np.ascontiguousarray(array, dtype="<f8").tobytes()).decode()


def from_b64(text: str, shape: list[int]) -> np.ndarray:
    return np.frombuffer(base64.b64decode(text), dtype="<f8").reshape(shape)


def coo_to_dense(jacobian: Any) -> np.ndarray:
    dense = np.zeros(jacobian.shape)
    dense[np.asarray(jacobian.row, dtype=int), np.asarray(jacobian.col, dtype=int)] = jacobian.data
    return dense


@pytest.fixture(scope="module")
def generated_client(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Generate the SDK into a temporary directory; return the directory holding the package."""
    out = tmp_path_factory.mktemp("sdk") / "client"
    bin_dir = Path(sys.executable).parent  # the venv's bin: the generator and ruff live there
    generator = bin_dir / "openapi-python-client"
    if not generator.exists():
        pytest.fail(
            f"{generator} is missing: install the dev extra (openapi-python-client) into the venv"
        )
    command = [
        str(generator),
        "generate",
        "--path",
        str(DOCUMENT),
        "--config",
        str(CONFIG),
        "--meta",
        "setup",
        "--overwrite",
        "--fail-on-warning",
        "--output-path",
        str(out),
    ]
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}
    result = subprocess.run(
        command,
        cwd=out.parent,
        env=env,
        capture_output=True,
        text=True,
        timeout=GENERATE_TIMEOUT_S,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"openapi-python-client failed:\n{output}"
    assert "warning" not in output.lower(), f"openapi-python-client warned:\n{output}"
    assert (out / PACKAGE / "__init__.py").is_file(), output
    return out


@pytest.fixture(scope="module")
def sdk(generated_client: Path, live_server: str) -> Iterator[Sdk]:
    """Import the generated package from its temporary directory; unload it afterwards."""
    sys.path.insert(0, str(generated_client))
    try:
        package = importlib.import_module(PACKAGE)
        models = importlib.import_module(f"{PACKAGE}.models")
        timeout = httpx.Timeout(REQUEST_TIMEOUT_S)
        with package.Client(
            base_url=live_server, raise_on_unexpected_status=True, timeout=timeout
        ) as client:
            yield Sdk(package=package, models=models, client=client)
    finally:
        sys.path.remove(str(generated_client))
        for name in [n for n in sys.modules if n == PACKAGE or n.startswith(f"{PACKAGE}.")]:
            del sys.modules[name]


# --- one driver per operationId -------------------------------------------------------------


def drive_healthz(sdk: Sdk) -> None:
    health = sdk.call("healthz")
    assert isinstance(health, sdk.models.Health)
    assert health.status.value == "ok"


def drive_readyz(sdk: Sdk) -> None:
    assert sdk.call("readyz").status.value == "ready"


def drive_vec(sdk: Sdk) -> None:
    m = sdk.models
    x = m.Tensor(data=[[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    out = sdk.call("vec", body=m.VecRequest(x=x))
    assert isinstance(out, m.VecResponse)
    assert out.vector.data == [1.0, 4.0, 2.0, 5.0, 3.0, 6.0]
    assert out.vector.shape == [6] and out.in_shape == [2, 3] and out.order.value == "F"

    out = sdk.call(
        "vec",
        body=m.VecRequest(x=x, order=m.Order.C, encoding=m.Encoding.BASE64),
    )
    assert out.vector.encoding.value == "base64"
    np.testing.assert_array_equal(from_b64(out.vector.data, [6]), [1, 2, 3, 4, 5, 6])


def drive_ten(sdk: Sdk) -> None:
    m = sdk.models
    vector = m.Tensor(
        data=b64(np.array([1.0, 4.0, 2.0, 5.0, 3.0, 6.0])),
        encoding=m.Encoding.BASE64,
        shape=[6],
    )
    out = sdk.call(
        "ten", body=m.TenRequest(vector=vector, shape=[2, 3], encoding=m.Encoding.BASE64)
    )
    assert isinstance(out, m.TenResponse)
    assert out.tensor.shape == [2, 3] and out.tensor.encoding.value == "base64"
    np.testing.assert_array_equal(from_b64(out.tensor.data, [2, 3]), [[1, 2, 3], [4, 5, 6]])


def drive_flat(sdk: Sdk) -> None:
    m = sdk.models
    assert sdk.call("flat", body=m.FlatRequest(index=[1, 0, 2], dims=[2, 3, 4])).flat == 13
    c_order = m.FlatRequest(index=[[1, 0, 2], [0, 0, 0]], dims=[2, 3, 4], order=m.Order.C)
    out = sdk.call("flat", body=c_order)
    assert out.flat == [14, 0] and out.dims == [2, 3, 4] and out.order.value == "C"


def drive_unflat(sdk: Sdk) -> None:
    m = sdk.models
    assert sdk.call("unflat", body=m.UnflatRequest(flat=13, dims=[2, 3, 4])).index == [1, 0, 2]
    c_order = m.UnflatRequest(flat=[13, 14], dims=[2, 3, 4], order=m.Order.C)
    assert sdk.call("unflat", body=c_order).index == [[1, 0, 1], [1, 0, 2]]


def drive_cross_correlation(sdk: Sdk) -> None:
    m = sdk.models
    request = m.CrossCorrelationRequest(
        x=m.Tensor(data=XCORR_X),
        kernel=m.Tensor(data=XCORR_KERNEL),
        jacobian=m.CrossCorrelationRequestJacobian.DENSE,
    )
    out = sdk.call("cross_correlation", body=request)
    assert isinstance(out, m.CrossCorrelationResponse)
    assert out.output.data == XCORR_OUTPUT and out.output.shape == [2, 2]
    jacobian = out.jacobian_x
    assert isinstance(jacobian, m.DenseJacobian), type(jacobian)  # the discriminated union
    assert jacobian.shape == [6, 4] and jacobian.nnz == 8
    assert jacobian.in_shape == [1, 2, 3] and jacobian.out_shape == [2, 2]
    assert jacobian.layout.value == "in_out" and jacobian.order.value == "F"
    assert jacobian.data.data == XCORR_JACOBIAN
    assert out.jacobian_kernel is None

    both = m.CrossCorrelationRequest(
        x=m.Tensor(data=XCORR_X),
        kernel=m.Tensor(data=XCORR_KERNEL),
        jacobian=m.CrossCorrelationRequestJacobian.COO,
        wrt=[m.CrossCorrelationRequestWrtItem.X, m.CrossCorrelationRequestWrtItem.KERNEL],
    )
    out = sdk.call("cross_correlation", body=both)
    assert isinstance(out.jacobian_x, m.CooJacobian), type(out.jacobian_x)
    assert isinstance(out.jacobian_kernel, m.CooJacobian), type(out.jacobian_kernel)
    np.testing.assert_array_equal(coo_to_dense(out.jacobian_x), XCORR_JACOBIAN)
    # d out[i, j] / d kernel[0, 0, b] = x[0, i, j + b]: rows the kernel (2), columns out (F order)
    np.testing.assert_array_equal(coo_to_dense(out.jacobian_kernel), [[1, 4, 2, 5], [2, 5, 3, 6]])


def drive_list_ops(sdk: Sdk) -> None:
    out = sdk.call("list_ops")
    assert isinstance(out, sdk.models.OperationsResponse)
    by_name = {info.name: info for info in out.operations}
    assert set(by_name) == set(op_names())
    assert "factor" in by_name["scale"].params.additional_keys  # additionalProperties: str
    assert by_name["scale"].linear is True and by_name["tanh"].linear is False
    assert by_name["reshape"].uses_request_order is True


def drive_evaluate(sdk: Sdk) -> None:
    m = sdk.models
    request = m.EvaluateRequest(
        x=m.Tensor(data=[1.0, 2.0, 3.0]),
        function=[m.SquareSpec(op="square"), m.SumSpec(op="sum")],
    )
    out = sdk.call("evaluate", body=request)
    assert isinstance(out, m.EvaluateResponse)
    assert out.value.data == 14.0 and out.value.shape == []


def drive_jacobian(sdk: Sdk) -> None:
    m = sdk.models
    x = np.array([[[0.1, 0.2, 0.3], [0.4, 0.5, 0.6]]])
    request = m.JacobianRequest(
        x=m.Tensor(data=x.tolist()),
        function=[
            m.Xcorr2DSpec(op="xcorr2d", kernel=m.Tensor(data=XCORR_KERNEL)),
            m.TanhSpec(op="tanh"),
        ],
        format_=m.JacobianFormat.COO,
        check=True,
    )
    out = sdk.call("jacobian", body=request)
    assert isinstance(out, m.JacobianResponse)
    assert isinstance(out.jacobian, m.CooJacobian), type(out.jacobian)
    assert out.jacobian.shape == [6, 4] and out.jacobian.format_ == "coo"
    correlated = np.array([[0.5, 0.8], [1.4, 1.7]])  # x ⋆ [1, 2]
    np.testing.assert_allclose(out.value.data, np.tanh(correlated), rtol=1e-12)
    # chain rule: J_h = J_xcorr J_tanh, J_tanh = diag(1 - tanh² of the output, F order)
    expected = np.array(XCORR_JACOBIAN) * (1 - np.tanh(correlated.ravel(order="F")) ** 2)
    np.testing.assert_allclose(coo_to_dense(out.jacobian), expected, rtol=1e-12)
    assert isinstance(out.check, m.CheckReport) and out.check.passed is True


def drive_jvp(sdk: Sdk) -> None:
    m = sdk.models
    request = m.JvpRequest(
        x=m.Tensor(data=[1.0, 2.0]),
        function=[m.TanhSpec(op="tanh")],
        tangent=m.Tensor(data=[1.0, 0.0]),
    )
    out = sdk.call("jvp", body=request)
    assert isinstance(out, m.JvpResponse)
    np.testing.assert_allclose(out.value.data, np.tanh([1.0, 2.0]), rtol=1e-12)
    np.testing.assert_allclose(out.jvp.data, [1 - np.tanh(1.0) ** 2, 0.0], rtol=1e-12)


def drive_vjp(sdk: Sdk) -> None:
    m = sdk.models
    request = m.VjpRequest(
        x=m.Tensor(data=[1.0, 2.0]),
        function=[m.TanhSpec(op="tanh"), m.SumSpec(op="sum")],
        cotangent=m.Tensor(data=1.0),
    )
    out = sdk.call("vjp", body=request)
    assert isinstance(out, m.VjpResponse)
    np.testing.assert_allclose(out.value.data, np.tanh(1.0) + np.tanh(2.0), rtol=1e-12)
    np.testing.assert_allclose(out.vjp.data, 1 - np.tanh([1.0, 2.0]) ** 2, rtol=1e-12)


def drive_chain_rule(sdk: Sdk) -> None:
    m = sdk.models
    request = m.ChainRuleRequest(
        jacobians=[
            m.DenseJacobianIn(
                format_="dense", data=m.Tensor(data=[[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])
            ),
            m.CooJacobianIn(format_="coo", shape=[2, 1], row=[0, 1], col=[0, 0], data=[1.0, -1.0]),
        ]
    )
    out = sdk.call("chain_rule", body=request)
    assert isinstance(out, m.ChainRuleResponse)
    jacobian = out.jacobian
    assert isinstance(jacobian, m.CooJacobian), type(jacobian)
    assert jacobian.shape == [3, 1]
    assert jacobian.row == [0, 1, 2] and jacobian.col == [0, 0, 0]
    assert jacobian.data == [-1.0, -1.0, -1.0]


def drive_gradient_descent(sdk: Sdk) -> None:
    # f(x) = ½||x - c||², c = (1, -2), x_0 = (3, 0), γ = 0.5: x_t - c = 2^-t (2, 2), f_t = 4^(1-t)
    m = sdk.models
    request = m.GradientDescentRequest(
        function=[
            m.AddSpec(op="add", constant=m.Tensor(data=[-1.0, 2.0])),
            m.SquaredNormSpec(op="squared_norm"),
            m.ScaleSpec(op="scale", factor=0.5),
        ],
        x0=m.Tensor(data=[3.0, 0.0]),
        learning_rate=0.5,
        max_steps=4,
        record_every=2,
    )
    out = sdk.call("gradient_descent", body=request)
    assert isinstance(out, m.GradientDescentResponse)
    assert out.status.value == "max_steps" and out.steps == 4
    np.testing.assert_allclose(out.x_final.data, [1 + 2 / 16, -2 + 2 / 16], rtol=1e-12)
    assert out.f_final == pytest.approx(4.0**-3, rel=1e-12)
    assert [point.step for point in out.trajectory] == [0, 2, 4]
    assert [point.f for point in out.trajectory] == pytest.approx([4.0, 4.0**-1, 4.0**-3])


def drive_hvp(sdk: Sdk) -> None:
    # f = sum(sin(x)²): H = diag(2 cos 2x)
    m = sdk.models
    x = [0.5, 1.0]
    request = m.HvpRequest.from_dict(
        {"x": {"data": x}, "function": [{"op": "sin"}, {"op": "square"}, {"op": "sum"}],
         "vectors": {"x": {"data": [1.0, 2.0]}}}
    )  # fmt: skip
    out = sdk.call("hvp", body=request)
    assert isinstance(out, m.HvpResponse)
    expected = 2 * np.cos(2 * np.array(x)) * [1.0, 2.0]
    np.testing.assert_allclose(out.hvp.to_dict()["x"]["data"], expected, rtol=1e-14)


def drive_hessian(sdk: Sdk) -> None:
    m = sdk.models
    request = m.HessianRequest.from_dict(
        {"x": {"data": [0.5, 1.0]}, "function": [{"op": "sin"}, {"op": "square"}, {"op": "sum"}],
         "format": "coo"}
    )  # fmt: skip
    out = sdk.call("hessian", body=request).to_dict()["hessian"]
    assert out["row"] == out["col"] == [0, 1]
    np.testing.assert_allclose(out["data"], 2 * np.cos([1.0, 2.0]), rtol=1e-14)


def drive_minimize(sdk: Sdk) -> None:
    # ½||x - c||² by Newton-CG: one exact Newton step lands on c.
    m = sdk.models
    request = m.MinimizeRequest.from_dict(
        {"function": [{"op": "add", "constant": {"data": [-1.0, 2.0]}}, {"op": "squared_norm"},
                      {"op": "scale", "factor": 0.5}],
         "x0": {"data": [3.0, 0.0]}, "method": "newton-cg", "max_steps": 10,
         "tolerances": {"grad_tol": 1e-12}}
    )  # fmt: skip
    out = sdk.call("minimize", body=request)
    assert isinstance(out, m.MinimizeResponse)
    assert out.status.value == "converged_grad" and out.steps == 1
    np.testing.assert_allclose(out.x_final.data, [1.0, -2.0], rtol=1e-12)
    assert out.evaluations.hvp >= 1


def drive_estimate(sdk: Sdk) -> None:
    m = sdk.models
    request = m.EstimateRequest.from_dict(
        {"path": "/v1/evaluate",
         "body": {"x": {"data": [1.0, 2.0, 3.0]}, "function": [{"op": "square"}, {"op": "sum"}]}}
    )  # fmt: skip
    out = sdk.call("estimate", body=request).to_dict()
    assert out["refused"] is False and out["work"] > 0 and out["peak_bytes"] > 0
    assert out["facts"]["output_shape"] == []


def drive_metadata(sdk: Sdk) -> None:
    out = sdk.call("metadata").to_dict()
    assert out["limits"]["max_work"] == 10_000_000_000
    assert set(out["operations"]) == set(op_names())


DRIVERS: dict[str, Callable[[Sdk], None]] = {
    "healthz": drive_healthz,
    "readyz": drive_readyz,
    "vec": drive_vec,
    "ten": drive_ten,
    "flat": drive_flat,
    "unflat": drive_unflat,
    "cross_correlation": drive_cross_correlation,
    "list_ops": drive_list_ops,
    "evaluate": drive_evaluate,
    "jacobian": drive_jacobian,
    "jvp": drive_jvp,
    "vjp": drive_vjp,
    "chain_rule": drive_chain_rule,
    "gradient_descent": drive_gradient_descent,
    "hvp": drive_hvp,
    "hessian": drive_hessian,
    "minimize": drive_minimize,
    "estimate": drive_estimate,
    "metadata": drive_metadata,
}


# --- tests ----------------------------------------------------------------------------------


def test_every_operation_has_a_driver() -> None:
    missing = sorted(set(OPERATIONS) - set(DRIVERS))
    assert not missing, f"operations of openapi.json without an SDK driver in {__file__}: {missing}"


def test_the_committed_document_is_what_the_live_server_serves(live_server: str) -> None:
    served = httpx.get(f"{live_server}/openapi.json", timeout=REQUEST_TIMEOUT_S).json()
    assert served == SPEC, "openapi/openapi.json differs: run python scripts/export_openapi.py"


@pytest.mark.parametrize("operation_id", sorted(OPERATIONS))
def test_operation_through_the_sdk(sdk: Sdk, operation_id: str) -> None:
    driver = DRIVERS.get(operation_id)
    if driver is None:
        pytest.fail(f"no driver for {operation_id} {OPERATIONS[operation_id][:2]}")
    driver(sdk)


def test_a_validation_error_parses_as_the_problem_model(sdk: Sdk) -> None:
    m = sdk.models
    # A boolean where a number belongs (the SDK's types do not stop it; the server does).
    bad = m.VecRequest(x=m.Tensor(data=[[1.0, True]]))
    response = sdk.endpoint("vec").sync_detailed(client=sdk.client, body=bad)
    assert response.status_code == 422
    assert response.headers["content-type"].startswith("application/problem+json")
    problem = response.parsed
    assert isinstance(problem, m.Problem), type(problem)
    assert problem.status == 422
    assert problem.type_ == "/problems/request-validation"  # `type` is renamed `type_`
    assert problem.instance == "/v1/vec"
    assert [error.pointer for error in problem.errors] == ["/x/data/0/1"]
    assert isinstance(problem.errors[0], m.ProblemError)


def test_an_engine_error_parses_as_the_problem_model(sdk: Sdk) -> None:
    m = sdk.models
    response = sdk.endpoint("flat").sync_detailed(
        client=sdk.client, body=m.FlatRequest(index=[2, 0, 0], dims=[2, 3, 4])
    )
    assert response.status_code == 422
    problem = response.parsed
    assert isinstance(problem, m.Problem), type(problem)
    assert problem.type_ == "/problems/index-out-of-range" and problem.status == 422


def test_the_sdk_has_no_duplicate_enums(generated_client: Path) -> None:
    # Each shared enum (Order, Layout, Encoding, ...) is one module; two enum modules with the
    # same values would be the duplication the document's $ref components exist to prevent.
    values: dict[tuple[str, ...], list[str]] = {}
    for module in sorted((generated_client / PACKAGE / "models").glob("*.py")):
        text = module.read_text()
        if not re.search(r"^class \w+\((?:str, )?(?:Str)?Enum\):", text, flags=re.MULTILINE):
            continue
        members = tuple(sorted(re.findall(r'^\s+\w+ = "([^"]*)"$', text, flags=re.MULTILINE)))
        values.setdefault(members, []).append(module.stem)
    assert values, "no enum modules were generated"
    duplicated = {key: names for key, names in values.items() if len(names) > 1}
    assert not duplicated, duplicated
    assert {"order", "layout", "encoding"} <= {n for names in values.values() for n in names}


def _documented_errors() -> list[tuple[str, int]]:
    return [
        (operation["operationId"], int(status))
        for item in SPEC["paths"].values()
        for operation in item.values()
        for status in operation["responses"]
        if status[0] in "45"
    ]


def test_every_documented_error_status_parses_as_a_problem(
    generated_client: Path, sdk: Sdk
) -> None:
    # A transport that answers each documented status with a problem body: the SDK must return
    # its Problem model for all of them (an undeclared status would raise UnexpectedStatus).
    answered: list[int] = []

    def problem_for(request: httpx.Request) -> httpx.Response:
        status = answered[-1]
        body = {"type": "about:blank", "title": "t", "status": status, "detail": "d"}
        return httpx.Response(
            status, json=body, headers={"content-type": "application/problem+json"}
        )

    transport = httpx.MockTransport(problem_for)
    client = sdk.package.Client(
        base_url="http://sdk.test",
        raise_on_unexpected_status=True,
        httpx_args={"transport": transport},
    )
    examples = json.loads((ROOT / "service" / "api" / "request_examples.json").read_text())
    errors = _documented_errors()
    assert {status for _, status in errors} >= {400, 401, 406, 408, 413, 415, 422, 500, 503}
    with client:
        for operation_id, status in errors:
            method, path, _ = OPERATIONS[operation_id]
            kwargs: dict[str, Any] = {}
            if method == "POST":
                model = SPEC["paths"][path]["post"]["requestBody"]["content"]["application/json"]
                name = model["schema"]["$ref"].rsplit("/", 1)[-1]
                kwargs["body"] = getattr(sdk.models, name).from_dict(examples[path])
            answered.append(status)
            response = sdk.endpoint(operation_id).sync_detailed(client=client, **kwargs)
            assert response.status_code == status
            assert isinstance(response.parsed, sdk.models.Problem), (operation_id, status)
            assert response.parsed.status == status
