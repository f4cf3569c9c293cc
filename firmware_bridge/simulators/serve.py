"""Put simulated devices on a line: a Modbus TCP endpoint or a serial line through a pseudo-terminal."""

from __future__ import annotations

import asyncio
import contextlib
import os
import pty
import time
import tty
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Literal

from pymodbus.constants import ExcCodes
from pymodbus.exceptions import NoSuchIdException
from pymodbus.framer import FramerRTU, FramerType
from pymodbus.pdu import DecodePDU, ExceptionResponse, ModbusPDU
from pymodbus.server import ModbusTcpServer
from pymodbus.server.requesthandler import ServerRequestHandler
from pymodbus.simulator import SimDevice
from pymodbus.simulator.simcore import SimCore

from firmware_bridge.simulators.modbus_device import ModbusDeviceSimulator, gateway_placeholder
from firmware_bridge.timing import SerialLine


@dataclass(frozen=True)
class WireFrame:
    """One frame on a simulated serial line: who sent it to or from which unit, and when (monotonic s)."""

    unit: int
    function: int
    start: float
    end: float
    answer: bool


@dataclass
class TcpConnections:
    """What a simulated TCP endpoint saw of its clients' connections."""

    opened: int = 0
    open_now: int = 0
    most_open: int = 0
    # Connections closed at once because every connection slot was taken.
    refused: int = 0
    # Requests ignored because they arrived too soon after their connection was made.
    dropped: int = 0


@dataclass(frozen=True)
class TcpEndpoint:
    """Where a simulated Modbus TCP endpoint listens, and what it saw of its connections."""

    host: str
    port: int
    connections: TcpConnections = field(default_factory=TcpConnections)


def _devices(simulators: Iterable[ModbusDeviceSimulator]) -> list[SimDevice]:
    devices: dict[int, SimDevice] = {}
    for sim in simulators:
        if sim.unit in devices:
            raise ValueError(f"unit id {sim.unit} is used by two simulators on one line")
        devices[sim.unit] = sim.sim_device()
    return list(devices.values())


class _GatewayConnection(ServerRequestHandler):
    """One client connection of the simulated gateway, answering each request under its own id.

    pymodbus 3.16's handler reads ``last_pdu`` again after awaiting the datastore, so a slow
    device's late answer would go out under the next request's transaction and unit id. Here each
    answer task holds on to its own request.
    """

    _answers: set[asyncio.Task[None]]
    _connected_at: float
    _counted: bool

    def callback_connected(self) -> None:
        super().callback_connected()
        gateway = self.server
        assert isinstance(gateway, _Gateway)
        self._connected_at = time.monotonic()
        seen = gateway.connections
        seen.opened += 1
        if gateway.slots is not None and seen.open_now >= gateway.slots:
            seen.refused += 1
            self._counted = False
            if self.transport is not None:
                self.transport.close()  # a single-slot device: the slot is taken
            return
        self._counted = True
        seen.open_now += 1
        seen.most_open = max(seen.most_open, seen.open_now)

    def callback_disconnected(self, exc: Exception | None) -> None:
        gateway = self.server
        if isinstance(gateway, _Gateway) and getattr(self, "_counted", False):
            self._counted = False
            gateway.connections.open_now -= 1
        super().callback_disconnected(exc)

    def handle_later(self) -> None:
        request, addr = self.last_pdu, self.last_addr
        if request is None:
            return
        gateway = self.server
        assert isinstance(gateway, _Gateway)
        if time.monotonic() - getattr(self, "_connected_at", 0.0) < gateway.deaf_after_connect_s:
            gateway.connections.dropped += 1  # a gateway still busy with the new connection
            return
        if not hasattr(self, "_answers"):
            self._answers = set()
        task = asyncio.get_running_loop().create_task(self._answer(request, addr))
        self._answers.add(task)
        task.add_done_callback(self._answers.discard)

    async def _answer(self, request: ModbusPDU, addr: tuple[str, int] | None) -> None:
        try:
            response = await request.datastore_update(self.server.context, request.dev_id)
        except NoSuchIdException:
            return  # an offline device: silence, the client times out
        except Exception:  # a simulator bug answers as a failing device, as pymodbus does
            response = ExceptionResponse(request.function_code, ExcCodes.DEVICE_FAILURE)
        response.transaction_id = request.transaction_id
        response.dev_id = request.dev_id
        self.server_send(response, addr)  # type: ignore[no-untyped-call]


