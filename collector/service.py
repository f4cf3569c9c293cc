"""The collector: MQTT telemetry in, validated points out to the store, acknowledged only once stored.

Agents' ``health`` and ``status`` messages take the same way (same session, QoS 1, same batches)
and become ``agent_health`` points (collector/health.py); they are rare beside telemetry.

This module is the plumbing between the collector's parts: the conversion of a message to
records or dead letters (collector/convert.py, no I/O), acknowledgement order and agent acks
(collector/acks.py), storing a batch with retries (collector/store_writes.py), the store and its
own encoder (collector/store/), metrics (collector/metrics.py), process tuning (the entry point's:
collector/tuning.py).

paho-mqtt runs the network loop in its own thread and queues every message. A converter thread
turns them into batches (``Converter.convert``: validated, in the store's encoding; well-formed
telemetry goes straight from JSON to lines, collector/fastpath.py); ``store_writers``
writer threads (2) each take the next batch, write it, and hand it back; a batch's PUBACKs
(manual ack) go out once it and every batch before it are done (``InOrder``), so they leave in the
order the PUBLISHes came (MQTT asks for that) even when a later write finishes first. While batches are on
their way to the store (waiting on the network, without the GIL), the next one is validated;
two writes at once let the database work on one while it answers the other (a single writer
kept InfluxDB waiting between requests: "Speed" in collector/README.md). The process settings
it runs best with (GIL switch interval, GC threshold) are its entry point's: collector/tuning.py.
While the store is down nothing is acknowledged, so the broker keeps the messages (persistent
session) and stops sending beyond the in-flight window: backpressure instead of loss.

End to end (``acks``, on by default): once a batch's messages are acknowledged, the collector
publishes on each sending agent's ``ack`` channel (QoS 1) the seqs of its telemetry now stored,
dead-lettered ones included (stored as dead letters: taken too; a payload too large or not valid
gives its seq from the journal's header when it has one). The agent keeps a batch until then,
so a broker crash that loses what it acknowledged loses nothing (edge/publisher.py). Mosquitto
closes the connection of a client that publishes where it may not: on its first connection the
collector publishes one empty ack to ``wire.ACK_PROBE_TOPIC`` and sends acks only once the
broker accepted it; refused (a broker whose roles predate acks), it sends none and says so.

Bounded memory: the collector speaks MQTT v5 and announces ``inflight_window`` as its Receive
Maximum, so the broker never has more than that many unacknowledged messages out to it; the
inbox and the batches in the pipeline therefore hold at most ``inflight_window`` messages of
at most ``MAX_PAYLOAD_BYTES`` (in practice a few hundred readings each), plus the encoded form of
``store_writers`` + 2 batches. Everything else waits in the broker's session. Mosquitto 2.0.11 keeps to
the Receive Maximum only while nothing is acknowledged, so the collector keeps to it too: past the
window its MQTT thread waits for room before it reads on (``_on_message``).

What the broker must be configured for (Mosquitto 2.0, see collector/README.md):

- ``persistence true`` (and a ``persistence_location``): the sessions and their queued
  messages survive a broker restart.
- ``max_queued_messages 0`` (or a value sized for the longest store outage): messages queued
  for a collector that is not acknowledging. Mosquitto's default of 1000 silently drops QoS 1
  messages beyond it — data loss during an outage. ``max_queued_bytes`` likewise.
- ``max_inflight_messages``: applies to MQTT v3.1.1 clients only; for this (v5) collector the
  Receive Maximum it sends wins. Keep it at or above ``inflight_window`` if an older collector
  is still around.
- ``persistent_client_expiration`` unset (or long): a collector session that expires is a
  session whose queued messages are thrown away. The collector asks for a session that never
  expires (Session Expiry Interval 0xFFFFFFFF).
- ``message_size_limit``: at least the agents' largest batch; payloads larger than
  ``MAX_PAYLOAD_BYTES`` reach the dead-letter store, not the database.
"""

from __future__ import annotations

import itertools
import logging
import queue
import sys
import threading
import time
from collections import Counter, deque
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import unquote, urlsplit

