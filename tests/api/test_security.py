"""Bearer API keys: hashing, parsing, and what the dependencies answer for each kind of caller."""

from __future__ import annotations

import base64
import hashlib
import os
from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient

from api.registry import Registry
from api.registry.keys import create_key, revoke_key
from api.registry.models import ApiKey
from api.security import Role, format_api_key, hash_secret, parse_api_key, verify_secret
from tests.api.factories import NOW_MS, FakeClock, bearer, on_every_registry


def scrypt_hash(secret: str) -> str:
    """A key's hash as CityGW stored it before SHA-256: ``scrypt$N$r$p$salt$digest``, fresh salt."""
    salt = os.urandom(16)
    digest = hashlib.scrypt(secret.encode(), salt=salt, n=2**14, r=8, p=1, dklen=32)
    b64 = [base64.urlsafe_b64encode(part).decode().rstrip("=") for part in (salt, digest)]
    return f"scrypt$16384$8$1${b64[0]}${b64[1]}"


@pytest.fixture
def slow_hashes(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """The secrets hashlib.scrypt is asked to hash from now on (it still computes)."""
    hashed: list[bytes] = []
    scrypt: Callable[..., bytes] = hashlib.scrypt

    def spy(password: bytes, **kwargs: Any) -> bytes:
        hashed.append(password)
        return scrypt(password, **kwargs)

    monkeypatch.setattr(hashlib, "scrypt", spy)
    return hashed


def test_a_secret_verifies_only_against_its_own_hash() -> None:
    stored = hash_secret("s3cret-s3cret-s3cret")
    digest = base64.urlsafe_b64encode(hashlib.sha256(b"s3cret-s3cret-s3cret").digest()).decode()
    assert stored == "sha256$" + digest.rstrip("=")
    assert verify_secret("s3cret-s3cret-s3cret", stored)
    assert not verify_secret("s3cret-s3cret-s3creT", stored)
    legacy = scrypt_hash("s3cret-s3cret-s3cret")
    assert verify_secret("s3cret-s3cret-s3cret", legacy)
    assert not verify_secret("s3cret-s3cret-s3creT", legacy)
    assert not verify_secret("s3cret-s3cret-s3cret", "md5$abc")
    assert not verify_secret("s3cret-s3cret-s3cret", "sha256$not base64!")
    assert not verify_secret("s3cret-s3cret-s3cret", "garbage")


@pytest.mark.parametrize(
    ("token", "parsed"),
    [
        (format_api_key("0123456789ab", "A" * 43), ("0123456789ab", "A" * 43)),
        ("cgw_0123456789ab." + "x" * 19, None),
        ("cgw_0123456789AB." + "x" * 43, None),
        ("cgw_0123456789ab." + "x" * 42 + "'", None),
        ("0123456789ab." + "x" * 43, None),
        ("", None),
    ],
)
def test_tokens_are_parsed_strictly(token: str, parsed: tuple[str, str] | None) -> None:
    assert parse_api_key(token) == parsed


def test_no_key_is_401_with_a_bearer_challenge(anonymous: TestClient) -> None:
    response = anonymous.get("/v1/summary")
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert "API key" in response.json()["detail"]


@pytest.mark.parametrize(
    "authorization",
    [
        "Bearer nonsense",
        "Bearer cgw_0123456789ab." + "x" * 43,  # well-formed, unknown id
        "Bearer cgw_0123456789ab.' OR 1=1 --",
    ],
)
def test_bad_keys_are_401(anonymous: TestClient, authorization: str) -> None:
    response = anonymous.get("/v1/summary", headers={"Authorization": authorization})
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Bearer")


@on_every_registry
def test_a_right_id_with_a_wrong_secret_is_401(anonymous: TestClient, keys: dict[Role, str]) -> None:
    key_id, _ = parse_api_key(keys[Role.UTILITY]) or ("", "")
    assert anonymous.get("/v1/summary", headers=bearer(keys[Role.UTILITY])).status_code == 200
    # The verified-token cache must not accept another secret for the same id.
    wrong = format_api_key(key_id, "y" * 43)
    assert anonymous.get("/v1/summary", headers=bearer(wrong)).status_code == 401


@on_every_registry
def test_a_wrong_secret_or_an_unknown_id_is_401_and_costs_no_slow_hash(
    anonymous: TestClient, keys: dict[Role, str], slow_hashes: list[bytes]
) -> None:
    key_id, _ = parse_api_key(keys[Role.UTILITY]) or ("", "")
    unknown = format_api_key("000000000000", "A" * 20)
    for token in (format_api_key(key_id, "y" * 43), unknown, unknown):
        response = anonymous.get("/v1/summary", headers=bearer(token))
        assert response.status_code == 401
        assert response.json()["detail"] == "unknown or wrong API key"
    assert anonymous.get("/v1/summary", headers=bearer(keys[Role.UTILITY])).status_code == 200
    assert slow_hashes == []


@on_every_registry
def test_a_key_hashed_with_scrypt_before_still_works_and_its_hash_is_upgraded(
    anonymous: TestClient, registry: Registry, slow_hashes: list[bytes]
) -> None:
    with registry.session() as session:
        key, token = create_key(
            session, name="old key", role=Role.UTILITY, now_ms=NOW_MS, actor="tests", actor_role="admin"
        )
        _, secret = parse_api_key(token) or ("", "")
        key.secret_hash = scrypt_hash(secret)
        session.commit()
    slow_hashes.clear()
    assert anonymous.get("/v1/summary", headers=bearer(token)).status_code == 200
    assert slow_hashes == [secret.encode()]  # checked once with scrypt...
    with registry.session() as session:
        stored = session.get(ApiKey, key.id)
        assert stored is not None
        assert stored.secret_hash == hash_secret(secret)  # ...and stored as SHA-256 from then on
    assert anonymous.get("/v1/summary", headers=bearer(token)).status_code == 200
    wrong = format_api_key(key.id, "y" * 43)
    assert anonymous.get("/v1/summary", headers=bearer(wrong)).status_code == 401
    assert slow_hashes == [secret.encode()]


@on_every_registry
def test_a_revoked_key_stops_working_at_once(
    anonymous: TestClient, registry: Registry, keys: dict[Role, str]
) -> None:
    headers = bearer(keys[Role.UTILITY])
    assert anonymous.get("/v1/summary", headers=headers).status_code == 200
    key_id, _ = parse_api_key(keys[Role.UTILITY]) or ("", "")
    with registry.session() as session:
        revoke_key(session, key_id, now_ms=NOW_MS, actor="tests", actor_role="admin")
        session.commit()
    response = anonymous.get("/v1/summary", headers=headers)
    assert response.status_code == 401
    assert response.json()["detail"] == "this API key was revoked"


@on_every_registry
def test_an_expired_key_is_401(anonymous: TestClient, registry: Registry, clock: FakeClock) -> None:
    with registry.session() as session:
        _, token = create_key(
            session,
            name="contractor",
            role=Role.UTILITY,
            expires_at=NOW_MS + 1000,
            now_ms=NOW_MS,
            actor="tests",
            actor_role="admin",
        )
        session.commit()
    assert anonymous.get("/v1/summary", headers=bearer(token)).status_code == 200
    clock.now_ms = NOW_MS + 1000
    assert anonymous.get("/v1/summary", headers=bearer(token)).status_code == 401


@on_every_registry
def test_only_the_hash_is_stored(registry: Registry) -> None:
    with registry.session() as session:
        key, token = create_key(
            session, name="utility", role=Role.UTILITY, now_ms=NOW_MS, actor="tests", actor_role="admin"
        )
        session.commit()
        stored = session.get(ApiKey, key.id)
        assert stored is not None
        _, secret = parse_api_key(token) or ("", "")
        assert secret not in stored.secret_hash
        assert verify_secret(secret, stored.secret_hash)


@on_every_registry
@pytest.mark.parametrize(
    ("role", "sites", "message"),
    [
        (Role.PUBLIC, (), "pointless"),
        (Role.UTILITY, ("lviv-depot",), "engineers only"),
    ],
)
def test_keys_that_make_no_sense_are_refused(
    registry: Registry, role: Role, sites: tuple[str, ...], message: str
) -> None:
    with registry.session() as session, pytest.raises(ValueError, match=message):
        create_key(
            session, name="x", role=role, sites=sites, now_ms=NOW_MS, actor="tests", actor_role="admin"
        )
