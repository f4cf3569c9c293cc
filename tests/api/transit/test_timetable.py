"""The schedule index: service days with exceptions, runs on the road at a time, past midnight, headways."""

from __future__ import annotations

import datetime as dt

from api.transit.timetable import Timetable
from tests.api.factories import NOW_MS

NOW_S = NOW_MS // 1000


def test_service_days_follow_calendar_and_exceptions(timetable: Timetable) -> None:
    assert timetable.service_runs("weekday", dt.date(2027, 1, 15))  # Friday
    assert not timetable.service_runs("weekend", dt.date(2027, 1, 15))
    assert timetable.service_runs("weekend", dt.date(2027, 1, 16))  # Saturday
    holiday = dt.date(2027, 1, 7)  # a Thursday that runs the weekend timetable
    assert not timetable.service_runs("weekday", holiday)
    assert timetable.service_runs("weekend", holiday)
    assert not timetable.service_runs("weekday", dt.date(2028, 1, 14))  # past the calendar's end


def test_day_start_is_noon_minus_twelve_hours_in_kyiv(timetable: Timetable) -> None:
    assert timetable.day_start(dt.date(2027, 1, 15)) == NOW_S - 10 * 3600  # 10:00 local is NOW
    # 2027-03-28 starts at 00:00 EET (+2) although noon is EEST (+3): noon minus 12 h is 23:00 the day before.
    start = timetable.day_start(dt.date(2027, 3, 28))
    assert dt.datetime.fromtimestamp(start, dt.UTC) == dt.datetime(2027, 3, 27, 21, 0, tzinfo=dt.UTC)


def test_runs_on_the_road_now(timetable: Timetable) -> None:
    runs = list(timetable.runs_between(NOW_S, NOW_S))
    assert runs
    for run in runs:
        assert run.arrival(0) <= NOW_S <= run.departure(len(run.trip.stop_times) - 1)
        assert run.start_date == "20270115"
    assert {run.trip.route_id for run in runs} == {"T1", "T6", "A3", "A29"}


def test_the_night_tram_belongs_to_the_service_day_before(timetable: Timetable) -> None:
    saturday_0020 = timetable.day_start(dt.date(2027, 1, 16)) + 20 * 60
    night = [run for run in timetable.runs_between(saturday_0020, saturday_0020) if run.trip.last_s > 86400]
    assert [(run.trip.route_id, run.start_date, run.start_time) for run in night] == [
        ("T1", "20270115", "24:10:00")
    ]


def test_runs_of_a_headway_route_start_every_headway(timetable: Timetable) -> None:
    runs = [run for run in timetable.runs_between(NOW_S - 3600, NOW_S) if run.trip.route_id == "A29"]
    for run in runs:
        frequency = run.frequency
        assert frequency is not None
        start = run.trip.first_s + run.shift_s
        assert (start - frequency.start_s) % frequency.headway_s == 0
    starts = sorted({run.start_time for run in runs if run.trip.direction_id == 0})
    assert starts[:3] == ["08:50:00", "09:00:00", "09:10:00"]
    assert len({run.key for run in runs}) == len(runs)


def test_timed_trips_are_chained_into_blocks_the_loader_reads(timetable: Timetable) -> None:
    friday = dt.date(2027, 1, 15)
    blocks: dict[str, list[str]] = {}
    for trip in timetable.trips.values():
        if trip.frequencies:
            assert trip.block_id is None  # any bus of route 29 takes the next headway run
            continue
        assert trip.block_id is not None
        blocks.setdefault(trip.block_id, []).append(trip.trip_id)
    assert len(blocks) < len(timetable.trips) // 10  # a vehicle drives many trips a day
    run = next(
        r
        for r in timetable.runs_between(NOW_S, NOW_S)
        if r.trip.route_id == "T1" and r.trip.direction_id == 0
    )
    following = timetable.next_in_block(run)
    assert following is not None
    end = timetable.stops[run.trip.stop_times[-1].stop_id]
    start = timetable.stops[following.trip.stop_times[0].stop_id]
    assert end.name == start.name  # back from the terminus it reached
    assert following.trip.direction_id == 1
    assert following.service_date == friday
    turnaround = following.departure(0) - run.arrival(len(run.trip.stop_times) - 1)
    assert 120 <= turnaround < 12 * 60  # at least the layover, less than a headway of waiting
    assert following.trip.block_id == run.trip.block_id
    last = run
    while (after := timetable.next_in_block(last)) is not None:
        assert after.departure(0) >= last.arrival(len(last.trip.stop_times) - 1)
        last = after
    block = blocks[following.trip.block_id or ""]
    assert last.trip.trip_id == max(block, key=lambda t: timetable.trips[t].first_s)
