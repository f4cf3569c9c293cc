"""Reading a static GTFS zip into a ``Timetable``, refusing it with every problem found.

A problem names the file, the row (the line a record starts on, the header being line 1), the
field and what is wrong, so whoever exported the zip can fix it; a row naming something whose own
row was refused is not reported again, so the first ``MAX_PROBLEMS`` are causes. Nothing of an
invalid zip is used: a timetable is either whole or refused. Stops between timed ones may have
blank times (GTFS allows it): they get times in proportion to ``shape_dist_traveled`` when every
stop of the trip has one, else to the distance along the trip's shape (or stop to stop).
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import itertools
import math
import re
import zipfile
import zlib
from collections import defaultdict
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from api.transit.geometry import CityPlane, Polyline
from api.transit.gtfs_archive import LineTooLong, member_problems, text_lines
from api.transit.timetable import (
    Frequency,
    Route,
    ServiceCalendar,
    Stop,
    StopTime,
    Timetable,
    Trip,
    city_plane,
    trip_path,
)

MAX_PROBLEMS = 50
MAX_ZIP_BYTES = 200 * 1024 * 1024
REQUIRED_FILES = ("agency.txt", "stops.txt", "routes.txt", "trips.txt", "stop_times.txt")
_TIME = re.compile(r"^(\d{1,3}):([0-5]\d):([0-5]\d)$")
_WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
T = TypeVar("T")
# What zipfile raises for a damaged zip: bad CRC-32 or header, encrypted member, a zip version or
# compression method it lacks, damaged or truncated compressed data.
UNREADABLE_ZIP = (zipfile.BadZipFile, RuntimeError, NotImplementedError, zlib.error, EOFError)


@dataclass(frozen=True, slots=True)
class GtfsProblem:
    file: str
    row: int | None
    field: str | None
    reason: str

    def __str__(self) -> str:
        where = self.file + (f" row {self.row}" if self.row is not None else "")
        return f"{where}" + (f" field {self.field}" if self.field else "") + f": {self.reason}"


class GtfsError(ValueError):
    """The zip is not a usable GTFS feed; ``problems`` says where and why (at most ``MAX_PROBLEMS``)."""

    def __init__(self, problems: list[GtfsProblem]) -> None:
        self.problems = problems
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        super().__init__(f"invalid GTFS: {problems[0]}{more}")


class _Refused(Exception):
    """Too many problems to go on."""


class _BadField(ValueError):
    pass


def parse_gtfs_time(text: str) -> int:
    """``H:MM:SS`` / ``HH:MM:SS`` (hours may pass 24) to seconds after the service day's start."""
    match = _TIME.match(text)
    if not match:
        raise _BadField(f"{text!r} is not a time HH:MM:SS (hours may exceed 24, e.g. 25:10:00)")
    hours, minutes, seconds = (int(part) for part in match.groups())
    return hours * 3600 + minutes * 60 + seconds


def _date(text: str) -> dt.date:
    try:
        if len(text) != 8 or not text.isdigit():
            raise ValueError
        return dt.date(int(text[:4]), int(text[4:6]), int(text[6:]))
    except ValueError:
        raise _BadField(f"{text!r} is not a date YYYYMMDD") from None


