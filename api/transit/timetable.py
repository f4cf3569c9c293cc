"""The static schedule in memory: which trips run on a day, where they are at a time, and their paths.

Times of day are seconds after "noon minus 12 h" of the service day in the agency's time zone
(the GTFS rule), so a trip that leaves at 24:40:00 belongs to the previous service day and a
day with a clock change still counts from the right instant.
"""

from __future__ import annotations

import datetime as dt
import math
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TypeVar
from zoneinfo import ZoneInfo

from api.transit.geometry import CityPlane, Polyline

STOP_SNAP_M = 150.0  # a stop this near its trip's line is on it
STOP_SNAP_SLACK_M = 40.0  # about a road's width: the two sides of one street are one place
P = TypeVar("P")


@dataclass(frozen=True, slots=True)
class Stop:
    stop_id: str
    name: str
    lat: float
    lon: float
    location_type: int = 0


@dataclass(frozen=True, slots=True)
class Route:
    route_id: str
    agency_id: str
    short_name: str
    long_name: str
    route_type: int


@dataclass(frozen=True, slots=True)
class StopTime:
    stop_sequence: int
    stop_id: str
    arrival_s: int
    departure_s: int
    timepoint: bool = True


@dataclass(frozen=True, slots=True)
class Frequency:
    start_s: int
    end_s: int
    headway_s: int
    exact_times: bool


@dataclass(frozen=True, slots=True)
class Trip:
    trip_id: str
    route_id: str
    service_id: str
    direction_id: int | None
    shape_id: str | None
    headsign: str
    stop_times: tuple[StopTime, ...]
    frequencies: tuple[Frequency, ...] = ()
    block_id: str | None = None  # trips.txt: the trips one vehicle drives in turn

    @property
    def first_s(self) -> int:
        return self.stop_times[0].arrival_s

    @property
    def last_s(self) -> int:
        return self.stop_times[-1].departure_s


@dataclass(frozen=True, slots=True)
class ServiceCalendar:
    """One line of calendar.txt: weekdays (Monday first) within a date range."""

    weekdays: tuple[bool, bool, bool, bool, bool, bool, bool]
    start: dt.date
    end: dt.date


@dataclass(frozen=True, slots=True)
class TripPath:
    """The line a trip drives and where each of its stops lies along it, in metres."""

    line: Polyline
    stop_along_m: tuple[float, ...]


@dataclass(frozen=True, slots=True)
class TripRun:
    """One run of a trip on one service day: the trip instance GTFS-realtime names.

    ``shift_s`` moves the trip's stop times for runs of a frequency-based trip (0 otherwise).
    """

    trip: Trip
    service_date: dt.date
    day_start: int
    shift_s: int = 0
    _key: str | None = field(default=None, init=False, repr=False, compare=False)  # ``key``, once asked

    @property
    def start_date(self) -> str:
        return self.service_date.strftime("%Y%m%d")

    @property
    def start_time(self) -> str:
        return gtfs_time(self.trip.first_s + self.shift_s)

    @property
    def frequency(self) -> Frequency | None:
        """The frequencies.txt line this run comes from, if any."""
        start = self.trip.first_s + self.shift_s
        for frequency in self.trip.frequencies:
            if frequency.start_s <= start < frequency.end_s:
                return frequency
        return None

    def arrival(self, index: int) -> int:
        """Scheduled arrival at the ``index``-th stop of the trip, seconds since the epoch."""
        return self.day_start + self.trip.stop_times[index].arrival_s + self.shift_s

    def departure(self, index: int) -> int:
        return self.day_start + self.trip.stop_times[index].departure_s + self.shift_s

    @property
    def key(self) -> str:
        """Stable id of this run: trip, service day and, for repeated trips, the start time."""
        key = self._key
        if key is None:
            key = f"{self.trip.trip_id}@{self.start_date}"
            if self.trip.frequencies:
                key += f"T{self.start_time.replace(':', '')}"
            object.__setattr__(self, "_key", key)  # feeds ask each bus's run's key several times a build
        return key


def chain_blocks(
    legs: Sequence[tuple[P, float, P, float]], *, layover_s: float, same_place: Callable[[P, P], bool]
) -> list[list[int]]:
    """Trips chained into blocks: each (start, depart, end, arrive) goes, in order of departure, to the
    first block whose last trip ended where it starts at least ``layover_s`` before it leaves.

    Returns the blocks as lists of indices into ``legs``, each in driving order, blocks in order of
    their first departure.
    """
    blocks: list[list[int]] = []
    for index in sorted(range(len(legs)), key=lambda i: legs[i][1]):
        start, depart_s, _, _ = legs[index]
        for block in blocks:
            _, _, end, arrive_s = legs[block[-1]]
            if same_place(end, start) and arrive_s + layover_s <= depart_s:
                block.append(index)
                break
        else:
            blocks.append([index])
    return blocks


