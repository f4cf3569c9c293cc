"""bench/transit.py's history: the weekdays it learns from, and the learner reading the model's buses."""

from __future__ import annotations

import datetime as dt
import statistics
from pathlib import Path

from api.transit.gtfs import load_gtfs
from api.transit.history import HistoryLearner, LocalHours
from bench.bus_model import drive_day, segment_times
from bench.transit import FRIDAY, weekdays_before
from collector.store.sqlite import SqliteStore
from simulators.transit.buses import fixes_between
from simulators.transit.network import network_zip


def test_history_is_the_weekdays_before_the_scored_friday() -> None:
    dates = weekdays_before(FRIDAY, 6)
    assert dates == [dt.date(2027, 1, d) for d in (7, 8, 11, 12, 13, 14)]
    assert weekdays_before(FRIDAY, 0) == []


def test_the_learner_reads_the_models_running_times_and_dwells(tmp_path: Path) -> None:
    """Positions of the model's morning, stored and read back through HistoryLearner as the API
    does, give each segment-hour within seconds of what the model's buses really took."""
    timetable = load_gtfs(network_zip())
    date = dt.date(2027, 1, 14)
    buses = drive_day(timetable, date, seed=7)
    start_s = timetable.day_start(date) + 6 * 3600
    store = SqliteStore(tmp_path / "history.sqlite")
    store.write(list(fixes_between(timetable, buses, start_s, start_s + 3 * 3600, period_s=10)))
    learner = HistoryLearner(days=2, sample_s=10, min_samples=3)
    learner.refresh(store, timetable, now_ms=(start_s + 6 * 3600) * 1000)
    store.close()
    learned = learner.learned
    assert learned is not None
    runs, dwells = segment_times(buses, LocalHours(timetable.timezone))
    # Hours fully inside the stored span: 07:00 and 08:00 local time.
    run_keys = [k for k, v in runs.items() if k[2] in (7, 8) and len(v) >= 3]
    dwell_keys = [k for k, v in dwells.items() if k[1] in (7, 8) and len(v) >= 3]
    assert len(run_keys) > 50
    assert len(dwell_keys) > 50
    assert sum(k in learned.runs for k in run_keys) >= 0.9 * len(run_keys)
    assert sum(k in learned.dwells for k in dwell_keys) >= 0.9 * len(dwell_keys)
    run_off = [
        abs(learned.runs[k].median_s - statistics.median(runs[k])) for k in run_keys if k in learned.runs
    ]
    dwell_off = [
        abs(learned.dwells[k].median_s - statistics.median(dwells[k]))
        for k in dwell_keys
        if k in learned.dwells
    ]
    assert statistics.median(run_off) < 5
    assert statistics.median(dwell_off) < 5
