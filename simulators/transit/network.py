"""A small Lviv-like network as a static GTFS zip, generated the same way byte for byte every time.

Two tram and two bus routes, both directions, drawn as street-like shapes through the centre;
weekday and weekend calendars with a holiday exception; bus 29 runs by headway
(frequencies.txt, exact_times=0); the last tram of the evening finishes after midnight
(times past 24:00); timed trips carry the ``block_id`` of the vehicle working them back and forth.
``python -m simulators.transit.network PATH`` writes the zip.
"""

from __future__ import annotations

import csv
import io
import itertools
import math
import sys
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass

from api.transit.geometry import CityPlane, Polyline
from api.transit.timetable import chain_blocks, gtfs_time

AGENCY_ID = "lvivelektrotrans"
TIMEZONE = "Europe/Kyiv"
CENTRE = (49.8419, 24.0315)  # Ploshcha Rynok
CALENDAR_START, CALENDAR_END = "20260101", "20271231"
FEED_VERSION = "lviv-fixture-1"  # feed_info.txt: the realtime feeds' header names it
HOLIDAY = "20270107"  # a weekday that runs the weekend timetable (calendar_dates exceptions)
STOP_SPACING_M = 450.0
DWELL_S = 20
HUB_DWELL_S = 90  # recovery time at the hub: the schedule's slack
LAYOVER_S = 120  # the shortest turnaround at a terminus when trips are chained into blocks
_ZIP_TIME = (2026, 1, 1, 0, 0, 0)
_WEEKDAY_COLUMNS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")


@dataclass(frozen=True, slots=True)
class LineDesign:
    """A route as drawn: waypoints (metres east/north of the centre), names of its stops, timetable."""

    route_id: str
    short_name: str
    long_name: str
    route_type: int  # 0 tram, 3 bus
    waypoints: tuple[tuple[float, float], ...]
    stop_names: tuple[str, ...]
    speed_mps: float
    weekday: tuple[tuple[str, str, int], ...]  # (first start, last start, headway minutes)
    weekend: tuple[tuple[str, str, int], ...]
    by_headway: bool = False
    hub: str = "Площа Ринок"


LINES: tuple[LineDesign, ...] = (
    LineDesign(
        "T1",
        "1",
        "Вокзал — Площа Ринок — Личаківська",
        0,
        (
            (-2600, 300),
            (-1900, 250),
            (-1200, 120),
            (-600, 60),
            (0, 0),
            (600, -80),
            (1300, -200),
            (2100, -350),
        ),
        (
            "Головний вокзал",
            "Городоцька",
            "Кропивницького",
            "Двірцева",
            "Госпітальна",
            "Площа Ринок",
            "Підвальна",
            "Митна",
            "Пекарська",
            "Личаківська",
            "Мечникова",
        ),
        6.0,
        weekday=(("05:40:00", "23:40:00", 12),),
        weekend=(("06:30:00", "23:30:00", 15),),
    ),
    LineDesign(
        "T6",
        "6",
        "Сихів — Площа Ринок",
        0,
        ((400, -3600), (350, -2800), (250, -2000), (150, -1200), (80, -500), (0, 0)),
        (
            "Сихів",
            "Червоної Калини",
            "Хуторівка",
            "Стрийська",
            "Кульпарківська",
            "Митрополита Андрея",
            "Площа Ринок",
        ),
        6.5,
        weekday=(("05:30:00", "23:00:00", 10),),
        weekend=(("06:00:00", "23:00:00", 15),),
    ),
    LineDesign(
        "A3",
        "3A",
        "Левандівка — Площа Ринок — Погулянка",
        3,
        (
            (-3000, 1800),
            (-2200, 1300),
            (-1300, 700),
            (-500, 250),
            (0, 0),
            (700, -500),
            (1500, -1100),
            (2300, -1500),
        ),
        (
            "Левандівка",
            "Широка",
            "Броварна",
            "Шевченка",
            "Залізнична",
            "Городоцька",
            "Площа Ринок",
            "Руська",
            "Пекарська",
            "Зелена",
            "Погулянка",
        ),
        5.5,
        weekday=(("06:00:00", "22:30:00", 15),),
        weekend=(("07:00:00", "22:00:00", 20),),
    ),
    LineDesign(
        "A29",
        "29",
        "Рясне — Площа Ринок",
        3,
        ((-600, 3800), (-450, 2900), (-300, 2000), (-150, 1100), (-60, 500), (0, 0)),
        ("Рясне", "Шевченка", "Замарстинівська", "Хмельницького", "Театральна", "Площа Ринок"),
        5.0,
        weekday=(("06:00:00", "22:00:00", 10),),
        weekend=(("07:00:00", "21:00:00", 15),),
        by_headway=True,
    ),
)


