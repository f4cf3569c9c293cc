"""Put simulated devices on a line: a Modbus TCP endpoint or a serial line through a pseudo-terminal."""

from __future__ import annotations

import asyncio
import contextlib
import os
import pty
import tty
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass

from pymodbus.constants import ExcCodes
from pymodbus.exceptions import NoSuchIdException
from pymodbus.framer import FramerRTU
from pymodbus.pdu import DecodePDU, ExceptionResponse, ModbusPDU
from pymodbus.server import ModbusTcpServer
from pymodbus.server.requesthandler import ServerRequestHandler
from pymodbus.simulator import SimDevice
from pymodbus.simulator.simcore import SimCore

from firmware_bridge.simulators.modbus_device import ModbusDeviceSimulator, gateway_placeholder


@dataclass(frozen=True)
class TcpEndpoint:
    """Where a simulated Modbus TCP endpoint listens."""

    host: str
    port: int


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

    def handle_later(self) -> None:
        request, addr = self.last_pdu, self.last_addr
        if request is None:
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
    def callback_new_connection(self) -> _GatewayConnection:
        return _GatewayConnection(  # type: ignore[no-untyped-call]
            self, self.trace_packet, self.trace_pdu, self.trace_connect
        )


@asynccontextmanager
async def serve_tcp(
    simulators: Iterable[ModbusDeviceSimulator], *, host: str = "127.0.0.1", port: int = 0
) -> AsyncIterator[TcpEndpoint]:
    """Serve the simulators (one unit id each) on a Modbus TCP endpoint; port 0 picks a free port."""
    devices = _devices(simulators)
    if all(d.id != 0 for d in devices):
        devices.append(gateway_placeholder())
    server = _Gateway(devices, address=(host, port), ignore_missing_devices=True)
    await server.serve_forever(background=True)
    listener = server.transport
    if not isinstance(listener, asyncio.Server):  # pragma: no cover - pymodbus listens with a Server
        raise RuntimeError(f"unexpected listener {listener!r}")
    bound_port = listener.sockets[0].getsockname()[1]
    try:
        yield TcpEndpoint(host, bound_port)
    finally:
        await server.shutdown()  # type: ignore[no-untyped-call]


class RtuResponder:
    """The device end of an RS-485 line: answers RTU frames from a file descriptor (a pty master).

    Built from pymodbus's RTU framer, request decoder and datastore; units that are not simulated
    stay silent, as on a real bus.
    """

    def __init__(self, simulators: Iterable[ModbusDeviceSimulator], fd: int) -> None:
        self._simulators = {s.unit: s for s in simulators}
        devices = _devices(self._simulators.values())
        self._core = SimCore(devices)
        self._framer = FramerRTU(DecodePDU(True))
        self._fd = fd
        self._buffer = b""
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
            self._buffer += os.read(self._fd, 4096)
        except OSError:  # EIO: no one has the other end open right now
            return
        while self._buffer:
            used, pdu = self._framer.handleFrame(self._buffer, 0, 0)
            if not used:
                return
            self._buffer = self._buffer[used:]
            if pdu is not None and pdu.dev_id in self._simulators:
                task = asyncio.create_task(self._answer(pdu), name=f"rtu-answer-{pdu.dev_id}")
                self._pending.add(task)
                task.add_done_callback(self._pending.discard)

    async def _answer(self, pdu: ModbusPDU) -> None:
        try:
            # SimCore is the datastore pymodbus's own servers hand to datastore_update.
            response = await pdu.datastore_update(self._core, pdu.dev_id)  # type: ignore[arg-type]
        except NoSuchIdException:
            return  # the device is offline: silence
        response.dev_id = pdu.dev_id
        frame = self._framer.buildFrame(response)
        if self._simulators[pdu.dev_id].crc_error:
            frame = frame[:-1] + bytes([frame[-1] ^ 0xFF])
        os.write(self._fd, frame)


@asynccontextmanager
async def serve_serial_pty(simulators: Iterable[ModbusDeviceSimulator]) -> AsyncIterator[str]:
    """Serve the simulators as Modbus RTU devices behind a pseudo-terminal; yields the port to open.

    ptys ignore the baud rate: answers arrive at memory speed, not at 9600 baud.
    """
    master, slave = pty.openpty()
    # Raw mode before any client opens it: no echo, no line editing of binary frames.
    tty.setraw(slave)
    os.set_blocking(master, False)
    responder = RtuResponder(simulators, master)
    responder.start()
    try:
        yield os.ttyname(slave)
    finally:
        await responder.stop()
        # Keeping our slave fd open until now means the master never sees EIO between clients.
        for fd in (master, slave):
            with contextlib.suppress(OSError):
                os.close(fd)
