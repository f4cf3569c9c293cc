"""GET /v1/air-quality/{stations,city}: the EEA index of the EEA averages, ppb converted by role."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from api.registry import Registry
from collector.store.sqlite import SqliteStore
from tests.api.factories import MINUTE_MS, NOW_MS, FakeClock, reading, register_device


@pytest.fixture
def stations(store: SqliteStore, registry: Registry) -> SqliteStore:
    with registry.session() as session:
        register_device(session, "aq-rynok", "vaisala_aqt530")
        register_device(session, "aq-park", "jxbs_3001")
        session.commit()
    store.write(
        [
            # AQT530: no2 in ppb, 50 ppb = 95.5 µg/m³ (Poor in 2024, Fair in 2017); pm in µg/m³.
            reading(
                "air_quality",
                "aq-rynok",
                NOW_MS - 5 * MINUTE_MS,
                {"no2": 50, "o3": 20, "so2": 1, "pm25": 8.0, "pm10": 12.0, "co": 300},
                district="halytskyi",
            ),
            reading(
                "air_quality",
                "aq-park",
                NOW_MS - MINUTE_MS,
                {"pm25": 12.0, "pm10": -1.0},
                district="halytskyi",
            ),
            # Not registered: its µg/m³ variant wins over the bare field.
            reading(
                "air_quality",
                "aq-lych",
                NOW_MS - MINUTE_MS,
                {"no2": 999, "no2_ugm3": 30.0},
                district="lychakiv",
            ),
            # Silent for three hours: listed, no index, not in the city's.
            reading("air_quality", "aq-old", NOW_MS - 180 * MINUTE_MS, {"pm25": 500.0}, district="sykhiv"),
        ]
    )
    return store


def get(client: TestClient, path: str, **params: str) -> dict[str, Any]:
    response = client.get(f"/v1/air-quality/{path}", params=params)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def test_each_station_in_ugm3(anonymous: TestClient, stations: SqliteStore) -> None:
    body = get(anonymous, "stations")
    assert body["table"] == "eea-2024"
    by_device = {s["device"]: s for s in body["stations"]}
    rynok = by_device["aq-rynok"]
    assert rynok["concentrations_ugm3"] == {"pm2_5": 8.0, "pm10": 12.0, "no2": 95.5, "o3": 40.0, "so2": 2.66}
    assert rynok["index"] == {"band": 4, "level": "Poor", "pollutant": "no2"}
    assert by_device["aq-park"]["concentrations_ugm3"] == {"pm2_5": 12.0}
    assert by_device["aq-park"]["index"] == {"band": 2, "level": "Fair", "pollutant": "pm2_5"}
    assert by_device["aq-lych"]["index"] == {"band": 3, "level": "Moderate", "pollutant": "no2"}
    assert by_device["aq-old"]["stale"] is True
    assert by_device["aq-old"]["index"] is None


def test_city_and_districts_take_their_worst_station(anonymous: TestClient, stations: SqliteStore) -> None:
    body = get(anonymous, "city")
    assert body["city"] == {
        "name": "city",
        "station": "aq-rynok",
        "index": {"band": 4, "level": "Poor", "pollutant": "no2"},
    }
    assert [(d["name"], d["station"], d["index"]["band"]) for d in body["districts"]] == [
        ("halytskyi", "aq-rynok", 4),
        ("lychakiv", "aq-lych", 3),
    ]


def test_older_table_by_query(anonymous: TestClient, stations: SqliteStore) -> None:
    body = get(anonymous, "city", table="eea-2017")
    assert body["levels"] == ["Good", "Fair", "Moderate", "Poor", "Very poor"]
    assert body["city"]["index"] == {"band": 2, "level": "Fair", "pollutant": "pm2_5"}
    assert anonymous.get("/v1/air-quality/city", params={"table": "caqi' OR 1=1"}).status_code == 422


def test_no_station_no_index(anonymous: TestClient) -> None:
    assert get(anonymous, "city") == {
        "table": "eea-2024",
        "levels": ["Good", "Fair", "Moderate", "Poor", "Very poor", "Extremely poor"],
        "generated_at": "2027-01-15T08:00:00.000Z",
        "city": None,
        "districts": [],
    }


def test_an_unregistered_station_in_ppb_is_converted_by_its_profile_role(
    anonymous: TestClient, store: SqliteStore
) -> None:
    # No registry entry: the catalogue says air_quality's no2 is the AQT530's, in ppb.
    store.write([reading("air_quality", "aq-new", NOW_MS - MINUTE_MS, {"no2": 50})])
    (station,) = get(anonymous, "stations")["stations"]
    assert station["concentrations_ugm3"] == {"no2": 95.5}
    assert station["index"] == {"band": 4, "level": "Poor", "pollutant": "no2"}


def test_the_index_takes_hourly_gas_means_and_24_hour_pm_means(
    anonymous: TestClient, store: SqliteStore
) -> None:
    hour = 60 * MINUTE_MS
    store.write(
        [
            # NO2 of the past hour only: 2 h ago 150 µg/m³ does not count, the hour's mean is (20 + 40) / 2.
            reading("air_quality", "aq-eea", NOW_MS - 2 * hour, {"no2_ugm3": 150.0, "pm25": 100.0}),
            reading("air_quality", "aq-eea", NOW_MS - 50 * MINUTE_MS, {"no2_ugm3": 20.0, "pm25": 10.0}),
            reading("air_quality", "aq-eea", NOW_MS - MINUTE_MS, {"no2_ugm3": 40.0, "pm25": 10.0}),
            # PM over the past 24 hours: (100 + 10 + 10) / 3 = 40; 25 hours ago is out.
            reading("air_quality", "aq-eea", NOW_MS - 25 * hour, {"pm25": 900.0}),
        ]
    )
    (station,) = get(anonymous, "stations")["stations"]
    assert station["concentrations_ugm3"] == {"no2": 30.0, "pm2_5": 40.0}
    assert station["index"] == {"band": 3, "level": "Moderate", "pollutant": "pm2_5"}


def test_indices_are_reused_for_a_minute(anonymous: TestClient, store: SqliteStore, clock: FakeClock) -> None:
    store.write([reading("air_quality", "aq-new", NOW_MS - MINUTE_MS, {"no2_ugm3": 5.0})])
    assert get(anonymous, "city")["city"]["index"]["level"] == "Good"
    store.write([reading("air_quality", "aq-new", NOW_MS, {"no2_ugm3": 395.0})])
    assert get(anonymous, "city")["city"]["index"]["level"] == "Good"  # the hourly index of a minute ago
    clock.now_ms += MINUTE_MS
    assert get(anonymous, "city")["city"]["index"]["level"] == "Extremely poor"  # mean 200 µg/m³
