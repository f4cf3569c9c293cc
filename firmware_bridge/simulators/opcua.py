"""A SCADA server simulator: an asyncua Server exposing stations (devices) of an OPC UA profile.

Each station is an object under Objects, NodeId ``nsu=<profile namespace>;s=<station>``, with the
profile's browse paths built below it as folders and variables holding the profile's typical values.
Values change on ``set`` (or every ``tick`` of ``animate``), stamped with a source timestamp; a
value can be given a Bad or Uncertain status; the server can be stopped and started again on the
same port, its values kept, as a SCADA server restart. Every value set is logged in ``history``.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

from asyncua import ua
from asyncua.common.node import Node
from asyncua.server.server import Server
from asyncua.server.user_managers import UserManager
from asyncua.ua.status_codes import StatusCodes
from asyncua.ua.uaerrors import UaStatusCodeError

from firmware_bridge.profile import OpcUaNode, OpcUaProfile, load_opcua_profile

GOOD = StatusCodes.Good


@dataclass(frozen=True)
class SetValue:
    """One value the simulator gave a node: station, field, value, status and source time (ms)."""

    station: str
    field: str
    value: Any
    status: int
    ts_ms: int


class _Users(UserManager):
    """One user name and password (an anonymous session is refused when a user is set)."""

    def __init__(self, username: str, password: str) -> None:
        self.username, self.password = username, password

    def get_user(
        self, iserver: Any, username: str | None = None, password: str | None = None, certificate: Any = None
    ) -> Any:
        from asyncua.crypto.permission_rules import User, UserRole

        if username == self.username and password == self.password:
            return User(role=UserRole.User)
        return None


class OpcUaStationSimulator:
    """Stations of one OPC UA profile on a simulated server at ``opc.tcp://127.0.0.1:<port>/citygw``."""

    def __init__(
        self,
        profile: OpcUaProfile | str,
        stations: list[str],
        *,
        port: int,
        host: str = "127.0.0.1",
        username: str | None = None,
        password: str | None = None,
        certificate: Path | None = None,
        private_key: Path | None = None,
        secure_only: bool = False,
    ) -> None:
        self.profile = profile if isinstance(profile, OpcUaProfile) else load_opcua_profile(profile)
        self.stations = stations
        self.host, self.port = host, port
        self.url = f"opc.tcp://{host}:{port}/citygw"
        self.namespace = next(iter(self.profile.namespaces.values()), "urn:citygw:simulator")
        self._users = _Users(username, password or "") if username is not None else None
        self._certificate, self._private_key = certificate, private_key
        self._secure_only = secure_only  # with a certificate: no endpoint of security policy None
        self.history: list[SetValue] = []
        # The current value and status of each (station, field), kept across restarts.
        self.values: dict[tuple[str, str], tuple[Any, int, int]] = {}
        for station in stations:
            for spec in self.profile.nodes:
                self.values[station, spec.field] = (_start_value(spec), GOOD, _now_ms())
        self._server: Server | None = None
        self._nodes: dict[tuple[str, str], Node] = {}

    def station_node(self, station: str) -> str:
        """The station object's NodeId, as an agent config names it."""
        return f"nsu={self.namespace};s={station}"

    @property
    def running(self) -> bool:
        return self._server is not None

    async def start(self) -> None:
        """Build the address space from the current values and serve it."""
        server = Server(user_manager=self._users) if self._users is not None else Server()
        await server.init()
        server.set_endpoint(self.url)
        server.set_server_name("CityGW SCADA simulator")
        if self._certificate is not None and self._private_key is not None:
            await server.set_application_uri("urn:citygw:simulator")
            await server.load_certificate(str(self._certificate))
            await server.load_private_key(str(self._private_key))
            policies = [
                ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt,
                ua.SecurityPolicyType.Basic256Sha256_Sign,
            ]
            if not self._secure_only:
                policies.append(ua.SecurityPolicyType.NoSecurity)
            server.set_security_policy(policies)
        index = await server.register_namespace(self.namespace)
        self._nodes = {}
        for station in self.stations:
            root = await server.nodes.objects.add_object(
                ua.NodeId.from_string(f"ns={index};s={station}"), ua.QualifiedName(station, index)
            )
            for spec in self.profile.nodes:
                self._nodes[station, spec.field] = await self._add(server, root, index, station, spec)
        await server.start()
        self._server = server
        for (station, name), (value, status, ts) in self.values.items():
            await self._write(station, name, value, status, ts)

    async def _add(self, server: Server, root: Node, index: int, station: str, spec: OpcUaNode) -> Node:
        value = self.values[station, spec.field][0]
        if spec.path is None:
            assert spec.node is not None
            text = spec.node.replace(f"nsu={self.namespace};", f"ns={index};")
            return await server.nodes.objects.add_variable(
                ua.NodeId.from_string(text), ua.QualifiedName(spec.field, index), value
            )
        parent = root
        steps = self.profile.browse_steps(spec)
        for uri, name in steps[:-1]:
            ns = await server.get_namespace_index(uri)
            try:
                parent = await parent.get_child(f"{ns}:{name}")
            except UaStatusCodeError:
                parent = await parent.add_folder(
                    ua.NodeId.from_string(f"ns={ns};s={station}.{name}"), ua.QualifiedName(name, ns)
                )
        uri, name = steps[-1]
        ns = await server.get_namespace_index(uri)
        variable = await parent.add_variable(
            ua.NodeId.from_string(f"ns={ns};s={station}.{spec.path}"), ua.QualifiedName(name, ns), value
        )
        return variable

    async def stop(self) -> None:
        """Stop serving (a SCADA server shut down): clients lose their sessions."""
        server, self._server = self._server, None
        if server is not None:
            await server.stop()

    async def restart(self, down_s: float = 0.0) -> None:
        await self.stop()
        await asyncio.sleep(down_s)
        await self.start()

    async def set(self, station: str, field: str, value: Any, *, status: int = GOOD) -> SetValue:
        """Give a node a new value (and status) stamped now; kept for a restart, logged in ``history``."""
        ts = _now_ms()
        while self.history and ts <= self.history[-1].ts_ms:
            ts += 1  # one source time per value: each is a reading of its own
        self.values[station, field] = (value, status, ts)
        done = SetValue(station, field, value, status, ts)
        self.history.append(done)
        await self._write(station, field, value, status, ts)
        return done

    async def set_status(self, station: str, field: str, status: int) -> SetValue:
        """Keep the value, change its status (Bad: a sensor failure, Uncertain: a substituted value)."""
        return await self.set(station, field, self.values[station, field][0], status=status)

    async def _write(self, station: str, field: str, value: Any, status: int, ts: int) -> None:
        if self._server is None:
            return
        node = self._nodes[station, field]
        variant_type = await node.read_data_type_as_variant_type()
        moment = cast(ua.DateTime, datetime.fromtimestamp(ts / 1000, UTC))
        data = ua.DataValue(
            ua.Variant(value, variant_type),
            StatusCode=ua.StatusCode(ua.UInt32(status)),
            SourceTimestamp=moment,
            ServerTimestamp=moment,
        )
        await self._server.write_attribute_value(node.nodeid, data)

    async def animate(self, tick_s: float, *, fields: list[str] | None = None) -> None:
        """Move every numeric value a little each tick (until cancelled), as a live station does."""
        names = fields or [s.field for s in self.profile.nodes]
        while True:
            await asyncio.sleep(tick_s)
            for station in self.stations:
                for name in names:
                    value = self.values[station, name][0]
                    if isinstance(value, float):
                        await self.set(station, name, round(value + random.uniform(-1, 1), 3))

    def set_values(self, station: str, field: str, *, status: int = GOOD) -> list[SetValue]:
        """The values logged for one node, of one status."""
        return [s for s in self.history if (s.station, s.field) == (station, field) and s.status == status]


def _start_value(spec: OpcUaNode) -> Any:
    if spec.typical is not None:
        return (
            float(spec.typical) if spec.is_quantity and not isinstance(spec.typical, bool) else spec.typical
        )
    return 0.0 if spec.is_quantity else 0


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


@contextlib.asynccontextmanager
async def serving(simulator: OpcUaStationSimulator) -> Any:
    """Run the simulator's server for the ``async with`` block."""
    await simulator.start()
    try:
        yield simulator
    finally:
        await simulator.stop()
