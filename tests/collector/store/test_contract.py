"""One contract for every store: SQLite and InfluxDB (v1 API, real influxd) answer alike.

This is the whole contract, writes read back through the store's own reads (InfluxQL for
InfluxDB). The v2 store is tested on VictoriaMetrics, which takes its writes and answers no
InfluxQL: it runs the write half, test_write_contract.py, with every other store.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from collector.store import Aggregate, FieldValue, Point, PointsRejected, Row, Store

T0 = 1_700_000_040_000  # a multiple of 60 s, so windows of 60 s start at T0
AQ = "air_quality"


def aq(device: str, ts_ms: int, **fields: FieldValue) -> Point:
    return Point(AQ, {"device": device, "agent": "agent-1", "site": "north"}, ts_ms, fields)


def tags(device: str) -> dict[str, str]:
    return {"agent": "agent-1", "device": device, "site": "north"}


def test_write_then_latest_gives_the_newest_point_of_each_series(store: Store) -> None:
    store.write([aq("d1", T0, pm10=1.5), aq("d1", T0 + 1000, pm10=2.5), aq("d2", T0 + 500, pm10=9.0)])
    store.write([Point("electricity", {"device": "m1", "agent": "agent-2"}, T0 + 2000, {"kwh": 12})])

    latest = sorted(store.latest(), key=lambda p: (p.measurement, sorted(p.tags.items())))

    assert latest == [
        Point(AQ, tags("d1"), T0 + 1000, {"pm10": 2.5}),
        Point(AQ, tags("d2"), T0 + 500, {"pm10": 9.0}),
        Point("electricity", {"agent": "agent-2", "device": "m1"}, T0 + 2000, {"kwh": 12}),
    ]


def test_latest_filters_by_measurement_device_and_since(store: Store) -> None:
    store.write([aq("d1", T0, pm10=1.0), aq("d2", T0 + 500, pm10=2.0)])
    store.write([Point("electricity", {"device": "d1", "agent": "agent-2"}, T0 + 900, {"kwh": 3})])

    assert [p.tags["device"] for p in store.latest(measurement=AQ, device="d2")] == ["d2"]
    assert [(p.measurement, p.ts_ms) for p in store.latest(device="d1")] == [
        (AQ, T0),
        ("electricity", T0 + 900),
    ]
    assert [p.ts_ms for p in store.latest(since_ms=T0 + 500)] == [T0 + 500, T0 + 900]
    assert store.latest(measurement="water") == []
    assert store.latest(device="nope") == []


def test_writing_the_same_point_again_changes_nothing_and_merges_fields(store: Store) -> None:
    point = aq("d1", T0, pm10=1.5, pm25=0.5)
    store.write([point])
    store.write([point, point])
    assert store.range(measurement=AQ, start_ms=T0, end_ms=T0 + 1) == [
        Row(T0, tags("d1"), {"pm10": 1.5, "pm25": 0.5})
    ]

    store.write([aq("d1", T0, pm10=7.5, no2=3.0)])

    assert store.range(measurement=AQ, start_ms=T0, end_ms=T0 + 1) == [
        Row(T0, tags("d1"), {"no2": 3.0, "pm10": 7.5, "pm25": 0.5})
    ]
    assert store.latest() == [Point(AQ, tags("d1"), T0, {"no2": 3.0, "pm10": 7.5, "pm25": 0.5})]


def test_range_raw_is_ordered_end_exclusive_and_filters_device_and_fields(store: Store) -> None:
    store.write(
        [
            aq("d1", T0, pm10=1.0, ok=True),
            aq("d2", T0, pm10=5.0, ok=False),
            aq("d1", T0 + 1000, pm10=2.0, ok=True),
            aq("d1", T0 + 2000, pm10=3.0, ok=True),
        ]
    )

    assert store.range(measurement=AQ, start_ms=T0, end_ms=T0 + 2000) == [
        Row(T0, tags("d1"), {"ok": True, "pm10": 1.0}),
        Row(T0, tags("d2"), {"ok": False, "pm10": 5.0}),
        Row(T0 + 1000, tags("d1"), {"ok": True, "pm10": 2.0}),
    ]
    assert store.range(measurement=AQ, start_ms=T0 + 1, end_ms=T0 + 10_000, device="d1", fields=["pm10"]) == [
        Row(T0 + 1000, tags("d1"), {"pm10": 2.0}),
        Row(T0 + 2000, tags("d1"), {"pm10": 3.0}),
    ]


WINDOWED = [
    aq("d1", T0, level=1, pm10=1.5, ok=True, mode="auto"),
    aq("d1", T0 + 10_000, level=3, pm10=2.5, ok=False, mode="manual"),
    aq("d2", T0 + 5_000, level=100, pm10=0.5, ok=True, mode="auto"),
    aq("d1", T0 + 60_000, level=10, pm10=4.0, ok=True, mode="auto"),
    aq("d1", T0 + 200_000, level=50, pm10=50.0, ok=True, mode="off"),  # outside the range
]
EXPECTED_WINDOWS: dict[Aggregate, list[tuple[int, str, dict[str, FieldValue]]]] = {
    Aggregate.MEAN: [
        (T0, "d1", {"level": 2.0, "pm10": 2.0}),
        (T0, "d2", {"level": 100.0, "pm10": 0.5}),
        (T0 + 60_000, "d1", {"level": 10.0, "pm10": 4.0}),
    ],
    Aggregate.MIN: [
        (T0, "d1", {"level": 1, "pm10": 1.5}),
        (T0, "d2", {"level": 100, "pm10": 0.5}),
        (T0 + 60_000, "d1", {"level": 10, "pm10": 4.0}),
    ],
    Aggregate.MAX: [
        (T0, "d1", {"level": 3, "pm10": 2.5}),
        (T0, "d2", {"level": 100, "pm10": 0.5}),
        (T0 + 60_000, "d1", {"level": 10, "pm10": 4.0}),
    ],
    Aggregate.SUM: [
        (T0, "d1", {"level": 4, "pm10": 4.0}),
        (T0, "d2", {"level": 100, "pm10": 0.5}),
        (T0 + 60_000, "d1", {"level": 10, "pm10": 4.0}),
    ],
    Aggregate.LAST: [
        (T0, "d1", {"level": 3, "mode": "manual", "ok": False, "pm10": 2.5}),
        (T0, "d2", {"level": 100, "mode": "auto", "ok": True, "pm10": 0.5}),
        (T0 + 60_000, "d1", {"level": 10, "mode": "auto", "ok": True, "pm10": 4.0}),
    ],
    Aggregate.COUNT: [
        (T0, "d1", {"level": 2, "mode": 2, "ok": 2, "pm10": 2}),
        (T0, "d2", {"level": 1, "mode": 1, "ok": 1, "pm10": 1}),
        (T0 + 60_000, "d1", {"level": 1, "mode": 1, "ok": 1, "pm10": 1}),
    ],
}


@pytest.mark.parametrize("aggregate", list(Aggregate))
def test_range_aggregates_per_device_over_epoch_aligned_windows(store: Store, aggregate: Aggregate) -> None:
    store.write(WINDOWED)

    rows = store.range(measurement=AQ, start_ms=T0, end_ms=T0 + 120_000, window_s=60, aggregate=aggregate)

    assert rows == [Row(ts, {"device": device}, values) for ts, device, values in EXPECTED_WINDOWS[aggregate]]
    for row, (_, _, expected) in zip(rows, EXPECTED_WINDOWS[aggregate], strict=True):
        assert {k: type(v) for k, v in row.values.items()} == {k: type(v) for k, v in expected.items()}


def test_range_aggregated_filters_device_and_fields(store: Store) -> None:
    store.write(WINDOWED)

    rows = store.range(
        measurement=AQ,
        start_ms=T0,
        end_ms=T0 + 120_000,
        device="d1",
        fields=["pm10"],
        window_s=60,
        aggregate=Aggregate.MAX,
    )

    assert rows == [
        Row(T0, {"device": "d1"}, {"pm10": 2.5}),
        Row(T0 + 60_000, {"device": "d1"}, {"pm10": 4.0}),
    ]


def test_range_windows_start_on_the_epoch_not_at_start_ms(store: Store) -> None:
    store.write(WINDOWED)

    rows = store.range(
        measurement=AQ, start_ms=T0 + 7_000, end_ms=T0 + 61_000, window_s=60, aggregate=Aggregate.COUNT
    )

    assert [(r.ts_ms, r.tags["device"], r.values["level"]) for r in rows] == [
        (T0, "d1", 1),
        (T0 + 60_000, "d1", 1),
    ]


@pytest.mark.parametrize(
    "value", ["main street 12", "a,b", "k=v", 'say "hi"', "x\\y", "Łódź/Ørsted", "a, b = c"]
)
def test_tag_values_with_special_characters_round_trip(store: Store, value: str) -> None:
    point = Point(AQ, {"agent": "agent-1", "device": value, "site": value}, T0, {"pm10": 1.0})
    store.write([point])

    assert store.latest() == [point]
    assert store.latest(device=value) == [point]
    assert store.range(measurement=AQ, start_ms=T0, end_ms=T0 + 1, device=value) == [
        Row(T0, dict(point.tags), {"pm10": 1.0})
    ]


def test_field_values_round_trip_with_their_types(store: Store) -> None:
    fields: dict[str, FieldValue] = {
        "on": True,
        "off": False,
        "count": 42,
        "negative": -7,
        "big": 2**53 + 1,
        "whole_float": 5.0,
        "fraction": 0.1,
        "tiny": 1e-300,
        "text": 'quote " backslash \\ comma, equals= space',
        "empty": "",
        "unicode": "Ωμέγα ✓",
    }
    store.write([aq("d1", T0, **fields)])

    (latest,) = store.latest()
    (row,) = store.range(measurement=AQ, start_ms=T0, end_ms=T0 + 1)

    for values in (latest.fields, row.values):
        assert values == fields
        assert {k: type(v) for k, v in values.items()} == {k: type(v) for k, v in fields.items()}


def test_ranges_may_reach_far_beyond_the_data(store: Store) -> None:
    store.write([aq("d1", T0, pm10=1.0)])

    assert len(store.range(measurement=AQ, start_ms=-(2**62), end_ms=2**62)) == 1
    assert len(store.range(measurement=AQ, start_ms=0, end_ms=2**62, window_s=86_400 * 365)) == 1
    assert len(store.latest(since_ms=-(2**62))) == 1


def test_empty_results(store: Store) -> None:
    assert store.latest() == []
    assert store.range(measurement=AQ, start_ms=0, end_ms=T0) == []
    assert store.range(measurement=AQ, start_ms=0, end_ms=T0, window_s=60) == []

    store.write([aq("d1", T0, pm10=1.0)])

    assert store.range(measurement=AQ, start_ms=T0 + 1, end_ms=T0 + 10) == []
    assert store.range(measurement=AQ, start_ms=T0, end_ms=T0 + 10, fields=["nope"]) == []
    assert store.range(measurement=AQ, start_ms=T0, end_ms=T0 + 10, window_s=1, fields=["nope"]) == []
    assert store.range(measurement=AQ, start_ms=T0, end_ms=T0 + 10, device="d9") == []
    assert store.range(measurement="water", start_ms=T0, end_ms=T0 + 10) == []


def test_a_field_type_conflict_rejects_exactly_the_bad_points_and_stores_the_rest(store: Store) -> None:
    store.write([aq("d1", T0, level=1)])
    good = [aq("d1", T0 + i * 1000, level=i) for i in range(1, 6)]
    bad = aq("d2", T0 + 2500, level=2.5)

    with pytest.raises(PointsRejected) as caught:
        store.write([*good[:2], bad, *good[2:]])

    assert [point for point, _ in caught.value.rejected] == [bad]
    assert "conflict" in caught.value.rejected[0][1]
    stored = store.range(measurement=AQ, start_ms=T0, end_ms=T0 + 10_000)
    assert [(row.ts_ms, row.values["level"]) for row in stored] == [(T0, 1)] + [
        (p.ts_ms, p.fields["level"]) for p in good
    ]


def test_writes_from_several_threads_at_once_all_land(store: Store) -> None:
    """The collector's writers share one store (``store_writers``)."""

    def write_device(device: str) -> None:
        for batch in range(10):
            store.write([aq(device, T0 + (batch * 50 + i) * 1000, pm10=float(i)) for i in range(50)])

    devices = [f"d{n}" for n in range(4)]
    # The week's shard first: InfluxDB before mid-2021 (influxdata/influxdb pull 21946) may silently
    # drop points when concurrent writes create the shard group of one time range (docs/deploy.md).
    store.write([aq("warm-up", T0 - 1000, pm10=0.0)])
    with ThreadPoolExecutor(len(devices)) as pool:
        list(pool.map(write_device, devices))

    rows = store.range(measurement=AQ, start_ms=T0, end_ms=T0 + 500_000, fields=["pm10"])
    assert sorted((row.tags["device"], row.ts_ms) for row in rows) == [
        (device, T0 + n * 1000) for device in devices for n in range(500)
    ]


