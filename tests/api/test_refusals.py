"""Refused requests (401, 403) are in the audit log, a bounded number a minute, the rest counted."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from api import create_app
from api.refusals import RefusalAudit
from api.registry import Registry
from api.registry.audit import entries
from api.security import Role
from api.settings import ApiSettings
from collector.store.sqlite import SqliteStore
from tests.api.factories import FakeClock, bearer

PER_MIN = 5


@pytest.fixture
def api(
    store: SqliteStore, settings: ApiSettings, registry: Registry, clock: FakeClock
) -> Iterator[TestClient]:
    bounded = settings.model_copy(update={"refusal_audit_per_min": PER_MIN, "rate_limit_per_s": 0})
    with TestClient(create_app(store, settings=bounded, clock=clock, registry=registry)) as client:
        yield client


def refusals(registry: Registry) -> list[tuple[str, str, str, dict[str, object] | None]]:
    with registry.session() as session:
        return [
            (e.actor, e.role, e.target, e.after) for e in reversed(entries(session, action="access.refused"))
        ]


def test_each_kind_of_refusal_names_who_what_and_why(
    api: TestClient, keys: dict[Role, str], registry: Registry
) -> None:
    utility = keys[Role.UTILITY]
    assert api.get("/v1/keys").status_code == 401
    assert api.get("/v1/keys", headers=bearer(utility)).status_code == 403
    assert api.get("/v1/keys", headers=bearer(utility[:-4] + "AAAA")).status_code == 401  # wrong secret
    assert api.get("/v1/summary", headers=bearer(utility)).status_code == 200  # not a refusal
    logged = refusals(registry)
    assert [(actor.split(" ")[0], role, target) for actor, role, target, _ in logged] == [
        ("anonymous", "public", "GET /v1/keys"),
        (f"key:{utility[4:16]}", "utility", "GET /v1/keys"),
        (f"key:{utility[4:16]}", "public", "GET /v1/keys"),  # claimed, not proven
    ]
    assert [after for *_, after in logged] == [
        {"status": 401, "client": "testclient"},
        {"status": 403, "client": "testclient"},
        {"status": 401, "client": "testclient"},
    ]
    with registry.session() as session:
        details = [e.detail for e in reversed(entries(session, action="access.refused"))]
    assert details == [
        "an API key is needed (role admin)",
        "role utility may not; needs admin",
        "unknown or wrong API key",
    ]


def test_a_flood_of_refusals_writes_a_few_entries_and_counts_the_rest(
    api: TestClient, registry: Registry, clock: FakeClock
) -> None:
    for _ in range(40):
        assert (
            api.put(
                "/v1/transit/gtfs.zip", content=b"x", headers=bearer("cgw_0123456789ab." + "A" * 43)
            ).status_code
            == 401
        )
    assert len(refusals(registry)) == PER_MIN
    clock.now_ms += 60_000
    assert api.get("/v1/audit").status_code == 401
    logged = refusals(registry)
    assert len(logged) == PER_MIN + 1
    assert logged[-1][3] == {"status": 401, "client": "testclient", "unlogged_before": 40 - PER_MIN}
    assert logged[0][0] == "key:0123456789ab (refused)"


def test_all_addresses_together_are_bounded_too() -> None:
    now = [0.0]
    audit = RefusalAudit(2, 10, clock=lambda: now[0])
    admitted = [audit.admit(f"10.0.0.{n}") for n in range(100)]
    assert sum(a is not None for a in admitted) == 10
    assert audit.admit("10.0.0.99") is None
    now[0] += 60
    assert audit.admit("10.0.0.99") == 2  # its first try and the one just above
    assert audit.admit("10.0.0.1") == 0
