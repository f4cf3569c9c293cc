"""The fixture network, a simulated Friday on it, and an API client serving its feeds."""

from __future__ import annotations

import datetime as dt
import io
import struct
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from api import create_app
from api.registry import Registry
from api.settings import ApiSettings
from api.transit.feeds import TransitService
from api.transit.gtfs import load_gtfs
from api.transit.timetable import Timetable
from collector.store.sqlite import SqliteStore
from simulators.transit.buses import Bus, simulate_day
from simulators.transit.network import network_files, network_zip
from tests.api.factories import FakeClock

FRIDAY = dt.date(2027, 1, 15)  # tests.api.factories.NOW_MS is 10:00 in Lviv that day
# Fields of a zip's central directory entry: offset and struct format.
_CENTRAL_DIRECTORY = {
    "extract_version": (6, "<B"),
    "flag_bits": (8, "<H"),
    "compress_type": (10, "<H"),
    "crc": (16, "<I"),
}


def damaged_zip(member: str = "stops.txt", content: bytes | None = None, **central: int) -> bytes:
    """The fixture network stored uncompressed, with ``member``'s content and central directory fields set."""
    files = network_files()
    if content is not None:
        files[member] = content
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        for name in sorted(files):
            archive.writestr(name, files[name])
    data = bytearray(out.getvalue())
    entry = data.rindex(member.encode()) - 46  # the name follows the 46 bytes of the entry's header
    assert data[entry : entry + 4] == b"PK\x01\x02"
    for field, value in central.items():
        offset, layout = _CENTRAL_DIRECTORY[field]
        struct.pack_into(layout, data, entry + offset, value)
    return bytes(data)


@pytest.fixture(scope="session")
def gtfs_zip() -> bytes:
    return network_zip()


@pytest.fixture(scope="session")
def timetable(gtfs_zip: bytes) -> Timetable:
    return load_gtfs(gtfs_zip)


@pytest.fixture(scope="session")
def friday(timetable: Timetable) -> list[Bus]:
    return simulate_day(timetable, FRIDAY)


@pytest.fixture
def gtfs_path(tmp_path: Path, gtfs_zip: bytes) -> Path:
    path = tmp_path / "gtfs" / "lviv.zip"
    path.parent.mkdir()
    path.write_bytes(gtfs_zip)
    return path


@pytest.fixture
def transit(settings: ApiSettings, gtfs_path: Path) -> TransitService:
    return TransitService(settings.model_copy(update={"transit_gtfs_path": gtfs_path}))


@pytest.fixture
def transit_client(
    store: SqliteStore, settings: ApiSettings, clock: FakeClock, registry: Registry, transit: TransitService
) -> Iterator[TestClient]:
    """A resident's view (no key) of an app serving the fixture network."""
    app = create_app(store, settings=settings, clock=clock, registry=registry)
    app.state.transit = transit
    with TestClient(app) as client:
        yield client
