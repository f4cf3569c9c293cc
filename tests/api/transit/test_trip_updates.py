"""TripUpdates predictions: in order, and never in the past for a stop the bus has not reached."""

from __future__ import annotations

import itertools
import math

import pytest
from google.transit import gtfs_realtime_pb2

from api.transit.accuracy import WINDOWS
from api.transit.history import LearnedTimes, LocalHours, Spread
from api.transit.matching import TripMatch
from api.transit.timetable import Timetable, TripRun
from api.transit.trip_updates import HOLD_DWELL_S, TripProgress, add_trip_updates, aim_s, predict
from tests.api.factories import NOW_MS


def _run(timetable: Timetable) -> TripRun:
    """A run of the fixture network on the road at NOW with a few stops left after its third."""
    return next(
        run for run in timetable.runs_between(NOW_MS / 1000, NOW_MS / 1000) if len(run.trip.stop_times) > 5
    )


def test_a_bus_late_for_its_next_stop_is_predicted_there_from_now_on(timetable: Timetable) -> None:
    run = _run(timetable)
    path = timetable.path(run.trip.trip_id)
    # The bus is 200 m short of its third stop two minutes after it was due there, and its delay
    # estimate still says on time (stuck in traffic since its last fix).
    now_s = run.arrival(2) + 120
    stuck = TripMatch(run, along_m=path.stop_along_m[2] - 200, delay_s=0.0, confidence=1.0, next_stop=2)
    predictions = predict(stuck, path, now_s=now_s)
    assert [p.index for p in predictions] == list(range(2, len(run.trip.stop_times)))
    assert all(p.arrival_s >= now_s and p.departure_s >= p.arrival_s for p in predictions)
    assert predictions[0].arrival_s == now_s
    assert all(a.departure_s < b.arrival_s for a, b in itertools.pairwise(predictions))


def test_a_bus_at_its_stop_keeps_its_arrival_but_leaves_no_earlier_than_now(timetable: Timetable) -> None:
    run = _run(timetable)
    path = timetable.path(run.trip.trip_id)
    now_s = run.departure(2) + 60
    dwelling = TripMatch(run, along_m=path.stop_along_m[2], delay_s=0.0, confidence=1.0, next_stop=2)
    first, *rest = predict(dwelling, path, now_s=now_s)
    assert first.arrival_s == run.arrival(2)  # it did arrive, on time
    assert first.departure_s == now_s  # still there: it leaves now at the earliest
    assert all(p.arrival_s > now_s for p in rest)


def test_a_bus_on_time_is_predicted_on_its_schedule(timetable: Timetable) -> None:
    run = _run(timetable)
    path = timetable.path(run.trip.trip_id)
    now_s = run.arrival(2) - 60
    on_time = TripMatch(run, along_m=path.stop_along_m[2] - 300, delay_s=0.0, confidence=1.0, next_stop=2)
    predictions = predict(on_time, path, now_s=now_s)
    assert [p.arrival_s for p in predictions] == [run.arrival(i) for i in range(2, len(run.trip.stop_times))]


def _learned(
    timetable: Timetable, run: TripRun, *, factor: float, sd_s: float, dwell_s: float
) -> LearnedTimes:
    """History that says each segment of ``run`` takes ``factor`` times its planned time, at every hour."""
    stops = run.trip.stop_times
    runs, dwells = {}, {}
    for index in range(1, len(stops)):
        planned = run.arrival(index) - run.departure(index - 1)
        for hour in range(24):
            runs[(stops[index - 1].stop_id, stops[index].stop_id, hour)] = Spread(planned * factor, sd_s, 9)
            dwells[(stops[index].stop_id, hour)] = Spread(dwell_s, 4.0, 9)
    return LearnedTimes(LocalHours(timetable.timezone), runs, dwells)


def test_learned_running_times_replace_the_carried_delay_downstream(timetable: Timetable) -> None:
    run = _run(timetable)
    path = timetable.path(run.trip.trip_id)
    now_s = run.arrival(2) - 60
    on_time = TripMatch(run, along_m=path.stop_along_m[2] - 300, delay_s=0.0, confidence=1.0, next_stop=2)
    slow = _learned(timetable, run, factor=1.5, sd_s=20.0, dwell_s=30.0)
    predictions = predict(on_time, path, now_s=now_s, learned=slow)
    carried = predict(on_time, path, now_s=now_s)
    assert predictions[0].arrival_s == carried[0].arrival_s  # where the bus is now: its own delay
    for before, after in itertools.pairwise(predictions):
        # Downstream each segment takes what history says, each stop (but timing points) its dwell.
        stop_time = run.trip.stop_times[after.index]
        planned = run.arrival(after.index) - run.departure(before.index)
        assert after.arrival_s == before.departure_s + round(planned * 1.5)
        if stop_time.departure_s - stop_time.arrival_s < HOLD_DWELL_S:
            last = after.index == len(run.trip.stop_times) - 1
            assert after.departure_s - after.arrival_s == (0 if last else 30)
    assert predictions[-1].arrival_s > carried[-1].arrival_s + 60


