"""Blocks in the feeds: each bus's next run has predictions, and a bus in layover is on that run."""

from __future__ import annotations

import datetime as dt

from google.transit import gtfs_realtime_pb2 as rt

from api.transit.blocks import TURNAROUND_S
from api.transit.feeds import FeedKind, TransitService
from api.transit.timetable import Timetable
from collector.store.sqlite import SqliteStore
from simulators.transit.buses import Bus, fixes_between, where
from tests.api.transit import rules
from tests.api.transit.conftest import FRIDAY


def _run_service(
    transit: TransitService,
    store: SqliteStore,
    timetable: Timetable,
    friday: list[Bus],
    start_s: int,
    end_s: int,
) -> dict[int, tuple[rt.FeedMessage, rt.FeedMessage]]:
    """VehiclePositions and TripUpdates every 10 s from ``start_s`` to ``end_s``, fixes written as made."""
    written_s, feeds = start_s - 150, {}
    for now_s in range(start_s, end_s, 10):
        store.write(list(fixes_between(timetable, friday, written_s, now_s + 1)))
        written_s = now_s + 1
        snapshot = transit.snapshot(store, now_ms=now_s * 1000, max_age_s=90, max_ahead_s=30)
        feeds[now_s] = (snapshot.feeds[FeedKind.VEHICLE_POSITIONS], snapshot.feeds[FeedKind.TRIP_UPDATES])
    return feeds


def _local(timetable: Timetable, hour: int, minute: int) -> int:
    return int(dt.datetime.combine(FRIDAY, dt.time(hour, minute), tzinfo=timetable._zone).timestamp())


def test_trip_updates_give_each_bus_its_next_run_after_its_turnaround(
    transit: TransitService, store: SqliteStore, timetable: Timetable, friday: list[Bus]
) -> None:
    end_s = _local(timetable, 8, 15)
    positions, updates = _run_service(transit, store, timetable, friday, end_s - 900, end_s + 1)[end_s]
    trip_of = {
        e.vehicle.vehicle.id: e.vehicle.trip.trip_id for e in positions.entity if e.vehicle.trip.trip_id
    }
    by_vehicle: dict[str, list[rt.TripUpdate]] = {}
    for entity in updates.entity:
        by_vehicle.setdefault(entity.trip_update.vehicle.id, []).append(entity.trip_update)
    followed = 0
    for vehicle_id, trip_id in trip_of.items():
        current, *after = by_vehicle[vehicle_id]
        assert current.trip.trip_id == trip_id  # the run it drives comes first
        run = timetable.run_of(trip_id, end_s)
        assert run is not None
        following = timetable.next_in_block(run)
        if following is None:
            assert after == []  # a headway trip: no block, no next run known
            continue
        (upcoming,) = after
        followed += 1
        assert upcoming.trip.trip_id == following.trip.trip_id
        assert upcoming.trip.start_date == following.start_date
        assert upcoming.trip.start_time == following.start_time
        first = upcoming.stop_time_update[0]
        assert first.stop_sequence == following.trip.stop_times[0].stop_sequence
        # It leaves on schedule or, late, as soon as it is back from its current run and turned round.
        back = current.stop_time_update[-1].arrival.time
        assert first.departure.time == max(following.departure(0), back + TURNAROUND_S)
        assert upcoming.delay == first.departure.time - following.departure(0)
        # And the truth: the bus does drive that run next.
        bus = next(b for b in friday if b.vehicle_id == vehicle_id)
        runs = [ride.run.key for ride in bus.rides]
        assert runs[runs.index(run.key) + 1] == following.key
    assert followed >= 8  # every tram and bus 3A on the road at 08:15


def test_a_bus_waiting_at_a_terminus_is_on_the_next_run_of_its_block(
    transit: TransitService, store: SqliteStore, timetable: Timetable, friday: list[Bus]
) -> None:
    start_s, end_s = _local(timetable, 7, 0), _local(timetable, 9, 0)
    feeds = _run_service(transit, store, timetable, friday, start_s, end_s)
    waiting = placed = without_trip = seen = 0
    for now_s, (positions, updates) in list(feeds.items())[60:]:  # after the first 10 minutes
        published = {e.vehicle.vehicle.id: e.vehicle for e in positions.entity}
        for bus in friday:
            state = where(timetable, bus, now_s)
            vehicle = published.get(bus.vehicle_id)
            if state is None or vehicle is None or bus.route_id == "A29":
                continue  # out of service, unheard, or a headway route (no blocks)
            seen += 1
            without_trip += not vehicle.trip.trip_id
            layover = state.ride.actual_departures[0] - 30 > now_s and state.ride is not bus.rides[0]
            if layover:
                waiting += 1
                if vehicle.trip.trip_id == state.ride.run.trip.trip_id:
                    placed += 1
                    # At its first stop, or pulling in to it (a fix from before it stopped).
                    assert vehicle.current_status in (
                        rt.VehiclePosition.STOPPED_AT,
                        rt.VehiclePosition.INCOMING_AT,
                    )
                    assert vehicle.current_stop_sequence == state.ride.run.trip.stop_times[0].stop_sequence
                    assert any(e.trip_update.trip.trip_id == vehicle.trip.trip_id for e in updates.entity)
    assert waiting > 100
    assert placed >= 0.95 * waiting, (placed, waiting)  # all 1967 when written, 1285 before blocks
    # Positions without a trip are the exception: 40 of 7909 when written, 831 before blocks.
    assert without_trip <= 0.02 * seen, (without_trip, seen)


def test_a_bus_with_its_next_run_in_trip_updates_pairs_as_peers_expect(timetable: Timetable) -> None:
    """E047 lets one vehicle's trips of one block pair differently (gtfs-rt-validator does); E052 is
    about VehiclePositions only."""
    now_s = _local(timetable, 10, 0)
    run = next(r for r in timetable.runs_between(now_s, now_s) if r.trip.block_id)
    following = timetable.next_in_block(run)
    assert following is not None
    stranger = next(
        r for r in timetable.runs_between(now_s, now_s) if r.trip.block_id not in (None, run.trip.block_id)
    )
    for next_trip, errors in (
        (following, []),
        (stranger, [f"bus-1: {run.trip.trip_id} vs {stranger.trip.trip_id}"]),
    ):
        vp, tu = rt.FeedMessage(), rt.FeedMessage()
        position = vp.entity.add(id="bus-1").vehicle
        position.vehicle.id, position.trip.trip_id = "bus-1", run.trip.trip_id
        for trip in (run, next_trip):
            update = tu.entity.add(id=trip.key).trip_update
            update.vehicle.id, update.trip.trip_id = "bus-1", trip.trip.trip_id
        feeds = rules.Feeds(vp, tu, rt.FeedMessage(), timetable, now_s)
        assert rules.e047_vehicle_trip_pairs_agree(feeds) == errors
        assert rules.e052_vehicle_ids_unique(feeds) == []
