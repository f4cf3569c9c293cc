"""/v1/devices and /v1/summary when one agent made tens of thousands of device ids, on real InfluxDB: only
the page is read, counted by the rows InfluxDB sends.

Before, every request read the newest point of every series: 6 s at 50 000 series.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from api import create_app
from api.registry import Registry
from api.security import Role
from api.settings import ApiSettings
from collector.store import Point
from collector.store.influx_v1 import InfluxV1Store
from tests.api.factories import FakeClock, bearer
from tests.api.routes.test_dead_letters_flood import rows_sent
from tests.services import InfluxDB

pytestmark = pytest.mark.integration

T0 = 1_700_000_000_000
SERIES = 50_000
HONEST = ["meter-a", "meter-b"]
ROUTES = 5_000


@pytest.fixture
def flooded(influxdb: InfluxDB) -> Iterator[InfluxV1Store]:
    """SERIES device ids of one agent ("spray"); two devices of an honest agent listed after it, and a bus
    of it whose route tag took ROUTES values (a series each)."""
    database = f"devices_{uuid.uuid4().hex[:12]}"
    store = InfluxV1Store(influxdb.url, database)
    store.ensure_database()
    points = [
        Point("electricity", {"agent": "spray", "device": f"d{n:05d}"}, T0 + n, {"kwh": float(n)})
        for n in range(SERIES)
    ]
    points += [Point("water", {"agent": "works", "device": d}, T0, {"m3": 1.0}) for d in HONEST]
    points += [
        Point(
            "vehicle_position", {"agent": "works", "device": "bus-1", "route": f"r{n}"}, T0 + n, {"lat": 1.0}
        )
        for n in range(ROUTES)
    ]
    for first in range(0, len(points), 10_000):
        store.write(points[first : first + 10_000])
    yield store
    store.close()
    influxdb.query(f'DROP DATABASE "{database}"')


def test_device_lists_read_only_their_page_of_many_series(
    flooded: InfluxV1Store, settings: ApiSettings, registry: Registry, keys: dict[Role, str]
) -> None:
    sent: list[int] = []
    flooded._http.event_hooks["response"].append(lambda response: sent.append(rows_sent(response)))
    app = create_app(flooded, settings=settings, clock=FakeClock(T0 + SERIES), registry=registry)
    with TestClient(app, headers=bearer(keys[Role.UTILITY])) as client:
        sent.clear()
        started = time.monotonic()
        first = client.get("/v1/devices", params={"limit": 10})
        took_s = time.monotonic() - started
        assert first.status_code == 200, first.text
        assert [d["device"] for d in first.json()] == [f"d{n:05d}" for n in range(10)]
        # the page and one more, the agents (one per measurement), one device list, the field keys
        assert sum(sent) <= 11 + 2 + 1 + 11 + 11 + 5, sent
        assert took_s < 2, took_s

        sent.clear()
        next_url = first.headers["Link"].split(">")[0].lstrip("<")
        second = client.get(next_url)
        assert [d["device"] for d in second.json()] == [f"d{n:05d}" for n in range(10, 20)]
        assert sum(sent) <= 11 + 2 + 1 + 11 + 11 + 5 + 2, sent

        sent.clear()
        honest = client.get("/v1/devices", params={"agent": "works"})
        listed = [(d["device"], d["measurement"], d["tags"]) for d in honest.json()]
        newest_route = {"route": f"r{ROUTES - 1}"}
        assert listed == [("bus-1", "vehicle_position", newest_route)] + [(d, "water", {}) for d in HONEST]
        assert "Link" not in honest.headers
        assert sum(sent) <= 3 + 3 + 8, sent  # devices (one list per measurement), points, field keys

        sent.clear()
        summary = client.get("/v1/summary", params={"limit": 5, "measurement": "electricity"})
        assert summary.status_code == 200, summary.text
        devices = summary.json()["devices"]
        assert [(d["device"], d["values"]) for d in devices] == [
            (f"d{n:05d}", {"kwh": float(n)}) for n in range(5)
        ]
        assert sum(sent) <= 6 + 1 + 6 + 5, sent
