"""Every route that takes a time or a duration: malformed and edge values are a 4xx naming why, never a 5xx.

The routes are found in the OpenAPI schema (query parameters ``start``, ``end``, ``window``,
``interval``), so a new route taking times is fuzzed without being listed here.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from api import create_app
from api.registry import Registry
from api.security import Role
from api.settings import ApiSettings
from collector.store.sqlite import SqliteStore
from tests.api.factories import FakeClock, bearer, city

TIME_PARAMETERS = ("start", "end")
DURATION_PARAMETERS = ("window", "interval")
# Required parameters the time routes have besides times, with a value they accept.
REQUIRED = {"field": "import_energy_kwh", "measurement": "electricity"}
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def iso_text(moment: datetime) -> str:
    return moment.isoformat()


INSTANTS = st.one_of(
    st.from_regex(r"0{1,40}", fullmatch=True),  # the epoch, any number of zeros
    st.from_regex(r"0{0,5}[0-9]{1,16}", fullmatch=True),
    st.from_regex(r"(now)?[+-][0-9]{1,13}(ms|s|m|h|d|w)", fullmatch=True),
    st.sampled_from(
        [
            "0",
            "1",
            "now",
            "1970-01-01",
            "1970-01-01T00:00:00Z",
            "1970-01-01T00:59:59.999+01:00",
            "9999-12-31T23:59:59.999Z",
            "9999-12-31T23:59:59.999-14:00",
            "0001-01-01T00:00:00+14:00",
            "253402300799999",
            "253402300800000",
            "",
            " ",
            "-0s",
            "+0s",
            "nan",
            "1e3",
            "٣",  # a digit str.isdigit() knows and int() reads
            "²",  # a digit str.isdigit() knows and int() refuses
        ]
    ),
    st.datetimes(
        min_value=datetime(1, 1, 2),
        max_value=datetime(9999, 12, 30),
        timezones=st.one_of(
            st.none(),
            st.just(UTC),
            st.builds(timezone, st.integers(-23, 23).map(lambda h: timedelta(hours=h))),
        ),
    ).map(iso_text),
    st.integers(-(2**70), 2**70).map(str),
    st.text(max_size=20),
)
DURATIONS = st.one_of(
    st.from_regex(r"[0-9]{1,10}(s|m|h|d|w)", fullmatch=True),
    st.sampled_from(["1s", "0s", "999999999w", "1ms", ""]),
    st.text(max_size=10),
)


def time_routes(schema: dict[str, Any]) -> list[tuple[str, list[str]]]:
    """(path, its time and duration parameters) of every GET taking times; path parameters filled."""
    found = []
    for path, methods in schema["paths"].items():
        op = methods.get("get")
        if op is None:
            continue
        names = [p["name"] for p in op.get("parameters", []) if p["in"] == "query"]
        if not any(name in TIME_PARAMETERS for name in names):
            continue
        for param in op.get("parameters", []):
            if param["in"] == "path":
                path = path.replace(f"{{{param['name']}}}", REQUIRED[param["name"]])
        found.append(
            (path, [n for n in names if n in TIME_PARAMETERS + DURATION_PARAMETERS or n in REQUIRED])
        )
    return found


@pytest.fixture
def api(
    store: SqliteStore, settings: ApiSettings, registry: Registry, keys: dict[Role, str]
) -> Iterator[TestClient]:
    store.write(city())
    unlimited = settings.model_copy(update={"rate_limit_per_s": 0})
    app = create_app(store, settings=unlimited, clock=FakeClock(), registry=registry)
    with TestClient(app, raise_server_exceptions=False) as client:
        client.headers.update(bearer(keys[Role.ADMIN]))
        yield client


def test_the_time_routes_are_found(api: TestClient) -> None:
    paths = {path for path, _ in time_routes(api.app.openapi())}  # type: ignore[attr-defined]
    assert "/v1/telemetry/electricity/consumption" in paths
    assert "/v1/dead-letters" in paths
    assert len(paths) >= 5


@pytest.mark.parametrize("end", ["0", "000000000000", "1970-01-01T00:00:00Z"])
def test_an_end_at_the_epoch_is_refused_with_the_reason(api: TestClient, end: str) -> None:
    response = api.get(
        "/v1/telemetry/electricity/consumption", params={"field": "import_energy_kwh", "end": end}
    )
    assert response.status_code == 400, response.text
    assert "1970-01-01T00:00:00.000Z" in response.json()["detail"]


def test_an_end_just_after_the_epoch_gives_the_range_from_the_epoch(api: TestClient) -> None:
    response = api.get(
        "/v1/telemetry/electricity/consumption", params={"field": "import_energy_kwh", "end": "1000"}
    )
    assert response.status_code == 200, response.text
    assert response.json()["start"] == "1970-01-01T00:00:00.000Z"


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_no_time_or_duration_gives_a_5xx(api: TestClient, data: st.DataObject) -> None:
    path, names = data.draw(st.sampled_from(time_routes(api.app.openapi())))  # type: ignore[attr-defined]
    query = {name: REQUIRED[name] for name in names if name in REQUIRED}
    for name in names:
        if name in TIME_PARAMETERS and data.draw(st.booleans()):
            query[name] = data.draw(INSTANTS)
        elif name in DURATION_PARAMETERS and data.draw(st.booleans()):
            query[name] = data.draw(DURATIONS)
    response = api.get(path, params=query)
    assert response.status_code < 500, f"GET {path} {query}: {response.status_code} {response.text[:300]}"
    if response.status_code >= 400:
        detail = response.json()["detail"]
        assert detail, f"GET {path} {query}: {response.status_code} without a reason"
