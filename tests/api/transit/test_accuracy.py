"""The prediction ledger: TransitApp's buckets and windows, arrivals from positions, bounded memory."""

from __future__ import annotations

import pytest

from api.transit.accuracy import (
    MAX_GAP_S,
    WINDOWS,
    PredictionLedger,
    Score,
    Tally,
    accuracy_points,
    overall,
    score,
    tally,
    tally_rows,
    window_for,
)
from collector.store.base import Row

STOPS = (0.0, 500.0, 1000.0, 1500.0)


def _ledger(*predictions: tuple[int, int], made_s: float = 0.0, **kwargs: int) -> PredictionLedger:
    ledger = PredictionLedger(**kwargs)
    ledger.publish(
        "bus-1",
        "A1-0@20270115",
        route_id="A1",
        trip_id="A1-0",
        stop_along_m=STOPS,
        predictions=predictions,
        made_s=made_s,
        seen=(made_s, 0.0),
    )
    return ledger


@pytest.mark.parametrize(
    ("ahead_s", "bucket"),
    [(0, "0-3"), (179.9, "0-3"), (180, "3-6"), (359, "3-6"), (360, "6-10"), (600, "10-15"), (899, "10-15")],
)
def test_a_prediction_falls_in_the_bucket_of_its_time_to_the_real_arrival(
    ahead_s: float, bucket: str
) -> None:
    window = window_for(ahead_s)
    assert window is not None
    assert window.bucket == bucket


@pytest.mark.parametrize("ahead_s", [-1, 900, 3600])
def test_out_of_the_buckets_nothing_is_scored(ahead_s: float) -> None:
    assert window_for(ahead_s) is None
    assert score("A1", 0, ahead_s, ahead_s) is None


@pytest.mark.parametrize(
    ("made_s", "arrived_s", "accurate"),
    [
        # 0-3 minutes: 30 s early to 90 s late, both ends accurate.
        (0, 100, True),
        (0, 70, True),
        (0, 69, False),
        (11, 190, True),
        (12, 191, False),
        # 10-15 minutes (arrival 700 s after sampling): 90 s early to 270 s late.
        (-600, 10, True),
        (-590, 10, True),
        (-591, 9, False),
        (-500, 370, True),
        (-500, 371, False),
    ],
)
def test_windows_are_transitapps_ends_included(made_s: float, arrived_s: float, accurate: bool) -> None:
    one = score("A1", made_s, 100, arrived_s)
    assert one is not None
    assert one.accurate is accurate


def test_the_windows_are_the_published_ones() -> None:
    assert [(w.bucket, w.start_s, w.end_s, w.early_s, w.late_s) for w in WINDOWS] == [
        ("0-3", 0, 180, 30, 90),
        ("3-6", 180, 360, 60, 150),
        ("6-10", 360, 600, 60, 210),
        ("10-15", 600, 900, 90, 270),
    ]


def test_arrival_is_interpolated_where_the_bus_comes_within_15_m_of_the_stop() -> None:
    ledger = _ledger((1, 100), (2, 150))
    assert ledger.observe("bus-1", "A1-0@20270115", 50, 400.0) == []
    (first,) = ledger.observe("bus-1", "A1-0@20270115", 60, 500.0)
    # 485 m reached between 400 m at 50 s and 500 m at 60 s: at 58.5 s.
    assert first.arrived_s == pytest.approx(58.5)
    assert (first.stop_index, first.window.bucket) == (1, "0-3")
    assert first.error_s == pytest.approx(-41.5)
    assert not first.accurate  # 41.5 s early
    (second,) = ledger.observe("bus-1", "A1-0@20270115", 150, 1010.0)  # passed it between two fixes
    assert second.arrived_s == pytest.approx(60 + 90 * 485 / 510)
    assert second.accurate
    assert ledger.pending == 0


def test_gps_jitter_backwards_is_no_movement() -> None:
    ledger = _ledger((1, 100))
    ledger.observe("bus-1", "A1-0@20270115", 50, 480.0)
    assert ledger.observe("bus-1", "A1-0@20270115", 55, 470.0) == []
    (one,) = ledger.observe("bus-1", "A1-0@20270115", 60, 490.0)
    # From 480 m (not 470 m) at 55 s: 485 m half way to 490 m.
    assert one.arrived_s == pytest.approx(57.5)


