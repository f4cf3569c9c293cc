"""The audit log: written with every key change, readable by admins, never changed afterwards."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text
from sqlalchemy.exc import DatabaseError

from api.registry import Registry
from api.security import Role
from tests.api.factories import NOW_ISO, bearer, on_every_registry

pytestmark = on_every_registry


def test_key_changes_are_audited_and_readable_by_admins(anonymous: TestClient, keys: dict[Role, str]) -> None:
    admin = bearer(keys[Role.ADMIN])
    created = anonymous.post(
        "/v1/keys",
        json={"name": "Ternopil engineer", "role": "engineer", "sites": ["ternopil-1"]},
        headers=admin,
    )
    assert created.status_code == 201
    key_id = created.json()["id"]
    assert anonymous.delete(f"/v1/keys/{key_id}", headers=admin).status_code == 200
    log = anonymous.get("/v1/audit", headers=admin).json()
    assert [(e["action"], e["target"], e["result"]) for e in log] == [
        ("key.revoke", f"key:{key_id}", "ok"),
        ("key.create", f"key:{key_id}", "ok"),
    ]
    revoke, create = log
    assert revoke["actor"].startswith("key:")
    assert revoke["role"] == "admin"
    assert revoke["ts"] == NOW_ISO
    assert revoke["before"]["revoked_at"] is None
    assert revoke["after"]["revoked_at"] is not None
    assert create["after"]["sites"] == ["ternopil-1"]
    assert "secret_hash" not in create["after"]
    assert created.json()["token"] not in str(log)
    only = anonymous.get("/v1/audit", params={"action": "key.create"}, headers=admin).json()
    assert [e["action"] for e in only] == ["key.create"]
    older = anonymous.get("/v1/audit", params={"before_id": revoke["id"]}, headers=admin).json()
    assert [e["id"] for e in older] == [create["id"]]


@pytest.mark.parametrize(
    "statement",
    ["UPDATE audit_log SET result = 'ok'", "DELETE FROM audit_log", "TRUNCATE audit_log"],
)
def test_the_database_refuses_to_change_the_log(
    anonymous: TestClient, keys: dict[Role, str], registry: Registry, statement: str
) -> None:
    if statement.startswith("TRUNCATE") and registry.engine.dialect.name == "sqlite":
        pytest.skip("SQLite has no TRUNCATE")
    anonymous.post("/v1/keys", json={"name": "x", "role": "utility"}, headers=bearer(keys[Role.ADMIN]))
    with registry.engine.connect() as connection, pytest.raises(DatabaseError, match="append-only"):
        connection.execute(text(statement))
