"""deploy/influxdb/retention.py on real InfluxDB 1.x: policies, continuous queries, hourly history."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType

import pytest

from collector.store import Point, open_store
from tests.services import InfluxDB

pytestmark = pytest.mark.integration
SCRIPT = Path(__file__).parents[2] / "deploy" / "influxdb" / "retention.py"
HOUR_S = 3600


def retention() -> ModuleType:
    spec = importlib.util.spec_from_file_location("retention", SCRIPT)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_policies_and_continuous_queries_are_applied_idempotently(influxdb: InfluxDB) -> None:
    for _ in range(2):
        done = subprocess.run(
            [sys.executable, str(SCRIPT), "--url", influxdb.url, "--database", "retention_a"],
            capture_output=True,
            text=True,
            check=False,
        )
        assert done.returncode == 0, done.stderr
    (policies,) = influxdb.query('SHOW RETENTION POLICIES ON "retention_a"')["results"][0]["series"]  # type: ignore[index]
    by_name = {row[0]: row for row in policies["values"]}
    assert by_name["autogen"][1] == "2160h0m0s"  # 90 days
    assert by_name["autogen"][4] is True  # still the default: every query without a policy sees it
    assert by_name["hourly"][1] == "43800h0m0s"  # 5 years
    queries = influxdb.query("SHOW CONTINUOUS QUERIES")["results"][0]["series"]  # type: ignore[index]
    (ours,) = [s for s in queries if s["name"] == "retention_a"]
    assert sorted(row[0] for row in ours["values"]) == ["hourly_last", "hourly_mean_max"]


def test_the_continuous_queries_keep_hourly_means_maxima_and_counters(influxdb: InfluxDB) -> None:
    module = retention()
    influx = module.Influx(influxdb.url, "retention_b")
    module.apply(influx)
    end_s = int(time.time()) // HOUR_S * HOUR_S  # on the hour; older than 90 days would be refused
    start_ms = (end_s - 2 * HOUR_S) * 1000
    store = open_store(f"influxdb://127.0.0.1:{influxdb.port}/retention_b")
    tags = {"device": "meter-opera", "agent": "depot-north-1", "district": "halytskyi"}
    store.write(
        [
            Point(
                "electricity",
                tags,
                start_ms + i * 600_000,
                {"total_power": 1000.0 + i, "import_energy_kwh": 10.0 * i},
            )
            for i in range(12)  # two hours, every 10 minutes
        ]
    )
    store.close()
    module.backfill(influx, 1, now_s=end_s)
    rows = influx.query(
        'SELECT "mean_total_power", "max_total_power", "last_import_energy_kwh" '
        'FROM "retention_b"."hourly"."electricity" GROUP BY *'
    )
    (series,) = rows
    assert series["tags"] == tags
    assert [row[1:] for row in series["values"]] == [[1002.5, 1005, 50], [1008.5, 1011, 110]]
