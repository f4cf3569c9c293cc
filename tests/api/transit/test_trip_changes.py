"""Trip changes: operators cancel runs and skip stops, and runs with no bus are detected as missed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from google.transit import gtfs_realtime_pb2 as rt

from api.registry import Registry
from api.registry.audit import entries
from api.security import Role
from api.settings import ApiSettings
from api.transit.feeds import FeedKind, TransitService
from api.transit.timetable import Timetable, TripRun
from collector.store.base import Point
from collector.store.sqlite import SqliteStore
from simulators.transit.buses import Bus, fixes_between, where
from tests.api.factories import NOW_MS, FakeClock, bearer

NOW_S = NOW_MS // 1000
MISSED_AFTER_S = 300


@pytest.fixture
def transit(settings: ApiSettings, gtfs_path: Path) -> TransitService:
    """The feeds of the fixture network, missed runs detected 5 minutes after their start."""
    return TransitService(
        settings.model_copy(
            update={"transit_gtfs_path": gtfs_path, "transit_missed_run_after_s": MISSED_AFTER_S}
        )
    )


_STU = rt.TripUpdate.StopTimeUpdate


def _updates(client: TestClient) -> dict[str, rt.TripUpdate]:
    feed = rt.FeedMessage.FromString(client.get("/v1/transit/trip-updates").content)
    return {entity.id: entity.trip_update for entity in feed.entity}


def _alerts(client: TestClient) -> dict[str, rt.Alert]:
    feed = rt.FeedMessage.FromString(client.get("/v1/transit/alerts").content)
    return {entity.id: entity.alert for entity in feed.entity}


def _bus_run(
    updates: dict[str, rt.TripUpdate],
    timetable: Timetable,
    friday: list[Bus],
    *,
    not_route: str = "",
    started_s: int = 0,
) -> tuple[Bus, TripRun]:
    """A bus the feed has on a scheduled run begun ``started_s`` ago or more, three stops or more to go."""
    buses = {bus.vehicle_id: bus for bus in friday}
    for update in sorted(updates.values(), key=lambda u: u.vehicle.id):
        if (
            update.trip.schedule_relationship != rt.TripDescriptor.SCHEDULED
            or len(update.stop_time_update) < 3
        ):
            continue
        state = where(timetable, buses[update.vehicle.id], NOW_S)
        assert state is not None
        run = state.ride.run
        on_it = run.key == f"{update.trip.trip_id}@{update.trip.start_date}"
        if on_it and run.trip.route_id != not_route and run.departure(0) + started_s < NOW_S:
            return buses[update.vehicle.id], run
    raise AssertionError("no bus mid-run at NOW")


def _change(run: TripRun, **change: Any) -> dict[str, Any]:
    return {"trip_id": run.trip.trip_id, "start_date": run.start_date, **change}


def test_a_transit_operator_cancels_a_run_and_skips_stops_and_ends_both(
    transit_client: TestClient,
    store: SqliteStore,
    timetable: Timetable,
    friday: list[Bus],
    keys: dict[Role, str],
    clock: FakeClock,
    registry: Registry,
) -> None:
    store.write(list(fixes_between(timetable, friday, NOW_S - 150, NOW_S + 1)))
    bus, run = _bus_run(_updates(transit_client), timetable, friday)
    skipping_bus, skipping = _bus_run(_updates(transit_client), timetable, friday, not_route=bus.route_id)
    operator = bearer(keys[Role.TRANSIT])
    assert run.key in _updates(transit_client)  # its bus is on it

    cancel = _change(run, canceled=True, note="driver ill")
    assert transit_client.post("/v1/transit/trip-changes", json=cancel).status_code == 401
    assert (
        transit_client.post(
            "/v1/transit/trip-changes", json=cancel, headers=bearer(keys[Role.ENGINEER])
        ).status_code
        == 403
    )
    refused = transit_client.post(
        "/v1/transit/trip-changes", json={**cancel, "trip_id": "T6-nope"}, headers=operator
    )
    assert refused.status_code == 422
    assert refused.json()["detail"] == ["trip_id: 'T6-nope' is not in the GTFS in use"]
    saturday = transit_client.post(
        "/v1/transit/trip-changes", json={**cancel, "start_date": "20270116"}, headers=operator
    )
    assert saturday.json()["detail"] == [f"start_date: trip {run.trip.trip_id!r} does not run on 2027-01-16"]
    both = transit_client.post(
        "/v1/transit/trip-changes", json={**cancel, "skipped_stop_sequences": [20]}, headers=operator
    )
    assert both.status_code == 422
    last = skipping.trip.stop_times[-1].stop_sequence
    bad_stop = _change(skipping, skipped_stop_sequences=[last + 1])
    answer = transit_client.post("/v1/transit/trip-changes", json=bad_stop, headers=operator)
    assert answer.json()["detail"] == [
        f"skipped_stop_sequences[0]: trip {skipping.trip.trip_id!r} has no stop_sequence {last + 1}"
    ]

    yesterday = _change(run, canceled=True, start_date="20270114")
    over = transit_client.post("/v1/transit/trip-changes", json=yesterday, headers=operator)
    assert over.json()["detail"] == [f"start_date: the run {run.trip.trip_id}@20270114 is over"]

    canceled = transit_client.post("/v1/transit/trip-changes", json=cancel, headers=operator)
    assert canceled.status_code == 201, canceled.text
    skipped_sequences = [st.stop_sequence for st in skipping.trip.stop_times[-3:-1]]
    skip = _change(skipping, skipped_stop_sequences=skipped_sequences)
    skipped = transit_client.post("/v1/transit/trip-changes", json=skip, headers=operator)
    assert skipped.status_code == 201
    listed = transit_client.get("/v1/transit/trip-changes", headers=operator).json()
    assert [c["id"] for c in listed] == [canceled.json()["id"], skipped.json()["id"]]

    clock.now_ms += 1000
    updates = _updates(transit_client)
    # The canceled run: CANCELED, no stops; its bus is published without it (the operator's word wins).
    assert updates[run.key].trip.schedule_relationship == rt.TripDescriptor.CANCELED
    assert not updates[run.key].stop_time_update
    assert not updates[run.key].vehicle.id
    vehicles = rt.FeedMessage.FromString(transit_client.get("/v1/transit/vehicle-positions").content)
    assert {e.vehicle.vehicle.id: e.vehicle.trip.trip_id for e in vehicles.entity}[bus.vehicle_id] == ""
    # The run with skipped stops: its bus's predictions say SKIPPED there, with no times.
    update = updates[skipping.key]
    assert update.vehicle.id == skipping_bus.vehicle_id
    by_sequence = {stu.stop_sequence: stu for stu in update.stop_time_update}
    for sequence in skipped_sequences:
        assert by_sequence[sequence].schedule_relationship == _STU.SKIPPED
        assert not by_sequence[sequence].HasField("arrival")
    served = [stu for stu in update.stop_time_update if stu.stop_sequence not in skipped_sequences]
    assert all(stu.schedule_relationship == _STU.SCHEDULED and stu.arrival.time for stu in served)

    for change in (canceled.json(), skipped.json()):
        ended = transit_client.post(f"/v1/transit/trip-changes/{change['id']}/end", headers=operator)
        assert ended.json()["ended_at"] == clock.now_ms // 1000
    assert transit_client.post("/v1/transit/trip-changes/tc-99/end", headers=operator).status_code == 404
    clock.now_ms += 1000
    updates = _updates(transit_client)
    assert updates[run.key].trip.schedule_relationship == rt.TripDescriptor.SCHEDULED
    assert updates[run.key].vehicle.id == bus.vehicle_id
    assert all(stu.schedule_relationship == _STU.SCHEDULED for stu in updates[skipping.key].stop_time_update)

    with registry.session() as session:
        log = sorted(
            (e.action, e.result) for e in entries(session) if e.action.startswith("transit.trip_change")
        )
    assert log == [
        ("transit.trip_change.create", "ok"),
        ("transit.trip_change.create", "ok"),
        *[("transit.trip_change.create", "refused")] * 4,  # the fifth never reached the route (pydantic)
        ("transit.trip_change.end", "ok"),
        ("transit.trip_change.end", "ok"),
    ]


def test_a_canceled_run_without_a_bus_has_a_trip_update_of_its_own(
    transit_client: TestClient, timetable: Timetable, keys: dict[Role, str]
) -> None:
    later = next(
        run
        for run in timetable.runs_between(NOW_S + 3600, NOW_S + 3600)
        if not run.trip.frequencies and run.departure(0) > NOW_S
    )
    operator = bearer(keys[Role.TRANSIT])
    sequences = [later.trip.stop_times[1].stop_sequence]
    for change in (_change(later, canceled=True), _change(later, skipped_stop_sequences=sequences)):
        assert (
            transit_client.post("/v1/transit/trip-changes", json=change, headers=operator).status_code == 201
        )
    update = _updates(transit_client)[later.key]
    assert update.trip.schedule_relationship == rt.TripDescriptor.CANCELED  # a cancellation wins
    assert (update.trip.start_date, update.trip.start_time) == (later.start_date, later.start_time)
    assert update.timestamp == NOW_S


def _probe(transit: TransitService, store: SqliteStore) -> dict[str, rt.TripUpdate]:
    """TripUpdates at NOW as another API replica sees them (the app under test never saw the buses)."""
    probe = TransitService(transit.settings)
    feed = probe.build(store, now_ms=NOW_MS, max_age_s=90, max_ahead_s=5).feeds[FeedKind.TRIP_UPDATES]
    return {entity.id: entity.trip_update for entity in feed.entity}


def test_a_run_long_past_its_start_with_no_bus_is_detected_as_missed_and_comes_back_with_its_bus(
    transit_client: TestClient,
    transit: TransitService,
    store: SqliteStore,
    timetable: Timetable,
    friday: list[Bus],
    clock: FakeClock,
) -> None:
    store.write(list(fixes_between(timetable, friday, NOW_S - 150, NOW_S + 1)))
    bus, run = _bus_run(_probe(transit, store), timetable, friday, started_s=MISSED_AFTER_S)
    clock.now_ms += (
        260_000  # its fixes, and only its, stop coming: older than the feeds keep (90 s + 120 s fading)
    )
    others = [b for b in friday if b.vehicle_id != bus.vehicle_id]
    store.write(list(fixes_between(timetable, others, NOW_S + 110, NOW_S + 261)))
    update = _updates(transit_client)[run.key]
    assert update.trip.schedule_relationship == rt.TripDescriptor.CANCELED
    alert = _alerts(transit_client)[f"auto-missed-{run.key}"]
    assert alert.effect == rt.Alert.NO_SERVICE
    assert alert.informed_entity[0].trip.trip_id == run.trip.trip_id
    assert "no bus detected" in alert.header_text.translation[1].text
    # Only that run: every other running scheduled run has its bus.
    canceled = [
        k
        for k, u in _updates(transit_client).items()
        if u.trip.schedule_relationship == rt.TripDescriptor.CANCELED
    ]
    assert canceled == [run.key]

    # Heard again for half a minute (moving along its run: evidence enough to be put back on it).
    store.write(list(fixes_between(timetable, [bus], NOW_S + 110, NOW_S + 291)))
    store.write(list(fixes_between(timetable, others, NOW_S + 261, NOW_S + 291)))
    clock.now_ms += 30_000
    assert _updates(transit_client)[run.key].vehicle.id == bus.vehicle_id
    assert f"auto-missed-{run.key}" not in _alerts(transit_client)


def test_a_run_with_an_unmatched_bus_near_its_line_is_not_taken_as_missed(
    transit_client: TestClient,
    transit: TransitService,
    store: SqliteStore,
    timetable: Timetable,
    friday: list[Bus],
    clock: FakeClock,
) -> None:
    store.write(list(fixes_between(timetable, friday, NOW_S - 150, NOW_S + 1)))
    bus, run = _bus_run(_probe(transit, store), timetable, friday, started_s=MISSED_AFTER_S)
    clock.now_ms += (
        260_000  # its fixes, and only its, stop coming: older than the feeds keep (90 s + 120 s fading)
    )
    others = [b for b in friday if b.vehicle_id != bus.vehicle_id]
    store.write(list(fixes_between(timetable, others, NOW_S + 110, NOW_S + 261)))
    # The bus is heard 200 m off its line (a detour): not on the run, but maybe its bus.
    for point in fixes_between(timetable, [bus], NOW_S + 110, NOW_S + 261):
        fields = {**point.fields, "lat": float(point.fields["lat"]) + 0.0018}
        tags = {k: v for k, v in point.tags.items() if k != "route"}  # and says no route
        store.write([Point(point.measurement, tags, point.ts_ms, fields)])
    assert _updates(transit_client).get(run.key) is None
    assert f"auto-missed-{run.key}" not in _alerts(transit_client)


def test_a_run_seen_with_its_bus_is_not_taken_as_missed_when_the_bus_goes_silent(
    transit_client: TestClient, store: SqliteStore, timetable: Timetable, friday: list[Bus], clock: FakeClock
) -> None:
    store.write(list(fixes_between(timetable, friday, NOW_S - 150, NOW_S + 1)))
    bus, run = _bus_run(_updates(transit_client), timetable, friday, started_s=MISSED_AFTER_S)
    # Its tracker dies (or it ran early and is done), past the 90 s + 120 s fading: the run was not missed.
    clock.now_ms += 260_000
    others = [b for b in friday if b.vehicle_id != bus.vehicle_id]
    store.write(list(fixes_between(timetable, others, NOW_S + 110, NOW_S + 261)))
    assert run.key not in _updates(transit_client)
    assert f"auto-missed-{run.key}" not in _alerts(transit_client)
