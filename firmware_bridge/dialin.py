"""Dial-in modems: the agent listens, cellular Modbus modems (DTUs) connect in, the agent polls through them.

A cellular modem sits behind the carrier's NAT, so it cannot be called: it dials out to a
host:port, names itself in its first bytes (a *registration packet*: IMEI, MAC or user text,
sent once when the connection opens) and may send *heartbeat* bytes while idle. Past that the
connection carries Modbus RTU frames (transparent mode) or Modbus TCP frames, and the agent is
the master. ``DialinListener`` accepts the connections, reads each registration within its
deadline (an unknown one is refused and logged with the peer and what it sent), and gives the
connection to that modem's ``Modem``; a modem that dials again replaces its old connection.
Without a registration, a new connection is identified by the configured unit id that answers.

Each modem is polled through an ordinary ``ModbusLine`` whose pymodbus client is attached to the
modem's current connection instead of connecting out (pymodbus's transport takes an already open
transport via ``connection_made``): the framing, PDUs and CRCs are pymodbus's own.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from pymodbus.client import AsyncModbusTcpClient
from pymodbus.framer import FramerType
from pymodbus.pdu import ModbusPDU
from pymodbus.transport import ModbusProtocol

from firmware_bridge.modbus import ModbusLine, read_table
from firmware_bridge.planner import ReadRequest

log = logging.getLogger(__name__)

Framing = Literal["rtu", "tcp"]
FRAMERS: dict[Framing, FramerType] = {"rtu": FramerType.RTU, "tcp": FramerType.SOCKET}
_SHOWN = 40  # bytes of an unknown registration shown in the log (USR modems allow up to 40)


def shown(data: bytes) -> str:
    """Bytes as an engineer recognises them: quoted text when printable, else hex."""
    cut = data[:_SHOWN]
    text = repr(cut.decode("ascii")) if cut and all(32 <= b < 127 for b in cut) else cut.hex(" ") or "nothing"
    return text + (f" ({len(data)} bytes)" if len(data) > _SHOWN else "")


class Registrations:
    """Tells which modem a new connection's first bytes name (heartbeats before them are dropped)."""

    def __init__(self, packets: Mapping[bytes, str], heartbeat: bytes | None = None) -> None:
        self.packets = dict(packets)
        self.heartbeat = heartbeat

    def match(self, data: bytes, *, final: bool = False) -> tuple[str | None, int]:
        """(modem, bytes used) once ``data`` names a modem; (None, 0) while it may still; ValueError when
        it names none (or, with ``final``, when the bytes so far name none)."""
        start, beat = 0, self.heartbeat
        while True:  # a registration wins over a heartbeat that is its prefix ("LOG" before "LOGIN:1001")
            rest = data[start:]
            named = [p for p in self.packets if rest.startswith(p)]
            longer = [p for p in self.packets if p.startswith(rest) and len(p) > len(rest)]
            if named or longer or not beat or not rest.startswith(beat):
                break
            start += len(beat)
        if beat and rest and not named and not longer and beat.startswith(rest) and not final:
            return None, 0
        if named and (not longer or final):
            packet = max(named, key=len)
            used = start + len(packet)
            for end in (b"\r\n", b"\n"):  # a text packet typed with its line end
                if data.startswith(end, used):
                    used += len(end)
                    break
            return self.packets[packet], used
        if longer and not final:
            return None, 0
        if not rest and not final:
            return None, 0
        raise ValueError(f"unknown registration {shown(data)}")