def test_count_devices_counts_the_devices_with_points_in_the_range(store: Store) -> None:
    store.write(
        [
            aq("d1", T0, pm10=1.0),
            aq("d1", T0 + 1000, pm10=2.0, ok=True),
            aq("d2", T0 + 500, ok=False),
            aq("d3", T0 + 60_000, pm10=3.0),
            Point(AQ, {"agent": "agent-1"}, T0 + 700, {"pm10": 4.0}),  # no device: a row of its own
            Point("electricity", {"device": "m1", "agent": "agent-2"}, T0, {"kwh": 1}),
        ]
    )

    def count(end_ms: int = T0 + 60_000, device: str | None = None, fields: list[str] | None = None) -> int:
        return store.count_devices(measurement=AQ, start_ms=T0, end_ms=end_ms, device=device, fields=fields)

    assert count() == 3  # d1, d2 and the point without a device; d3 is at the (exclusive) end
    one_window = store.range(
        measurement=AQ, start_ms=T0, end_ms=T0 + 60_000, window_s=60, aggregate=Aggregate.COUNT
    )
    assert count() == len(one_window)
    assert count(end_ms=T0 + 60_001) == 4
    assert count(fields=["pm10"]) == 2
    assert count(fields=["ok"]) == 2
    assert count(fields=["ok", "pm10"]) == 3
    assert count(fields=["nope"]) == 0
    assert count(fields=[]) == 0
    assert count(device="d2") == 1
    assert count(device="d9") == 0
    assert store.count_devices(measurement="water", start_ms=0, end_ms=2**62) == 0
