"""A compact live summary: what each device reported last, and how long ago."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, Response
from pydantic import BaseModel, Field

from api.deps import NowMsDep, StoreDep
from api.routes.devices import device_key, newest_page
from api.routes.paging import DEFAULT_LIMIT, CursorQuery, LimitQuery, trim
from api.timespec import iso
from citygw.contract.wire import NAME_PATTERN
from collector.store.base import FieldValue

router = APIRouter(prefix="/v1/summary", tags=["summary"])


class DeviceSummaryPublic(BaseModel):
    device: str
    agent: str | None
    measurement: str
    last_seen: str = Field(description="ISO 8601 UTC")
    age_s: float = Field(description="seconds since the newest reading, at generated_at")
    field_count: int
    values: dict[str, FieldValue]


class SummaryPublic(BaseModel):
    generated_at: str
    devices: list[DeviceSummaryPublic]


@router.get("", response_model=SummaryPublic)
def summary(
    request: Request,
    response: Response,
    store: StoreDep,
    now_ms: NowMsDep,
    measurement: Annotated[
        str | None, Query(pattern=NAME_PATTERN, description="only this measurement")
    ] = None,
    limit: LimitQuery = DEFAULT_LIMIT,
    cursor: CursorQuery = None,
) -> SummaryPublic:
    """The newest values of every device and measurement, with their age; devices a page at a time."""
    devices = [
        DeviceSummaryPublic(
            device=point.tags["device"],
            agent=point.tags.get("agent"),
            measurement=point.measurement,
            last_seen=iso(point.ts_ms),
            age_s=(now_ms - point.ts_ms) / 1000,
            field_count=len(point.fields),
            values=dict(sorted(point.fields.items())),
        )
        for point in newest_page(store, limit=limit, cursor=cursor, measurement=measurement, agent=None)
    ]
    page = trim(devices, device_key, limit=limit, request=request, response=response)
    return SummaryPublic(generated_at=iso(now_ms), devices=page)
