"""Property-based fuzzing of every operation from the app's own OpenAPI document.

Checks: no server errors, responses conform to the documented schemas, status codes and content
types are documented, and schema-invalid requests are refused. ``positive_data_acceptance`` is
excluded on purpose: a body can be valid for the schema and still be refused with a documented 422
(a shape mismatch, an index out of range, a vector whose length is not prod(shape)) or 413.
"""

import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)

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
    max_examples=50,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
def test_api_conforms_to_its_schema(case: schemathesis.Case) -> None:
    case.call_and_validate(
        checks=[
            not_a_server_error,
            response_schema_conformance,
            status_code_conformance,
            content_type_conformance,
            negative_data_rejection,
        ]
    )
