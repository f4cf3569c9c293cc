"""Schemathesis, a peer's tool, against the API's own OpenAPI document for every role: no 5xx, and every
answer (status code, content type, body) is one the document declares.

The hand-written fuzz (test_fuzz.py) looks for 5xx and unaudited writes; this one holds the document
to what the API really answers, as any client generator or gateway would. Cases come from
schemathesis's strategies (hypothesis) and are judged by its checks; the requests go through the
app's test client: schemathesis's own transport breaks on the urllib3-future that grafana-client's
niquests installs in place of urllib3.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from api import create_app
from api.registry import Registry
from api.security import Role
from api.settings import ApiSettings
from collector.store.sqlite import SqliteStore
from tests.api.factories import FakeClock, bearer, city

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
# Never ends: a server-sent event stream (tested on its own in tests/api/transit).
STREAM = "/v1/transit/vehicles/stream"
EXAMPLES = 12


def _document() -> dict[str, Any]:
    """The OpenAPI document, from an app that serves nothing (the document does not depend on data)."""
    app = create_app(SqliteStore(Path(":memory:")), settings=ApiSettings(registry_url="sqlite://"))
    return app.openapi()


@schemathesis.serializer("application/zip")
def _zip(ctx: Any, value: Any) -> bytes:
    """A GTFS upload's body: the bytes hypothesis drew (the document says binary, no structure)."""
    return value if isinstance(value, bytes) else str(value).encode()


DOCUMENT = _document()
SCHEMA = schemathesis.openapi.from_dict(DOCUMENT)
OPERATIONS = [
    (method.upper(), path)
    for path, methods in DOCUMENT["paths"].items()
    for method in methods
    if path != STREAM
]


@pytest.fixture
def callers(keys: dict[Role, str]) -> dict[str, dict[str, str]]:
    """Headers of each role's caller, and of one with no key."""
    return {"no key": {}, **{role.value: bearer(key) for role, key in keys.items()}}


@pytest.fixture
def client(store: SqliteStore, settings: ApiSettings, registry: Registry) -> Iterator[TestClient]:
    store.write(city())
    unlimited = settings.model_copy(update={"rate_limit_per_s": 0})
    app = create_app(store, settings=unlimited, clock=FakeClock(), registry=registry)
    with TestClient(app, raise_server_exceptions=False) as served:
        yield served


@pytest.mark.parametrize(("method", "path"), OPERATIONS)
def test_every_answer_is_declared_for_every_role(
    client: TestClient, callers: dict[str, dict[str, str]], method: str, path: str
) -> None:
    @given(case=SCHEMA[path][method].as_strategy())
    @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
    def answers(case: Any) -> None:
        for role, headers in callers.items():
            request = case.as_transport_kwargs(base_url=str(client.base_url), headers=headers)
            request.pop("cookies", None)
            response = client.request(**request)
            try:
                case.validate_response(response, checks=CHECKS)
            except Exception as exc:
                raise AssertionError(f"as {role}: {response.status_code} {response.text[:200]}") from exc

    answers()