from paho.mqtt.client import Client, ConnectFlags, DisconnectFlags, MQTTMessage
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from citygw.contract import wire
from citygw.contract.tls import client_context
from collector.acks import InOrder, agent_acks
from collector.convert import CHANNELS, Batch, Converter, Received
from collector.dead_letter import DeadLetterLog, DeadLetters
from collector.health import DEVICE_HEALTH_EVERY_S
from collector.metrics import CollectorStats, Gauges, Histogram, MetricsServer, collector_text
from collector.owners import OwnerPolicy, Owners
from collector.series_budget import MAX_SERIES_PER_AGENT
from collector.store.base import (
    LineWriter,
    PointWriter,
    SchemaReader,
    StoreUnavailable,
)
from collector.store_writes import BatchWriter, Outcome, retry_delay

log = logging.getLogger(__name__)

SESSION_NEVER_EXPIRES = 0xFFFFFFFF
# While the broker cannot be reached: the first failure is logged, then at most one line this often.
CONNECT_FAIL_LOG_EVERY_S = 60.0
# How long a writer waits for the broker's answer to the ack probe before it sends no ack.
ACK_PROBE_WAIT_S = 2.0


@dataclass(frozen=True, slots=True)
class BrokerAddress:
    """Where the broker is, parsed from ``mqtt://[user:pass@]host:port`` (``mqtts://`` for TLS)."""

    host: str
    port: int
    tls: bool = False
    username: str | None = None
    password: str | None = None

    @classmethod
    def parse(cls, url: str) -> BrokerAddress:
        expected = "expected mqtt://[user:pass@]host:port or mqtts://[user:pass@]host:port"
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError as exc:
            raise ValueError(f"broker URL: bad host or port ({exc}); {expected}") from exc
        if parts.scheme not in ("mqtt", "mqtts"):
            raise ValueError(f"broker URL: unknown scheme {parts.scheme!r}; {expected}")
        if not parts.hostname:
            raise ValueError(f"broker URL: missing host; {expected}")
        if parts.path not in ("", "/") or parts.query:
            raise ValueError(f"broker URL: unexpected path or query {parts.path!r}; {expected}")
        tls = parts.scheme == "mqtts"
        return cls(
            host=parts.hostname,
            port=port or (8883 if tls else 1883),
            tls=tls,
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password is not None else None,
        )


@dataclass(frozen=True, slots=True)
class TlsFiles:
    """The broker's CA (system CAs if None) and the collector's own certificate and key, for mqtts://."""

    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None


