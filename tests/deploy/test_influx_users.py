"""docs/deploy.md step 3: its InfluxDB users run the collector, API and Grafana (real influxd, auth on)."""

from __future__ import annotations

import re
import uuid
from pathlib import Path

import httpx
import pytest

from collector.store import Point, StoreUnavailable, open_store, prepare
from tests.collector.store.auth_influxdb import ADMIN, AuthInfluxDB

pytestmark = pytest.mark.integration

DEPLOY_MD = Path(__file__).parents[2] / "docs" / "deploy.md"
PASSWORD = "s3cret"


def documented_statements() -> list[str]:
    """The InfluxQL of step 3's `influx -execute "…"` lines, passwords filled in."""
    statements = []
    for command in re.findall(r'^\s*influx .*-execute "(.*)"$', DEPLOY_MD.read_text(), re.MULTILINE):
        statements += [part.strip().replace("'…'", f"'{PASSWORD}'") for part in command.split(";")]
    return statements


def test_the_documented_users_run_the_collector_the_api_and_grafana(tmp_path: Path) -> None:
    statements = documented_statements()
    assert statements[0].startswith("CREATE USER admin"), statements
    server = AuthInfluxDB(tmp_path / "influxdb")
    server.start()
    try:
        # The first statement runs without credentials, as on a fresh server; then as that admin.
        httpx.post(
            f"{server.url}/query",
            data={"q": statements[0].replace(PASSWORD, ADMIN[1])},
            timeout=30,
        ).raise_for_status()
        for statement in statements[1:]:
            result = server.query(statement)
            assert "error" not in result["results"][0], (statement, result)  # type: ignore[index]

        def url(user: str) -> str:
            return f"influxdb://{user}:{PASSWORD}@127.0.0.1:{server.port}/citygw"

        point = Point(
            "transit_vehicle", {"vehicle": f"bus-{uuid.uuid4().hex[:6]}"}, 1_700_000_000_000, {"delay_s": 1.0}
        )
        collector = open_store(url("citygw_writer"))
        prepare(collector)
        collector.write([Point("water", {"device": "m1"}, 1_700_000_000_000, {"m3": 1.5})])
        collector.close()
        api = open_store(url("citygw_api"))
        prepare(api)
        api.write([point])  # the API's recorder
        assert api.latest(measurement="transit_vehicle") == [point]
        api.close()
        grafana = open_store(url("citygw_reader"))
        prepare(grafana)
        assert len(grafana.latest()) == 2
        # A read-only API: its recorder's rounds fail with the server's reason (logged, retried).
        with pytest.raises(StoreUnavailable, match=r"permission denied \(.*not authorized to write"):
            grafana.write([point])
        grafana.close()
    finally:
        server.stop()
