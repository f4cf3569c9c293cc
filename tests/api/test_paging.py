"""Paging of the growing lists: following ``Link: rel=next`` gives every item once, in the unpaged order."""

from __future__ import annotations

import csv
import io
import re
from typing import Any

import pytest
from fastapi.testclient import TestClient

from api.registry import Registry, audit
from api.registry.models import Agent, Alert
from api.routes.paging import DEFAULT_LIMIT, MAX_LIMIT, encode_cursor
from api.security import Role
from collector.store.sqlite import SqliteStore
from tests.api.factories import (
    ENGINEER_SITE,
    MINUTE_MS,
    NOW_MS,
    bearer,
    on_every_registry,
    reading,
    register_device,
)

AGENTS = [
    ("depot-1", ENGINEER_SITE),
    ("depot-2", "sykhiv"),
    ("depot-3", ENGINEER_SITE),
    ("depot-4", ENGINEER_SITE),
]


@pytest.fixture
def busy_city(city_store: SqliteStore, registry: Registry) -> None:
    """Agents, audit entries, alerts and a lighting cabinet with three lamps, besides the city's devices."""
    with registry.session() as session:
        for agent_id, site in AGENTS:
            session.add(Agent(id=agent_id, site=site, lines=[], created_at=0))
        for n in range(5):
            audit.record(session, ts_ms=NOW_MS + n, actor="cli", role="admin", action="x.y", target=f"t{n}")
            session.add(
                Alert(
                    rule="device_offline", subject=f"m-{n}", state="active", detail="", data={}, started_at=n
                )
            )
        register_device(session, "cab-1", "ecodim_dali_gw2", agent="depot-1")
        session.commit()
    lamps = {"lamp0_status": 0, "lamp1_status": 4, "lamp2_status": 0}
    city_store.write([reading("lighting", "cab-1", NOW_MS - MINUTE_MS, lamps, agent="depot-1")])


def items(response: Any, path: str) -> list[Any]:
    if path.startswith("/v1/summary"):
        return list(response.json()["devices"])
    if path.startswith("/v1/open-data"):
        if "csv" in path:  # a page's columns are those its rows use
            return [{k: v for k, v in row.items() if v} for row in csv.DictReader(io.StringIO(response.text))]
        return list(response.json())
    return list(response.json())


def next_link(response: Any) -> str | None:
    match = re.fullmatch(r'<([^>]+)>; rel="next"', response.headers.get("link", ""))
    return match.group(1) if match else None


@pytest.mark.parametrize(
    ("path", "role"),
    [
        ("/v1/devices", Role.UTILITY),
        ("/v1/devices?measurement=air_quality", Role.UTILITY),
        ("/v1/summary", Role.UTILITY),
        ("/v1/agents", Role.ADMIN),
        ("/v1/agents", Role.ENGINEER),
        ("/v1/open-data/streetlights", Role.PUBLIC),
        ("/v1/open-data/streetlights?format=csv", Role.PUBLIC),
        ("/v1/audit?action=x.y", Role.ADMIN),
        ("/v1/alerts", Role.UTILITY),
    ],
)
@pytest.mark.usefixtures("busy_city")
def test_pages_add_up_to_the_whole_list(
    anonymous: TestClient, keys: dict[Role, str], path: str, role: Role
) -> None:
    headers = bearer(keys[role]) if role is not Role.PUBLIC else {}
    whole = anonymous.get(path, headers=headers)
    assert whole.status_code == 200, whole.text
    assert next_link(whole) is None
    expected = items(whole, path)
    assert len(expected) >= 2
    if role is Role.ENGINEER:
        assert [a["id"] for a in expected] == ["depot-1", "depot-3", "depot-4"]

    paged: list[Any] = []
    url: str | None = path + ("&" if "?" in path else "?") + "limit=1"
    while url is not None:
        page = anonymous.get(url, headers=headers)
        assert page.status_code == 200, page.text
        assert len(items(page, path)) == 1
        paged += items(page, path)
        url = next_link(page)
        if url is not None:
            assert "limit=1" in url
            assert all(part in url for part in path.split("?")[1:])  # filters are kept
    assert paged == expected


@pytest.mark.parametrize(
    ("params", "status"),
    [
        ({"cursor": "not-a-cursor"}, 400),
        ({"cursor": encode_cursor((1,))}, 400),  # an audit cursor given to the device list
        ({"cursor": "' OR 1=1 --"}, 422),
        ({"limit": 0}, 422),
        ({"limit": MAX_LIMIT + 1}, 422),
    ],
)
def test_bad_paging_parameters_are_refused(
    client: TestClient, params: dict[str, object], status: int
) -> None:
    assert client.get("/v1/devices", params=params).status_code == status


def test_without_parameters_the_first_page_has_the_default_size(
    client: TestClient, store: SqliteStore
) -> None:
    store.write(
        [reading("water", f"w-{n:04d}", NOW_MS, {"flow_rate": 1.0}) for n in range(DEFAULT_LIMIT + 1)]
    )
    first = client.get("/v1/devices")
    assert len(first.json()) == DEFAULT_LIMIT
    rest = client.get(next_link(first) or "")
    assert [d["device"] for d in rest.json()] == [f"w-{DEFAULT_LIMIT:04d}"]
    assert next_link(rest) is None


@pytest.mark.parametrize(
    "path", ["/v1/alerts/2147483648", "/v1/alerts?before_id=2147483648", "/v1/audit?before_id=2147483648"]
)
def test_ids_beyond_the_registrys_integer_columns_are_422(
    anonymous: TestClient, keys: dict[Role, str], path: str
) -> None:
    assert anonymous.get(path, headers=bearer(keys[Role.ADMIN])).status_code == 422


@on_every_registry
@pytest.mark.parametrize("path", ["/v1/alerts", "/v1/audit"])
def test_a_cursor_beyond_the_integer_columns_is_no_5xx(
    anonymous: TestClient, keys: dict[Role, str], path: str
) -> None:
    response = anonymous.get(
        path, params={"cursor": encode_cursor((2**40,))}, headers=bearer(keys[Role.ADMIN])
    )
    assert response.status_code == 200, response.text


@on_every_registry
@pytest.mark.parametrize("path", ["/v1/alerts", "/v1/audit"])
@pytest.mark.parametrize("number", [-1, -(10**30), 2**63])
def test_a_cursor_no_page_could_end_at_is_refused(
    anonymous: TestClient, keys: dict[Role, str], path: str, number: int
) -> None:
    response = anonymous.get(
        path, params={"cursor": encode_cursor((number,))}, headers=bearer(keys[Role.ADMIN])
    )
    assert response.status_code == 400, response.text
