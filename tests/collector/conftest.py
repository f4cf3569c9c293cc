"""Fixtures of the collector's integration tests."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from collector.store import Store
from collector.store.influx_v1 import InfluxV1Store
from collector.store.sqlite import SqliteStore
from tests.collector.helpers import Agent
from tests.services import InfluxDB, Mosquitto


@pytest.fixture
def agent(mosquitto: Mosquitto) -> Iterator[Agent]:
    publisher = Agent(mosquitto)
    yield publisher
    publisher.close()


@pytest.fixture(
    params=[
        "sqlite",
        pytest.param("influx_v1", marks=pytest.mark.integration),
        pytest.param("influx_v1_plain", marks=pytest.mark.integration),  # gzip=false
    ]
)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    if request.param == "sqlite":
        sqlite = SqliteStore(tmp_path / "telemetry.sqlite")
        yield sqlite
        sqlite.close()
        return
    influxdb: InfluxDB = request.getfixturevalue("influxdb")
    database = f"collector_{uuid.uuid4().hex[:12]}"
    influx = InfluxV1Store(influxdb.url, database, gzip=request.param != "influx_v1_plain")
    influx.ensure_database()
    yield influx
    influx.close()
    influxdb.query(f'DROP DATABASE "{database}"')
