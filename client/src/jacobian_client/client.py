"""``Client`` and ``AsyncClient``: one method per endpoint of jacobian-service.

Both run the requests that :mod:`jacobian_client.calls` builds; the methods take and return
NumPy arrays. Example::

    from jacobian_client import Client
    with Client("http://127.0.0.1:8000") as client:
        J = client.jacobian(["tanh", "sum"], x=[0.1, 0.2])
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Generator
from typing import Any, Concatenate, Literal, ParamSpec, Protocol, TypeVar, overload

import httpx
import numpy.typing as npt

from . import calls, estimates, runs, second_order
from .errors import problem_from_response
from .functions import Function
from .results import DescentResult
from .transport import (
    DEFAULT_URL,
    AsyncDescentStream,
    DescentStream,
    Prepared,
    RetryPolicy,
    key_headers,
    prepare,
    read_answer,
)
from .wire import ENCODINGS, Encoding

P = ParamSpec("P")
T = TypeVar("T")
# Raw segments after a JSON header (CONVENTIONS section 3.1): no base64 or list text either way.
DEFAULT_ENCODING: Encoding = "binary"


class _Base:
    def __init__(
        self,
        base_url: str,
        api_key: str | None,
        encoding: Encoding,
        retries: int,
        max_retry_delay: float,
    ) -> None:
        if encoding not in ENCODINGS:
            raise ValueError(f"encoding must be one of {ENCODINGS}, got {encoding!r}")
        self.base_url = base_url.rstrip("/")
        self.encoding: Encoding = encoding
        self.retry = RetryPolicy(retries=retries, max_delay=max_retry_delay)
        self._headers = {"User-Agent": "jacobian-client", **key_headers(api_key)}

    def _request(self, prepared: Prepared) -> dict[str, Any]:
        return {
            "method": prepared.method,
            "url": prepared.path,
            "content": prepared.content,
            "headers": prepared.headers,
        }


def _sync(build: Callable[P, calls.Call[T]]) -> Callable[Concatenate[Client, P], T]:
    def method(self: Client, /, *args: P.args, **kwargs: P.kwargs) -> T:
        return self.execute(build(*args, **kwargs))

    return functools.wraps(build)(method)


def _async(
    build: Callable[P, calls.Call[T]],
) -> Callable[Concatenate[AsyncClient, P], Awaitable[T]]:
    async def method(self: AsyncClient, /, *args: P.args, **kwargs: P.kwargs) -> T:
        return await self.execute(build(*args, **kwargs))

    return functools.wraps(build)(method)


STREAM_DOC = """
        ``stream=True`` answers a stream of records instead (a :class:`DescentStream`, or an
        :class:`AsyncDescentStream` from :class:`AsyncClient`): iterate it for
        :class:`DescentRecord` objects as they arrive, then read its result. Refusals raise at
        once, before the first record.
