"""The demo's API answers while the loop of its agents is held up (a journal's fsync on a busy disk)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import Iterator

import httpx
import pytest
import uvicorn
from fastapi import FastAPI

from citygw.demo import _ApiServer, _serve
from tests.services import free_port

BLOCK_S = 3.0  # an agent's WAL checkpoint when the disk is busy: fsyncs of seconds


async def test_a_request_does_not_wait_for_the_agents_loop() -> None:
    """Twice in CI a feed request of the embedded demo waited over 15 s: the demo's agents do their
    journals' disk work on their event loop, which the API shared."""
    app = FastAPI()

    @app.get("/ping")
    async def ping() -> dict[str, bool]:
        return {"pong": True}

    port = free_port()
    server = _ApiServer(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    serving = asyncio.create_task(_serve(server))
    try:
        deadline = time.monotonic() + 20
        while not server.started:
            assert time.monotonic() < deadline, "the API never started"
            await asyncio.sleep(0.05)
        took: list[float] = []

        def ask() -> None:
            started = time.monotonic()
            assert httpx.get(f"http://127.0.0.1:{port}/ping", timeout=15).json() == {"pong": True}
            took.append(time.monotonic() - started)

        asker = threading.Thread(target=ask)
        asker.start()
        # The agents' loop held up (this test's loop stands for the demo's), then waiting for the answer.
        time.sleep(BLOCK_S)  # noqa: ASYNC251
        asker.join(15)
        assert took, "no answer while the agents' loop was held up"
        assert took[0] < BLOCK_S / 2, f"the request waited {took[0]:.1f} s for the agents' loop"
    finally:
        server.should_exit = True
        await asyncio.wait_for(serving, 15)


async def test_an_api_that_cannot_listen_is_an_error() -> None:
    with socket_taken() as port:
        server = _ApiServer(uvicorn.Config(FastAPI(), host="127.0.0.1", port=port, log_level="critical"))
        with pytest.raises(RuntimeError, match=f"could not listen on 127.0.0.1:{port}"):
            await asyncio.wait_for(_serve(server), 15)


@contextlib.contextmanager
def socket_taken() -> Iterator[int]:
    """A loopback port something else listens on."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        yield taken.getsockname()[1]
