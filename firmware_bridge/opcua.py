"""OPC UA client for SCADA servers (water utilities' pump stations, reservoirs, treatment), on asyncua.

``OpcUaConnection`` is one session with one server: it resolves a profile's nodes under a device's
object (NodeIds or browse paths, namespaces by URI), reads them, or subscribes to their data changes.
``decode`` turns what the server said of a node into a CityGW field by the profile: Good values are
fields, Uncertain values are fields flagged ``<field>_uncertain``, Bad values are no field but a fault
naming the status code. Failures are raised as ``DeviceError``s whose message says what was sent to
which server and why it failed; asyncua's own log lines are kept out of the log.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import re
import socket
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from asyncua import ua
from asyncua.client.client import Client
from asyncua.common.node import Node
from asyncua.common.subscription import DataChangeEvent, StatusChangeEvent, Subscription
from asyncua.crypto.security_policies import SecurityPolicyBasic256Sha256
from asyncua.ua.attribute_ids import AttributeIds
from asyncua.ua.uaerrors import UaError, UaStatusCodeError

from citygw.contract.wire import MAX_TS_MS, DeviceState, FieldValue
from firmware_bridge.errors import DeviceError, LineUnavailable
from firmware_bridge.profile import OPCUA_STANDARD_URI, OpcUaNode, OpcUaProfile

log = logging.getLogger(__name__)

Security = Literal["none", "sign", "sign_and_encrypt"]
UNCERTAIN_SUFFIX = "_uncertain"
# Notifications a subscription may hold before the agent takes them: far more than one publish brings.
QUEUE_SIZE = 100_000
# Data changes a server keeps per node between two publishes (a fast-changing value is not collapsed).
ITEM_QUEUE_SIZE = 100
_NSU = re.compile(r"^nsu=([^;]+);(.+)$")


class OpcUaUnavailable(LineUnavailable):
    """The server cannot be reached, refused the session, or the session was lost."""


class NodeNotFound(DeviceError):
    """A node the profile names is not on the server (under the device's object): profile or config wrong."""

    state = DeviceState.DECODE_ERROR


class BadQuality(DeviceError):
    """The server answered with a Bad status code for every node of the device."""

    state = DeviceState.EXCEPTION


@dataclass(frozen=True)
class Endpoint:
    """How to reach one OPC UA server and who the agent is to it."""

    url: str
    timeout: float = 5.0
    security: Security = "none"
    certificate: Path | None = None
    private_key: Path | None = None
    server_certificate: Path | None = None
    username: str | None = None
    password: str | None = None

    @property
    def name(self) -> str:
        """The URL without credentials, for messages."""
        parts = urlsplit(self.url)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
        return f"{parts.scheme}://{host}{port}{parts.path}"


@dataclass(frozen=True)
class Sample:
    """What the server said of one node: its value, its status code and its timestamps."""

    value: Any
    status: int
    source_ts: datetime | None
    server_ts: datetime | None

    @classmethod
    def of(cls, data: ua.DataValue) -> Sample:
        status = data.StatusCode.value if data.StatusCode is not None else 0
        value = data.Value.Value if data.Value is not None else None
        return cls(value, status, data.SourceTimestamp, data.ServerTimestamp)


@dataclass(frozen=True)
class DeviceNodes:
    """A device's nodes as resolved on the server: (field spec, NodeId), in profile order."""

    device: str
    profile: OpcUaProfile
    nodes: tuple[tuple[OpcUaNode, ua.NodeId], ...]

    def spec(self, node_id: ua.NodeId) -> OpcUaNode | None:
        return next((spec for spec, nid in self.nodes if nid == node_id), None)


@dataclass
class Decoded:
    """A device's samples as CityGW fields: one group of fields per timestamp, and the Bad ones with why."""

    readings: dict[int, dict[str, FieldValue]] = field(default_factory=dict)
    bad: dict[str, str] = field(default_factory=dict)


def status_name(status: int) -> str:
    """``BadSensorFailure (0x808B0000)``: the status code as the OPC UA specification names it."""
    name, _ = ua.status_codes.get_name_and_doc(status)
    return f"{name} (0x{status:08X})"


def _severity(status: int) -> Literal["good", "uncertain", "bad"]:
    top = status >> 30  # the two severity bits (OPC 10000-4, 7.39)
    return "good" if top == 0 else "uncertain" if top == 1 else "bad"


def _ms(moment: datetime | None) -> int | None:
    """Milliseconds since the epoch; None for no time, or one no reading can carry (OPC UA's null time,
    1601-01-01, from a device whose clock was never set)."""
    if moment is None:
        return None
    ms = int(moment.timestamp() * 1000)
    return ms if 0 < ms <= MAX_TS_MS else None


def reading_time(profile: OpcUaProfile, sample: Sample, received_ms: int) -> int:
    """The reading's timestamp by the profile's ``timestamp``: source falls back to server, then agent."""
    if profile.timestamp == "agent":
        return received_ms
    if profile.timestamp == "source":
        moment = _ms(sample.source_ts)
        if moment is not None:
            return moment
    server = _ms(sample.server_ts)
    return server if server is not None else received_ms


def field_value(spec: OpcUaNode, value: Any) -> FieldValue:
    """A node's value as the field: scaled quantities are floats; ValueError for a value that is none."""
    if isinstance(value, bool):
        if spec.is_quantity:
            raise ValueError(f"is a boolean ({value}), but the profile gives it a unit or scale")
        return value
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"is {value}: no measurement")
    if isinstance(value, int | float):
        if spec.is_quantity:
            return float(value) * spec.scale + spec.offset
        return value
    if isinstance(value, str) and not spec.is_quantity:
        return value[:256]
    raise ValueError(f"holds {type(value).__name__} {value!r}, not a number, boolean or text")