def city_plane(stops: Iterable[Stop]) -> CityPlane:
    """The flat map of a network, centred on its stops."""
    lats, lons = zip(*((stop.lat, stop.lon) for stop in stops), strict=True)
    return CityPlane((min(lats) + max(lats)) / 2, (min(lons) + max(lons)) / 2)


def trip_path(
    plane: CityPlane,
    stops: Sequence[Stop],
    shape: Sequence[tuple[float, float]] | None,
    lines: dict[str, Polyline] | None = None,
    shape_id: str | None = None,
) -> TripPath:
    """The line a trip drives (its shape, else stop to stop) and its stops placed along it in order.

    ``lines`` caches each ``shape_id``'s line: most trips of a route share one.
    """
    stop_xy = [plane.to_xy(stop.lat, stop.lon) for stop in stops]
    if shape is None:
        line = Polyline(stop_xy)
        return TripPath(line, tuple(line.cumulative))
    if lines is None or shape_id is None or shape_id not in lines:
        line = Polyline([plane.to_xy(lat, lon) for lat, lon in shape])
        if lines is not None and shape_id is not None:
            lines[shape_id] = line
    else:
        line = lines[shape_id]
    along: list[float] = []
    for x, y in stop_xy:
        along.append(_stop_along(line, x, y, after_m=along[-1] if along else 0.0))
    return TripPath(line, tuple(along))


def _stop_along(line: Polyline, x: float, y: float, *, after_m: float) -> float:
    """Where a stop lies on its trip's line, at or after the previous stop.

    A line that comes back along the same street passes the stop twice, the other side of the road
    a few metres nearer perhaps: of the passes about as near as the nearest, the first is the stop's.
    """
    passes = [on for on in line.project(x, y, within_m=STOP_SNAP_M) if on.along_m >= after_m]
    if not passes:
        return line.nearest(x, y, after_m=after_m).along_m
    nearest_m = min(on.off_m for on in passes)
    return min(on.along_m for on in passes if on.off_m <= nearest_m + STOP_SNAP_SLACK_M)


def gtfs_time(seconds: int) -> str:
    """``HH:MM:SS`` with hours past 24 for times after midnight of the service day."""
    return f"{seconds // 3600:02d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


