"""Telemetry across devices (per district, site, city), meters' consumption, and streamed exports."""

from __future__ import annotations

import csv
import dataclasses
import io
import json

from fastapi.testclient import TestClient
from hypothesis import given
from hypothesis import strategies as st

from api.consumption import consumption
from api.deps import AppContext
from api.query import TimeRange
from api.routes.exports import chunks
from collector.store.base import Point, Row
from collector.store.sqlite import SqliteStore
from tests.api.factories import MINUTE_MS, NOW_MS, reading

HOUR_MS = 60 * MINUTE_MS
START_MS = NOW_MS - 2 * HOUR_MS  # 06:00, an hour boundary


def stations() -> list[Point]:
    """Three stations in two districts, two hours of readings; one without a district."""
    points = []
    for device, district, base in (
        ("aq-1", "halytskyi", 10.0),
        ("aq-2", "halytskyi", 30.0),
        ("aq-3", "lychakiv", 5.0),
    ):
        for i, minute in enumerate((5, 35, 65, 95)):
            points.append(
                reading(
                    "air_quality",
                    device,
                    START_MS + minute * MINUTE_MS,
                    {"pm25": base + i, "ok": True},
                    district=district,
                    site=f"site-{device}",
                )
            )
    points.append(reading("air_quality", "aq-4", START_MS + 10 * MINUTE_MS, {"pm25": 100.0}))
    return points


def groups(client: TestClient, **params: str) -> list[tuple[str | None, int, int, dict[str, float]]]:
    params = {"start": str(START_MS), "end": str(NOW_MS), **params}
    response = client.get("/v1/telemetry/air_quality/groups", params=params)
    assert response.status_code == 200, response.text
    return [(r["group"], r["ts_ms"], r["devices"], r["values"]) for r in response.json()["rows"]]


def test_mean_per_district_is_weighted_by_points_not_devices(client: TestClient, store: SqliteStore) -> None:
    store.write(stations())
    # aq-1 has 10, 11 in the first hour and aq-2 30, 31: the mean of all four points.
    assert groups(client, by="district", window="1h") == [
        (None, START_MS, 1, {"pm25": 100.0}),
        ("halytskyi", START_MS, 2, {"pm25": 20.5}),
        ("halytskyi", START_MS + HOUR_MS, 2, {"pm25": 22.5}),
        ("lychakiv", START_MS, 1, {"pm25": 5.5}),
        ("lychakiv", START_MS + HOUR_MS, 1, {"pm25": 7.5}),
    ]
    # An unequal number of points per device: aq-4's one point weighs as one of nine.
    city = groups(client, by="city", window="1h", fields="pm25")
    assert city[0] == ("city", START_MS, 4, {"pm25": (10 + 11 + 30 + 31 + 5 + 6 + 100) / 7})


def test_min_max_sum_count_last_across_devices(client: TestClient, store: SqliteStore) -> None:
    store.write(stations())
    first_hour = {
        aggregate: groups(client, by="district", window="1h", aggregate=aggregate)[1][3]["pm25"]
        for aggregate in ("min", "max", "sum", "count", "last")
    }
    assert first_hour == {"min": 10.0, "max": 31.0, "sum": 82.0, "count": 4.0, "last": (11 + 31) / 2}
    by_site = groups(client, by="site", window="2h", aggregate="max")
    assert [(g, v) for g, _, _, v in by_site] == [
        (None, {"pm25": 100.0}),
        ("site-aq-1", {"pm25": 13.0}),
        ("site-aq-2", {"pm25": 33.0}),
        ("site-aq-3", {"pm25": 8.0}),
    ]


def test_groups_refuse_bad_input(client: TestClient) -> None:
    base = "/v1/telemetry/air_quality/groups"
    assert client.get(base, params={"by": "street"}).status_code == 422
    assert client.get(base, params={"by": "city", "window": "0s"}).status_code == 422
    assert client.get(base, params={"by": "city", "window": "1s", "start": "-1w"}).status_code == 400
    assert client.get(base, params={"by": "city", "aggregate": "median"}).status_code == 422


