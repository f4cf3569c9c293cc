"""Liveness and store reachability, for load balancers and the demo; and whether a timetable is loaded."""

from __future__ import annotations

import logging
from typing import Literal

from fastapi import APIRouter, Response, status
from pydantic import BaseModel

from api.deps import NowMsDep, StoreDep
from api.routes.transit import TransitDep
from collector.health import AGENT_HEALTH
from collector.store.base import StoreError

router = APIRouter(tags=["health"])
log = logging.getLogger(__name__)


class HealthPublic(BaseModel):
    status: Literal["ok", "degraded"]
    store: Literal["ok", "unavailable"]
    # Without a static GTFS the transit feeds carry positions only (no trips, no TripUpdates).
    timetable: Literal["loaded", "none"]
    timetable_version: str | None = None
    timetable_refused: str | None = None  # why the zip on disk is not in use, if it is not


@router.get(
    "/health",
    response_model=HealthPublic,
    responses={
        status.HTTP_503_SERVICE_UNAVAILABLE: {"model": HealthPublic, "description": "store unreachable"}
    },
)
def health(store: StoreDep, transit: TransitDep, now_ms: NowMsDep, response: Response) -> HealthPublic:
    """200 when the store answers a cheap query, 503 when it does not; the timetable in use, if any."""
    published = transit.source.current()
    refusal = transit.source.last_refusal
    timetable = {
        "timetable": "loaded" if published is not None else "none",
        "timetable_version": published.feed_version if published is not None else None,
        "timetable_refused": str(refusal) if refusal is not None else None,
    }
    try:
        # One measurement, only points from now on: an indexed look-up that returns (next to) nothing.
        store.latest(measurement=AGENT_HEALTH, since_ms=now_ms)
    except StoreError as exc:
        log.warning("health: store unavailable: %s", exc)
        response.status_code = status.HTTP_503_SERVICE_UNAVAILABLE
        return HealthPublic.model_validate({"status": "degraded", "store": "unavailable", **timetable})
    return HealthPublic.model_validate({"status": "ok", "store": "ok", **timetable})
