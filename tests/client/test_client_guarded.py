"""Keys and back-pressure against a live server: the 401 hint, and the bounded 503 retry."""

import httpx
import numpy as np
import pytest
from jacobian_client import AuthenticationError, Client, UnavailableError

from tests.client.conftest import API_KEY
from tests.e2e.live import LiveServer


class Counting(httpx.HTTPTransport):
    """An HTTP transport that counts the requests it sends."""

    def __init__(self) -> None:
        super().__init__()
        self.sent = 0

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.sent += 1
        return super().handle_request(request)


def test_a_missing_key_says_how_to_pass_one(guarded: LiveServer) -> None:
    with Client(guarded.base_url) as client, pytest.raises(AuthenticationError) as caught:
        client.vec([1.0])
    assert caught.value.status == 401 and "api_key=" in str(caught.value)
    with Client(guarded.base_url, api_key=API_KEY) as client:
        assert client.vec([1.0, 2.0]).tolist() == [1.0, 2.0]


def test_503_is_retried_a_bounded_number_of_times(guarded: LiveServer) -> None:
    # A long streamed descent holds the only computation slot while the stream is open.
    hold = Client(guarded.base_url, api_key=API_KEY)
    x0 = np.linspace(-1.0, 1.0, 20_000)
    stream = hold.gradient_descent(
        ["tanh", "sum"], x0, learning_rate=1e-9, max_steps=100_000, record_every=1, stream=True
    )
    try:
        next(iter(stream))  # the run has started: the slot is taken
        transport = Counting()
        with Client(
            guarded.base_url, api_key=API_KEY, transport=transport, retries=2, max_retry_delay=0.01
        ) as busy:
            with pytest.raises(UnavailableError) as caught:
                busy.vec([1.0])
        assert transport.sent == 3  # the first try and two retries, then the error
        assert caught.value.type == "/problems/saturated"
    finally:
        stream.close()
        hold.close()
    # Closing the stream frees the slot; a patient client gets through.
    with Client(guarded.base_url, api_key=API_KEY, retries=100, max_retry_delay=0.05) as client:
        assert client.vec([3.0]).tolist() == [3.0]