def _curve(waypoints: Sequence[tuple[float, float]], *, step_m: float = 40.0) -> list[tuple[float, float]]:
    """Waypoints joined by gently bent streets, a point every ``step_m`` (a shape like a real export)."""
    points: list[tuple[float, float]] = []
    for (x0, y0), (x1, y1) in itertools.pairwise(waypoints):
        length = math.hypot(x1 - x0, y1 - y0)
        steps = max(1, round(length / step_m))
        nx, ny = -(y1 - y0) / length, (x1 - x0) / length
        for i in range(steps):
            f = i / steps
            bend = 35.0 * math.sin(math.pi * f)  # streets are not straight lines between squares
            points.append((x0 + (x1 - x0) * f + nx * bend, y0 + (y1 - y0) * f + ny * bend))
    points.append(waypoints[-1])
    return points


# Ukrainian in Latin letters by the national transliteration (Cabinet of Ministers resolution 55,
# 27 January 2010): the names a resident's app shows in English.
_LATIN = dict(
    zip(
        "абвгґдеєжзиіїйклмнопрстуфхцчшщьюя'\u2019",
        (
            *("a", "b", "v", "h", "g", "d", "e", "ie", "zh", "z", "y", "i", "i", "i", "k", "l", "m", "n"),
            *("o", "p", "r", "s", "t", "u", "f", "kh", "ts", "ch", "sh", "shch", "", "iu", "ia", "", ""),
        ),
        strict=True,
    )
)
APOSTROPHES = "'\u2019"
_LATIN_WORD_START = {"є": "ye", "ї": "yi", "й": "y", "ю": "yu", "я": "ya"}


def latin(text: str) -> str:
    """``text`` transliterated from Ukrainian (other characters kept)."""
    out: list[str] = []
    for i, char in enumerate(text):
        lower = char.lower()
        start = i == 0 or not (text[i - 1].isalpha() or text[i - 1] in APOSTROPHES)
        if lower == "\u0433" and i > 0 and text[i - 1].lower() == "\u0437":
            letters = "gh"  # zgh after z, so that it does not read as zh
        elif start and lower in _LATIN_WORD_START:
            letters = _LATIN_WORD_START[lower]
        else:
            letters = _LATIN.get(lower, char)
        out.append(letters.capitalize() if char != lower and letters else letters)
    return "".join(out)


def _translations(names: Sequence[tuple[str, str, str]]) -> bytes:
    """translations.txt in English for (table, field, Ukrainian value), by value (one row per value)."""
    rows = sorted({(table, field, "en", latin(value), value) for table, field, value in names})
    return _csv(("table_name", "field_name", "language", "translation", "field_value"), rows)


def _csv(header: Sequence[str], rows: Sequence[Sequence[object]]) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return out.getvalue().encode()


def _round_the_clock(headway_min: int) -> tuple[tuple[str, str, int], ...]:
    return (("00:00:00", gtfs_time(24 * 3600 - headway_min * 60), headway_min),)


def _starts(spans: Sequence[tuple[str, str, int]]) -> list[int]:
    starts: list[int] = []
    for first, last, headway_min in spans:
        h, m, s = (int(part) for part in first.split(":"))
        begin = h * 3600 + m * 60 + s
        h, m, s = (int(part) for part in last.split(":"))
        starts.extend(range(begin, h * 3600 + m * 60 + s + 1, headway_min * 60))
    return starts


