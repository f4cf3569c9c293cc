"""Why a TCP endpoint cannot be reached: said as an engineer would check it, None when it can."""

from __future__ import annotations

import asyncio

from firmware_bridge.diagnosis import tcp_problem
from tests.services import free_port


async def test_a_port_nothing_listens_on_is_refused_naming_the_peer() -> None:
    port = free_port()
    assert await tcp_problem("127.0.0.1", port, 1.0, peer="meter") == (
        f"connection refused: nothing listens on 127.0.0.1:{port} (wrong port, or the meter is off)"
    )


async def test_an_unknown_host_name_is_said() -> None:
    problem = await tcp_problem("no-such-host.invalid", 502, 1.0, peer="device")
    assert problem is not None
    assert problem.startswith("no-such-host.invalid is no known host name")


async def test_a_listening_endpoint_is_no_problem() -> None:
    server = await asyncio.start_server(lambda reader, writer: writer.close(), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        assert await tcp_problem("127.0.0.1", port, 1.0, peer="device") is None