class _Gateway(ModbusTcpServer):
    connections: TcpConnections
    deaf_after_connect_s: float = 0.0
    slots: int | None = None

    def callback_new_connection(self) -> _GatewayConnection:
        return _GatewayConnection(  # type: ignore[no-untyped-call]
            self, self.trace_packet, self.trace_pdu, self.trace_connect
        )


@asynccontextmanager
async def serve_tcp(
    simulators: Iterable[ModbusDeviceSimulator],
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    framer: Literal["socket", "rtu"] = "socket",
    deaf_after_connect_s: float = 0.0,
    slots: int | None = None,
) -> AsyncIterator[TcpEndpoint]:
    """Serve the simulators (one unit id each) on a TCP endpoint; port 0 picks a free port.

    ``framer="socket"`` is a Modbus TCP device or gateway (unknown units answer 0x0B);
    ``framer="rtu"`` is a serial server passing RTU frames through the socket (unknown units are
    silent, as on their RS-485 bus). Firmware quirks: ``deaf_after_connect_s`` ignores requests
    arriving that soon after their connection was made; ``slots`` closes connections beyond that
    many open at once. ``TcpEndpoint.connections`` counts what happened.
    """
    devices = _devices(simulators)
    if all(d.id != 0 for d in devices):
        devices.append(gateway_placeholder(silent=framer == "rtu"))
    server = _Gateway(
        devices,
        address=(host, port),
        ignore_missing_devices=True,
        framer=FramerType.RTU if framer == "rtu" else FramerType.SOCKET,
    )
    server.connections = TcpConnections()
    server.deaf_after_connect_s = deaf_after_connect_s
    server.slots = slots
    await server.serve_forever(background=True)
    listener = server.transport
    if not isinstance(listener, asyncio.Server):  # pragma: no cover - pymodbus listens with a Server
        raise RuntimeError(f"unexpected listener {listener!r}")
    bound_port = listener.sockets[0].getsockname()[1]
    try:
        yield TcpEndpoint(host, bound_port, server.connections)
    finally:
        await server.shutdown()  # type: ignore[no-untyped-call]


