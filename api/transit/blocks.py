"""The next trip of each bus's block in TripUpdates: riders waiting for it see when it will come.

A bus on a run of a block (trips.txt ``block_id``) drives the block's next run after it. Its
published arrival at the end of the run, plus a short turnaround, is when it can leave again:
the next run leaves then or on schedule, whichever is later (the layover's slack absorbs the
delay), and its stops follow as any run's do (``trip_updates.predict``), not aimed a second time.
"""

from __future__ import annotations

from collections.abc import Iterable

from api.transit.history import LearnedTimes
from api.transit.matching import TripMatch
from api.transit.timetable import Timetable
from api.transit.trip_updates import TripProgress, predict

TURNAROUND_S = 60  # the least a bus stands at a terminus between two runs (doors, driver's step out)


def next_runs(
    buses: Iterable[TripProgress], timetable: Timetable, *, now_s: int, learned: LearnedTimes | None = None
) -> list[TripProgress]:
    """Each bus's next run of its block, with the delay its current run hands on (its end predicted as
    its TripUpdate predicts it, ``learned`` running times included).

    A run some bus is already on (published among ``buses``) is left out: that bus's TripUpdate says it.
    """
    on_road = list(buses)
    held = {bus.match.run.key for bus in on_road}
    following: list[TripProgress] = []
    for bus in on_road:
        run = timetable.next_in_block(bus.match.run)
        if run is None or run.key in held:
            continue
        predictions = predict(bus.match, bus.path, now_s=now_s, learned=learned, aim=bus.aim)
        if not predictions:
            continue
        ready_s = max(predictions[-1].arrival_s + TURNAROUND_S, now_s)
        delay_s = float(max(0, ready_s - run.departure(0)))
        path = timetable.path(run.trip.trip_id)
        match = TripMatch(run, path.stop_along_m[0], delay_s, bus.match.confidence, 0)
        following.append(TripProgress(bus.vehicle_id, bus.label, bus.fix_ts_s, match, path, aim=False))
        held.add(run.key)
    return following
