"""Buses driving a timetable the way buses do, as the points the collector stores.

Every bus works a block (the timetable's ``block_id``, else runs of one route chained back and
forth); it leaves late now and then, loses time in traffic, dwells longer or shorter than
planned, waits at the hub when early, and its GPS jitters. One route passes a tunnel (no fix
there, so no point), and one run of bus 3A drives a detour off its line. Everything follows from
``seed``: the same day twice gives the same points. ``Ride.actual_arrivals`` is the truth
predictions are scored against.
"""

from __future__ import annotations

import datetime as dt
import math
import random
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass

from api.transit.timetable import Timetable, TripPath, TripRun, chain_blocks
from collector.store.base import FieldValue, Point

TUNNEL = ("T1", 1500.0, 1800.0)  # route, from, to (metres along its line): an underpass, no sky
DETOUR_ROUTE = "A3"
DETOUR_AT_M = (1200.0, 2300.0)
DETOUR_OFFSET_M = 260.0
LAYOVER_S = 120
RIDE_MINUTES = 20  # how long a passenger stays on board, for the coarse occupancy estimate


@dataclass(frozen=True, slots=True)
class Ride:
    """One run as it really happened: when the bus reached and left each stop."""

    vehicle_id: str
    run: TripRun
    actual_arrivals: tuple[float, ...]
    actual_departures: tuple[float, ...]
    detour: bool = False


@dataclass(frozen=True, slots=True)
class Bus:
    vehicle_id: str
    label: str
    route_id: str
    reports_route: bool
    rides: tuple[Ride, ...]


def _ride(
    vehicle_id: str, run: TripRun, path: TripPath, rng: random.Random, *, detour: bool, not_before: float
) -> Ride:
    trip = run.trip
    stops = len(trip.stop_times)
    arrivals: list[float] = []
    departures: list[float] = []
    late_start = rng.choice((0, 0, 0, 20, 45, 90, 180, 300))
    jam_link = rng.randrange(1, stops) if rng.random() < 0.3 else -1
    clock = max(float(run.departure(0)) + late_start, not_before)
    for index in range(stops):
        if index:
            planned = run.arrival(index) - run.departure(index - 1)
            factor = min(1.5, max(0.8, rng.gauss(1.0, 0.1)))
            clock += planned * factor + (rng.uniform(120, 300) if index == jam_link else 0.0)
            if detour:
                clock += 90.0 / (stops - 1)
        arrivals.append(clock)
        planned_dwell = trip.stop_times[index].departure_s - trip.stop_times[index].arrival_s
        dwell = 0.0 if index == stops - 1 else max(8.0, rng.gauss(max(planned_dwell, 15), 6))
        leave = clock + dwell
        if index == 0 or planned_dwell >= 60:
            leave = max(leave, float(run.departure(index)))  # timepoints with slack: no leaving early
        departures.append(leave)
        clock = leave
    return Ride(vehicle_id, run, tuple(arrivals), tuple(departures), detour)


def blocks_of_day(timetable: Timetable, service_date: dt.date) -> list[tuple[str, int, list[TripRun]]]:
    """(route, bus number, runs) of ``service_date``: each route's runs chained into blocks of one bus."""
    day_start = timetable.day_start(service_date)
    runs = [
        run
        for run in timetable.runs_between(day_start, day_start + 30 * 3600)
        if run.service_date == service_date
    ]
    by_route: dict[str, list[TripRun]] = defaultdict(list)
    for run in runs:
        by_route[run.trip.route_id].append(run)
    found: list[tuple[str, int, list[TripRun]]] = []
    for route_id in sorted(by_route):
        blocks = _blocks(timetable, sorted(by_route[route_id], key=lambda r: (r.departure(0), r.key)))
        found += [(route_id, number, block) for number, block in enumerate(blocks, start=1)]
    return found


def make_bus(timetable: Timetable, route_id: str, number: int, rides: tuple[Ride, ...]) -> Bus:
    """Bus ``number`` of ``route_id`` driving ``rides``: id, label, and whether its console says the route."""
    route = timetable.routes[route_id]
    vehicle_id = f"{route_id.lower()}-{number:02d}"
    return Bus(vehicle_id, f"{route.short_name} #{number}", route_id, number % 2 == 0, rides)


