"""The transit endpoints over HTTP: the GTFS zip, TripUpdates and Alerts, caching, writes refused."""

from __future__ import annotations

import datetime as dt
import hashlib
from email.utils import format_datetime
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from google.transit import gtfs_realtime_pb2 as rt

from api.registry import Registry
from api.registry.audit import entries
from api.security import Role
from api.transit.feeds import TransitService
from api.transit.matching import scheduled_time
from api.transit.source import ZIP_MAX_AGE_S
from api.transit.timetable import Timetable
from collector.store.base import Point
from collector.store.sqlite import SqliteStore
from simulators.transit.buses import Bus, bus_tags, fixes_between, where
from simulators.transit.network import FEED_VERSION, network_files, zip_files
from tests.api.factories import NOW_MS, FakeClock, bearer
from tests.api.transit.conftest import damaged_zip

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


def test_a_damaged_zip_is_refused_on_upload_and_on_reload(
    transit_client: TestClient,
    transit: TransitService,
    keys: dict[Role, str],
    gtfs_path: Path,
    gtfs_zip: bytes,
) -> None:
    bad_crc = transit_client.put(
        "/v1/transit/gtfs.zip", content=damaged_zip(crc=0), headers=bearer(keys[Role.TRANSIT])
    )
    assert bad_crc.status_code == 422
    assert bad_crc.json()["detail"]["problems"] == [
        {
            "file": "stops.txt",
            "row": None,
            "field": None,
            "reason": "cannot be read from the zip (Bad CRC-32 for file 'stops.txt')",
        }
    ]
    assert gtfs_path.read_bytes() == gtfs_zip

    transit.source.check_every_s = 0
    in_use = transit.source.current()
    assert in_use is not None
    gtfs_path.write_bytes(damaged_zip(flag_bits=1))  # encrypted
    assert transit.source.current() is in_use
    assert "stops.txt: cannot be read from the zip (File 'stops.txt' is encrypted" in str(
        transit.source.last_refusal
    )


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


def test_a_validator_counter_gone_negative_leaves_out_that_bus_occupancy_only(
    transit_client: TestClient, store: SqliteStore, timetable: Timetable, friday: list[Bus], clock: FakeClock
) -> None:
    store.write(list(fixes_between(timetable, friday, NOW_S - 150, NOW_S + 1)))
    first = rt.FeedMessage.FromString(transit_client.get("/v1/transit/vehicle-positions").content)
    heard = {entity.id for entity in first.entity}
    broken, counting = [bus for bus in friday if bus.vehicle_id in heard][:2]
    store.write(
        [
            Point(
                "validator",
                bus_tags(bus, f"validator-{bus.vehicle_id}"),
                NOW_MS - at_s * 1000,
                {"taps_resident": taps},
            )
            for bus, counts in ((broken, (100, -50)), (counting, (100, 127)))
            for at_s, taps in zip((120, 60), counts, strict=True)
        ]
    )
    clock.now_ms += 1000  # past the snapshot in use
    for path in ("/v1/transit/trip-updates", "/v1/transit/alerts", "/v1/transit/vehicle-positions"):
        assert transit_client.get(path).status_code == 200, path
    feed = rt.FeedMessage.FromString(transit_client.get("/v1/transit/vehicle-positions").content)
    vehicles = {entity.id: entity.vehicle for entity in feed.entity}
    assert not vehicles[broken.vehicle_id].HasField("occupancy_percentage")
    assert vehicles[counting.vehicle_id].occupancy_percentage == 30


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


def test_a_scheduled_trip_says_how_late_its_bus_runs_and_a_headway_trip_does_not(
    transit_client: TestClient, store: SqliteStore, timetable: Timetable, friday: list[Bus]
) -> None:
    store.write(list(fixes_between(timetable, friday, NOW_S - 150, NOW_S + 1)))
    feed = transit_client.get("/v1/transit/trip-updates.json").json()
    positions = transit_client.get("/v1/transit/vehicle-positions.json").json()
    on_trip = {
        e["vehicle"]["vehicle"]["id"]: e["vehicle"].get("trip", {}).get("trip_id")
        for e in positions["entity"]
    }
    buses = {bus.vehicle_id: bus for bus in friday}
    checked = 0
    for update in (entity["trip_update"] for entity in feed["entity"]):
        if update["trip"]["schedule_relationship"] == "UNSCHEDULED":
            assert "delay" not in update
            continue
        if on_trip[update["vehicle"]["id"]] != update["trip"]["trip_id"]:
            continue  # the next run of the bus's block: the delay it will hand on (test_blocks)
        # The truth: how far behind its schedule the simulated bus really is, where it really is.
        state = where(timetable, buses[update["vehicle"]["id"]], NOW_S)
        assert state is not None
        if state.ride.run.trip.trip_id != update["trip"]["trip_id"]:
            continue  # put on another run: tests/api/transit/test_matching.py counts those
        path = timetable.path(update["trip"]["trip_id"])
        true_delay = NOW_S - scheduled_time(state.ride.run, path, state.along_m)
        if state.along_m < 1:
            true_delay = max(true_delay, 0.0)  # waiting at the first stop to leave on time is not early
        assert abs(update["delay"] - true_delay) <= 10, (update["vehicle"], true_delay)
        checked += 1
    assert checked >= 3