def meter(device: str, minutes_values: list[tuple[int, float, bool]], **tags: str) -> list[Point]:
    return [
        reading(
            "electricity",
            device,
            START_MS + minute * MINUTE_MS,
            {"import_energy_kwh": value, **({"import_energy_kwh_reset": True} if reset else {})},
            **tags,
        )
        for minute, value, reset in minutes_values
    ]


def intervals(client: TestClient, **params: str) -> list[tuple[str | None, int, float, int, int]]:
    params = {"field": "import_energy_kwh", "start": str(START_MS), "end": str(NOW_MS), **params}
    response = client.get("/v1/telemetry/electricity/consumption", params=params)
    assert response.status_code == 200, response.text
    return [
        (i["group"], i["ts_ms"], i["consumption"], i["resets"], i["replacements"])
        for i in response.json()["intervals"]
    ]


def test_consumption_through_a_reset_and_a_replacement(client: TestClient, store: SqliteStore) -> None:
    store.write(
        # Before the range: the starting value.
        meter("m-1", [(-10, 1000.0, False), (10, 1004.0, False), (50, 1010.0, False)], district="halytskyi")
        # Rebooted: the counter restarted from 0 and reads 2 → 2 kWh used.
        + meter("m-1", [(70, 2.0, True), (90, 5.0, False)], district="halytskyi")
        # Replaced: a new meter at 500 kWh; what was used meanwhile is unknown.
        + meter("m-2", [(5, 7000.0, False), (40, 7003.5, False), (80, 500.0, False), (110, 501.5, False)])
    )
    assert intervals(client) == [
        ("m-1", START_MS, 10.0, 0, 0),
        ("m-1", START_MS + HOUR_MS, 5.0, 1, 0),
        ("m-2", START_MS, 3.5, 0, 0),
        ("m-2", START_MS + HOUR_MS, 1.5, 0, 1),
    ]
    assert intervals(client, by="city", interval="2h") == [("city", START_MS, 20.0, 1, 1)]
    assert intervals(client, by="district", interval="2h") == [
        (None, START_MS, 5.0, 0, 1),
        ("halytskyi", START_MS, 15.0, 1, 0),
    ]
    assert intervals(client, device="m-2", interval="1d", start=str(START_MS + HOUR_MS)) == [
        ("m-2", NOW_MS - NOW_MS % 86_400_000, 1.5, 0, 1)
    ]


def test_consumption_needs_a_counter_name(client: TestClient) -> None:
    url = "/v1/telemetry/electricity/consumption"
    assert client.get(url).status_code == 400  # neither field nor role
    assert client.get(url, params={"field": "kWh; DROP"}).status_code == 422
    assert client.get(url, params={"field": "x", "interval": "1h; DROP"}).status_code == 422


@given(
    st.lists(st.floats(min_value=0, max_value=1000, allow_nan=False), min_size=2, max_size=30),
    st.integers(min_value=1, max_value=50),
)
def test_consumption_of_a_rising_counter_is_last_minus_first(increments: list[float], step_min: int) -> None:
    value, rows = 0.0, []
    for i, increment in enumerate(increments):
        value += increment
        rows.append(Row(START_MS + i * step_min * MINUTE_MS, {"device": "m"}, {"kwh": value}))
    result = consumption(rows, "kwh", start_ms=START_MS, interval_ms=HOUR_MS, group_of=lambda _d: "all")
    assert abs(sum(i.consumption for i in result) - (value - increments[0])) < 1e-6 * max(1.0, value)
    assert sum(i.readings for i in result) == len(increments) - 1