def network_files(*, all_day: bool = False) -> dict[str, bytes]:
    """The GTFS files of the fixture network, by file name.

    ``all_day``: every line runs round the clock at its first weekday headway, every day (the demo's
    network, so that a newcomer sees vehicles whatever the hour in Lviv).
    """
    plane = CityPlane(*CENTRE)
    stops: list[tuple[str, str, float, float]] = []
    routes: list[tuple[object, ...]] = []
    trips: list[tuple[object, ...]] = []
    stop_times: list[tuple[object, ...]] = []
    shapes: list[tuple[object, ...]] = []
    frequencies: list[tuple[object, ...]] = []
    # (route, service) -> (trip_id, first stop name, departure, last stop name, arrival) of timed trips
    legs: dict[tuple[str, str], list[tuple[str, str, int, str, int]]] = {}
    for line in LINES:
        routes.append(
            (
                line.route_id,
                AGENCY_ID,
                line.short_name,
                line.long_name,
                line.route_type,
                "" if line.route_type else "C62828",
            )
        )
        outbound = _curve(line.waypoints)
        for direction, points in ((0, outbound), (1, list(reversed(outbound)))):
            shape_id = f"{line.route_id}-{direction}"
            polyline = Polyline(points)
            for sequence, (x, y) in enumerate(points, start=1):
                lat, lon = plane.to_lat_lon(x, y)
                shapes.append(
                    (
                        shape_id,
                        f"{lat:.6f}",
                        f"{lon:.6f}",
                        sequence,
                        f"{polyline.cumulative[sequence - 1]:.1f}",
                    )
                )
            names = line.stop_names if direction == 0 else tuple(reversed(line.stop_names))
            count = len(names)
            stop_along = [polyline.length_m * i / (count - 1) for i in range(count)]
            pattern: list[tuple[str, int, int]] = []  # stop_id, arrival offset, departure offset
            clock = 0.0
            for index, (name, along) in enumerate(zip(names, stop_along, strict=True)):
                x, y, heading = polyline.point_at(along)
                # The stop stands at the kerb, 8 m to the right of the direction of travel.
                side = math.radians(heading + 90)
                lat, lon = plane.to_lat_lon(x + 8 * math.sin(side), y + 8 * math.cos(side))
                stop_id = f"{line.route_id}-{direction}-{index + 1:02d}"
                stops.append((stop_id, name, lat, lon))
                if index:
                    clock += (along - stop_along[index - 1]) / line.speed_mps
                dwell = 0 if index in (0, count - 1) else HUB_DWELL_S if name == line.hub else DWELL_S
                pattern.append((stop_id, round(clock), round(clock) + dwell))
                clock += dwell
            on_weekdays, at_weekends = line.weekday, line.weekend
            if all_day:
                on_weekdays = at_weekends = _round_the_clock(line.weekday[0][2])
            for service_id, spans in (("weekday", on_weekdays), ("weekend", at_weekends)):
                if line.by_headway:
                    trip_id = f"{line.route_id}-{service_id}-{direction}"
                    trips.append((line.route_id, service_id, trip_id, names[-1], direction, shape_id))
                    _trip_times(stop_times, trip_id, pattern, _starts(spans)[0])
                    for first, last, headway_min in spans:
                        frequencies.append((trip_id, first, _after(last, headway_min), headway_min * 60, 0))
                    continue
                starts = _starts(spans)
                if line.route_id == "T1" and direction == 0:
                    starts.append(24 * 3600 + 10 * 60)  # the night tram: leaves at 00:10 of the next day
                for start in starts:
                    trip_id = (
                        f"{line.route_id}-{service_id}-{direction}-{gtfs_time(start).replace(':', '')[:4]}"
                    )
                    trips.append((line.route_id, service_id, trip_id, names[-1], direction, shape_id))
                    _trip_times(stop_times, trip_id, pattern, start)
                    legs.setdefault((line.route_id, service_id), []).append(
                        (trip_id, names[0], start + pattern[0][2], names[-1], start + pattern[-1][1])
                    )
    blocks = _block_ids(legs)
    trips = [(*trip, blocks.get(str(trip[2]), "")) for trip in trips]
    weekdays = ("weekday", 1, 1, 1, 1, 1, 0, 0, CALENDAR_START, CALENDAR_END)
    weekend = ("weekend", 0, 0, 0, 0, 0, 1, 1, CALENDAR_START, CALENDAR_END)
    return {
        "agency.txt": _csv(
            ("agency_id", "agency_name", "agency_url", "agency_timezone", "agency_lang"),
            [(AGENCY_ID, "Львівелектротранс (fixture)", "https://example.org/lviv", TIMEZONE, "uk")],
        ),
        "stops.txt": _csv(
            ("stop_id", "stop_name", "stop_lat", "stop_lon", "location_type"),
            [(stop_id, name, f"{lat:.6f}", f"{lon:.6f}", 0) for stop_id, name, lat, lon in stops],
        ),
        "routes.txt": _csv(
            ("route_id", "agency_id", "route_short_name", "route_long_name", "route_type", "route_color"),
            routes,
        ),
        "trips.txt": _csv(
            ("route_id", "service_id", "trip_id", "trip_headsign", "direction_id", "shape_id", "block_id"),
            trips,
        ),
        "stop_times.txt": _csv(
            ("trip_id", "arrival_time", "departure_time", "stop_id", "stop_sequence", "timepoint"), stop_times
        ),
        "calendar.txt": _csv(
            ("service_id", *_WEEKDAY_COLUMNS, "start_date", "end_date"),
            [weekdays, weekend],
        ),
        "calendar_dates.txt": _csv(
            ("service_id", "date", "exception_type"), [("weekday", HOLIDAY, 2), ("weekend", HOLIDAY, 1)]
        ),
        "shapes.txt": _csv(
            ("shape_id", "shape_pt_lat", "shape_pt_lon", "shape_pt_sequence", "shape_dist_traveled"), shapes
        ),
        "frequencies.txt": _csv(
            ("trip_id", "start_time", "end_time", "headway_secs", "exact_times"), frequencies
        ),
        "translations.txt": _translations(
            [("stops", "stop_name", name) for _, name, _, _ in stops]
            + [("routes", "route_long_name", str(route[3])) for route in routes]
            + [("trips", "trip_headsign", str(trip[3])) for trip in trips]
        ),
        "feed_info.txt": _csv(
            (
                "feed_publisher_name",
                "feed_publisher_url",
                "feed_lang",
                "feed_start_date",
                "feed_end_date",
                "feed_version",
                "feed_contact_url",
            ),
            [
                (
                    "CityGW fixture",
                    "https://example.org/lviv",
                    "uk",
                    CALENDAR_START,
                    CALENDAR_END,
                    FEED_VERSION,
                    "https://example.org/lviv/contact",
                )
            ],
        ),
    }


