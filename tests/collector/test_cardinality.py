"""Series cardinality stays bounded: high-cardinality values travel as fields, never as tags."""

from __future__ import annotations

import uuid

import pytest

from citygw import wire
from collector.store import Point
from collector.store.influx import InfluxV1Store
from tests.collector.helpers import Agent, fast, started, wait_until
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
