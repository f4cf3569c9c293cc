"""The fixture network, a simulated Friday on it, and an API client serving its feeds."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from api import create_app
from api.registry import Registry
from api.settings import ApiSettings
from api.transit.feeds import TransitService
from api.transit.fixtures import network_zip
from api.transit.gtfs import load_gtfs
from api.transit.simulated_buses import Bus, simulate_day
from api.transit.timetable import Timetable
from collector.store.sqlite import SqliteStore
from tests.api.factories import FakeClock

FRIDAY = dt.date(2027, 1, 15)  # tests.api.factories.NOW_MS is 10:00 in Lviv that day


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
