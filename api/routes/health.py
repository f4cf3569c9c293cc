"""Liveness and store reachability, for load balancers and the demo."""

from __future__ import annotations

import logging
from typing import Literal

from fastapi import APIRouter, Response, status
from pydantic import BaseModel

from api.deps import NowMsDep, StoreDep
from collector.health import AGENT_HEALTH
from collector.store.base import StoreError

router = APIRouter(tags=["health"])
log = logging.getLogger(__name__)


class HealthPublic(BaseModel):
    status: Literal["ok", "degraded"]
    store: Literal["ok", "unavailable"]


@router.get(
    "/health",
    response_model=HealthPublic,
    responses={
        status.HTTP_503_SERVICE_UNAVAILABLE: {"model": HealthPublic, "description": "store unreachable"}
    },
)
def health(store: StoreDep, now_ms: NowMsDep, response: Response) -> HealthPublic:
    """Answers 200 when the store answers a cheap query, 503 when it does not."""
    try:
        # One measurement, only points from now on: an indexed look-up that returns (next to) nothing.
        store.latest(measurement=AGENT_HEALTH, since_ms=now_ms)
    except StoreError as exc:
        log.warning("health: store unavailable: %s", exc)
        response.status_code = status.HTTP_503_SERVICE_UNAVAILABLE
        return HealthPublic(status="degraded", store="unavailable")
    return HealthPublic(status="ok", store="ok")
