"""The audit log, for admins: newest first, filtered, paged with ``cursor`` (or ``before_id``)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from pydantic import BaseModel

from api.deps import SessionDep
from api.registry import audit
from api.registry.models import AuditEntry
from api.routes.paging import DEFAULT_LIMIT, ID_MAX, CursorQuery, LimitQuery, decode_cursor, trim
from api.security import AdminDep
from api.timespec import iso
from citygw.contract.wire import MAX_TS_MS

router = APIRouter(prefix="/v1/audit", tags=["audit"])

ACTION_PATTERN = r"^[a-z_]{1,32}\.[a-z_]{1,32}$"
TEXT = r"^[\x20-\x7e]{1,256}$"


class AuditEntryPublic(BaseModel):
    id: int
    ts: str
    ts_ms: int
    actor: str
    role: str
    action: str
    target: str
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    result: str
    detail: str | None

    @classmethod
    def of(cls, entry: AuditEntry) -> AuditEntryPublic:
        return cls(
            id=entry.id,
            ts=iso(entry.ts),
            ts_ms=entry.ts,
            actor=entry.actor,
            role=entry.role,
            action=entry.action,
            target=entry.target,
            before=entry.before,
            after=entry.after,
            result=entry.result,
            detail=entry.detail,
        )


@router.get("", response_model=list[AuditEntryPublic])
def audit_log(
    request: Request,
    response: Response,
    principal: AdminDep,
    session: SessionDep,
    action: Annotated[str | None, Query(pattern=ACTION_PATTERN, description="e.g. config.push")] = None,
    actor: Annotated[str | None, Query(pattern=TEXT)] = None,
    target: Annotated[str | None, Query(pattern=TEXT, description="e.g. agent:lviv-depot-1")] = None,
    since_ms: Annotated[int | None, Query(ge=0, le=MAX_TS_MS)] = None,
    before_id: Annotated[int | None, Query(ge=1, le=ID_MAX)] = None,
    limit: LimitQuery = DEFAULT_LIMIT,
    cursor: CursorQuery = None,
) -> list[AuditEntryPublic]:
    """Who changed what, when, with what result: newest first, a page at a time."""
    after = decode_cursor(cursor, (0,))
    if after is not None:
        before_id = min(int(after[0]), before_id or ID_MAX, ID_MAX)
    found = audit.entries(
        session,
        action=action,
        actor=actor,
        target=target,
        since_ms=since_ms,
        before_id=before_id,
        limit=limit + 1,
    )
    page = trim(found, lambda entry: (entry.id,), limit=limit, request=request, response=response)
    return [AuditEntryPublic.of(entry) for entry in page]
