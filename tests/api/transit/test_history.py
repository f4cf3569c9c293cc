"""Running times learned from stored positions: per segment and hour, robust, and none where thin."""

from __future__ import annotations

import datetime as dt
import statistics
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from api import create_app
from api.registry import Registry
from api.settings import ApiSettings
from api.transit.feeds import FeedKind, TransitService
from api.transit.history import (
    HistoryLearner,
    RunningTimes,
    Spread,
    StopGrid,
    samples_of,
    spread,
    successors_of,
    tracks,
    visits,
)
from api.transit.timetable import Timetable, TripRun
from api.transit.trip_updates import aim_s
from collector.store import Store, open_store, prepare
from collector.store.base import Point, Row
from collector.store.sqlite import SqliteStore
from simulators.transit.buses import Bus, Ride, fixes_between
from tests.api.factories import FakeClock
from tests.api.transit.conftest import FRIDAY
from tests.services import InfluxDB

TRIP = "A3-weekday-0-0645"  # 06:45 from the first stop; no detour, no tunnel on A3 unless told
SLOW = 3  # the segment from the 4th to the 5th stop is slow: twice its planned time, plus two minutes
DWELL_S = 25.0


def slow_rides(timetable: Timetable, days: int, *, extra_s: float = 0.0) -> list[Bus]:
    """One bus a day on ``TRIP``, on time but for the ``SLOW`` segment; ``extra_s`` more on day 0."""
    trip = timetable.trips[TRIP]
    buses = []
    for day in range(days):
        date = FRIDAY - dt.timedelta(days=day)
        run = TripRun(trip, date, timetable.day_start(date))
        clock = float(run.departure(0))
        arrivals, departures = [clock], [clock]
        for index in range(1, len(trip.stop_times)):
            planned = run.arrival(index) - run.departure(index - 1)
            slow = planned + 120.0 + (extra_s if day == 0 else 0.0) if index == SLOW + 1 else 0.0
            clock += planned + slow
            arrivals.append(clock)
            clock += DWELL_S if index < len(trip.stop_times) - 1 else 0.0
            departures.append(clock)
        ride = Ride(f"bus-{day}", run, tuple(arrivals), tuple(departures))
        buses.append(Bus(f"bus-{day}", f"#{day}", trip.route_id, True, (ride,)))
    return buses


def points_of(timetable: Timetable, buses: Sequence[Bus]) -> list[Point]:
    points = []
    for bus in buses:
        ride = bus.rides[0]
        start, end = int(ride.actual_departures[0]) - 60, int(ride.actual_arrivals[-1]) + 60
        points += fixes_between(timetable, [bus], start, end)
    return points


def truth(bus: Bus, index: int) -> float:
    """How long the bus really ran from stop ``index`` to the next."""
    ride = bus.rides[0]
    return ride.actual_arrivals[index + 1] - ride.actual_departures[index]


def test_visits_and_samples_of_one_track_are_the_bus_s_real_running_times_and_dwells(
    timetable: Timetable,
) -> None:
    (bus,) = slow_rides(timetable, 1)
    rows = [Row(p.ts_ms, p.tags, p.fields) for p in points_of(timetable, [bus])]
    (track,) = tracks(rows, timetable, centre_s=0)
    found = visits(track, StopGrid(timetable))
    trip = timetable.trips[TRIP]
    # Each stop of the trip once, in order (the other direction's stops across the street too, maybe).
    assert [v.stop_id for v in found if v.stop_id in {st.stop_id for st in trip.stop_times}] == [
        st.stop_id for st in trip.stop_times
    ]
    samples = samples_of(found, successors_of(timetable))
    runs = {(s.from_stop, s.to_stop): s.seconds for s in samples if s.to_stop is not None}
    dwells = {s.from_stop: s.seconds for s in samples if s.to_stop is None}
    stops = [st.stop_id for st in trip.stop_times]
    for index in range(len(stops) - 1):
        # Fixes every 5 s with 3.5 m of GPS noise: a running time is known within a few seconds, but
        # for the simulated bus's slow creep into and out of the stops of a long segment.
        tolerance = 0.12 * truth(bus, index) if index == SLOW else 10
        assert runs[(stops[index], stops[index + 1])] == pytest.approx(truth(bus, index), abs=tolerance)
    for stop in stops[1:-1]:
        tolerance = 30 if stop in stops[SLOW : SLOW + 2] else 10
        assert dwells[stop] == pytest.approx(DWELL_S, abs=tolerance)
    assert stops[-1] not in dwells  # the track ends there: it never left


