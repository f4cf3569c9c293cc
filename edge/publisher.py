"""The agent's one MQTT session: drains the journal to ``telemetry`` and keeps ``status`` true.

A batch leaves the journal only after ``client.publish(..., qos=1)`` returned, which in
aiomqtt means the broker's PUBACK arrived. Any MQTT failure ends the session; the next
session (after exponential backoff with jitter) republishes the same unacknowledged batch
with the same seq, so the collector may see a duplicate but never a gap.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import ssl
import time
from dataclasses import dataclass
from importlib import metadata

import aiomqtt

from citygw import wire
from edge.config import AgentConfig
from edge.journal import Journal

log = logging.getLogger(__name__)

GOODBYE_TIMEOUT_S = 2.0


def agent_version() -> str:
    try:
        return metadata.version("citygw")
    except metadata.PackageNotFoundError:
        return "unknown"


def now_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass
class PublisherCounters:
    connects: int = 0
    disconnects: int = 0
    batches_published: int = 0
    readings_published: int = 0
    health_published: int = 0


class Backoff:
    """Exponential delays with jitter, so a fleet does not reconnect in lock-step after an outage."""

    def __init__(self, first: float, cap: float) -> None:
        self.first = first
        self.cap = cap
        self.attempt = 0

    def next(self) -> float:
        delay: float = min(self.cap, self.first * 2.0**self.attempt)
        self.attempt += 1
        return delay * random.uniform(0.5, 1.0)

    def reset(self) -> None:
        self.attempt = 0


class Publisher:
    """Owns the agent's MQTT connection; ``run()`` reconnects until cancelled."""

    def __init__(
        self,
        config: AgentConfig,
        journal: Journal,
        *,
        started_at: int | None = None,
        version: str | None = None,
    ) -> None:
        self.config = config
        self.journal = journal
        self.started_at = started_at if started_at is not None else now_ms()
        self.version = version or agent_version()
        self.connected = asyncio.Event()
        self.counters = PublisherCounters()
        self._client: aiomqtt.Client | None = None
        self._backoff = Backoff(config.broker.reconnect_min, config.broker.reconnect_max)
        agent = config.agent_id
        self._topics = {channel: wire.topic(agent, channel) for channel in wire.Channel}

    async def run(self) -> None:
        """Connect, publish, and reconnect after every MQTT failure, forever."""
        while True:
            try:
                await self._session()
            except* aiomqtt.MqttError as group:
                log.warning(
                    "MQTT link to %s lost: %s; journal backlog %d",
                    self.config.broker.redacted_url,
                    "; ".join(str(e) for e in group.exceptions),
                    self.journal.backlog(),
                )
            await asyncio.sleep(self._backoff.next())

    async def publish_health(self, health: wire.Health) -> bool:
        """Send health now, QoS 0 and not retained; False when the link is down.

        Health is a periodic snapshot superseded by the next one: it is neither journaled
        nor queued, and the backlog it reports tells what an outage cost.
        """
        client = self._client
        if client is None or not self.connected.is_set():
            return False
        try:
            await client.publish(self._topics[wire.Channel.HEALTH], wire.encode(health), qos=0)
        except aiomqtt.MqttError:
            return False
        self.counters.health_published += 1
        return True

    def _status(self, state: wire.AgentState) -> bytes:
        return wire.encode(
            wire.Status(
                agent=self.config.agent_id,
                state=state,
                version=self.version if state is wire.AgentState.ONLINE else None,
                started_at=self.started_at if state is wire.AgentState.ONLINE else None,
            )
        )

    def _client_for_session(self) -> aiomqtt.Client:
        broker = self.config.broker
        tls_context = ssl.create_default_context(cafile=broker.ca_file) if broker.tls else None
        return aiomqtt.Client(
            broker.hostname,
            broker.port,
            username=broker.username,
            password=broker.password,
            identifier=self.config.agent_id,
            clean_session=False,
            will=aiomqtt.Will(
                self._topics[wire.Channel.STATUS], self._status(wire.AgentState.OFFLINE), qos=1, retain=True
            ),
            keepalive=broker.keepalive,
            timeout=broker.publish_timeout,
            tls_context=tls_context,
        )

    async def _session(self) -> None:
        async with self._client_for_session() as client:
            await client.publish(
                self._topics[wire.Channel.STATUS], self._status(wire.AgentState.ONLINE), qos=1, retain=True
            )
            self._client = client
            self.counters.connects += 1
            self._backoff.reset()
            self.connected.set()
            log.info("connected to %s as %s", self.config.broker.redacted_url, self.config.agent_id)
            try:
                async with asyncio.TaskGroup() as tasks:
                    tasks.create_task(self._watch(client), name="mqtt-watch")
                    tasks.create_task(self._drain(client), name="mqtt-drain")
            except asyncio.CancelledError:
                await self._goodbye(client)
                raise
            finally:
                self._client = None
                self.connected.clear()
                self.counters.disconnects += 1

    async def _watch(self, client: aiomqtt.Client) -> None:
        """Raise MqttError as soon as the connection drops, which ends the session."""
        async for _message in client.messages:
            pass  # nothing subscribed yet; config and commands arrive here later

    async def _drain(self, client: aiomqtt.Client) -> None:
        topic = self._topics[wire.Channel.TELEMETRY]
        publish = self.config.publish
        while True:
            batch = self.journal.next_batch(publish.batch_max_readings)
            if batch is None:
                await asyncio.sleep(publish.interval)
                continue
            seq, payload = batch
            await client.publish(topic, payload, qos=1, timeout=self.config.broker.publish_timeout)
            readings = self.journal.ack(seq)
            self.counters.batches_published += 1
            self.counters.readings_published += readings
            if self.journal.backlog() < publish.batch_max_readings:
                # Caught up: let new readings gather into one batch instead of one message each.
                await asyncio.sleep(publish.interval)

    async def _goodbye(self, client: aiomqtt.Client) -> None:
        """On shutdown, say offline ourselves: a clean DISCONNECT makes the broker discard the will."""
        with contextlib.suppress(aiomqtt.MqttError, TimeoutError):
            async with asyncio.timeout(GOODBYE_TIMEOUT_S):
                await client.publish(
                    self._topics[wire.Channel.STATUS],
                    self._status(wire.AgentState.OFFLINE),
                    qos=1,
                    retain=True,
                    timeout=GOODBYE_TIMEOUT_S,
                )
