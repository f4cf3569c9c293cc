"""The demo's drivers' consoles: logged in to the trip their vehicle drives, as the simulated day has it."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import pytest

from api.transit.timetable import Timetable
from citygw.demo_transit import DrivenConsole, logged_in, todays_fleet, write_network
from simulators.transit.buses import where


@pytest.fixture(scope="module")
def timetable(tmp_path_factory: pytest.TempPathFactory) -> Timetable:
    return write_network(Path(tmp_path_factory.mktemp("gtfs")))[1]


def test_a_console_shows_the_run_driven_the_next_run_on_layover_and_nothing_in_the_depot(
    timetable: Timetable,
) -> None:
    bus = todays_fleet(timetable, time.time())[0]
    first, second = bus.rides[0], bus.rides[1]
    assert logged_in(timetable, bus, first.actual_departures[0] - 3600) == ("", "")
    midway = (first.actual_departures[0] + first.actual_arrivals[-1]) / 2
    assert logged_in(timetable, bus, midway) == (first.run.trip.route_id, first.run.trip.trip_id)
    layover = (first.actual_arrivals[-1] + second.actual_departures[0]) / 2
    state = where(timetable, bus, layover)
    assert state is not None
    assert state.speed_mps == 0  # standing at the next run's first stop
    assert logged_in(timetable, bus, layover) == (second.run.trip.route_id, second.run.trip.trip_id)
    assert logged_in(timetable, bus, bus.rides[-1].actual_arrivals[-1] + 60) == ("", "")


def test_a_driven_console_shows_its_vehicles_trip_whenever_read(timetable: Timetable) -> None:
    fleet = todays_fleet(timetable, time.time())
    bus = next(b for b in fleet if logged_in(timetable, b, time.time())[1])
    console = DrivenConsole(timetable, bus)
    route_id, trip_id = logged_in(timetable, bus, time.time())
    assert (console.get("route_id"), console.get("trip_id"), console.get("login")) == (route_id, trip_id, 1)
    console.set("trip_id", "")  # as if the driver logged out: the next read (advance) logs in again
    console.advance()
    assert console.get("trip_id") == logged_in(timetable, bus, time.time())[1]
    depot = DrivenConsole(timetable, dataclasses.replace(bus, rides=()))  # no run today: nobody logged in
    assert (depot.get("route_id"), depot.get("trip_id"), depot.get("login")) == ("", "", 0)