class Collector:
    """Subscribes to every agent's telemetry, health and status and writes them to ``store``, at least once.

    With ``share_group`` several collectors share the load (MQTT shared subscription); each then
    sees only part of an agent's sequence, so gap detection is off.

    A device's health is stored when its state changes, else every ``device_health_every_s``.

    With ``metrics_port`` (0 for any free port) ``metrics_text()`` is also served on
    ``http://metrics_host:metrics_port/metrics`` (loopback unless ``metrics_host`` says otherwise).
    """

    def __init__(
        self,
        broker_url: str,
        store: PointWriter,
        *,
        client_id: str = "citygw-collector",
        share_group: str | None = None,
        batch_max_points: int = 5000,
        batch_max_seconds: float = 1.0,
        retry_initial_seconds: float = 0.5,
        retry_max_seconds: float = 30.0,
        keepalive: int = 30,
        inflight_window: int = 1000,
        store_writers: int = 2,
        metrics_port: int | None = None,
        metrics_host: str = "127.0.0.1",
        mqtt_v5: bool = True,
        device_health_every_s: float = DEVICE_HEALTH_EVERY_S,
        max_series_per_agent: int = MAX_SERIES_PER_AGENT,
        tls_files: TlsFiles | None = None,
        owners: OwnerPolicy = OwnerPolicy.OFF,
        acks: bool = True,
    ) -> None:
        self.broker = BrokerAddress.parse(broker_url)
        self.tls_files = tls_files or TlsFiles()
        if not self.broker.tls and self.tls_files != TlsFiles():
            raise ValueError("broker URL: the CA, certificate and key files need mqtts://")
        if (self.tls_files.cert_file is None) != (self.tls_files.key_file is None):
            raise ValueError("a client certificate needs its key, and a key its certificate")
        # MQTT 3.1.1 only for brokers that lack v5 (the demo's embedded amqtt): the in-flight
        # window is then the broker's own setting (Mosquitto: max_inflight_messages).
        self.mqtt_v5 = mqtt_v5
        self.client_id = client_id
        self.acks = acks
        self._acks_allowed = threading.Event()  # the broker accepted the probe: acks may go out
        self._ack_probe_mid: int | None = None  # the probe's, while unanswered
        self.share_group = share_group
        self.batch_max_points = batch_max_points
        self.batch_max_seconds = batch_max_seconds
        self.retry_initial_seconds = retry_initial_seconds
        self.retry_max_seconds = retry_max_seconds
        self.keepalive = keepalive
        if not 1 <= inflight_window <= 65535:
            raise ValueError(
                f"inflight_window must be within 1..65535 (MQTT Receive Maximum), not {inflight_window}"
            )
        self.inflight_window = inflight_window
        if store_writers < 1:
            raise ValueError(f"store_writers must be at least 1, not {store_writers}")
        self.store_writers = store_writers
        self._store = store
        self._owners = Owners(owners)  # each agent's devices, vehicles and site, from its pushed config
        self._dead_letter_log = DeadLetterLog(log)  # one line per agent and reason a minute, with counts
        # Messages to records in the store's own encoding, and dead letters: collector/convert.py.
        self.converter = Converter(
            DeadLetters(client_id, self._dead_letter_log.letter),
            encoder=store.encoder if isinstance(store, LineWriter) else None,  # the store's choice
            owners=self._owners,
            max_series_per_agent=max_series_per_agent,
            device_health_every_s=device_health_every_s,
            watch_gaps=share_group is None,
        )
        self._subscriptions = [wire.subscription(channel, share_group=share_group) for channel in CHANNELS]
        # Every agent's config, never shared: each collector needs all of them (and a shared
        # subscription gets no retained messages). None when no agent is held to its config.
        self._config_subscription = (
            None if owners is OwnerPolicy.OFF else wire.subscription(wire.Channel.CONFIG)
        )
        self._config_mid: int | None = None
        self._configs_subscribed = False
        self._inbox: queue.SimpleQueue[Received] = queue.SimpleQueue()
        # Converted batches for the writer; None tells it to stop.
        self._batches: queue.Queue[Batch | None] = queue.Queue(maxsize=1)
        self._stats = CollectorStats()
        self._stats_lock = threading.Lock()
        self._write_seconds = Histogram()
        # Receive times (ms) of the messages taken in but not yet acknowledged, oldest first: the
        # writer handles messages in arrival order, so the head is the oldest unacknowledged one.
        self._unacked: deque[int] = deque()
        # One unit per message the collector may take in before earlier ones are done with: the
        # in-flight window kept by the collector itself, whatever the broker does (see _on_message).
        self._room = threading.Semaphore(self.inflight_window)
        self.metrics_port = metrics_port
        self.metrics_host = metrics_host
        self._metrics_server: MetricsServer | None = None
        self._stopping = threading.Event()
        self._writer = BatchWriter(  # each batch to the store, retried, its refusals dead-lettered
            store,
            self.converter,
            name=self.client_id,
            stopping=self._stopping,
            retry_initial_seconds=retry_initial_seconds,
            retry_max_seconds=retry_max_seconds,
            on_retry=self._count_retry,
            on_write=self._observe_write,
        )
        self._subscribed = threading.Event()
        self._connection = 0  # bumped on every CONNACK: acks are only valid on the connection that got them
        self._connect_fail_logged_at: float | None = None  # monotonic; None: none logged in this outage
        self._connect_failures = 0  # failed attempts since the last one logged
        self._converter_thread: threading.Thread | None = None
        self._writers: list[threading.Thread] = []
        self._batch_numbers = itertools.count()
        # Batches written but waiting for an earlier one, by number, with what to do once it is done.
        self._in_order: InOrder[Outcome] = InOrder(self._finish)
        self._client = self._make_client()

    def _make_client(self) -> Client:
        if self.mqtt_v5:
            client = Client(
                CallbackAPIVersion.VERSION2,
                client_id=self.client_id,
                protocol=MQTTProtocolVersion.MQTTv5,
                manual_ack=True,
            )
        else:
            client = Client(
                CallbackAPIVersion.VERSION2,
                client_id=self.client_id,
                protocol=MQTTProtocolVersion.MQTTv311,
                clean_session=False,
                manual_ack=True,
            )
        if self.broker.username is not None:
            client.username_pw_set(self.broker.username, self.broker.password)
        if self.broker.tls:  # read once: rotating the collector's pair takes a restart
            files = self.tls_files
            client.tls_set_context(client_context(files.ca_file, files.cert_file, files.key_file))
        client.reconnect_delay_set(min_delay=1, max_delay=10)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_connect_fail = self._on_connect_fail
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_message
        client.on_publish = self._on_publish
        return client

    @property
    def stats(self) -> CollectorStats:
        """A snapshot of the counters."""
        with self._stats_lock:
            return self._stats.copy()

    @property
    def metrics_address(self) -> tuple[str, int] | None:
        """(host, port) of the metrics endpoint while it runs (``metrics_port=0`` picks a free port)."""
        return None if self._metrics_server is None else self._metrics_server.address

    def lag_seconds(self) -> float:
        """Now minus the receive time of the oldest message not yet acknowledged (0 when none)."""
        try:
            oldest = self._unacked[0]
        except IndexError:
            return 0.0
        return max(0.0, (_now_ms() - oldest) / 1000)

    def metrics_text(self) -> str:
        """The collector's metrics in Prometheus text exposition format."""
        with self._stats_lock:
            stats = self._stats.copy()
            write_seconds = self._write_seconds.copy()
        gauges = Gauges(
            lag_seconds=self.lag_seconds(),
            inbox_messages=self._inbox.qsize(),
            unacked_messages=len(self._unacked),
            agent_configs=len(self._owners),
            subscribed=self.subscribed,
        )
        return collector_text(stats, write_seconds, gauges)

    def start(self) -> None:
        """Connect (retrying until the broker answers), start the converter and writers; idempotent."""
        if self._converter_thread is not None:
            return
        self._stopping.clear()
        self._unacked.clear()
        self._owners.ready.clear()  # the configs come again with this session's first subscription
        self._configs_subscribed = False
        self._room = threading.Semaphore(self.inflight_window)
        if self.metrics_port is not None and self._metrics_server is None:
            self._metrics_server = MetricsServer(
                self.metrics_text, host=self.metrics_host, port=self.metrics_port
            )
            self._metrics_server.start()
        self._batches = queue.Queue(maxsize=1)
        self._batch_numbers = itertools.count()
        self._in_order.reset()
        self._converter_thread = threading.Thread(
            target=self._convert_loop, name=f"{self.client_id}-converter", daemon=True
        )
        self._writers = [
            threading.Thread(target=self._write_loop, name=f"{self.client_id}-writer-{n}", daemon=True)
            for n in range(self.store_writers)
        ]
        self._converter_thread.start()
        for writer in self._writers:
            writer.start()
        if self.mqtt_v5:
            properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            properties.SessionExpiryInterval = SESSION_NEVER_EXPIRES
            properties.ReceiveMaximum = self.inflight_window
            self._client.connect_async(
                self.broker.host,
                self.broker.port,
                keepalive=self.keepalive,
                clean_start=False,
                properties=properties,
            )
        else:
            self._client.connect_async(self.broker.host, self.broker.port, keepalive=self.keepalive)
        self._client.loop_start()

    @property
    def subscribed(self) -> bool:
        """Connected, with the subscriptions confirmed by the broker."""
        return self._subscribed.is_set()

    def wait_subscribed(self, timeout: float = 10.0) -> bool:
        """True once the broker confirmed the subscription (then nothing published is missed)."""
        return self._subscribed.wait(timeout)

    def stop(self, timeout: float = 10.0) -> None:
        """Store and acknowledge what is already queued (unless the store is down), then disconnect.

        Whatever is not acknowledged stays in the broker's session for the next start.
        """
        self._stopping.set()
        deadline = time.monotonic() + timeout
        for thread in (self._converter_thread, *self._writers):
            if thread is not None:
                thread.join(max(0.0, deadline - time.monotonic()))
                if thread.is_alive():
                    log.warning("collector %s: %s still busy; leaving", self.client_id, thread.name)
        self._converter_thread, self._writers = None, []
        self._dead_letter_log.flush(self.client_id, everything=True)
        self._client.disconnect()
        self._client.loop_stop()
        self._subscribed.clear()
        if self._metrics_server is not None:
            self._metrics_server.stop()
            self._metrics_server = None
        stats = self.stats
        log.info(
            "collector %s: stopped after %d message(s), %d point(s), %d batch(es), %d dead letter(s)",
            self.client_id,
            stats.messages,
            stats.points,
            stats.batches,
            stats.dead_letters,
        )

    def __enter__(self) -> Collector:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # -- paho callbacks (network thread) --

    def _on_connect(
        self,
        client: Client,
        userdata: Any,
        flags: ConnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        if reason_code.is_failure:
            log.error("collector %s: broker refused the connection: %s", self.client_id, reason_code)
            return
        self._connection += 1
        self._connect_fail_logged_at, self._connect_failures = None, 0
        log.info(
            "collector %s: connected to %s:%d (session present: %s)",
            self.client_id,
            self.broker.host,
            self.broker.port,
            flags.session_present,
        )
        if self._config_subscription is not None:
            # First and alone, at QoS 0 (outside the in-flight window): the broker sends the retained
            # configs before it reads the next SUBSCRIBE, so all of them are in when that one's SUBACK
            # comes, and the converter waits for it (_wait_for_configs).
            _, self._config_mid = client.subscribe(self._config_subscription, qos=0)
        client.subscribe([(name, 1) for name in self._subscriptions])
        if self.acks and self._ack_probe_mid is None and not self._acks_allowed.is_set():
            self._ack_probe_mid = client.publish(wire.ACK_PROBE_TOPIC, b"", qos=1).mid

    def _on_publish(
        self, client: Client, userdata: Any, mid: int, reason_code: ReasonCode, properties: Properties
    ) -> None:
        if mid != self._ack_probe_mid:
            return
        if reason_code.is_failure:  # then Mosquitto closes the connection; the next one sends no probe
            self.acks = False
            log.error(
                "collector %s: the broker refuses its acks (%s on %s): agents get no end-to-end "
                "confirmation and take the broker's PUBACK as final; let the collector role publish "
                "citygw/v1/+/ack (run citygw-broker-users roles again), or run with --no-acks",
                self.client_id,
                reason_code,
                wire.ACK_PROBE_TOPIC,
            )
        else:
            self._acks_allowed.set()
        self._ack_probe_mid = None

    def _on_connect_fail(self, client: Client, userdata: Any) -> None:
        """A connection attempt failed (paho retries): the first one logged, then one a minute."""
        # paho calls this in its ``except OSError`` block: that exception is the reason.
        error = sys.exc_info()[1]
        self._connect_failures += 1
        now = time.monotonic()
        last = self._connect_fail_logged_at
        if last is not None and now - last < CONNECT_FAIL_LOG_EVERY_S:
            return
        again = (
            f"; {self._connect_failures} failed attempt(s) since the last report" if last is not None else ""
        )
        log.warning(
            "collector %s: cannot connect to the broker at %s:%d: %s (retrying%s)",
            self.client_id,
            self.broker.host,
            self.broker.port,
            error or "connection failed",
            again,
        )
        self._connect_fail_logged_at, self._connect_failures = now, 0

    def _on_disconnect(
        self,
        client: Client,
        userdata: Any,
        flags: DisconnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        self._subscribed.clear()
        if self._stopping.is_set():
            log.info("collector %s: disconnected", self.client_id)
        else:
            log.warning("collector %s: connection lost (%s); reconnecting", self.client_id, reason_code)

    def _on_subscribe(
        self,
        client: Client,
        userdata: Any,
        mid: int,
        reason_codes: list[ReasonCode],
        properties: Properties | None,
    ) -> None:
        if mid == self._config_mid:
            if any(code.is_failure for code in reason_codes):
                log.error(
                    "collector %s: subscription to %s refused (%s): no telemetry is converted until the "
                    "collector may read the agents' configs (the collector's broker role: "
                    "deploy/mosquitto/citygw-broker-users roles), or run it with --owners off",
                    self.client_id,
                    self._config_subscription,
                    reason_codes,
                )
            else:
                self._configs_subscribed = True
            return
        if any(code.is_failure for code in reason_codes):
            log.error(
                "collector %s: subscription to %s refused: %s",
                self.client_id,
                self._subscriptions,
                reason_codes,
            )
            return
        log.info("collector %s: subscribed to %s", self.client_id, ", ".join(self._subscriptions))
        if self._config_subscription is None or self._configs_subscribed:
            self._owners.ready.set()  # the retained configs came before this SUBACK
        self._subscribed.set()

    def _on_message(self, client: Client, userdata: Any, message: MQTTMessage) -> None:
        if self._config_subscription is not None and message.topic.endswith(_CONFIG_SUFFIX):
            self._take_config(client, message)
            return
        # A broker that sends beyond the Receive Maximum (Mosquitto 2.0 while PUBACKs flow) waits
        # here, in TCP's flow control: the rest stays in its session, not in this process's memory.
        # Nothing is sent meanwhile, keepalives included: a broker that gives up on the connection
        # sends the unacknowledged messages again on the next one.
        if not self._room.acquire(blocking=False):
            with self._stats_lock:
                self._stats.window_overruns += 1
            while not self._room.acquire(timeout=0.1):
                if self._stopping.is_set():
                    return
        if self._stopping.is_set():
            return  # not acknowledged: the broker sends it again in the next session
        received_ms = _now_ms()
        self._unacked.append(received_ms)
        self._inbox.put(
            Received(
                message.topic, bytes(message.payload), received_ms, message.mid, message.qos, self._connection
            )
        )

    def _take_config(self, client: Client, message: MQTTMessage) -> None:
        """An agent's pushed config: what it owns from now on (taken here, outside the window)."""
        if message.qos:
            client.ack(message.mid, message.qos)  # QoS 0 is asked for; an older session's QoS 1 too
        parsed = wire.parse_topic(message.topic)
        if parsed is None or parsed[1] is not wire.Channel.CONFIG:
            log.warning("collector %s: not an agent's config topic: %s", self.client_id, message.topic)
            return
        problem = self._owners.take(parsed[0], bytes(message.payload))
        if problem is not None:
            log.warning("collector %s: agent %s: %s", self.client_id, parsed[0], problem)
            return
        owned = self._owners.of(parsed[0])
        if owned is not None and owned.version is not None:
            log.info(
                "collector %s: agent %s owns %d device(s) at site %s (config v%d)",
                self.client_id,
                parsed[0],
                len(owned.vehicles),
                owned.site,
                owned.version,
            )

    # -- converter thread --

    def _convert_loop(self) -> None:
        self._learn_from_store()
        if not self._wait_for_configs():
            for _ in self._writers:
                self._batches.put(None)
            return
        while True:
            self._dead_letter_log.flush(self.client_id)
            batch = self._next_batch()
            if batch is not None:
                self._batches.put(batch)
            elif self._stopping.is_set():
                for _ in self._writers:
                    self._batches.put(None)
                return

    def _learn_from_store(self) -> None:
        """Before the first message: how long the store keeps points, and its field types.

        Asked again while the store is down, when nothing could be written anyway; a store that
        cannot tell leaves the types to the readings.
        """
        if not isinstance(self._store, SchemaReader):
            return
        attempt = 0
        while not self._stopping.is_set():
            try:
                self.converter.retention = retention = self._store.retention()
                stored = self._store.field_types()
            except StoreUnavailable as exc:
                delay = retry_delay(attempt, self.retry_initial_seconds, self.retry_max_seconds)
                attempt += 1
                self._count_retry()
                log.warning(
                    "collector %s: cannot read the store's field types, retry %d in %.1f s: %s",
                    self.client_id,
                    attempt,
                    delay,
                    exc,
                )
                self._stopping.wait(delay)
                continue
            except Exception as exc:  # StoreError: it cannot tell; anything else must not stop the converter
                log.warning(
                    "collector %s: the store cannot list its field types (%r); each field's type is the "
                    "first this collector accepts",
                    self.client_id,
                    exc,
                )
                return
            self.converter.field_types.learn_stored(stored)
            kept = retention.what if retention else "for ever"
            known = len(self.converter.field_types)
            log.info("collector %s: %d field types from the store; it keeps %s", self.client_id, known, kept)
            return

    def _wait_for_configs(self) -> bool:
        """Before the first message, when agents are held to their configs: until the retained ones
        are in (False: stopping first). The messages meanwhile wait in the inbox and the broker."""
        if self._config_subscription is None:
            return True
        started = time.monotonic()
        logged = 0.0
        while not self._owners.ready.wait(0.1):
            if self._stopping.is_set():
                return False
            if (waited := time.monotonic() - started) >= logged + CONNECT_FAIL_LOG_EVERY_S / 6:
                logged = waited
                log.warning(
                    "collector %s: still waiting for the agents' configs (%s) after %.0f s",
                    self.client_id,
                    self._config_subscription,
                    waited,
                )
        log.info(
            "collector %s: %d agent config(s); ownership policy %s",
            self.client_id,
            len(self._owners),
            self._owners.policy.value,
        )
        return True

    def _next_batch(self) -> Batch | None:
        """Converted messages until batch_max_points points, inflight_window messages (no more can come
        before an acknowledgement) or batch_max_seconds after the first one; None if none came.

        While the writers store the previous batches, this one fills up to what the window leaves;
        their acknowledgements let the rest come.
        """
        try:
            first = self._inbox.get(timeout=0.1)
        except queue.Empty:
            return None
        batch = Batch(next(self._batch_numbers))
        self._convert(first, batch)
        deadline = time.monotonic() + self.batch_max_seconds
        while batch.size < self.batch_max_points and len(batch.messages) < self.inflight_window:
            # Stopping: take only what is already queued.
            wait = 0.0 if self._stopping.is_set() else deadline - time.monotonic()
            try:
                message = self._inbox.get(timeout=wait) if wait > 0 else self._inbox.get_nowait()
            except queue.Empty:
                break
            self._convert(message, batch)
        return batch

    def _convert(self, message: Received, batch: Batch) -> None:
        """``message`` into ``batch`` (collector/convert.py), and a warning for a jump in its agent's seq."""
        gaps = len(batch.gaps)
        self.converter.convert(message, batch)
        for agent, last, seq in batch.gaps[gaps:]:
            with self._stats_lock:
                self._stats.seq_gaps += 1
                by_agent = self._stats.seq_gaps_by_agent
                by_agent[agent] = by_agent.get(agent, 0) + 1
            log.warning(
                "collector %s: agent %s skipped seq %d..%d (%d message(s) missing)",
                self.client_id,
                agent,
                last + 1,
                seq - 1,
                seq - last - 1,
            )

    # -- writer threads --

    def _write_loop(self) -> None:
        while (batch := self._batches.get()) is not None:
            self._store_batch(batch)

    def _store_batch(self, batch: Batch) -> None:
        self._done_with(self._writer.store(batch))

    def _done_with(self, outcome: Outcome) -> None:
        """Finish the batches that are done in order: ``outcome``'s, once every batch before it is."""
        self._in_order.done(outcome.batch.number, outcome)

    def _finish(self, outcome: Outcome) -> None:
        """Acknowledge a written batch's messages and count it, or leave them to the broker."""
        batch = outcome.batch
        if outcome.written:
            self._acknowledge(batch.messages)
        self._release(len(batch.messages))
        if not outcome.written:
            return
        if self.acks and batch.seqs and self._acks_may_go():
            self._confirm(batch.seqs)
        reasons = Counter(point.tags["reason"] for point in outcome.dead)
        with self._stats_lock:
            self._stats.messages += len(batch.messages)
            self._stats.points += outcome.stored
            self._stats.batches += 1
            self._stats.dead_letters += len(outcome.dead)
            by_reason = self._stats.dead_letters_by_reason
            for reason, count in reasons.items():
                by_reason[reason] = by_reason.get(reason, 0) + count

    def _count_retry(self) -> None:
        with self._stats_lock:
            self._stats.store_retries += 1

    def _observe_write(self, seconds: float) -> None:
        with self._stats_lock:
            self._write_seconds.observe(seconds)

    def _release(self, count: int) -> None:
        """The writer is done with the ``count`` oldest messages (acknowledged or left to the broker)."""
        for _ in range(min(count, len(self._unacked))):
            self._unacked.popleft()
        self._room.release(count)

    def _acknowledge(self, batch: Sequence[Received]) -> None:
        for message in batch:
            if message.qos == 0:
                continue
            if message.connection != self._connection:
                continue  # received on an earlier connection: the broker sends it again on this one
            self._client.ack(message.mid, message.qos)

    def _acks_may_go(self) -> bool:
        """True once the broker accepted the probe; waits a moment for its answer if it is under way."""
        if self._ack_probe_mid is not None:
            self._acks_allowed.wait(ACK_PROBE_WAIT_S)
        return self._acks_allowed.is_set()

    def _confirm(self, seqs: list[tuple[str, int]]) -> None:
        """Tell each agent which of its batches are stored now (its ``ack`` channel, QoS 1)."""
        with self._stats_lock:
            self._stats.confirmed += len(seqs)
        for topic, payload in agent_acks(seqs):
            self._client.publish(topic, payload, qos=1)


_CONFIG_SUFFIX = "/" + wire.Channel.CONFIG.value  # an agent's config topic ends so (config/state does not)


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


__all__ = ["BrokerAddress", "Collector", "CollectorStats", "TlsFiles"]