def test_learned_times_are_a_median_and_a_spread_per_hour_and_nothing_where_history_is_thin(
    timetable: Timetable,
) -> None:
    trip = timetable.trips[TRIP]
    stops = [st.stop_id for st in trip.stop_times]
    buses = slow_rides(timetable, 6, extra_s=900)  # one day of the six a jam: 15 more minutes
    rows = [Row(p.ts_ms, p.tags, p.fields) for p in points_of(timetable, buses)]
    times = RunningTimes(timetable.timezone)
    grid, successors = StopGrid(timetable), successors_of(timetable)
    for track in tracks(rows, timetable, centre_s=0):
        times.add(samples_of(visits(track, grid), successors))
    learned = times.learned(min_samples=5)
    leave_s = buses[1].rides[0].actual_departures[SLOW]
    slow = learned.run(stops[SLOW], stops[SLOW + 1], leave_s)
    assert slow is not None
    assert slow.samples == 6
    dwell = learned.dwell(stops[SLOW + 1], leave_s + slow.median_s)
    assert dwell is not None
    # Leaving one stop to leaving the next, the jam does not move it (the simulated buses creep into
    # and out of stops, which shifts time from running to dwelling, not their sum).
    assert slow.median_s + dwell.median_s == pytest.approx(truth(buses[1], SLOW) + DWELL_S, abs=30)
    assert slow.median_s == pytest.approx(truth(buses[1], SLOW), rel=0.2)
    assert slow.sd_s > 150  # but one run in six was a quarter of an hour slower: nobody can be sure
    # Another hour of the day has no history: the schedule stands there.
    assert learned.run(stops[SLOW], stops[SLOW + 1], leave_s + 5 * 3600) is None
    assert times.learned(min_samples=7).run(stops[SLOW], stops[SLOW + 1], leave_s) is None
    # Forgetting what is older than the oldest day leaves five days: thin for six, enough for five.
    times.forget_before(buses[4].rides[0].actual_departures[0] - 3600)
    assert times.learned(min_samples=6).run(stops[SLOW], stops[SLOW + 1], leave_s) is None
    assert times.learned(min_samples=5).run(stops[SLOW], stops[SLOW + 1], leave_s) is not None


def test_the_spread_is_the_median_and_the_standard_deviation() -> None:
    found = spread([100, 110, 90, 105, 95, 1000])
    assert found.median_s == 102.5  # the jam does not move what a run takes
    assert found.sd_s == pytest.approx(statistics.stdev([100, 110, 90, 105, 95, 1000]))  # but how sure
    assert found.samples == 6
    assert spread([42.0]) == Spread(42.0, 0.0, 1)


