"""The append-only audit log: every write, who made it, what it changed, and how it ended."""

from __future__ import annotations

from typing import Any, Literal, Protocol

from sqlalchemy import select
from sqlalchemy.orm import Session

from api.registry.models import AuditEntry

Result = Literal["ok", "refused", "failed"]


class Caller(Protocol):
    """Who made a change: an API principal (key or sign-on), the CLI, or a system task."""

    @property
    def actor(self) -> str: ...

    @property
    def role(self) -> str: ...


def record(
    session: Session,
    *,
    ts_ms: int,
    actor: str,
    role: str,
    action: str,
    target: str,
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
    result: Result = "ok",
    detail: str | None = None,
) -> AuditEntry:
    """Add one entry to ``session``; it is written with the change it describes, on commit."""
    entry = AuditEntry(
        ts=ts_ms,
        actor=actor,
        role=role,
        action=action,
        target=target,
        before=before,
        after=after,
        result=result,
        detail=detail,
    )
    session.add(entry)
    return entry


def commit(
    session: Session,
    *,
    by: Caller,
    ts_ms: int,
    action: str,
    target: str,
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
    result: Result = "ok",
    detail: str | None = None,
) -> AuditEntry:
    """Record ``by``'s change and commit it: the entry and the change it describes land together."""
    entry = record(
        session,
        ts_ms=ts_ms,
        actor=by.actor,
        role=str(by.role),
        action=action,
        target=target,
        before=before,
        after=after,
        result=result,
        detail=detail,
    )
    session.commit()
    return entry


def entries(
    session: Session,
    *,
    action: str | None = None,
    actor: str | None = None,
    target: str | None = None,
    since_ms: int | None = None,
    before_id: int | None = None,
    limit: int = 100,
) -> list[AuditEntry]:
    """The newest entries first, filtered; ``before_id`` pages back through older ones."""
    query = select(AuditEntry).order_by(AuditEntry.id.desc()).limit(limit)
    if action is not None:
        query = query.where(AuditEntry.action == action)
    if actor is not None:
        query = query.where(AuditEntry.actor == actor)
    if target is not None:
        query = query.where(AuditEntry.target == target)
    if since_ms is not None:
        query = query.where(AuditEntry.ts >= since_ms)
    if before_id is not None:
        query = query.where(AuditEntry.id < before_id)
    return list(session.scalars(query))
