"""Publish, journal and health settings in the registry: checked as the agent checks them, audited,
and carried by the next config push."""

from __future__ import annotations

from fastapi.testclient import TestClient

from api.registry import Registry
from api.registry.fleet import desired_config
from api.registry.models import Agent
from api.security import Role
from tests.api.factories import ENGINEER_SITE, NOW_MS, bearer

LINES = [{"kind": "tcp", "id": "cabinet", "host": "10.20.0.15", "port": 502}]


def _engineer(anonymous: TestClient, keys: dict[Role, str]) -> TestClient:
    anonymous.headers.update(bearer(keys[Role.ENGINEER]))
    created = anonymous.post("/v1/agents", json={"id": "cab-9", "site": ENGINEER_SITE, "lines": LINES})
    assert created.status_code == 201, created.text
    return anonymous


def test_settings_are_checked_kept_audited_and_pushed(
    anonymous: TestClient, keys: dict[Role, str], registry: Registry
) -> None:
    client = _engineer(anonymous, keys)
    settings = {"publish": {"interval": 2.0}, "journal": {"quota_mb": 50, "on_full": "stop_slow"}}
    answer = client.put("/v1/agents/cab-9/settings", json=settings)
    assert answer.status_code == 200, answer.text
    assert answer.json()["settings"] == settings
    with registry.session() as session:
        agent = session.get(Agent, "cab-9")
        assert agent is not None
        desired = desired_config(session, agent, version=1, now_ms=NOW_MS)
    assert (desired.publish, desired.journal, desired.health) == (
        settings["publish"],
        settings["journal"],
        None,
    )
    audit = client.get("/v1/audit", params={"action": "agent.settings"}, headers=bearer(keys[Role.ADMIN]))
    [entry] = audit.json()
    assert (entry["result"], entry["after"]) == ("ok", settings)


def test_settings_the_agent_would_refuse_are_refused_naming_each_field(
    anonymous: TestClient, keys: dict[Role, str]
) -> None:
    client = _engineer(anonymous, keys)
    bad = client.put("/v1/agents/cab-9/settings", json={"publish": {"interval": -1}, "health": {"every": 5}})
    assert bad.status_code == 422
    fields = {p["field"] for p in bad.json()["detail"]["problems"]}
    assert fields == {"publish.interval", "health.every"}
    moved = client.put("/v1/agents/cab-9/settings", json={"journal": {"path": "/elsewhere.sqlite"}})
    assert moved.status_code == 422
    assert moved.json()["detail"]["problems"][0]["field"] == "journal.path"
    assert client.get("/v1/agents/cab-9").json()["settings"] == {}
