"""Property-based fuzzing of every operation from the app's own OpenAPI document.

Every check schemathesis runs by default is on, except one, for a stated reason:

* ``positive_data_acceptance``: a body can be valid for the schema and still be refused, by
  design, with a documented 422 (shapes that do not compose, an index outside its dimension, a
  vector whose length is not prod(shape), f undefined at x0) or 413 (a size limit). JSON Schema
  cannot express these cross-field rules; the check would flag every one of them.

The other checks include no server errors, response schema, status code, content type and
headers conformance, negative data rejection (schema-invalid bodies must get a 4xx), unsupported
methods (405 with Allow) and missing auth handling.

Coverage is asserted, not assumed: Hypothesis' ``filter_too_much`` health check is on (a strategy
that rejects most of what it draws fails instead of quietly testing little), and every operation
must have been called with at least ``MIN_CASES`` distinct generated cases, counted per operation
and reported when the module's tests end.
"""

from collections import Counter
from collections.abc import Iterator

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance

from service.config import Settings
from service.main import create_app

# Small limits keep generated tensors cheap; the limits themselves are part of the contract.
app = create_app(
    Settings(
        max_tensor_elements=10_000,
        max_index_count=1_000,
        max_descent_steps=2_000,
        descent_deadline_seconds=2.0,
    )
)
schema = schemathesis.openapi.from_asgi("/openapi.json", app)
MIN_CASES = 20  # of 100 examples per operation: fewer distinct ones means a starved strategy
# Operations without a body or parameters have nothing to vary: one case is all there is.
OPERATIONS = {
    f"{method.upper()} {path}": MIN_CASES if "requestBody" in operation or operation.get(
        "parameters") else 1
    for path, item in app.openapi()["paths"].items()
    for method, operation in item.items()
}  # fmt: skip
cases: dict[str, Counter[str]] = {}


@pytest.fixture(scope="module")
def coverage() -> Iterator[dict[str, Counter[str]]]:
    """Count distinct cases per operation; assert every operation's count at the end."""
    yield cases
    # Operations deselected (-k) have no entry; one whose strategy draws nothing fails on its own
    # (Hypothesis raises Unsatisfiable).
    counts = {operation: len(seen) for operation, seen in sorted(cases.items())}
    print("\nschemathesis distinct cases per operation:", counts)
    thin = {
        operation: count for operation, count in counts.items() if count < OPERATIONS[operation]
    }
    assert not thin, f"operations with too few distinct cases (wanted {MIN_CASES}): {thin}"


@schema.parametrize()
@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_api_conforms_to_its_schema(
    case: schemathesis.Case, coverage: dict[str, Counter[str]]
) -> None:
    key = f"{case.operation.method.upper()} {case.operation.path}"
    coverage.setdefault(key, Counter())[repr((case.body, case.query, case.headers))] += 1
    case.call_and_validate(excluded_checks=[positive_data_acceptance])
