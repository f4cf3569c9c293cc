"""Loading a GTFS zip: the fixture network, and refusals that say file, row, field and why."""

from __future__ import annotations

import io
import itertools
import math
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from api.transit.gtfs import GtfsError, load_gtfs
from api.transit.timetable import Stop, Timetable
from simulators.transit.network import network_files, network_zip, zip_files
from tests.api.transit.conftest import damaged_zip


def test_fixture_network_is_the_same_bytes_every_time(gtfs_zip: bytes) -> None:
    assert network_zip() == gtfs_zip
    assert zipfile.ZipFile(io.BytesIO(gtfs_zip)).namelist() == sorted(network_files())


def test_fixture_network_has_what_the_issue_asks_for(timetable: Timetable) -> None:
    route_types = {route.route_id: route.route_type for route in timetable.routes.values()}
    assert route_types == {"T1": 0, "T6": 0, "A3": 3, "A29": 3}
    assert len(timetable.shapes) == 8  # both directions of four routes
    by_headway = [trip for trip in timetable.trips.values() if trip.frequencies]
    assert {trip.route_id for trip in by_headway} == {"A29"}
    assert all(not f.exact_times for trip in by_headway for f in trip.frequencies)
    night = [trip for trip in timetable.trips.values() if trip.last_s > 24 * 3600]
    assert {trip.route_id for trip in night} == {"T1"}
    assert {trip.service_id for trip in timetable.trips.values()} == {"weekday", "weekend"}


def broken(**changes: bytes | None) -> bytes:
    """The fixture zip with files replaced (bytes) or removed (None)."""
    files = network_files()
    for name, content in changes.items():
        name = name.replace("_txt", ".txt")
        if content is None:
            del files[name]
        else:
            files[name] = content
    return zip_files(files)


def refusal(data: bytes) -> list[str]:
    with pytest.raises(GtfsError) as caught:
        load_gtfs(data)
    return [str(problem) for problem in caught.value.problems]


def test_not_a_zip() -> None:
    assert refusal(b"PK not really") == ["(zip): not a zip archive (File is not a zip file)"]


@pytest.mark.parametrize(
    ("damage", "problem"),
    [
        ({"crc": 0}, "stops.txt: cannot be read from the zip (Bad CRC-32 for file 'stops.txt')"),
        (
            {"flag_bits": 1},  # encrypted
            "stops.txt: cannot be read from the zip"
            " (File 'stops.txt' is encrypted, password required for extraction)",
        ),
        (
            {"compress_type": 99},
            "stops.txt: cannot be read from the zip (That compression method is not supported)",
        ),
        (
            {"compress_type": zipfile.ZIP_DEFLATED, "content": b"\xff" * 64},
            "stops.txt: cannot be read from the zip (Error -3 while decompressing data: invalid block type)",
        ),
        ({"extract_version": 240}, "(zip): not a zip archive (zip file version 24.0)"),
    ],
    ids=["bad-crc", "encrypted", "unknown-compression", "bad-deflate", "future-zip-version"],
)
def test_a_damaged_zip_is_refused_with_the_member_and_why(damage: dict[str, Any], problem: str) -> None:
    assert refusal(damaged_zip(**damage)) == [problem]


def test_a_header_that_is_not_utf8_names_file_and_row() -> None:
    stops = network_files()["stops.txt"].replace(b"stop_name", b"stop_name\xff", 1)
    problems = refusal(broken(stops_txt=stops))
    assert problems[0].startswith("stops.txt row 1: not readable as UTF-8 CSV")


def test_missing_required_file() -> None:
    assert refusal(broken(stops_txt=None)) == ["stops.txt: required file is missing from the zip"]


def test_missing_column_names_the_header() -> None:
    problems = refusal(broken(routes_txt=b"route_id,route_short_name\nT1,1\n"))
    assert problems[0] == "routes.txt row 1 field route_type: required column is missing from the header"


