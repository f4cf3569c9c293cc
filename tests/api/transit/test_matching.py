"""Trip matching on the simulated Friday: right runs or none, never a guess."""

from __future__ import annotations

import datetime as dt

from api.transit.feeds import TransitService
from api.transit.matching import scheduled_time
from api.transit.timetable import Timetable
from collector.store.sqlite import SqliteStore
from simulators.transit.buses import DETOUR_ROUTE, Bus, fixes_between, where
from tests.api.transit.conftest import FRIDAY

HEADWAY_S = {"T1": 12 * 60, "T6": 10 * 60, "A3": 15 * 60, "A29": 10 * 60}  # weekday daytime


def _local(timetable: Timetable, hour: int, minute: int) -> int:
    return int(dt.datetime.combine(FRIDAY, dt.time(hour, minute), tzinfo=timetable._zone).timestamp())


CHECKS = ((6, 50), (8, 5), (12, 30), (15, 45), (19, 10), (22, 20))


def _score(
    transit: TransitService, store: SqliteStore, timetable: Timetable, friday: list[Bus], *, running_s: int
) -> tuple[int, int, int, int]:
    """Right, wrong, buses near their schedule, wrong far from it: at the checks, after ``running_s``."""
    right = wrong = on_road = wrong_far = 0
    for hour, minute in CHECKS:
        now_s = _local(timetable, hour, minute)
        written_s = now_s - running_s - 150
        for at_s in range(now_s - running_s, now_s + 1, 10):
            store.write(list(fixes_between(timetable, friday, written_s, at_s + 1)))
            written_s = at_s + 1
            matches = transit.snapshot(store, now_ms=at_s * 1000, max_age_s=90, max_ahead_s=30).matches
        for bus in friday:
            state = where(timetable, bus, now_s)
            if state is None or not state.has_fix or state.off_line:
                assert bus.vehicle_id not in matches
                continue
            match = matches.get(bus.vehicle_id)
            run = state.ride.run
            delay = now_s - scheduled_time(run, timetable.path(run.trip.trip_id), state.along_m)
            # A bus half a headway or more late looks exactly like the next run on time: with
            # positions alone either answer is a guess, so only closer buses must be right.
            if abs(delay) >= HEADWAY_S[bus.route_id] / 2:
                wrong_far += match is not None and match.run.key != run.key
                continue
            on_road += 1
            if match is not None:
                right += match.run.key == run.key
                wrong += match.run.key != run.key
    return right, wrong, on_road, wrong_far


def test_buses_are_put_on_their_true_runs_or_left_unassigned(
    transit: TransitService, store: SqliteStore, timetable: Timetable, friday: list[Bus]
) -> None:
    right, wrong, on_road, _ = _score(transit, store, timetable, friday, running_s=0)
    assert wrong == 0
    # 41 of 78 when written, 56 before a fresh start asked for evidence: a bus standing at a terminus
    # or a stop fits the run that just left as well as its own, and waits until it moves (test_cold_start).
    assert right >= 0.5 * on_road, (right, on_road)


def test_a_running_service_follows_buses_through_the_hub_and_never_guesses(
    transit: TransitService, store: SqliteStore, timetable: Timetable, friday: list[Bus]
) -> None:
    right, wrong, on_road, wrong_far = _score(transit, store, timetable, friday, running_s=600)
    assert (wrong, wrong_far) == (0, 0)  # not even a bus far behind its schedule (4 without blocks)
    # Runs followed since departure and blocks (the next run leaves from where the last ended,
    # after it) settle most buses a fresh start cannot tell apart.
    assert right >= 0.85 * on_road, (right, on_road)  # 71 of 78 when written; a fresh start: 56


def test_a_bus_on_a_detour_is_unassigned_and_found_again_when_back(
    transit: TransitService, store: SqliteStore, timetable: Timetable, friday: list[Bus]
) -> None:
    bus = next(b for b in friday if b.route_id == DETOUR_ROUTE and any(r.detour for r in b.rides))
    ride = next(r for r in bus.rides if r.detour)
    seen: list[tuple[bool, str | None]] = []
    for at_s in range(int(ride.actual_departures[0]), int(ride.actual_arrivals[-1]) - 60, 30):
        store.write(list(fixes_between(timetable, [bus], at_s - 150, at_s + 1)))
        match = transit.snapshot(store, now_ms=at_s * 1000, max_age_s=90, max_ahead_s=30).matches.get(
            bus.vehicle_id
        )
        state = where(timetable, bus, at_s)
        assert state is not None
        seen.append((state.off_line, match.run.key if match else None))
    assert all(key is None for off_line, key in seen if off_line)  # never guessed while off its line
    assert any(off_line for off_line, _ in seen)
    assert seen[-1][1] == ride.run.key  # back on the line, back on its run


def test_a_bus_that_stops_reporting_leaves_the_feeds(
    transit: TransitService, store: SqliteStore, timetable: Timetable, friday: list[Bus]
) -> None:
    now_s = _local(timetable, 10, 0)
    store.write(list(fixes_between(timetable, friday, now_s - 150, now_s + 1)))
    assert transit.snapshot(store, now_ms=now_s * 1000, max_age_s=90, max_ahead_s=30).matches
    gone_s = now_s + 91 + int(transit.settings.transit_stale_grace_s)  # fading first: test_silent_vehicles
    later = transit.snapshot(store, now_ms=gone_s * 1000, max_age_s=90, max_ahead_s=30)
    assert later.matches == {}
    assert all(len(feed.entity) == 0 for kind, feed in later.feeds.items() if kind.value != "alerts")
    assert (
        len(later.feeds[next(k for k in later.feeds if k.value == "alerts")].entity) == 4
    )  # every route silent