class RtuResponder:
    """The device end of an RS-485 line: answers RTU frames from a file descriptor (a pty master).

    Built from pymodbus's RTU framer, request decoder and datastore; units that are not simulated
    stay silent, as on a real bus. With a ``line`` (baud rate and character format) the wire is
    simulated too: a request occupies the line for its bytes' time, a device answers only after
    the 3.5-character silence that ends the request, and its answer leaves byte by byte at the
    baud rate. Without one, answers go out at memory speed.

    On a paced line every frame is appended to ``frames``, and a device whose profile declares a
    guard interval ignores a request that starts sooner than that after the previous frame, as
    its firmware does.
    """

    def __init__(
        self,
        simulators: Iterable[ModbusDeviceSimulator],
        fd: int,
        *,
        line: SerialLine | None = None,
        frames: list[WireFrame] | None = None,
    ) -> None:
        self._simulators = {s.unit: s for s in simulators}
        devices = _devices(self._simulators.values())
        self._core = SimCore(devices)
        self._framer = FramerRTU(DecodePDU(True))
        self._fd = fd
        self._line = line
        self._buffer = b""
        self._first_byte_at = 0.0
        # When the last frame on the simulated wire ends (monotonic seconds).
        self._wire_free_at = 0.0
        self.frames: list[WireFrame] = frames if frames is not None else []
        self._pending: set[asyncio.Task[None]] = set()

    def start(self) -> None:
        """Begin answering (call inside the running loop)."""
        asyncio.get_running_loop().add_reader(self._fd, self._on_readable)

    async def stop(self) -> None:
        """Stop answering; pending answers are dropped."""
        asyncio.get_running_loop().remove_reader(self._fd)
        for task in self._pending:
            task.cancel()
        await asyncio.gather(*self._pending, return_exceptions=True)

    def _on_readable(self) -> None:
        try:
            data = os.read(self._fd, 4096)
        except OSError:  # EIO: no one has the other end open right now
            return
        if not self._buffer:
            self._first_byte_at = time.monotonic()
        self._buffer += data
        while self._buffer:
            used, pdu = self._framer.handleFrame(self._buffer, 0, 0)
            if not used:
                return
            answer_at = self._request_on_wire(used, pdu)
            self._buffer = self._buffer[used:]
            if pdu is not None and pdu.dev_id in self._simulators and answer_at is not None:
                task = asyncio.create_task(self._answer(pdu, answer_at), name=f"rtu-answer-{pdu.dev_id}")
                self._pending.add(task)
                task.add_done_callback(self._pending.discard)

    def _request_on_wire(self, size: int, pdu: ModbusPDU | None) -> float | None:
        """Put a request on the simulated wire; when its device may answer, None if it missed it (guard)."""
        if self._line is None:
            return 0.0
        # The master's frame starts once the line has been silent for t3.5 after the last frame.
        previous_end = self._wire_free_at
        start = max(self._first_byte_at, previous_end + self._line.silence)
        self._wire_free_at = start + self._line.frame_time(size)
        self._first_byte_at = self._wire_free_at
        if pdu is None:
            return None
        self.frames.append(WireFrame(pdu.dev_id, pdu.function_code, start, self._wire_free_at, answer=False))
        sim = self._simulators.get(pdu.dev_id)
        if sim is not None and start - previous_end < sim.profile.timing.guard:
            return None
        return self._wire_free_at + self._line.silence

    async def _answer(self, pdu: ModbusPDU, answer_at: float) -> None:
        await asyncio.sleep(max(0.0, answer_at - time.monotonic()))
        try:
            # SimCore is the datastore pymodbus's own servers hand to datastore_update.
            response = await pdu.datastore_update(self._core, pdu.dev_id)  # type: ignore[arg-type]
        except NoSuchIdException:
            return  # the device is offline: silence
        response.dev_id = pdu.dev_id
        frame = self._framer.buildFrame(response)
        if self._simulators[pdu.dev_id].crc_error:
            frame = frame[:-1] + bytes([frame[-1] ^ 0xFF])
        if self._line is None:
            os.write(self._fd, frame)
            return
        start = max(time.monotonic(), self._wire_free_at + self._line.silence)
        self._wire_free_at = start + self._line.frame_time(len(frame))
        answer = WireFrame(pdu.dev_id, response.function_code, start, self._wire_free_at, answer=True)
        self.frames.append(answer)
        await self._transmit(frame, start, self._line.character_time)

    async def _transmit(self, frame: bytes, start: float, character_time: float) -> None:
        """Hand the frame to the pty byte by byte, each when its last bit would have left the wire."""
        sent = 0
        while sent < len(frame):
            now = time.monotonic()
            due = min(len(frame), int((now - start) / character_time))
            if due > sent:
                os.write(self._fd, frame[sent:due])
                sent = due
            if sent < len(frame):
                await asyncio.sleep(max(0.0, start + (sent + 1) * character_time - time.monotonic()))


@asynccontextmanager
async def serve_serial_pty(
    simulators: Iterable[ModbusDeviceSimulator],
    *,
    baudrate: int | None = None,
    parity: Literal["N", "E", "O"] = "N",
    stopbits: Literal[1, 2] = 1,
    frames: list[WireFrame] | None = None,
) -> AsyncIterator[str]:
    """Serve the simulators as Modbus RTU devices behind a pseudo-terminal; yields the port to open.

    ptys ignore the baud rate the client sets. With ``baudrate`` the responder paces the line
    itself (see ``RtuResponder``), so bus timing can be measured, and logs its frames to
    ``frames``; None answers at memory speed.
    """
    master, slave = pty.openpty()
    # Raw mode before any client opens it: no echo, no line editing of binary frames.
    tty.setraw(slave)
    os.set_blocking(master, False)
    line = None if baudrate is None else SerialLine(baudrate, parity=parity, stopbits=stopbits)
    responder = RtuResponder(simulators, master, line=line, frames=frames)
    responder.start()
    try:
        yield os.ttyname(slave)
    finally:
        await responder.stop()
        # Keeping our slave fd open until now means the master never sees EIO between clients.
        for fd in (master, slave):
            with contextlib.suppress(OSError):
                os.close(fd)
