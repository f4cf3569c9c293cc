"""GET /health, and what every route answers when the store is down."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from api import create_app
from api.registry import Registry
from api.security import Role
from api.settings import ApiSettings
from collector.store import open_store
from collector.store.base import TelemetryReader
from collector.store.sqlite import SqliteStore
from tests.api.factories import FakeClock, bearer, city
from tests.services import free_port


def test_health_ok(client: TestClient) -> None:
    response = client.get("/health")
    assert response.status_code == 200
    no_timetable = {"timetable": "none", "timetable_version": None, "timetable_refused": None}
    assert response.json() == {"status": "ok", "store": "ok", **no_timetable}


def _influx_at_a_closed_port(tmp_path: Path) -> TelemetryReader:
    return open_store(f"influxdb://127.0.0.1:{free_port()}/citygw")


def _closed_sqlite(tmp_path: Path) -> TelemetryReader:
    store = SqliteStore(tmp_path / "gone.sqlite")
    store.write(city())
    store.close()
    return store


@pytest.fixture(
    params=[_influx_at_a_closed_port, _closed_sqlite], ids=["influx-closed-port", "sqlite-closed"]
)
def down_client(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    settings: ApiSettings,
    registry: Registry,
    keys: dict[Role, str],
) -> Iterator[TestClient]:
    store = request.param(tmp_path)
    app = create_app(store, settings=settings, clock=FakeClock(), registry=registry)
    with TestClient(app, headers=bearer(keys[Role.UTILITY])) as client:
        yield client


def test_health_says_503_when_the_store_is_down(down_client: TestClient) -> None:
    response = down_client.get("/health")
    assert response.status_code == 503
    assert response.json() == {
        "status": "degraded",
        "store": "unavailable",
        "timetable": "none",
        "timetable_version": None,
        "timetable_refused": None,
    }


@pytest.mark.parametrize(
    "path",
    [
        "/v1/devices",
        "/v1/devices/aq-park/latest",
        "/v1/telemetry/air_quality",
        "/v1/telemetry/air_quality?window=5m&aggregate=max",
        "/v1/summary",
        "/v1/transit/vehicle-positions",
        "/v1/transit/vehicle-positions?format=json",
    ],
)
def test_every_route_says_503_not_500_when_the_store_is_down(down_client: TestClient, path: str) -> None:
    response = down_client.get(path)
    assert response.status_code == 503
    assert response.json() == {"detail": "the telemetry store is unavailable; try again later"}
    assert response.headers["retry-after"] == "5"


def test_a_transit_service_that_cannot_start_does_not_fail_health(
    tmp_path: Path, settings: ApiSettings, registry: Registry
) -> None:
    (tmp_path / "a-file").write_text("")
    # Without the recorder (CITYGW_RECORD_INTERVAL_S=0) the transit service starts on first use.
    broken = settings.model_copy(
        update={"transit_alerts_path": tmp_path / "a-file" / "alerts.sqlite", "record_interval_s": 0}
    )
    store = SqliteStore(tmp_path / "citygw.sqlite")
    with TestClient(create_app(store, settings=broken, clock=FakeClock(), registry=registry)) as client:
        response = client.get("/health")
    store.close()
    assert response.status_code == 200
    body = response.json()
    assert (body["status"], body["timetable"]) == ("ok", "none")
    assert body["timetable_refused"].startswith("transit unavailable: ")