def _block_ids(legs: dict[tuple[str, str], list[tuple[str, str, int, str, int]]]) -> dict[str, str]:
    """block_id of each timed trip: a route's trips of a service chained back and forth between its
    termini, a turnaround of at least ``LAYOVER_S`` (headway trips have none: any vehicle takes them)."""
    found: dict[str, str] = {}
    for (route_id, service_id), trips in sorted(legs.items()):
        chained = chain_blocks(
            [(first, depart, last, arrive) for _, first, depart, last, arrive in trips],
            layover_s=LAYOVER_S,
            same_place=str.__eq__,
        )
        for number, block in enumerate(chained, start=1):
            for index in block:
                found[trips[index][0]] = f"{route_id}-{service_id}-{number:02d}"
    return found


def _after(time_text: str, minutes: int) -> str:
    h, m, s = (int(part) for part in time_text.split(":"))
    return gtfs_time(h * 3600 + m * 60 + s + minutes * 60)


def _trip_times(
    rows: list[tuple[object, ...]], trip_id: str, pattern: list[tuple[str, int, int]], start: int
) -> None:
    for sequence, (stop_id, arrival, departure) in enumerate(pattern, start=1):
        rows.append(
            (trip_id, gtfs_time(start + arrival), gtfs_time(start + departure), stop_id, sequence * 10, 1)
        )


def zip_files(files: dict[str, bytes]) -> bytes:
    """A zip of ``files`` with fixed timestamps and order: the same files give the same bytes."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        for name in sorted(files):
            info = zipfile.ZipInfo(name, date_time=_ZIP_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            archive.writestr(info, files[name])
    return out.getvalue()


def network_zip(*, all_day: bool = False) -> bytes:
    """The fixture network as a GTFS zip (``all_day``: see network_files)."""
    return zip_files(network_files(all_day=all_day))


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m simulators.transit.network PATH.zip")
    with open(sys.argv[1], "wb") as target:
        target.write(network_zip())
