"""A LoRaWAN line: the agent bridges a network server's MQTT integration onto the CityGW wire.

One MQTT session to the network server's broker per line (persistent, so uplinks published
while the agent is away wait there when the subscription is QoS 1; each is acknowledged only once
journaled, so one the agent was killed holding comes again). Each uplink of a configured
DevEUI is mapped through the device's LoRaWAN profile into a reading journaled like any other,
with the best gateway's RSSI and SNR, the frame counter, the uplinks lost since the last one and
a counter reset flagged. A device silent for ``missed_uplinks`` times ``poll_s`` is a timeout.
Commands for a field the profile declares go out as downlinks on the server's downlink topic.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any

import aiomqtt

from citygw.contract import wire
from citygw.contract.agent_config import Device, LorawanLine
from edge.journal import Journal
from edge.poller import HealthBoard, device_reading, now_ms
from edge.publisher import Backoff, MqttClient
from edge.vehicles import Vehicles
from firmware_bridge import lorawan
from firmware_bridge.profile import LorawanProfile

log = logging.getLogger(__name__)


class _AckAfterJournal(MqttClient):
    """A session that acknowledges an uplink only when the agent is done with it (journaled, or
    refused with why): paho's manual acknowledgement. A QoS 1 uplink the agent was killed holding
    is delivered again by the server's broker (the persistent session), not lost."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._client.manual_ack_set(True)

    def done_with(self, message: aiomqtt.Message) -> None:
        self._client.ack(message.mid, message.qos)


@dataclass
class _Node:
    device: Device
    profile: LorawanProfile
    heard: float  # monotonic time of the last uplink (the line's start before the first)
    ns_device_id: str | None


