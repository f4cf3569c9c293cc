"""Predictions from learned running times against carrying the delay, on the simulated network.

    .venv/bin/python bench/transit_history.py [--days 4] [--period 10]

The simulated buses of ``--days`` weekdays before the Friday are learned from (fixes every
``--period`` s, read back through ``HistoryLearner`` a day at a time, as the API's background job
does); then every 5 min of the Friday (06:00-22:00) each matched bus's predictions are scored
twice in the same run: with what was learned, and carrying its delay along the schedule (the
baseline). Figures: the share of real arrivals within the TransitApp windows of
bench/transit.py, the mean absolute error, the share within one stated ``uncertainty`` (about 0.68
if the spread is well calibrated) and how often an uncertainty is given; the learning's time.

The simulator's buses have no slow segment or hour of their own (each run draws its running
times around the plan), so learned times can only match the schedule here, not beat it by much;
tests/api/transit/test_history.py shows a segment that is slow at an hour learned and predicted.
The last line printed is one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from transit import FRIDAY, PointsInMemory, transit_settings  # noqa: E402

from api.transit.accuracy import window_for  # noqa: E402
from api.transit.feeds import TransitService  # noqa: E402
from api.transit.gtfs import load_gtfs  # noqa: E402
from api.transit.history import HistoryLearner, LearnedTimes  # noqa: E402
from api.transit.timetable import Timetable  # noqa: E402
from api.transit.trip_updates import predict  # noqa: E402
from simulators.transit.buses import fixes_between, simulate_day  # noqa: E402
from simulators.transit.network import network_zip  # noqa: E402


def learn(timetable: Timetable, days: int, period_s: int) -> tuple[LearnedTimes, float, int]:
    """(what was learned, seconds spent learning, fixes read) from the ``days`` weekdays before FRIDAY."""
    learner = HistoryLearner(days=days + 3, sample_s=1, min_samples=3)
    spent, read = 0.0, 0
    for back in range(days, 0, -1):
        date = FRIDAY - dt.timedelta(days=back)
        day_start = timetable.day_start(date)
        points = list(
            fixes_between(
                timetable, simulate_day(timetable, date), day_start, day_start + 28 * 3600, period_s=period_s
            )
        )
        read += len(points)
        started = time.perf_counter()
        learner.refresh(PointsInMemory(points), timetable, now_ms=(day_start + 30 * 3600) * 1000)
        spent += time.perf_counter() - started
    assert learner.learned is not None
    return learner.learned, spent, read


def score(timetable: Timetable, learned: LearnedTimes, gtfs: Path) -> dict[str, dict[str, float]]:
    buses = simulate_day(timetable, FRIDAY)
    truth = {ride.run.key: ride for bus in buses for ride in bus.rides}
    service = TransitService(transit_settings(gtfs.parent, gtfs, transit_silent_route_alerts=False))
    day = dt.datetime.combine(FRIDAY, dt.time(6), tzinfo=timetable._zone).timestamp()
    tallies = {
        name: {"good": 0, "error_s": 0.0, "within": 0, "stated": 0, "scored": 0}
        for name in ("learned", "carried")
    }
    for now_s in range(int(day), int(day) + 16 * 3600, 300):
        reader = PointsInMemory(list(fixes_between(timetable, buses, now_s - 130, now_s + 1)))
        snapshot = service.build(reader, now_ms=now_s * 1000, max_age_s=90, max_ahead_s=30)
        for match in snapshot.matches.values():
            ride = truth.get(match.run.key)
            if ride is None:
                continue
            path = timetable.path(match.run.trip.trip_id)
            for name, history in (("learned", learned), ("carried", None)):
                tally = tallies[name]
                for prediction in predict(match, path, now_s=now_s, learned=history):
                    actual = ride.actual_arrivals[prediction.index]
                    window = window_for(actual - now_s) if actual > now_s else None
                    if window is None:
                        continue
                    off = actual - prediction.arrival_s
                    tally["scored"] += 1
                    tally["good"] += window.accurate(prediction.arrival_s, actual)
                    tally["error_s"] += abs(off)
                    if prediction.arrival_uncertainty_s is not None:
                        tally["stated"] += 1
                        tally["within"] += abs(off) <= max(prediction.arrival_uncertainty_s, 1)
    return {
        name: {
            "within_windows": round(t["good"] / t["scored"], 3),
            "mean_abs_error_s": round(t["error_s"] / t["scored"], 1),
            "uncertainty_given": round(t["stated"] / t["scored"], 3),
            "within_uncertainty": round(t["within"] / t["stated"], 3) if t["stated"] else 0.0,
            "predictions": t["scored"],
        }
        for name, t in tallies.items()
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--days", type=int, default=4, help="weekdays learned from before the Friday (default 4)"
    )
    parser.add_argument("--period", type=int, default=10, help="seconds between a bus's fixes in history")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="citygw-transit-history-") as name:
        gtfs = Path(name) / "lviv.zip"
        gtfs.write_bytes(network_zip())
        timetable = load_gtfs(gtfs.read_bytes())
        learned, spent_s, read = learn(timetable, args.days, args.period)
        figures = score(timetable, learned, gtfs)
    print(
        f"learned {len(learned.runs)} segment-hours and {len(learned.dwells)} stop-hours from {read} fixes"
        f" in {spent_s:.1f} s ({read / spent_s:.0f} fixes/s)"
    )
    for name, figure in figures.items():
        print(f"{name}: {figure}")
    print(json.dumps({"learn_fixes_per_s": round(read / spent_s), **figures}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
