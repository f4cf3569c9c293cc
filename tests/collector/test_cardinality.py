"""Series cardinality stays bounded: high-cardinality values travel as fields, never as tags, and no agent
writes more series than its budget."""

from __future__ import annotations

import uuid

import pytest

from citygw.contract import wire
from collector.dead_letter import Reason
from collector.store import Point, Store
from collector.store.base import newest_per_device
from collector.store.influx_v1 import InfluxV1Store
from tests.collector.helpers import Agent, fast, now_ms, started, wait_until
from tests.services import InfluxDB, Mosquitto

pytestmark = pytest.mark.integration

DEVICES = 5
READINGS = 1000


def series_cardinality(influxdb: InfluxDB, database: str) -> int:
    result = influxdb.query("SHOW SERIES EXACT CARDINALITY", database)
    series = result["results"][0].get("series", [])  # type: ignore[index]
    return sum(int(s["values"][0][0]) for s in series)


def test_unique_values_in_fields_keep_series_at_one_per_device(
    mosquitto: Mosquitto, agent: Agent, influxdb: InfluxDB
) -> None:
    database = f"cardinality_{uuid.uuid4().hex[:8]}"
    store = InfluxV1Store(influxdb.url, database)
    store.ensure_database()
    try:
        with started(fast(mosquitto, store)) as collector:
            for seq in range(READINGS // 100):
                readings = [
                    wire.Reading(
                        device=f"bus-{i % DEVICES}",
                        measurement="vehicle_position",
                        ts=agent.t0 + seq * 100 + i,
                        # Unique per reading: position, a trip id, a free-text status.
                        fields={
                            "lat": 52.0 + (seq * 100 + i) / 1e5,
                            "lon": 4.0 + (seq * 100 + i) / 1e5,
                            "trip_id": f"trip-{uuid.uuid4()}",
                            "status": f"stopped at {seq * 100 + i}",
                        },
                        tags={"route": "12"},
                    )
                    for i in range(100)
                ]
                batch = wire.TelemetryBatch(agent=agent.agent_id, seq=seq, readings=readings)
                agent.publish(wire.encode(batch))
            wait_until(lambda: collector.stats.points == READINGS, "every reading")

        points = influxdb.query('SELECT count("trip_id") FROM "vehicle_position"', database)
        assert points["results"][0]["series"][0]["values"][0][1] == READINGS  # type: ignore[index]
        assert series_cardinality(influxdb, database) == DEVICES

        # Control: the same values as a tag would make one series per reading, and the query sees it.
        store.write(
            [
                Point("vehicle_position_bad", {"trip_id": f"trip-{i}"}, agent.t0 + i, {"lat": 1.0})
                for i in range(READINGS)
            ]
        )
        assert series_cardinality(influxdb, database) == DEVICES + READINGS
    finally:
        store.close()
        influxdb.query(f'DROP DATABASE "{database}"')


BUDGET = 300
SPRAYED = 5_000


def test_an_agent_spraying_device_ids_gets_its_budget_of_series_and_no_more(
    mosquitto: Mosquitto, agent: Agent, store: Store
) -> None:
    """One agent makes 5 000 device ids: BUDGET series are stored, the rest are dead letters; its known
    series and another agent's still go through (InfluxDB: the fast path; SQLite: the exact path)."""
    t0 = now_ms() - 60_000

    def reading(device: str, ts: int) -> wire.Reading:
        return wire.Reading(device=device, measurement="electricity", ts=ts, fields={"kwh": 1.5})

    with started(fast(mosquitto, store, max_series_per_agent=BUDGET)) as collector:
        for seq, first in enumerate(range(0, SPRAYED, 1000)):
            readings = [reading(f"d{n:05d}", t0 + n) for n in range(first, first + 1000)]
            agent.publish(wire.encode(wire.TelemetryBatch(agent=agent.agent_id, seq=seq, readings=readings)))
        neighbour = wire.TelemetryBatch(agent="agent-2", seq=0, readings=[reading("meter-a", t0)])
        agent.publish(wire.encode(neighbour), agent_id="agent-2")
        known_again = [reading("d00000", t0 + SPRAYED)]
        agent.publish(wire.encode(wire.TelemetryBatch(agent=agent.agent_id, seq=9, readings=known_again)))
        wait_until(lambda: collector.stats.points == BUDGET + 2, "the budget's readings", timeout=30)
        wait_until(
            lambda: collector.stats.dead_letters_by_reason.get(Reason.TOO_MANY_SERIES) == SPRAYED - BUDGET,
            "a dead letter per refused reading",
            timeout=30,
        )
    devices = newest_per_device(store.latest(measurement="electricity"))
    sprayed = [p for p in devices if p.tags["agent"] == agent.agent_id]
    assert [p.tags["device"] for p in sprayed] == [f"d{n:05d}" for n in range(BUDGET)]
    assert sprayed[0].ts_ms == t0 + SPRAYED
    assert [p.tags["device"] for p in devices if p.tags["agent"] == "agent-2"] == ["meter-a"]
    letters = store.count_by_tag(measurement="dead_letter", start_ms=0, end_ms=2**62, tag="reason")
    assert letters == {Reason.TOO_MANY_SERIES: SPRAYED - BUDGET}
