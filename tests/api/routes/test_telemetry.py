"""GET /v1/telemetry/{measurement}: ranges, windows, and refusing what would hurt."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from api import create_app
from api.registry import Registry
from api.settings import ApiSettings
from collector.store.sqlite import SqliteStore
from tests.api.factories import MINUTE_MS, NOW_ISO, NOW_MS, FakeClock


def rows(response: Any) -> list[tuple[str | None, int, dict[str, Any]]]:
    assert response.status_code == 200, response.text
    return [(row["device"], row["ts_ms"], row["values"]) for row in response.json()["rows"]]


def test_default_is_the_last_hour_raw(client: TestClient, city_store: SqliteStore) -> None:
    response = client.get("/v1/telemetry/air_quality")
    body = response.json()
    assert {k: v for k, v in body.items() if k != "rows"} == {
        "measurement": "air_quality",
        "start": "2027-01-15T07:00:00.000Z",
        "start_ms": NOW_MS - 60 * MINUTE_MS,
        "end": NOW_ISO,
        "end_ms": NOW_MS,
        "window_s": None,
        "aggregate": None,
    }
    assert body["rows"][0] == {
        "ts": "2027-01-15T07:10:00.000Z",
        "ts_ms": NOW_MS - 50 * MINUTE_MS,
        "device": "aq-harbour",
        "agent": "edge-a",
        "tags": {"district": "north", "site": "harbour"},
        "values": {"no2": 20, "ok": True, "pm25": 10.0},
    }
    assert rows(response) == [
        ("aq-harbour", NOW_MS - 50 * MINUTE_MS, {"pm25": 10.0, "no2": 20, "ok": True}),
        ("aq-harbour", NOW_MS - 20 * MINUTE_MS, {"pm25": 14.0, "no2": 24, "ok": True}),
        ("aq-harbour", NOW_MS - 10 * MINUTE_MS, {"pm25": 12.5, "no2": 30, "ok": False}),
        ("aq-park", NOW_MS - 5 * MINUTE_MS, {"pm25": 3.0, "no2": 5, "ok": True}),
    ]


def test_device_fields_and_iso_range(client: TestClient, city_store: SqliteStore) -> None:
    params = {
        "device": "aq-harbour",
        "fields": "pm25,no2",
        "start": "2027-01-15T07:15:00Z",
        "end": "2027-01-15T08:00:00+00:00",
    }
    assert rows(client.get("/v1/telemetry/air_quality", params=params)) == [
        ("aq-harbour", NOW_MS - 20 * MINUTE_MS, {"pm25": 14.0, "no2": 24}),
        ("aq-harbour", NOW_MS - 10 * MINUTE_MS, {"pm25": 12.5, "no2": 30}),
    ]


def test_relative_and_epoch_ms_times(client: TestClient, city_store: SqliteStore) -> None:
    params = {"start": "-3h", "end": str(NOW_MS - 100 * MINUTE_MS), "fields": "pm25"}
    assert rows(client.get("/v1/telemetry/air_quality", params=params)) == [
        ("aq-harbour", NOW_MS - 120 * MINUTE_MS, {"pm25": 99.0}),
    ]


def test_windows_aggregate_per_device(client: TestClient, city_store: SqliteStore) -> None:
    params = {"window": "30m", "fields": "pm25"}
    response = client.get("/v1/telemetry/air_quality", params=params)
    assert (response.json()["window_s"], response.json()["aggregate"]) == (1800, "mean")
    assert rows(response) == [
        ("aq-harbour", NOW_MS - 60 * MINUTE_MS, {"pm25": 10.0}),
        ("aq-harbour", NOW_MS - 30 * MINUTE_MS, {"pm25": 13.25}),
        ("aq-park", NOW_MS - 30 * MINUTE_MS, {"pm25": 3.0}),
    ]
    params = {"window": "1h", "aggregate": "max", "device": "aq-harbour", "start": "-2h"}
    assert rows(client.get("/v1/telemetry/air_quality", params=params)) == [
        ("aq-harbour", NOW_MS - 120 * MINUTE_MS, {"pm25": 99.0, "no2": 99}),
        ("aq-harbour", NOW_MS - 60 * MINUTE_MS, {"pm25": 14.0, "no2": 30}),
    ]


def test_unknown_measurement_has_no_rows(client: TestClient, city_store: SqliteStore) -> None:
    assert rows(client.get("/v1/telemetry/water")) == []


@pytest.mark.parametrize(
    ("path", "params", "param", "words"),
    [
        ("/v1/telemetry/Air-Quality", {}, "measurement", "pattern"),
        ("/v1/telemetry/air_quality%3B%20DROP", {}, "measurement", "pattern"),
        ("/v1/telemetry/air_quality", {"fields": "pm25,PM10"}, "fields", "'PM10'"),
        ("/v1/telemetry/air_quality", {"fields": "pm25,no2)--"}, "fields", "'no2)--'"),
        ("/v1/telemetry/air_quality", {"fields": ","}, "fields", "one or more field names"),
        ("/v1/telemetry/air_quality", {"window": "10x"}, "window", "10s, 5m, 1h"),
        ("/v1/telemetry/air_quality", {"window": "0s"}, "window", "positive"),
        ("/v1/telemetry/air_quality", {"window": "-5m"}, "window", "positive"),
        ("/v1/telemetry/air_quality", {"start": "yesterday"}, "start", "ISO 8601"),
        ("/v1/telemetry/air_quality", {"end": "2027-13-01T00:00:00Z"}, "end", "ISO 8601"),
        ("/v1/telemetry/air_quality", {"start": "-99999999999w"}, "start", "outside"),
        ("/v1/telemetry/air_quality", {"aggregate": "median", "window": "1m"}, "aggregate", "mean"),
        ("/v1/telemetry/air_quality", {"device": "aq'--"}, "device", "pattern"),
    ],
)
def test_bad_parameters_are_422_naming_the_parameter(
    client: TestClient, path: str, params: dict[str, str], param: str, words: str
) -> None:
    response = client.get(path, params=params)
    assert response.status_code == 422, response.text
    (error,) = response.json()["detail"]
    assert error["loc"][-1] == param
    assert words in error["msg"]


@pytest.mark.parametrize(
    ("params", "message"),
    [
        (
            {"start": "-1h", "end": "-2h"},
            "start (2027-01-15T07:00:00.000Z) must be before end (2027-01-15T06:00:00.000Z)",
        ),
        ({"start": "now", "end": "now"}, "must be before end"),
        ({"aggregate": "max"}, "aggregate=max needs a window, e.g. window=1m"),
        (
            {"start": "-7d", "window": "1m"},
            "10080 windows of 60 s in this range; at most 10000: use a window of at least 61 s",
        ),
        ({"start": "-7d", "window": "61s"}, None),
    ],
)
def test_empty_or_oversized_ranges_are_400(
    client: TestClient, city_store: SqliteStore, params: dict[str, str], message: str | None
) -> None:
    response = client.get("/v1/telemetry/air_quality", params=params)
    if message is None:
        assert response.status_code == 200
    else:
        assert response.status_code == 400
        assert message in response.json()["detail"]


@pytest.fixture
def small_client(city_store: SqliteStore, registry: Registry) -> Iterator[TestClient]:
    """Telemetry open to anybody (CITYGW_OPEN_TELEMETRY), at most 3 rows an answer."""
    settings = ApiSettings(query_max_points=3, open_telemetry=True)
    with TestClient(
        create_app(city_store, settings=settings, clock=FakeClock(), registry=registry)
    ) as client:
        yield client


def test_too_many_raw_points_are_counted_and_refused(small_client: TestClient) -> None:
    response = small_client.get("/v1/telemetry/air_quality")
    assert response.status_code == 400
    assert response.json()["detail"] == (
        "at least 4 rows in this range; at most 3:"
        " use a window (e.g. window=1m), a shorter range, or one device"
    )
    assert rows(
        small_client.get("/v1/telemetry/air_quality", params={"device": "aq-harbour", "fields": "pm25"})
    ) == [
        ("aq-harbour", NOW_MS - 50 * MINUTE_MS, {"pm25": 10.0}),
        ("aq-harbour", NOW_MS - 20 * MINUTE_MS, {"pm25": 14.0}),
        ("aq-harbour", NOW_MS - 10 * MINUTE_MS, {"pm25": 12.5}),
    ]
    assert small_client.get("/v1/telemetry/air_quality", params={"window": "1h"}).status_code == 200


def test_too_many_windowed_rows_ask_for_a_bigger_window(small_client: TestClient) -> None:
    response = small_client.get("/v1/telemetry/air_quality", params={"window": "10m"})
    assert response.status_code == 400
    assert response.json()["detail"] == (
        "6 windows of 600 s for 2 devices in this range: up to 12 rows; at most 3:"
        " use a larger window, a shorter range or one device (device=...)"
    )
    assert small_client.get("/v1/telemetry/air_quality", params={"window": "1h"}).status_code == 200