def test_a_crossing_in_a_gap_between_positions_is_not_scored() -> None:
    ledger = _ledger((1, 100), (2, 300))
    ledger.observe("bus-1", "A1-0@20270115", 10, 100.0)
    assert ledger.observe("bus-1", "A1-0@20270115", 10 + MAX_GAP_S + 1, 600.0) == []
    assert (ledger.unobserved, ledger.pending) == (1, 1)


def test_a_stop_the_bus_is_at_when_predicted_is_not_waited_for() -> None:
    ledger = PredictionLedger()
    ledger.publish(
        "bus-1", "r", route_id="A1", trip_id="A1-0", stop_along_m=STOPS,
        predictions=[(1, 10), (2, 100)], made_s=0, seen=(0, 490.0),
    )  # fmt: skip
    assert ledger.pending == 1


def test_one_prediction_per_stop_is_kept_a_minute() -> None:
    ledger = _ledger((2, 400))
    for made_s in (30, 59):
        ledger.publish(
            "bus-1", "A1-0@20270115", route_id="A1", trip_id="A1-0", stop_along_m=STOPS,
            predictions=[(2, 400)], made_s=made_s, seen=(made_s, 10.0),
        )  # fmt: skip
    assert ledger.pending == 1
    ledger.publish(
        "bus-1", "A1-0@20270115", route_id="A1", trip_id="A1-0", stop_along_m=STOPS,
        predictions=[(2, 380)], made_s=60, seen=(60, 20.0),
    )  # fmt: skip
    assert ledger.pending == 2
    ledger.observe("bus-1", "A1-0@20270115", 380, 980.0)
    scores = ledger.observe("bus-1", "A1-0@20270115", 385, 990.0)
    assert [(s.made_s, s.window.bucket) for s in scores] == [(0, "6-10"), (60, "3-6")]


def test_the_ledger_is_bounded_and_says_what_it_dropped() -> None:
    ledger = _ledger((1, 100), (2, 200), (3, 300), max_pending=2)
    assert (ledger.pending, ledger.dropped) == (2, 1)


def test_predictions_that_can_no_longer_be_scored_are_forgotten() -> None:
    ledger = _ledger((1, 100), (2, 200))
    ledger.expire(899)
    assert ledger.pending == 2
    ledger.expire(900)
    assert ledger.pending == 0
    assert ledger.watching() == {}


def test_a_bus_whose_predictions_are_all_scored_is_no_longer_followed() -> None:
    ledger = _ledger((1, 60))
    ledger.observe("bus-1", "A1-0@20270115", 50, 490.0)
    assert ledger.watching() == {"bus-1": [("A1-0@20270115", "A1-0")]}
    ledger.expire(60)
    assert ledger.watching() == {}  # driving on (or back on its next run) costs nothing


def _scores(route: str, bucket: int, accurate: int, inaccurate: int) -> list[Score]:
    made = -WINDOWS[bucket].start_s
    found = [score(route, made, 0, 0) for _ in range(accurate)] + [
        score(route, made, -400, 0)
        for _ in range(inaccurate)  # 400 s late
    ]
    return [one for one in found if one is not None]


def test_points_per_route_sum_back_to_the_shares() -> None:
    scores = _scores("A1", 0, 3, 1) + _scores("T1", 0, 1, 0) + _scores("T1", 3, 1, 1)
    points = accuracy_points(scores, 1_000)
    assert [(p.tags, dict(p.fields)) for p in points] == [
        ({"route": "A1"}, {"predictions_0_3": 4, "accurate_0_3": 3}),
        (
            {"route": "T1"},
            {"predictions_0_3": 1, "accurate_0_3": 1, "predictions_10_15": 2, "accurate_10_15": 1},
        ),
    ]
    tallies = tally_rows(Row(p.ts_ms, p.tags, dict(p.fields)) for p in points)
    assert tallies == tally(scores)
    assert [t.share for t in tallies] == [0.8, None, None, 0.5]
    assert overall(tallies) is None  # the single figure needs every bucket


def test_the_single_figure_is_the_plain_mean_of_the_buckets() -> None:
    tallies = [
        Tally(WINDOWS[0], 10, 10),
        Tally(WINDOWS[1], 1, 0),
        Tally(WINDOWS[2], 4, 2),
        Tally(WINDOWS[3], 2, 1),
    ]
    assert overall(tallies) == pytest.approx((1 + 0 + 0.5 + 0.5) / 4)
