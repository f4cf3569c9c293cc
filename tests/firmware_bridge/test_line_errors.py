"""A failing line says why in a field engineer's words, and pymodbus's own log lines never show.

Against real sockets and ports: a TCP server that answers HTTP (a web server on port 502), a
port nothing listens on, a serial port that does not exist and one another program holds.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import serial

from firmware_bridge.errors import DeviceError, LineUnavailable, NotModbus
from firmware_bridge.modbus import ModbusLine
from firmware_bridge.profile import load_profile
from tests.services import free_port

METER = load_profile("jxbs_3001")
HTTP_ANSWER = b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"


@asynccontextmanager
async def http_server(*, close: bool) -> AsyncIterator[int]:
    """A web server on a free port: reads the request, answers 400, closes or keeps the connection."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(64)
        writer.write(HTTP_ANSWER)
        await writer.drain()
        if close:
            writer.close()
        else:
            await reader.read()  # until the client gives up

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    async with server:
        yield server.sockets[0].getsockname()[1]


async def failure(line: ModbusLine, caplog: pytest.LogCaptureFixture) -> DeviceError:
    """The error of one read, after checking that nothing of pymodbus reached the log."""
    caplog.set_level(logging.DEBUG)
    async with line:
        with pytest.raises(DeviceError) as caught:
            await line.read(1, METER)
    assert [r for r in caplog.records if r.name.startswith("pymodbus")] == []
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []
    # pymodbus's words are kept only as this module's debug detail.
    assert all(r.name == "firmware_bridge.modbus" for r in caplog.records), caplog.records
    return caught.value


@pytest.mark.parametrize("close", [True, False], ids=["closes", "keeps-open"])
async def test_an_http_answer_on_the_modbus_port_is_named_not_a_modbus_peer(
    close: bool, caplog: pytest.LogCaptureFixture
) -> None:
    async with http_server(close=close) as port:
        error = await failure(ModbusLine.tcp(host="127.0.0.1", port=port, timeout=0.3), caplog)
    assert isinstance(error, NotModbus)
    assert str(error) == (
        f"unit 1 read holding 0+10 on tcp://127.0.0.1:{port}: not a Modbus peer: it answered "
        "'HTTP/1.1 400 Bad Request' (66 bytes) - an HTTP server, not Modbus: check the port"
    )
    # The hex dump pymodbus would have logged is there for whoever debugs.
    assert any("0x48 0x54 0x54 0x50" in r.getMessage() for r in caplog.records)


async def test_a_refused_port_is_named_refused(caplog: pytest.LogCaptureFixture) -> None:
    port = free_port()
    error = await failure(ModbusLine.tcp(host="127.0.0.1", port=port, timeout=0.3), caplog)
    assert isinstance(error, LineUnavailable)
    assert str(error) == (
        f"unit 1 read holding 0+10 on tcp://127.0.0.1:{port}: not sent, line unavailable: "
        f"connection refused: nothing listens on 127.0.0.1:{port} (wrong port, or the device is off)"
    )


async def test_a_missing_serial_port_is_named_missing(caplog: pytest.LogCaptureFixture) -> None:
    error = await failure(ModbusLine.rtu(port="/dev/ttyCITYGW-none", baudrate=9600, timeout=0.3), caplog)
    assert isinstance(error, LineUnavailable)
    assert str(error) == (
        "unit 1 read holding 0+10 on /dev/ttyCITYGW-none@9600: not sent, line unavailable: port missing: "
        "there is no /dev/ttyCITYGW-none (adapter unplugged, or another name: ls /dev/serial/by-id)"
    )


async def test_a_serial_port_another_program_holds_is_named_busy(caplog: pytest.LogCaptureFixture) -> None:
    master, slave = os.openpty()
    name = os.ttyname(slave)
    try:
        with serial.Serial(name, exclusive=True):  # another program (a second agent, minicom) has it
            error = await failure(ModbusLine.rtu(port=name, baudrate=9600, timeout=0.3), caplog)
    finally:
        os.close(master)
        os.close(slave)
    assert isinstance(error, LineUnavailable)
    assert str(error).endswith(f"port busy: another program has {name} open (find it with: fuser {name})")
