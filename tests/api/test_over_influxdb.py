"""The API answers the same over a real InfluxDB (v1 API) as over the embedded SQLite store."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from api import create_app
from api.registry import Registry
from api.security import Role
from api.settings import ApiSettings
from collector.store.influx_v1 import InfluxV1Store
from collector.store.sqlite import SqliteStore
from tests.api.factories import FakeClock, bearer, city
from tests.services import InfluxDB

pytestmark = pytest.mark.integration


@pytest.fixture
def influx_client(
    influxdb: InfluxDB, settings: ApiSettings, registry: Registry, keys: dict[Role, str]
) -> Iterator[TestClient]:
    database = f"api_{uuid.uuid4().hex[:12]}"
    store = InfluxV1Store(influxdb.url, database)
    store.ensure_database()
    store.write(city())
    app = create_app(store, settings=settings, clock=FakeClock(), registry=registry)
    with TestClient(app, headers=bearer(keys[Role.UTILITY])) as client:
        yield client
    store.close()
    influxdb.query(f'DROP DATABASE "{database}"')


@pytest.mark.parametrize(
    "path",
    [
        "/health",
        "/v1/devices",
        "/v1/devices?measurement=air_quality",
        "/v1/devices/aq-harbour/latest",
        "/v1/devices/stop/12/latest",
        "/v1/devices/nope/latest",
        "/v1/summary",
        "/v1/telemetry/air_quality",
        "/v1/telemetry/air_quality?device=aq-harbour&fields=pm25,no2&start=-3h",
        "/v1/telemetry/air_quality?window=30m&fields=pm25",
        "/v1/telemetry/air_quality?window=1h&aggregate=max&start=-2h",
        "/v1/telemetry/electricity?window=1m&aggregate=last",
        "/v1/telemetry/air_quality/groups?by=district&window=30m&start=-3h",
        "/v1/telemetry/air_quality/groups?by=city&window=1h&aggregate=last&start=-3h&fields=pm25,no2",
        "/v1/telemetry/electricity/consumption?field=kwh&by=city&start=-1h",
        "/v1/exports/air_quality?format=json&start=-3h",
        "/v1/air-quality/stations",
        "/v1/air-quality/city?table=eea-2017",
        "/v1/open-data/air-quality",
        "/v1/transit/vehicle-positions.json",
    ],
)
def test_same_answer_as_sqlite(
    influx_client: TestClient, client: TestClient, city_store: SqliteStore, path: str
) -> None:
    expected = client.get(path)
    answer = influx_client.get(path)
    assert (answer.status_code, answer.json()) == (expected.status_code, expected.json())


def test_same_feed_bytes_as_sqlite(
    influx_client: TestClient, client: TestClient, city_store: SqliteStore
) -> None:
    assert (
        influx_client.get("/v1/transit/vehicle-positions").content
        == client.get("/v1/transit/vehicle-positions").content
    )
