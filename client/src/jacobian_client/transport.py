"""What the two clients share around httpx: request preparation, answers, retries, streams.

The retry rule: a 503 (every computation slot busy) is retried after its ``Retry-After`` (capped
by ``max_retry_delay``), at most ``retries`` times; then :class:`UnavailableError` is raised.
Nothing else is retried: every other status is an answer about the request itself.
"""

from __future__ import annotations

import email.utils
import json
import time
from collections.abc import AsyncGenerator, AsyncIterator, Generator, Iterator
from dataclasses import dataclass
from typing import Any

import httpx

from .calls import Call
from .errors import ProblemError, problem_from_dict, problem_from_response
from .results import DescentRecord, DescentResult, decode_descent, decode_record
from .wire import HEADER_LENGTH, OCTET_STREAM, Encoding, encode_body, loads, split_binary

NDJSON = "application/x-ndjson"
DEFAULT_URL = "http://127.0.0.1:8000"


@dataclass(frozen=True)
class RetryPolicy:
    """How a 503 is retried.

    Attributes
    ----------
    retries : int
        Further attempts after the first (0: never retry).
    max_delay : float
        Longest wait in seconds, whatever ``Retry-After`` says.
    default_delay : float
        Wait when the 503 has no usable ``Retry-After``.
    """

    retries: int = 3
    max_delay: float = 30.0
    default_delay: float = 1.0

    def delay(self, response: httpx.Response) -> float:
        """Return the seconds to wait before retrying ``response`` (a 503)."""
        header = response.headers.get("retry-after", "")
        seconds: float | None = None
        if header.strip().isdigit():
            seconds = float(header)
        elif header:
            try:
                seconds = email.utils.parsedate_to_datetime(header).timestamp() - time.time()
            except (TypeError, ValueError):
                seconds = None
        if seconds is None:
            seconds = self.default_delay
        return min(max(seconds, 0.0), self.max_delay)


@dataclass(frozen=True)
class Prepared:
    """A request ready for httpx: method, path, body bytes and headers."""

    method: str
    path: str
    content: bytes | None
    headers: dict[str, str]


def prepare(call: Call[Any], encoding: Encoding, *, stream: bool = False) -> Prepared:
    """Encode ``call``'s body in ``encoding``; a stream asks for NDJSON.

    NDJSON lines are JSON, so a stream's tensors come back in base64 when the client speaks
    binary (the request itself is still sent binary).
    """
    if call.body is None:
        return Prepared(call.method, call.path, None, {})
    body = dict(call.body)
    if call.encoded:
        body["encoding"] = "base64" if stream and encoding == "binary" else encoding
    has_tensors = call.encoded
    wire = encode_body(body, encoding if has_tensors else "list")
    headers = dict(wire.headers)
    if stream:
        headers["Accept"] = NDJSON
    elif encoding == "binary" and call.encoded:
        headers["Accept"] = f"{OCTET_STREAM}, application/json;q=0.9"
    return Prepared(call.method, call.path, wire.content, headers)


def read_answer(response: httpx.Response) -> Any:
    """Return the decoded body of a 2xx response (binary segments resolved), or raise.

    Raises
    ------
    ProblemError
        For any status >= 400.
    """
    if response.status_code >= 400:
        raise problem_from_response(response)
    if response.headers.get("content-type", "").startswith(OCTET_STREAM):
        return split_binary(response.content, int(response.headers[HEADER_LENGTH]))
    return loads(response.content)


def key_headers(api_key: str | None) -> dict[str, str]:
    """Return the header that presents ``api_key`` (none without a key)."""
    return {} if api_key is None else {"Authorization": f"Bearer {api_key}"}


class StreamDecoder:
    """Turns NDJSON lines of a descent into records, then the result (shared sync/async)."""

    def __init__(self) -> None:
        self.records: list[DescentRecord] = []
        self.result: DescentResult | None = None

    def feed(self, line: str) -> DescentRecord | None:
        """Read one line; return the record it holds (None for the summary or a blank line).

        Raises
        ------
        ProblemError
            When the service reports a failure in-band (after the status line was sent).
        """
        if not line.strip():
            return None
        item = json.loads(line)
        if "step" in item:
            record = decode_record(item)
            self.records.append(record)
            return record
        if "reason" in item:
            self.result = decode_descent(item, self.records)
            return None
        raise problem_from_dict(item)

    def finish(self) -> DescentResult:
        """Return the result; raise if the stream ended without its summary line."""
        if self.result is None:
            raise ProblemError(
                {"title": "Stream cut", "status": 502, "detail": "the stream ended early"}
            )
        return self.result


class DescentStream:
    """Records of a streamed descent as they arrive; ``result`` once the stream has ended.

    Iterate it to get :class:`DescentRecord` objects; reading ``result`` consumes whatever is
    left first. Closing it (or leaving its ``with`` block) closes the connection, which stops
    the run on the service.

    Parameters
    ----------
    opening : generator of httpx.Response
        Yields the open 2xx response once (refusals were raised before); closing it closes
        the response.
    """

    def __init__(self, opening: Generator[httpx.Response, None, None]) -> None:
        self._opening = opening
        self._response = next(opening)
        self._decoder = StreamDecoder()
        self._lines = self._records()

    def _records(self) -> Iterator[DescentRecord]:
        try:
            for line in self._response.iter_lines():
                record = self._decoder.feed(line)
                if record is not None:
                    yield record
        finally:
            self._opening.close()

    def __iter__(self) -> Iterator[DescentRecord]:
        return self._lines

    @property
    def records(self) -> list[DescentRecord]:
        """The records received so far."""
        return self._decoder.records

    @property
    def result(self) -> DescentResult:
        """The final result (reads the rest of the stream first)."""
        for _ in self._lines:
            pass
        return self._decoder.finish()

    def close(self) -> None:
        """Stop reading and close the connection."""
        self._opening.close()

    def __enter__(self) -> DescentStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncDescentStream:
    """The asynchronous :class:`DescentStream`: ``async for`` records, then ``await result()``."""

    def __init__(
        self, opening: AsyncGenerator[httpx.Response, None], response: httpx.Response
    ) -> None:
        self._opening = opening
        self._response = response
        self._decoder = StreamDecoder()
        self._lines = self._records()

    async def _records(self) -> AsyncIterator[DescentRecord]:
        try:
            async for line in self._response.aiter_lines():
                record = self._decoder.feed(line)
                if record is not None:
                    yield record
        finally:
            await self._opening.aclose()

    def __aiter__(self) -> AsyncIterator[DescentRecord]:
        return self._lines

    @property
    def records(self) -> list[DescentRecord]:
        """The records received so far."""
        return self._decoder.records

    async def result(self) -> DescentResult:
        """Return the final result (reads the rest of the stream first)."""
        async for _ in self._lines:
            pass
        return self._decoder.finish()

    async def aclose(self) -> None:
        """Stop reading and close the connection."""
        await self._opening.aclose()

    async def __aenter__(self) -> AsyncDescentStream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
