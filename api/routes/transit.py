"""GTFS-realtime feeds for residents' apps: public, cacheable, protobuf or JSON."""

from __future__ import annotations

import hashlib
import json
from enum import StrEnum
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Response, status
from google.protobuf import json_format

from api.deps import ContextDep, NowMsDep
from api.transit.vehicle_positions import MEASUREMENT

router = APIRouter(prefix="/v1/transit", tags=["transit"])

PROTOBUF_MEDIA_TYPE = "application/x-protobuf"


class FeedFormat(StrEnum):
    PB = "pb"
    JSON = "json"


_FEED_RESPONSES: dict[int | str, dict[str, Any]] = {
    status.HTTP_200_OK: {
        "description": "a GTFS-realtime FeedMessage (FULL_DATASET)",
        "content": {
            PROTOBUF_MEDIA_TYPE: {"schema": {"type": "string", "format": "binary"}},
            "application/json": {"schema": {"type": "object"}},
        },
    },
    status.HTTP_304_NOT_MODIFIED: {"description": "unchanged since the ETag given in If-None-Match"},
}
IfNoneMatch = Annotated[str | None, Header(description="an ETag of an earlier answer")]


def _matches(if_none_match: str | None, etag: str) -> bool:
    """Whether If-None-Match names ``etag`` (weak comparison, as RFC 9110 asks for GET)."""
    if not if_none_match:
        return False
    tags = [tag.strip().removeprefix("W/") for tag in if_none_match.split(",")]
    return "*" in tags or etag in tags


def _vehicle_positions(
    context: ContextDep, now_ms: int, fmt: FeedFormat, if_none_match: str | None
) -> Response:
    settings = context.settings
    points = context.store.latest(
        measurement=MEASUREMENT, since_ms=now_ms - int(settings.feed_max_vehicle_age_s * 1000)
    )
    feed = context.vehicle_positions.build(
        points,
        now_ms=now_ms,
        max_age_s=settings.feed_max_vehicle_age_s,
        max_ahead_s=settings.feed_max_clock_ahead_s,
    )
    if fmt is FeedFormat.PB:
        body, media_type = feed.SerializeToString(deterministic=True), PROTOBUF_MEDIA_TYPE
    else:
        as_dict = json_format.MessageToDict(feed, preserving_proto_field_name=True)
        body, media_type = json.dumps(as_dict, separators=(",", ":")).encode(), "application/json"
    etag = f'"{hashlib.sha256(body).hexdigest()[:32]}"'
    headers = {"ETag": etag, "Cache-Control": f"public, max-age={settings.feed_cache_max_age_s}"}
    if _matches(if_none_match, etag):
        return Response(status_code=status.HTTP_304_NOT_MODIFIED, headers=headers)
    return Response(body, media_type=media_type, headers=headers)


@router.get("/vehicle-positions", response_class=Response, responses=_FEED_RESPONSES)
def vehicle_positions(
    context: ContextDep,
    now_ms: NowMsDep,
    format: Annotated[FeedFormat, Query(description="pb (protobuf, default) or json")] = FeedFormat.PB,
    if_none_match: IfNoneMatch = None,
) -> Response:
    """Where each bus is now: GTFS-realtime VehiclePositions of vehicles heard from recently."""
    return _vehicle_positions(context, now_ms, format, if_none_match)


@router.get("/vehicle-positions.pb", response_class=Response, responses=_FEED_RESPONSES)
def vehicle_positions_pb(
    context: ContextDep, now_ms: NowMsDep, if_none_match: IfNoneMatch = None
) -> Response:
    """The VehiclePositions feed as protobuf, for consumers that go by file suffix."""
    return _vehicle_positions(context, now_ms, FeedFormat.PB, if_none_match)


@router.get("/vehicle-positions.json", response_class=Response, responses=_FEED_RESPONSES)
def vehicle_positions_json(
    context: ContextDep, now_ms: NowMsDep, if_none_match: IfNoneMatch = None
) -> Response:
    """The VehiclePositions feed as JSON (protobuf JSON mapping, proto field names)."""
    return _vehicle_positions(context, now_ms, FeedFormat.JSON, if_none_match)
