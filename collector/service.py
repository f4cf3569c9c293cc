"""The collector: MQTT telemetry in, validated points out to the store, acknowledged only once stored.

paho-mqtt runs the network loop in its own thread and queues every message; one writer thread
batches, validates and writes them, then sends the PUBACKs (manual ack). While the store is
down nothing is acknowledged, so the broker keeps the messages (persistent session) and stops
sending beyond the in-flight window: backpressure instead of loss.

Bounded memory: the collector speaks MQTT v5 and announces ``inflight_window`` as its Receive
Maximum, so the broker never has more than that many unacknowledged messages out to it; the
inbox therefore holds at most ``inflight_window`` messages of at most ``MAX_PAYLOAD_BYTES``
(in practice a few hundred readings each). Everything else waits in the broker's session.

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

import json
import logging
import queue
import random
import threading
import time
from collections import Counter, deque
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from types import TracebackType
from typing import Any
from urllib.parse import unquote, urlsplit

from paho.mqtt.client import Client, ConnectFlags, DisconnectFlags, MQTTMessage
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from pydantic import ValidationError

from citygw import wire
from collector.metrics import Exposition, Histogram, MetricsServer
from collector.store.base import Point, PointsRejected, PointWriter, StoreUnavailable

log = logging.getLogger(__name__)

DEAD_LETTER = "dead_letter"
MAX_PAYLOAD_BYTES = 1024 * 1024
DEAD_LETTER_PAYLOAD_BYTES = 4096
EARLIEST_TS_MS = int(datetime(2000, 1, 1, tzinfo=UTC).timestamp() * 1000)
MAX_FUTURE_MS = 10 * 60 * 1000
SESSION_NEVER_EXPIRES = 0xFFFFFFFF


class Reason:
    """Short codes of the dead-letter ``reason`` tag."""

    INVALID_JSON = "invalid_json"
    SCHEMA = "schema"
    AGENT_MISMATCH = "agent_mismatch"
    TIMESTAMP = "timestamp"
    TOO_LARGE = "too_large"
    TOPIC = "topic"
    REJECTED_BY_STORE = "rejected_by_store"


@dataclass(slots=True)
class CollectorStats:
    """Counters since start: messages acknowledged, points stored, batches written, and trouble."""

    messages: int = 0
    points: int = 0
    batches: int = 0
    dead_letters: int = 0
    store_retries: int = 0
    seq_gaps: int = 0
    dead_letters_by_reason: dict[str, int] = field(default_factory=dict)
    seq_gaps_by_agent: dict[str, int] = field(default_factory=dict)

    def copy(self) -> CollectorStats:
        return replace(
            self,
            dead_letters_by_reason=dict(self.dead_letters_by_reason),
            seq_gaps_by_agent=dict(self.seq_gaps_by_agent),
        )


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
class _Received:
    topic: str
    payload: bytes
    mid: int
    qos: int
    received_ms: int
    connection: int


class Collector:
    """Subscribes to every agent's telemetry and writes it to ``store``, at least once.

    With ``share_group`` several collectors share the load (MQTT shared subscription); each then
    sees only part of an agent's sequence, so gap detection is off.

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
        metrics_port: int | None = None,
        metrics_host: str = "127.0.0.1",
        mqtt_v5: bool = True,
    ) -> None:
        self.broker = BrokerAddress.parse(broker_url)
        # MQTT 3.1.1 only for brokers that lack v5 (the demo's embedded amqtt): the in-flight
        # window is then the broker's own setting (Mosquitto: max_inflight_messages).
        self.mqtt_v5 = mqtt_v5
        self.client_id = client_id
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
        self._store = store
        self._subscription = wire.subscription(wire.Channel.TELEMETRY, share_group=share_group)
        self._inbox: queue.SimpleQueue[_Received] = queue.SimpleQueue()
        self._stats = CollectorStats()
        self._stats_lock = threading.Lock()
        self._write_seconds = Histogram()
        # Receive times (ms) of the messages taken in but not yet acknowledged, oldest first: the
        # writer handles messages in arrival order, so the head is the oldest unacknowledged one.
        self._unacked: deque[int] = deque()
        self.metrics_port = metrics_port
        self.metrics_host = metrics_host
        self._metrics_server: MetricsServer | None = None
        self._stopping = threading.Event()
        self._subscribed = threading.Event()
        self._connection = 0  # bumped on every CONNACK: acks are only valid on the connection that got them
        self._last_seq: dict[str, int] = {}
        self._last_dead_letter_ms = 0
        self._writer: threading.Thread | None = None
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
        if self.broker.tls:
            client.tls_set()
        client.reconnect_delay_set(min_delay=1, max_delay=10)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_message
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
        prefix = "citygw_collector_"
        out = Exposition()
        out.single(
            f"{prefix}messages",
            "counter",
            "Messages stored (or dead-lettered) and acknowledged.",
            stats.messages,
        )
        out.single(f"{prefix}points", "counter", "Points written to the store.", stats.points)
        out.single(f"{prefix}batches", "counter", "Batches written to the store.", stats.batches)
        out.single(
            f"{prefix}store_retries", "counter", "Store writes retried after a failure.", stats.store_retries
        )
        out.family(
            f"{prefix}dead_letters",
            "counter",
            "Payloads or readings sent to the dead-letter store, by reason.",
            [({"reason": reason}, count) for reason, count in sorted(stats.dead_letters_by_reason.items())],
        )
        out.family(
            f"{prefix}seq_gaps",
            "counter",
            "Jumps in an agent's message sequence (lost messages upstream), by agent.",
            [({"agent": agent}, count) for agent, count in sorted(stats.seq_gaps_by_agent.items())],
        )
        out.histogram(f"{prefix}write_seconds", "Duration of each store write call.", write_seconds)
        out.single(
            f"{prefix}lag_seconds",
            "gauge",
            "Now minus the receive time of the oldest unacknowledged message.",
            self.lag_seconds(),
        )
        out.single(
            f"{prefix}inbox_messages",
            "gauge",
            "Messages received and waiting for the writer.",
            self._inbox.qsize(),
        )
        out.single(
            f"{prefix}unacked_messages",
            "gauge",
            "Messages received and not yet acknowledged.",
            len(self._unacked),
        )
        out.single(
            f"{prefix}subscribed",
            "gauge",
            "1 while connected with the subscription confirmed.",
            int(self.subscribed),
        )
        return out.text()

    def start(self) -> None:
        """Connect (retrying in the background until the broker answers) and start the writer; idempotent."""
        if self._writer is not None:
            return
        self._stopping.clear()
        self._unacked.clear()
        if self.metrics_port is not None and self._metrics_server is None:
            self._metrics_server = MetricsServer(
                self.metrics_text, host=self.metrics_host, port=self.metrics_port
            )
            self._metrics_server.start()
        self._writer = threading.Thread(target=self._write_loop, name=f"{self.client_id}-writer", daemon=True)
        self._writer.start()
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
        """Connected, with the telemetry subscription confirmed by the broker."""
        return self._subscribed.is_set()

    def wait_subscribed(self, timeout: float = 10.0) -> bool:
        """True once the broker confirmed the subscription (then nothing published is missed)."""
        return self._subscribed.wait(timeout)

    def stop(self, timeout: float = 10.0) -> None:
        """Store and acknowledge what is already queued (unless the store is down), then disconnect.

        Whatever is not acknowledged stays in the broker's session for the next start.
        """
        self._stopping.set()
        if self._writer is not None:
            self._writer.join(timeout)
            if self._writer.is_alive():
                log.warning("collector %s: writer still busy after %.0f s; leaving", self.client_id, timeout)
            self._writer = None
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
        log.info(
            "collector %s: connected to %s:%d (session present: %s)",
            self.client_id,
            self.broker.host,
            self.broker.port,
            flags.session_present,
        )
        client.subscribe(self._subscription, qos=1)

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
        if any(code.is_failure for code in reason_codes):
            log.error(
                "collector %s: subscription to %s refused: %s",
                self.client_id,
                self._subscription,
                reason_codes,
            )
            return
        log.info("collector %s: subscribed to %s", self.client_id, self._subscription)
        self._subscribed.set()

    def _on_message(self, client: Client, userdata: Any, message: MQTTMessage) -> None:
        if self._stopping.is_set():
            return  # not acknowledged: the broker sends it again in the next session
        received_ms = _now_ms()
        self._unacked.append(received_ms)
        self._inbox.put(
            _Received(
                message.topic, bytes(message.payload), message.mid, message.qos, received_ms, self._connection
            )
        )

    # -- writer thread --

    def _write_loop(self) -> None:
        while True:
            batch = self._next_batch()
            if batch:
                self._store_batch(batch)
            elif self._stopping.is_set():
                return

    def _next_batch(self) -> list[tuple[_Received, list[Point], list[Point]]]:
        """Validated messages until batch_max_points points, inflight_window messages (no more can come
        before an acknowledgement) or batch_max_seconds after the first one."""
        try:
            first = self._inbox.get(timeout=0.1)
        except queue.Empty:
            return []
        batch = [(first, *self._convert(first))]
        size = len(batch[0][1]) + len(batch[0][2])
        deadline = time.monotonic() + self.batch_max_seconds
        while size < self.batch_max_points and len(batch) < self.inflight_window:
            # Stopping: take only what is already queued.
            wait = 0.0 if self._stopping.is_set() else deadline - time.monotonic()
            try:
                message = self._inbox.get(timeout=wait) if wait > 0 else self._inbox.get_nowait()
            except queue.Empty:
                break
            good, bad = self._convert(message)
            batch.append((message, good, bad))
            size += len(good) + len(bad)
        return batch

    def _store_batch(self, converted: list[tuple[_Received, list[Point], list[Point]]]) -> None:
        batch = [message for message, _, _ in converted]
        points: list[Point] = []
        dead: list[Point] = []
        origin: dict[int, _Received] = {}
        for message, good, bad in converted:
            for point in good:
                origin[id(point)] = message
            points += good
            dead += bad
        stored = len(points)
        pending = points + dead
        attempt = 0
        while pending:
            started = time.perf_counter()
            try:
                self._store.write(pending)
                self._observe_write(time.perf_counter() - started)
                break
            except PointsRejected as exc:
                self._observe_write(time.perf_counter() - started)
                # The store wrote everything else; dead-letter what it refused (once: a refused
                # dead letter cannot be dead-lettered again).
                pending = []
                for point, reason in exc.rejected:
                    source = origin.get(id(point))
                    if source is None:
                        log.error(
                            "collector %s: store refused a dead letter: %s (%s)",
                            self.client_id,
                            reason,
                            point,
                        )
                        dead.remove(point)
                        continue
                    stored -= 1
                    pending.append(
                        self._dead_letter(
                            source,
                            Reason.REJECTED_BY_STORE,
                            reason,
                            _point_json(point),
                            agent=point.tags.get("agent"),
                        )
                    )
                dead += pending
                log.warning(
                    "collector %s: store refused %d point(s): %s", self.client_id, len(exc.rejected), exc
                )
            except Exception as exc:
                # StoreUnavailable, or anything unexpected: keep the batch, acknowledge nothing, retry.
                self._observe_write(time.perf_counter() - started)
                if self._stopping.is_set():
                    log.warning(
                        "collector %s: stopping with %d unstored message(s): %s",
                        self.client_id,
                        len(batch),
                        exc,
                    )
                    self._forget(len(batch))  # left to the broker's session
                    return
                delay = retry_delay(attempt, self.retry_initial_seconds, self.retry_max_seconds)
                attempt += 1
                with self._stats_lock:
                    self._stats.store_retries += 1
                if isinstance(exc, StoreUnavailable):
                    log.warning(
                        "collector %s: store unavailable, retry %d in %.1f s: %s",
                        self.client_id,
                        attempt,
                        delay,
                        exc,
                    )
                else:
                    log.exception(
                        "collector %s: write failed, retry %d in %.1f s", self.client_id, attempt, delay
                    )
                self._stopping.wait(delay)
        self._acknowledge(batch)
        self._forget(len(batch))
        reasons = Counter(point.tags["reason"] for point in dead)
        with self._stats_lock:
            self._stats.messages += len(batch)
            self._stats.points += stored
            self._stats.batches += 1
            self._stats.dead_letters += len(dead)
            by_reason = self._stats.dead_letters_by_reason
            for reason, count in reasons.items():
                by_reason[reason] = by_reason.get(reason, 0) + count

    def _observe_write(self, seconds: float) -> None:
        with self._stats_lock:
            self._write_seconds.observe(seconds)

    def _forget(self, count: int) -> None:
        """Drop the receive times of the ``count`` oldest messages (acknowledged or given up)."""
        for _ in range(min(count, len(self._unacked))):
            self._unacked.popleft()

    def _acknowledge(self, batch: Sequence[_Received]) -> None:
        for message in batch:
            if message.qos == 0:
                continue
            if message.connection != self._connection:
                continue  # received on an earlier connection: the broker sends it again on this one
            self._client.ack(message.mid, message.qos)

    def _convert(self, message: _Received) -> tuple[list[Point], list[Point]]:
        """(points to store, dead letters) for one message."""
        parsed = wire.parse_topic(message.topic)
        topic_agent = parsed[0] if parsed else None
        if len(message.payload) > MAX_PAYLOAD_BYTES:
            error = f"payload of {len(message.payload)} bytes exceeds {MAX_PAYLOAD_BYTES}"
            return [], [self._dead_letter(message, Reason.TOO_LARGE, error, agent=topic_agent)]
        if parsed is None or parsed[1] is not wire.Channel.TELEMETRY:
            error = f"not a telemetry topic: {message.topic}"
            return [], [self._dead_letter(message, Reason.TOPIC, error, agent=topic_agent)]
        try:
            batch = wire.TelemetryBatch.model_validate_json(message.payload)
        except ValidationError as exc:
            errors = exc.errors(include_url=False)
            if any(error["type"] == "json_invalid" for error in errors):
                reason = Reason.INVALID_JSON
            else:
                reason = Reason.SCHEMA
            return [], [self._dead_letter(message, reason, _describe(exc), agent=topic_agent)]
        if batch.agent != topic_agent:
            error = f"payload agent {batch.agent!r} differs from topic agent {topic_agent!r}"
            return [], [self._dead_letter(message, Reason.AGENT_MISMATCH, error, agent=topic_agent)]
        self._check_sequence(batch.agent, batch.seq)
        points: list[Point] = []
        dead: list[Point] = []
        latest_ok = message.received_ms + MAX_FUTURE_MS
        for index, reading in enumerate(batch.readings):
            if not _RESERVED_TAGS.isdisjoint(reading.tags):
                reserved = sorted(_RESERVED_TAGS.intersection(reading.tags))
                error = f"reading {index}: tag(s) {reserved} are reserved for the collector"
                dead.append(
                    self._dead_letter(message, Reason.SCHEMA, error, wire.encode(reading), agent=batch.agent)
                )
            elif not EARLIEST_TS_MS <= reading.ts <= latest_ok:
                error = (
                    f"reading {index}: ts {reading.ts} is outside [2000-01-01, receive time + 10 min] "
                    f"(received at {message.received_ms})"
                )
                dead.append(
                    self._dead_letter(
                        message, Reason.TIMESTAMP, error, wire.encode(reading), agent=batch.agent
                    )
                )
            elif (too_big := _first_out_of_int64(reading.fields)) is not None:
                error = f"reading {index}: field {too_big!r} is an integer outside the 64-bit range"
                dead.append(
                    self._dead_letter(message, Reason.SCHEMA, error, wire.encode(reading), agent=batch.agent)
                )
            else:
                tags = {**reading.tags, "device": reading.device, "agent": batch.agent}
                points.append(Point(reading.measurement, tags, reading.ts, reading.fields))
        return points, dead

    def _check_sequence(self, agent: str, seq: int) -> None:
        if self.share_group is not None:
            return
        last = self._last_seq.get(agent)
        if last is not None and seq > last + 1:
            with self._stats_lock:
                self._stats.seq_gaps += 1
                gaps = self._stats.seq_gaps_by_agent
                gaps[agent] = gaps.get(agent, 0) + 1
            log.warning(
                "collector %s: agent %s skipped seq %d..%d (%d message(s) missing)",
                self.client_id,
                agent,
                last + 1,
                seq - 1,
                seq - last - 1,
            )
        # A lower or equal seq is a redelivery (keep the high mark) or, at 0, an agent starting over.
        if last is None or seq > last or seq == 0:
            self._last_seq[agent] = seq

    def _dead_letter(
        self, message: _Received, reason: str, error: str, payload: bytes | None = None, *, agent: str | None
    ) -> Point:
        # Unique per collector (the collector tag makes it unique across collectors too).
        ts = max(message.received_ms, self._last_dead_letter_ms + 1)
        self._last_dead_letter_ms = ts
        body = message.payload if payload is None else payload
        log.warning(
            "collector %s: dead letter (%s) from %s: %s", self.client_id, reason, message.topic, error
        )
        return Point(
            DEAD_LETTER,
            {"reason": reason, "agent": agent or "unknown", "collector": self.client_id},
            ts,
            {
                "topic": message.topic,
                "error": error[:2000],
                "payload": body[:DEAD_LETTER_PAYLOAD_BYTES].decode(errors="replace"),
            },
        )


