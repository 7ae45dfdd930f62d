"""Property-based fuzzing of every operation from the app's own OpenAPI document.

Every check schemathesis runs by default is on, except one, for a stated reason:

* ``positive_data_acceptance``: a body can be valid for the schema and still be refused, by
  design, with a documented 422 (shapes that do not compose, an index outside its dimension, a
  vector whose length is not prod(shape), f undefined at x0) or 413 (a size limit). JSON Schema
  cannot express these cross-field rules; the check would flag every one of them.

The other checks include no server errors, response schema, status code, content type and
headers conformance, negative data rejection (schema-invalid bodies must get a 4xx), unsupported
methods (405 with Allow) and missing auth handling.
"""

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


@schema.parametrize()
@settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
def test_api_conforms_to_its_schema(case: schemathesis.Case) -> None:
    case.call_and_validate(excluded_checks=[positive_data_acceptance])
