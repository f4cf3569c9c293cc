"""One OPC UA server's devices: subscribe to (or read) their nodes and journal what they report.

One task owns the session with the server. It resolves each device's nodes, then follows their
data changes (or reads them every ``poll_s``) and journals the Good and Uncertain values as readings;
Bad values go on the device's health, naming the node and the status code. When the session is
lost (server restart, network), every device is marked down with one log line saying which server,
what was tried and why it failed, and the session is made again with exponential backoff (with
jitter), the nodes resolved and subscribed anew. A device whose node does not exist is reported on
its health and in the log, by node and profile; the other devices go on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Sequence

from citygw.contract import wire
from citygw.contract.agent_config import Device, OpcUaLine
from edge.journal import Journal
from edge.poller import FAILURE_LOG_EVERY_S, HealthBoard, device_reading, now_ms
from edge.vehicles import Vehicles
from firmware_bridge.errors import DeviceError
from firmware_bridge.opcua import (
    DeviceNodes,
    Endpoint,
    NodeNotFound,
    OpcUaConnection,
    OpcUaUnavailable,
    Sample,
    changes,
    decode,
)
from firmware_bridge.profile import OpcUaNode, OpcUaProfile

log = logging.getLogger(__name__)


def endpoint(line: OpcUaLine) -> Endpoint:
    """The driver's view of an OPC UA line."""
    return Endpoint(
        url=line.url,
        timeout=line.timeout,
        security=line.security,
        certificate=line.certificate,
        private_key=line.private_key,
        server_certificate=line.server_certificate,
        username=line.username,
        password=line.password,
    )


class OpcUaPoller:
    """Owns the session with one OPC UA server, journals its devices' readings; ``run()`` until cancelled."""

    def __init__(
        self,
        line: OpcUaLine,
        devices: Sequence[tuple[Device, OpcUaProfile]],
        *,
        journal: Journal,
        board: HealthBoard,
        site: str,
        vehicles: Vehicles | None = None,
    ) -> None:
        self.line = line
        self.devices = list(devices)
        self.journal = journal
        self.board = board
        self.site = site
        self.vehicles = vehicles or Vehicles()
        self.sessions = 0  # sessions made with the server (1 + reconnects)
        self._bad: dict[str, dict[str, str]] = {device.id: {} for device, _ in self.devices}
        self._logged: tuple[str, float] | None = None  # the line failure last logged, and when
        for device, _ in self.devices:
            board.record(device.id)

    async def run(self) -> None:
        delay = self.line.reconnect_min
        while True:
            try:
                async with OpcUaConnection(endpoint(self.line)) as connection:
                    self.sessions += 1
                    if self._logged is not None:
                        log.info("line %s: %s answers again", self.line.id, connection.endpoint.name)
                        self._logged = None
                    delay = self.line.reconnect_min
                    await self._serve(connection)
            except OpcUaUnavailable as exc:
                self._down(exc)
            # Jitter: a city's agents that lost one SCADA server do not all come back in step.
            await asyncio.sleep(delay * random.uniform(0.8, 1.2))
            delay = min(delay * 2, self.line.reconnect_max)

    def _down(self, exc: DeviceError) -> None:
        """Every device of the line is down; one warning per kind of failure (again every 5 minutes)."""
        names = ", ".join(device.id for device, _ in self.devices)
        for device, _ in self.devices:
            self.board.failed(device.id, exc.state, str(exc))
        now = time.monotonic()
        why = str(exc)
        if (
            self._logged is not None
            and self._logged[0] == why
            and now - self._logged[1] < FAILURE_LOG_EVERY_S
        ):
            log.debug("line %s: %s", self.line.id, why)
            return
        log.warning("line %s (devices %s): %s; reconnecting with backoff", self.line.id, names, why)
        self._logged = (why, now)

    async def _serve(self, connection: OpcUaConnection) -> None:
        """Resolve every device's nodes, then follow them until the session is lost (OpcUaUnavailable)."""
        tasks: list[asyncio.Task[None]] = []
        for device, profile in self.devices:
            try:
                nodes = await connection.resolve(device.id, profile, device.node)
            except NodeNotFound as exc:
                self.board.failed(device.id, exc.state, str(exc))
                log.warning("device %s: %s", device.id, exc)
                continue
            follow = self._subscribed if self.line.subscribe else self._polled
            tasks.append(asyncio.create_task(follow(connection, device, nodes), name=f"opcua:{device.id}"))
        lost = asyncio.create_task(connection.lost.wait(), name=f"opcua-lost:{self.line.id}")
        try:
            done, _ = await asyncio.wait([*tasks, lost], return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (*tasks, lost):
                task.cancel()
            for task in (*tasks, lost):
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        for task in done:
            if task is not lost and not task.cancelled() and task.exception() is not None:
                raise task.exception()  # type: ignore[misc]
        raise OpcUaUnavailable(connection.why_lost or f"session with {connection.endpoint.name} ended")

    async def _subscribed(self, connection: OpcUaConnection, device: Device, nodes: DeviceNodes) -> None:
        """Journal the data changes of the device's nodes, published every ``poll_s``."""
        try:
            async with connection.subscription(nodes, device.poll_s * 1000) as subscription:
                async for batch in changes(subscription, nodes):
                    self.take(device, nodes, batch)
        except NodeNotFound as exc:  # a node the server will not monitor: this device only
            self.board.failed(device.id, exc.state, str(exc))
            log.warning("device %s: %s", device.id, exc)
            await asyncio.Future()  # until the session ends
        if connection.lost.is_set():  # the session went: say why, not that the subscription went with it
            raise OpcUaUnavailable(connection.why_lost)
        raise OpcUaUnavailable(f"{connection.endpoint.name} ended the subscription of device {device.id}")

    async def _polled(self, connection: OpcUaConnection, device: Device, nodes: DeviceNodes) -> None:
        """Read the device's nodes every ``poll_s`` and journal them."""
        loop = asyncio.get_running_loop()
        due = loop.time()
        while True:
            started = loop.time()
            samples = await connection.read(nodes)
            self.take(device, nodes, samples, response_s=loop.time() - started)
            due = max(due + device.poll_s, loop.time())
            await asyncio.sleep(due - loop.time())

    def take(
        self,
        device: Device,
        nodes: DeviceNodes,
        samples: Sequence[tuple[OpcUaNode, Sample]],
        *,
        response_s: float | None = None,
    ) -> None:
        """Journal what the server reported of a device's nodes; keep its health by their status codes."""
        received = now_ms()
        decoded = decode(nodes, samples, received)
        bad = self._bad[device.id]
        for spec, _ in samples:
            if spec.field in decoded.bad:
                if spec.field not in bad:
                    log.warning("device %s: %s", device.id, decoded.bad[spec.field])
                bad[spec.field] = decoded.bad[spec.field]
            elif bad.pop(spec.field, None) is not None:
                log.info("device %s: %s is good again", device.id, spec.field)
        for ts, fields in sorted(decoded.readings.items()):
            reading = device_reading(
                device, self.site, self.vehicles, measurement=nodes.profile.measurement, ts=ts, fields=fields
            )
            if self.journal.append([reading]):
                self.board.published(device.id, ts)
        self.board.left_out(device.id, {name: ValueError(why) for name, why in bad.items()})
        if len(bad) == len(nodes.nodes):
            why = "; ".join(bad.values())
            self.board.failed(device.id, wire.DeviceState.EXCEPTION, f"every node is Bad: {why}")
        else:
            self.board.ok(device.id, received, response_s=response_s)
