"""Loading a GTFS zip: the fixture network, and refusals that say file, row, field and why."""

from __future__ import annotations

import io
import zipfile
from typing import Any

import pytest

from api.transit.fixtures import network_files, network_zip, zip_files
from api.transit.gtfs import GtfsError, load_gtfs
from api.transit.timetable import Timetable
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
