"""The demo's drivers' consoles: logged in to the trip their vehicle drives, as the simulated day has it."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from api.transit.simulated_buses import where
from api.transit.timetable import Timetable
from citygw.demo_transit import driven_console, logged_in, todays_fleet, write_network
from firmware_bridge.simulators import ModbusDeviceSimulator


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


def test_a_driven_console_follows_its_vehicle_until_it_stops(timetable: Timetable) -> None:
    fleet = todays_fleet(timetable, time.time())
    bus = next(b for b in fleet if logged_in(timetable, b, time.time())[1])
    console = ModbusDeviceSimulator("onboard_console", unit=2)
    assert console.get("trip_id") == ""

    async def drive() -> tuple[str, str, int]:
        async with driven_console(console, timetable, bus, period_s=0.01):
            console.set("trip_id", "")  # the driver logged out: the next round logs in again
            await asyncio.sleep(0.1)
            seen = str(console.get("route_id")), str(console.get("trip_id")), int(console.get("login"))
        console.set("trip_id", "")
        await asyncio.sleep(0.05)
        return seen

    route_id, trip_id = logged_in(timetable, bus, time.time())
    assert asyncio.run(drive()) == (route_id, trip_id, 1)
    assert console.get("trip_id") == ""  # stopped with its context: nobody logs in any more
