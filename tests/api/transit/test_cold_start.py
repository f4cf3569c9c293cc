"""Restarts and GTFS swaps: from a cold start no bus is put on a run another vehicle drives.

The reported bug: after an API restart or a GTFS swap, a bus standing at a terminus was published
on the run of a bus that had just left from there, for minutes, while the real bus had no trip.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from api.settings import ApiSettings
from api.transit.feeds import TransitService
from api.transit.matching import TripMatch, scheduled_time
from api.transit.timetable import Timetable
from collector.store.sqlite import SqliteStore
from simulators.transit.buses import Bus, fixes_between, where
from simulators.transit.network import network_files, zip_files
from tests.api.transit.conftest import FRIDAY
from tests.api.transit.test_matching import HEADWAY_S


def _drivers(friday: list[Bus]) -> dict[str, str]:
    return {ride.run.key: bus.vehicle_id for bus in friday for ride in bus.rides}


def _at_terminus_while_another_leaves(timetable: Timetable, friday: list[Bus]) -> list[tuple[int, Bus, Bus]]:
    """Moments of the day when a bus waits at a first stop and another bus left it 30 s to 5 min ago."""
    day = timetable.day_start(FRIDAY)
    found = []
    for at_s in range(day + 6 * 3600, day + 22 * 3600, 300):
        states = {bus.vehicle_id: where(timetable, bus, at_s) for bus in friday}
        for waiting in friday:
            state = states[waiting.vehicle_id]
            if state is None or state.ride.actual_departures[0] <= at_s + 120:
                continue  # not waiting, or about to leave
            first_stop = state.ride.run.trip.stop_times[0].stop_id
            for leaving in friday:
                other = states[leaving.vehicle_id]
                if (
                    other is not None
                    and leaving is not waiting
                    and other.ride.run.trip.stop_times[0].stop_id == first_stop
                    and at_s - 300 <= other.ride.actual_departures[0] <= at_s - 30
                ):
                    found.append((at_s, waiting, leaving))
    return found


def _foreign(
    matches: dict[str, TripMatch],
    drivers: dict[str, str],
    timetable: Timetable,
    friday: list[Bus],
    now_s: int,
) -> list[str]:
    """Buses published on a run another vehicle drives.

    But for buses half a headway or more off their schedule: with positions alone such a bus looks
    exactly like the next (or previous) run on time, and only its past tells (test_matching).
    """
    found = []
    for bus in friday:
        match = matches.get(bus.vehicle_id)
        if match is None or drivers.get(match.run.key) == bus.vehicle_id:
            continue
        state = where(timetable, bus, now_s)
        assert state is not None
        run = state.ride.run
        delay = now_s - scheduled_time(run, timetable.path(run.trip.trip_id), state.along_m)
        if abs(delay) < HEADWAY_S[bus.route_id] / 2:
            found.append(f"{bus.vehicle_id} on {match.run.key} (driven by {drivers.get(match.run.key)})")
    return found


def _drive(
    service: TransitService,
    store: SqliteStore,
    timetable: Timetable,
    friday: list[Bus],
    start_s: int,
    end_s: int,
    *,
    written_s: int,
) -> list[tuple[int, dict[str, TripMatch]]]:
    """Builds every 10 s from ``start_s`` to ``end_s``, fixes written as they happen."""
    seen = []
    for now_s in range(start_s, end_s, 10):
        store.write(list(fixes_between(timetable, friday, written_s, now_s + 1)))
        written_s = now_s + 1
        seen.append(
            (now_s, service.snapshot(store, now_ms=now_s * 1000, max_age_s=90, max_ahead_s=30).matches)
        )
    return seen


def test_after_a_restart_a_standing_bus_never_takes_the_run_of_one_that_left(
    settings: ApiSettings, gtfs_path: Path, store: SqliteStore, timetable: Timetable, friday: list[Bus]
) -> None:
    moments = _at_terminus_while_another_leaves(timetable, friday)
    assert len(moments) > 50  # it happens all day long at every terminus
    drivers = _drivers(friday)
    foreign: list[str] = []
    left_on_their_run = 0
    for at_s, waiting, leaving in moments[:: len(moments) // 16]:
        # The API was running before the restart: the store holds the last minutes' fixes.
        restarted = TransitService(settings.model_copy(update={"transit_gtfs_path": gtfs_path}))
        store.write(list(fixes_between(timetable, friday, at_s - 600, at_s)))
        for now_s, matches in _drive(restarted, store, timetable, friday, at_s, at_s + 300, written_s=at_s):
            foreign += [
                f"{(now_s - at_s)} s after restart: {f}"
                for f in _foreign(matches, drivers, timetable, friday, now_s)
            ]
            standing = matches.get(waiting.vehicle_id)
            if standing is not None and drivers[standing.run.key] != waiting.vehicle_id:
                foreign.append(f"STANDING {waiting.vehicle_id} on {standing.run.key}")
        left_on_their_run += (
            drivers.get(matches[leaving.vehicle_id].run.key) == leaving.vehicle_id
            if leaving.vehicle_id in matches
            else 0
        )
    assert not foreign, "\n".join(foreign)
    assert left_on_their_run >= 12  # the buses that left are on their runs (not left out to be safe)


def test_after_a_gtfs_swap_no_bus_is_put_on_another_vehicles_run(
    settings: ApiSettings, gtfs_path: Path, store: SqliteStore, timetable: Timetable, friday: list[Bus]
) -> None:
    service = TransitService(settings.model_copy(update={"transit_gtfs_path": gtfs_path}))
    drivers = _drivers(friday)
    foreign: list[str] = []
    for hour, minute in ((8, 30), (15, 15), (19, 20)):
        at_s = int(dt.datetime.combine(FRIDAY, dt.time(hour, minute), tzinfo=timetable._zone).timestamp())
        _drive(service, store, timetable, friday, at_s - 600, at_s, written_s=at_s - 750)
        files = network_files()
        files["feed_info.txt"] = files["feed_info.txt"].replace(b"lviv-fixture-1", f"swap-{hour}".encode())
        service.source.publish(zip_files(files), now_s=at_s)
        # The feeds keep the old zip's trips for ZIP_MAX_AGE_S (300 s), then start again from the new one.
        for now_s, matches in _drive(service, store, timetable, friday, at_s, at_s + 600, written_s=at_s):
            foreign += [
                f"{now_s - at_s} s after swap: {f}"
                for f in _foreign(matches, drivers, timetable, friday, now_s)
            ]
        assert service.snapshot(store, now_ms=(at_s + 600) * 1000, max_age_s=90, max_ahead_s=30).feeds
    assert not foreign, "\n".join(foreign)
