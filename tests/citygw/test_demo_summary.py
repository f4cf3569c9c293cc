"""The demo's console summary lists devices' readings, not what the system stores about itself."""

from __future__ import annotations

from api.recorder import COMMAND_MEASUREMENT, VEHICLE_MEASUREMENT
from citygw.demo import summary
from collector.store.base import Point
from collector.store.sqlite import SqliteStore


def test_summary_shows_devices_only() -> None:
    store = SqliteStore(":memory:")
    store.write(
        [
            Point("agent_health", {"agent": "depot-1"}, 1_000, {"online": 1}),
            Point("dead_letter", {"agent": "unknown", "reason": "schema"}, 1_000, {"error": "bad"}),
            Point(COMMAND_MEASUREMENT, {"agent": "depot-1", "cabinet": "cab-1"}, 1_000, {"lateness_s": 2.0}),
            Point(VEHICLE_MEASUREMENT, {"vehicle": "bus-1", "route": "A3"}, 1_000, {"delay_s": 60.0}),
            Point("air_quality", {"agent": "depot-1", "device": "aq-1"}, 1_000, {"pm25": 3.5, "no2": 17.0}),
        ]
    )
    lines = summary(store, 3_000).splitlines()
    store.close()
    assert len(lines) == 2
    assert lines[1].split() == ["aq-1", "air_quality", "2s", "pm25=3.5,", "no2=17"]
