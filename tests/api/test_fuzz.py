"""Requests generated from the OpenAPI schema, inside and outside it, with an admin key and with none: no 5xx.

Every parameter gets values its schema allows, values it does not, and injection strings; bodies
get the schema's property names with hostile values. Every write that succeeds leaves an audit entry.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from api import create_app
from api.registry import Registry
from api.registry.models import AuditEntry
from api.security import Role
from api.settings import ApiSettings
from collector.store.sqlite import SqliteStore
from tests.api.factories import FakeClock, bearer, city, on_every_registry

INJECTIONS = [
    '"; DROP TABLE audit_log; --',
    "' OR 1=1 --",
    'x" OR "1"="1',
    "\n",
    "a\r\nX-Injected: 1",
    "air_quality WHERE 1=1; DROP MEASUREMENT air_quality",
    "../../etc/passwd",
    "%00",
    "\x00",
    "${jndi:ldap://x}",
    "<script>alert(1)</script>",
    "-1",
    "9" * 40,
    "A" * 5000,
    "😀",
]
# Never ends: a server-sent event stream (tested on its own in tests/api/transit).
SKIPPED = {("GET", "/v1/transit/vehicles/stream")}
WRITES = {"POST", "PUT", "DELETE"}
# Writes owned by the transit room, which audits in its own store.
UNAUDITED = {"/v1/transit/"}


@dataclass(frozen=True)
class Operation:
    method: str
    path: str
    parameters: list[dict[str, Any]]
    body_properties: list[str]
    has_body: bool


def _resolve(schema: dict[str, Any], components: dict[str, Any]) -> dict[str, Any]:
    ref = schema.get("$ref")
    return components[ref.rsplit("/", 1)[1]] if ref else schema


def operations(schema: dict[str, Any]) -> list[Operation]:
    components = schema.get("components", {}).get("schemas", {})
    found = []
    for path, methods in schema["paths"].items():
        for method, op in methods.items():
            if (method.upper(), path) in SKIPPED:
                continue
            body = op.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema")
            properties = list(_resolve(body, components).get("properties", {})) if body else []
            parameters = [
                {**p, "schema": _flatten(p.get("schema", {}), components)}
                for p in op.get("parameters", [])
                if p["in"] in ("path", "query")
            ]
            found.append(
                Operation(method.upper(), path, parameters, properties, method.upper() in ("POST", "PUT"))
            )
    return found


def _flatten(schema: dict[str, Any], components: dict[str, Any]) -> dict[str, Any]:
    """The non-null branch of an Optional, with its $ref resolved."""
    for branch in schema.get("anyOf", []):
        if branch.get("type") != "null":
            return {**_resolve(branch, components), **{k: v for k, v in schema.items() if k != "anyOf"}}
    return {**_resolve(schema, components), **{k: v for k, v in schema.items() if k != "$ref"}}


def in_schema(schema: dict[str, Any]) -> st.SearchStrategy[str]:
    if "enum" in schema:
        return st.sampled_from([str(v) for v in schema["enum"]])
    kind = schema.get("type")
    if kind == "integer":
        low, high = schema.get("minimum", -(2**31)), schema.get("maximum", 2**31)
        return st.integers(low, high).map(str)
    if kind == "boolean":
        return st.sampled_from(["true", "false", "1", "0"])
    if "pattern" in schema:
        return st.from_regex(schema["pattern"], fullmatch=True)
    return st.text(max_size=schema.get("maxLength", 40))


def any_value(schema: dict[str, Any]) -> st.SearchStrategy[str]:
    return st.one_of(
        in_schema(schema),
        in_schema(schema),
        st.sampled_from(INJECTIONS),
        st.text(max_size=80),
        st.integers().map(str),
    )


JSON_LEAF = st.one_of(
    st.sampled_from(INJECTIONS),
    st.integers(),
    st.floats(allow_nan=False, allow_infinity=False),
    st.booleans(),
    st.none(),
    st.text(max_size=20),
)
JSON = st.recursive(
    JSON_LEAF,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)


@st.composite
def requests(draw: st.DrawFn, ops: list[Operation]) -> tuple[Operation, str, dict[str, str], Any]:
    op = draw(st.sampled_from(ops))
    url = op.path
    query: dict[str, str] = {}
    for param in op.parameters:
        if param["in"] == "path":
            value = draw(any_value(param["schema"]))
            url = url.replace(f"{{{param['name']}}}", quote(value, safe="") or "x")
        elif draw(st.booleans()):
            query[param["name"]] = draw(any_value(param["schema"]))
    body: Any = None
    if op.has_body:
        keys = st.sampled_from(op.body_properties) if op.body_properties else st.text(max_size=8)
        body = draw(st.one_of(st.dictionaries(keys, JSON, max_size=6), JSON))
    return op, url, query, body


@pytest.fixture
def api(
    store: SqliteStore, settings: ApiSettings, registry: Registry, keys: dict[Role, str]
) -> Iterator[tuple[TestClient, dict[str, str]]]:
    store.write(city())
    unlimited = settings.model_copy(update={"rate_limit_per_s": 0})
    app = create_app(store, settings=unlimited, clock=FakeClock(), registry=registry)
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client, bearer(keys[Role.ADMIN])


def audit_count(registry: Registry) -> int:
    with registry.session() as session:
        return session.scalar(select(func.count()).select_from(AuditEntry)) or 0


def call(
    client: TestClient, op: Operation, url: str, query: dict[str, str], body: Any, headers: dict[str, str]
) -> Any:
    return client.request(op.method, url, params=query, json=body if op.has_body else None, headers=headers)


def check(response: Any, op: Operation, url: str, query: dict[str, str]) -> None:
    assert response.status_code < 500, (
        f"{op.method} {url} {query}: {response.status_code} {response.text[:300]}"
    )


@on_every_registry
@settings(
    max_examples=700,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_generated_requests_never_5xx(
    api: tuple[TestClient, dict[str, str]], registry: Registry, data: st.DataObject
) -> None:
    client, admin = api
    op, url, query, body = data.draw(requests(operations(client.app.openapi())))  # type: ignore[attr-defined]
    keyed = data.draw(st.booleans())
    before = audit_count(registry)
    response = call(client, op, url, query, body, admin if keyed else {})
    check(response, op, url, query)
    if not keyed and op.method in WRITES:
        # A write without a key is refused, unless the generated path matched no route at all.
        assert response.status_code == 401 or response.json() == {"detail": "Not Found"}
    if response.is_success and op.method in WRITES and not op.path.startswith(tuple(UNAUDITED)):
        assert audit_count(registry) > before, f"{op.method} {url} succeeded without an audit entry"


@on_every_registry
def test_every_string_parameter_takes_every_injection(api: tuple[TestClient, dict[str, str]]) -> None:
    client, admin = api
    for op in operations(client.app.openapi()):  # type: ignore[attr-defined]
        for param in op.parameters:
            for attack in INJECTIONS:
                url = op.path
                query: dict[str, str] = {}
                for other in op.parameters:
                    if other["in"] == "path":
                        value = attack if other is param else "x1"
                        url = url.replace(f"{{{other['name']}}}", quote(value, safe="") or "x")
                if param["in"] == "query":
                    query[param["name"]] = attack
                response = call(client, op, url, query, {} if op.has_body else None, admin)
                check(response, op, url, query)
