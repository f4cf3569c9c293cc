"""Open a ModbusLine to simulators over either transport, so one test runs over both."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Literal

from firmware_bridge.modbus import ModbusLine
from firmware_bridge.simulators import ModbusDeviceSimulator, serve_serial_pty, serve_tcp

Transport = Literal["tcp", "serial"]
TRANSPORTS: tuple[Transport, ...] = ("tcp", "serial")
TIMEOUT = 0.3


@asynccontextmanager
async def line_to(
    transport: Transport, sims: Sequence[ModbusDeviceSimulator], *, reply_timeout: float = TIMEOUT
) -> AsyncIterator[ModbusLine]:
    """A line with the simulators on it: a Modbus TCP endpoint or an RS-485 line on a pty."""
    if transport == "tcp":
        async with (
            serve_tcp(sims) as endpoint,
            ModbusLine.tcp(host=endpoint.host, port=endpoint.port, timeout=reply_timeout) as line,
        ):
            yield line
    else:
        async with (
            serve_serial_pty(sims) as port,
            ModbusLine.rtu(port=port, baudrate=9600, timeout=reply_timeout) as line,
        ):
            yield line
