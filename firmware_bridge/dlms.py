"""A DLMS/COSEM line (IEC 62056): the client's end of a link to electricity meters, HDLC on a serial
port (or HDLC carried over TCP, ``socket://``) or the IEC 62056-47 TCP wrapper.

Each read is one association: SNRM (HDLC), AARQ with no security or a Low Level Security
password, GETs of the profile's objects by OBIS (a register's value and its scaler/unit from
attribute 3), then RELEASE and DISC. The load profile (a profile generic, 1.0.99.1.0.255) is read
by range to backfill the interval a meter could not be read, each row with the meter's own
timestamp. Frames are built and parsed by Gurux (``gurux_dlms.GXDLMSClient``); this module only
moves them and names every failure: the line, the meter, what was sent and what came back.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import termios
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from types import TracebackType
from typing import Any, Literal, Self, TypeVar

import serial
from gurux_dlms import GXByteBuffer, GXDateTime, GXDLMSClient, GXDLMSException, GXReplyData
from gurux_dlms.enums import Authentication, InterfaceType
from gurux_dlms.objects import GXDLMSClock, GXDLMSData, GXDLMSProfileGeneric, GXDLMSRegister

from citygw.contract.wire import DeviceState, FieldValue
from firmware_bridge.errors import DecodeError, DeviceCrcError, DeviceError, DeviceTimeout, LineUnavailable
from firmware_bridge.profile import DlmsField, DlmsProfile

Transport = Literal["hdlc", "wrapper"]
HDLC_FLAG = 0x7E
WRAPPER_HEADER = 8  # version (2), source wPort (2), destination wPort (2), length (2)
PUBLIC_CLIENT = 16  # the public client: no security
POLL_S = 0.01
# What Gurux raises on an answer it cannot make sense of (its own checks are plain exceptions).
DECODING_ERRORS = (ValueError, TypeError, IndexError, KeyError, AttributeError, ArithmeticError)
R = TypeVar("R")


@dataclass(frozen=True)
class Meter:
    """How one meter is reached: its server (logical) address, its HDLC physical address when on a
    shared bus, the client address and, for Low Level Security, the password."""

    logical: int = 1
    physical: int | None = None
    client: int = PUBLIC_CLIENT
    password: str | None = None

    def __str__(self) -> str:
        where = f"meter {self.logical}" if self.physical is None else f"meter {self.physical}/{self.logical}"
        return f"{where} (client {self.client}, {'LLS password' if self.password else 'no security'})"


class DlmsRefused(DeviceError):
    """The meter answered but refused: the association (a wrong password) or an object's access."""

    state = DeviceState.EXCEPTION


@dataclass(frozen=True)
class Scaled:
    """A register's raw value with the scaler and unit code of its attribute 3."""

    raw: Any
    scaler: int = 0
    unit: int | None = None  # None: a data object, no unit


def field_value(spec: DlmsField, raw: Any, scaler: int = 0) -> FieldValue:
    """The field's value from the object's raw value (scaled by 10^scaler, then by the field's scale)."""
    if spec.type == "string":
        if isinstance(raw, bytes | bytearray):
            return bytes(raw).decode("ascii", errors="replace")
        return str(raw)
    if isinstance(raw, bool) or not isinstance(raw, int | float):
        raise ValueError(f"{raw!r} is no number")
    value = Decimal(str(raw)).scaleb(scaler) * Decimal(str(spec.scale))
    return int(value) if spec.type == "int" else float(value)


def scaled_field(spec: DlmsField, value: Scaled) -> FieldValue:
    """The field from an object's value with its scaler/unit; ValueError saying why it cannot be (a unit
    that is not the profile's, a value that is no number)."""
    if spec.cosem_unit is not None and value.unit != spec.cosem_unit:
        raise ValueError(
            f"the meter reports unit code {value.unit}, the profile expects {spec.cosem_unit}: left out; "
            "fix the profile's cosem_unit and scale"
        )
    return field_value(spec, value.raw, value.scaler)


def one_line(error: Exception) -> str:
    """Gurux' error text on one line (its messages carry line breaks)."""
    return " ".join(str(error).split()).rstrip(".")


def to_ms(stamp: Any) -> int:
    """A COSEM date-time (Gurux GXDateTime or datetime) as ms since the epoch."""
    value = stamp.value if isinstance(stamp, GXDateTime) else stamp
    if not isinstance(value, dt.datetime):
        raise ValueError(f"{stamp!r} is no date-time")
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return int(value.timestamp() * 1000)