def test_alerts_are_written_by_transit_operators_audited_and_reach_the_feed(
    transit_client: TestClient, keys: dict[Role, str], clock: FakeClock, registry: Registry
) -> None:
    alert = {
        "header_text": "Ремонт колії на Городоцькій",
        "header_text_en": "Track works on Horodotska",
        "cause": "CONSTRUCTION",
        "effect": "DETOUR",
        "active_periods": [{"start": NOW_S - 60, "end": NOW_S + 3600}],
        "informed_entities": [{"route_id": "T1"}, {"stop_id": "T1-0-02"}],
    }
    refused = transit_client.post("/v1/transit/alerts", json=alert)
    assert (refused.status_code, refused.headers["www-authenticate"]) == (401, "Bearer")
    for site_bound in (Role.UTILITY, Role.ENGINEER):  # an engineer's authority stops at its sites
        assert (
            transit_client.post(
                "/v1/transit/alerts", json=alert, headers=bearer(keys[site_bound])
            ).status_code
            == 403
        )
    unknown = {**alert, "informed_entities": [{"route_id": "T99"}]}
    response = transit_client.post("/v1/transit/alerts", json=unknown, headers=bearer(keys[Role.TRANSIT]))
    assert response.status_code == 422
    assert response.json()["detail"] == ["informed_entities[0].route_id: 'T99' is not in the GTFS in use"]
    bad = {**alert, "effect": "FLOOD", "informed_entities": [{}]}
    problems = transit_client.post("/v1/transit/alerts", json=bad, headers=bearer(keys[Role.TRANSIT])).json()
    assert {tuple(p["loc"][1:]) for p in problems["detail"]} == {("effect",), ("informed_entities", 0)}

    created = transit_client.post("/v1/transit/alerts", json=alert, headers=bearer(keys[Role.TRANSIT]))
    assert created.status_code == 201
    alert_id = created.json()["id"]
    assert created.json()["created_by"].startswith("key:")

    feed = rt.FeedMessage.FromString(transit_client.get("/v1/transit/alerts").content)
    by_id = {entity.id: entity.alert for entity in feed.entity}
    silent = {f"auto-no-vehicles-{route}" for route in ("A29", "A3", "T1", "T6")}  # no bus reports here
    assert set(by_id) == {alert_id} | silent
    works = by_id[alert_id]
    assert (works.effect, works.cause) == (rt.Alert.DETOUR, rt.Alert.CONSTRUCTION)
    assert [t.language for t in works.header_text.translation] == ["uk", "en"]
    assert [(p.start, p.end) for p in works.active_period] == [(NOW_S - 60, NOW_S + 3600)]
    assert [(i.route_id, i.stop_id) for i in works.informed_entity] == [("T1", ""), ("", "T1-0-02")]

    ended = transit_client.post(f"/v1/transit/alerts/{alert_id}/end", headers=bearer(keys[Role.TRANSIT]))
    assert ended.json()["ended_at"] == NOW_S
    clock.now_ms += 1000
    feed = rt.FeedMessage.FromString(transit_client.get("/v1/transit/alerts").content)
    assert alert_id not in {entity.id for entity in feed.entity}
    missing = transit_client.post("/v1/transit/alerts/op-999/end", headers=bearer(keys[Role.TRANSIT]))
    assert missing.status_code == 404

    with registry.session() as session:
        log = [
            (e.action, e.target, e.result, e.actor)
            for e in entries(session)
            if e.action.startswith("transit.")
        ]
    actor = created.json()["created_by"]
    assert sorted(log) == [
        ("transit.alert.create", "transit-alert:new", "refused", actor),  # the unknown route
        ("transit.alert.create", f"transit-alert:{alert_id}", "ok", actor),
        ("transit.alert.end", f"transit-alert:{alert_id}", "ok", actor),
    ]


