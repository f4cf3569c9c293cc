"""TripUpdates predictions: in order, and never in the past for a stop the bus has not reached."""

from __future__ import annotations

import itertools

from api.transit.matching import TripMatch
from api.transit.timetable import Timetable, TripRun
from api.transit.trip_updates import predict
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