def simulate_day(timetable: Timetable, service_date: dt.date, *, seed: int = 7) -> list[Bus]:
    """The buses of ``service_date``: each route's runs chained into blocks worked by one bus each."""
    buses: list[Bus] = []
    for route_id, number, block in blocks_of_day(timetable, service_date):
        vehicle_id = f"{route_id.lower()}-{number:02d}"
        rng = random.Random(f"{seed}:{vehicle_id}:{service_date}")
        rides: list[Ride] = []
        not_before = -math.inf
        for run in block:
            detour = route_id == DETOUR_ROUTE and number == 1 and len(rides) == 2
            ride = _ride(
                vehicle_id,
                run,
                timetable.path(run.trip.trip_id),
                rng,
                detour=detour,
                not_before=not_before,
            )
            rides.append(ride)
            not_before = ride.actual_arrivals[-1] + 60
        buses.append(make_bus(timetable, route_id, number, tuple(rides)))
    return buses


def _blocks(timetable: Timetable, runs: list[TripRun]) -> list[list[TripRun]]:
    """The runs (in order of departure) as the timetable's blocks, in order of their first departure;
    runs without a ``block_id`` (headway trips) chained back and forth between termini."""
    published: dict[str, list[TripRun]] = defaultdict(list)
    loose: list[TripRun] = []
    for run in runs:
        if run.trip.block_id is not None and not run.trip.frequencies:
            published[run.trip.block_id].append(run)
        else:
            loose.append(run)

    def same_place(a: str, b: str) -> bool:
        one, other = timetable.stops[a], timetable.stops[b]
        return abs(one.lat - other.lat) + abs(one.lon - other.lon) < 0.001

    chained = chain_blocks(
        [
            (
                r.trip.stop_times[0].stop_id,
                r.departure(0),
                r.trip.stop_times[-1].stop_id,
                r.arrival(len(r.trip.stop_times) - 1),
            )
            for r in loose
        ],
        layover_s=LAYOVER_S,
        same_place=same_place,
    )
    blocks = [*published.values(), *([loose[i] for i in block] for block in chained)]
    return sorted(blocks, key=lambda block: (block[0].departure(0), block[0].key))


@dataclass(frozen=True, slots=True)
class BusState:
    """Where a bus truly is (before GPS noise), and whether its receiver sees the sky."""

    ride: Ride
    along_m: float
    lat: float
    lon: float
    heading_deg: float
    speed_mps: float
    has_fix: bool
    off_line: bool


def where(timetable: Timetable, bus: Bus, at_s: float) -> BusState | None:
    """The bus's state at ``at_s``, or None before its first run and after its last.

    Between runs the bus waits at the first stop of its next run (its layover).
    """
    for index, ride in enumerate(bus.rides):
        if at_s <= ride.actual_arrivals[-1]:
            if index == 0 and at_s < ride.actual_departures[0] - LAYOVER_S:
                return None  # still in the depot
            return _on_ride(timetable, ride, at_s)
    return None


def _on_ride(timetable: Timetable, ride: Ride, at_s: float) -> BusState:
    path = timetable.path(ride.run.trip.trip_id)
    stops = path.stop_along_m
    along, speed = stops[-1], 0.0
    if at_s <= ride.actual_departures[0]:
        along = stops[0]
    else:
        for index in range(len(stops) - 1):
            leave, reach = ride.actual_departures[index], ride.actual_arrivals[index + 1]
            if at_s <= reach:
                span = max(reach - leave, 1.0)
                f = max(0.0, (at_s - leave) / span)
                eased = f * f * (3 - 2 * f)  # accelerate from the stop, brake into the next
                along = stops[index] + (stops[index + 1] - stops[index]) * eased
                speed = (stops[index + 1] - stops[index]) * 6 * f * (1 - f) / span
                break
            if at_s <= ride.actual_departures[index + 1]:
                along = stops[index + 1]
                break
    x, y, heading = path.line.point_at(along)
    off_line = False
    if ride.detour and DETOUR_AT_M[0] <= along <= DETOUR_AT_M[1]:
        ramp = min(along - DETOUR_AT_M[0], DETOUR_AT_M[1] - along, 150.0) / 150.0
        side = math.radians(heading + 90)
        x, y = x + DETOUR_OFFSET_M * ramp * math.sin(side), y + DETOUR_OFFSET_M * ramp * math.cos(side)
        off_line = ramp > 0.2
    lat, lon = timetable.plane.to_lat_lon(x, y)
    route, tunnel_from, tunnel_to = TUNNEL
    has_fix = not (ride.run.trip.route_id == route and tunnel_from <= along <= tunnel_to)
    return BusState(ride, along, lat, lon, heading, speed, has_fix, off_line)


