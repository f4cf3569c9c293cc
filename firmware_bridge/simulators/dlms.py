"""Simulated DLMS/COSEM electricity meters built on Gurux' server side, on a pseudo-terminal (HDLC)
or on TCP (HDLC over TCP, or the IEC 62056-47 wrapper).

A meter holds registers (value, scaler, unit), a clock and a load profile (a profile generic whose
rows are the clock and registers, one row per capture period); ``tick`` advances its counters
and captures a row, as a meter does whether or not anyone is reading it. The association needs
the meter's Low Level Security password when it has one. Faults: a dead meter stays silent (it
still measures and captures); a meter can send a number of answers with a flipped byte (a bad
frame check sequence), or fall silent after a number of answers (in the middle of a read).

Gurux' Python server (``GXDLMSServer``) is used for everything on the wire: framing, the
association and GET encoding; ``_GuruxMeter`` fills the few holes the library leaves in its
server class (callbacks it calls but does not define, the SNRM/DISC answer, a range read of a
profile generic).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import os
import pty
import tty
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from gurux_dlms import GXByteBuffer, GXDateTime, GXServerReply
from gurux_dlms.ConnectionState import ConnectionState
from gurux_dlms.enums import Authentication, DataType, InterfaceType
from gurux_dlms.enums.AccessMode import AccessMode
from gurux_dlms.enums.MethodAccessMode import MethodAccessMode
from gurux_dlms.enums.SourceDiagnostic import SourceDiagnostic
from gurux_dlms.GXDLMS import GXDLMS
from gurux_dlms.GXDLMSServer import GXDLMSServer
from gurux_dlms.internal._GXCommon import _GXCommon
from gurux_dlms.internal._GXDataInfo import _GXDataInfo
from gurux_dlms.objects import (
    GXDLMSAssociationLogicalName,
    GXDLMSClock,
    GXDLMSProfileGeneric,
    GXDLMSRegister,
)

from firmware_bridge.dlms import HDLC_FLAG, WRAPPER_HEADER, Transport, to_ms

LOAD_PROFILE = "1.0.99.1.0.255"
HDLC_INFO = 128  # max information field length and window 1, as small meters announce


@dataclass
class SimRegister:
    """A register of the simulated meter: its raw value, scaler (10^scaler) and unit code; ``step`` is
    added at every tick (an energy counter grows, a voltage stays)."""

    obis: str
    value: int
    scaler: int = 0
    unit: int = 0
    step: int = 0
    in_load_profile: bool = True


class _Reply(GXServerReply):  # type: ignore[misc]
    """The reply holder the server's ``handleRequest`` writes to (the library's lacks the setters)."""

    def setReply(self, value: Any) -> None:
        self.reply = value

    def getConnectionInfo(self) -> None:
        return None


def range_bounds(settings: Any, parameters: list[Any]) -> tuple[dt.datetime, dt.datetime]:
    """The from and to date-times of a range descriptor (selector 1) as Gurux parsed it."""
    bounds = []
    for raw in parameters[1:3]:
        info = _GXDataInfo()
        info.type_ = DataType.DATETIME
        bounds.append(_GXCommon.getData(settings, GXByteBuffer(raw), info).value)
    return bounds[0], bounds[1]


class _RangedProfile(GXDLMSProfileGeneric):  # type: ignore[misc]
    """A profile generic answering a read by range (selector 1) with the rows between its bounds."""

    def getValue(self, settings: Any, e: Any) -> Any:
        if e.index != 2 or e.selector != 1 or not e.parameters:
            return super().getValue(settings, e)
        start, end = (to_ms(bound) for bound in range_bounds(settings, e.parameters))
        rows = [row for row in self.buffer if start <= to_ms(row[0]) <= end]
        return self.getData(settings, e, rows, None)


class _GuruxMeter(GXDLMSServer):  # type: ignore[misc]
    """Gurux' server with the callbacks it needs; the meter's objects are set up by DlmsMeterSimulator."""

    def __init__(self, interface: int, password: str | None, clock: GXDLMSClock, now: Any) -> None:
        super().__init__(True, interface)
        self.password = password
        self.clock = clock
        self.now = now

    def isTarget(self, serverAddress: int, clientAddress: int) -> bool:
        return True  # the responder routes frames to the meter they address

    def onValidateAuthentication(self, authentication: int, password: Any) -> int:
        if self.password is None and authentication == Authentication.NONE:
            return int(SourceDiagnostic.NONE)
        if self.password is not None and bytes(password or b"") == self.password.encode():
            return int(SourceDiagnostic.NONE)
        return int(SourceDiagnostic.AUTHENTICATION_FAILURE)

    def notifyRead(self) -> None:
        self.clock.time = GXDateTime(self.now())

    def onGetAttributeAccess(self, arg: Any) -> int:
        return int(AccessMode.READ)

    def onGetMethodAccess(self, arg: Any) -> int:
        return int(MethodAccessMode.NO_ACCESS)

    def onPostRead(self, args: Any = None) -> None:
        pass

    def handleSnrmRequest(self, data: Any) -> None:
        GXDLMS.parseSnrmUaResponse(data, self.settings.hdlc)
        self.reset(True)
        self._hdlc_parameters()
        self.settings.connected = ConnectionState.HDLC

    def generateDisconnectRequest(self) -> None:
        self._hdlc_parameters()

    def _hdlc_parameters(self) -> None:
        """The UA's information field: the meter's HDLC parameters (IEC 62056-46 6.4.4.4.3.2)."""
        hdlc = self.settings.hdlc
        hdlc.maxInfoTX = min(hdlc.maxInfoTX, HDLC_INFO)
        hdlc.maxInfoRX = min(hdlc.maxInfoRX, HDLC_INFO)
        window = (1).to_bytes(4, "big")
        info = bytes([0x05, 1, hdlc.maxInfoTX, 0x06, 1, hdlc.maxInfoRX, 0x07, 4, *window, 0x08, 4, *window])
        self.replyData.set(bytes([0x81, 0x80, len(info)]) + info)

    def onPreGet(self, args: Any) -> None:
        pass

    def onPostGet(self, args: Any) -> None:
        pass

    def onFindObject(self, objectType: int, sn: int, ln: str) -> None:
        return None

    def onPreRead(self, args: Any) -> None:
        pass

    def onPreWrite(self, args: Any) -> None:
        pass

    def onPostWrite(self, args: Any) -> None:
        pass

    def onConnected(self, connectionInfo: Any) -> None:
        pass

    def onInvalidConnection(self, connectionInfo: Any) -> None:
        pass

    def onDisconnected(self, connectionInfo: Any) -> None:
        pass

    def onPreAction(self, args: Any) -> None:
        pass

    def onPostAction(self, args: Any) -> None:
        pass


def demo_registers() -> list[SimRegister]:
    """The objects of a typical three-phase meter (``generic_dlms_meter`` reads them): energy in Wh
    growing 250 Wh a capture period, power in 0.1 W, voltage in 0.1 V, current in 0.01 A."""
    return [
        SimRegister("1.0.1.8.0.255", 12_345_678, 0, 30, step=250),
        SimRegister("1.0.2.8.0.255", 1000, 0, 30),
        SimRegister("1.0.1.7.0.255", 2305, -1, 27, in_load_profile=False),
        SimRegister("1.0.32.7.0.255", 2301, -1, 35, in_load_profile=False),
        SimRegister("1.0.31.7.0.255", 105, -2, 33, in_load_profile=False),
    ]


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@dataclass
class DlmsMeterSimulator:
    """One simulated meter: its addresses, password, registers and load profile, and its faults."""

    registers: list[SimRegister]
    logical: int = 1
    physical: int | None = None
    password: str | None = None
    transport: Transport = "hdlc"
    capture_period_s: float = 900.0
    dead: bool = False
    bad_frames: int = 0  # answers still to send with a flipped byte
    silent_after: int | None = None  # answers still to send before falling silent (None: no limit)
    answers: int = 0
    rows: list[tuple[int, dict[str, int]]] = field(default_factory=list)  # (ts ms, raw values) captured
    now: Any = utc_now

    def __post_init__(self) -> None:
        interface = InterfaceType.WRAPPER if self.transport == "wrapper" else InterfaceType.HDLC
        self._clock = GXDLMSClock()
        self.server = _GuruxMeter(interface, self.password, self._clock, self.now)
        association = GXDLMSAssociationLogicalName()
        if self.password is not None:
            association.authenticationMechanismName.mechanismId = Authentication.LOW
            association.secret = self.password.encode()
        self._registers: dict[str, GXDLMSRegister] = {}
        for spec in self.registers:
            register = GXDLMSRegister(spec.obis)
            register.value = spec.value
            register.scaler = 10.0**spec.scaler
            register.unit = spec.unit
            self._registers[spec.obis] = register
        self.load_profile = _RangedProfile(LOAD_PROFILE)
        self.load_profile.capturePeriod = int(self.capture_period_s)
        self.load_profile.addCaptureObject(self._clock, 2, 0)
        for spec in self.registers:
            if spec.in_load_profile:
                self.load_profile.addCaptureObject(self._registers[spec.obis], 2, 0)
        objects = [association, self._clock, *self._registers.values(), self.load_profile]
        for item in objects:
            self.server.items.append(item)
            if item is not association:
                association.objectList.append(item)  # the library appends the whole collection: refused
        self.server.initialize()

    def value(self, obis: str) -> int:
        return int(self._registers[obis].value)

    def tick(self) -> None:
        """One capture period: counters grow by their step, and the load profile captures a row."""
        for spec in self.registers:
            self._registers[spec.obis].value += spec.step
        stamp = self.now()
        stamp = stamp.replace(microsecond=stamp.microsecond // 10_000 * 10_000)  # COSEM keeps hundredths
        raw = {spec.obis: self.value(spec.obis) for spec in self.registers if spec.in_load_profile}
        self.load_profile.buffer.append([GXDateTime(stamp), *raw.values()])
        self.rows.append((to_ms(stamp), raw))

    def handle(self, frame: bytes) -> bytes | None:
        """The meter's answer to one whole frame (None: silence)."""
        if self.dead:
            return None
        if self.silent_after is not None:
            if self.silent_after <= 0:
                return None
            self.silent_after -= 1
        reply = _Reply(frame)
        self.server.handleRequest(reply)
        if not reply.reply:
            return None
        answer = bytearray(reply.reply)
        self.answers += 1
        if self.bad_frames > 0:
            self.bad_frames -= 1
            answer[len(answer) // 2] ^= 0x5A  # a flipped byte: the frame check sequence no longer holds
        return bytes(answer)


def hdlc_destination(frame: bytes) -> tuple[int, int | None] | None:
    """(logical, physical) server address an HDLC frame is sent to; None when it is no frame."""
    address: list[int] = []
    for byte in frame[3:7]:
        address.append(byte >> 1)
        if byte & 1:
            break
    else:
        return None
    if len(address) == 1:
        return address[0], None
    if len(address) == 2:
        return address[0], address[1]
    if len(address) == 4:
        return (address[0] << 7) | address[1], (address[2] << 7) | address[3]
    return None


class _Framer:
    """Whole frames out of a byte stream: HDLC (flag, format with length) or wrapper messages."""

    def __init__(self, transport: Transport) -> None:
        self.transport = transport
        self.buffer = b""

    def feed(self, data: bytes) -> list[bytes]:
        self.buffer += data
        frames: list[bytes] = []
        while True:
            frame = self._next()
            if frame is None:
                return frames
            frames.append(frame)

    def _next(self) -> bytes | None:
        if self.transport == "wrapper":
            if len(self.buffer) < WRAPPER_HEADER:
                return None
            need = WRAPPER_HEADER + int.from_bytes(self.buffer[6:8], "big")
        else:
            while self.buffer and (self.buffer[0] != HDLC_FLAG or self.buffer[1:2] == bytes([HDLC_FLAG])):
                self.buffer = self.buffer[1:]  # noise or a doubled flag: resynchronise
            if len(self.buffer) < 3:
                return None
            need = (((self.buffer[1] & 0x07) << 8) | self.buffer[2]) + 2
        if len(self.buffer) < need:
            return None
        frame, self.buffer = self.buffer[:need], self.buffer[need:]
        return frame


def _route(meters: list[DlmsMeterSimulator], frame: bytes) -> bytes | None:
    if meters[0].transport == "wrapper":
        return meters[0].handle(frame)
    target = hdlc_destination(frame)
    for meter in meters:
        if target == (meter.logical, meter.physical):
            return meter.handle(frame)
    return None


@asynccontextmanager
async def ticking(meters: Iterable[DlmsMeterSimulator]) -> AsyncIterator[None]:
    """Advance every meter (counters, load profile) once per its capture period while inside."""

    async def run(meter: DlmsMeterSimulator) -> None:
        while True:
            await asyncio.sleep(meter.capture_period_s)
            meter.tick()

    tasks = [asyncio.create_task(run(meter)) for meter in meters]
    try:
        yield
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task


@asynccontextmanager
async def serve_dlms_pty(meters: Iterable[DlmsMeterSimulator]) -> AsyncIterator[str]:
    """Put HDLC meters behind a pseudo-terminal (a multi-drop bus: frames go by physical address);
    yields the port to open."""
    listed = list(meters)
    master, slave = pty.openpty()
    tty.setraw(slave)
    os.set_blocking(master, False)
    framer = _Framer("hdlc")

    def readable() -> None:
        try:
            data = os.read(master, 4096)
        except OSError:  # EIO: no one has the other end open right now
            return
        for frame in framer.feed(data):
            answer = _route(listed, frame)
            if answer:
                os.write(master, answer)

    loop = asyncio.get_running_loop()
    loop.add_reader(master, readable)
    try:
        yield os.ttyname(slave)
    finally:
        loop.remove_reader(master)
        for fd in (master, slave):
            with contextlib.suppress(OSError):
                os.close(fd)


@asynccontextmanager
async def serve_dlms_tcp(
    meter: DlmsMeterSimulator, host: str = "127.0.0.1", port: int = 0
) -> AsyncIterator[str]:
    """One meter on a TCP port (HDLC over TCP, or the wrapper when its transport is ``wrapper``);
    yields ``socket://host:port``."""

    async def connected(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        framer = _Framer(meter.transport)
        try:
            while data := await reader.read(4096):
                for frame in framer.feed(data):
                    answer = _route([meter], frame)
                    if answer:
                        writer.write(answer)
                        await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(connected, host, port)
    try:
        yield f"socket://{host}:{server.sockets[0].getsockname()[1]}"
    finally:
        server.close()
        await server.wait_closed()
