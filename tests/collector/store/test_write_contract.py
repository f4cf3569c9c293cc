"""The write half of the store contract, for every store the collector writes to, v2 included.

The whole contract (tests/collector/store/test_contract.py) reads back through the store's own
reads, which for InfluxDB are InfluxQL. The v2 store writes through ``/api/v2/write`` with a
token, and the server it is tested on here, VictoriaMetrics (as in the rest of the suite), takes
those writes but answers no InfluxQL: its reads are PromQL and ``/api/v1/export``. So the
contract is split: every store (SQLite, InfluxDB v1 gzipped and plain, InfluxDB v2 API on
VictoriaMetrics) runs this half, and each test reads what was stored by the store's own reads,
or for VictoriaMetrics by its export API. VictoriaMetrics keeps numbers only (a boolean as 1/0,
no strings), so these points carry numbers; the types' round trip is the read half's.
"""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from collector.store import Point, PointsRejected, PointWriter
from collector.store.base import LineWriter
from collector.store.influx_v1 import InfluxV1Store
from collector.store.influx_v2 import InfluxV2Store
from collector.store.sqlite import SqliteStore
from tests.services import InfluxDB, VictoriaMetrics

T0 = 1_700_000_040_000
# (ts_ms, sorted tags) -> {field: value as a float}
Stored = dict[tuple[int, tuple[tuple[str, str], ...]], dict[str, float]]


@dataclass
class Written:
    store: PointWriter
    measurement: str  # a new one per test: VictoriaMetrics is shared by the session
    read: Callable[[str], Stored]  # what the server holds of a measurement
    settles: bool = False  # the server makes writes searchable after a while (VictoriaMetrics)

    def stored(self, expected: int) -> Stored:
        """What is stored, once ``expected`` points are there (or after 10 s on a server that settles)."""
        deadline = time.monotonic() + (10 if self.settles else 0)
        while len(found := self.read(self.measurement)) < expected and time.monotonic() < deadline:
            time.sleep(0.1)
        return found


def read_through_store(store: SqliteStore | InfluxV1Store) -> Callable[[str], Stored]:
    def read(measurement: str) -> Stored:
        rows = store.range(measurement=measurement, start_ms=0, end_ms=2 * T0)
        return {
            (row.ts_ms, tuple(sorted(row.tags.items()))): {
                k: float(v) for k, v in row.values.items() if isinstance(v, int | float)
            }
            for row in rows
        }

    return read


def read_through_export(vm: VictoriaMetrics) -> Callable[[str], Stored]:
    def read(measurement: str) -> Stored:
        vm.flush()
        prefix = f"{measurement}_"
        response = httpx.get(f"{vm.url}/api/v1/export", params={"match[]": f'{{__name__=~"{prefix}.*"}}'})
        response.raise_for_status()
        found: Stored = {}
        for line in response.text.splitlines():
            item = httpx.Response(200, content=line).json()
            labels = dict(item["metric"])
            field = labels.pop("__name__").removeprefix(prefix)
            for ts, value in zip(item["timestamps"], item["values"], strict=True):
                found.setdefault((ts, tuple(sorted(labels.items()))), {})[field] = float(value)
        return found

    return read


@pytest.fixture(
    params=[
        "sqlite",
        pytest.param("influx_v1", marks=pytest.mark.integration),
        pytest.param("influx_v1_plain", marks=pytest.mark.integration),
        pytest.param("influx_v2_on_victoria_metrics", marks=pytest.mark.integration),
    ]
)
def written(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Written]:
    measurement = f"contract_{uuid.uuid4().hex[:10]}"
    if request.param == "sqlite":
        sqlite = SqliteStore(tmp_path / "telemetry.sqlite")
        yield Written(sqlite, measurement, read_through_store(sqlite))
        sqlite.close()
    elif request.param.startswith("influx_v1"):
        influxdb: InfluxDB = request.getfixturevalue("influxdb")
        database = f"write_{uuid.uuid4().hex[:12]}"
        influx = InfluxV1Store(influxdb.url, database, gzip=request.param == "influx_v1")
        influx.ensure_database()
        yield Written(influx, measurement, read_through_store(influx))
        influx.close()
        influxdb.query(f'DROP DATABASE "{database}"')
    else:
        vm: VictoriaMetrics = request.getfixturevalue("victoria_metrics")
        v2 = InfluxV2Store(vm.url, org="city", bucket="telemetry", token="secret")
        yield Written(v2, measurement, read_through_export(vm), settles=True)
        v2.close()