def decode(nodes: DeviceNodes, samples: Sequence[tuple[OpcUaNode, Sample]], received_ms: int) -> Decoded:
    """Fields grouped by reading time; Bad values (and values that are no measurement) left out, with why."""
    decoded = Decoded()
    for spec, sample in samples:
        where = f"node {spec.where} of profile {nodes.profile.model}"
        severity = _severity(sample.status)
        if severity == "bad":
            decoded.bad[spec.field] = f"{where}: {status_name(sample.status)}"
            continue
        try:
            value = field_value(spec, sample.value)
        except ValueError as exc:
            decoded.bad[spec.field] = f"{where}: {exc}"
            continue
        fields = decoded.readings.setdefault(reading_time(nodes.profile, sample, received_ms), {})
        fields[spec.field] = value
        if severity == "uncertain":
            fields[spec.field[: 64 - len(UNCERTAIN_SUFFIX)] + UNCERTAIN_SUFFIX] = True
    return decoded


def quiet_asyncua() -> None:
    """asyncua logs every lost connection with a traceback; CityGW says it once, with the device."""
    if not log.isEnabledFor(logging.DEBUG):
        logging.getLogger("asyncua").setLevel(logging.CRITICAL)


class OpcUaConnection:
    """One session with one OPC UA server: ``async with`` it, then resolve, read or subscribe.

    ``lost`` is set when the server goes away (closed connection, failed keep-alive); the owner
    then leaves the ``async with`` and reconnects.
    """

    def __init__(self, endpoint: Endpoint, *, watchdog_s: float = 1.0) -> None:
        self.endpoint = endpoint
        self.lost = asyncio.Event()
        self.why_lost = ""
        self._watchdog_s = watchdog_s
        self._client: Client | None = None
        self._namespaces: list[str] = []

    @property
    def client(self) -> Client:
        if self._client is None:
            raise RuntimeError(f"{self.endpoint.name}: use the connection inside 'async with'")
        return self._client

    async def __aenter__(self) -> OpcUaConnection:
        quiet_asyncua()
        endpoint = self.endpoint
        client = Client(endpoint.url, timeout=endpoint.timeout, watchdog_intervall=self._watchdog_s)
        client.name = client.description = "CityGW edge agent"
        client.application_uri = "urn:citygw:edge-agent"
        if endpoint.username is not None:
            client.set_user(endpoint.username)
        if endpoint.password is not None:
            client.set_password(endpoint.password)
        what = f"connect to {endpoint.name}"
        if endpoint.security != "none":
            assert endpoint.certificate is not None
            assert endpoint.private_key is not None
            mode = (
                ua.MessageSecurityMode.Sign
                if endpoint.security == "sign"
                else ua.MessageSecurityMode.SignAndEncrypt
            )
            try:
                await client.set_security(
                    SecurityPolicyBasic256Sha256,
                    str(endpoint.certificate),
                    str(endpoint.private_key),
                    server_certificate=str(endpoint.server_certificate)
                    if endpoint.server_certificate
                    else None,
                    mode=mode,
                )
            except (OSError, ValueError, UaError) as exc:
                raise OpcUaUnavailable(f"{what} (Basic256Sha256 {endpoint.security}): {_why(exc)}") from exc

        async def lost(exc: Exception) -> None:
            self.why_lost = f"session with {endpoint.name} lost: {_why(exc)}"
            self.lost.set()

        client.connection_lost_callback = lost
        try:
            await asyncio.wait_for(client.connect(), endpoint.timeout * 2)
            self._namespaces = await client.get_namespace_array()
        except (OSError, TimeoutError, UaError, ConnectionError) as exc:
            await _quietly_disconnect(client)
            raise OpcUaUnavailable(f"{what}: not connected, {await self._why_no_session(exc)}") from exc
        self._client = client
        return self

    async def __aexit__(self, *exc: object) -> None:
        client, self._client = self._client, None
        if client is not None:
            await _quietly_disconnect(client)

    async def _why_no_session(self, exc: BaseException) -> str:
        """Why a session could not be made, as an engineer would check it: the port first."""
        parts = urlsplit(self.endpoint.url)
        host, port = parts.hostname or "", parts.port or 4840
        if isinstance(exc, UaStatusCodeError):
            return f"the server refused: {status_name(exc.code)} (check user, password and security settings)"
        if "No matching endpoints" in str(exc):
            return (
                f"the server offers no endpoint of security {self.endpoint.security}: set the line's "
                "security (none, sign, sign_and_encrypt with Basic256Sha256) to one it offers"
            )
        try:
            _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), self.endpoint.timeout)
        except ConnectionRefusedError:
            return f"connection refused: nothing listens on {host}:{port} (wrong port, or the server is off)"
        except TimeoutError:
            wait = self.endpoint.timeout
            return f"no answer from {host}:{port} within {wait:g} s (host down, wrong address?)"
        except socket.gaierror as exc2:
            return f"{host} is no known host name ({exc2.strerror})"
        except OSError as exc2:
            return f"cannot connect to {host}:{port}: {exc2.strerror or exc2}"
        writer.close()
        return f"{host}:{port} accepts TCP but no OPC UA session was made: {_why(exc)}"

    def _namespace_index(self, uri: str, where: str) -> int:
        """The server's index of namespace ``uri``; NodeNotFound saying ``where`` it was named otherwise."""
        if uri == OPCUA_STANDARD_URI:
            return 0
        try:
            return self._namespaces.index(uri)
        except ValueError:
            known = ", ".join(self._namespaces)
            raise NodeNotFound(
                f"{where} on {self.endpoint.name}: the server has no namespace {uri} (it has {known})"
            ) from None

    def node_id(self, text: str, where: str) -> ua.NodeId:
        """A NodeId string (``ns=``, ``nsu=`` or namespace 0) as this server numbers its namespaces."""
        match = _NSU.match(text)
        if match is not None:
            uri, rest = match.groups()
            text = f"ns={self._namespace_index(uri, where)};{rest}"
        try:
            return ua.NodeId.from_string(text)
        except (ValueError, UaError) as exc:
            raise NodeNotFound(
                f"{where}: {text} is no NodeId ({exc}): write ns=2;s=Name or nsu=<URI>;i=1"
            ) from exc

    async def resolve(self, device: str, profile: OpcUaProfile, root: str | None) -> DeviceNodes:
        """Every node of ``profile`` under the device's object ``root`` (a NodeId; default Objects).

        NodeNotFound names the node, the profile, the device and the server when one does not exist.
        """
        client = self.client
        base: Node = client.nodes.objects
        if root is not None:
            base = client.get_node(self.node_id(root, f"device {device}: its node {root}"))
            if not await _exists(base):
                raise NodeNotFound(
                    f"device {device}: its node {root} does not exist on {self.endpoint.name}: fix node in "
                    "the agent config (the station's object)"
                )
        resolved: list[tuple[OpcUaNode, ua.NodeId]] = []
        for spec in profile.nodes:
            where = f"node {spec.where} of profile {profile.model} ({spec.field}) under {root or 'Objects'}"
            if spec.node is not None:
                node = client.get_node(self.node_id(spec.node, where))
                if not await _exists(node):
                    raise NodeNotFound(f"{where} on {self.endpoint.name}: no such node: fix the profile")
            else:
                names = [
                    f"{self._namespace_index(uri, where)}:{name}" for uri, name in profile.browse_steps(spec)
                ]
                try:
                    node = await base.get_child(names)
                except UaStatusCodeError as exc:
                    raise NodeNotFound(
                        f"{where} on {self.endpoint.name}: {status_name(exc.code)}: fix the profile's path "
                        "or the device's node"
                    ) from exc
            resolved.append((spec, node.nodeid))
        return DeviceNodes(device, profile, tuple(resolved))

    async def read(self, nodes: DeviceNodes) -> list[tuple[OpcUaNode, Sample]]:
        """One Read of all the device's nodes, with source and server timestamps."""
        params = ua.ReadParameters()
        params.TimestampsToReturn = ua.TimestampsToReturn.Both
        for _, node_id in nodes.nodes:
            params.NodesToRead.append(ua.ReadValueId(NodeId=node_id, AttributeId=AttributeIds.Value))
        what = f"read {len(nodes.nodes)} nodes of profile {nodes.profile.model} on {self.endpoint.name}"
        try:
            values = await self.client.uaclient.read(params)
        except (OSError, TimeoutError, ConnectionError, UaError) as exc:
            raise OpcUaUnavailable(f"{what}: {_why(exc)}") from exc
        return [(spec, Sample.of(value)) for (spec, _), value in zip(nodes.nodes, values, strict=True)]

    @contextlib.asynccontextmanager
    async def subscription(self, nodes: DeviceNodes, publishing_ms: float) -> AsyncIterator[Subscription]:
        """A subscription to the device's nodes' data changes (sampling and deadband from the profile)."""
        what = (
            f"subscribe to {len(nodes.nodes)} nodes of profile {nodes.profile.model} on {self.endpoint.name}"
        )
        try:
            sub = await self.client.create_subscription(publishing_ms, queue_maxsize=QUEUE_SIZE)
            items = [_monitored_item(n, spec, node_id) for n, (spec, node_id) in enumerate(nodes.nodes, 1)]
            results = await sub.create_monitored_items(items)
        except (OSError, TimeoutError, ConnectionError, UaError) as exc:
            raise OpcUaUnavailable(f"{what}: {_why(exc)}") from exc
        for (spec, _), result in zip(nodes.nodes, results, strict=True):
            if isinstance(result, ua.StatusCode):
                raise NodeNotFound(
                    f"{what}: node {spec.where} ({spec.field}) refused: {status_name(result.value)}"
                )
        try:
            yield sub
        finally:
            if not self.lost.is_set():
                with contextlib.suppress(OSError, TimeoutError, ConnectionError, UaError):
                    await sub.delete()


