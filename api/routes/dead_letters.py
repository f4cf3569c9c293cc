"""What the collector could not store, and why: the dead letters of a time range, newest first.

The store counts them by reason and returns only the ``limit`` newest (``newest``, ``count_by_tag``):
a flood of junk costs two small queries, never a read of every letter in the range.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, status
from pydantic import BaseModel, Field

from api.deps import NowMsDep, SettingsDep, StoreDep
from api.query import EndQuery, StartQuery, time_range
from api.timespec import iso
from citygw.contract.wire import AGENT_ID_PATTERN, NAME_PATTERN
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
    responses={status.HTTP_400_BAD_REQUEST: {"description": "the range is empty"}},
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
    by_agent = {"agent": agent} if agent is not None else {}
    # Counted and cut by the store: 100 000 junk messages cost two small queries, not a full read.
    counts = store.count_by_tag(
        measurement=DEAD_LETTER, start_ms=span.start_ms, end_ms=span.end_ms, tag="reason", tags=by_agent
    )
    wanted = by_agent | ({"reason": reason} if reason is not None else {})
    rows = store.newest(
        measurement=DEAD_LETTER, start_ms=span.start_ms, end_ms=span.end_ms, limit=limit + 1, tags=wanted
    )
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