def test_exports_are_cut_at_aligned_chunks_never_inside_a_window() -> None:
    span = TimeRange(START_MS + 5 * MINUTE_MS, NOW_MS)
    assert [(p.start_ms - START_MS) // MINUTE_MS for p in chunks(span, 1800, None)] == [5, 30, 60, 90]
    assert [(p.start_ms - START_MS) // MINUTE_MS for p in chunks(span, 1800, 3600)] == [5, 60]


def test_export_csv_is_streamed_in_chunks_and_matches_the_store(
    client: TestClient, store: SqliteStore
) -> None:
    store.write(stations())
    context: AppContext = client.app.state.context  # type: ignore[attr-defined]
    small = context.settings.model_copy(update={"export_chunk_s": 1800})
    client.app.state.context = dataclasses.replace(context, settings=small)  # type: ignore[attr-defined]
    params = {"start": str(START_MS), "end": str(NOW_MS), "fields": "pm25,ok"}
    with client.stream("GET", "/v1/exports/air_quality", params=params) as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/csv")
        assert "attachment" in response.headers["content-disposition"]
        assert "content-length" not in response.headers
        text = "".join(response.iter_text())
    table = list(csv.DictReader(io.StringIO(text)))
    assert len(table) == 13
    assert table[0] == {
        "ts": "2027-01-15T06:05:00.000Z",
        "ts_ms": str(START_MS + 5 * MINUTE_MS),
        "device": "aq-1",
        "agent": "edge-a",
        "site": "site-aq-1",
        "district": "halytskyi",
        "pm25": "10.0",
        "ok": "true",
    }
    assert [row["ts_ms"] for row in table] == sorted(row["ts_ms"] for row in table)


def test_export_json_aggregated(client: TestClient, store: SqliteStore) -> None:
    store.write(stations())
    params = {
        "start": str(START_MS),
        "end": str(NOW_MS),
        "window": "1h",
        "aggregate": "max",
        "format": "json",
    }
    response = client.get("/v1/exports/air_quality", params=params)
    assert response.status_code == 200
    body = json.loads(response.text)
    assert body["window_s"] == 3600
    assert body["aggregate"] == "max"
    assert len(body["rows"]) == 7
    assert body["rows"][0]["district"] == "halytskyi"
    assert body["rows"][0]["values"]["pm25"] == 11.0


def test_export_bounds(client: TestClient, store: SqliteStore) -> None:
    store.write(stations())
    url = "/v1/exports/air_quality"
    assert client.get(url, params={"start": "0"}).status_code == 400  # longer than a year
    assert client.get(url, params={"aggregate": "max"}).status_code == 400
    assert client.get(url, params={"format": "xlsx"}).status_code == 422
    assert client.get(url, params={"start": "-1d", "window": "1s"}).status_code == 200
    assert client.get(url, params={"start": "-300d", "window": "1s"}).status_code == 400


def test_export_csv_has_a_column_for_every_field_of_the_range(client: TestClient, store: SqliteStore) -> None:
    # The slow-polled counter is in the range's first reading, not in the device's newest one.
    store.write(
        [
            reading("electricity", "m-1", START_MS + MINUTE_MS, {"power": 5.0, "import_energy_kwh": 10.0}),
            reading("electricity", "m-1", START_MS + 9 * MINUTE_MS, {"power": 6.0}),
            reading("electricity", "m-2", START_MS + 5 * MINUTE_MS, {"voltage": 230.0}),
            # Outside the range: no column of its own.
            reading("electricity", "m-3", START_MS - HOUR_MS, {"frequency": 50.0}),
        ]
    )
    params = {"start": str(START_MS), "end": str(NOW_MS)}
    text = client.get("/v1/exports/electricity", params=params).text
    header = next(csv.reader(io.StringIO(text)))
    assert header[6:] == ["import_energy_kwh", "power", "voltage"]
    table = list(csv.DictReader(io.StringIO(text)))
    assert [row["import_energy_kwh"] for row in table] == ["10.0", "", ""]