def _int(text: str, *, low: int, high: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise _BadField(f"{text!r} is not a whole number") from None
    if not low <= value <= high:
        raise _BadField(f"{value} is outside {low}..{high}")
    return value


def _float(text: str, *, low: float, high: float) -> float:
    try:
        value = float(text)
    except ValueError:
        raise _BadField(f"{text!r} is not a number") from None
    if not low <= value <= high:
        raise _BadField(f"{value} is outside {low}..{high}")
    return value


class _Reader:
    """Opens the zip's files and collects problems, row by row."""

    def __init__(self, archive: zipfile.ZipFile) -> None:
        self.archive = archive
        self.names = set(archive.namelist())  # plain names at the root only: gtfs_archive.member_problems
        self.problems: list[GtfsProblem] = []

    def problem(self, file: str, row: int | None, field: str | None, reason: str) -> None:
        self.problems.append(GtfsProblem(file, row, field, reason))
        if len(self.problems) >= MAX_PROBLEMS:
            raise _Refused

    def has(self, file: str) -> bool:
        return file in self.names

    def rows(self, file: str, required: tuple[str, ...]) -> Iterator[tuple[int, Mapping[str, str]]]:
        """(line number, row with stripped values) of ``file``; missing columns are one problem each."""
        if file not in self.names:
            return
        try:
            with self.archive.open(file) as raw:
                reader = csv.DictReader(text_lines(raw))
                try:
                    columns = [name.strip() for name in reader.fieldnames or []]
                    missing = [name for name in required if name not in columns]
                    for name in missing:
                        self.problem(file, 1, name, "required column is missing from the header")
                    if missing:
                        return
                    start = reader.line_num + 1
                    for row in reader:
                        # A record may span lines (a quoted newline): name the line it starts on.
                        line, start = start, reader.line_num + 1
                        if None in row:
                            self.problem(file, line, None, "more values than header columns")
                            continue
                        yield line, {k.strip(): (v or "").strip() for k, v in row.items() if k}
                except (UnicodeDecodeError, csv.Error) as exc:
                    self.problem(file, reader.line_num or 1, None, f"not readable as UTF-8 CSV ({exc})")
                except LineTooLong as exc:
                    self.problem(file, exc.line, None, str(exc))
                    raise _Refused from None  # not a table any more: what would follow is noise
        except UNREADABLE_ZIP as exc:
            self.problem(file, None, None, f"cannot be read from the zip ({exc})")
            raise _Refused from None  # a damaged zip: what else would be found follows from it

    def field(
        self, file: str, row: int, values: Mapping[str, str], name: str, parse: Callable[[str], T]
    ) -> T | None:
        """``parse`` of a required field, or None after recording why it cannot be used."""
        text = values.get(name, "")
        if not text:
            self.problem(file, row, name, "required value is empty")
            return None
        try:
            return parse(text)
        except _BadField as exc:
            self.problem(file, row, name, str(exc))
            return None

    def optional(
        self, file: str, row: int, values: Mapping[str, str], name: str, parse: Callable[[str], T]
    ) -> T | None:
        return self.field(file, row, values, name, parse) if values.get(name) else None


def load_gtfs(data: bytes) -> Timetable:
    """The timetable in a GTFS zip, or ``GtfsError`` listing what is wrong with it."""
    if len(data) > MAX_ZIP_BYTES:
        raise GtfsError([GtfsProblem("(zip)", None, None, f"larger than {MAX_ZIP_BYTES} bytes")])
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except UNREADABLE_ZIP as exc:
        raise GtfsError([GtfsProblem("(zip)", None, None, f"not a zip archive ({exc})")]) from None
    reader = _Reader(archive)
    try:
        with archive:
            if members := member_problems(archive):
                refusal = [GtfsProblem(name, None, None, reason) for name, reason in members[:MAX_PROBLEMS]]
                raise GtfsError(refusal)
            timetable = _read(reader)
    except _Refused:
        timetable = None
    if reader.problems or timetable is None:
        raise GtfsError(reader.problems)
    return timetable


def _unique(reader: _Reader, file: str, row: int, seen: dict[str, int], key: str, value: str) -> bool:
    if value in seen:
        reader.problem(file, row, key, f"{value!r} repeats the {key} of row {seen[value]}")
        return False
    seen[value] = row
    return True


def _read(reader: _Reader) -> Timetable | None:
    for file in REQUIRED_FILES:
        if not reader.has(file):
            reader.problem(file, None, None, "required file is missing from the zip")
    if not reader.has("calendar.txt") and not reader.has("calendar_dates.txt"):
        reader.problem(
            "calendar.txt", None, None, "neither calendar.txt nor calendar_dates.txt is in the zip"
        )
    if reader.problems:
        return None

    agency_ids: set[str] = set()
    timezones: set[str] = set()
    for row, values in reader.rows("agency.txt", ("agency_name", "agency_url", "agency_timezone")):
        agency_ids.add(values.get("agency_id", ""))
        zone = reader.field("agency.txt", row, values, "agency_timezone", _zone)
        if zone:
            timezones.add(zone)
    if len(timezones) > 1:
        reader.problem(
            "agency.txt", None, "agency_timezone", f"agencies disagree on the time zone: {sorted(timezones)}"
        )
    if not agency_ids:
        reader.problem("agency.txt", None, None, "no agency")

    # Ids whose own row was refused (and reported): references to them are not reported again, so the
    # first MAX_PROBLEMS problems are causes, not their echoes.
    refused: dict[str, set[str]] = defaultdict(set)
    stops: dict[str, Stop] = {}
    seen: dict[str, int] = {}
    for row, values in reader.rows("stops.txt", ("stop_id",)):
        stop_id = values.get("stop_id", "")
        if not stop_id:
            reader.problem("stops.txt", row, "stop_id", "required value is empty")
            continue
        if not _unique(reader, "stops.txt", row, seen, "stop_id", stop_id):
            continue
        location_type = reader.optional(
            "stops.txt", row, values, "location_type", lambda t: _int(t, low=0, high=4)
        )
        lat = reader.field("stops.txt", row, values, "stop_lat", lambda t: _float(t, low=-90, high=90))
        lon = reader.field("stops.txt", row, values, "stop_lon", lambda t: _float(t, low=-180, high=180))
        if lat is not None and lon is not None:
            stops[stop_id] = Stop(stop_id, values.get("stop_name", ""), lat, lon, location_type or 0)
        else:
            refused["stop_id"].add(stop_id)

    routes: dict[str, Route] = {}
    seen = {}
    single_agency = next(iter(agency_ids)) if len(agency_ids) == 1 else None
    for row, values in reader.rows("routes.txt", ("route_id", "route_type")):
        route_id = values["route_id"]
        if not route_id:
            reader.problem("routes.txt", row, "route_id", "required value is empty")
            continue
        if not _unique(reader, "routes.txt", row, seen, "route_id", route_id):
            continue
        agency_id = values.get("agency_id", "") or single_agency or ""
        if agency_id not in agency_ids:
            reader.problem("routes.txt", row, "agency_id", f"{agency_id!r} is not an agency_id of agency.txt")
        if not values.get("route_short_name") and not values.get("route_long_name"):
            reader.problem("routes.txt", row, "route_short_name", "a route needs a short or a long name")
        route_type = reader.field(
            "routes.txt", row, values, "route_type", lambda t: _int(t, low=0, high=1702)
        )
        if route_type is None:
            refused["route_id"].add(route_id)
        else:
            routes[route_id] = Route(
                route_id,
                agency_id,
                values.get("route_short_name", ""),
                values.get("route_long_name", ""),
                route_type,
            )

    calendars: dict[str, ServiceCalendar] = {}
    seen = {}
    calendar_columns = ("service_id", *_WEEKDAYS, "start_date", "end_date")
    for row, values in reader.rows("calendar.txt", calendar_columns):
        service_id = values["service_id"]
        if not service_id or not _unique(reader, "calendar.txt", row, seen, "service_id", service_id):
            if not service_id:
                reader.problem("calendar.txt", row, "service_id", "required value is empty")
            continue
        days = [
            reader.field("calendar.txt", row, values, day, lambda t: _int(t, low=0, high=1))
            for day in _WEEKDAYS
        ]
        start = reader.field("calendar.txt", row, values, "start_date", _date)
        end = reader.field("calendar.txt", row, values, "end_date", _date)
        if start and end and end < start:
            reader.problem(
                "calendar.txt", row, "end_date", f"{end:%Y%m%d} is before start_date {start:%Y%m%d}"
            )
        elif start and end and None not in days:
            weekdays = tuple(bool(day) for day in days)
            calendars[service_id] = ServiceCalendar(weekdays, start, end)  # type: ignore[arg-type]
        else:
            refused["service_id"].add(service_id)

    added: dict[str, set[dt.date]] = defaultdict(set)
    removed: dict[str, set[dt.date]] = defaultdict(set)
    for row, values in reader.rows("calendar_dates.txt", ("service_id", "date", "exception_type")):
        service_id = values["service_id"]
        day = reader.field("calendar_dates.txt", row, values, "date", _date)
        kind = reader.field(
            "calendar_dates.txt", row, values, "exception_type", lambda t: _int(t, low=1, high=2)
        )
        if not service_id:
            reader.problem("calendar_dates.txt", row, "service_id", "required value is empty")
        elif not (day and kind):
            refused["service_id"].add(service_id)
        else:
            if day in added[service_id] | removed[service_id]:
                reader.problem(
                    "calendar_dates.txt", row, "date", f"{day:%Y%m%d} is listed twice for {service_id!r}"
                )
            (added if kind == 1 else removed)[service_id].add(day)
    services = set(calendars) | set(added) | set(removed)

    shape_points: dict[str, list[tuple[int, int, float, float]]] = defaultdict(list)
    for row, values in reader.rows(
        "shapes.txt", ("shape_id", "shape_pt_lat", "shape_pt_lon", "shape_pt_sequence")
    ):
        lat = reader.field("shapes.txt", row, values, "shape_pt_lat", lambda t: _float(t, low=-90, high=90))
        lon = reader.field("shapes.txt", row, values, "shape_pt_lon", lambda t: _float(t, low=-180, high=180))
        sequence = reader.field(
            "shapes.txt", row, values, "shape_pt_sequence", lambda t: _int(t, low=0, high=2**31)
        )
        if values["shape_id"] and lat is not None and lon is not None and sequence is not None:
            shape_points[values["shape_id"]].append((sequence, row, lat, lon))
        elif values["shape_id"]:
            refused["shape_id"].add(values["shape_id"])
    shapes: dict[str, list[tuple[float, float]]] = {}
    for shape_id, points in shape_points.items():
        points.sort()
        repeated = [
            row for (before, _, _, _), (after, row, _, _) in itertools.pairwise(points) if after == before
        ]
        if repeated:
            reader.problem(
                "shapes.txt",
                repeated[0],
                "shape_pt_sequence",
                f"shape {shape_id!r} repeats a shape_pt_sequence",
            )
        elif len(points) < 2 and shape_id not in refused["shape_id"]:
            reader.problem(
                "shapes.txt", points[0][1], "shape_id", f"shape {shape_id!r} has fewer than two points"
            )
        elif shape_id not in refused["shape_id"]:
            shapes[shape_id] = [(lat, lon) for _, _, lat, lon in points]
            continue
        refused["shape_id"].add(shape_id)

    trip_rows: dict[str, tuple[int, Mapping[str, str]]] = {}
    for row, values in reader.rows("trips.txt", ("route_id", "service_id", "trip_id")):
        trip_id = values["trip_id"]
        if not trip_id:
            reader.problem("trips.txt", row, "trip_id", "required value is empty")
            continue
        if trip_id in trip_rows:
            reader.problem(
                "trips.txt", row, "trip_id", f"{trip_id!r} repeats the trip_id of row {trip_rows[trip_id][0]}"
            )
            continue
        trip_rows[trip_id] = (row, values)
        if values["route_id"] not in routes and values["route_id"] not in refused["route_id"]:
            reader.problem(
                "trips.txt", row, "route_id", f"{values['route_id']!r} is not a route_id of routes.txt"
            )
        if values["service_id"] not in services | refused["service_id"]:
            reader.problem(
                "trips.txt", row, "service_id", f"{values['service_id']!r} is in neither calendar file"
            )
        shape_id = values.get("shape_id", "")
        if shape_id and shape_id not in shapes and shape_id not in refused["shape_id"]:
            reader.problem("trips.txt", row, "shape_id", f"{shape_id!r} is not a shape_id of shapes.txt")
        reader.optional("trips.txt", row, values, "direction_id", lambda t: _int(t, low=0, high=1))

    times: dict[str, list[_Row]] = defaultdict(list)
    for row, values in reader.rows("stop_times.txt", ("trip_id", "stop_id", "stop_sequence")):
        trip_id, stop_id = values["trip_id"], values["stop_id"]
        if trip_id not in trip_rows:
            reader.problem("stop_times.txt", row, "trip_id", f"{trip_id!r} is not a trip_id of trips.txt")
            continue
        stop = stops.get(stop_id)
        if stop is None:
            refused["trip_id"].add(trip_id)
            if stop_id not in refused["stop_id"]:
                reader.problem("stop_times.txt", row, "stop_id", f"{stop_id!r} is not a stop_id of stops.txt")
            continue
        if stop.location_type != 0:
            reader.problem(
                "stop_times.txt", row, "stop_id", f"{stop_id!r} is a station or entrance, not a stop"
            )
        problems = len(reader.problems)
        sequence = reader.field(
            "stop_times.txt", row, values, "stop_sequence", lambda t: _int(t, low=0, high=2**31)
        )
        arrival = reader.optional("stop_times.txt", row, values, "arrival_time", parse_gtfs_time)
        departure = reader.optional("stop_times.txt", row, values, "departure_time", parse_gtfs_time)
        timepoint = reader.optional(
            "stop_times.txt", row, values, "timepoint", lambda t: _int(t, low=0, high=1)
        )
        travelled = reader.optional(
            "stop_times.txt", row, values, "shape_dist_traveled", lambda t: _float(t, low=0, high=math.inf)
        )
        if arrival is None and departure is None and timepoint == 1:
            reader.problem(
                "stop_times.txt",
                row,
                "arrival_time",
                "timepoint is 1 (an exact time) but no time is given; give one or set timepoint to 0",
            )
        elif arrival is not None and departure is not None and departure < arrival:
            reader.problem("stop_times.txt", row, "departure_time", "is before arrival_time")
        if len(reader.problems) > problems or sequence is None:
            refused["trip_id"].add(trip_id)
            continue
        arrival = arrival if arrival is not None else departure
        departure = departure if departure is not None else arrival
        is_timepoint = arrival is not None and timepoint != 0
        times[trip_id].append(_Row(row, sequence, stop_id, arrival, departure, is_timepoint, travelled))

    frequencies: dict[str, list[Frequency]] = defaultdict(list)
    for row, values in reader.rows("frequencies.txt", ("trip_id", "start_time", "end_time", "headway_secs")):
        if values["trip_id"] not in trip_rows:
            reader.problem(
                "frequencies.txt", row, "trip_id", f"{values['trip_id']!r} is not a trip_id of trips.txt"
            )
            continue
        begins = reader.field("frequencies.txt", row, values, "start_time", parse_gtfs_time)
        ends = reader.field("frequencies.txt", row, values, "end_time", parse_gtfs_time)
        headway = reader.field(
            "frequencies.txt", row, values, "headway_secs", lambda t: _int(t, low=1, high=86400)
        )
        exact = reader.optional(
            "frequencies.txt", row, values, "exact_times", lambda t: _int(t, low=0, high=1)
        )
        if begins is not None and ends is not None and headway is not None:
            if ends <= begins:
                reader.problem("frequencies.txt", row, "end_time", "is not after start_time")
            else:
                frequencies[values["trip_id"]].append(Frequency(begins, ends, headway, bool(exact)))

    trips: dict[str, Trip] = {}
    lines: dict[str, Polyline] = {}
    plane = city_plane(stops.values()) if stops else None
    for trip_id, (row, values) in trip_rows.items():
        if trip_id in refused["trip_id"]:
            continue  # a row of its stop times was refused and reported
        ordered = sorted(times.get(trip_id, []), key=lambda item: item.sequence)
        if len(ordered) < 2:
            reader.problem(
                "trips.txt", row, "trip_id", f"trip {trip_id!r} has fewer than two stops in stop_times.txt"
            )
            continue
        usable = True
        for terminus, which in ((ordered[0], "first"), (ordered[-1], "last")):
            if terminus.arrival_s is None:
                usable = False
                reader.problem(
                    "stop_times.txt",
                    terminus.line,
                    "arrival_time",
                    f"the {which} stop of trip {trip_id!r} needs a time (only stops between may be blank)",
                )
        for before, after in itertools.pairwise(ordered):
            if after.sequence == before.sequence:
                usable = False
                reader.problem(
                    "stop_times.txt",
                    after.line,
                    "stop_sequence",
                    f"{after.sequence} repeats within trip {trip_id!r}",
                )
        with_times = [item for item in ordered if item.arrival_s is not None]
        for before, after in itertools.pairwise(with_times):
            assert before.departure_s is not None
            assert after.arrival_s is not None
            if after.arrival_s < before.departure_s:
                usable = False
                reader.problem(
                    "stop_times.txt", after.line, "arrival_time", f"goes back in time within trip {trip_id!r}"
                )
        if not usable:
            continue
        if len(with_times) < len(ordered):
            assert plane is not None
            trip_shape = values.get("shape_id") or None
            along = _along(ordered, plane, stops, shapes.get(trip_shape or ""), lines, trip_shape)
            stop_times = _interpolated(ordered, along)
        else:
            stop_times = tuple(item.stop_time() for item in ordered)
        direction = values.get("direction_id", "")
        trips[trip_id] = Trip(
            trip_id=trip_id,
            route_id=values["route_id"],
            service_id=values["service_id"],
            direction_id=int(direction) if direction in ("0", "1") else None,
            shape_id=values.get("shape_id") or None,
            headsign=values.get("trip_headsign", ""),
            stop_times=stop_times,
            frequencies=tuple(sorted(frequencies.get(trip_id, []), key=lambda f: f.start_s)),
            block_id=values.get("block_id") or None,
        )
    if not trips and not reader.problems:
        reader.problem("trips.txt", None, None, "no trip with stop times")
    feed_version = next(
        (v["feed_version"] for _, v in reader.rows("feed_info.txt", ()) if v.get("feed_version")), None
    )
    if reader.problems:
        return None
    return Timetable(
        timezone=next(iter(timezones)),
        agency_ids=frozenset(agency_ids),
        stops=stops,
        routes=routes,
        trips=trips,
        shapes=shapes,
        calendars=calendars,
        added_dates={k: frozenset(v) for k, v in added.items()},
        removed_dates={k: frozenset(v) for k, v in removed.items()},
        feed_version=feed_version,
    )


@dataclass(frozen=True, slots=True)
class _Row:
    """A stop_times.txt row; times None for a stop between timed ones (GTFS allows them blank)."""

    line: int
    sequence: int
    stop_id: str
    arrival_s: int | None
    departure_s: int | None
    timepoint: bool
    shape_dist_traveled: float | None

    def stop_time(self, at_s: int | None = None) -> StopTime:
        arrival = self.arrival_s if self.arrival_s is not None else at_s
        departure = self.departure_s if self.departure_s is not None else at_s
        assert arrival is not None
        assert departure is not None
        return StopTime(self.sequence, self.stop_id, arrival, departure, self.timepoint)


def _along(
    ordered: list[_Row],
    plane: CityPlane,
    stops: Mapping[str, Stop],
    shape: list[tuple[float, float]] | None,
    lines: dict[str, Polyline],
    shape_id: str | None,
) -> tuple[float, ...]:
    """How far along the trip each stop is: shape_dist_traveled when every stop has it, else metres
    along the trip's shape (or from stop to stop without one)."""
    travelled = [item.shape_dist_traveled for item in ordered]
    if all(value is not None for value in travelled):
        return tuple(itertools.accumulate(travelled, max))  # type: ignore[arg-type]
    path = trip_path(plane, [stops[item.stop_id] for item in ordered], shape, lines, shape_id)
    return path.stop_along_m


def _interpolated(ordered: list[_Row], along: tuple[float, ...]) -> tuple[StopTime, ...]:
    """Blank times filled in proportion to the distance between the timed stops around them."""
    out: list[StopTime] = []
    last = 0  # index of the last timed stop
    for index, item in enumerate(ordered):
        if item.arrival_s is not None:
            out.append(item.stop_time())
            last = index
            continue
        following = next(i for i in range(index + 1, len(ordered)) if ordered[i].arrival_s is not None)
        leave, reach = ordered[last].departure_s, ordered[following].arrival_s
        assert leave is not None
        assert reach is not None
        span = along[following] - along[last]
        share = (along[index] - along[last]) / span if span > 0 else (index - last) / (following - last)
        out.append(item.stop_time(round(leave + (reach - leave) * share)))
    return tuple(out)


def _zone(text: str) -> str:
    try:
        ZoneInfo(text)
    except (ZoneInfoNotFoundError, ValueError):
        raise _BadField(f"{text!r} is not an IANA time zone, e.g. Europe/Kyiv") from None
    return text