def _monitored_item(handle: int, spec: OpcUaNode, node_id: ua.NodeId) -> ua.MonitoredItemCreateRequest:
    """A monitored item of a node's value: sampled at the profile's rate, reported beyond its deadband."""
    params = ua.MonitoringParameters()
    params.ClientHandle = handle
    params.SamplingInterval = spec.sampling_ms if spec.sampling_ms is not None else 0.0  # 0: fastest
    params.QueueSize = ITEM_QUEUE_SIZE
    params.DiscardOldest = True
    if spec.deadband:
        data_filter = ua.DataChangeFilter()
        data_filter.Trigger = ua.DataChangeTrigger.StatusValue  # a status change is reported too
        data_filter.DeadbandType = ua.DeadbandType.Absolute
        data_filter.DeadbandValue = spec.deadband
        params.Filter = data_filter
    request = ua.MonitoredItemCreateRequest()
    request.ItemToMonitor = ua.ReadValueId(NodeId=node_id, AttributeId=AttributeIds.Value)
    request.MonitoringMode = ua.MonitoringMode.Reporting
    request.RequestedParameters = params
    return request


async def _exists(node: Node) -> bool:
    """Whether the server knows the node (reading its NodeClass fails with BadNodeIdUnknown otherwise)."""
    try:
        await node.read_node_class()
    except UaStatusCodeError:
        return False
    return True


