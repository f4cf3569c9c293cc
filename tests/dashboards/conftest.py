"""The seeded city in the session's real InfluxDB, shared by the dashboards' query tests."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest

from tests.dashboards.grafana import TimeRange
from tests.dashboards.seed import READINGS, STEP_MS, seed
from tests.services import InfluxDB

DATABASE = "dashboards"


@pytest.fixture(scope="session")
def city(influxdb: InfluxDB) -> TimeRange:
    """Seed the city once; the range a user would look at: the last three hours, 10-minute steps."""
    now_ms = time.time_ns() // 1_000_000
    seed(f"influxdb://127.0.0.1:{influxdb.port}/{DATABASE}", now_ms)
    return TimeRange(now_ms - READINGS * STEP_MS - 3_600_000, now_ms + 60_000, 600_000)


@pytest.fixture(scope="session")
def influxql(influxdb: InfluxDB, city: TimeRange) -> Callable[[str], list[dict[str, object]]]:
    """Run one statement on the seeded database; an InfluxQL error fails the test with its message."""

    def run(statement: str) -> list[dict[str, object]]:
        results: list[dict[str, Any]] = influxdb.query(statement, DATABASE)["results"]  # type: ignore[assignment]
        (result,) = results
        assert "error" not in result, f"{statement}\n-> {result['error']}"
        series: list[dict[str, object]] = result.get("series", [])
        return series

    return run