"""


class SyncRun(Protocol):
    """``gradient_descent``/``minimize`` of :class:`Client`: a result, or a stream of records."""

    @overload
    def __call__(
        self, function: Function, x0: npt.ArrayLike | None = None, /, *,
        stream: Literal[False] = False, **options: Any,
    ) -> DescentResult: ...  # fmt: skip

    @overload
    def __call__(
        self, function: Function, x0: npt.ArrayLike | None = None, /, *, stream: Literal[True],
        **options: Any,
    ) -> DescentStream: ...  # fmt: skip


class AsyncRun(Protocol):
    """``gradient_descent``/``minimize`` of :class:`AsyncClient`, awaited."""

    @overload
    async def __call__(
        self, function: Function, x0: npt.ArrayLike | None = None, /, *,
        stream: Literal[False] = False, **options: Any,
    ) -> DescentResult: ...  # fmt: skip

    @overload
    async def __call__(
        self, function: Function, x0: npt.ArrayLike | None = None, /, *, stream: Literal[True],
        **options: Any,
    ) -> AsyncDescentStream: ...  # fmt: skip


def _sync_run(build: Callable[..., calls.Call[DescentResult]]) -> Any:
    # Typed through SyncRun at the class attribute: a Protocol attribute keeps its overloads.
    def method(
        self: Client, /, *args: Any, stream: bool = False, **kwargs: Any
    ) -> DescentResult | DescentStream:
        call = build(*args, **kwargs)
        if not stream:
            return self.execute(call)
        return DescentStream(self._open(prepare(call, self.encoding, stream=True)))

    method = functools.wraps(build)(method)
    method.__doc__ = f"{build.__doc__}{STREAM_DOC}"
    return method


def _async_run(build: Callable[..., calls.Call[DescentResult]]) -> Any:
    async def method(
        self: AsyncClient, /, *args: Any, stream: bool = False, **kwargs: Any
    ) -> DescentResult | AsyncDescentStream:
        call = build(*args, **kwargs)
        if not stream:
            return await self.execute(call)
        opening = self._open(prepare(call, self.encoding, stream=True))
        return AsyncDescentStream(opening, await anext(opening))

    method = functools.wraps(build)(method)
    method.__doc__ = f"{build.__doc__}{STREAM_DOC}"
    return method


class Client(_Base):
    """A synchronous client of jacobian-service.

    Parameters
    ----------
    base_url : str
        Where the service answers, e.g. ``"http://127.0.0.1:8000"``.
    api_key : str, optional
        Sent as ``Authorization: Bearer <key>`` when the service has keys configured.
    encoding : {"binary", "base64", "list"}
        How tensors travel, both ways. ``"binary"`` (default) is CONVENTIONS section 3.1 (raw
        segments after a JSON header); ``"base64"`` the raw bytes in JSON; ``"list"`` nested
        lists.
    timeout : float
        Seconds for connecting and for each read (streams wait without a read timeout).
    retries, max_retry_delay
        A 503 is retried after its ``Retry-After`` (at most ``max_retry_delay`` s), at most
        ``retries`` times.
    transport : httpx.BaseTransport, optional
        For tests and custom networking.
    """

    def __init__(
        self,
        base_url: str = DEFAULT_URL,
        api_key: str | None = None,
        encoding: Encoding = DEFAULT_ENCODING,
        timeout: float = 60.0,
        *,
        retries: int = 3,
        max_retry_delay: float = 30.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        super().__init__(base_url, api_key, encoding, retries, max_retry_delay)
        self._http = httpx.Client(
            base_url=self.base_url, headers=self._headers, timeout=timeout, transport=transport
        )

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _send(self, prepared: Prepared) -> httpx.Response:
        for attempt in range(self.retry.retries + 1):
            response = self._http.request(**self._request(prepared))
            if response.status_code != 503 or attempt == self.retry.retries:
                return response
            time.sleep(self.retry.delay(response))
        raise AssertionError("unreachable: the last attempt returns")

    def execute(self, call: calls.Call[T]) -> T:
        """Send a prepared :class:`~jacobian_client.calls.Call` and decode its answer."""
        return call.decode(read_answer(self._send(prepare(call, self.encoding))))

    health = _sync(calls.health)
    ready = _sync(calls.ready)
    ops = _sync(calls.ops)
    vec = _sync(calls.vec)
    ten = _sync(calls.ten)
    flat = _sync(calls.flat)
    unflat = _sync(calls.unflat)
    cross_correlation = _sync(calls.cross_correlation)
    evaluate = _sync(calls.evaluate)
    jacobian = _sync(calls.jacobian)
    jvp = _sync(calls.jvp)
    vjp = _sync(calls.vjp)
    chain_rule = _sync(calls.chain_rule)
    hvp = _sync(second_order.hvp)
    hessian = _sync(second_order.hessian)

    def _open(self, prepared: Prepared) -> Generator[httpx.Response, None, None]:
        # Streams read without a read timeout: records may be far apart.
        timeout = httpx.Timeout(self._http.timeout.connect, read=None)
        for attempt in range(self.retry.retries + 1):
            with self._http.stream(**self._request(prepared), timeout=timeout) as response:
                if response.status_code == 503 and attempt < self.retry.retries:
                    response.read()
                    delay = self.retry.delay(response)
                elif response.status_code >= 400:
                    response.read()
                    raise problem_from_response(response)
                else:
                    yield response
                    return
            time.sleep(delay)

    gradient_descent: SyncRun = _sync_run(runs.gradient_descent)
    minimize: SyncRun = _sync_run(runs.minimize)
    metadata = _sync(estimates.metadata)

    def estimate(self, method: str, /, *args: Any, **kwargs: Any) -> dict[str, Any]:
        """``POST /v1/estimate``: the cost of ``self.<method>(*args, **kwargs)``, not computed.

        Example: ``client.estimate("jacobian", f, x=x, format="coo")["refused"]``.
        """
        return self.execute(estimates.estimate(self.encoding, method, *args, **kwargs))


class AsyncClient(_Base):
    """The asynchronous client: the same methods as :class:`Client`, awaited.

    Parameters are those of :class:`Client` (``transport`` is an ``httpx.AsyncBaseTransport``).
    """

    def __init__(
        self,
        base_url: str = DEFAULT_URL,
        api_key: str | None = None,
        encoding: Encoding = DEFAULT_ENCODING,
        timeout: float = 60.0,
        *,
        retries: int = 3,
        max_retry_delay: float = 30.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        super().__init__(base_url, api_key, encoding, retries, max_retry_delay)
        self._http = httpx.AsyncClient(
            base_url=self.base_url, headers=self._headers, timeout=timeout, transport=transport
        )

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def _send(self, prepared: Prepared) -> httpx.Response:
        for attempt in range(self.retry.retries + 1):
            response = await self._http.request(**self._request(prepared))
            if response.status_code != 503 or attempt == self.retry.retries:
                return response
            await asyncio.sleep(self.retry.delay(response))
        raise AssertionError("unreachable: the last attempt returns")

    async def execute(self, call: calls.Call[T]) -> T:
        """Send a prepared :class:`~jacobian_client.calls.Call` and decode its answer."""
        return call.decode(read_answer(await self._send(prepare(call, self.encoding))))

    health = _async(calls.health)
    ready = _async(calls.ready)
    ops = _async(calls.ops)
    vec = _async(calls.vec)
    ten = _async(calls.ten)
    flat = _async(calls.flat)
    unflat = _async(calls.unflat)
    cross_correlation = _async(calls.cross_correlation)
    evaluate = _async(calls.evaluate)
    jacobian = _async(calls.jacobian)
    jvp = _async(calls.jvp)
    vjp = _async(calls.vjp)
    chain_rule = _async(calls.chain_rule)
    hvp = _async(second_order.hvp)
    hessian = _async(second_order.hessian)

    async def _open(self, prepared: Prepared) -> AsyncGenerator[httpx.Response, None]:
        timeout = httpx.Timeout(self._http.timeout.connect, read=None)
        for attempt in range(self.retry.retries + 1):
            async with self._http.stream(**self._request(prepared), timeout=timeout) as response:
                if response.status_code == 503 and attempt < self.retry.retries:
                    await response.aread()
                    delay = self.retry.delay(response)
                elif response.status_code >= 400:
                    await response.aread()
                    raise problem_from_response(response)
                else:
                    yield response
                    return
            await asyncio.sleep(delay)

    gradient_descent: AsyncRun = _async_run(runs.gradient_descent)
    minimize: AsyncRun = _async_run(runs.minimize)
    metadata = _async(estimates.metadata)

    async def estimate(self, method: str, /, *args: Any, **kwargs: Any) -> dict[str, Any]:
        """``POST /v1/estimate``; see :meth:`Client.estimate`."""
        return await self.execute(estimates.estimate(self.encoding, method, *args, **kwargs))