@dataclass
class Timetable:
    """Everything of a GTFS feed the real-time feeds need, indexed for lookups by time."""

    timezone: str
    agency_ids: frozenset[str]
    stops: Mapping[str, Stop]
    routes: Mapping[str, Route]
    trips: Mapping[str, Trip]
    shapes: Mapping[str, Sequence[tuple[float, float]]]
    calendars: Mapping[str, ServiceCalendar]
    added_dates: Mapping[str, frozenset[dt.date]]
    removed_dates: Mapping[str, frozenset[dt.date]]
    feed_version: str | None = None  # feed_info.txt's, when the zip has one
    plane: CityPlane = field(init=False)
    _trips_by_service: dict[str, list[Trip]] = field(init=False, repr=False)
    _paths: dict[str, TripPath] = field(init=False, repr=False)
    _blocks: dict[str, list[Trip]] = field(init=False, repr=False)
    _place_in_block: dict[str, int] = field(init=False, repr=False)
    _zone: ZoneInfo = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.plane = city_plane(self.stops.values())
        self._zone = ZoneInfo(self.timezone)
        self._trips_by_service = defaultdict(list)
        for trip in self.trips.values():
            self._trips_by_service[trip.service_id].append(trip)
        self._blocks = defaultdict(list)
        for trip in self.trips.values():
            if trip.block_id is not None and not trip.frequencies:
                self._blocks[trip.block_id].append(trip)
        self._place_in_block: dict[str, int] = {}
        for block in self._blocks.values():
            block.sort(key=lambda trip: (trip.first_s, trip.trip_id))
            self._place_in_block.update((trip.trip_id, index) for index, trip in enumerate(block))
        self._paths = {}
        lines: dict[str, Polyline] = {}
        # Most trips of a route share a shape and a stop pattern: place their stops once.
        patterns: dict[tuple[str | None, tuple[str, ...]], TripPath] = {}
        for trip in self.trips.values():
            pattern = (trip.shape_id, tuple(stop_time.stop_id for stop_time in trip.stop_times))
            if pattern not in patterns:
                patterns[pattern] = self._path(trip, lines)
            self._paths[trip.trip_id] = patterns[pattern]

    def _path(self, trip: Trip, lines: dict[str, Polyline]) -> TripPath:
        return trip_path(
            self.plane,
            [self.stops[stop_time.stop_id] for stop_time in trip.stop_times],
            self.shapes[trip.shape_id] if trip.shape_id is not None else None,
            lines,
            trip.shape_id,
        )

    def path(self, trip_id: str) -> TripPath:
        return self._paths[trip_id]

    def next_in_block(self, run: TripRun) -> TripRun | None:
        """The run the vehicle of ``run`` drives next (trips.txt ``block_id``), on the same service day.

        A block may hold trips of several services: the next is the first trip after this one whose
        service runs that day. None for the last trip of a block, a trip without one, or a headway trip.
        """
        trip = run.trip
        if trip.block_id is None or trip.frequencies:
            return None
        block = self._blocks[trip.block_id]
        for following in block[self._place_in_block[trip.trip_id] + 1 :]:
            if (
                following.first_s >= trip.last_s
                and following.trip_id != trip.trip_id
                and self.service_runs(following.service_id, run.service_date)
            ):
                return TripRun(following, run.service_date, run.day_start)
        return None

    def runs_on(self, service_date: dt.date) -> bool:
        """Whether any trip runs on ``service_date``."""
        return any(self.service_runs(service_id, service_date) for service_id in self._trips_by_service)

    def service_runs(self, service_id: str, service_date: dt.date) -> bool:
        """Whether ``service_id`` runs on ``service_date`` (calendar.txt, then calendar_dates.txt)."""
        if service_date in self.removed_dates.get(service_id, ()):
            return False
        if service_date in self.added_dates.get(service_id, ()):
            return True
        calendar = self.calendars.get(service_id)
        return (
            calendar is not None
            and calendar.start <= service_date <= calendar.end
            and calendar.weekdays[service_date.weekday()]
        )

    def day_start(self, service_date: dt.date) -> int:
        """Epoch seconds of "noon minus 12 h" of ``service_date`` in the agency's time zone."""
        noon = dt.datetime.combine(service_date, dt.time(12), tzinfo=self._zone)
        return int(noon.timestamp()) - 12 * 3600

    def service_date_of(self, epoch_s: float) -> dt.date:
        return dt.datetime.fromtimestamp(epoch_s, self._zone).date()

    def runs_between(self, start_s: float, end_s: float, *, route_id: str | None = None) -> Iterator[TripRun]:
        """Runs on the road (first arrival to last departure) at some time in [start_s, end_s]."""
        today = self.service_date_of(start_s)
        for service_date in (today - dt.timedelta(days=1), today, today + dt.timedelta(days=1)):
            day_start = self.day_start(service_date)
            for service_id, trips in self._trips_by_service.items():
                if not self.service_runs(service_id, service_date):
                    continue
                for trip in trips:
                    if route_id is not None and trip.route_id != route_id:
                        continue
                    yield from _runs(trip, service_date, day_start, start_s - day_start, end_s - day_start)

    def run_of(self, trip_id: str, epoch_s: float, *, start_time_s: int | None = None) -> TripRun | None:
        """The run of ``trip_id`` nearest to ``epoch_s`` (a bus's console names a trip, not a day)."""
        trip = self.trips.get(trip_id)
        if trip is None:
            return None
        runs = [
            run
            for run in self.runs_between(epoch_s - 3 * 3600, epoch_s + 3600, route_id=trip.route_id)
            if run.trip.trip_id == trip_id
            and (start_time_s is None or run.trip.first_s + run.shift_s == start_time_s)
        ]
        return min(runs, key=lambda run: abs(run.arrival(0) - epoch_s), default=None)


def _runs(trip: Trip, service_date: dt.date, day_start: int, lo_s: float, hi_s: float) -> Iterator[TripRun]:
    duration = trip.last_s - trip.first_s
    if not trip.frequencies:
        if trip.first_s <= hi_s and trip.last_s >= lo_s:
            yield TripRun(trip, service_date, day_start)
        return
    for frequency in trip.frequencies:
        # Runs start every headway from start_s until before end_s; keep those on the road in [lo, hi].
        first = max(0, math.ceil((lo_s - duration - frequency.start_s) / frequency.headway_s))
        for start in range(frequency.start_s, frequency.end_s, frequency.headway_s)[first:]:
            if start > hi_s:
                break
            yield TripRun(trip, service_date, day_start, start - trip.first_s)
