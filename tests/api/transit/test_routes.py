"""The transit endpoints over HTTP: the GTFS zip, TripUpdates and Alerts, caching, writes refused."""

from __future__ import annotations

import datetime as dt
from email.utils import format_datetime
from pathlib import Path

from fastapi.testclient import TestClient
from google.transit import gtfs_realtime_pb2 as rt

from api.transit.feeds import TransitService
from api.transit.simulated_buses import Bus, fixes_between
from api.transit.timetable import Timetable
from collector.store.sqlite import SqliteStore
from tests.api.factories import NOW_MS, FakeClock

NOW_S = NOW_MS // 1000


def test_the_gtfs_zip_in_use_is_downloadable_and_cacheable(
    transit_client: TestClient, gtfs_zip: bytes
) -> None:
    response = transit_client.get("/v1/transit/gtfs.zip")
    assert response.status_code == 200
    assert response.content == gtfs_zip
    assert response.headers["content-type"] == "application/zip"
    again = transit_client.get("/v1/transit/gtfs.zip", headers={"If-None-Match": response.headers["etag"]})
    assert (again.status_code, again.content) == (304, b"")


def test_without_a_timetable_there_is_no_zip_and_no_predictions(client: TestClient) -> None:
    response = client.get("/v1/transit/gtfs.zip")
    assert response.status_code == 404
    assert "CITYGW_TRANSIT_GTFS_PATH" in response.json()["detail"]
    feed = rt.FeedMessage.FromString(client.get("/v1/transit/trip-updates").content)
    assert (feed.header.gtfs_realtime_version, len(feed.entity)) == ("2.0", 0)


def test_a_replaced_zip_is_swapped_in_and_a_broken_one_refused(
    transit: TransitService, gtfs_path: Path, gtfs_zip: bytes
) -> None:
    transit.source.check_every_s = 0
    first = transit.source.current()
    assert first is not None
    gtfs_path.write_bytes(b"not a zip at all")
    assert transit.source.current() is first  # the old timetable keeps serving
    assert transit.source.last_refusal is not None
    assert "not a zip archive" in str(transit.source.last_refusal)
    replacement = gtfs_path.with_suffix(".new")
    replacement.write_bytes(gtfs_zip)
    replacement.replace(gtfs_path)
    second = transit.source.current()
    assert second is not None
    assert second is not first
    assert transit.source.last_refusal is None


def test_feeds_answer_304_by_etag_and_by_date(
    transit_client: TestClient, store: SqliteStore, timetable: Timetable, friday: list[Bus]
) -> None:
    store.write(list(fixes_between(timetable, friday, NOW_S - 150, NOW_S + 1)))
    for path in ("/v1/transit/trip-updates", "/v1/transit/vehicle-positions", "/v1/transit/alerts"):
        first = transit_client.get(path)
        assert first.status_code == 200
        assert first.headers["cache-control"] == "public, max-age=5"
        stamp = rt.FeedMessage.FromString(first.content).header.timestamp
        assert first.headers["last-modified"] == format_datetime(
            dt.datetime.fromtimestamp(stamp, dt.UTC), usegmt=True
        )
        by_tag = transit_client.get(path, headers={"If-None-Match": first.headers["etag"]})
        by_date = transit_client.get(path, headers={"If-Modified-Since": first.headers["last-modified"]})
        assert (by_tag.status_code, by_date.status_code) == (304, 304)
        older = format_datetime(dt.datetime.fromtimestamp(stamp - 1, dt.UTC), usegmt=True)
        assert transit_client.get(path, headers={"If-Modified-Since": older}).status_code == 200


def test_trip_updates_as_json_name_trips_and_stops(
    transit_client: TestClient, store: SqliteStore, timetable: Timetable, friday: list[Bus]
) -> None:
    store.write(list(fixes_between(timetable, friday, NOW_S - 150, NOW_S + 1)))
    feed = transit_client.get("/v1/transit/trip-updates.json").json()
    assert feed["header"]["incrementality"] == "FULL_DATASET"
    updates = [entity["trip_update"] for entity in feed["entity"]]
    assert updates
    for update in updates:
        assert update["trip"]["trip_id"] in timetable.trips
        assert update["trip"]["start_date"] == "20270115"
        assert (
            update["stop_time_update"][-1]["stop_id"]
            == timetable.trips[update["trip"]["trip_id"]].stop_times[-1].stop_id
        )
    assert transit_client.get("/v1/transit/trip-updates", params={"format": "json"}).json() == feed


def test_alert_writes_are_refused_until_operators_can_sign_in(transit_client: TestClient) -> None:
    alert = {"header_text": "Ремонт колії", "informed_entities": [{"route_id": "T1"}], "effect": "DETOUR"}
    response = transit_client.post("/v1/transit/alerts", json=alert)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert transit_client.put("/v1/transit/gtfs.zip", content=b"x").status_code == 401


def test_operator_alerts_and_silent_routes_reach_the_feed(
    transit_client: TestClient, transit: TransitService, clock: FakeClock
) -> None:
    from api.transit.alerts import AlertCreate

    created = transit.alerts.create(
        AlertCreate.model_validate(
            {
                "header_text": "Ремонт колії на Городоцькій",
                "header_text_en": "Track works on Horodotska",
                "cause": "CONSTRUCTION",
                "effect": "DETOUR",
                "active_periods": [{"start": NOW_S - 60, "end": NOW_S + 3600}],
                "informed_entities": [{"route_id": "T1"}, {"stop_id": "T1-0-02"}],
            }
        ),
        actor="test",
        now_s=NOW_S,
    )
    feed = rt.FeedMessage.FromString(transit_client.get("/v1/transit/alerts").content)
    by_id = {entity.id: entity.alert for entity in feed.entity}
    assert set(by_id) == {
        created.id,
        "auto-no-vehicles-A29",
        "auto-no-vehicles-A3",
        "auto-no-vehicles-T1",
        "auto-no-vehicles-T6",
    }
    works = by_id[created.id]
    assert (works.effect, works.cause) == (rt.Alert.DETOUR, rt.Alert.CONSTRUCTION)
    assert [t.language for t in works.header_text.translation] == ["uk", "en"]
    transit.alerts.end(created.id, now_s=NOW_S + 1)
    clock.now_ms += 1000
    feed = rt.FeedMessage.FromString(transit_client.get("/v1/transit/alerts").content)
    assert created.id not in {entity.id for entity in feed.entity}