def point(written: Written, device: str, ts_ms: int, **fields: float) -> Point:
    return Point(written.measurement, {"device": device, "agent": "agent-1", "site": "north"}, ts_ms, fields)


def key(device: str, ts_ms: int) -> tuple[int, tuple[tuple[str, str], ...]]:
    return ts_ms, (("agent", "agent-1"), ("device", device), ("site", "north"))


def test_points_land_with_their_tags_times_and_values(written: Written) -> None:
    written.store.write(
        [
            point(written, "d1", T0 + 123, pm10=1.25, count=42),
            point(written, "d1", T0 + 1123, pm10=2.5, count=43),
            point(written, "d2", T0 + 500, pm10=-0.5, count=0),
        ]
    )
    assert written.stored(3) == {
        key("d1", T0 + 123): {"pm10": 1.25, "count": 42.0},
        key("d1", T0 + 1123): {"pm10": 2.5, "count": 43.0},
        key("d2", T0 + 500): {"pm10": -0.5, "count": 0.0},
    }


def test_lines_from_the_stores_own_encoder_land_as_its_points_do(written: Written) -> None:
    store = written.store
    if not isinstance(store, LineWriter):
        pytest.skip("takes points only: the collector gives it points")
    points = [point(written, "d1", T0 + n * 1000, pm10=float(n)) for n in range(5)]
    store.write_lines([store.encoder.line(p) for p in points])
    assert written.stored(5) == {key("d1", T0 + n * 1000): {"pm10": float(n)} for n in range(5)}


def test_writing_the_same_points_again_stores_them_once(written: Written) -> None:
    points = [point(written, "d1", T0 + n, pm10=float(n)) for n in range(3)]
    written.store.write(points)
    written.store.write(points + points)
    assert written.stored(3) == {key("d1", T0 + n): {"pm10": float(n)} for n in range(3)}


def test_a_point_without_a_writable_field_is_refused_alone_and_the_rest_stored(written: Written) -> None:
    nothing = point(written, "d9", T0, pm10=math.nan)
    good = [point(written, "d1", T0 + n, pm10=float(n)) for n in range(4)]
    with pytest.raises(PointsRejected) as caught:
        written.store.write([good[0], nothing, *good[1:]])
    assert [refused for refused, _ in caught.value.rejected] == [nothing]
    assert written.stored(4) == {key("d1", T0 + n): {"pm10": float(n)} for n in range(4)}


def test_writes_from_several_threads_at_once_all_land(written: Written) -> None:
    """The collector's writers share one store (``store_writers``)."""

    def write_device(device: str) -> None:
        for batch in range(5):
            written.store.write(
                [point(written, device, T0 + (batch * 40 + i) * 1000, v=float(i)) for i in range(40)]
            )

    devices = [f"d{n}" for n in range(4)]
    # The shard first (see test_contract.py: older InfluxDB may drop points of concurrent shard creation).
    written.store.write([point(written, "warm-up", T0 - 1000, v=0.0)])
    with ThreadPoolExecutor(len(devices)) as pool:
        list(pool.map(write_device, devices))
    stored = written.stored(1 + 4 * 200)
    assert sorted(k for k in stored if k[1][1][1] != "warm-up") == sorted(
        key(device, T0 + n * 1000) for device in devices for n in range(200)
    )
