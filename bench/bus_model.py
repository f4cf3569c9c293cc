"""Buses for scoring ETAs, driven by a model the predictor knows nothing of (bench/transit.py only).

simulators/transit/buses.py drives buses by the rules the predictor assumes (delay carried on,
slack absorbed at the timetable's long dwells), so scoring on it is circular. Here:

- Running time of each stop-to-stop segment: the timetable's, times a time-of-day traffic factor
  (peaks around 08:00 and 17:30 local time, free-flowing at night), times a factor of the run
  (driver, weather: lognormal, sigma 0.08) and of the segment (lognormal, sigma 0.15); a blocked junction
  now and then (4 % of segments) adds an exponential wait, 75 s on average.
- Dwell from passengers: boardings and alightings are Poisson counts whose rate follows the time
  of day (and is three times higher at the hub); the bus stops only if someone gets on or off, and
  then for 6 s of doors plus 2.5 s a boarding and 1.5 s an alighting.
- Holding: each run holds (waits for its scheduled departure when early) at stops picked at random,
  15 % of the stops between the first and the last; the timetable's long dwells mean nothing here.
- Start: at the first stop on time or, half the time, late by an exponential 60 s on average;
  never before the previous run's arrival plus a 3-minute layover.

The positions are drawn by simulators.transit.buses' GPS renderer (same shapes, noise and tunnel), which
knows nothing of how the rides were made. Everything follows from ``seed``.
"""

from __future__ import annotations

import datetime as dt
import math
import random
from collections import defaultdict
from collections.abc import Callable
from zoneinfo import ZoneInfo

from api.transit.timetable import Timetable, TripRun
from simulators.transit.buses import Bus, Ride, blocks_of_day, make_bus
from simulators.transit.network import LINES, TIMEZONE

ZONE = ZoneInfo(TIMEZONE)
LAYOVER_S = 180.0
HOLD_SHARE = 0.15
BLOCKED_SHARE, BLOCKED_MEAN_S = 0.04, 75.0
RUN_SIGMA, SEGMENT_SIGMA = 0.08, 0.15
DOORS_S, BOARDING_S, ALIGHTING_S = 6.0, 2.5, 1.5
HUB_DEMAND = 3.0


def _bump(hour: float, centre: float, width: float) -> float:
    return math.exp(-(((hour - centre) / width) ** 2) / 2)


def _local_hour(at_s: float) -> float:
    local = dt.datetime.fromtimestamp(at_s, ZONE)
    return local.hour + local.minute / 60


def traffic(at_s: float) -> float:
    """How much longer than timetabled a segment takes at ``at_s`` (before noise): 0.9 at night."""
    hour = _local_hour(at_s)
    return 0.9 + 0.1 * _bump(hour, 13.0, 4.0) + 0.35 * _bump(hour, 8.0, 1.0) + 0.4 * _bump(hour, 17.5, 1.3)


def demand_per_min(at_s: float) -> float:
    """Passengers boarding at an ordinary stop per minute at ``at_s``."""
    hour = _local_hour(at_s)
    return 0.1 + 0.15 * _bump(hour, 13.0, 4.0) + 0.5 * _bump(hour, 8.0, 1.0) + 0.45 * _bump(hour, 17.5, 1.5)


def _poisson(rng: random.Random, mean: float) -> int:
    """A Poisson count (Knuth's method: means here are a few passengers)."""
    limit, count, product = math.exp(-mean), 0, rng.random()
    while product > limit:
        count += 1
        product *= rng.random()
    return count