def retry_delay(attempt: int, initial: float, maximum: float) -> float:
    """Seconds to wait before retry ``attempt`` (0-based): exponential, capped, with "equal jitter".

    The jitter (a random point in the upper half) keeps collectors that failed together from
    retrying together against a store that is just coming back.
    """
    ceiling = min(maximum, initial * 2 ** min(attempt, 30))
    return random.uniform(ceiling / 2, ceiling)


_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
_RESERVED_TAGS = wire.RESERVED_TAGS


def _first_out_of_int64(fields: dict[str, wire.FieldValue]) -> str | None:
    """The name of the first integer field no store can hold (JSON integers are unbounded)."""
    for name, value in fields.items():
        if type(value) is int and not _INT64_MIN <= value <= _INT64_MAX:
            return name
    return None


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _describe(exc: ValidationError) -> str:
    parts = []
    for error in exc.errors(include_url=False)[:10]:
        location = ".".join(str(item) for item in error["loc"])
        parts.append(f"{location}: {error['msg']}" if location else str(error["msg"]))
    return "; ".join(parts)


def _point_json(point: Point) -> bytes:
    return json.dumps(
        {
            "measurement": point.measurement,
            "tags": dict(point.tags),
            "ts": point.ts_ms,
            "fields": dict(point.fields),
        }
    ).encode()


__all__ = ["DEAD_LETTER", "BrokerAddress", "Collector", "CollectorStats", "Reason", "retry_delay"]
