"""One Modbus line (a TCP endpoint or an RS-485 port) and the devices on it.

pymodbus's own log lines (warnings, hex dumps) are kept out of the log: a failure is raised once,
as a ``DeviceError`` that names the request and why it failed in a field engineer's words (port
missing, port busy, refused, not a Modbus peer), and the caller logs it with the device's name.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from types import TracebackType
from typing import Any, Literal, Self, cast

import serial
from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient
from pymodbus.client.base import ModbusBaseClient
from pymodbus.exceptions import ConnectionException, ModbusIOException
from pymodbus.framer import FramerRTU, FramerType
from pymodbus.pdu import ExceptionResponse, ModbusPDU

from citygw.contract.wire import FieldValue
from firmware_bridge.diagnosis import tcp_problem
from firmware_bridge.errors import (
    DeviceCrcError,
    DeviceError,
    DeviceExceptionResponse,
    DeviceTimeout,
    LineUnavailable,
    NotModbus,
)
from firmware_bridge.planner import (
    ILLEGAL_DATA_ADDRESS,
    ReadRequest,
    gap_between,
    plan_reads,
    plan_requests,
    split_request,
)
from firmware_bridge.profile import AddressRange, DeviceTiming, Poll, Profile, Table
from firmware_bridge.registers import BadFieldValue, decode, encode
from firmware_bridge.timing import SerialLine

DEFAULT_TIMEOUT = 1.0
# A field that stops decoding is logged at warning at most this often (seconds), per unit and field.
FIELD_WARNING_INTERVAL = 300.0

log = logging.getLogger(__name__)
PYMODBUS_LOGGER = "pymodbus.logging"
_SHOWN_BYTES = 24  # of a peer's answer, in a message about it


class _PymodbusWords(logging.Filter):
    """Keeps pymodbus's records out of the log; at DEBUG they go on as this module's detail."""

    def filter(self, record: logging.LogRecord) -> bool:
        if log.isEnabledFor(logging.DEBUG):
            log.debug("pymodbus: %s", record.getMessage())
        return False


def _quiet_pymodbus() -> None:
    logger = logging.getLogger(PYMODBUS_LOGGER)
    if not any(isinstance(f, _PymodbusWords) for f in logger.filters):
        logger.addFilter(_PymodbusWords())


def _forget_outcome(future: asyncio.Future[Any]) -> None:
    """Take an abandoned request's outcome so that asyncio does not log it as an unretrieved error."""
    if not future.cancelled():
        future.exception()


