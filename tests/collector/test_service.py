"""The collector against real Mosquitto and real stores: stored once, dead-lettered, never lost."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
from paho.mqtt.enums import MQTTErrorCode

from citygw.contract import wire
from collector.convert import MAX_PAYLOAD_BYTES
from collector.dead_letter import DEAD_LETTER, Reason
from collector.service import BrokerAddress, Collector
from collector.store import Point, Store
from collector.store.influx_v1 import InfluxV1Store
from collector.store.sqlite import SqliteStore
from tests.collector.helpers import Agent, expected_rows, fast, now_ms, started, stored, wait_until
from tests.services import InfluxDB, Mosquitto

pytestmark = pytest.mark.integration


def test_valid_batches_are_stored_exactly(mosquitto: Mosquitto, agent: Agent, store: Store) -> None:
    with started(fast(mosquitto, store)) as collector:
        for _ in range(20):
            agent.publish(agent.batch(count=5))
        wait_until(lambda: collector.stats.messages == 20, "20 messages")

        assert stored(store) == expected_rows(agent, range(20), 5)
        stats = collector.stats
        assert (stats.points, stats.dead_letters, stats.seq_gaps, stats.store_retries) == (100, 0, 0, 0)
        assert stored(store, DEAD_LETTER) == []


def test_invalid_payloads_become_dead_letters_and_valid_ones_in_between_are_stored(
    mosquitto: Mosquitto, agent: Agent, tmp_path: Path
) -> None:
    store = SqliteStore(tmp_path / "telemetry.sqlite")
    good = agent.readings(0, 1)[0].model_copy(update={"device": "meter-extra"})
    nan_payload = (
        b'{"schema": 1, "agent": "agent-1", "seq": 99, "readings": [{"device": "d", "measurement": "m", '
        b'"ts": 1700000000000, "fields": {"x": NaN}}]}'
    )
    future = good.model_copy(update={"ts": now_ms() + 11 * 60_000})
    ancient = good.model_copy(update={"ts": 946_684_799_999})
    reserved = good.model_copy(update={"tags": {"device": "spoofed"}})
    bad: list[tuple[bytes, str, str, str]] = [
        (b'{"schema": 1, "agent": "agent-1", "seq": ', "agent-1", Reason.INVALID_JSON, "Invalid JSON"),
        (agent.batch(count=2), "agent-2", Reason.AGENT_MISMATCH, "differs from topic agent"),
        (nan_payload, "agent-1", Reason.SCHEMA, "finite"),
        (
            b'{"schema": 1, "agent": "agent-1", "seq": 9, "readings": []}',
            "agent-1",
            Reason.SCHEMA,
            "readings",
        ),
        (
            wire.encode(wire.TelemetryBatch(agent="agent-1", seq=agent.seq, readings=[future, good])),
            "agent-1",
            Reason.TIMESTAMP,
            "outside",
        ),
        (
            wire.encode(wire.TelemetryBatch(agent="agent-1", seq=agent.seq + 1, readings=[ancient])),
            "agent-1",
            Reason.TIMESTAMP,
            "outside",
        ),
        (
            wire.encode(wire.TelemetryBatch(agent="agent-1", seq=agent.seq + 2, readings=[reserved])),
            "agent-1",
            Reason.SCHEMA,
            "reserved",
        ),
        (b"x" * (MAX_PAYLOAD_BYTES + 1), "agent-1", Reason.TOO_LARGE, "exceeds"),
    ]
    agent.seq += 3
    valid_seqs = []
    with started(fast(mosquitto, store)) as collector:
        for payload, topic_agent, _, _ in bad:
            valid_seqs.append(agent.seq)
            agent.publish(agent.batch(count=2))
            agent.publish(payload, agent_id=topic_agent)
        wait_until(lambda: collector.stats.messages == 2 * len(bad), "every message")

        letters = stored(store, DEAD_LETTER)
        assert [(r.tags["reason"], r.tags["agent"]) for r in letters] == [
            (reason, a) for _, a, reason, _ in bad
        ]
        for row, (payload, topic_agent, _, error) in zip(letters, bad, strict=True):
            assert error in str(row.values["error"])
            assert row.values["topic"] == f"citygw/v1/{topic_agent}/telemetry"
            assert row.tags["collector"] == "citygw-collector"
            if row.tags["reason"] in (Reason.INVALID_JSON, Reason.TOO_LARGE, Reason.AGENT_MISMATCH):
                assert row.values["payload"] == payload[:4096].decode()
        assert len({r.ts_ms for r in letters}) == len(bad)
        # The good reading next to the future one is kept; only the bad reading is dead-lettered.
        rows = stored(store)
        assert len(rows) == 2 * len(bad) + 1
        assert {row.values["seq"] for row in rows} >= set(valid_seqs)
        assert collector.stats.dead_letters == len(bad)
        assert collector.stats.points == 2 * len(bad) + 1
    store.close()


def test_points_the_store_refuses_are_dead_lettered_and_the_rest_stored(
    mosquitto: Mosquitto, agent: Agent, store: Store
) -> None:
    fields = {"kwh": 2.5, "note": 1.5}
    conflicting = agent.readings(1, 1)[0].model_copy(update={"fields": fields, "ts": agent.t0 + 5})
    with started(fast(mosquitto, store)) as collector:
        agent.publish(agent.batch(count=2))
        wait_until(lambda: collector.stats.messages == 1, "first message")
        # Another writer makes "note" a string: the collector, which checks the types it knows
        # (collector/field_types.py), cannot know it; the store refuses the float.
        store.write([Point("electricity", {"agent": "other", "device": "x"}, agent.t0 + 1, {"note": "lots"})])
        payload = wire.TelemetryBatch(
            agent="agent-1", seq=agent.seq, readings=[*agent.readings(7, 2), conflicting]
        )
        agent.publish(wire.encode(payload))
        wait_until(lambda: collector.stats.messages == 2, "second message")

        (letter,) = stored(store, DEAD_LETTER)
        assert letter.tags["reason"] == Reason.REJECTED_BY_STORE
        assert "conflict" in str(letter.values["error"])
        assert '"note":1.5' in str(letter.values["payload"])
        assert len(stored(store)) == 5  # 4 of the agent's, 1 of the other writer
        assert (collector.stats.points, collector.stats.dead_letters) == (4, 1)


def test_store_down_acknowledges_nothing_and_after_restart_every_reading_is_stored_once(
    mosquitto: Mosquitto, agent: Agent, tmp_path: Path
) -> None:
    influxdb = InfluxDB(tmp_path / "influxdb")
    influxdb.start()
    try:
        store = InfluxV1Store(influxdb.url, "city")
        store.ensure_database()
        with started(fast(mosquitto, store)) as collector:
            agent.publish(agent.batch(count=4))
            wait_until(lambda: collector.stats.messages == 1, "first message")

            influxdb.kill()
            for _ in range(30):
                agent.publish(agent.batch(count=4))
            wait_until(lambda: collector.stats.store_retries >= 3, "retries")
            assert collector.stats.messages == 1, "nothing may be acknowledged while the store is down"

            influxdb.start()
            wait_until(lambda: collector.stats.messages == 31, "every message after the restart")
            assert stored(store) == expected_rows(agent, range(31), 4)
            result = influxdb.query('SELECT count("kwh") FROM "electricity"', "city")
            assert result["results"][0]["series"][0]["values"][0][1] == 31 * 4  # type: ignore[index]
        store.close()
    finally:
        influxdb.stop()


def test_unacknowledged_messages_come_back_to_the_next_collector_with_the_same_id(
    mosquitto: Mosquitto, agent: Agent, tmp_path: Path
) -> None:
    """The store stays down until the collector stops: the broker must keep and resend it all."""
    influxdb = InfluxDB(tmp_path / "influxdb")
    influxdb.start()
    try:
        store = InfluxV1Store(influxdb.url, "city")
        store.ensure_database()
        influxdb.stop()
        first = started(fast(mosquitto, store))
        for _ in range(10):
            agent.publish(agent.batch(count=2))
        wait_until(lambda: first.stats.store_retries >= 2, "retries")
        first.stop(timeout=5)
        assert first.stats.messages == 0

        influxdb.start()
        with started(fast(mosquitto, store)) as second:
            wait_until(lambda: second.stats.messages >= 10, "the redelivered messages")
            assert stored(store) == expected_rows(agent, range(10), 2)
        store.close()
    finally:
        influxdb.stop()


def test_collector_restarted_while_agents_publish_loses_nothing(
    mosquitto: Mosquitto, agent: Agent, tmp_path: Path
) -> None:
    store = SqliteStore(tmp_path / "telemetry.sqlite")
    total = 150
    published = threading.Event()
    halfway = threading.Event()

    def publish_all() -> None:
        for i in range(total):
            agent.publish(agent.batch(count=2))
            if i == total // 3:
                halfway.set()
            time.sleep(0.002)
        published.set()

    first = started(fast(mosquitto, store))
    publisher = threading.Thread(target=publish_all)
    publisher.start()
    assert halfway.wait(10)
    first.stop()
    time.sleep(0.1)  # agents keep publishing while no collector is connected
    second = started(fast(mosquitto, store))
    publisher.join(30)
    assert published.is_set()
    try:
        wait_until(lambda: len(stored(store)) == total * 2, "every reading")
        assert stored(store) == expected_rows(agent, range(total), 2)
        assert first.stats.messages + second.stats.messages >= total
        assert 0 < first.stats.messages < total
        assert second.stats.seq_gaps == 0
    finally:
        second.stop()
        store.close()


def test_collector_reconnects_after_the_broker_restarts(mosquitto: Mosquitto, tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "telemetry.sqlite")
    with started(fast(mosquitto, store)) as collector:
        mosquitto.restart()
        wait_until(lambda: not collector.subscribed, "the collector to notice the restart")
        wait_until(lambda: collector.subscribed, "the collector to subscribe again", timeout=15)
        agent = Agent(mosquitto)
        try:
            agent.publish(agent.batch(count=1))
            wait_until(
                lambda: collector.stats.messages == 1, "a message after the broker restart", timeout=15
            )
        finally:
            agent.close()
    assert len(stored(store)) == 1
    store.close()


def test_a_sequence_jump_counts_as_a_gap_but_redelivery_and_restart_do_not(
    mosquitto: Mosquitto, agent: Agent, tmp_path: Path
) -> None:
    store = SqliteStore(tmp_path / "telemetry.sqlite")
    with started(fast(mosquitto, store)) as collector:
        for seq in (0, 1, 2, 5, 5, 3, 6, 0, 1, 9):
            agent.publish(agent.batch(count=1, seq=seq))
        wait_until(lambda: collector.stats.messages == 10, "every message")
        assert collector.stats.seq_gaps == 2  # 2 -> 5 and 1 -> 9
    store.close()


def test_batches_respect_batch_max_points(mosquitto: Mosquitto, agent: Agent, tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "telemetry.sqlite")
    collector = Collector(mosquitto.url, store, batch_max_points=10, batch_max_seconds=5)
    with started(collector):
        for _ in range(6):
            agent.publish(agent.batch(count=5))
        wait_until(lambda: collector.stats.messages == 6, "every message", timeout=3)
        assert collector.stats.batches == 3
    store.close()


class FirstWriteWaits:
    """A SQLite store whose first write waits until a later write has returned (and a little
    more), noting then what ``observe()`` says: writes overlap and finish out of order."""

    def __init__(self, path: Path, observe: Callable[[], object]) -> None:
        self.store = SqliteStore(path)
        self.observe = observe
        self.first_started = threading.Event()
        self.later_done = threading.Event()
        self.seen_while_first_waited: object = None
        self._calls = 0
        self._lock = threading.Lock()

    def write(self, points: Sequence[Point]) -> None:
        with self._lock:
            self._calls += 1
            first = self._calls == 1
        if not first:
            self.store.write(points)
            self.later_done.set()
            return
        self.first_started.set()
        assert self.later_done.wait(10), "no second write while the first one was busy"
        time.sleep(0.3)  # time for the later batch's PUBACKs, were they not held back
        self.seen_while_first_waited = self.observe()
        self.store.write(points)

    def close(self) -> None:
        self.store.close()


def test_batches_are_written_at_once_and_acknowledged_in_arrival_order(
    mosquitto: Mosquitto, agent: Agent, tmp_path: Path
) -> None:
    """Two writers: the second batch is written while the first waits, but its PUBACK waits for the
    first's (MQTT wants them in the order the PUBLISHes came; the broker's message ids rise)."""
    acked: list[int] = []
    store = FirstWriteWaits(tmp_path / "telemetry.sqlite", lambda: (list(acked), collector.stats.messages))
    collector = fast(mosquitto, store, batch_max_points=5, store_writers=2)
    ack = collector._client.ack

    def recording_ack(mid: int, qos: int) -> MQTTErrorCode:
        acked.append(mid)
        return ack(mid, qos)

    collector._client.ack = recording_ack  # type: ignore[method-assign]
    with started(collector):
        agent.publish(agent.batch(count=5))
        assert store.first_started.wait(5), "the first batch was not written"
        agent.publish(agent.batch(count=5))
        agent.publish(agent.batch(count=5))
        wait_until(lambda: collector.stats.messages == 3, "every message")

        assert store.seen_while_first_waited == ([], 0), "a later batch was acknowledged first"
        assert len(acked) == 3
        assert acked == sorted(acked), "PUBACKs out of arrival order"
        assert stored(store.store) == expected_rows(agent, range(3), 5)
        assert (collector.stats.points, collector.stats.batches) == (15, 3)
    store.close()


def test_broker_address_parsing() -> None:
    assert BrokerAddress.parse("mqtt://broker.city:1884") == BrokerAddress("broker.city", 1884)
    assert BrokerAddress.parse("mqtts://collector:s%3Acret@broker.city") == BrokerAddress(
        "broker.city", 8883, tls=True, username="collector", password="s:cret"
    )
    for bad in ("http://broker:1883", "mqtt://:1883", "mqtt://broker:port", "mqtt://broker:1883/x"):
        with pytest.raises(ValueError, match="expected mqtt://"):
            BrokerAddress.parse(bad)


def test_points_carry_device_and_agent_tags(mosquitto: Mosquitto, agent: Agent, tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "telemetry.sqlite")
    with started(fast(mosquitto, store)) as collector:
        agent.publish(agent.batch(count=1))
        wait_until(lambda: collector.stats.messages == 1, "the message")
    (point,) = store.latest()
    assert point == Point(
        "electricity",
        {"agent": "agent-1", "device": "meter-0", "site": "depot north"},
        agent.t0,
        {"kwh": 0.0, "seq": 0, "ok": True},
    )
    store.close()


EXTREME_FIELDS: dict[str, wire.FieldValue] = {
    "whole": 5.0,
    "big": 1e16,
    "huge": 1.7976931348623157e308,
    "tiny": 1e-7,
    "subnormal": 5e-324,
    "negative": -2.5e-300,
    "inexact": 0.1 + 0.2,
    "zero": -0.0,
    "int_min": -(2**63),
    "int_max": 2**63 - 1,
    "flag": False,
}


def test_extreme_numbers_are_stored_exactly(mosquitto: Mosquitto, agent: Agent, store: Store) -> None:
    """Every float as its shortest round-trip text (1e16, 5e-324 ...), every int64, both in one message."""
    readings = [
        wire.Reading(device="meter-x", measurement="electricity", ts=agent.t0 + n, fields=EXTREME_FIELDS)
        for n in range(3)
    ]
    with started(fast(mosquitto, store)) as collector:
        agent.publish(wire.encode(wire.TelemetryBatch(agent=agent.agent_id, seq=0, readings=readings)))
        wait_until(lambda: collector.stats.messages == 1, "the message")
        assert collector.stats.dead_letters == 0
    rows = stored(store)
    assert [row.ts_ms for row in rows] == [agent.t0 + n for n in range(3)]
    for row in rows:
        assert row.values == EXTREME_FIELDS
        assert all(type(row.values[name]) is type(value) for name, value in EXTREME_FIELDS.items())


def test_a_message_the_converter_fails_on_is_a_dead_letter_and_the_collector_goes_on(
    mosquitto: Mosquitto, agent: Agent, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bug in converting one message (here: health points that raise) must not end the converter
    thread, which would leave the collector subscribed and storing nothing."""
    import collector.convert

    def broken(*args: object) -> list[Point]:
        raise OverflowError("a bug")

    monkeypatch.setattr(collector.convert, "health_points", broken)
    store = SqliteStore(tmp_path / "telemetry.sqlite")
    health = wire.Health(
        agent="agent-1", ts=now_ms(), devices={}, journal=wire.JournalHealth(backlog=0, dropped=0)
    )
    with started(fast(mosquitto, store)) as running:
        agent.publish(agent.batch(count=2))
        agent.client.publish(
            wire.topic("agent-1", wire.Channel.HEALTH), wire.encode(health), qos=1
        ).wait_for_publish(5)
        agent.publish(agent.batch(count=2))
        wait_until(lambda: running.stats.messages == 3, "every message")
        assert stored(store) == expected_rows(agent, range(2), 2)
        (letter,) = stored(store, DEAD_LETTER)
        assert letter.tags["reason"] == Reason.COLLECTOR_ERROR
        assert "OverflowError('a bug')" in str(letter.values["error"])
    store.close()
