"""Every n-ary operation, every argument: the second-order rule against central differences of
the VJP, with every argument moved along its tangent at once (cross terms included)."""

import numpy as np
import pytest

from service.engine.graph.nary import NaryOp
from tests.engine.graph.test_nary_ops import CASES, IDS


@pytest.mark.parametrize(("name", "op", "values"), CASES, ids=IDS)
def test_second_order_rule_is_the_derivative_of_the_vjp(
    name: str, op: NaryOp, values: list[np.ndarray]
) -> None:
    rng = np.random.default_rng(17)
    out_shape = op.out_shape([v.shape for v in values])
    u = rng.normal(size=out_shape)
    tangents = [rng.normal(size=(2, *v.shape)) for v in values]
    h = 1e-5
    for i in range(len(values)):
        got = op.second_order(values, i, u, tangents)
        for b in range(2):
            plus = [v + h * t[b] for v, t in zip(values, tangents, strict=True)]
            minus = [v - h * t[b] for v, t in zip(values, tangents, strict=True)]
            expected = (op.vjp(plus, i, u[np.newaxis])[0] - op.vjp(minus, i, u[np.newaxis])[0]) / (
                2 * h
            )
            scale = max(1.0, float(np.abs(expected).max()))
            if got is None:
                np.testing.assert_allclose(expected, 0.0, atol=1e-7 * scale)
            else:
                np.testing.assert_allclose(got[b], expected, rtol=1e-6, atol=1e-7 * scale)


@pytest.mark.parametrize(("name", "op", "values"), CASES, ids=IDS)
def test_held_arguments_contribute_nothing(name: str, op: NaryOp, values: list[np.ndarray]) -> None:
    rng = np.random.default_rng(18)
    u = rng.normal(size=op.out_shape([v.shape for v in values]))
    for i in range(len(values)):
        assert op.second_order(values, i, u, [None] * len(values)) is None
