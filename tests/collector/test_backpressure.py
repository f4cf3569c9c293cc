"""Batching and backpressure: gzip on the wire, backoff with jitter, a bounded in-flight window."""

from __future__ import annotations

import re
import threading
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import pytest

from citygw.contract import wire
from collector.service import Collector
from collector.store import Point, StoreUnavailable
from collector.store.influx_v1 import InfluxV1Store
from collector.store.influx_v2 import InfluxV2Store
from collector.store.line_protocol import to_line_protocol
from collector.store.sqlite import SqliteStore
from collector.store_writes import retry_delay
from tests.collector.helpers import (
    Agent,
    ByteCountingRelay,
    expected_rows,
    fast,
    started,
    stored,
    wait_until,
)
from tests.services import InfluxDB, Mosquitto, VictoriaMetrics

pytestmark = pytest.mark.integration

T0 = 1_700_000_000_000


def compressible_points(count: int) -> list[Point]:
    return [
        Point("electricity", {"device": f"meter-{i % 10}", "agent": "agent-1"}, T0 + i, {"kwh": float(i)})
        for i in range(count)
    ]


def test_writes_to_influxdb_v1_are_gzipped_on_the_wire(influxdb: InfluxDB) -> None:
    points = compressible_points(5000)
    raw = sum(len(to_line_protocol(p)) + 1 for p in points)
    relay = ByteCountingRelay(influxdb.port)
    database = f"gzip_{uuid.uuid4().hex[:8]}"
    influxdb.create_database(database)
    store = InfluxV1Store(f"http://127.0.0.1:{relay.port}", database)
    try:
        store.write(points)
        assert relay.sent < raw / 5, f"{relay.sent} bytes sent for {raw} bytes of line protocol"
        assert len(store.range(measurement="electricity", start_ms=0, end_ms=2**62)) == 5000
    finally:
        store.close()
        relay.close()
        influxdb.query(f'DROP DATABASE "{database}"')


def test_writes_through_the_v2_api_are_gzipped_on_the_wire(victoria_metrics: VictoriaMetrics) -> None:
    points = compressible_points(5000)
    raw = sum(len(to_line_protocol(p)) + 1 for p in points)
    relay = ByteCountingRelay(victoria_metrics.port)
    store = InfluxV2Store(f"http://127.0.0.1:{relay.port}", org="city", bucket="telemetry", token="t")
    try:
        store.write(points)
        assert 0 < relay.sent < raw / 5, f"{relay.sent} bytes sent for {raw} bytes of line protocol"
    finally:
        store.close()
        relay.close()


def test_retry_delays_grow_exponentially_up_to_the_cap_with_jitter() -> None:
    for attempt, ceiling in [(0, 0.5), (1, 1.0), (3, 4.0), (6, 30.0), (10_000, 30.0)]:
        delays = [retry_delay(attempt, 0.5, 30.0) for _ in range(200)]
        assert all(ceiling / 2 <= d <= ceiling for d in delays), (attempt, min(delays), max(delays))
        assert len(set(delays)) > 100, "no jitter"


def test_the_in_flight_window_bounds_what_the_collector_holds_while_the_store_is_down(
    mosquitto: Mosquitto, agent: Agent, influxdb: InfluxDB
) -> None:
    """The database does not exist yet (404: unavailable); the broker keeps all but the window."""
    database = f"window_{uuid.uuid4().hex[:8]}"
    store = InfluxV1Store(influxdb.url, database)
    window = 5
    collector = started(fast(mosquitto, store, inflight_window=window))
    try:
        for _ in range(40):
            agent.publish(agent.batch(count=2))
        wait_until(lambda: collector.stats.store_retries >= 3, "retries")
        time.sleep(0.3)
        text = collector.metrics_text()
        assert f"citygw_collector_unacked_messages {window}" in text.splitlines()
        assert collector.stats.messages == 0

        store.ensure_database()
        wait_until(lambda: collector.stats.messages == 40, "every message once the store is back")
        assert stored(store) == expected_rows(agent, range(40), 2)
        assert collector.stats.batches >= 40 // window
    finally:
        collector.stop()
        store.close()
        influxdb.query(f'DROP DATABASE "{database}"')


def test_a_batch_closes_when_the_in_flight_window_is_full_without_waiting_for_the_timer(
    mosquitto: Mosquitto, agent: Agent, influxdb: InfluxDB
) -> None:
    """One reading per message: no more messages can come before an ack, so waiting is pointless."""
    database = f"window_{uuid.uuid4().hex[:8]}"
    store = InfluxV1Store(influxdb.url, database)
    store.ensure_database()
    collector = started(fast(mosquitto, store, inflight_window=3, batch_max_seconds=30))
    try:
        started_at = time.monotonic()
        for _ in range(6):
            agent.publish(agent.batch(count=1))
        wait_until(lambda: collector.stats.messages == 6, "every message", timeout=5)
        assert time.monotonic() - started_at < 5
        assert collector.stats.batches == 2
    finally:
        collector.stop()
        store.close()
        influxdb.query(f'DROP DATABASE "{database}"')


def test_inflight_window_must_fit_mqtt_receive_maximum(mosquitto: Mosquitto) -> None:
    store = SqliteStore(":memory:")
    for bad in (0, 65536):
        with pytest.raises(ValueError, match="inflight_window"):
            Collector(mosquitto.url, store, inflight_window=bad)
    store.close()