@pytest.mark.parametrize(
    "alert_id",
    [
        "op-\u00b2",
        "op-\uff11",
        "op-01",
        "op-99999999999999999999999",
        "op-",
        "op--1",
        "op-1x",
        "auto-1",
        "op-1%0A",
    ],
)
def test_only_an_issued_alert_id_ends_an_alert(
    transit_client: TestClient, keys: dict[Role, str], alert_id: str
) -> None:
    operator = bearer(keys[Role.TRANSIT])
    alert = {"header_text": "Ремонт колії", "informed_entities": [{"route_id": "T1"}]}
    assert transit_client.post("/v1/transit/alerts", json=alert, headers=operator).json()["id"] == "op-1"
    assert transit_client.post(f"/v1/transit/alerts/{alert_id}/end", headers=operator).status_code == 404
    feed = rt.FeedMessage.FromString(transit_client.get("/v1/transit/alerts").content)
    assert "op-1" in {entity.id for entity in feed.entity}  # still in force


def test_a_new_gtfs_zip_is_uploaded_by_a_transit_operator(
    transit_client: TestClient, keys: dict[Role, str], gtfs_path: Path, gtfs_zip: bytes, registry: Registry
) -> None:
    operator = bearer(keys[Role.TRANSIT])
    assert transit_client.put("/v1/transit/gtfs.zip", content=gtfs_zip).status_code == 401
    broken = transit_client.put("/v1/transit/gtfs.zip", content=b"nope", headers=operator)
    assert broken.status_code == 422
    assert broken.json()["detail"]["problems"] == [
        {"file": "(zip)", "row": None, "field": None, "reason": "not a zip archive (File is not a zip file)"}
    ]
    assert gtfs_path.read_bytes() == gtfs_zip  # the zip in use is untouched
    accepted = transit_client.put("/v1/transit/gtfs.zip", content=gtfs_zip, headers=operator)
    assert accepted.status_code == 200
    assert accepted.json()["trips"] == 902
    with registry.session() as session:
        replaced = [e for e in entries(session) if e.action == "transit.gtfs.replace"]
    uploads = [(e.result, e.after or {}) for e in replaced]
    assert [(result, after["bytes"]) for result, after in uploads] == [("ok", len(gtfs_zip)), ("refused", 4)]
    assert uploads[0][1]["sha256"] == hashlib.sha256(gtfs_zip).hexdigest()
    assert uploads[0][1]["trips"] == 902
    assert "not a zip archive" in (replaced[1].detail or "")


def test_feed_headers_are_the_build_time_even_when_nothing_changed(
    transit_client: TestClient, store: SqliteStore, timetable: Timetable, friday: list[Bus], clock: FakeClock
) -> None:
    """The header says when the feed was made; one frozen at the newest fix reads as stale (W007, W008)."""
    store.write(list(fixes_between(timetable, friday, NOW_S - 150, NOW_S - 30)))
    for later_s in (0, 20, 40):
        clock.now_ms = NOW_MS + later_s * 1000
        for path in ("/v1/transit/trip-updates", "/v1/transit/vehicle-positions", "/v1/transit/alerts"):
            feed = rt.FeedMessage.FromString(transit_client.get(path).content)
            assert feed.header.timestamp == NOW_S + later_s, path


def test_occupancy_is_left_out_until_the_validator_has_counted_a_whole_ride(
    transit_client: TestClient, store: SqliteStore, timetable: Timetable, friday: list[Bus], clock: FakeClock
) -> None:
    store.write(list(fixes_between(timetable, friday, NOW_S - 150, NOW_S + 1)))
    first = rt.FeedMessage.FromString(transit_client.get("/v1/transit/vehicle-positions").content)
    heard = {entity.id for entity in first.entity}
    just_started, counting = [bus for bus in friday if bus.vehicle_id in heard][:2]
    store.write(
        [
            Point(
                "validator",
                bus_tags(bus, f"validator-{bus.vehicle_id}"),
                NOW_MS - ago_s * 1000,
                {"taps_resident": 7},
            )
            for bus, readings in ((just_started, (90, 30)), (counting, (1500, 600, 30)))  # ride: 20 min
            for ago_s in readings
        ]
    )
    clock.now_ms += 1000  # past the snapshot in use
    feed = rt.FeedMessage.FromString(transit_client.get("/v1/transit/vehicle-positions").content)
    vehicles = {entity.id: entity.vehicle for entity in feed.entity}
    assert not vehicles[just_started.vehicle_id].HasField("occupancy_status")  # not EMPTY: unknown
    assert not vehicles[just_started.vehicle_id].HasField("occupancy_percentage")
    assert vehicles[counting.vehicle_id].occupancy_status == rt.VehiclePosition.EMPTY
    assert vehicles[counting.vehicle_id].HasField("occupancy_percentage")
    assert vehicles[counting.vehicle_id].occupancy_percentage == 0


