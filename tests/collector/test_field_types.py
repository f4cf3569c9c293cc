"""Issue 22.2: one agent's field of the wrong type never makes another agent's readings unwritable.

InfluxDB fixes a field's type per shard with the first point written there. Real Mosquitto and
InfluxDB 1.6: the attacker's string ``pm25`` comes first in a new shard, then the victim's floats.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from citygw.contract import wire
from collector.dead_letter import DEAD_LETTER, Reason
from collector.store import Point
from collector.store.influx_v1 import InfluxV1Store
from collector.store.influx_v2 import InfluxV2Store
from tests.collector.helpers import END, Agent, fast, now_ms, started, wait_until
from tests.services import InfluxDB, Mosquitto, VictoriaMetrics

pytestmark = pytest.mark.integration

WEEK_MS = 7 * 24 * 3600 * 1000


@pytest.fixture
def influx_store(influxdb: InfluxDB) -> Iterator[InfluxV1Store]:
    database = f"types_{uuid.uuid4().hex[:8]}"
    store = InfluxV1Store(influxdb.url, database)
    store.ensure_database()
    yield store
    store.close()
    influxdb.query(f'DROP DATABASE "{database}"')


def air_quality(agent: Agent, device: str, ts: int, pm25: object) -> bytes:
    reading = {"device": device, "measurement": "air_quality", "ts": ts, "fields": {"pm25": pm25, "no2": 3.0}}
    batch = {"schema": 1, "agent": agent.agent_id, "seq": agent.seq, "readings": [reading]}
    agent.seq += 1
    return wire.TelemetryBatch.model_validate(batch).model_dump_json(by_alias=True).encode()


@pytest.mark.parametrize("history", ["in the store before start", "written by this collector"])
def test_a_string_where_others_write_floats_is_the_senders_dead_letter(
    mosquitto: Mosquitto, influx_store: InfluxV1Store, history: str
) -> None:
    victim, attacker = Agent(mosquitto, "victim"), Agent(mosquitto, "attacker")
    now = now_ms()
    earlier = Point("air_quality", {"agent": "victim", "device": "aq-0"}, now - 2 * WEEK_MS, {"pm25": 1.5})
    try:
        if history == "in the store before start":
            influx_store.write([earlier])  # an older shard: today's has no pm25 yet
        with started(fast(mosquitto, influx_store)) as collector:
            if history == "written by this collector":
                victim.publish(air_quality(victim, "aq-0", earlier.ts_ms, 1.5))
                wait_until(lambda: collector.stats.messages == 1, "the victim's first reading")
            attacker.publish(air_quality(attacker, "aq-evil", now - 200, "12.5 ug/m3"))
            for i in range(100):
                victim.publish(air_quality(victim, f"aq-{i % 5}", now - 100 + i, 10.0 + i))
            expected = 101 + (history == "written by this collector")
            wait_until(lambda: collector.stats.messages == expected, "every message", timeout=30)

        rows = influx_store.range(measurement="air_quality", start_ms=now - WEEK_MS, end_ms=END)
        assert sorted(row.values["pm25"] for row in rows) == [10.0 + i for i in range(100)]
        assert {row.tags["agent"] for row in rows} == {"victim"}
        (letter,) = influx_store.range(measurement=DEAD_LETTER, start_ms=0, end_ms=END)
        assert (letter.tags["agent"], letter.tags["reason"]) == ("attacker", Reason.FIELD_TYPE)
        assert "'pm25'" in str(letter.values["error"])
        assert "as float" in str(letter.values["error"])
        assert "12.5 ug/m3" in str(letter.values["payload"])
    finally:
        victim.close()
        attacker.close()


def test_a_store_that_cannot_list_its_types_learns_them_from_the_readings(
    mosquitto: Mosquitto, victoria_metrics: VictoriaMetrics
) -> None:
    """VictoriaMetrics takes v2 writes and answers no InfluxQL: the collector goes on, and the
    first type accepted for a field is the one it keeps."""
    store = InfluxV2Store(victoria_metrics.url, org="city", bucket="telemetry", token="t")
    victim, attacker = Agent(mosquitto, "victim"), Agent(mosquitto, "attacker")
    now = now_ms()
    try:
        with started(fast(mosquitto, store)) as collector:
            victim.publish(air_quality(victim, "aq-0", now - 300, 1.5))
            wait_until(lambda: collector.stats.messages == 1, "the first reading", timeout=15)
            attacker.publish(air_quality(attacker, "aq-evil", now - 200, "12.5 ug/m3"))
            victim.publish(air_quality(victim, "aq-0", now - 100, 2.5))
            wait_until(lambda: collector.stats.messages == 3, "every message", timeout=15)
            assert collector.stats.points == 2
            assert collector.stats.dead_letters_by_reason == {Reason.FIELD_TYPE: 1}
    finally:
        victim.close()
        attacker.close()
        store.close()
