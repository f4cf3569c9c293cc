"""bench/bus_model.py drives buses by rules of its own, not the ones the predictor assumes."""

from __future__ import annotations

import datetime as dt
import statistics

import pytest

from api.transit.gtfs import load_gtfs
from api.transit.timetable import Timetable
from bench.bus_model import drive_day
from simulators.transit.buses import Bus, simulate_day
from simulators.transit.network import network_zip
from tests.api.transit.conftest import FRIDAY

HOLD_DWELL_S = 60  # what api/transit/trip_updates.py takes for a timepoint


@pytest.fixture(scope="module")
def timetable() -> Timetable:
    return load_gtfs(network_zip())


@pytest.fixture(scope="module")
def model(timetable: Timetable) -> list[Bus]:
    return drive_day(timetable, FRIDAY)


def _early_departures_at_timepoints(buses: list[Bus]) -> int:
    """How often a bus left a stop with a long planned dwell before its scheduled departure."""
    count = 0
    for bus in buses:
        for ride in bus.rides:
            for index, stop_time in enumerate(ride.run.trip.stop_times):
                planned = stop_time.departure_s - stop_time.arrival_s
                if planned >= HOLD_DWELL_S and ride.actual_departures[index] < ride.run.departure(index):
                    count += 1
    return count


def test_its_buses_do_not_wait_where_the_predictor_expects_them_to(
    timetable: Timetable, model: list[Bus]
) -> None:
    assert _early_departures_at_timepoints(simulate_day(timetable, FRIDAY)) == 0  # the circular one
    assert _early_departures_at_timepoints(model) > 50


def test_rush_hour_is_slower_than_midday_and_night(timetable: Timetable, model: list[Bus]) -> None:
    def slowness(hours: range) -> float:
        ratios = []
        for bus in model:
            for ride in bus.rides:
                hour = dt.datetime.fromtimestamp(ride.actual_departures[0], timetable._zone).hour
                if hour in hours:
                    end = len(ride.actual_arrivals) - 1
                    ratios.append(
                        (ride.actual_arrivals[end] - ride.actual_departures[0])
                        / (ride.run.arrival(end) - ride.run.departure(0))
                    )
        return statistics.mean(ratios)

    assert slowness(range(17, 18)) > slowness(range(12, 13)) + 0.1
    assert slowness(range(7, 8)) > slowness(range(21, 23)) + 0.1


def test_a_stop_nobody_uses_is_passed_without_dwelling(model: list[Bus]) -> None:
    dwells = [
        ride.actual_departures[i] - ride.actual_arrivals[i]
        for bus in model
        for ride in bus.rides
        for i in range(1, len(ride.actual_arrivals) - 1)
    ]
    assert 0.0 in dwells
    assert max(dwells) > 30.0


def test_the_same_seed_drives_the_same_day(timetable: Timetable, model: list[Bus]) -> None:
    assert drive_day(timetable, FRIDAY) == model
    assert drive_day(timetable, FRIDAY, seed=1) != model
