"""A cellular Modbus modem (DTU) that dials in: connects out to the agent, registers, answers its devices.

Like a USR/Ebyte/Four-Faith DTU in transparent mode: it opens a TCP connection to the server,
sends its registration packet once, then passes the master's frames to the devices behind it
(``ModbusDeviceSimulator``s, answered through pymodbus's framer and datastore) and their answers
back, as Modbus RTU frames or Modbus TCP frames. While idle it sends its heartbeat every
``heartbeat_s``. Faults for tests: garbage bytes before an answer, a connection dropped when a
request arrives, a modem that goes silent, and redialling.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable
from typing import Literal

from pymodbus.exceptions import NoSuchIdException
from pymodbus.framer import FramerRTU, FramerSocket
from pymodbus.pdu import DecodePDU, ModbusPDU
from pymodbus.simulator.simcore import SimCore

from firmware_bridge.simulators.modbus_device import ModbusDeviceSimulator


class DialinModem:
    """One modem; ``await modem.start()`` dials in, ``stop()`` hangs up; ``run_forever`` redials."""

    def __init__(
        self,
        host: str,
        port: int,
        devices: Iterable[ModbusDeviceSimulator],
        *,
        framing: Literal["rtu", "tcp"] = "rtu",
        registration: bytes | None = None,
        heartbeat: bytes | None = None,
        heartbeat_s: float = 30.0,
    ) -> None:
        self.host, self.port = host, port
        self.devices = {d.unit: d for d in devices}
        self.framing = framing
        self.registration = registration
        self.heartbeat = heartbeat
        self.heartbeat_s = heartbeat_s
        self._core = SimCore([d.sim_device() for d in self.devices.values()])
        # Faults: bytes sent before the next answers, drop the connection on the next request, go silent.
        self.garbage_before_answer = b""
        self.heartbeat_before_answer = False
        self.drop_on_request = False
        self.silent = False
        self.requests = 0
        self.answered = 0
        self._writer: asyncio.StreamWriter | None = None
        self._task: asyncio.Task[None] | None = None

    def _framer(self) -> FramerRTU | FramerSocket:
        decoder = DecodePDU(True)  # requests: the modem's side is the servers'
        return FramerRTU(decoder) if self.framing == "rtu" else FramerSocket(decoder)

    async def start(self) -> None:
        """Dial in and register; the modem then answers until ``stop()`` or the agent hangs up."""
        reader, writer = await asyncio.open_connection(self.host, self.port)
        self._writer = writer
        if self.registration:
            writer.write(self.registration)
            await writer.drain()
        self._task = asyncio.create_task(self._serve(reader, writer), name="dialin-modem")

    @property
    def connected(self) -> bool:
        return self._task is not None and not self._task.done()

    async def wait_closed(self) -> None:
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def stop(self) -> None:
        """Hang up (a modem that loses its cellular link, or powers off)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._writer is not None:
            self._writer.close()
            with contextlib.suppress(Exception):
                await self._writer.wait_closed()
            self._writer = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        framer = self._framer()
        buffer = b""
        beat = asyncio.create_task(self._heartbeats(writer)) if self.heartbeat else None
        try:
            while True:
                data = await reader.read(4096)
                if not data:
                    return
                buffer += data
                while buffer:
                    used, pdu = framer.handleFrame(buffer, 0, 0)
                    if not used:
                        break
                    buffer = buffer[used:]
                    if pdu is not None:
                        self.requests += 1
                        if self.drop_on_request:
                            self.drop_on_request = False
                            writer.transport.abort()
                            return
                        await self._answer(framer, pdu, writer)
        finally:
            if beat is not None:
                beat.cancel()
            writer.close()

    async def _answer(
        self, framer: FramerRTU | FramerSocket, pdu: ModbusPDU, writer: asyncio.StreamWriter
    ) -> None:
        if self.silent or pdu.dev_id not in self.devices:
            return  # a unit not behind this modem stays silent, as on its RS-485 bus
        try:
            response = await pdu.datastore_update(self._core, pdu.dev_id)  # type: ignore[arg-type]
        except NoSuchIdException:
            return
        response.dev_id = pdu.dev_id
        response.transaction_id = pdu.transaction_id
        frame = framer.buildFrame(response)
        if self.heartbeat_before_answer and self.heartbeat:
            writer.write(self.heartbeat)
        if self.garbage_before_answer:
            writer.write(self.garbage_before_answer)
            self.garbage_before_answer = b""
        writer.write(frame)
        await writer.drain()
        self.answered += 1

    async def _heartbeats(self, writer: asyncio.StreamWriter) -> None:
        assert self.heartbeat is not None
        while True:
            await asyncio.sleep(self.heartbeat_s)
            writer.write(self.heartbeat)
            await writer.drain()
