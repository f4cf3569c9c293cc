"""GET /v1/devices and /v1/devices/{device}/latest."""

from __future__ import annotations

from fastapi.testclient import TestClient

from collector.store.sqlite import SqliteStore
from tests.api.factories import NOW_MS, reading


def test_devices_lists_every_device_and_measurement(client: TestClient, city_store: SqliteStore) -> None:
    response = client.get("/v1/devices")
    assert response.status_code == 200
    assert [(d["agent"], d["device"], d["measurement"]) for d in response.json()] == [
        ("depot-1", "gps-0877", "vehicle_position"),
        ("depot-1", "gps-0999", "vehicle_position"),
        ("depot-1", "gps-1204", "vehicle_position"),
        ("edge-a", "aq-harbour", "air_quality"),
        ("edge-a", "aq-park", "air_quality"),
        ("edge-b", "meter-7", "electricity"),
        ("edge-b", "stop/12", "validator"),
    ]


def test_devices_filtered_by_measurement(client: TestClient, city_store: SqliteStore) -> None:
    response = client.get("/v1/devices", params={"measurement": "air_quality"})
    assert response.json() == [
        {
            "device": "aq-harbour",
            "agent": "edge-a",
            "measurement": "air_quality",
            "last_seen": "2027-01-15T07:50:00.000Z",
            "last_seen_ms": NOW_MS - 600_000,
            "tags": {"district": "north", "site": "harbour"},
        },
        {
            "device": "aq-park",
            "agent": "edge-a",
            "measurement": "air_quality",
            "last_seen": "2027-01-15T07:55:00.000Z",
            "last_seen_ms": NOW_MS - 300_000,
            "tags": {"site": "park"},
        },
    ]


def test_devices_filtered_by_agent(client: TestClient, city_store: SqliteStore) -> None:
    response = client.get("/v1/devices", params={"agent": "edge-b"})
    assert [d["device"] for d in response.json()] == ["meter-7", "stop/12"]


def test_devices_of_an_empty_store(client: TestClient) -> None:
    assert client.get("/v1/devices").json() == []


def test_device_with_a_changed_tag_is_listed_once_with_its_newest_tags(
    client: TestClient, store: SqliteStore
) -> None:
    store.write(
        [
            reading("vehicle_position", "gps-1", NOW_MS - 9000, {"lat": 1.0, "lon": 1.0}, route="M41"),
            reading("vehicle_position", "gps-1", NOW_MS - 1000, {"lat": 2.0, "lon": 2.0}, route="100"),
        ]
    )
    (device,) = client.get("/v1/devices").json()
    assert (device["last_seen_ms"], device["tags"]) == (NOW_MS - 1000, {"route": "100"})


def test_device_latest_gives_its_newest_reading_with_typed_values(
    client: TestClient, city_store: SqliteStore
) -> None:
    response = client.get("/v1/devices/aq-harbour/latest")
    assert response.status_code == 200
    assert response.json() == {
        "device": "aq-harbour",
        "readings": [
            {
                "measurement": "air_quality",
                "agent": "edge-a",
                "ts": "2027-01-15T07:50:00.000Z",
                "ts_ms": NOW_MS - 600_000,
                "fields": {"pm25": 12.5, "no2": 30, "ok": False},
                "tags": {"district": "north", "site": "harbour"},
            }
        ],
    }


def test_device_latest_covers_every_measurement_and_ids_with_slashes(
    client: TestClient, city_store: SqliteStore
) -> None:
    city_store.write([reading("health", "stop/12", NOW_MS - 1000, {"up": True}, agent="edge-b")])
    body = client.get("/v1/devices/stop/12/latest").json()
    assert body["device"] == "stop/12"
    assert [(r["measurement"], r["fields"]) for r in body["readings"]] == [
        ("health", {"up": True}),
        ("validator", {"taps": 17}),
    ]
    assert client.get("/v1/devices/stop%2F12/latest").json() == body


def test_unknown_device_is_404_with_a_clear_message(client: TestClient, city_store: SqliteStore) -> None:
    response = client.get("/v1/devices/aq-nowhere/latest")
    assert response.status_code == 404
    assert response.json() == {"detail": "no readings of device 'aq-nowhere' are stored"}
    response = client.get("/v1/devices/aq-park/latest", params={"agent": "edge-b"})
    assert response.status_code == 404
    assert response.json() == {"detail": "no readings of device 'aq-park' of agent 'edge-b' are stored"}


def test_bad_filters_are_422(client: TestClient) -> None:
    assert client.get("/v1/devices", params={"measurement": "Air-Quality"}).status_code == 422
    assert client.get("/v1/devices", params={"agent": "Edge A"}).status_code == 422
    assert client.get("/v1/devices/'; DROP TABLE points--/latest").status_code == 422
