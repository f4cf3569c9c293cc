"""Releases and waves in the API: uploads checked against the pinned keys, downloads resumed by Range,
waves by percentage that keep their first agents as they grow, and what agents said, audited once."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi.testclient import TestClient

from api import create_app
from api.registry import Registry, audit, live, rollouts
from api.registry.models import Agent, Release
from api.security import Role
from api.settings import ApiSettings
from citygw.contract import release, wire
from collector.store.sqlite import SqliteStore
from tests.api.factories import NOW_MS, FakeClock, bearer

KEY = Ed25519PrivateKey.generate()
WHEEL = b"PK\x05\x06" + bytes(18) + b"pretend wheel bytes " * 500  # an empty zip's end record, padded


def _bundle(version: str, key: Ed25519PrivateKey = KEY, wheel: bytes = WHEEL) -> bytes:
    manifest = release.Manifest(
        version=version,
        wheel=f"citygw-{version}-py3-none-any.whl",
        sha256=hashlib.sha256(wheel).hexdigest(),
        size=len(wheel),
        created=NOW_MS,
        min_agent_version="0.1.0",
    )
    manifest_bytes, signature = release.sign(manifest, key)
    return release.Bundle(manifest_bytes, signature, wheel).encode()


@pytest.fixture
def admin(
    tmp_path: Path, store: SqliteStore, registry: Registry, keys: dict[Role, str], clock: FakeClock
) -> Iterator[TestClient]:
    settings = ApiSettings(
        registry_url=f"sqlite:///{tmp_path}/registry.sqlite",
        release_public_keys=(release.public_key_text(KEY.public_key()),),
    )
    with TestClient(create_app(store, settings=settings, clock=clock, registry=registry)) as client:
        client.headers.update(bearer(keys[Role.ADMIN]))
        yield client


def _upload(client: TestClient, bundle: bytes) -> tuple[int, dict[str, object]]:
    response = client.post(
        "/v1/releases", content=bundle, headers={"Content-Type": "application/octet-stream"}
    )
    return response.status_code, response.json()


def test_an_upload_signed_by_another_key_is_refused_and_audited(admin: TestClient) -> None:
    code, body = _upload(admin, _bundle("0.2.0", key=Ed25519PrivateKey.generate()))
    assert code == 422
    assert "bad signature" in str(body["detail"])
    [entry] = admin.get("/v1/audit", params={"action": "release.upload"}).json()
    assert (entry["result"], entry["target"]) == ("refused", "release:?")
    assert admin.get("/v1/releases").json() == []


def test_an_upload_is_kept_once_and_only_admins_may(admin: TestClient, keys: dict[Role, str]) -> None:
    code, body = _upload(admin, _bundle("0.2.0"))
    assert code == 201, body
    assert (body["version"], body["size"]) == ("0.2.0", len(WHEEL))
    assert _upload(admin, _bundle("0.2.0"))[0] == 409
    engineer = admin.post("/v1/releases", content=_bundle("0.2.1"), headers=bearer(keys[Role.ENGINEER]))
    assert engineer.status_code == 403
    [entry] = admin.get("/v1/audit", params={"action": "release.upload"}).json()
    assert (entry["result"], entry["after"]["version"]) == ("ok", "0.2.0")


def test_a_wheel_is_served_to_a_waves_token_only_and_resumes_by_range(
    admin: TestClient, registry: Registry
) -> None:
    assert _upload(admin, _bundle("0.2.0"))[0] == 201
    with registry.session() as session:
        session.add(Agent(id="cab-1", site="depot", lines=[], created_at=NOW_MS))
        found = session.get(Release, "0.2.0")
        assert found is not None
        agents, _ = rollouts.select_agents(session, "0.2.0", rollouts.Wave(agents=("cab-1",)))
        token = rollouts.create(
            session, found, agents, rollouts.Wave(agents=("cab-1",)), by="t", now_ms=0
        ).token
        session.commit()
    admin.headers.pop("Authorization")
    path = "/v1/releases/0.2.0/wheel"
    assert admin.get(path, params={"token": "guessed"}).status_code == 403
    whole = admin.get(path, params={"token": token})
    assert (whole.status_code, whole.content) == (200, WHEEL)
    rest = admin.get(path, params={"token": token}, headers={"Range": "bytes=1000-"})
    assert rest.status_code == 206
    assert rest.headers["Content-Range"] == f"bytes 1000-{len(WHEEL) - 1}/{len(WHEEL)}"
    assert WHEEL[:1000] + rest.content == WHEEL
    past = admin.get(path, params={"token": token}, headers={"Range": f"bytes={len(WHEEL)}-"})
    assert past.status_code == 416


def test_a_percentage_wave_keeps_its_agents_as_it_grows_and_skips_those_on_the_version(
    registry: Registry,
) -> None:
    with registry.session() as session:
        for n in range(40):
            site = "north" if n % 2 else "south"
            session.add(Agent(id=f"cab-{n:02d}", site=site, lines=[], created_at=NOW_MS, version="0.1.0"))
        session.commit()
        tenth, _ = rollouts.select_agents(session, "0.2.0", rollouts.Wave(percent=10))
        half, _ = rollouts.select_agents(session, "0.2.0", rollouts.Wave(percent=50))
        assert len(tenth) == 4
        assert len(half) == 20
        assert {a.id for a in tenth} <= {a.id for a in half}
        other, _ = rollouts.select_agents(session, "0.3.0", rollouts.Wave(percent=10))
        assert {a.id for a in other} != {a.id for a in tenth}  # not always the same first agents
        north, _ = rollouts.select_agents(session, "0.2.0", rollouts.Wave(site="north"))
        assert len(north) == 20
        assert {a.site for a in north} == {"north"}
        for agent in tenth:
            agent.version = "0.2.0"
        again, skipped = rollouts.select_agents(session, "0.2.0", rollouts.Wave(percent=50))
        assert sorted(skipped) == sorted(a.id for a in tenth)
        assert {a.id for a in again} == {a.id for a in half} - set(skipped)


def test_an_agents_word_is_recorded_and_audited_once(registry: Registry) -> None:
    said = wire.UpdateState(
        agent="cab-1",
        rollout=3,
        version="0.2.0",
        state=wire.UpdateOutcome.APPLIED,
        ts=NOW_MS,
        running="0.2.0",
    )
    with registry.session() as session:
        assert live.apply_update_state(session, said, now_ms=NOW_MS)
        assert not live.apply_update_state(session, said, now_ms=NOW_MS + 1)  # retained, heard again
        older = said.model_copy(update={"rollout": 2, "state": wire.UpdateOutcome.REFUSED})
        assert not live.apply_update_state(session, older, now_ms=NOW_MS + 2)
        session.commit()
        agent = session.get(Agent, "cab-1")
        assert agent is not None
        assert (agent.version, agent.update_rollout, agent.update_state) == ("0.2.0", 3, "applied")
        entries = audit.entries(session, action="update.result")
        assert [(e.actor, e.result, e.after) for e in entries] == [
            ("agent:cab-1", "ok", {"rollout": 3, "version": "0.2.0", "state": "applied"})
        ]
