"""Every endpoint and every role: allowed, 401 without a key, 403 with a key of another role."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from api.registry import Registry
from api.security import Role
from api.settings import ApiSettings
from collector.store.sqlite import SqliteStore
from tests.api.factories import bearer

PUBLIC, UTILITY, ENGINEER, TRANSIT, ADMIN = Role.PUBLIC, Role.UTILITY, Role.ENGINEER, Role.TRANSIT, Role.ADMIN
EVERYONE = set(Role)
READERS = {UTILITY, ENGINEER, ADMIN}
FIELD = {ENGINEER, ADMIN}

# (method, route path) -> who may call it. Transit feeds are public and owned by api/routes/transit.py.
ACCESS: dict[tuple[str, str], set[Role]] = {
    ("GET", "/health"): EVERYONE,
    ("GET", "/v1/air-quality/stations"): EVERYONE,
    ("GET", "/v1/air-quality/city"): EVERYONE,
    ("GET", "/v1/open-data"): EVERYONE,
    ("GET", "/v1/open-data/{dataset}"): EVERYONE,
    ("GET", "/v1/devices"): READERS,
    ("GET", "/v1/devices/{device}/latest"): READERS,
    ("GET", "/v1/telemetry/{measurement}"): READERS,
    ("GET", "/v1/telemetry/{measurement}/groups"): READERS,
    ("GET", "/v1/telemetry/{measurement}/consumption"): READERS,
    ("GET", "/v1/exports/{measurement}"): READERS,
    ("GET", "/v1/summary"): READERS,
    ("GET", "/v1/dead-letters"): READERS,
    ("GET", "/v1/agents"): FIELD,
    ("POST", "/v1/agents"): FIELD,
    ("GET", "/v1/agents/{agent_id}"): FIELD,
    ("GET", "/v1/agents/{agent_id}/devices"): FIELD,
    ("POST", "/v1/agents/{agent_id}/devices"): FIELD,
    ("PUT", "/v1/agents/{agent_id}/devices/{device_id}"): FIELD,
    ("DELETE", "/v1/agents/{agent_id}/devices/{device_id}"): FIELD,
    ("POST", "/v1/agents/{agent_id}/device-moves"): FIELD,
    ("PUT", "/v1/agents/{agent_id}/settings"): FIELD,
    ("GET", "/v1/agents/{agent_id}/config"): FIELD,
    ("POST", "/v1/agents/{agent_id}/config"): FIELD,
    ("GET", "/v1/agents/{agent_id}/commands"): FIELD,
    ("POST", "/v1/agents/{agent_id}/commands"): FIELD,
    ("GET", "/v1/agents/{agent_id}/commands/{command_id}"): FIELD,
    ("GET", "/v1/keys"): {ADMIN},
    ("POST", "/v1/keys"): {ADMIN},
    ("DELETE", "/v1/keys/{key_id}"): {ADMIN},
    ("GET", "/v1/audit"): {ADMIN},
    ("GET", "/v1/alerts"): READERS,
    ("GET", "/v1/alerts/{alert_id}"): READERS,
    ("POST", "/v1/alerts/{alert_id}/acknowledge"): FIELD,
    ("GET", "/v1/releases"): {ADMIN},
    ("POST", "/v1/releases"): {ADMIN},
    # Agents fetch the wheel with their wave's token instead of a key (tests/api/routes/test_releases.py).
    ("GET", "/v1/releases/{version}/wheel"): EVERYONE,
    ("GET", "/v1/rollouts"): {ADMIN},
    ("POST", "/v1/rollouts"): {ADMIN},
    ("GET", "/v1/rollouts/{rollout_id}"): {ADMIN},
}
SAMPLE = {
    "device": "aq-park",
    "measurement": "air_quality",
    "agent_id": "nobody-here",
    "device_id": "meter-1",
    "command_id": "00000000-0000-0000-0000-000000000000",
    "key_id": "0123456789ab",
    "alert_id": "1",
    "dataset": "air-quality",
    "version": "0.2.0",
    "rollout_id": "1",
}


def _url(path: str) -> str:
    for name, value in SAMPLE.items():
        path = path.replace(f"{{{name}}}", value).replace(f"{{{name}:path}}", value)
    return path


def _routes(client: TestClient) -> set[tuple[str, str]]:
    """Every (method, path) the OpenAPI schema declares, transit feeds aside."""
    paths = client.get("/openapi.json").json()["paths"]
    return {
        (method.upper(), path)
        for path, operations in paths.items()
        if not path.startswith("/v1/transit")
        for method in operations
    }


def test_the_table_names_every_endpoint(anonymous: TestClient) -> None:
    assert _routes(anonymous) == set(ACCESS)


# City-wide transit writes: no site bounds them, so no site-bound engineer may.
TRANSIT_WRITES = [
    ("PUT", "/v1/transit/gtfs.zip"),
    ("POST", "/v1/transit/alerts"),
    ("POST", "/v1/transit/alerts/op-1/end"),
]


@pytest.mark.parametrize("role", list(Role))
@pytest.mark.parametrize(("method", "path"), TRANSIT_WRITES)
def test_transit_writes(
    anonymous: TestClient, keys: dict[Role, str], method: str, path: str, role: Role
) -> None:
    headers = bearer(keys[role]) if role is not PUBLIC else {}
    status = anonymous.request(method, path, headers=headers, json={} if path.endswith("alerts") else None)
    if role in (TRANSIT, ADMIN):
        assert status.status_code not in (401, 403), status.text
        assert status.status_code < 500
    else:
        assert status.status_code == (401 if role is PUBLIC else 403)


@pytest.mark.parametrize("role", list(Role))
@pytest.mark.parametrize(("method", "path"), sorted(ACCESS))
def test_access(anonymous: TestClient, keys: dict[Role, str], method: str, path: str, role: Role) -> None:
    headers = bearer(keys[role]) if role is not PUBLIC else {}
    response = anonymous.request(
        method, _url(path), headers=headers, json={} if method in ("POST", "PUT") else None
    )
    if role in ACCESS[(method, path)]:
        assert response.status_code not in (401, 403), response.text
        assert response.status_code < 500
    elif role is PUBLIC:
        assert response.status_code == 401
        assert response.headers["www-authenticate"].startswith("Bearer")
    else:
        assert response.status_code == 403


@pytest.mark.parametrize(
    "path", ["/v1/transit/vehicle-positions", "/v1/transit/vehicle-positions?format=json"]
)
def test_transit_feeds_stay_public(anonymous: TestClient, path: str) -> None:
    assert anonymous.get(path).status_code == 200


# What CITYGW_OPEN_TELEMETRY opens to anybody: the readings, not bulk exports or dead letters.
OPENED = {path for (method, path), roles in ACCESS.items() if roles == READERS and method == "GET"} - {
    "/v1/exports/{measurement}",
    "/v1/dead-letters",
    "/v1/alerts",
    "/v1/alerts/{alert_id}",
}


@pytest.mark.parametrize(
    "path", sorted(path for method, path in ACCESS if method == "GET" and ACCESS[(method, path)] == READERS)
)
def test_open_telemetry_opens_the_readings_only(
    store: SqliteStore, settings: ApiSettings, registry: Registry, path: str
) -> None:
    opened = settings.model_copy(update={"open_telemetry": True})
    with TestClient(create_app(store, settings=opened, registry=registry)) as anybody:
        status = anybody.get(_url(path)).status_code
    if path in OPENED:
        assert status not in (401, 403)
    else:
        assert status == 401
