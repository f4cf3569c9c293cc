"""API keys, for admins: create (the token is shown once), list, revoke. Every change is audited."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Path, status
from pydantic import BaseModel, ConfigDict, Field

from api.deps import NowMsDep, SessionDep
from api.registry.keys import UnknownKey, create_key, list_keys, revoke_key
from api.registry.models import ApiKey
from api.security import KEY_ID_PATTERN, AdminDep, Role
from api.timespec import iso
from citygw.contract.wire import LABEL_PATTERN, Label

router = APIRouter(prefix="/v1/keys", tags=["keys"])


class KeyCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=LABEL_PATTERN, description="who holds it, e.g. 'Lvivvodokanal SCADA'")
    role: Role
    sites: list[Label] = Field(
        default_factory=list, max_length=256, description="sites an engineer may manage"
    )
    expires_in_days: int | None = Field(default=None, ge=1, le=3660)


class KeyPublic(BaseModel):
    id: str
    name: str
    role: str
    sites: list[str]
    created_at: str
    created_by: str
    expires_at: str | None
    revoked_at: str | None

    @classmethod
    def of(cls, key: ApiKey) -> KeyPublic:
        return cls(
            id=key.id,
            name=key.name,
            role=key.role,
            sites=list(key.sites),
            created_at=iso(key.created_at),
            created_by=key.created_by,
            expires_at=iso(key.expires_at) if key.expires_at is not None else None,
            revoked_at=iso(key.revoked_at) if key.revoked_at is not None else None,
        )


class KeyCreated(KeyPublic):
    token: str = Field(description="the bearer token; shown only now, only its hash is kept")


@router.get("", response_model=list[KeyPublic])
def keys(principal: AdminDep, session: SessionDep, include_revoked: bool = False) -> list[KeyPublic]:
    """Every key (without secrets), oldest first."""
    return [KeyPublic.of(key) for key in list_keys(session, include_revoked=include_revoked)]


@router.post("", response_model=KeyCreated, status_code=status.HTTP_201_CREATED)
def new_key(body: KeyCreate, principal: AdminDep, session: SessionDep, now_ms: NowMsDep) -> KeyCreated:
    """A new key; its token is in this answer only."""
    expires_at = now_ms + body.expires_in_days * 86_400_000 if body.expires_in_days else None
    try:
        key, token = create_key(
            session,
            name=body.name,
            role=body.role,
            sites=body.sites,
            expires_at=expires_at,
            now_ms=now_ms,
            actor=principal.actor,
            actor_role=principal.role.value,
        )
    except ValueError as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(exc)) from None
    session.commit()
    return KeyCreated(**KeyPublic.of(key).model_dump(), token=token)


@router.delete("/{key_id}", response_model=KeyPublic)
def revoke(
    key_id: Annotated[str, Path(pattern=KEY_ID_PATTERN)],
    principal: AdminDep,
    session: SessionDep,
    now_ms: NowMsDep,
) -> KeyPublic:
    """Revoke a key: it stops working at once (it stays listed with include_revoked)."""
    try:
        key = revoke_key(
            session, key_id, now_ms=now_ms, actor=principal.actor, actor_role=principal.role.value
        )
    except UnknownKey as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from None
    session.commit()
    return KeyPublic.of(key)