def test_health_says_which_timetable_is_loaded_or_why_none_is(
    transit_client: TestClient, gtfs_path: Path, transit: TransitService
) -> None:
    health = transit_client.get("/health").json()
    assert (health["timetable"], health["timetable_version"], health["timetable_refused"]) == (
        "loaded",
        FEED_VERSION,
        None,
    )
    gtfs_path.write_bytes(b"not a zip")
    transit.source.check_every_s = 0
    health = transit_client.get("/health").json()
    assert (health["timetable"], health["timetable_version"]) == ("loaded", FEED_VERSION)  # the old one stays
    assert health["timetable_refused"].startswith("invalid GTFS: (zip): not a zip archive")

    empty = TransitService(transit.settings.model_copy(update={"transit_gtfs_path": gtfs_path}))
    transit_client.app.state.transit = empty  # type: ignore[attr-defined]
    health = transit_client.get("/health").json()
    assert (health["status"], health["timetable"], health["timetable_version"]) == ("ok", "none", None)
    assert health["timetable_refused"].startswith("invalid GTFS: (zip): not a zip archive")


def test_after_a_swap_realtime_ids_stay_on_the_old_zip_while_caches_may_hold_it(
    transit_client: TestClient,
    store: SqliteStore,
    timetable: Timetable,
    friday: list[Bus],
    clock: FakeClock,
    keys: dict[Role, str],
) -> None:
    store.write(list(fixes_between(timetable, friday, NOW_S - 150, NOW_S + 1200)))

    def trip_updates() -> rt.FeedMessage:
        return rt.FeedMessage.FromString(transit_client.get("/v1/transit/trip-updates").content)

    before = trip_updates()
    assert before.header.feed_version == FEED_VERSION
    files = network_files()
    files["feed_info.txt"] = files["feed_info.txt"].replace(FEED_VERSION.encode(), b"lviv-fixture-2")
    files["trips.txt"] = files["trips.txt"].replace(b"A29-weekday-0", b"A29-weekday-zero")
    files["stop_times.txt"] = files["stop_times.txt"].replace(b"A29-weekday-0", b"A29-weekday-zero")
    files["frequencies.txt"] = files["frequencies.txt"].replace(b"A29-weekday-0", b"A29-weekday-zero")
    new_zip = zip_files(files)
    answer = transit_client.put(
        "/v1/transit/gtfs.zip",
        content=new_zip,
        headers={**bearer(keys[Role.TRANSIT]), "Content-Type": "application/zip"},
    )
    assert answer.status_code == 200, answer.text
    assert transit_client.get("/v1/transit/gtfs.zip").content == new_zip  # downloadable at once
    for later_s in (1, ZIP_MAX_AGE_S - 1):
        clock.now_ms = NOW_MS + later_s * 1000
        feed = trip_updates()
        assert feed.header.feed_version == FEED_VERSION, later_s
        assert not any(e.trip_update.trip.trip_id == "A29-weekday-zero" for e in feed.entity)
    clock.now_ms = NOW_MS + ZIP_MAX_AGE_S * 1000
    after = trip_updates()
    assert after.header.feed_version == "lviv-fixture-2"
    trip_ids = {entity.trip_update.trip.trip_id for entity in after.entity}
    assert "A29-weekday-zero" in trip_ids
    assert "A29-weekday-0" not in trip_ids


def test_a_site_engineer_cannot_replace_the_city_wide_gtfs_and_the_attempt_is_audited(
    transit_client: TestClient, keys: dict[Role, str], gtfs_path: Path, gtfs_zip: bytes, registry: Registry
) -> None:
    other = damaged_zip("agency.txt", b"agency_name,agency_url,agency_timezone\nX,http://x.example,UTC\n")
    refused = transit_client.put("/v1/transit/gtfs.zip", content=other, headers=bearer(keys[Role.ENGINEER]))
    assert refused.status_code == 403
    assert "transit" in refused.json()["detail"]
    assert gtfs_path.read_bytes() == gtfs_zip
    assert transit_client.get("/v1/transit/gtfs.zip").content == gtfs_zip
    with registry.session() as session:
        [entry] = entries(session, action="access.refused")
        assert [e.action for e in entries(session) if e.action.startswith("transit.")] == []
    assert (entry.target, entry.result, entry.role) == ("PUT /v1/transit/gtfs.zip", "refused", "engineer")
    assert entry.actor.startswith(f"key:{keys[Role.ENGINEER][4:16]} ")
    assert entry.after == {"status": 403, "client": "testclient"}
