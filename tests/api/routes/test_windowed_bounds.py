"""Windowed reads are bounded by windows times devices, counted by the store before a row is loaded.

A row per device and window: over a city's meters a short window pulls millions of rows. The same
answers on the embedded SQLite store and a real InfluxDB (v1 API).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from api import create_app
from api.registry import Registry
from api.security import Role
from api.settings import ApiSettings
from collector.store import Store
from collector.store.influx_v1 import InfluxV1Store
from collector.store.sqlite import SqliteStore
from tests.api.factories import MINUTE_MS, NOW_MS, FakeClock, bearer, reading
from tests.services import InfluxDB

METERS = 40  # a reading every 10 minutes over the last hour: 6 windows of 10 minutes, 240 rows
TOO_MANY = (
    "6 windows of 600 s for 40 devices in this range: up to 240 rows; at most 100:"
    " use a window of at least 3600 s, a shorter range"
)


@pytest.fixture(params=["sqlite", pytest.param("influx_v1", marks=pytest.mark.integration)])
def meters(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    """40 electricity meters in 4 districts, a reading every 10 minutes in the hour before NOW_MS."""
    store: Store
    influxdb: InfluxDB | None = None
    database = f"api_{uuid.uuid4().hex[:12]}"
    if request.param == "sqlite":
        store = SqliteStore(tmp_path / "meters.sqlite")
    else:
        influxdb = request.getfixturevalue("influxdb")
        influx = InfluxV1Store(influxdb.url, database)
        influx.ensure_database()
        store = influx
    store.write(
        [
            reading(
                "electricity", f"m-{i:02}", NOW_MS - minutes * MINUTE_MS, {"kw": 1.0}, district=f"d{i % 4}"
            )
            for i in range(METERS)
            for minutes in (5, 15, 25, 35, 45, 55)
        ]
    )
    yield store
    store.close()
    if influxdb is not None:
        influxdb.query(f'DROP DATABASE "{database}"')


@pytest.fixture
def bounded(
    meters: Store, settings: ApiSettings, registry: Registry, keys: dict[Role, str]
) -> Iterator[TestClient]:
    """A utility's client of an API that may read at most 100 rows a query (and an export)."""
    small = ApiSettings(registry_url=settings.registry_url, query_max_points=100, export_max_rows=100)
    app = create_app(meters, settings=small, clock=FakeClock(), registry=registry)
    with TestClient(app, headers=bearer(keys[Role.UTILITY])) as client:
        yield client


def test_windowed_telemetry_of_too_many_devices_is_refused_before_loading(bounded: TestClient) -> None:
    url = "/v1/telemetry/electricity"
    refused = bounded.get(url, params={"window": "10m"})
    assert (refused.status_code, refused.json()) == (
        400,
        {"detail": f"{TOO_MANY} or one device (device=...)"},
    )

    one_device = bounded.get(url, params={"window": "10m", "device": "m-07"})
    assert one_device.status_code == 200
    assert len(one_device.json()["rows"]) == 6
    larger_window = bounded.get(url, params={"window": "30m"})
    assert larger_window.status_code == 200
    assert len(larger_window.json()["rows"]) == 2 * METERS


def test_groups_over_too_many_devices_are_refused(bounded: TestClient) -> None:
    url = "/v1/telemetry/electricity/groups"
    refused = bounded.get(url, params={"by": "city", "window": "10m", "start": "-1h"})
    assert (refused.status_code, refused.json()) == (400, {"detail": TOO_MANY.replace(", a", " or a")})

    answer = bounded.get(url, params={"by": "district", "window": "30m", "start": "-1h", "aggregate": "sum"})
    assert answer.status_code == 200
    assert [(row["group"], row["devices"], row["values"]) for row in answer.json()["rows"]] == [
        (f"d{district}", 10, {"kw": 30.0}) for district in range(4) for _ in range(2)
    ]


def test_windowed_export_of_too_many_devices_is_refused_before_the_first_byte(bounded: TestClient) -> None:
    url = "/v1/exports/electricity"
    refused = bounded.get(url, params={"window": "10m", "start": "-1h", "format": "json"})
    assert (refused.status_code, refused.json()) == (
        400,
        {"detail": f"{TOO_MANY} or one device (device=...)"},
    )

    answer = bounded.get(url, params={"window": "10m", "start": "-1h", "format": "json", "device": "m-07"})
    assert answer.status_code == 200
    assert len(json.loads(answer.text)["rows"]) == 6
