"""The agent's one MQTT session: drains the journal to ``telemetry`` and keeps ``status`` true.

A batch leaves the journal only after ``client.publish(..., qos=1)`` returned, which in
aiomqtt means the broker's PUBACK arrived. Up to ``publish.inflight`` batches await their
PUBACK at once, each acknowledged on its own. Any MQTT failure ends the session; the next
session (after exponential backoff with jitter) republishes the same unacknowledged batches
with the same seqs, so the collector may see a duplicate but never a gap.

End to end (``publish.end_to_end_ack``, on by default): the broker's PUBACK only moves a batch
from the backlog to the journal's held batches; the collector's ``ack`` message (the seqs it
stored) forgets it. Held batches are sent again, same seq and bytes, after every reconnect (the
broker may have died and lost them) and, once a later batch was confirmed, when one has waited
``publish.ack_timeout`` seconds (lost past the broker). Resends go at the backlog's pace, behind
live data. As long as no collector has ever confirmed a batch of this journal (an older
collector), a held batch is let go after ``ack_timeout``, as if its PUBACK had been final.

Live first: on each connect the journal's backlog is fenced off (``mark_live``); readings
journaled since then go out as soon as a slot is free, the backlog in between at most
``publish.backlog_rate`` readings a second, so a bus position is never stuck behind an
hour of meter readings.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
import ssl
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from importlib import metadata
from typing import TypeVar

import aiomqtt

from citygw.contract import wire
from citygw.contract.agent_config import AgentConfig
from edge.journal import Batch, Journal

log = logging.getLogger(__name__)

GOODBYE_TIMEOUT_S = 2.0
HELD_CHECK_S = 1.0  # how often held batches are looked at for a resend or a release
RESCHEDULE_S = 1.0  # the longest nap of the drain: new publish settings take effect within it
T = TypeVar("T")


class MqttClient(aiomqtt.Client):
    """aiomqtt's client, whose waits (connect, publish, subscribe, disconnect) never lose a cancellation.

    aiomqtt waits with ``asyncio.wait_for``, which on Python 3.11 returns the result and drops
    the cancellation when both arrive in the same loop turn (CPython gh-86296, fixed in 3.12):
    a task stopped just as its PUBACK came kept running, and an agent told to stop hung for ever.
    ``asyncio.timeout`` has no such race.
    """

    async def _wait_for(self, fut: Awaitable[T], timeout: float | None) -> T:  # noqa: ASYNC109
        if timeout is None:
            timeout = self.timeout
        try:
            async with asyncio.timeout(None if timeout == math.inf else timeout):
                return await fut
        except TimeoutError:
            raise aiomqtt.MqttError("Operation timed out") from None


async def _logged(handler: Callable[[bytes], Awaitable[None]], payload: bytes) -> None:
    """Run a message handler; its failure is logged, it never ends the session."""
    try:
        await handler(payload)
    except Exception:
        log.exception("handling a message failed")


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
    batches_resent: int = 0
    acks_received: int = 0


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


class TlsSetupError(Exception):
    """The TLS context for the broker cannot be built: a CA, certificate or key file is missing,
    unreadable, not PEM, or the key is not the certificate's."""


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
        self.config_version: int | None = None
        self.last_ack_ms = 0
        """When the broker last acknowledged a telemetry batch (ms since epoch)."""
        self._listeners: dict[str, Callable[[bytes], Awaitable[None]]] = {}
        # QoS 1 messages other than telemetry (config/state, cmd/result, status updates), kept
        # in memory until the broker acknowledged them; a later session sends what is left.
        self._outbox: deque[tuple[str, bytes, bool]] = deque()
        self._outbox_ready = asyncio.Event()
        # Held batches to send again, in order (a dict as an ordered set).
        self._resend: dict[int, None] = {}
        self._told_no_acks = False
        if config.publish.end_to_end_ack:
            self.listen(wire.Channel.ACK, self._on_ack)
        self._outbox_empty = asyncio.Event()

    def listen(self, channel: wire.Channel, handler: Callable[[bytes], Awaitable[None]]) -> None:
        """Subscribe (QoS 1) to ``channel`` of this agent; each message runs ``handler`` in its own task."""
        self._listeners[self._topics[channel]] = handler

    async def send(
        self,
        channel: wire.Channel,
        payload: wire.ConfigState | wire.CommandResult | wire.UpdateState,
        *,
        retain: bool = False,
    ) -> None:
        """Queue a QoS 1 message; it goes out now or in the next session."""
        self._outbox.append((self._topics[channel], wire.encode(payload), retain))
        self._outbox_ready.set()

    async def drain_outbox(self, within_s: float) -> bool:
        """Wait until the broker acknowledged every queued message; False if some are left at ``within_s``."""
        try:
            async with asyncio.timeout(within_s):
                while self._outbox:
                    self._outbox_empty.clear()
                    await self._outbox_empty.wait()
        except TimeoutError:
            return False
        return True

    def announce(self) -> None:
        """Queue a fresh retained ``status`` (after the config version changed)."""
        self._outbox.append((self._topics[wire.Channel.STATUS], self._status(wire.AgentState.ONLINE), True))
        self._outbox_ready.set()

    async def run(self) -> None:
        """Connect, publish, and reconnect after every MQTT failure, forever."""
        async with asyncio.TaskGroup() as handlers:
            self._handlers = handlers
            while True:
                try:
                    await self._session()
                except* TlsSetupError as group:
                    log.error(
                        "%s; trying again with back-off (the file may be replaced); journal backlog %d",
                        group.exceptions[0],
                        self.journal.backlog(),
                    )
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
                config_version=self.config_version if state is wire.AgentState.ONLINE else None,
                started_at=self.started_at if state is wire.AgentState.ONLINE else None,
            )
        )

    def _client_for_session(self) -> aiomqtt.Client:
        broker = self.config.broker
        return MqttClient(
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
            tls_context=self._tls_context(),
            max_inflight_messages=max(20, self.config.publish.inflight + 2),
        )

    def _tls_context(self) -> ssl.SSLContext | None:
        """A fresh context per session (the files may have been replaced); TlsSetupError if impossible."""
        broker = self.config.broker
        try:
            return broker.tls_context()
        except OSError as exc:  # ssl.SSLError (not PEM, key of another certificate) is one too
            files = ", ".join(f"{name} {path}" for name, path in broker.tls_files.items()) or "the system CAs"
            raise TlsSetupError(f"cannot set up TLS to {broker.redacted_url} with {files}: {exc}") from exc

    async def _session(self) -> None:
        async with self._client_for_session() as client:
            await client.publish(
                self._topics[wire.Channel.STATUS], self._status(wire.AgentState.ONLINE), qos=1, retain=True
            )
            self._client = client
            # Fence the backlog now, before anyone hears we are connected: what comes next is live.
            self.journal.mark_live()
            # The broker may have lost what it acknowledged (a crash before its autosave).
            self._resend = dict.fromkeys(self.journal.held_seqs())
            self.counters.connects += 1
            self._backoff.reset()
            self.connected.set()
            log.info("connected to %s as %s", self.config.broker.redacted_url, self.config.agent_id)
            try:
                async with asyncio.TaskGroup() as tasks:
                    tasks.create_task(self._watch(client), name="mqtt-watch")
                    tasks.create_task(self._drain(client), name="mqtt-drain")
                    tasks.create_task(self._flush_outbox(client), name="mqtt-outbox")
                    if self._listeners:
                        await client.subscribe([(t, 1) for t in self._listeners])
            except asyncio.CancelledError:
                await self._goodbye(client)
                raise
            finally:
                self._client = None
                self.connected.clear()
                self.counters.disconnects += 1

    async def _watch(self, client: aiomqtt.Client) -> None:
        """Hand config and commands to their handlers; raise MqttError as soon as the connection drops."""
        async for message in client.messages:
            handler = self._listeners.get(str(message.topic))
            if handler is None or not isinstance(message.payload, bytes):
                continue
            self._handlers.create_task(_logged(handler, message.payload), name=f"on:{message.topic}")

    async def _flush_outbox(self, client: aiomqtt.Client) -> None:
        while True:
            await self._outbox_ready.wait()
            while self._outbox:
                topic, payload, retain = self._outbox[0]
                await client.publish(
                    topic, payload, qos=1, retain=retain, timeout=self.config.broker.publish_timeout
                )
                self._outbox.popleft()
            self._outbox_ready.clear()
            self._outbox_empty.set()

    async def _drain(self, client: aiomqtt.Client) -> None:
        """Publish the journal's batches; the publish settings are read anew for each batch (a pushed
        config may change them), but ``inflight`` only at the next session."""
        journal = self.journal
        window = asyncio.Semaphore(self.config.publish.inflight)
        loop = asyncio.get_running_loop()
        async with asyncio.TaskGroup() as flights:
            for pending in journal.formed_batches():
                await window.acquire()
                flights.create_task(self._fly(client, pending, window), name=f"publish:{pending.seq}")
            # Each pause is kept as (start, what it is made of), so a pause set under settings since
            # replaced (an hour's interval rolled back) is shortened to what the settings now say.
            live_since = backlog_since = -math.inf  # due at once
            backlog_size = 0
            held_due = loop.time()
            while True:
                await window.acquire()
                publish = self.config.publish
                now = loop.time()
                if now >= held_due:
                    held_due = now + HELD_CHECK_S
                    self._check_held()
                live_due = live_since + publish.interval
                rate = publish.backlog_rate
                backlog_due = backlog_since + (backlog_size / rate if rate is not None else 0.0)
                batch: Batch | None = None
                if now >= live_due:
                    batch = journal.form_batch(publish.batch_max_readings, live=True)
                    if batch is not None and batch.size < publish.batch_max_readings:
                        # Caught up: let new readings gather into one batch instead of one message each.
                        live_since = now
                if batch is None and now >= backlog_due:
                    batch = self._next_resend() or journal.form_batch(publish.batch_max_readings, live=False)
                    if batch is not None:
                        backlog_since, backlog_size = now, batch.size
                if batch is None:
                    window.release()
                    wake = min(live_due, backlog_due)
                    await asyncio.sleep(min(wake - now if wake > now else publish.interval, RESCHEDULE_S))
                    continue
                flights.create_task(self._fly(client, batch, window), name=f"publish:{batch.seq}")

    async def _fly(self, client: aiomqtt.Client, batch: Batch, window: asyncio.Semaphore) -> None:
        """Publish one batch and forget it once the broker acknowledged it."""
        try:
            await client.publish(
                self._topics[wire.Channel.TELEMETRY],
                batch.payload,
                qos=1,
                timeout=self.config.broker.publish_timeout,
            )
        finally:
            window.release()
        self.last_ack_ms = now_ms()
        self.counters.readings_published += self.journal.ack(batch.seq)
        self.counters.batches_published += 1

    def _next_resend(self) -> Batch | None:
        """The next held batch to send again, read back from the journal; None if none is due."""
        while self._resend:
            seq = next(iter(self._resend))
            del self._resend[seq]
            batch = self.journal.held_batch(seq)
            if batch is not None:  # else confirmed meanwhile
                self.counters.batches_resent += 1
                return batch
        return None

    def _check_held(self) -> None:
        """Queue for a resend the held batches that waited ``ack_timeout`` while a later one was
        confirmed; with no collector confirming at all, let go of those that waited that long."""
        if not self.config.publish.end_to_end_ack:
            return
        journal = self.journal
        sent_before = time.monotonic() - self.config.publish.ack_timeout
        if not journal.collector_acks_seen:
            released = journal.release(journal.held_seqs(sent_before=sent_before))
            if released and not self._told_no_acks:
                self._told_no_acks = True
                log.warning(
                    "no collector has confirmed a batch of agent %s yet (ack channel): its PUBACKs are "
                    "taken as final after %g s (%d readings so far); an older collector, or the store "
                    "down since this journal began",
                    self.config.agent_id,
                    self.config.publish.ack_timeout,
                    released,
                )
            return
        for seq in journal.held_seqs(sent_before=sent_before, below=journal.confirmed_top):
            self._resend.setdefault(seq)

    async def _on_ack(self, payload: bytes) -> None:
        """A collector stored some of our batches: the journal forgets them."""
        ack = wire.Ack.model_validate_json(payload)
        if ack.agent != self.config.agent_id:
            log.warning("an ack for agent %r on agent %s's topic: ignored", ack.agent, self.config.agent_id)
            return
        self.counters.acks_received += 1
        self.journal.confirm(ack.seqs)

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
