"""The vehicle stream (server-sent events) over a real socket: uvicorn on loopback, httpx streaming."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from api import create_app
from api.registry import Registry
from api.settings import ApiSettings
from api.transit.feeds import TransitService
from api.transit.timetable import Timetable
from collector.store.sqlite import SqliteStore
from simulators.transit.buses import Bus, fixes_between
from tests.api.factories import NOW_MS, FakeClock
from tests.services import serving

NOW_S = NOW_MS // 1000


@pytest.fixture
def served(
    store: SqliteStore, settings: ApiSettings, clock: FakeClock, registry: Registry, gtfs_path: Path
) -> Iterator[str]:
    streams = {"transit_stream_period_s": 0.05, "transit_stream_max_clients": 2}
    app = create_app(store, settings=settings.model_copy(update=streams), clock=clock, registry=registry)
    app.state.transit = TransitService(
        settings.model_copy(update={"transit_gtfs_path": gtfs_path, **streams})
    )
    with serving(app) as url:
        yield url


def events(lines: Iterator[str], count: int) -> list[tuple[str, dict[str, object]]]:
    found: list[tuple[str, dict[str, object]]] = []
    kind = ""
    for line in lines:
        if line.startswith("event: "):
            kind = line.removeprefix("event: ")
        elif line.startswith("data: "):
            found.append((kind, json.loads(line.removeprefix("data: "))))
            if len(found) == count:
                break
    return found


def test_stream_sends_each_vehicle_then_only_changes(
    served: str, store: SqliteStore, clock: FakeClock, timetable: Timetable, friday: list[Bus]
) -> None:
    points = list(fixes_between(timetable, friday, NOW_S - 150, NOW_S + 1))
    store.write(points)
    vehicles = {p.tags["vehicle"] for p in points if p.ts_ms >= NOW_MS - 90_000}
    moved = sorted(vehicles)[0]
    with (
        httpx.Client(base_url=served, timeout=10) as http,
        http.stream("GET", "/v1/transit/vehicles/stream") as response,
    ):
        assert response.headers["content-type"].startswith("text/event-stream")
        lines = response.iter_lines()
        first = events(lines, len(vehicles))
        assert {kind for kind, _ in first} == {"vehicle"}
        assert {data["id"] for _, data in first} == vehicles
        later = next(p for p in points if p.tags["vehicle"] == moved)
        store.write(
            [type(later)(later.measurement, later.tags, NOW_MS + 1000, {**later.fields, "lat": 49.85})]
        )
        clock.now_ms += 1000
        ((kind, data),) = events(lines, 1)
        assert (kind, data["id"]) == ("vehicle", moved)
        assert data["vehicle"]["timestamp"] == str(NOW_S + 1)  # type: ignore[index]


def test_streams_beyond_the_cap_are_503_until_one_closes(served: str) -> None:
    def first_line(http: httpx.Client) -> str:
        with http.stream("GET", "/v1/transit/vehicles/stream") as response:
            assert response.status_code == 200
            return next(response.iter_lines())

    with httpx.Client(base_url=served, timeout=10) as http:
        with (
            http.stream("GET", "/v1/transit/vehicles/stream") as one,
            http.stream("GET", "/v1/transit/vehicles/stream") as two,
        ):
            # Kept: an iterator dropped closes its stream (httpx), and the server would count it gone.
            lines = one.iter_lines(), two.iter_lines()
            assert [next(stream) for stream in lines] == [": citygw vehicle stream"] * 2
            refused = http.get("/v1/transit/vehicles/stream")
            assert refused.status_code == 503
            assert refused.headers["retry-after"] == "30"
        deadline = time.monotonic() + 5  # the server notices the closed streams within a period
        while http.get("/v1/transit/vehicle-positions").status_code == 200 and time.monotonic() < deadline:
            try:
                assert first_line(http) == ": citygw vehicle stream"
                break
            except AssertionError:
                time.sleep(0.1)
        else:
            raise AssertionError("no stream accepted after the others closed")