class SlowStore:
    """A real SQLite store that answers each write after ``delay`` seconds, like a loaded database."""

    def __init__(self, store: SqliteStore, delay: float) -> None:
        self.store = store
        self.delay = delay
        self.down = threading.Event()

    def write(self, points: Sequence[Point]) -> None:
        time.sleep(self.delay)
        if self.down.is_set():
            raise StoreUnavailable("down for the test")
        self.store.write(points)

    def close(self) -> None:
        self.store.close()


UNACKED = "citygw_collector_unacked_messages "
_PUBLISH_TO = re.compile(r"Sending PUBLISH to (\S+) \(d\d, q1, r\d, m(\d+),")
_PUBACK_FROM = re.compile(r"Received PUBACK from (\S+) \(Mid: (\d+)")


class Flow(NamedTuple):
    events: list[tuple[str, int]]
    most_held: int
    overruns: int
    stored: int


def flow_through_slow_store(tmp_path: Path, *, messages: int, window: int) -> Flow:
    """Publish ``messages`` to a collector whose store answers slowly. The broker's log of what it sent
    the collector and what the collector acknowledged: ("publish" | "puback", message id), in order;
    the most unacknowledged messages the collector held at once (its gauge, sampled); how often the
    broker sent past the window; rows stored."""
    broker = Mosquitto(tmp_path / "mosquitto", extra_config="log_type debug\n")
    broker.start()
    agent = Agent(broker)
    store = SlowStore(SqliteStore(":memory:"), delay=0.05)
    collector = started(fast(broker, store, inflight_window=window, client_id="slow-store"))
    topic = wire.topic(agent.agent_id, wire.Channel.TELEMETRY)
    held: list[int] = []
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.005):
            gauge = [line for line in collector.metrics_text().splitlines() if line.startswith(UNACKED)]
            held.append(int(float(gauge[0].split()[1])))

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        for info in [agent.client.publish(topic, agent.batch(count=2), qos=1) for _ in range(messages)]:
            info.wait_for_publish(10)
        wait_until(lambda: collector.stats.messages == messages, "every message", timeout=60)
        rows = len(stored(store.store))
        overruns = collector.stats.window_overruns
    finally:
        done.set()
        sampler.join()
        collector.stop()
        agent.close()
        store.close()
        broker.stop()
    events = []
    for line in broker.log_path.read_text().splitlines():
        for kind, pattern in (("publish", _PUBLISH_TO), ("puback", _PUBACK_FROM)):
            if (found := pattern.search(line)) and found[1] == "slow-store":
                events.append((kind, int(found[2])))
    return Flow(events, max(held), overruns, rows)


def test_pubacks_leave_in_the_order_the_publishes_came_through_the_pipeline(tmp_path: Path) -> None:
    events = flow_through_slow_store(tmp_path, messages=60, window=1000).events
    published = [mid for kind, mid in events if kind == "publish"]
    acknowledged = [mid for kind, mid in events if kind == "puback"]
    assert len(published) == 60
    assert acknowledged == published


@pytest.mark.xfail(
    strict=True,
    reason="measured on Mosquitto 2.0.11: once PUBACKs flow it sends beyond the client's Receive Maximum "
    "(81 unacknowledged with a window of 5), so the window bounds the collector's memory only while the "
    "store is down; passing here means the broker now honours it: update collector/README.md",
)
def test_the_broker_keeps_to_the_in_flight_window_while_acknowledgements_flow(tmp_path: Path) -> None:
    unacknowledged = most = 0
    for kind, _ in flow_through_slow_store(tmp_path, messages=100, window=5).events:
        unacknowledged += 1 if kind == "publish" else -1
        most = max(most, unacknowledged)
    assert 0 < most <= 5


def test_the_collector_holds_at_most_its_window_even_when_the_broker_sends_beyond_it(tmp_path: Path) -> None:
    """Mosquitto 2.0 sends beyond the Receive Maximum once PUBACKs flow (the expected failure above):
    the collector then stops reading until it is done with earlier messages, and loses none."""
    flow = flow_through_slow_store(tmp_path, messages=100, window=5)
    assert 0 < flow.most_held <= 5
    assert flow.overruns > 0
    assert flow.stored == 200


def test_a_store_outage_while_the_collector_waits_for_room_loses_nothing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Past the window the MQTT thread waits for room and sends no keepalive: during a store outage the
    broker drops the collector; when the store is back it reconnects and everything is stored once."""
    broker = Mosquitto(tmp_path / "mosquitto")
    broker.start()
    agent = Agent(broker)
    store = SlowStore(SqliteStore(":memory:"), delay=0.05)
    collector = started(fast(broker, store, inflight_window=5, keepalive=1, client_id="waits-for-room"))
    try:
        for _ in range(100):
            agent.publish(agent.batch(count=2))
        wait_until(lambda: collector.stats.window_overruns > 0, "the broker past the window")
        store.down.set()
        # Mosquitto gives up on a silent client after 1.5 keepalives, checked every few seconds.
        time.sleep(10)
        store.down.clear()
        wait_until(lambda: len(stored(store.store)) == 200, "every reading", timeout=60)
        assert stored(store.store) == expected_rows(agent, range(100), 2)
        # The case this test is for: the broker dropped the collector while it waited.
        wait_until(lambda: "waits-for-room: connection lost" in caplog.text, "the dropped connection seen")
    finally:
        collector.stop()
        agent.close()
        store.close()
        broker.stop()
