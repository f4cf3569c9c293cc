"""What the collector could not store, and why: the dead letters of a time range, newest first."""

from __future__ import annotations

from collections import Counter
from typing import Annotated

from fastapi import APIRouter, Query, status
from pydantic import BaseModel, Field

from api.deps import NowMsDep, SettingsDep, StoreDep
from api.query import EndQuery, StartQuery, check_raw_rows, time_range
from api.timespec import iso
from citygw.wire import AGENT_ID_PATTERN, NAME_PATTERN
from collector.dead_letter import DEAD_LETTER, REASONS

router = APIRouter(prefix="/v1/dead-letters", tags=["dead letters"])

ReasonQuery = Annotated[
    str | None, Query(pattern=NAME_PATTERN, description=f"only this reason: {', '.join(REASONS)}")
]
LimitQuery = Annotated[int, Query(ge=1, le=1000, description="at most this many letters, newest first")]
AgentQuery = Annotated[
    str | None, Query(pattern=AGENT_ID_PATTERN, description="only this agent ('unknown': no valid topic)")
]


class DeadLetterPublic(BaseModel):
    ts: str = Field(description="when the collector received it, ISO 8601 UTC")
    ts_ms: int
    reason: str
    agent: str
    collector: str | None
    topic: str
    error: str
    payload: str = Field(description="its first 4096 bytes, as text")


class DeadLettersPublic(BaseModel):
    start: str
    start_ms: int
    end: str = Field(description="exclusive")
    end_ms: int
    counts: dict[str, int] = Field(description="dead letters in the range by reason (agent filter applied)")
    letters: list[DeadLetterPublic] = Field(description="newest first, at most limit")
    more: bool = Field(description="more letters match than the list holds: narrow the range")


@router.get(
    "",
    response_model=DeadLettersPublic,
    responses={status.HTTP_400_BAD_REQUEST: {"description": "the range is empty or holds too many"}},
)
def dead_letters(
    store: StoreDep,
    settings: SettingsDep,
    now_ms: NowMsDep,
    start: StartQuery = None,
    end: EndQuery = None,
    reason: ReasonQuery = None,
    agent: AgentQuery = None,
    limit: LimitQuery = 100,
) -> DeadLettersPublic:
    """Payloads and readings the collector refused (bad JSON or schema, another agent's id, a time
    out of range, too large, refused by the store), with the reason, the error and the payload."""
    span = time_range(start, end, now_ms=now_ms, settings=settings)
    check_raw_rows(store, DEAD_LETTER, span, None, None, settings.query_max_points)
    rows = store.range(measurement=DEAD_LETTER, start_ms=span.start_ms, end_ms=span.end_ms)
    if agent is not None:
        rows = [row for row in rows if row.tags.get("agent") == agent]
    counts = Counter(row.tags.get("reason", "") for row in rows)
    if reason is not None:
        rows = [row for row in rows if row.tags.get("reason") == reason]
    rows.sort(key=lambda row: row.ts_ms, reverse=True)
    return DeadLettersPublic(
        start=iso(span.start_ms),
        start_ms=span.start_ms,
        end=iso(span.end_ms),
        end_ms=span.end_ms,
        counts=dict(sorted(counts.items())),
        letters=[
            DeadLetterPublic(
                ts=iso(row.ts_ms),
                ts_ms=row.ts_ms,
                reason=row.tags.get("reason", ""),
                agent=row.tags.get("agent", ""),
                collector=row.tags.get("collector"),
                topic=str(row.values.get("topic", "")),
                error=str(row.values.get("error", "")),
                payload=str(row.values.get("payload", "")),
            )
            for row in rows[:limit]
        ],
        more=len(rows) > limit,
    )
