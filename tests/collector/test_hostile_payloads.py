"""Issue 5, fault test 4: hostile payloads interleaved with valid ones, on real Mosquitto and InfluxDB.

Every valid reading is stored exactly, every hostile message lands in the dead-letter store with
the right reason, nothing leaks into the schema (no new measurement, tag or series), and the
collector keeps going.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator

import pytest

from citygw.contract import wire
from collector.convert import MAX_PAYLOAD_BYTES
from collector.dead_letter import DEAD_LETTER, Reason
from collector.store import Row
from collector.store.influx_v1 import InfluxV1Store
from tests.collector.helpers import END, Agent, expected_rows, fast, now_ms, started, stored, wait_until
from tests.services import InfluxDB, Mosquitto

pytestmark = pytest.mark.integration

TEN_MB = 10 * 1024 * 1024
INJECTIONS = ['x" OR 1=1', "a,b=c d=e", "north\nelectricity,agent=evil kwh=1 1", "a\\", "'; DROP --"]


@pytest.fixture
def influx_store(influxdb: InfluxDB) -> Iterator[InfluxV1Store]:
    database = f"hostile_{uuid.uuid4().hex[:8]}"
    store = InfluxV1Store(influxdb.url, database)
    store.ensure_database()
    yield store
    store.close()
    influxdb.query(f'DROP DATABASE "{database}"')


def batch_json(*, readings: list[dict[str, object]] | None = None, **top: object) -> bytes:
    """A telemetry payload built by hand, so that it can be wrong in any way."""
    reading: dict[str, object] = {
        "device": "meter-0",
        "measurement": "electricity",
        "ts": now_ms() - 1000,
        "fields": {"kwh": 1.5},
        "tags": {"site": "depot north"},
    }
    body: dict[str, object] = {"schema": 1, "agent": "agent-1", "seq": 1_000, "readings": [reading]}
    body.update(top)
    if readings is not None:
        body["readings"] = [reading | r for r in readings]
    return json.dumps(body).encode()


def many_readings(count: int) -> bytes:
    """A compact batch of ``count`` minimal readings (under MAX_PAYLOAD_BYTES even when too many)."""
    reading = {"device": "d", "measurement": "m", "fields": {"x": 1}}
    readings = [reading | {"ts": now_ms() - i} for i in range(count)]
    body = {"schema": 1, "agent": "agent-1", "seq": 1_000, "readings": readings}
    payload = json.dumps(body, separators=(",", ":")).encode()
    assert len(payload) < MAX_PAYLOAD_BYTES
    return payload


def hostile_payloads() -> list[tuple[str, str, bytes, str, str]]:
    """(what, topic, payload, reason, part of the error) of each hostile message."""
    own = wire.topic("agent-1", wire.Channel.TELEMETRY)
    raw_reading = batch_json().decode()
    cases: list[tuple[str, str, bytes, str, str]] = [
        ("truncated JSON", own, b'{"schema": 1, "agent": "agent-1", "seq": ', Reason.INVALID_JSON, "EOF"),
        ("empty payload", own, b"", Reason.INVALID_JSON, "EOF"),
        (
            "not UTF-8",
            own,
            raw_reading.replace("meter-0", "\udcff").encode(errors="surrogateescape"),
            Reason.INVALID_JSON,
            "unicode",
        ),
        ("control bytes", own, b"\x00\x01\x1b[31m{}\x7f", Reason.INVALID_JSON, "Invalid JSON"),
        ("nesting bomb", own, b"[" * 100_000 + b"]" * 100_000, Reason.INVALID_JSON, "recursion limit"),
        ("seq as text", own, batch_json(seq="7"), Reason.SCHEMA, "seq"),
        (
            "field as object",
            own,
            batch_json(readings=[{"fields": {"kwh": {"$gt": 0}}}]),
            Reason.SCHEMA,
            "kwh",
        ),
        ("ts as float", own, batch_json(readings=[{"ts": 1.7e12 + 0.5}]), Reason.SCHEMA, "ts"),
        ("NaN", own, raw_reading.replace("1.5", "NaN").encode(), Reason.SCHEMA, "finite"),
        ("Infinity", own, raw_reading.replace("1.5", "-Infinity").encode(), Reason.SCHEMA, "finite"),
        ("1e999", own, raw_reading.replace("1.5", "1e999").encode(), Reason.SCHEMA, "finite"),
        ("int beyond 64 bits", own, raw_reading.replace("1.5", "9" * 30).encode(), Reason.SCHEMA, "64-bit"),
        ("schema 2", own, batch_json(schema=2), Reason.SCHEMA, "schema"),
        ("unknown key", own, batch_json(admin=True), Reason.SCHEMA, "admin"),
        (
            "too many readings",
            own,
            many_readings(wire.MAX_READINGS_PER_BATCH + 1),
            Reason.SCHEMA,
            "readings",
        ),
        (
            "reserved tag",
            own,
            batch_json(readings=[{"tags": {"agent": "agent-2"}}]),
            Reason.SCHEMA,
            "reserved",
        ),
        (
            "field named like a tag (issue 22.1)",
            own,
            batch_json(readings=[{"fields": {"kwh": 1.5, "device": "meter-1"}}]),
            Reason.SCHEMA,
            "named like a tag",
        ),
        ("field named time", own, batch_json(readings=[{"fields": {"time": 1.5}}]), Reason.SCHEMA, "time"),
        ("schema true (issue 21.8)", own, batch_json(schema=True), Reason.SCHEMA, "schema"),
        (
            "tag value with a trailing space (issue 22.10)",
            own,
            batch_json(readings=[{"tags": {"site": "depot north "}}]),
            Reason.SCHEMA,
            "tags.site: ends with a space",
        ),
        (
            "Cyrillic a in a device id (issue 22.10)",
            own,
            batch_json(readings=[{"device": "meter-\u0430"}]),
            Reason.SCHEMA,
            "U+0430 CYRILLIC SMALL LETTER A",
        ),
        (
            "zero-width space in a device id (issue 22.10)",
            own,
            batch_json(readings=[{"device": "meter\u200b-0"}]),
            Reason.SCHEMA,
            "U+200B ZERO WIDTH SPACE",
        ),
        (
            "a dead letter posing as a reading",
            own,
            batch_json(readings=[{"measurement": "dead_letter", "fields": {"topic": 1.5}}]),
            Reason.SCHEMA,
            "CityGW's own records",
        ),
        (
            "agent health posing as a reading",
            own,
            batch_json(readings=[{"measurement": "agent_health", "fields": {"online": 0.5}}]),
            Reason.SCHEMA,
            "CityGW's own records",
        ),
        (
            "health with a time beyond any calendar",
            wire.topic("agent-1", wire.Channel.HEALTH),
            b'{"agent":"agent-1","ts":1700000000000,"devices":{"d":{"state":"ok","last_ok":-1'
            + b"0" * 400
            + b'}},"journal":{"backlog":0,"dropped":0}}',
            Reason.SCHEMA,
            "last_ok",
        ),
        (
            "measurement injection",
            own,
            batch_json(readings=[{"measurement": "electricity,agent=evil kwh=1"}]),
            Reason.SCHEMA,
            "measurement",
        ),
        (
            "field name injection",
            own,
            batch_json(readings=[{"fields": {'kwh" OR 1=1': 1}}]),
            Reason.SCHEMA,
            "fields",
        ),
        ("far future", own, batch_json(readings=[{"ts": now_ms() + 3_600_000}]), Reason.TIMESTAMP, "outside"),
        ("other agent's id", own, batch_json(agent="agent-2"), Reason.AGENT_MISMATCH, "differs from topic"),
        (
            "not an agent topic",
            "citygw/v1/Agent One/telemetry",
            batch_json(),
            Reason.TOPIC,
            "not a telemetry",
        ),
        (
            "10 MB",
            own,
            b'{"schema": 1, "agent": "agent-1", "pad": "' + b"A" * TEN_MB + b'"}',
            Reason.TOO_LARGE,
            "exceeds",
        ),
    ]
    for value in INJECTIONS:
        cases.append(
            (
                "tag injection " + value,
                own,
                batch_json(readings=[{"tags": {"site": value}}]),
                Reason.SCHEMA,
                "tags.site",
            )
        )
        cases.append(
            (
                "device injection " + value,
                own,
                batch_json(readings=[{"device": value}]),
                Reason.SCHEMA,
                "device",
            )
        )
    return cases


def test_hostile_payloads_are_dead_lettered_and_every_valid_reading_is_stored(
    mosquitto: Mosquitto, agent: Agent, influx_store: InfluxV1Store, influxdb: InfluxDB
) -> None:
    hostile = hostile_payloads()
    assert any(len(payload) >= TEN_MB for _, _, payload, _, _ in hostile)
    # A valid reading may carry any text in a string field: stored verbatim, escaped by the library.
    texts = {f"note_{i}": value for i, value in enumerate(INJECTIONS)}
    verbatim = wire.Reading(
        device="meter-9",
        measurement="electricity",
        ts=agent.t0 - 1,
        fields=texts,
        tags={"site": "depot north"},
    )

    with started(fast(mosquitto, influx_store)) as collector:
        for _, topic, payload, _, _ in hostile:
            agent.publish(agent.batch(count=3))
            agent.client.publish(topic, payload, qos=1).wait_for_publish(30)
        agent.publish(wire.encode(wire.TelemetryBatch(agent="agent-1", seq=agent.seq, readings=[verbatim])))
        agent.seq += 1
        agent.publish(agent.batch(count=3))
        total = 2 * len(hostile) + 2
        wait_until(lambda: collector.stats.messages == total, "every message", timeout=30)
        assert collector.subscribed

        valid = [row for row in stored(influx_store) if row.tags["device"] != "meter-9"]
        assert valid == sorted(
            expected_rows(agent, range(len(hostile)), 3)
            + expected_rows(agent, range(len(hostile) + 1, len(hostile) + 2), 3),
            key=lambda r: (r.ts_ms, sorted(r.tags.items())),
        )
        (kept,) = influx_store.range(
            measurement="electricity", start_ms=0, end_ms=END, device="meter-9", fields=list(texts)
        )
        assert kept == Row(
            verbatim.ts, {"agent": "agent-1", "device": "meter-9", "site": "depot north"}, texts
        )

        letters = stored(influx_store, DEAD_LETTER)
        assert [(r.tags["reason"]) for r in letters] == [reason for *_, reason, _ in hostile]
        for row, (what, topic, _, _, error) in zip(letters, hostile, strict=True):
            assert error in str(row.values["error"]), (what, row.values["error"])
            assert row.values["topic"] == topic, what
            assert len(str(row.values["payload"])) <= 4096, what
            assert row.tags["agent"] == ("unknown" if "Agent One" in topic else "agent-1"), what
        stats = collector.stats
        assert stats.dead_letters == len(hostile)
        assert sum(stats.dead_letters_by_reason.values()) == len(hostile)
        assert stats.points == 3 * (len(hostile) + 1) + 1

        # Nothing leaked into the schema: the same measurements, tag keys and series as valid data makes.
        measurements = influxdb.query("SHOW MEASUREMENTS", influx_store.database)
        names = [v[0] for v in measurements["results"][0]["series"][0]["values"]]  # type: ignore[index]
        assert names == [DEAD_LETTER, "electricity"]
        keys = influxdb.query('SHOW TAG KEYS FROM "electricity"', influx_store.database)
        assert [v[0] for v in keys["results"][0]["series"][0]["values"]] == ["agent", "device", "site"]  # type: ignore[index]
        assert MAX_PAYLOAD_BYTES < TEN_MB