@pytest.fixture(params=["sqlite", pytest.param("influxdb", marks=pytest.mark.integration)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path}/telemetry.sqlite"
    else:
        influxdb: InfluxDB = request.getfixturevalue("influxdb")
        url = f"influxdb://127.0.0.1:{influxdb.port}/history_{uuid.uuid4().hex[:12]}"
    opened = open_store(url)
    prepare(opened)
    yield opened
    opened.close()


def test_the_learner_reads_the_store_s_positions_then_only_what_came_since(
    store: Store, timetable: Timetable
) -> None:
    trip = timetable.trips[TRIP]
    stops = [st.stop_id for st in trip.stop_times]
    buses = slow_rides(timetable, 6)
    store.write(points_of(timetable, buses[1:]))
    now_ms = int(buses[0].rides[0].actual_departures[0] - 3600) * 1000  # the next morning, before day 0
    learner = HistoryLearner(days=7, sample_s=10, min_samples=5)
    assert learner.refresh(store, timetable, now_ms=now_ms) > 0
    assert learner.learned is not None
    leave_s = buses[1].rides[0].actual_departures[SLOW]
    assert learner.learned.run(stops[SLOW], stops[SLOW + 1], leave_s) is not None
    slow = learner.learned.run(stops[SLOW], stops[SLOW + 1], leave_s)
    assert slow is not None
    assert slow.median_s == pytest.approx(truth(buses[1], SLOW), rel=0.2)
    # A refresh reads only what came since: the same points again add nothing, day 0 adds its own.
    assert learner.refresh(store, timetable, now_ms=now_ms + 1000) == 0
    store.write(points_of(timetable, buses[:1]))
    later_ms = int(buses[0].rides[0].actual_arrivals[-1] + 3600) * 1000
    assert learner.refresh(store, timetable, now_ms=later_ms) > 0
    slow = learner.learned.run(stops[SLOW], stops[SLOW + 1], leave_s)
    assert slow is not None
    assert slow.samples == 6


def test_trip_updates_over_the_store_predict_a_slow_segment_from_its_history(
    store: Store, timetable: Timetable, gtfs_path: Path, settings: ApiSettings
) -> None:
    buses = slow_rides(timetable, 7)
    store.write(points_of(timetable, buses[1:]))  # the six days before
    live = buses[0].rides[0]  # today: between the stop before the slow segment and its first stop
    now_s = int(live.actual_departures[SLOW - 1]) + 20
    store.write(list(fixes_between(timetable, buses[:1], now_s - 150, now_s + 1)))
    transit_settings = settings.model_copy(update={"transit_gtfs_path": gtfs_path})
    learning, carrying = TransitService(transit_settings), TransitService(transit_settings)
    published = learning.source.current()
    assert published is not None
    learning.history.refresh(store, published.timetable, now_ms=now_s * 1000)
    reached = live.run.trip.stop_times[SLOW + 1].stop_sequence
    predicted = {}
    for name, service in (("learned", learning), ("carried", carrying)):
        feed = service.build(store, now_ms=now_s * 1000, max_age_s=90, max_ahead_s=5).feeds[
            FeedKind.TRIP_UPDATES
        ]
        (update,) = [e.trip_update for e in feed.entity if e.id == live.run.key]
        (stop,) = [stu for stu in update.stop_time_update if stu.stop_sequence == reached]
        predicted[name] = stop.arrival
    truth_s = live.actual_arrivals[SLOW + 1]
    # History knows the segment is slow at this hour; carrying the delay along the schedule does not.
    # (Published times are aimed into TransitApp's windows: the truth aimed alike is what to compare.)
    assert abs(predicted["learned"].time - aim_s(truth_s, now_s)) < 60
    assert truth_s - predicted["carried"].time > 120
    assert 0 < predicted["learned"].uncertainty < 120
    assert not predicted["carried"].HasField("uncertainty")


def test_the_app_learns_at_startup_in_the_background(
    timetable: Timetable, gtfs_path: Path, settings: ApiSettings, registry: Registry, tmp_path: Path
) -> None:
    store = SqliteStore(tmp_path / "telemetry.sqlite")
    buses = slow_rides(timetable, 6)
    store.write(points_of(timetable, buses))
    now_ms = int(buses[0].rides[0].actual_arrivals[-1] + 3 * 3600) * 1000
    configured = settings.model_copy(update={"transit_gtfs_path": gtfs_path})
    app = create_app(store, settings=configured, clock=FakeClock(now_ms), registry=registry)
    with TestClient(app):
        service: TransitService = app.state.transit
        deadline = time.monotonic() + 30
        while service.history.learned is None and time.monotonic() < deadline:
            time.sleep(0.05)
    assert service.history.learned is not None
    stops = [st.stop_id for st in timetable.trips[TRIP].stop_times]
    found = service.history.learned.run(stops[0], stops[1], buses[0].rides[0].actual_departures[0])
    assert found is not None
    assert found.samples == 6
    store.close()