class _Connection(asyncio.Protocol):
    """One accepted TCP connection: identified first, then it feeds the pymodbus client attached to it."""

    def __init__(self, listener: DialinListener) -> None:
        self.listener = listener
        self.transport: asyncio.Transport | None = None
        self.peer = "?"
        self.buffer = b""
        self.partial = b""
        self.client: ModbusProtocol | None = None  # the pymodbus transport layer fed from here
        self.arrived = asyncio.Event()  # bytes came (or the connection closed) while identifying
        self.closed = False
        self.modem: Modem | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        host, port, *_ = transport.get_extra_info("peername") or ("?", 0)
        self.peer = f"{host}:{port}"
        self.listener.accepted(self)

    def data_received(self, data: bytes) -> None:
        client = self.client
        if client is None:
            self.buffer += data
            self.arrived.set()
            return
        heartbeat = self.listener.heartbeat
        if heartbeat and not client.recv_buffer:  # between frames: a heartbeat is no answer
            data, self.partial = self.partial + data, b""
            while data.startswith(heartbeat):
                data = data[len(heartbeat) :]
                self.listener.heartbeats += 1
            if data and heartbeat.startswith(data):  # maybe a heartbeat split across segments
                self.partial = data
                return
        if data:
            client.data_received(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.arrived.set()
        self.detach(exc or ConnectionResetError("the modem closed the connection"))
        if self.modem is not None:
            self.modem.lost(self)

    def attach(self, client: ModbusProtocol) -> asyncio.Transport:
        """Feed ``client`` from now on (after the registration: what came with it goes along)."""
        assert self.transport is not None
        self.client, self.partial = client, b""
        client.connection_made(self.transport)
        pending, self.buffer = self.buffer, b""
        if pending:
            self.data_received(pending)
        return self.transport

    def detach(self, why: Exception | None = None) -> None:
        """Stop feeding the attached client; it learns its connection is gone."""
        client, self.client = self.client, None
        if client is not None and client.transport is self.transport:
            client.connection_lost(why)

    def close(self, why: str) -> None:
        """Hang up at once: a replaced connection is likely dead, and its unsent bytes are only a request."""
        self.detach(ConnectionResetError(why))
        if self.transport is not None and not self.closed:
            self.transport.abort()
        self.closed = True


class Modem:
    """One modem's place on the listener: its current connection, if any, and what it last did."""

    def __init__(self, name: str, listener: DialinListener) -> None:
        self.name = name
        self.listener = listener
        self.connection: _Connection | None = None
        self.connections = 0  # connections it made since the agent started
        self.last_peer: str | None = None
        self.lost_at: float | None = None

    def take(self, connection: _Connection) -> None:
        """``connection`` is this modem's from now on; an older one is closed."""
        old, self.connection = self.connection, connection
        connection.modem = self
        self.connections += 1
        self.last_peer = connection.peer
        if old is not None and not old.closed:
            log.info(
                "modem %s dialled in again from %s: closing its connection from %s",
                self.name,
                connection.peer,
                old.peer,
            )
            old.modem = None
            old.close(f"modem {self.name} dialled in again from {connection.peer}")
        else:
            log.info("modem %s connected from %s", self.name, connection.peer)

    def lost(self, connection: _Connection) -> None:
        if connection is self.connection:
            self.connection = None
            self.lost_at = time.monotonic()
            log.warning("modem %s: connection from %s closed", self.name, connection.peer)

    def why_not_connected(self) -> str:
        where = f"{self.listener.host}:{self.listener.port}"
        if self.last_peer is None:
            return f"modem {self.name} has not dialled in to {where} since the agent started"
        ago = time.monotonic() - (self.lost_at or time.monotonic())
        return (
            f"modem {self.name} is not connected: its connection from {self.last_peer} closed {ago:.0f} s ago"
        )

    def modbus_line(self, *, timeout: float) -> ModbusLine:
        """A ModbusLine whose requests go over this modem's current connection."""
        framer = FRAMERS[self.listener.framing]

        def make() -> AsyncModbusTcpClient:
            client = AsyncModbusTcpClient(
                self.name,
                framer=framer,
                timeout=timeout,
                retries=0,
                reconnect_delay=0,
                trace_packet=line._trace_packet,
                trace_connect=line._trace_connect,
            )
            protocol = client.ctx

            async def attach() -> tuple[asyncio.Transport, ModbusProtocol]:
                connection = self.connection
                if connection is None or connection.closed:
                    raise OSError(self.why_not_connected())
                return connection.attach(protocol), protocol

            # Instead of opening a connection, pymodbus "connects" to the modem's current one.
            protocol.call_create = attach
            return client

        async def diagnose() -> str:
            return self.why_not_connected()

        line = ModbusLine(make, name=f"dialin {self.name}", timeout=timeout, diagnose=diagnose)
        line.over_tcp = True
        line.rtu_frames = framer is FramerType.RTU
        return line


@dataclass(frozen=True)
class UnitProbe:
    """How to ask whether a unit is behind a new connection: a read its profile plans."""

    unit: int
    request: ReadRequest


class DialinListener:
    """Listens for modems; hands each identified connection to its ``Modem``.

    ``packets`` maps each registration packet (bytes as the modem sends them) to its modem's name;
    with none, ``probes`` (modem name → unit read) identify a connection by the unit that answers.
    """

    def __init__(
        self,
        host: str,
        port: int,
        *,
        framing: Framing,
        packets: Mapping[bytes, str] | None = None,
        probes: Mapping[str, UnitProbe] | None = None,
        heartbeat: bytes | None = None,
        identify_timeout: float = 10.0,
        probe_timeout: float = 3.0,
    ) -> None:
        self.host, self.port = host, port
        self.framing = framing
        self.heartbeat = heartbeat
        self.registrations = Registrations(packets, heartbeat) if packets else None
        self.probes = dict(probes or {})
        names: Iterable[str] = packets.values() if packets else self.probes
        self.modems = {name: Modem(name, self) for name in names}
        self.identify_timeout = identify_timeout
        self.probe_timeout = probe_timeout
        self.refused = 0  # connections closed: unknown registration, none in time, no unit answered
        self.heartbeats = 0  # heartbeats dropped between frames
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> DialinListener:
        loop = asyncio.get_running_loop()
        try:
            self._server = await loop.create_server(lambda: _Connection(self), self.host, self.port)
        except OSError as exc:
            raise OSError(exc.errno, f"cannot listen on {self.host}:{self.port}: {exc.strerror}") from exc
        self.port = self._server.sockets[0].getsockname()[1]
        log.info("listening for dial-in modems on %s:%d", self.host, self.port)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._server is not None:
            self._server.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for modem in self.modems.values():
            if modem.connection is not None:
                modem.connection.close("the agent stops listening")
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 1.0)

    def accepted(self, connection: _Connection) -> None:
        task = asyncio.get_running_loop().create_task(
            self._identify(connection), name=f"dialin:{connection.peer}"
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _identify(self, connection: _Connection) -> None:
        try:
            if self.registrations is not None:
                name = await self._registration(connection)
            else:
                name = await self._probe(connection)
        except ValueError as exc:
            self.refused += 1
            log.warning(
                "dial-in connection from %s refused: %s; closed, nothing polled", connection.peer, exc
            )
            connection.close(str(exc))
            return
        if name is not None and not connection.closed:
            self.modems[name].take(connection)

    async def _registration(self, connection: _Connection) -> str | None:
        assert self.registrations is not None
        deadline = time.monotonic() + self.identify_timeout
        while True:
            final = connection.closed or time.monotonic() >= deadline
            try:
                name, used = self.registrations.match(connection.buffer, final=final)
            except ValueError as exc:
                if not (
                    connection.buffer.replace(self.heartbeat, b"") if self.heartbeat else connection.buffer
                ):
                    how = (
                        "closed" if connection.closed else f"sent nothing within {self.identify_timeout:g} s"
                    )
                    raise ValueError(f"no registration packet: it {how}") from exc
                raise
            if name is not None:
                connection.buffer = connection.buffer[used:]
                return name
            connection.arrived.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.0, deadline - time.monotonic())):
                    await connection.arrived.wait()

    async def _probe(self, connection: _Connection) -> str | None:
        """The modem whose unit answers on this connection (free modems first)."""
        order = sorted(self.probes, key=lambda name: self.modems[name].connection is not None)
        for name in order:
            if connection.closed:
                return None
            if await self._answers(connection, self.probes[name]):
                return name
        raise ValueError(
            f"no configured unit answered (tried units {', '.join(str(self.probes[n].unit) for n in order)})"
        )

    async def _answers(self, connection: _Connection, probe: UnitProbe) -> bool:
        client = AsyncModbusTcpClient(
            "probe", framer=FRAMERS[self.framing], timeout=self.probe_timeout, retries=0, reconnect_delay=0
        )
        connection.attach(client.ctx)
        request = probe.request
        try:
            response: ModbusPDU = await read_table(
                client, probe.unit, request.table, request.address, min(request.count, 1)
            )
        except Exception:  # silence or garbage: not this unit
            return False
        finally:
            connection.client = None  # detached without closing: the connection stays open
        return response is not None  # an exception response is an answer too: the unit is there


def unit_probes(devices: Sequence[tuple[str, int, ReadRequest]]) -> dict[str, UnitProbe]:
    """Probes by modem name (``unit N``) of (device, unit, first planned read) triples."""
    return {modem_name(unit): UnitProbe(unit, request) for _, unit, request in devices}


def modem_name(unit: int) -> str:
    """The name of the modem known by the unit behind it (a line without registration)."""
    return f"unit {unit}"
