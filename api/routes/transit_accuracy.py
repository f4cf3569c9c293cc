"""How right the transit feed's arrival predictions turned out, per TransitApp time bucket.

Public and rate limited, like the feeds: riders' apps and journey planners weigh the feed's ETAs by
it, and it names no person, device or vehicle. Read from the ``transit_accuracy`` points the API's
recorder writes (api/transit/accuracy_watch.py), summed by the store, so every replica answers alike.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response
from pydantic import BaseModel, Field

from api.deps import NowMsDep, StoreDep
from api.transit.accuracy import MEASUREMENT, overall, tally_rows
from collector.store.base import Aggregate

router = APIRouter(prefix="/v1/transit", tags=["transit"])
MAX_HOURS = 31 * 24
CACHE_MAX_AGE_S = 60


class BucketAccuracy(BaseModel):
    bucket: str = Field(description="minutes from sampling the prediction to the real arrival, e.g. 0-3")
    from_s: int = Field(description="the bucket's start, included (s)")
    to_s: int = Field(description="the bucket's end, not included (s)")
    early_s: int = Field(description="how much earlier than predicted the bus may come and count as accurate")
    late_s: int = Field(description="how much later than predicted the bus may come and count as accurate")
    predictions: int = Field(description="predictions scored")
    accurate: int = Field(description="of them, the real arrival within the window")
    share: float | None = Field(description="accurate / predictions; null without predictions")


class TransitAccuracy(BaseModel):
    since_ms: int
    until_ms: int
    buckets: list[BucketAccuracy]
    overall: float | None = Field(
        description="mean of the four buckets' shares (the ETA Accuracy Benchmark's single figure);"
        " null unless every bucket has predictions"
    )


@router.get("/accuracy")
def accuracy(
    store: StoreDep,
    now_ms: NowMsDep,
    response: Response,
    hours: Annotated[int, Query(ge=1, le=MAX_HOURS, description="how far back, in hours")] = 24,
) -> TransitAccuracy:
    """Share of arrival predictions within TransitApp's windows, per bucket, over the last ``hours``."""
    since_ms = now_ms - hours * 3_600_000
    rows = store.range(
        measurement=MEASUREMENT,
        start_ms=since_ms,
        end_ms=now_ms + 1,
        window_s=hours * 3600,
        aggregate=Aggregate.SUM,
    )
    tallies = tally_rows(rows)
    response.headers["Cache-Control"] = f"public, max-age={CACHE_MAX_AGE_S}"
    return TransitAccuracy(
        since_ms=since_ms,
        until_ms=now_ms,
        buckets=[
            BucketAccuracy(
                bucket=t.window.bucket,
                from_s=t.window.start_s,
                to_s=t.window.end_s,
                early_s=t.window.early_s,
                late_s=t.window.late_s,
                predictions=t.predictions,
                accurate=t.accurate,
                share=None if t.share is None else round(t.share, 4),
            )
            for t in tallies
        ],
        overall=None if (figure := overall(tallies)) is None else round(figure, 4),
    )
