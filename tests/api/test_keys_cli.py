"""citygw keys create|list|revoke against a registry file, and the key working (then not) in the API."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from api.registry import Registry, open_registry
from api.registry.audit import entries
from api.security import Role
from citygw.cli import KEY_ROLES, main
from tests.api.factories import bearer, on_every_registry


@on_every_registry
def test_create_list_revoke(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], anonymous: TestClient, registry: Registry
) -> None:
    url = str(registry.engine.url)
    assert main(["keys", "create", "--name", "Lvivvodokanal", "--role", "utility", "--registry", url]) == 0
    token = capsys.readouterr().out.splitlines()[-1]
    assert token.startswith("cgw_")
    assert anonymous.get("/v1/summary", headers=bearer(token)).status_code == 200

    assert main(["keys", "list", "--registry", url]) == 0
    listing = capsys.readouterr().out
    key_id = token[4:16]
    assert key_id in listing
    assert "utility" in listing
    assert token[17:] not in listing

    assert main(["keys", "revoke", key_id, "--registry", url]) == 0
    assert capsys.readouterr().out == f"revoked key {key_id}\n"
    assert anonymous.get("/v1/summary", headers=bearer(token)).status_code == 401
    assert main(["keys", "list", "--registry", url]) == 0
    assert key_id not in capsys.readouterr().out

    with registry.session() as session:
        actions = [(e.action, e.actor.split(":")[0], e.result) for e in entries(session)]
    # The revoked key's refused request is audited too (api.refusals).
    assert actions == [
        ("access.refused", "key", "refused"),
        ("key.revoke", "cli", "ok"),
        ("key.create", "cli", "ok"),
    ]


def test_a_transit_key_replaces_the_gtfs_and_reads_no_telemetry(
    capsys: pytest.CaptureFixture[str], anonymous: TestClient, registry: Registry
) -> None:
    url = str(registry.engine.url)
    assert main(["keys", "create", "--name", "Lvivelektrotrans", "--role", "transit", "--registry", url]) == 0
    token = capsys.readouterr().out.splitlines()[-1]
    assert anonymous.get("/v1/summary", headers=bearer(token)).status_code == 403
    upload = anonymous.put("/v1/transit/gtfs.zip", content=b"not a zip", headers=bearer(token))
    assert upload.status_code == 422  # let in; the zip itself is refused
    site = ["keys", "create", "--name", "x", "--role", "transit", "--site", "lviv-depot", "--registry", url]
    assert main(site) == 2  # a transit key is city-wide: no sites
    assert "sites are granted to engineers only" in capsys.readouterr().err


def test_the_cli_offers_every_role_a_key_can_have() -> None:
    assert set(KEY_ROLES) == {role.value for role in Role} - {Role.PUBLIC.value}


@pytest.mark.parametrize(
    "argv",
    [
        ["keys", "create", "--name", "x", "--role", "utility", "--site", "lviv-depot"],
        ["keys", "revoke", "0123456789ab"],
    ],
)
def test_mistakes_exit_2_with_the_reason(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    url = f"sqlite:///{tmp_path}/registry.sqlite"
    assert main([*argv, "--registry", url]) == 2
    assert "citygw:" in capsys.readouterr().err
    open_registry(url).close()