def gps_point(timetable: Timetable, bus: Bus, at_s: int) -> Point | None:
    """The ``vehicle_position`` point the bus's agent stores at ``at_s``, or None (no run, no fix)."""
    state = where(timetable, bus, at_s)
    if state is None or not state.has_fix:
        return None
    rng = random.Random(f"{bus.vehicle_id}:{at_s}")
    sigma = 12.0 if rng.random() < 0.05 else 3.5  # now and then a reflection off a building
    x, y = timetable.plane.to_xy(state.lat, state.lon)
    lat, lon = timetable.plane.to_lat_lon(x + rng.gauss(0, sigma), y + rng.gauss(0, sigma))
    fields: dict[str, FieldValue] = {
        "lat": round(lat, 7),
        "lon": round(lon, 7),
        "speed_mps": round(max(0.0, state.speed_mps + rng.gauss(0, 0.3)), 2),
        "fix_quality": 1,
        "satellites": rng.randint(7, 14),
        "hdop": round(rng.uniform(0.7, 1.6), 2),
    }
    if state.speed_mps > 1.0:
        fields["course_deg"] = round((state.heading_deg + rng.gauss(0, 3)) % 360, 2)
    return Point("vehicle_position", bus_tags(bus, f"gps-{bus.vehicle_id}"), at_s * 1000, fields)


def bus_tags(bus: Bus, device: str) -> dict[str, str]:
    """Tags of a reading of a device on ``bus``, as the edge agent and collector set them."""
    tags = {
        "vehicle": bus.vehicle_id,
        "vehicle_label": bus.label,
        "device": device,
        "agent": f"bus-{bus.vehicle_id}",
    }
    if bus.reports_route:
        tags["route"] = bus.route_id  # half the fleet has a console that says the route
    return tags


def fixes_between(
    timetable: Timetable, buses: list[Bus], start_s: int, end_s: int, *, period_s: int = 5
) -> Iterator[Point]:
    """Every bus's points in [start_s, end_s), one per ``period_s`` each, staggered across buses."""
    for number, bus in enumerate(buses):
        phase = number % period_s
        first = start_s + (phase - start_s) % period_s
        for at_s in range(first, end_s, period_s):
            point = gps_point(timetable, bus, at_s)
            if point is not None:
                yield point


def boardings_until(at_s: float, *, utc_offset_h: float = 2.0) -> float:
    """Passengers boarded one bus since midnight: 0.5 a minute, peaks near 8:00 and 17:00 local time."""
    hours = (at_s % 86400) / 3600 + utc_offset_h

    def peak(centre: float, width: float, height: float) -> float:
        # Integral of height * exp(-((h - centre) / width)^2 / 2) from 0 to hours, in minutes.
        scale = width * math.sqrt(math.pi / 2) * 60 * height
        return scale * (
            math.erf((hours - centre) / (width * math.sqrt(2))) - math.erf(-centre / (width * math.sqrt(2)))
        )

    return 0.5 * hours * 60 + peak(8.0, 1.0, 2.0) + peak(17.0, 1.3, 1.6)


def validator_point(bus: Bus, at_s: int) -> Point:
    """The validator's tap counters at ``at_s`` (counters only grow; split by card type)."""
    taps = int(boardings_until(at_s))
    return Point(
        "validator",
        bus_tags(bus, f"validator-{bus.vehicle_id}"),
        at_s * 1000,
        {
            "taps_resident": taps * 6 // 10,
            "taps_student": taps * 3 // 10,
            "taps_concession": taps - taps * 9 // 10,
        },
    )
