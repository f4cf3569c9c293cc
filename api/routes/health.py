"""Liveness and store reachability, for load balancers and the demo; and whether a timetable is loaded."""

from __future__ import annotations

import logging
import sqlite3
from typing import Literal

from fastapi import APIRouter, Request, Response, status
from pydantic import BaseModel

from api.deps import ContextDep, NowMsDep, StoreDep
from api.routes.transit import transit_service
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


def _timetable(request: Request, context: ContextDep) -> dict[str, str | None]:
    """The timetable part of the answer; a transit service that cannot start does not fail /health."""
    try:
        source = transit_service(request, context).source
    except (OSError, sqlite3.Error) as exc:
        log.warning("health: transit service unavailable: %s", exc)
        return {
            "timetable": "none",
            "timetable_version": None,
            "timetable_refused": f"transit unavailable: {exc}",
        }
    published, refusal = source.current(), source.last_refusal
    return {
        "timetable": "loaded" if published is not None else "none",
        "timetable_version": published.feed_version if published is not None else None,
        "timetable_refused": str(refusal) if refusal is not None else None,
    }


@router.get(
    "/health",
    response_model=HealthPublic,
    responses={
        status.HTTP_503_SERVICE_UNAVAILABLE: {"model": HealthPublic, "description": "store unreachable"}
    },
)
def health(
    request: Request, context: ContextDep, store: StoreDep, now_ms: NowMsDep, response: Response
) -> HealthPublic:
    """200 when the store answers a cheap query, 503 when it does not; the timetable in use, if any."""
    timetable = _timetable(request, context)
    try:
        # One measurement, only points from now on: an indexed look-up that returns (next to) nothing.
        store.latest(measurement=AGENT_HEALTH, since_ms=now_ms)
    except StoreError as exc:
        log.warning("health: store unavailable: %s", exc)
        response.status_code = status.HTTP_503_SERVICE_UNAVAILABLE
        return HealthPublic.model_validate({"status": "degraded", "store": "unavailable", **timetable})
    return HealthPublic.model_validate({"status": "ok", "store": "ok", **timetable})