class LorawanBridge:
    """Subscribes to one network server's uplinks and journals the configured devices' readings."""

    def __init__(
        self,
        line: LorawanLine,
        devices: list[tuple[Device, LorawanProfile]],
        *,
        journal: Journal,
        board: HealthBoard,
        site: str,
        client_id: str,
        vehicles: Vehicles | None = None,
    ) -> None:
        self.line = line
        self.journal = journal
        self.board = board
        self.site = site
        self.client_id = client_id
        self.vehicles = vehicles or Vehicles()
        start = time.monotonic()
        self._nodes = {
            (device.dev_eui or "").lower(): _Node(device, profile, start, device.ns_device_id)
            for device, profile in devices
        }
        self.counters = lorawan.FrameCounters()
        self.unknown: dict[str, int] = {}  # uplinks of DevEUIs no device of the line has
        self.connected = asyncio.Event()
        self._client: aiomqtt.Client | None = None
        self._backoff = Backoff(line.broker.reconnect_min, line.broker.reconnect_max)
        for device, _ in devices:
            board.record(device.id)

    def node(self, device_id: str) -> _Node | None:
        return next((n for n in self._nodes.values() if n.device.id == device_id), None)

    async def run(self) -> None:
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(self._connect(), name=f"lorawan:{self.line.id}")
            tasks.create_task(self._watch_silence(), name=f"lorawan-silence:{self.line.id}")

    async def _connect(self) -> None:
        broker = self.line.broker
        while True:
            try:
                await self._session()
            except (aiomqtt.MqttError, OSError) as exc:
                log.warning("line %s: network server broker %s: %s", self.line.id, broker.redacted_url, exc)
            await asyncio.sleep(self._backoff.next())

    async def _session(self) -> None:
        broker = self.line.broker
        try:
            password = self.line.password()
        except KeyError as exc:
            for node in self._nodes.values():
                self.board.failed(node.device.id, wire.DeviceState.TIMEOUT, f"cannot connect: {exc.args[0]}")
            raise OSError(exc.args[0]) from None
        async with _AckAfterJournal(
            broker.hostname,
            broker.port,
            username=broker.username,
            password=password,
            identifier=self.client_id,
            clean_session=False,
            keepalive=broker.keepalive,
            timeout=broker.publish_timeout,
            tls_context=broker.tls_context(),
        ) as client:
            topic = lorawan.subscription(self.line.server, self.line.application)
            await client.subscribe(topic, qos=self.line.subscription_qos)
            self._client = client
            self._backoff.reset()
            self.connected.set()
            log.info("line %s: subscribed to %s on %s", self.line.id, topic, broker.redacted_url)
            try:
                async for message in client.messages:
                    payload = message.payload
                    self.take(str(message.topic), payload if isinstance(payload, bytes) else b"")
                    client.done_with(message)
            finally:
                self._client = None
                self.connected.clear()

    def take(self, topic: str, payload: bytes) -> wire.Reading | None:
        """Handle one message of the integration: the reading it journaled, or None (with why, logged
        and on the device's health when the device is known)."""
        try:
            uplink = lorawan.parse_uplink(self.line.server, topic, payload)
        except lorawan.UplinkError as exc:
            node = self._node_of_topic(topic)
            log.warning("line %s: %s", self.line.id, exc)
            if node is not None:
                self.board.failed(node.device.id, wire.DeviceState.DECODE_ERROR, str(exc))
            return None
        node = self._nodes.get(uplink.dev_eui)
        if node is None:
            seen = self.unknown[uplink.dev_eui] = self.unknown.get(uplink.dev_eui, 0) + 1
            if seen == 1:
                log.warning(
                    "line %s: uplink of unknown DevEUI %s (%s); add a device with dev_eui %s on this line "
                    "to read it",
                    self.line.id,
                    uplink.dev_eui,
                    topic,
                    uplink.dev_eui,
                )
            return None
        device = node.device
        node.heard = time.monotonic()
        if uplink.device_id is not None:
            node.ns_device_id = device.ns_device_id or uplink.device_id
        count = self.counters.observe(uplink.dev_eui, uplink.f_cnt)
        if count.repeat:
            log.info("device %s: frame %d again; already journaled", device.id, uplink.f_cnt)
            return None
        if count.reset:
            self.board.record(device.id).counter_resets += 1
        try:
            mapped = lorawan.map_object(node.profile, uplink.object)
        except lorawan.UplinkError as exc:
            error = f"uplink {uplink.f_cnt} (fPort {uplink.f_port}): {exc}"
            log.warning("device %s: %s", device.id, error)
            self.board.failed(device.id, wire.DeviceState.DECODE_ERROR, error)
            return None
        fields = dict(mapped.fields)
        fields[lorawan.FCNT_FIELD] = uplink.f_cnt
        fields[lorawan.LOST_FIELD] = count.lost
        if uplink.rssi is not None:
            fields[lorawan.RSSI_FIELD] = uplink.rssi
        if uplink.snr is not None:
            fields[lorawan.SNR_FIELD] = uplink.snr
        if count.reset:
            fields[lorawan.RESET_FIELD] = True
        at = now_ms()
        ts = uplink.received_ms if uplink.received_ms is not None and 0 < uplink.received_ms <= at else at
        reading = device_reading(
            device, self.site, self.vehicles, measurement=node.profile.measurement, ts=ts, fields=fields
        )
        self.board.record(device.id).fields_left_out = dict(mapped.left_out)
        if self.journal.append([reading]):
            self.board.published(device.id, ts)
        self.board.ok(device.id, ts)
        return reading

    def _node_of_topic(self, topic: str) -> _Node | None:
        """The device a message's topic names (ChirpStack: its DevEUI; TTS: its device id)."""
        parts = topic.split("/")
        if self.line.server == "chirpstack" and len(parts) >= 4:
            return self._nodes.get(parts[3].lower())
        if self.line.server == "tts" and len(parts) >= 4:
            return next((n for n in self._nodes.values() if n.ns_device_id == parts[3]), None)
        return None

    async def _watch_silence(self) -> None:
        """A device not heard for ``missed_uplinks`` of its periods is a timeout."""
        while True:
            periods = [n.device.poll_s for n in self._nodes.values()]
            await asyncio.sleep(max(0.05, min(periods, default=60.0) / 4))
            now = time.monotonic()
            for node in self._nodes.values():
                limit = self.line.missed_uplinks * node.device.poll_s
                silent = now - node.heard
                record = self.board.record(node.device.id)
                if silent > limit and record.state is not wire.DeviceState.TIMEOUT:
                    self.board.failed(
                        node.device.id,
                        wire.DeviceState.TIMEOUT,
                        f"no uplink for {silent:.0f} s (expected every {node.device.poll_s:g} s, "
                        f"timeout after {self.line.missed_uplinks} missed)",
                    )

    async def send(self, device_id: str, field: str, value: wire.FieldValue) -> str:
        """Queue the downlink that sets ``field`` at the network server; returns what was queued.

        ValueError when the profile declares no such command or the value does not encode;
        LookupError when a TTS device's id is not known yet; waits for the broker connection
        (the caller bounds the wait) and raises aiomqtt.MqttError when the publish fails.
        """
        node = self.node(device_id)
        if node is None:
            raise LookupError(f"no device {device_id} on line {self.line.id}")
        try:
            command = node.profile.command(field)
        except KeyError as exc:
            raise ValueError(exc.args[0]) from None
        data = lorawan.encode_command(command, value)
        dev_eui = (node.device.dev_eui or "").lower()
        if self.line.server == "chirpstack":
            target = dev_eui
        elif node.ns_device_id is not None:
            target = node.ns_device_id
        else:
            raise LookupError(
                f"the The Things Stack device id of {device_id} is not known before its first uplink: "
                "set ns_device_id on the device"
            )
        topic = lorawan.downlink_topic(self.line.server, self.line.application, target)
        message = lorawan.downlink_message(
            self.line.server, dev_eui, command.f_port, data, confirmed=command.confirmed
        )
        while True:
            await self.connected.wait()
            client = self._client
            if client is not None:
                break
        await client.publish(topic, message, qos=self.line.subscription_qos)
        return f"queued at the network server on fPort {command.f_port}: {data.hex().upper()}"
