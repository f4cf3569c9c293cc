"""GET /v1/summary: the live readings per device the demo links to."""

from __future__ import annotations

from fastapi.testclient import TestClient

from collector.store.sqlite import SqliteStore
from tests.api.factories import NOW_ISO, FakeClock


def test_summary_has_each_device_with_age_and_newest_values(
    client: TestClient, city_store: SqliteStore, clock: FakeClock
) -> None:
    clock.now_ms += 2500
    body = client.get("/v1/summary").json()
    assert body["generated_at"] == "2027-01-15T08:00:02.500Z"
    by_device = {entry["device"]: entry for entry in body["devices"]}
    assert list(by_device) == [
        "gps-0877",
        "gps-0999",
        "gps-1204",
        "aq-harbour",
        "aq-park",
        "meter-7",
        "stop/12",
    ]
    assert by_device["aq-harbour"] == {
        "device": "aq-harbour",
        "agent": "edge-a",
        "measurement": "air_quality",
        "last_seen": "2027-01-15T07:50:00.000Z",
        "age_s": 602.5,
        "field_count": 3,
        "values": {"no2": 30, "ok": False, "pm25": 12.5},
    }
    assert by_device["meter-7"]["values"] == {"kwh": 1234.5, "status": "normal", "voltage": 231}
    assert by_device["meter-7"]["age_s"] == 32.5
    assert by_device["gps-1204"]["field_count"] == 7


def test_summary_filtered_by_measurement(client: TestClient, city_store: SqliteStore) -> None:
    body = client.get("/v1/summary", params={"measurement": "electricity"}).json()
    assert body["generated_at"] == NOW_ISO
    assert [(e["device"], e["age_s"]) for e in body["devices"]] == [("meter-7", 30.0)]
    assert client.get("/v1/summary", params={"measurement": "no such"}).status_code == 422
