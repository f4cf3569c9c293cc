"""The demo's public transport: the generated Lviv network's trams and buses, driven through real agents.

Every vehicle of today's simulated service (``simulators.transit.buses``: late starts, traffic,
dwell) gets a GPS receiver that follows its block on the real clock, printing NMEA into a
pseudo-terminal, and a ticket validator on its own RS-485 line; three in four vehicles also have a
driver's console on that line, logged in to the trip the vehicle drives (evidence that puts it on its run at
once after a start; the others are matched from their movement). One edge agent per vehicle reads
them all, as a bus's Raspberry Pi does. The API serves the same network as the static GTFS, so the
feeds carry trips, predictions and occupancy as they would in the city.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import time
from pathlib import Path
from typing import Any

from api.transit.alerts import ActivePeriod, AlertCreate, InformedEntity
from api.transit.feeds import Snapshot
from api.transit.gtfs import load_gtfs
from api.transit.timetable import Timetable
from firmware_bridge.profile import load_profile
from firmware_bridge.simulators import BusGpsSimulator, ModbusDeviceSimulator, serve_serial_pty
from firmware_bridge.simulators.gps import Track
from simulators.transit.buses import Bus, simulate_day, where
from simulators.transit.network import network_zip

TRANSIT_SITE = "lviv-transit"


def write_network(workdir: Path) -> tuple[Path, Timetable]:
    """The generated network's zip in ``workdir/gtfs/`` (what the API serves) and its timetable."""
    folder = workdir / "gtfs"
    folder.mkdir(exist_ok=True)
    path = folder / "lviv.zip"
    data = network_zip(all_day=True)
    path.write_bytes(data)
    return path, load_gtfs(data)


def todays_fleet(timetable: Timetable, now_s: float) -> list[Bus]:
    """Every vehicle of today's service in the network's time zone (those not out yet or done included)."""
    today = dt.datetime.fromtimestamp(now_s, timetable._zone).date()
    return simulate_day(timetable, today)


def on_the_road(timetable: Timetable, fleet: list[Bus], now_s: float) -> int:
    return sum(where(timetable, bus, now_s) is not None for bus in fleet)


def track(timetable: Timetable, bus: Bus) -> Track:
    """Where ``bus`` is at a time, as its receiver sees it: nothing in the depot or in the tunnel."""

    def at(unix_s: float) -> tuple[float, float, float, float] | None:
        state = where(timetable, bus, unix_s)
        if state is None or not state.has_fix:
            return None
        return state.lat, state.lon, state.speed_mps, state.heading_deg % 360

    return at


def logged_in(timetable: Timetable, bus: Bus, now_s: float) -> tuple[str, str]:
    """(route_id, trip_id) the driver's console shows at ``now_s``: the run the bus drives or waits to
    start (its layover), nothing in the depot."""
    state = where(timetable, bus, now_s)
    if state is None:
        return "", ""
    trip = state.ride.run.trip
    return trip.route_id, trip.trip_id


class DrivenConsole(ModbusDeviceSimulator):
    """A driver's console (unit 2) logged in to the trip ``bus`` drives or waits to start, whenever read."""

    def __init__(self, timetable: Timetable, bus: Bus) -> None:
        self.timetable, self.bus = timetable, bus
        super().__init__(load_profile("onboard_console"), unit=2)
        self.advance()

    def advance(self) -> None:
        super().advance()
        route_id, trip_id = logged_in(self.timetable, self.bus, time.time())
        self.set("route_id", route_id)
        self.set("trip_id", trip_id)
        self.set("login", 1 if trip_id else 0)


async def vehicle_agents(
    stack: contextlib.AsyncExitStack, timetable: Timetable, fleet: list[Bus]
) -> list[dict[str, Any]]:
    """Start each vehicle's GPS receiver and validator; the configs of the agents that read them."""
    validator_profile = load_profile("ticket_validator")
    agents = []
    for number, bus in enumerate(fleet):
        gps = await stack.enter_async_context(
            BusGpsSimulator([], track=track(timetable, bus), vehicle_id=bus.vehicle_id)
        )
        validator = ModbusDeviceSimulator(validator_profile, unit=1, animate=True)
        on_line: list[ModbusDeviceSimulator] = [validator]
        vehicle = {"id": bus.vehicle_id, "label": bus.label.replace(" #", "/")}  # '29 #1': no '#' in labels
        consoles: list[dict[str, Any]] = []
        if number % 4 != 3:  # three in four have a driver's console; the others are matched by movement
            on_line.append(DrivenConsole(timetable, bus))
            vehicle["console"] = f"{bus.vehicle_id}-console"
            consoles.append(
                {
                    "id": vehicle["console"],
                    "profile": "onboard_console",
                    "line": "rs485-validator",
                    "unit": 2,
                    "poll_s": 5,
                    "vehicle": vehicle,
                }
            )
        elif bus.reports_route:  # the depot told its agent the route: narrows the match
            vehicle["route"] = bus.route_id
        rs485 = await stack.enter_async_context(serve_serial_pty(on_line))
        agents.append(
            {
                "agent_id": f"vehicle-{bus.vehicle_id}",
                "site": TRANSIT_SITE,
                "publish": {"interval": 0.5},
                "lines": [
                    {"id": "gps", "kind": "nmea", "port": gps.port, "baudrate": 9600},
                    {"id": "rs485-validator", "kind": "rtu", "port": rs485, "baudrate": 9600},
                ],
                "devices": [
                    {"id": f"{bus.vehicle_id}-gps", "line": "gps", "poll_s": 2, "vehicle": vehicle},
                    {
                        "id": f"{bus.vehicle_id}-validator",
                        "profile": "ticket_validator",
                        "line": "rs485-validator",
                        "unit": 1,
                        "poll_s": 15,
                        "vehicle": vehicle,
                    },
                    *consoles,
                ],
            }
        )
    return agents


def operator_alert(timetable: Timetable, now_s: int) -> AlertCreate:
    """The alert a dispatcher would publish: roadworks on tram 1 for the next two hours."""
    route = next(r for r in sorted(timetable.routes) if timetable.routes[r].short_name == "1")
    return AlertCreate(
        header_text="Ремонт колії на Городоцькій: трамвай 1 затримується до 5 хвилин",
        header_text_en="Track works on Horodotska: tram 1 up to 5 minutes late",
        cause="MAINTENANCE",
        effect="SIGNIFICANT_DELAYS",
        active_periods=[ActivePeriod(start=now_s, end=now_s + 2 * 3600)],
        informed_entities=[InformedEntity(route_id=route)],
    )


def vehicle_lines(snapshot: Snapshot, timetable: Timetable) -> list[str]:
    """A line per vehicle in the feed: label, route, trip, next stop and delay (or why there is none)."""
    lines = [f"{'vehicle':<10} {'route':<6} {'trip':<26} {'next stop':<24} delay"]
    for vehicle_id, fix in sorted(snapshot.vehicles.items(), key=lambda item: item[1].label or item[0]):
        match = snapshot.matches.get(vehicle_id)
        label = fix.label or vehicle_id
        if match is None:
            lines.append(f"{label:<10} {fix.route_id or '-':<6} {'(no trip matched yet)':<26}")
            continue
        trip = match.run.trip
        route = timetable.routes[trip.route_id].short_name
        stop_id = trip.stop_times[min(match.next_stop, len(trip.stop_times) - 1)].stop_id
        stop = timetable.stops[stop_id].name
        delay = f"{match.delay_s / 60:+.1f} min"
        lines.append(f"{label:<10} {route:<6} {trip.trip_id:<26} {stop[:24]:<24} {delay}")
    return lines