def test_bad_values_name_file_row_and_field() -> None:
    stop_times = network_files()["stop_times.txt"].decode().splitlines()
    stop_times[3] = stop_times[3].replace(stop_times[3].split(",")[1], "7:5:00", 1)
    stops = network_files()["stops.txt"].decode().splitlines()
    stops[2] = ",".join([*stops[2].split(",")[:2], "95.0", *stops[2].split(",")[3:]])
    problems = refusal(
        broken(stop_times_txt="\n".join(stop_times).encode(), stops_txt="\n".join(stops).encode())
    )
    assert "stops.txt row 3 field stop_lat: 95.0 is outside -90..90" in problems
    assert (
        "stop_times.txt row 4 field arrival_time: '7:5:00' is not a time HH:MM:SS"
        " (hours may exceed 24, e.g. 25:10:00)" in problems
    )


def test_references_must_exist() -> None:
    trips = network_files()["trips.txt"].decode().splitlines()
    trips[1] = trips[1].replace("T1,", "T99,", 1)
    problems = refusal(broken(trips_txt="\n".join(trips).encode()))
    assert problems[0] == "trips.txt row 2 field route_id: 'T99' is not a route_id of routes.txt"


def test_times_going_back_within_a_trip_are_refused() -> None:
    rows = network_files()["stop_times.txt"].decode().splitlines()
    fields = rows[2].split(",")
    fields[1] = fields[2] = "04:00:00"  # the second stop before the first
    rows[2] = ",".join(fields)
    problems = refusal(broken(stop_times_txt="\n".join(rows).encode()))
    assert any(p.startswith("stop_times.txt row 3 field arrival_time: goes back in time") for p in problems)


def test_many_problems_are_all_reported_up_to_a_limit() -> None:
    header, *rows = network_files()["stops.txt"].decode().splitlines()
    bad = [",".join([*row.split(",")[:2], "x", *row.split(",")[3:]]) for row in rows]
    problems = refusal(broken(stops_txt="\n".join([header, *bad]).encode()))
    assert len(problems) == 50
    assert problems[0] == "stops.txt row 2 field stop_lat: 'x' is not a number"


IRVINE = Path(__file__).parent / "data" / "irvine_connect"


def _haversine_m(a: Stop, b: Stop) -> float:
    la1, lo1, la2, lo2 = map(math.radians, (a.lat, a.lon, b.lat, b.lon))
    h = math.sin((la2 - la1) / 2) ** 2 + math.cos(la1) * math.cos(la2) * math.sin((lo2 - lo1) / 2) ** 2
    return 2 * 6_371_000 * math.asin(math.sqrt(h))


def test_a_published_feed_with_blank_intermediate_times_loads() -> None:
    """Irvine Connect (PROVENANCE.md): 75 of 77 stops without times, placed by distance along the shape."""
    timetable = load_gtfs(zip_files({path.name: path.read_bytes() for path in IRVINE.glob("*.txt")}))
    trip = timetable.trips["867873"]
    times = [stop_time.arrival_s for stop_time in trip.stop_times]
    assert (len(times), times[0], times[-1]) == (77, 0, 6000)
    assert [stop_time.timepoint for stop_time in trip.stop_times] == [True, *[False] * 75, True]
    assert all(stop_time.departure_s == stop_time.arrival_s for stop_time in trip.stop_times)
    assert all(before < after for before, after in itertools.pairwise(times))
    # Each stop is placed on its own leg of the out-and-back line, not on the way back past it.
    path = timetable.path("867873")
    stops = [timetable.stops[stop_time.stop_id] for stop_time in trip.stop_times]
    for stop, along_m in zip(stops, path.stop_along_m, strict=True):
        x, y, _ = path.line.point_at(along_m)
        assert math.dist((x, y), timetable.plane.to_xy(stop.lat, stop.lon)) < 30, stop
    # The times follow distance: close to what stop-to-stop distances on the globe give.
    walked = list(
        itertools.accumulate((_haversine_m(a, b) for a, b in itertools.pairwise(stops)), initial=0.0)
    )
    for time_s, metres in zip(times, walked, strict=True):
        assert abs(time_s - 6000 * metres / walked[-1]) < 180


