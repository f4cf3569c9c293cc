"""Issue 22.8: readings older than the store keeps are refused as ``timestamp`` before writing.

InfluxDB 1.6 drops such points with an HTTP 400, so each one cost a bisecting write (1 416 write
requests instead of 5). Real Mosquitto and InfluxDB, a default retention policy of one hour.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Sequence

import pytest

from citygw.contract import wire
from collector.dead_letter import DEAD_LETTER, Reason
from collector.store.base import Retention
from collector.store.influx_v1 import InfluxV1Store
from collector.store.influxql import go_duration_ms
from tests.collector.helpers import END, Agent, fast, now_ms, started, wait_until
from tests.services import InfluxDB, Mosquitto

HOUR_MS = 3_600_000


class CountingStore(InfluxV1Store):
    """The real v1 store, counting the write requests it sends."""

    requests = 0

    def _send(self, lines: list[str]) -> None:
        self.requests += 1
        super()._send(lines)


@pytest.fixture
def hour_store(influxdb: InfluxDB) -> Iterator[CountingStore]:
    database = f"retention_{uuid.uuid4().hex[:8]}"
    store = CountingStore(influxdb.url, database)
    store.ensure_database()
    influxdb.query(f'CREATE RETENTION POLICY "hour" ON "{database}" DURATION 1h REPLICATION 1 DEFAULT')
    yield store
    store.close()
    influxdb.query(f'DROP DATABASE "{database}"')


def readings(times: Sequence[int]) -> list[wire.Reading]:
    return [
        wire.Reading(device=f"m-{i % 7}", measurement="electricity", ts=ts, fields={"kwh": float(i)})
        for i, ts in enumerate(times)
    ]


@pytest.mark.integration
def test_readings_older_than_the_retention_policy_are_dead_letters_without_bisecting(
    mosquitto: Mosquitto, agent: Agent, hour_store: CountingStore
) -> None:
    assert hour_store.retention() == Retention("retention policy 'hour' (1h0m0s)", HOUR_MS)
    now = now_ms()
    old = [now - 2 * HOUR_MS + i for i in range(0, 300, 2)]
    fresh = [now - 60_000 + i for i in range(1, 300, 2)]
    with started(fast(mosquitto, hour_store)) as collector:
        for n in range(5):
            times = sorted(old[n::5] + fresh[n::5])
            batch = wire.TelemetryBatch(agent="agent-1", seq=n, readings=readings(times))
            agent.publish(wire.encode(batch))
        wait_until(lambda: collector.stats.messages == 5, "every message", timeout=30)
    assert hour_store.requests <= 5
    stored = hour_store.range(measurement="electricity", start_ms=0, end_ms=END)
    assert sorted(row.ts_ms for row in stored) == fresh
    letters = hour_store.range(measurement=DEAD_LETTER, start_ms=0, end_ms=END)
    assert len(letters) == len(old)
    assert {row.tags["reason"] for row in letters} == {Reason.TIMESTAMP}
    assert "retention policy 'hour' (1h0m0s)" in str(letters[0].values["error"])


def test_go_durations_as_influxdb_writes_them() -> None:
    assert go_duration_ms("0s") is None  # for ever
    assert go_duration_ms("1h0m0s") == HOUR_MS
    assert go_duration_ms("168h0m0s") == 168 * HOUR_MS
    assert go_duration_ms("1h30m15s") == HOUR_MS + 30 * 60_000 + 15_000
    for bad in ("", "1d", "h", "1.5h"):
        with pytest.raises(ValueError, match="duration"):
            go_duration_ms(bad)
