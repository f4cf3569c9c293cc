"""Alerts raised by the rules: active and ended, for utilities and engineers; engineers acknowledge them."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Path, Query, Request, Response, status
from pydantic import BaseModel, Field
from sqlalchemy import select

from api.alerts.rules import Rule
from api.deps import NowMsDep, SessionDep
from api.registry import audit
from api.registry.models import Alert
from api.routes.paging import DEFAULT_LIMIT, ID_MAX, CursorQuery, LimitQuery, decode_cursor, trim
from api.security import EngineerDep, Role, UtilityDep, ensure_site
from api.timespec import iso

router = APIRouter(prefix="/v1/alerts", tags=["alerts"])
AlertPath = Annotated[int, Path(ge=1, le=ID_MAX, description="alert id")]


class AlertPublic(BaseModel):
    id: int
    rule: Rule
    subject: str = Field(description="device, device:lamp, or agent id")
    state: Literal["active", "ended"]
    site: str | None
    district: str | None
    detail: str
    data: dict[str, Any]
    started_at: str
    ended_at: str | None
    acknowledged_at: str | None
    acknowledged_by: str | None

    @classmethod
    def of(cls, alert: Alert) -> AlertPublic:
        return cls(
            id=alert.id,
            rule=Rule(alert.rule),
            subject=alert.subject,
            state="ended" if alert.state == "ended" else "active",
            site=alert.site,
            district=alert.district,
            detail=alert.detail,
            data=alert.data,
            started_at=iso(alert.started_at),
            ended_at=iso(alert.ended_at) if alert.ended_at is not None else None,
            acknowledged_at=iso(alert.acknowledged_at) if alert.acknowledged_at is not None else None,
            acknowledged_by=alert.acknowledged_by,
        )


def _alert(session: SessionDep, alert_id: int) -> Alert:
    alert = session.get(Alert, alert_id)
    if alert is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no alert {alert_id}")
    return alert


@router.get("", response_model=list[AlertPublic])
def list_alerts(
    request: Request,
    response: Response,
    _principal: UtilityDep,
    session: SessionDep,
    state: Annotated[Literal["active", "ended", "all"], Query(description="default active")] = "active",
    rule: Annotated[Rule | None, Query(description="only this rule")] = None,
    limit: LimitQuery = DEFAULT_LIMIT,
    cursor: CursorQuery = None,
    before_id: Annotated[int | None, Query(ge=1, le=ID_MAX, description="page back from this id")] = None,
) -> list[AlertPublic]:
    """Alerts, newest first, a page at a time."""
    query = select(Alert).order_by(Alert.id.desc()).limit(limit + 1)
    after = decode_cursor(cursor, (0,))
    if after is not None:
        query = query.where(Alert.id < min(int(after[0]), ID_MAX))
    if state != "all":
        query = query.where(Alert.state == state)
    if rule is not None:
        query = query.where(Alert.rule == rule.value)
    if before_id is not None:
        query = query.where(Alert.id < before_id)
    found = list(session.scalars(query))
    return [
        AlertPublic.of(alert)
        for alert in trim(found, lambda alert: (alert.id,), limit=limit, request=request, response=response)
    ]


@router.get("/{alert_id}", response_model=AlertPublic, responses={404: {"description": "no such alert"}})
def get_alert(_principal: UtilityDep, session: SessionDep, alert_id: AlertPath) -> AlertPublic:
    return AlertPublic.of(_alert(session, alert_id))


@router.post(
    "/{alert_id}/acknowledge",
    response_model=AlertPublic,
    responses={404: {"description": "no such alert"}, 403: {"description": "its site is not granted"}},
)
def acknowledge_alert(
    principal: EngineerDep, session: SessionDep, now_ms: NowMsDep, alert_id: AlertPath
) -> AlertPublic:
    """Someone is on it: recorded on the alert and in the audit log (acknowledging twice changes nothing)."""
    alert = _alert(session, alert_id)
    if alert.site:
        ensure_site(principal, alert.site)
    elif principal.role is not Role.ADMIN:
        raise HTTPException(status.HTTP_403_FORBIDDEN, "an alert without a site is acknowledged by admins")
    if alert.acknowledged_at is None:
        alert.acknowledged_at, alert.acknowledged_by = now_ms, principal.actor
        audit.commit(
            session,
            by=principal,
            ts_ms=now_ms,
            action="alert.acknowledge",
            target=f"{alert.rule}:{alert.subject}",
            before={"acknowledged_by": None},
            after={"acknowledged_by": principal.actor},
        )
    return AlertPublic.of(alert)
