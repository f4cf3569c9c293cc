"""One Modbus line (a TCP endpoint or an RS-485 port) and the devices on it."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterable
from types import TracebackType
from typing import Self

from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient
from pymodbus.client.base import ModbusBaseClient
from pymodbus.exceptions import ConnectionException, ModbusIOException
from pymodbus.framer import FramerRTU
from pymodbus.pdu import ExceptionResponse, ModbusPDU

from citygw.wire import FieldValue
from firmware_bridge.errors import (
    DeviceCrcError,
    DeviceError,
    DeviceExceptionResponse,
    DeviceTimeout,
    LineUnavailable,
)
from firmware_bridge.planner import DEFAULT_MAX_GAP, ReadRequest, plan_requests
from firmware_bridge.profile import Poll, Profile
from firmware_bridge.registers import decode, encode

DEFAULT_TIMEOUT = 1.0


class ModbusLine:
    """One physical line: requests never overlap on it, and it reconnects when the line returns.

    Build it with ``ModbusLine.tcp(...)`` or ``ModbusLine.rtu(...)`` and use it as an async
    context manager. Entering does not fail when the line is down: each read reconnects and
    raises ``LineUnavailable`` while it stays down.
    """

    def __init__(self, make_client: Callable[[], ModbusBaseClient], *, name: str, timeout: float) -> None:
        self._make_client = make_client
        self.name = name
        self.timeout = timeout
        self._client: ModbusBaseClient | None = None
        self._lock = asyncio.Lock()
        self._received = bytearray()
        self._serial = False
        self._lost = asyncio.Event()

    @classmethod
    def tcp(cls, *, host: str, port: int = 502, timeout: float = DEFAULT_TIMEOUT) -> ModbusLine:
        """A Modbus TCP endpoint (a device or a gateway in front of an RS-485 bus)."""

        def make() -> ModbusBaseClient:
            return AsyncModbusTcpClient(
                host,
                port=port,
                timeout=timeout,
                retries=0,
                reconnect_delay=0,
                trace_connect=line._trace_connect,
            )

        line = cls(make, name=f"tcp://{host}:{port}", timeout=timeout)
        return line

    @classmethod
    def rtu(
        cls,
        *,
        port: str,
        baudrate: int,
        parity: str = "N",
        stopbits: int = 1,
        bytesize: int = 8,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> ModbusLine:
        """A serial RS-485 line; ``port`` is a device path or a pyserial URL."""
        line: ModbusLine

        def make() -> ModbusBaseClient:
            return AsyncModbusSerialClient(
                port,
                baudrate=baudrate,
                parity=parity,
                stopbits=stopbits,
                bytesize=bytesize,
                timeout=timeout,
                retries=0,
                reconnect_delay=0,
                trace_packet=line._trace_packet,
                trace_connect=line._trace_connect,
            )

        line = cls(make, name=f"{port}@{baudrate}", timeout=timeout)
        line._serial = True
        return line

    async def __aenter__(self) -> Self:
        # pymodbus clients bind to the running loop: create them here, not in the constructor.
        self._client = self._make_client()
        await self._client.connect()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    async def read(
        self, unit: int, profile: Profile, poll: Poll | Iterable[Poll] | None = None
    ) -> dict[str, FieldValue]:
        """Engineering values of every field of ``profile`` (or of the given poll classes)."""
        requests = plan_requests(
            profile.select(poll),
            max_registers=profile.max_registers,
            max_gap=DEFAULT_MAX_GAP,
            forbidden=profile.forbidden,
        )
        values: dict[str, FieldValue] = {}
        for request in requests:
            words = await self.read_request(unit, request)
            for spec in request.specs:
                values[spec.field] = decode(spec, request.slice_for(spec, words))
        return values

    async def read_request(self, unit: int, request: ReadRequest) -> list[int]:
        """Raw registers (bits as 0/1) of one planned read."""
        what = f"unit {unit} {request.table} {request.address}+{request.count}"

        async def send(client: ModbusBaseClient) -> ModbusPDU:
            address, count = request.address, request.count
            match request.table:
                case "coil":
                    return await client.read_coils(address, count=count, device_id=unit)
                case "discrete":
                    return await client.read_discrete_inputs(address, count=count, device_id=unit)
                case "holding":
                    return await client.read_holding_registers(address, count=count, device_id=unit)
                case "input":
                    return await client.read_input_registers(address, count=count, device_id=unit)

        response = await self._execute(what, send)
        if request.table in ("coil", "discrete"):
            return [int(b) for b in response.bits[: request.count]]
        if len(response.registers) != request.count:
            raise DeviceError(f"{what} on {self.name}: answered {len(response.registers)} registers")
        return list(response.registers)

    async def write(self, unit: int, profile: Profile, field: str, value: FieldValue) -> FieldValue:
        """Write one field (range-checked against the profile) and return the value read back."""
        spec = profile.register(field)
        if not spec.writable:
            raise ValueError(f"{field} is read-only in profile {profile.model}")
        if not spec.allows(value):
            allowed = f"{spec.min}..{spec.max} {spec.unit or ''}".rstrip()
            raise ValueError(f"{field}={value} is outside the allowed range {allowed}")
        words = encode(spec, value)
        what = f"unit {unit} write {field} ({spec.table} {spec.address})"

        async def send(client: ModbusBaseClient) -> ModbusPDU:
            if spec.table == "coil":
                return await client.write_coil(spec.address, bool(words[0]), device_id=unit)
            if len(words) == 1:
                return await client.write_register(spec.address, words[0], device_id=unit)
            return await client.write_registers(spec.address, words, device_id=unit)

        await self._execute(what, send)
        request = ReadRequest(spec.table, spec.address, spec.register_count, (spec,))
        return decode(spec, await self.read_request(unit, request))

    async def _execute(
        self, what: str, send: Callable[[ModbusBaseClient], Awaitable[ModbusPDU]]
    ) -> ModbusPDU:
        """Send one request with the line to ourselves; pymodbus errors become ``DeviceError``s."""
        if self._client is None:
            raise RuntimeError(f"{self.name}: use the line inside 'async with'")
        client = self._client
        async with self._lock:
            if not client.connected and not await client.connect():
                raise LineUnavailable(f"{self.name}: line unavailable (cannot open port or connect)")
            self._received.clear()
            self._lost.clear()
            request = asyncio.ensure_future(send(client))
            lost = asyncio.ensure_future(self._lost.wait())
            try:
                await asyncio.wait((request, lost), return_when=asyncio.FIRST_COMPLETED)
            finally:
                lost.cancel()
            if not request.done():
                # pymodbus would wait for the full timeout on a connection that is already gone.
                request.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await request
                raise LineUnavailable(f"{what} on {self.name}: line unavailable (connection lost)")
            try:
                response = request.result()
            except ModbusIOException as exc:
                if self._serial and self._received and not _valid_rtu_frame(bytes(self._received)):
                    raise DeviceCrcError(f"{what} on {self.name}: corrupted answer (CRC mismatch)") from exc
                raise DeviceTimeout(f"{what} on {self.name}: no answer within {self.timeout} s") from exc
            except ConnectionException as exc:
                raise LineUnavailable(f"{self.name}: line unavailable ({exc})") from exc
        if not isinstance(response, ModbusPDU):
            raise DeviceError(f"{what} on {self.name}: no response object")
        if isinstance(response, ExceptionResponse) or response.isError():
            raise DeviceExceptionResponse(response.exception_code, f"{what} on {self.name}")
        return response

    def _trace_connect(self, connected: bool) -> None:
        if not connected:
            self._lost.set()

    def _trace_packet(self, sending: bool, data: bytes) -> bytes:
        # Kept to tell a corrupted answer (bytes arrived, CRC wrong) from silence.
        if not sending:
            self._received += data
        return data


def _valid_rtu_frame(data: bytes) -> bool:
    return len(data) >= 4 and FramerRTU.check_CRC(data[:-2], int.from_bytes(data[-2:], "big"))