def gurux_client(meter: Meter, transport: Transport) -> GXDLMSClient:
    """A Gurux client for one association with ``meter`` (logical name referencing, as meters use)."""
    server = (
        meter.logical
        if meter.physical is None
        else GXDLMSClient.getServerAddress(meter.logical, meter.physical)
    )
    return GXDLMSClient(
        True,
        meter.client,
        server,
        Authentication.LOW if meter.password else Authentication.NONE,
        meter.password,
        InterfaceType.WRAPPER if transport == "wrapper" else InterfaceType.HDLC,
    )


class DlmsLine:
    """The client on one DLMS line; ``async with`` opens the port, then read meters one at a time."""

    def __init__(
        self,
        port: str,
        *,
        transport: Transport = "hdlc",
        baudrate: int = 9600,
        timeout: float = 2.0,
        retries: int = 1,
        name: str | None = None,
    ) -> None:
        self.port = port
        self.transport = transport
        self.baudrate = baudrate
        self.timeout = timeout
        self.retries = retries
        self.name = name or port
        self._serial: Any = None
        self._lock = asyncio.Lock()
        self._missing: dict[Meter, dict[str, DecodeError]] = {}

    async def __aenter__(self) -> Self:
        try:
            self._serial = await asyncio.to_thread(
                serial.serial_for_url, self.port, baudrate=self.baudrate, timeout=POLL_S
            )
        except (OSError, ValueError, termios.error) as exc:
            raise LineUnavailable(f"DLMS line {self.name}: cannot open {self.port}: {exc}") from exc
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._serial is not None:
            await asyncio.to_thread(self._serial.close)
            self._serial = None

    async def read(self, meter: Meter, profile: DlmsProfile) -> dict[str, FieldValue]:
        """The profile's fields from one association; a field whose object is missing or whose unit is
        not the profile's is left out (see ``field_errors``)."""
        return await self._run(self._session, meter, lambda c: self._read_fields(c, meter, profile))

    def field_errors(self, meter: Meter) -> dict[str, DecodeError]:
        """The profile fields left out of the meter's last read, each with why."""
        return dict(self._missing.get(meter, {}))

    async def read_clock(self, meter: Meter) -> int:
        """The meter's clock (0.0.1.0.0.255), ms since the epoch."""
        return await self._run(self._session, meter, lambda c: self._read_clock(c, meter))

    async def read_load_profile(
        self, meter: Meter, profile: DlmsProfile, since_ms: int, until_ms: int
    ) -> list[tuple[int, dict[str, FieldValue]]]:
        """The load profile's rows stamped after ``since_ms`` up to ``until_ms`` (meter time), oldest
        first, each as (timestamp, the profile fields its columns carry)."""
        if profile.load_profile is None:
            raise ValueError(f"profile {profile.model} names no load_profile")
        return await self._run(
            self._session, meter, lambda c: self._read_rows(c, meter, profile, since_ms, until_ms)
        )

    async def _run(self, job: Callable[..., R], *args: Any) -> R:
        if self._serial is None:
            raise LineUnavailable(f"DLMS line {self.name} is not open")
        async with self._lock:
            return await asyncio.to_thread(job, *args)

    # The blocking side, run in a worker thread under the lock.

    def _session(self, meter: Meter, job: Callable[[GXDLMSClient], R]) -> R:
        """Associate with the meter, run ``job`` with the client, then release and disconnect."""
        client = gurux_client(meter, self.transport)
        if self.transport == "hdlc":
            reply = self._exchange(client, meter, [client.snrmRequest()], "SNRM")
            self._decoding(meter, "SNRM: the UA", client.parseUAResponse, reply.data)
        reply = self._exchange(client, meter, client.aarqRequest(), "AARQ")
        try:
            client.parseAareResponse(reply.data)
        except GXDLMSException as exc:
            self._goodbye(client, meter, release=False)
            refused = "wrong password" if meter.password else "association refused"
            raise DlmsRefused(self._where(meter, f"AARQ: {refused}: {one_line(exc)}")) from None
        except DECODING_ERRORS as exc:
            raise DecodeError(self._where(meter, f"AARQ: the AARE cannot be decoded: {exc!r}")) from None
        try:
            return self._decoding(meter, "the answer", job, client)
        finally:
            self._goodbye(client, meter)

    def _decoding(self, meter: Meter, what: str, job: Callable[..., R], *args: Any) -> R:
        """``job(*args)``, an answer Gurux cannot make sense of being a DecodeError naming the meter."""
        try:
            return job(*args)
        except DECODING_ERRORS as exc:
            raise DecodeError(self._where(meter, f"{what} cannot be decoded: {exc!r}")) from None

    def _goodbye(self, client: GXDLMSClient, meter: Meter, *, release: bool = True) -> None:
        """RELEASE and DISC; a meter that does not answer them is done with all the same."""
        try:
            if release:
                self._exchange(client, meter, client.releaseRequest(), "RELEASE", retries=0)
            if self.transport == "hdlc":
                self._exchange(client, meter, [client.disconnectRequest()], "DISC", retries=0)
        except DeviceError:
            pass

    def _get(self, client: GXDLMSClient, meter: Meter, target: Any, attribute: int, what: str) -> Any:
        """One attribute's value (DlmsRefused naming the request when the meter refuses it)."""
        reply = self._exchange(client, meter, client.read(target, attribute), what)
        return reply.value

    def _scaled(self, client: GXDLMSClient, meter: Meter, obis: str) -> Scaled:
        register = GXDLMSRegister(obis)
        raw = self._get(client, meter, register, 2, f"GET {obis} attribute 2")
        scaler_unit = self._get(client, meter, register, 3, f"GET {obis} attribute 3 (scaler/unit)")
        if not isinstance(scaler_unit, list) or len(scaler_unit) != 2:
            raise DecodeError(
                self._where(meter, f"GET {obis} attribute 3: {scaler_unit!r} is no scaler/unit")
            )
        return Scaled(raw, int(scaler_unit[0]), int(scaler_unit[1]))

    def _read_fields(self, client: GXDLMSClient, meter: Meter, profile: DlmsProfile) -> dict[str, FieldValue]:
        fields: dict[str, FieldValue] = {}
        missing: dict[str, DecodeError] = {}
        for spec in profile.fields:
            try:
                fields[spec.field] = self._field(client, meter, spec)
            except DlmsRefused as exc:
                missing[spec.field] = DecodeError(str(exc))
        self._missing[meter] = missing
        if not fields and missing:
            raise next(iter(missing.values()))
        return fields

    def _field(self, client: GXDLMSClient, meter: Meter, spec: DlmsField) -> FieldValue:
        if spec.cosem_class == "data":
            raw = self._get(client, meter, GXDLMSData(spec.obis), 2, f"GET {spec.obis} attribute 2")
            return self._value(meter, spec, Scaled(raw))
        return self._value(meter, spec, self._scaled(client, meter, spec.obis))

    def _value(self, meter: Meter, spec: DlmsField, value: Scaled) -> FieldValue:
        try:
            return scaled_field(spec, value)
        except (ValueError, ArithmeticError) as exc:
            raise DlmsRefused(self._where(meter, f"{spec.field} ({spec.obis}): {exc}")) from None

    def _read_clock(self, client: GXDLMSClient, meter: Meter) -> int:
        clock = GXDLMSClock()
        raw = self._get(client, meter, clock, 2, f"GET {clock.logicalName} attribute 2 (clock)")
        client.updateValue(clock, 2, raw)
        try:
            return to_ms(clock.time)
        except ValueError as exc:
            raise DecodeError(self._where(meter, f"clock: {exc}")) from None

    def _read_rows(
        self, client: GXDLMSClient, meter: Meter, profile: DlmsProfile, since_ms: int, until_ms: int
    ) -> list[tuple[int, dict[str, FieldValue]]]:
        assert profile.load_profile is not None
        obis = profile.load_profile
        generic = GXDLMSProfileGeneric(obis)
        columns = self._get(client, meter, generic, 3, f"GET {obis} attribute 3 (capture objects)")
        client.updateValue(generic, 3, columns)
        by_obis = {spec.obis: spec for spec in profile.fields}
        scalers: dict[str, Scaled] = {}  # the columns of profile fields, with their scaler/unit
        for target, capture in generic.captureObjects:
            spec = by_obis.get(target.logicalName)
            if spec is not None and capture.attributeIndex == 2 and isinstance(target, GXDLMSRegister):
                scalers[spec.obis] = self._scaled(client, meter, spec.obis)
        start = dt.datetime.fromtimestamp(since_ms / 1000, dt.UTC)
        end = dt.datetime.fromtimestamp(until_ms / 1000, dt.UTC)
        what = f"GET {obis} attribute 2 by range {start:%Y-%m-%d %H:%M:%S}..{end:%H:%M:%S} UTC"
        reply = self._exchange(client, meter, client.readRowsByRange(generic, start, end), what)
        client.updateValue(generic, 2, reply.value)
        rows: list[tuple[int, dict[str, FieldValue]]] = []
        for row in generic.buffer:
            stamp: int | None = None
            fields: dict[str, FieldValue] = {}
            for (target, capture), raw in zip(generic.captureObjects, row, strict=False):
                if isinstance(target, GXDLMSClock) and capture.attributeIndex == 2:
                    stamp = to_ms(raw)
                elif target.logicalName in scalers:
                    spec, scaled = by_obis[target.logicalName], scalers[target.logicalName]
                    with contextlib.suppress(ValueError, ArithmeticError):  # as the live read leaves it out
                        fields[spec.field] = scaled_field(spec, Scaled(raw, scaled.scaler, scaled.unit))
            if stamp is None:
                raise DecodeError(self._where(meter, f"{what}: a row without the clock column"))
            if since_ms < stamp <= until_ms and fields:
                rows.append((stamp, fields))
        return sorted(rows, key=lambda r: r[0])

    def _exchange(
        self, client: GXDLMSClient, meter: Meter, frames: Sequence[Any], what: str, retries: int | None = None
    ) -> GXReplyData:
        """Send the request's frames and gather the reply, asking for further blocks while it has more."""
        reply = GXReplyData()
        for frame in frames:
            reply = GXReplyData()
            self._round_trip(client, meter, bytes(frame), reply, what, retries)
            while reply.isMoreData():
                self._round_trip(client, meter, bytes(client.receiverReady(reply)), reply, what, retries)
        return reply

    def _round_trip(
        self,
        client: GXDLMSClient,
        meter: Meter,
        frame: bytes,
        reply: GXReplyData,
        what: str,
        retries: int | None,
    ) -> None:
        """One frame out, one whole frame back into ``reply``; a lost or garbled answer is sent again."""
        error: DeviceError | None = None
        for _ in range((self.retries if retries is None else retries) + 1):
            self._send(frame)
            try:
                data = self._receive(meter, what)
            except DeviceTimeout as exc:
                error = exc
                continue
            try:
                complete = client.getData(GXByteBuffer(data), reply)
            except GXDLMSException as exc:
                raise DlmsRefused(self._where(meter, f"{what}: the meter answers {one_line(exc)}")) from None
            except Exception as exc:  # Gurux raises plain errors on a frame it cannot parse
                error = DeviceCrcError(
                    self._where(meter, f"{what}: bad frame ({exc}): received {data.hex(' ')}")
                )
                continue
            if not complete:
                error = DeviceCrcError(
                    self._where(meter, f"{what}: not a whole frame: received {data.hex(' ')}")
                )
                continue
            if reply.error:
                why = one_line(Exception(reply.getErrorMessage()))
                raise DlmsRefused(self._where(meter, f"{what}: the meter answers error {reply.error}: {why}"))
            return
        assert error is not None
        raise error

    def _send(self, frame: bytes) -> None:
        self._serial.reset_input_buffer()
        self._serial.write(frame)
        self._serial.flush()

    def _receive(self, meter: Meter, what: str) -> bytes:
        """One whole HDLC frame or wrapper message (DeviceTimeout on silence or a frame cut short)."""
        deadline = time.monotonic() + self.timeout
        if self.transport == "wrapper":
            header = self._read(WRAPPER_HEADER, deadline)
            if len(header) == WRAPPER_HEADER:
                body = self._read(int.from_bytes(header[6:8], "big"), deadline + self.timeout)
                data = header + body
                if len(body) == int.from_bytes(header[6:8], "big"):
                    return data
            else:
                data = header
        else:
            data = self._read(1, deadline)
            while data and data[-1] != HDLC_FLAG:  # noise before the opening flag
                data = self._read(1, deadline)
            first = self._read(1, deadline) if data else b""
            while first == bytes([HDLC_FLAG]):  # a closing flag before the opening one
                first = self._read(1, deadline)
            data += first
            if first:
                second = self._read(1, deadline)
                data += second
                if second:
                    length = ((first[0] & 0x07) << 8) | second[0]  # frame format: type, S, length
                    rest = self._read(length - 1, deadline + self.timeout)
                    data += rest
                    if len(rest) == length - 1:
                        return data
        if not data:
            raise DeviceTimeout(self._where(meter, f"no answer to {what} within {self.timeout:g} s"))
        raise DeviceTimeout(
            self._where(
                meter, f"{what}: the answer stopped after {len(data)} bytes: received {data.hex(' ')}"
            )
        )

    def _read(self, count: int, deadline: float) -> bytes:
        data = b""
        while len(data) < count and time.monotonic() < deadline:
            data += self._serial.read(count - len(data))
        return data

    def _where(self, meter: Meter, what: str) -> str:
        return f"DLMS line {self.name}, {meter}: {what}"