def _fixture_trip(edit: Callable[[list[list[str]]], None], header: str | None = None) -> bytes:
    """The fixture zip with the first trip's stop_times rows (header excluded) changed by ``edit``."""
    lines = network_files()["stop_times.txt"].decode().splitlines()
    rows = [line.split(",") for line in lines[1:]]
    first = [row for row in rows if row[0] == rows[0][0]]
    edit(first)
    return broken(stop_times_txt="\n".join([header or lines[0], *(",".join(row) for row in rows)]).encode())


def test_blank_times_follow_shape_dist_traveled_when_every_stop_has_it() -> None:
    def blank_the_middle(first: list[list[str]]) -> None:
        for number, row in enumerate(first):
            if 0 < number < len(first) - 1:
                row[1] = row[2] = ""
                row[5] = "0"
        # Distances far from the geometry: the third stop sits at 90 % of the way.
        for number, row in enumerate(first):
            row.append("0" if number == 0 else "900" if number == 2 else str(1000 * number))
        for row in first[3:]:
            row[-1] = str(9000 + int(row[-1]))

    data = _fixture_trip(
        blank_the_middle,
        header="trip_id,arrival_time,departure_time,stop_id,stop_sequence,timepoint,shape_dist_traveled",
    )
    timetable = load_gtfs(data)
    trip = next(iter(timetable.trips.values()))
    first, last = trip.stop_times[0], trip.stop_times[-1]
    span = last.arrival_s - first.departure_s
    along = [0, 1000, 900, *(9000 + 1000 * n for n in range(3, len(trip.stop_times)))]
    along = list(itertools.accumulate(along, max))
    for stop_time, metres in zip(trip.stop_times[1:-1], along[1:-1], strict=True):
        assert stop_time.arrival_s == round(first.departure_s + span * metres / along[-1])
        assert not stop_time.timepoint


def test_a_trip_must_have_times_at_its_ends_and_at_exact_timepoints() -> None:
    def blank_first(first: list[list[str]]) -> None:
        first[0][1] = first[0][2] = ""
        first[0][5] = "0"

    def blank_a_timepoint(first: list[list[str]]) -> None:
        first[2][1] = first[2][2] = ""  # timepoint stays 1: an exact time is promised and missing

    trip_id = network_files()["stop_times.txt"].decode().splitlines()[1].split(",")[0]
    assert refusal(_fixture_trip(blank_first)) == [
        f"stop_times.txt row 2 field arrival_time: the first stop of trip {trip_id!r} needs a time"
        " (only stops between may be blank)"
    ]
    assert refusal(_fixture_trip(blank_a_timepoint)) == [
        "stop_times.txt row 4 field arrival_time: timepoint is 1 (an exact time) but no time is given;"
        " give one or set timepoint to 0"
    ]


def test_problems_are_causes_not_their_echoes() -> None:
    """A refused stop, route or calendar is reported once, not again by every row naming it."""
    header, *rows = network_files()["stops.txt"].decode().splitlines()
    bad = [",".join([*row.split(",")[:2], "x", *row.split(",")[3:]]) for row in rows[:3]]
    routes = network_files()["routes.txt"].decode().replace(",0", ",tram", 1)
    problems = refusal(
        broken(stops_txt="\n".join([header, *bad, *rows[3:]]).encode(), routes_txt=routes.encode())
    )
    assert [p.split(":")[0] for p in problems] == [
        "stops.txt row 2 field stop_lat",
        "stops.txt row 3 field stop_lat",
        "stops.txt row 4 field stop_lat",
        "routes.txt row 2 field route_type",
    ]


def test_a_record_spanning_lines_is_named_by_the_line_it_starts_on() -> None:
    header, first, second, *rows = network_files()["stops.txt"].decode().splitlines()
    fields = second.split(",")
    fields[1] = '"Rynok\nSquare"'  # a stop name with a line break, quoted as CSV allows
    fields[2] = "95.0"
    problems = refusal(broken(stops_txt="\n".join([header, first, ",".join(fields), *rows]).encode()))
    assert problems[0] == "stops.txt row 3 field stop_lat: 95.0 is outside -90..90"