def test_uncertainty_grows_with_the_horizon_is_zero_when_measured_and_omitted_when_unknown(
    timetable: Timetable,
) -> None:
    run = _run(timetable)
    path = timetable.path(run.trip.trip_id)
    now_s = run.arrival(2) - 60
    learned = _learned(timetable, run, factor=1.0, sd_s=20.0, dwell_s=15.0)
    moving = TripMatch(run, along_m=path.stop_along_m[2] - 300, delay_s=0.0, confidence=1.0, next_stop=2)
    predictions = predict(moving, path, now_s=now_s, learned=learned)
    arrivals = [p.arrival_uncertainty_s for p in predictions]
    assert all(u is not None for u in arrivals)
    stop_times = run.trip.stop_times
    hub = next(
        p.index
        for p in predictions
        if stop_times[p.index].departure_s - stop_times[p.index].arrival_s >= HOLD_DWELL_S
    )
    before_hub = arrivals[: hub - 2 + 1]
    assert before_hub == sorted(before_hub)  # grows with the horizon up to the timing point
    assert before_hub[-1] > before_hub[0] > 0
    # Independent segments of 20 s each: after n segments about 20 * sqrt(n), dwells adding a little.
    assert before_hub[-1] == pytest.approx(20 * math.sqrt(len(before_hub) - 0.5), rel=0.35)
    # An early bus waits at the timing point for its time: what it leaves with is more certain.
    assert predictions[hub - 2].departure_uncertainty_s < before_hub[-1]  # type: ignore[operator]
    at_stop = TripMatch(run, along_m=path.stop_along_m[2], delay_s=0.0, confidence=1.0, next_stop=2)
    first = predict(at_stop, path, now_s=now_s, learned=learned)[0]
    assert first.arrival_uncertainty_s == 0  # it is there: measured
    assert first.departure_uncertainty_s is not None
    assert first.departure_uncertainty_s > 0
    # Without history nothing is known of the spread; with a hole in it, nothing from there on.
    assert {p.arrival_uncertainty_s for p in predict(moving, path, now_s=now_s)} == {None}
    stops = run.trip.stop_times
    holed = LearnedTimes(
        learned.hours,
        {k: v for k, v in learned.runs.items() if k[:2] != (stops[4].stop_id, stops[5].stop_id)},
        learned.dwells,
    )
    partly = [p.arrival_uncertainty_s for p in predict(moving, path, now_s=now_s, learned=holed)]
    assert None not in partly[:3]
    assert set(partly[3:]) == {None}


def test_a_skipped_stop_has_no_dwell(timetable: Timetable) -> None:
    run = _run(timetable)
    path = timetable.path(run.trip.trip_id)
    now_s = run.arrival(2) - 60
    moving = TripMatch(run, along_m=path.stop_along_m[2] - 300, delay_s=0.0, confidence=1.0, next_stop=2)
    skipped = run.trip.stop_times[3].stop_sequence
    plain = predict(moving, path, now_s=now_s)
    passing = predict(moving, path, now_s=now_s, skipped={skipped})
    assert [p.skipped for p in passing] == [p.stop_sequence == skipped for p in passing]
    assert passing[1].departure_s == passing[1].arrival_s
    dwell = plain[1].departure_s - plain[1].arrival_s
    assert passing[2].arrival_s == plain[2].arrival_s - dwell  # it drives on at once


def test_published_times_put_the_expected_one_in_the_middle_of_transitapps_window() -> None:
    now_s = 1_800_000_000
    for window in WINDOWS:
        middle = (window.start_s + window.end_s) // 2
        # At each bucket's middle horizon: as much room for the bus to come late as to come early.
        published = aim_s(now_s + middle, now_s)
        expected_s = now_s + middle
        assert published - window.early_s - expected_s == -(published + window.late_s - expected_s)
    assert aim_s(now_s + 3600, now_s) == now_s + 3600 - 90  # beyond the last bucket: its shift
    assert aim_s(now_s + 20, now_s) == now_s  # never before now
    aimed = [aim_s(now_s + ahead, now_s) for ahead in range(0, 1200)]
    assert aimed == sorted(aimed)  # a later expected time is never published earlier


def test_aimed_predictions_keep_order_now_and_what_was_measured(timetable: Timetable) -> None:
    run = _run(timetable)
    path = timetable.path(run.trip.trip_id)
    now_s = run.departure(2) - 5
    learned = _learned(timetable, run, factor=1.0, sd_s=20.0, dwell_s=15.0)
    at_stop = TripMatch(run, along_m=path.stop_along_m[2], delay_s=0.0, confidence=1.0, next_stop=2)
    expected = predict(at_stop, path, now_s=now_s, learned=learned)
    aimed = predict(at_stop, path, now_s=now_s, learned=learned, aim=True)
    assert aimed[0].arrival_s == expected[0].arrival_s  # it is there: measured, not aimed
    for was, now in zip(expected[1:], aimed[1:], strict=True):
        assert now.arrival_s == aim_s(was.arrival_s, now_s) < was.arrival_s
        assert now.arrival_uncertainty_s == was.arrival_uncertainty_s
    times = [t for p in aimed for t in (p.arrival_s, p.departure_s)]
    assert times == sorted(times)
    assert all(a.departure_s < b.arrival_s for a, b in itertools.pairwise(aimed))
    assert all(p.departure_s >= now_s for p in aimed)


def test_the_trip_updates_feed_publishes_aimed_times(timetable: Timetable) -> None:
    run = _run(timetable)
    path = timetable.path(run.trip.trip_id)
    now_s = run.arrival(2) - 60
    moving = TripMatch(run, along_m=path.stop_along_m[2] - 300, delay_s=0.0, confidence=1.0, next_stop=2)
    feed = gtfs_realtime_pb2.FeedMessage()
    add_trip_updates(feed, [TripProgress("bus-1", None, now_s, moving, path)], now_s=now_s)
    (entity,) = feed.entity
    published = [stop.arrival.time for stop in entity.trip_update.stop_time_update]
    expected = [p.arrival_s for p in predict(moving, path, now_s=now_s)]
    assert published == [aim_s(t, now_s) for t in expected]
    assert published[0] < expected[0]  # two minutes ahead: some 30 s earlier
