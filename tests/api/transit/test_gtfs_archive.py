"""Hostile GTFS zips: a huge line, lying sizes, members that leave the root or shadow a GTFS file.

Memory is measured with tracemalloc around ``load_gtfs``: a 2 MB zip unpacking to one 2 GB line
took the API to 4-5 GB; reading is now bounded by a line and a chunk.
"""

from __future__ import annotations

import io
import struct
import time
import tracemalloc
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from api import create_app
from api.registry import Registry
from api.security import Role
from api.settings import ApiSettings
from api.transit.feeds import TransitService
from api.transit.gtfs import GtfsError, load_gtfs
from api.transit.gtfs_archive import MAX_LINE_BYTES, text_lines
from collector.store.sqlite import SqliteStore
from simulators.transit.network import network_files
from tests.api.factories import bearer

MIB = 1024 * 1024


def zip_of(members: list[tuple[str, bytes]]) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, content in members:
            archive.writestr(zipfile.ZipInfo(name, (2027, 1, 15, 0, 0, 0)), content)
    return out.getvalue()


def network_with(*extra: tuple[str, bytes], without: str | None = None) -> bytes:
    files = [(name, content) for name, content in sorted(network_files().items()) if name != without]
    return zip_of(files + list(extra))


def one_long_line(line_bytes: int) -> bytes:
    """The fixture network whose stops.txt is its header and one line of ``line_bytes`` bytes, deflated."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, content in sorted(network_files().items()):
            if name != "stops.txt":
                archive.writestr(name, content)
        with archive.open("stops.txt", "w", force_zip64=True) as member:
            member.write(b"stop_id,stop_name,stop_lat,stop_lon\n")
            block = b"a" * MIB
            for _ in range(line_bytes // MIB):
                member.write(block)
    return out.getvalue()


def problems_of(data: bytes) -> list[tuple[str, int | None, str]]:
    with pytest.raises(GtfsError) as refused:
        load_gtfs(data)
    return [(p.file, p.row, p.reason) for p in refused.value.problems]


def test_one_huge_line_is_refused_after_reading_a_bounded_part() -> None:
    data = one_long_line(96 * MIB)
    assert len(data) < 200 * 1024  # deflate packs a run of one byte about 1000:1
    tracemalloc.start()
    started = time.perf_counter()
    try:
        problems = problems_of(data)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    elapsed = time.perf_counter() - started
    assert problems == [("stops.txt", 2, f"line 2 is longer than {MAX_LINE_BYTES} bytes")]
    assert peak < 8 * MIB, f"peak {peak / MIB:.1f} MiB"
    assert elapsed < 5, elapsed


def patched_sizes(data: bytes, member: str, size: int) -> bytes:
    """``data`` with ``member``'s uncompressed size set to ``size`` in its local and central headers."""
    patched = bytearray(data)
    entry = patched.rindex(member.encode()) - 46
    assert patched[entry : entry + 4] == b"PK\x01\x02"
    struct.pack_into("<I", patched, entry + 24, size)
    (local,) = struct.unpack_from("<I", patched, entry + 42)
    assert patched[local : local + 4] == b"PK\x03\x04"
    struct.pack_into("<I", patched, local + 22, size)
    return bytes(patched)


def test_declared_sizes_are_bounded_before_anything_is_unpacked() -> None:
    data = patched_sizes(network_with(), "stop_times.txt", 2000 * MIB)
    tracemalloc.start()
    try:
        problems = problems_of(data)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert problems[0] == ("stop_times.txt", None, f"unpacks to {2000 * MIB} bytes; at most {512 * MIB}")
    assert peak < 4 * MIB


STOPS = network_files()["stops.txt"]


@pytest.mark.parametrize(
    ("member", "reason"),
    [
        ("../../../evil.txt", "leads out of the folder it is unpacked in ('..')"),
        ("/etc/cron.d/evil", "an absolute path; GTFS files are plain names at the zip's root"),
        ("C:/Windows/evil.txt", "an absolute path; GTFS files are plain names at the zip's root"),
        ("..\\evil.txt", "leads out of the folder it is unpacked in ('..')"),
        (
            "shadow/stops.txt",
            "is in a folder; GTFS files must be at the zip's root (zip the files, not their folder)",
        ),
        ("gtfs/", "is in a folder; GTFS files must be at the zip's root (zip the files, not their folder)"),
        ("__MACOSX/._stops.txt", "is macOS Finder metadata; make the zip without it (e.g. zip -X)"),
        ("Stops.txt", "is in the zip twice (as 'stops.txt' too)"),
        (".hidden", "is not a plain file name (letters, digits, '_', '.', '-')"),
    ],
)
def test_members_out_of_the_root_or_twice_are_refused(member: str, reason: str) -> None:
    assert problems_of(network_with((member, STOPS))) == [(member, None, reason)]


def test_a_name_given_twice_is_refused() -> None:
    with pytest.warns(UserWarning, match="Duplicate name"):
        data = network_with(("stops.txt", b"stop_id,stop_name,stop_lat,stop_lon\nX,Elsewhere,0,0\n"))
    assert problems_of(data) == [("stops.txt", None, "is in the zip twice (as 'stops.txt' too)")]


def test_a_shadowing_copy_in_a_folder_is_refused_even_without_the_root_file() -> None:
    data = network_with(("shadow/stops.txt", STOPS), without="stops.txt")
    assert (
        "shadow/stops.txt",
        None,
        "is in a folder; GTFS files must be at the zip's root (zip the files, not their folder)",
    ) in problems_of(data)


def test_a_local_header_naming_another_file_is_refused() -> None:
    data = bytearray(network_with(("notes.txt", b"hello\n")))
    at = data.index(b"notes.txt")  # the local header's copy of the name comes first
    assert data[at - 30 : at - 26] == b"PK\x03\x04"
    data[at : at + 9] = b"../xy.txt"  # what an unzipper reading local headers would write
    [(member, row, reason)] = problems_of(bytes(data))
    assert (member, row) == ("notes.txt", None)
    assert reason.startswith("cannot be read from the zip (File name in directory 'notes.txt' and header")


@pytest.mark.parametrize("chunked", [b"a,b\r\nc,d\r\n", b"\xef\xbb\xbfa,b\nc,d", b"a\n\nb\n"])
def test_text_lines_keep_endings_and_drop_a_bom(chunked: bytes) -> None:
    text = "".join(text_lines(io.BytesIO(chunked)))
    assert text == chunked.decode("utf-8-sig")


@pytest.mark.parametrize("declared", [True, False])
def test_an_upload_larger_than_the_limit_is_refused_while_it_arrives(
    store: SqliteStore,
    settings: ApiSettings,
    registry: Registry,
    transit: TransitService,
    keys: dict[Role, str],
    gtfs_path: Path,
    gtfs_zip: bytes,
    declared: bool,
) -> None:
    small = settings.model_copy(update={"transit_gtfs_max_bytes": MIB})
    app = create_app(store, settings=small, registry=registry)
    app.state.transit = transit
    big = gtfs_zip + bytes(2 * MIB)

    def chunks() -> Iterator[bytes]:
        for start in range(0, len(big), 64 * 1024):
            yield big[start : start + 64 * 1024]

    with TestClient(app) as client:
        headers = bearer(keys[Role.TRANSIT])
        response = client.put("/v1/transit/gtfs.zip", content=big if declared else chunks(), headers=headers)
    assert response.status_code == 413, response.text
    assert response.json()["detail"] == f"the zip is larger than {MIB} bytes (CITYGW_TRANSIT_GTFS_MAX_BYTES)"
    assert gtfs_path.read_bytes() == gtfs_zip