class ModbusLine:
    """One physical line: requests never overlap on it, and it reconnects when the line returns.

    Build it with ``ModbusLine.tcp(...)`` or ``ModbusLine.rtu(...)`` and use it as an async
    context manager. Entering does not fail when the line is down: each read reconnects and
    raises ``LineUnavailable`` while it stays down.

    On a serial line ``timeout`` is the device's turnaround: a request waits that long plus the
    wire time of its own frames at the line's baud rate, and the next frame leaves only after
    the RTU inter-frame silence (t3.5). A profile's ``timing`` is the device's own: its response
    timeout replaces the line's on a serial line (on TCP it may only lengthen it, since the line's
    timeout also covers the network and a gateway's serial side), and a frame to it leaves only
    after its guard interval of silence. Silences count from the answer's last byte, not from
    when this process got to it. Holes a device reveals (exception 02 on a merged read)
    are remembered per unit and planned around from then on.

    A field whose value is no measurement (NaN, infinity, outside the profile's range:
    ``BadFieldValue``) is left out of the reading and the other fields are returned;
    ``field_errors(unit)`` tells which fields are left out and why. ``read`` raises
    ``DecodeError`` when no field is left, or for a float no sensor measures (a wrong word
    order makes every value of the device suspect).
    """

    def __init__(
        self,
        make_client: Callable[[], ModbusBaseClient],
        *,
        name: str,
        timeout: float,
        diagnose: Callable[[], Awaitable[str]] | None = None,
    ) -> None:
        _quiet_pymodbus()
        self._make_client = make_client
        self.name = name
        # Why the line cannot be opened or connected, found out when it cannot (pymodbus only logs it).
        self._diagnose = diagnose
        self.timeout = timeout
        self._client: ModbusBaseClient | None = None
        self._lock = asyncio.Lock()
        self._received = bytearray()
        self.serial: SerialLine | None = None
        # Answers come as RTU frames (CRC, no MBAP header): a serial port, a serial server, a dial-in modem.
        self.rtu_frames = False
        self._lost = asyncio.Event()
        # A TCP connection (Modbus TCP, or RTU frames to a serial server): profiles' connect_delay_s and
        # close_between_polls apply to it.
        self.over_tcp = False
        # When the connection was last made (monotonic seconds): no request leaves sooner than a
        # device's connect_delay_s after it.
        self._connected_at = 0.0
        # When the last frame on the line ended (monotonic seconds): the next waits its gap after it.
        self._last_frame_at = 0.0
        # When the last byte came in (monotonic seconds): an answer ends there, not when it was handled.
        self._last_byte_at = 0.0
        self._holes: dict[int, list[AddressRange]] = {}
        self._field_errors: dict[int, dict[str, BadFieldValue]] = {}
        # (unit, field) -> when its last warning was logged (monotonic seconds).
        self._warned_at: dict[tuple[int, str], float] = {}
        # Seconds from sending the last request to its answer (or to giving up on it): a capture's timing.
        self.last_round_trip_s = 0.0

    @classmethod
    def tcp(cls, *, host: str, port: int = 502, timeout: float = DEFAULT_TIMEOUT) -> ModbusLine:
        """A Modbus TCP endpoint (a device or a gateway in front of an RS-485 bus)."""
        return cls._over_tcp(host, port, timeout, name=f"tcp://{host}:{port}", framer=FramerType.SOCKET)

    @classmethod
    def _over_tcp(cls, host: str, port: int, timeout: float, *, name: str, framer: FramerType) -> ModbusLine:
        """A line whose frames (``framer``) go through a TCP connection to ``host``:``port``."""

        def make() -> ModbusBaseClient:
            return AsyncModbusTcpClient(
                host,
                port=port,
                framer=framer,
                timeout=timeout,
                retries=0,
                reconnect_delay=0,
                trace_packet=line._trace_packet,
                trace_connect=line._trace_connect,
            )

        async def diagnose() -> str:
            return await _why_no_connection(host, port, timeout)

        line = cls(make, name=name, timeout=timeout, diagnose=diagnose)
        line.over_tcp = True
        return line

    @classmethod
    def rtu_over_tcp(
        cls,
        *,
        host: str,
        port: int,
        baudrate: int,
        parity: str = "N",
        stopbits: int = 1,
        bytesize: int = 8,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> ModbusLine:
        """An RS-485 line behind a serial server that passes RTU frames through a TCP socket.

        The frames are RTU (CRC, no MBAP header); the serial settings are those of the server's
        RS-485 side, where the frames take their wire time and the line's silences still apply.
        """
        name = f"socket://{host}:{port}@{baudrate}"
        line = cls._over_tcp(host, port, timeout, name=name, framer=FramerType.RTU)
        line.serial = _serial_line(f"socket://{host}:{port}", baudrate, parity, stopbits, bytesize)
        line.rtu_frames = True
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
        serial_line = _serial_line(port, baudrate, parity, stopbits, bytesize)
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

        async def diagnose() -> str:
            return _why_port_unusable(port)

        line = cls(make, name=f"{port}@{baudrate}", timeout=timeout, diagnose=diagnose)
        line.serial = serial_line
        line.rtu_frames = True
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

    async def close_connection(self) -> None:
        """Close the TCP connection now (a single-slot device's slot is free for others); the next
        request connects again. Waits for a request on the wire to end first; a no-op on a serial port."""
        async with self._lock:
            if self.over_tcp and self._client is not None and self._client.connected:
                self._client.close()

    async def read(
        self, unit: int, profile: Profile, poll: Poll | Iterable[Poll] | None = None
    ) -> dict[str, FieldValue]:
        """Engineering values of every field of ``profile`` (or of the given poll classes).

        A field whose value is no measurement is left out (see ``field_errors``);
        ``DecodeError`` when none is left or the registers do not decode at all.
        """
        values: dict[str, FieldValue] = {}
        bad: dict[str, tuple[BadFieldValue, Sequence[int]]] = {}
        for request in self.plan(unit, profile, poll):
            for part, words in await self._read_around_holes(unit, request, profile.timing):
                for spec in part.specs:
                    registers = part.slice_for(spec, words)
                    try:
                        values[spec.field] = decode(spec, registers)
                    except BadFieldValue as exc:
                        bad[spec.field] = (exc, registers)
        self._note_field_errors(unit, profile, values, bad)
        if bad and not values:
            first, *others = (error for error, _ in bad.values())
            if not others:
                raise first
            raise BadFieldValue(f"{first}; {len(others)} other fields are no measurement either") from first
        return values

    def field_errors(self, unit: int) -> dict[str, BadFieldValue]:
        """Fields of this unit left out of its readings: why each did not decode when last read."""
        return dict(self._field_errors.get(unit, {}))

    def _note_field_errors(
        self,
        unit: int,
        profile: Profile,
        decoded: Iterable[str],
        bad: dict[str, tuple[BadFieldValue, Sequence[int]]],
    ) -> None:
        """Remember which fields were left out; warn when one starts failing (rate-limited)."""
        errors = self._field_errors.setdefault(unit, {})
        for field in decoded:
            if errors.pop(field, None) is not None:
                log.info("%s unit %d (%s): %s decodes again", self.name, unit, profile.model, field)
        now = time.monotonic()
        for field, (error, registers) in bad.items():
            fresh = field not in errors
            errors[field] = error
            warned = self._warned_at.get((unit, field))
            if fresh and (warned is None or now - warned >= FIELD_WARNING_INTERVAL):
                self._warned_at[unit, field] = now
                log.warning(
                    "%s unit %d (%s): %s left out of the reading, registers %s: %s",
                    self.name,
                    unit,
                    profile.model,
                    field,
                    list(registers),
                    error,
                )

    def plan(
        self, unit: int, profile: Profile, poll: Poll | Iterable[Poll] | None = None
    ) -> list[ReadRequest]:
        """The reads ``read`` sends for this unit now (profile plus the holes learned from it)."""
        return plan_reads(profile, poll, learned=self._holes.get(unit, ()))

    def learned_holes(self, unit: int) -> list[AddressRange]:
        """Registers this unit refused (exception 02) inside merged reads, in the order found."""
        return list(self._holes.get(unit, ()))

    async def _read_around_holes(
        self, unit: int, request: ReadRequest, timing: DeviceTiming
    ) -> list[tuple[ReadRequest, list[int]]]:
        """Read ``request``; if the device refuses an address in it, split it to find and learn the hole."""
        try:
            return [(request, await self.read_request(unit, request, timing=timing))]
        except DeviceExceptionResponse as exc:
            halves = split_request(request) if exc.code == ILLEGAL_DATA_ADDRESS else None
            if halves is None:
                if exc.code == ILLEGAL_DATA_ADDRESS:
                    fields = ", ".join(s.field for s in request.specs)
                    raise DeviceExceptionResponse(
                        exc.code, f"{exc}; the device refuses the registers of {fields}: check the profile"
                    ) from exc
                raise
        left, right = halves
        answered = [
            *await self._read_around_holes(unit, left, timing),
            *await self._read_around_holes(unit, right, timing),
        ]
        if answered[0][0] is left and answered[-1][0] is right:
            # Each half read whole, the union did not: the device refuses something between them.
            hole = gap_between(left, right, reason="answered exception 02 (learned)")
            if hole is not None:
                self._holes.setdefault(unit, []).append(hole)
        return answered

    async def read_request(
        self, unit: int, request: ReadRequest, *, timing: DeviceTiming | None = None
    ) -> list[int]:
        """Raw registers (bits as 0/1) of one planned read, with the device's ``timing`` if known."""
        what = f"unit {unit} read {request.table} {request.address}+{request.count}"

        async def send(client: ModbusBaseClient) -> ModbusPDU:
            return await read_table(client, unit, request.table, request.address, request.count)

        wire = self.serial.read_time(request) if self.serial is not None else 0.0
        response = await self._execute(what, send, wire=wire, timing=timing)
        if request.table in ("coil", "discrete"):
            return [int(b) for b in response.bits[: request.count]]
        if len(response.registers) != request.count:
            raise DeviceError(f"{what} on {self.name}: answered {len(response.registers)} registers")
        return list(response.registers)

    async def write(self, unit: int, profile: Profile, field: str, value: FieldValue) -> FieldValue | None:
        """Write one field (range-checked against the profile) and return the value read back.

        None for a write-only register: what the device made of it is in another field (its
        ``follows``), which the caller reads when the device had time to act.
        """
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
            if len(words) == 1 and profile.write_function_of(spec) == 6:
                return await client.write_register(spec.address, words[0], device_id=unit)
            return await client.write_registers(spec.address, words, device_id=unit)

        wire = 0.0
        if self.serial is not None:
            # unit, function, address, count, byte count, data, CRC; the echo is 8 bytes
            wire = self.serial.frame_time(9 + 2 * len(words) + 8) + 2 * self.serial.silence
        await self._execute(what, send, wire=wire, timing=profile.timing)
        if not spec.readable:
            return None
        return await self.read_field(unit, profile, field)

    async def read_field(self, unit: int, profile: Profile, field: str) -> FieldValue:
        """One field read on its own (a read-back after a write); DecodeError when it does not decode."""
        return (await self.read_fields(unit, profile, [field]))[field]

    async def read_fields(self, unit: int, profile: Profile, fields: Iterable[str]) -> dict[str, FieldValue]:
        """Just these fields, in as few reads as the profile allows (what a command looks at afterwards).

        Unlike ``read``, a field that does not decode raises (``DecodeError``): it is no answer.
        """
        specs = [profile.register(field) for field in fields]
        learned = self._holes.get(unit, ())
        values: dict[str, FieldValue] = {}
        for request in plan_requests(
            specs, max_registers=profile.max_registers, forbidden=[*profile.forbidden, *learned]
        ):
            for part, words in await self._read_around_holes(unit, request, profile.timing):
                for spec in part.specs:
                    values[spec.field] = decode(spec, part.slice_for(spec, words))
        return values

    async def _execute(
        self,
        what: str,
        send: Callable[[ModbusBaseClient], Awaitable[ModbusPDU]],
        *,
        wire: float = 0.0,
        timing: DeviceTiming | None = None,
    ) -> ModbusPDU:
        """Send one request with the line to ourselves; pymodbus errors become ``DeviceError``s.

        ``wire`` is the time the request's frames take on the wire: the answer may take that
        long on top of the device's turnaround.
        """
        if self._client is None:
            raise RuntimeError(f"{self.name}: use the line inside 'async with'")
        client = self._client
        async with self._lock:
            if not client.connected and not await client.connect():
                why = await self._diagnose() if self._diagnose is not None else "cannot open port or connect"
                raise LineUnavailable(f"{what} on {self.name}: not sent, line unavailable: {why}")
            self._received.clear()
            self._lost.clear()
            timeout = self.reply_timeout(timing)
            # The transaction manager waits with its own copy of the parameters, not the client's.
            client.ctx.comm_params.timeout_connect = timeout + wire
            quiet = self._last_frame_at + self._gap_before(timing) - time.monotonic()
            if self.over_tcp and timing is not None:
                quiet = max(quiet, self._connected_at + timing.connect_delay_s - time.monotonic())
            if quiet > 0:
                await asyncio.sleep(quiet)
            sent_at = time.monotonic()
            request = asyncio.ensure_future(send(client))
            lost = asyncio.ensure_future(self._lost.wait())
            try:
                await asyncio.wait((request, lost), return_when=asyncio.FIRST_COMPLETED)
            except asyncio.CancelledError:
                # The poller is stopping: the request goes too, and its end is nobody's error.
                request.cancel()
                request.add_done_callback(_forget_outcome)
                raise
            finally:
                lost.cancel()
                now = time.monotonic()
                # The line is silent from the answer's last byte (or, with none, from giving up): the
                # time this process took to get to the answer counts towards the next frame's gap.
                self._last_frame_at = self._last_byte_at if self._received else now
                self.last_round_trip_s = now - sent_at
            if not request.done():
                # pymodbus would wait for the full timeout on a connection that is already gone.
                request.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await request
                if not self.rtu_frames and self._received and not _valid_mbap(bytes(self._received)):
                    raise NotModbus(f"{what} on {self.name}: {_not_modbus(bytes(self._received))}")
                raise LineUnavailable(f"{what} on {self.name}: line unavailable (connection lost)")
            try:
                response = request.result()
            except ModbusIOException as exc:
                if self.rtu_frames and self._received and not _valid_rtu_frame(bytes(self._received)):
                    raise DeviceCrcError(f"{what} on {self.name}: corrupted answer (CRC mismatch)") from exc
                if not self.rtu_frames and self._received and not _valid_mbap(bytes(self._received)):
                    raise NotModbus(f"{what} on {self.name}: {_not_modbus(bytes(self._received))}") from exc
                raise DeviceTimeout(f"{what} on {self.name}: no answer within {timeout:g} s") from exc
            except ConnectionException as exc:
                raise LineUnavailable(f"{self.name}: line unavailable ({exc})") from exc
        if not isinstance(response, ModbusPDU):
            raise DeviceError(f"{what} on {self.name}: no response object")
        if isinstance(response, ExceptionResponse) or response.isError():
            raise DeviceExceptionResponse(response.exception_code, f"{what} on {self.name}")
        return response

    def reply_timeout(self, timing: DeviceTiming | None = None) -> float:
        """Seconds to wait for a device's answer (plus its frames' wire time on a serial line)."""
        device = timing.response_timeout if timing is not None else None
        if device is None:
            return self.timeout
        return device if self.serial is not None else max(self.timeout, device)

    def _gap_before(self, timing: DeviceTiming | None) -> float:
        """Silence before a frame to this device: t3.5 on a serial line, or the device's longer guard."""
        if self.serial is not None:
            return self.serial.gap_before(timing)
        return timing.guard if timing is not None else 0.0

    def _trace_connect(self, connected: bool) -> None:
        if connected:
            self._connected_at = time.monotonic()
        else:
            self._lost.set()

    def _trace_packet(self, sending: bool, data: bytes) -> bytes:
        # Kept to tell a corrupted answer (bytes arrived, CRC wrong) or a peer that speaks something
        # else (an HTTP server on port 502) from silence.
        if not sending:
            self._received += data
            self._last_byte_at = time.monotonic()
        return data


def _serial_line(port: str, baudrate: int, parity: str, stopbits: int, bytesize: int) -> SerialLine:
    if parity not in ("N", "E", "O") or stopbits not in (1, 2) or bytesize not in (7, 8):
        raise ValueError(f"{port}: serial format {bytesize}{parity}{stopbits} is not 7/8 N/E/O 1/2")
    return SerialLine(
        baudrate,
        parity=cast(Literal["N", "E", "O"], parity),
        stopbits=cast(Literal[1, 2], stopbits),
        bytesize=cast(Literal[7, 8], bytesize),
    )


def _valid_rtu_frame(data: bytes) -> bool:
    return len(data) >= 4 and FramerRTU.check_CRC(data[:-2], int.from_bytes(data[-2:], "big"))


def _valid_mbap(data: bytes) -> bool:
    """Whether ``data`` starts like a Modbus TCP answer: protocol id 0 and a plausible length."""
    return len(data) >= 7 and data[2:4] == b"\x00\x00" and 2 <= int.from_bytes(data[4:6], "big") <= 254


def _not_modbus(data: bytes) -> str:
    """What a peer that is no Modbus server answered, shown so that an engineer recognises it."""
    shown = data[:_SHOWN_BYTES]
    printable = all(32 <= b < 127 or b in (9, 10, 13) for b in shown)
    text = repr(shown.decode("ascii")) if printable else shown.hex(" ")
    more = f" ({len(data)} bytes)" if len(data) > _SHOWN_BYTES else ""
    guess = " - an HTTP server, not Modbus: check the port" if data.startswith(b"HTTP/") else ""
    return f"not a Modbus peer: it answered {text}{more}{guess}"


async def read_table(
    client: ModbusBaseClient, unit: int, table: Table, address: int, count: int
) -> ModbusPDU:
    """One read of ``count`` values of ``table`` from ``address`` of ``unit``: the table's function code."""
    match table:
        case "coil":
            return await client.read_coils(address, count=count, device_id=unit)
        case "discrete":
            return await client.read_discrete_inputs(address, count=count, device_id=unit)
        case "holding":
            return await client.read_holding_registers(address, count=count, device_id=unit)
        case "input":
            return await client.read_input_registers(address, count=count, device_id=unit)


async def _why_no_connection(host: str, port: int, wait: float) -> str:
    """Why a TCP endpoint cannot be reached, as an engineer would check it."""
    problem = await tcp_problem(host, port, wait, peer="device")
    return problem or f"connecting to {host}:{port} failed, and worked when tried again: a flaky network?"


def _why_port_unusable(port: str) -> str:
    """Why a serial port cannot be opened: missing, busy (another program has it) or not allowed."""
    if "://" not in port and not os.path.exists(port):
        return f"port missing: there is no {port} (adapter unplugged, or another name: ls /dev/serial/by-id)"
    try:
        serial.serial_for_url(port, exclusive=True).close()
    except serial.SerialException as exc:
        if "lock" in str(exc) or exc.errno == errno.EBUSY:
            return f"port busy: another program has {port} open (find it with: fuser {port})"
        if exc.errno == errno.EACCES:
            return f"permission denied on {port}: add the agent's user to the dialout group"
        return f"cannot open {port}: {exc}"
    except (OSError, ValueError) as exc:
        return f"cannot open {port}: {exc}"
    return f"cannot open {port}, though it opens when tried again"
