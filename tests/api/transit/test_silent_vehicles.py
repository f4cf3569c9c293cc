"""A vehicle that falls silent leaves the feeds in steps, on its own clock, not all at once.

Up to ``feed_max_vehicle_age_s`` after its last fix it is live. For ``transit_stale_grace_s``
more, its VehiclePosition stays where it was last heard, with that fix's timestamp (an app greys it
out by its age), on the run it was on; its run's TripUpdate stays (timestamped alike, never
predicting the past) but its block's next run is no longer predicted. Then it is gone.
"""

from __future__ import annotations

import datetime as dt

from google.transit import gtfs_realtime_pb2 as rt

from api.settings import ApiSettings
from api.transit.feeds import FeedKind, TransitService
from api.transit.timetable import Timetable
from collector.store.sqlite import SqliteStore
from simulators.transit.buses import Bus, fixes_between
from tests.api.transit import rules
from tests.api.transit.conftest import FRIDAY

MAX_AGE_S = 90


def _feeds(service: TransitService, store: SqliteStore, timetable: Timetable, now_s: int) -> rules.Feeds:
    snapshot = service.snapshot(store, now_ms=now_s * 1000, max_age_s=MAX_AGE_S, max_ahead_s=30)
    return rules.Feeds(
        snapshot.feeds[FeedKind.VEHICLE_POSITIONS],
        snapshot.feeds[FeedKind.TRIP_UPDATES],
        snapshot.feeds[FeedKind.ALERTS],
        timetable,
        now_s,
    )


def _updates(feeds: rules.Feeds, vehicle_id: str) -> list[rt.TripUpdate]:
    return [u for u in feeds.updates() if u.vehicle.id == vehicle_id]


def test_a_silent_vehicle_fades_out_of_the_feeds_on_its_own_clock(
    transit: TransitService,
    settings: ApiSettings,
    store: SqliteStore,
    timetable: Timetable,
    friday: list[Bus],
) -> None:
    grace_s = transit.settings.transit_stale_grace_s
    assert grace_s == settings.transit_stale_grace_s == 120
    start_s = int(dt.datetime.combine(FRIDAY, dt.time(8, 0), tzinfo=timetable._zone).timestamp())
    # Trams of line 1 fall silent at 08:10 (a radio outage on their side of town); the others go on.
    silent = [bus for bus in friday if bus.route_id == "T1"]
    heard = [bus for bus in friday if bus.route_id != "T1"]
    silent_from_s = start_s + 600
    written_s, by_time = start_s - 150, {}
    for now_s in range(start_s, silent_from_s + MAX_AGE_S + int(grace_s) + 30, 10):
        store.write(list(fixes_between(timetable, heard, written_s, now_s + 1)))
        store.write(list(fixes_between(timetable, silent, written_s, min(now_s + 1, silent_from_s))))
        written_s = now_s + 1
        by_time[now_s] = _feeds(transit, store, timetable, now_s)

    live = by_time[silent_from_s - 10]
    tram_ids = {bus.vehicle_id for bus in silent}
    on_trips = {p.vehicle.id: p for p in live.positions() if p.vehicle.id in tram_ids and p.trip.trip_id}
    assert len(on_trips) >= 3
    for vehicle_id in on_trips:
        assert len(_updates(live, vehicle_id)) == 2  # its run and the next of its block

    last_fix_s = {
        bus.vehicle_id: max(
            p.ts_ms for p in fixes_between(timetable, [bus], silent_from_s - 60, silent_from_s)
        )
        // 1000
        for bus in silent
        if bus.vehicle_id in on_trips
    }
    for now_s, feeds in by_time.items():
        assert rules.check(feeds, rules.ERRORS) == {}, now_s
        positions = {p.vehicle.id: p for p in feeds.positions()}
        assert {bus.vehicle_id for bus in heard} & set(positions)  # the others are untouched
        for vehicle_id, before in on_trips.items():
            age_s = now_s - last_fix_s[vehicle_id]
            if age_s <= MAX_AGE_S:
                continue  # live (its last fix ages)
            if age_s <= MAX_AGE_S + grace_s:
                # Fading: where and when it was last heard, on its run; that run's predictions only.
                position = positions[vehicle_id]
                assert position.timestamp < now_s - MAX_AGE_S
                assert position.trip.trip_id == before.trip.trip_id
                (update,) = _updates(feeds, vehicle_id)
                assert update.trip.trip_id == before.trip.trip_id
                assert update.timestamp == position.timestamp
                assert all(s.departure.time >= now_s for s in update.stop_time_update)
            else:
                assert vehicle_id not in positions
                assert _updates(feeds, vehicle_id) == []
    last = by_time[max(by_time)]
    assert not tram_ids & {p.vehicle.id for p in last.positions()}
    assert {bus.vehicle_id for bus in heard} & {p.vehicle.id for p in last.positions()}