def drive(
    vehicle_id: str, run: TripRun, rng: random.Random, *, ready_s: float, headway_s: float, hubs: set[str]
) -> Ride:
    """One run as this model drives it, the bus free from ``ready_s``; ``headway_s`` feeds the demand."""
    stop_times = run.trip.stop_times
    last = len(stop_times) - 1
    holds = {index for index in range(1, last) if rng.random() < HOLD_SHARE}
    run_factor = rng.lognormvariate(0.0, RUN_SIGMA)
    late = rng.expovariate(1 / 60) if rng.random() < 0.5 else 0.0
    clock = max(float(run.departure(0)) + late, ready_s)
    arrivals, departures = [clock], [clock]
    for index in range(1, last + 1):
        planned = run.arrival(index) - run.departure(index - 1)
        factor = traffic(clock) * run_factor * rng.lognormvariate(0.0, SEGMENT_SIGMA)
        clock += planned * factor
        if rng.random() < BLOCKED_SHARE:
            clock += rng.expovariate(1 / BLOCKED_MEAN_S)
        arrivals.append(clock)
        if index < last:
            busy = HUB_DEMAND if stop_times[index].stop_id in hubs else 1.0
            mean = demand_per_min(clock) * headway_s / 60 * busy
            boarding, alighting = _poisson(rng, mean), _poisson(rng, mean * 0.8)
            if boarding or alighting:
                clock += DOORS_S + BOARDING_S * boarding + ALIGHTING_S * alighting
            if index in holds:
                clock = max(clock, float(run.departure(index)))
        departures.append(clock)
    return Ride(vehicle_id, run, tuple(arrivals), tuple(departures))


def _headways(runs: list[TripRun]) -> dict[str, float]:
    """Each run's scheduled gap to the run of its trip pattern before it (600 s for the first)."""
    gaps: dict[str, float] = {}
    by_pattern: dict[tuple[str, int | None], list[TripRun]] = {}
    for run in runs:
        by_pattern.setdefault((run.trip.route_id, run.trip.direction_id), []).append(run)
    for pattern in by_pattern.values():
        pattern.sort(key=lambda r: r.departure(0))
        for before, after in zip([None, *pattern], pattern, strict=False):
            gaps[after.key] = 600.0 if before is None else max(60.0, after.departure(0) - before.departure(0))
    return gaps


def drive_day(timetable: Timetable, service_date: dt.date, *, seed: int = 2027) -> list[Bus]:
    """Every bus of ``service_date`` on its block of runs, as this model drives them."""
    blocks = blocks_of_day(timetable, service_date)
    headways = _headways([run for _route, _number, block in blocks for run in block])
    hub_names = {line.hub for line in LINES}
    hubs = {stop_id for stop_id, stop in timetable.stops.items() if stop.name in hub_names}
    buses = []
    for route_id, number, block in blocks:
        rng = random.Random(f"model:{seed}:{route_id}:{number}:{service_date}")
        rides: list[Ride] = []
        ready = -math.inf
        vehicle_id = make_bus(timetable, route_id, number, ()).vehicle_id
        for run in block:
            ride = drive(vehicle_id, run, rng, ready_s=ready, headway_s=headways[run.key], hubs=hubs)
            rides.append(ride)
            ready = ride.actual_arrivals[-1] + LAYOVER_S
        buses.append(make_bus(timetable, route_id, number, tuple(rides)))
    return buses


def segment_times(
    buses: list[Bus], hour_of: Callable[[float], int]
) -> tuple[dict[tuple[str, str, int], list[float]], dict[tuple[str, int], list[float]]]:
    """What the buses really took, keyed as api/transit/history.py learns it: running times per
    (stop, next stop, hour it left) and dwells at stops between the first and last per (stop, hour
    it arrived). To check a learner against, never for a predictor."""
    runs: dict[tuple[str, str, int], list[float]] = defaultdict(list)
    dwells: dict[tuple[str, int], list[float]] = defaultdict(list)
    for bus in buses:
        for ride in bus.rides:
            stop_times = ride.run.trip.stop_times
            for index in range(1, len(stop_times)):
                leave, reach = ride.actual_departures[index - 1], ride.actual_arrivals[index]
                runs[(stop_times[index - 1].stop_id, stop_times[index].stop_id, hour_of(leave))].append(
                    reach - leave
                )
                if index < len(stop_times) - 1:
                    dwells[(stop_times[index].stop_id, hour_of(reach))].append(
                        ride.actual_departures[index] - reach
                    )
    return dict(runs), dict(dwells)
