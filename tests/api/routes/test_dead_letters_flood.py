"""/v1/dead-letters after a flood of junk, on real InfluxDB: only the page is read, counted by rows sent.

After 100 000 junk messages, ``?limit=10`` took 7.8 s and 680 MB: every letter of the range was read.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from api import create_app
from api.registry import Registry
from api.security import Role
from api.settings import ApiSettings
from collector.store.influx_v1 import InfluxV1Store
from tests.api.factories import FakeClock, bearer
from tests.collector.store.test_newest import T0, letter
from tests.services import InfluxDB

pytestmark = pytest.mark.integration

JUNK = 30_000


@pytest.fixture
def flooded(influxdb: InfluxDB) -> Iterator[InfluxV1Store]:
    """A real InfluxDB holding JUNK dead letters of one minute, every row it sends back counted."""
    database = f"letters_{uuid.uuid4().hex[:12]}"
    store = InfluxV1Store(influxdb.url, database)
    store.ensure_database()
    start = T0 - 60_000
    junk = [letter(start + i * 2, "invalid_json" if i % 3 else "schema", f"a{i % 7}", i) for i in range(JUNK)]
    for first in range(0, JUNK, 5000):
        store.write(junk[first : first + 5000])
    yield store
    store.close()
    influxdb.query(f'DROP DATABASE "{database}"')


def rows_sent(response: httpx.Response) -> int:
    if not response.request.url.path.endswith("/query"):
        return 0
    response.read()
    results = json.loads(response.content).get("results", [])
    return sum(len(series.get("values", [])) for result in results for series in result.get("series", []))


def test_a_flood_of_dead_letters_is_listed_reading_only_the_page(
    flooded: InfluxV1Store, settings: ApiSettings, registry: Registry, keys: dict[Role, str]
) -> None:
    sent: list[int] = []
    flooded._http.event_hooks["response"].append(lambda response: sent.append(rows_sent(response)))
    app = create_app(flooded, settings=settings, clock=FakeClock(T0), registry=registry)
    with TestClient(app, headers=bearer(keys[Role.UTILITY])) as client:
        response = client.get("/v1/dead-letters", params={"limit": 10, "start": str(T0 - 120_000)})
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        assert [letter["payload"] for letter in body["letters"]] == [
            f"#{i}" for i in range(JUNK - 1, JUNK - 11, -1)
        ]
        assert body["counts"] == {"invalid_json": JUNK - JUNK // 3, "schema": JUNK // 3}
        assert body["more"] is True
        assert sum(sent) <= 10 + 1 + 2 + 20, sent  # the page and one more, two counts, field keys
        sent.clear()
        of_a3 = client.get(
            "/v1/dead-letters",
            params={"limit": 5, "agent": "a3", "reason": "schema", "start": str(T0 - 120_000)},
        )
        assert len(of_a3.json()["letters"]) == 5
        assert all(r["agent"] == "a3" and r["reason"] == "schema" for r in of_a3.json()["letters"])
        assert sum(sent) <= 5 + 1 + 2 + 20, sent
