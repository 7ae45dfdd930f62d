"""The benchmarks check the answers they time (outside the timers), so a wrong one stops them."""

import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

from service.engine import layout

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"

pytestmark = pytest.mark.anyio


@pytest.fixture
def transport_loop(monkeypatch: pytest.MonkeyPatch) -> Iterator[ModuleType]:
    # The benchmark puts benchmarks/ first on sys.path (its modules' names are plain words):
    # the path and the modules are the other tests' again afterwards.
    monkeypatch.setattr(sys, "path", [str(BENCHMARKS), *sys.path])
    import transport_loop

    yield transport_loop
    for name in ("transport_loop", "transport", "_service_kernels"):
        sys.modules.pop(name, None)


async def test_transport_loop_stops_on_a_wrong_vector(
    transport_loop: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The C-order vector where the F-order one was asked for: same values, other places.
    monkeypatch.setattr(layout, "vec", lambda x, order: np.ravel(x, order="C"))
    with pytest.raises(RuntimeError, match="element"):
        await transport_loop.run(5, BENCHMARKS.parent)


async def test_request_overhead_stops_on_a_wrong_answer(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "path", [str(BENCHMARKS), *sys.path])
    import request_overhead

    try:
        # The C-order vector where the F-order one was asked for.
        monkeypatch.setattr(layout, "vec", lambda x, order: np.ravel(x, order="C"))
        with pytest.raises(RuntimeError, match="pinned"):
            await request_overhead.measure(BENCHMARKS.parent, 1, 3)
    finally:
        for name in ("request_overhead", "transport", "_service_kernels"):
            sys.modules.pop(name, None)