async def _quietly_disconnect(client: Client) -> None:
    with contextlib.suppress(Exception):
        await asyncio.wait_for(client.disconnect(), 2)


def _why(exc: BaseException) -> str:
    """An asyncua failure in an engineer's words: the status code's name, else the exception's."""
    if isinstance(exc, UaStatusCodeError):
        return status_name(exc.code)
    if isinstance(exc, TimeoutError):
        return "no answer in time"
    return str(exc) or type(exc).__name__


async def changes(
    sub: Subscription, nodes: DeviceNodes, *, gather_s: float = 0.01
) -> AsyncIterator[list[tuple[OpcUaNode, Sample]]]:
    """The data changes of a subscription, a publish's worth at a time; ends when the server says the
    subscription is gone (a status change: server shut down, subscription timed out)."""
    while True:
        batch: list[tuple[OpcUaNode, Sample]] = []
        event = await sub.next_event()
        while event is not None:
            if isinstance(event, StatusChangeEvent):
                if batch:
                    yield batch
                return
            if isinstance(event, DataChangeEvent):
                spec = nodes.spec(event.node.nodeid)
                if spec is not None:
                    batch.append((spec, Sample.of(event.data.monitored_item.Value)))
            event = await sub.next_event(gather_s)
        if batch:
            yield batch
