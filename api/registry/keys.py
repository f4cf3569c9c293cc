"""API keys in the registry: create (the secret is shown once), list, revoke, find by id."""

from __future__ import annotations

import secrets
from collections.abc import Iterable

from sqlalchemy import select
from sqlalchemy.orm import Session

from api.registry import audit
from api.registry.models import ApiKey
from api.security import Role, format_api_key, hash_secret

KEY_ID_BYTES = 6


class UnknownKey(LookupError):
    """No such key."""


def key_public(key: ApiKey) -> dict[str, object]:
    """What the audit log and listings show of a key: never its hash."""
    return {
        "id": key.id,
        "name": key.name,
        "role": key.role,
        "sites": list(key.sites),
        "expires_at": key.expires_at,
        "revoked_at": key.revoked_at,
    }


def create_key(
    session: Session,
    *,
    name: str,
    role: Role,
    sites: Iterable[str] = (),
    expires_at: int | None = None,
    now_ms: int,
    actor: str,
    actor_role: str,
) -> tuple[ApiKey, str]:
    """A new key and its bearer token (``cgw_<id>.<secret>``), audited; the caller commits."""
    if role is Role.PUBLIC:
        raise ValueError("a key for the public role is pointless: public endpoints need no key")
    site_list = sorted(set(sites))
    if site_list and role is not Role.ENGINEER:
        raise ValueError(f"sites are granted to engineers only, not to {role.value}")
    key_id = secrets.token_hex(KEY_ID_BYTES)
    secret = secrets.token_urlsafe(32)
    key = ApiKey(
        id=key_id,
        name=name,
        role=role.value,
        sites=site_list,
        secret_hash=hash_secret(secret),
        created_at=now_ms,
        created_by=actor,
        expires_at=expires_at,
        revoked_at=None,
    )
    session.add(key)
    audit.record(
        session,
        ts_ms=now_ms,
        actor=actor,
        role=actor_role,
        action="key.create",
        target=f"key:{key_id}",
        after=key_public(key),
    )
    return key, format_api_key(key_id, secret)


def list_keys(session: Session, *, include_revoked: bool = False) -> list[ApiKey]:
    query = select(ApiKey).order_by(ApiKey.created_at, ApiKey.id)
    if not include_revoked:
        query = query.where(ApiKey.revoked_at.is_(None))
    return list(session.scalars(query))


def find_key(session: Session, key_id: str) -> ApiKey | None:
    return session.get(ApiKey, key_id)


def revoke_key(session: Session, key_id: str, *, now_ms: int, actor: str, actor_role: str) -> ApiKey:
    """Mark a key revoked (it stops working at once), audited; the caller commits."""
    key = session.get(ApiKey, key_id)
    if key is None:
        raise UnknownKey(f"no API key {key_id!r}")
    before = key_public(key)
    if key.revoked_at is None:
        key.revoked_at = now_ms
    audit.record(
        session,
        ts_ms=now_ms,
        actor=actor,
        role=actor_role,
        action="key.revoke",
        target=f"key:{key_id}",
        before=before,
        after=key_public(key),
    )
    return key
