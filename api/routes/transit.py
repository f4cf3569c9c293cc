"""Transit for residents' apps and journey planners: GTFS-realtime feeds, the static GTFS, alerts.

Feeds are public and cacheable (ETag / If-None-Match, Last-Modified / If-Modified-Since,
Cache-Control); writes (operator alerts, trip changes, a new GTFS zip) are city-wide: they need a key
of the transit role (or an admin's), never an engineer's, whose authority stops at the sites granted to it.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import json
import threading
from collections.abc import AsyncIterator
from email.utils import format_datetime, parsedate_to_datetime
from functools import partial
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Header, HTTPException, Query, Request, Response, status
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from api.deps import AppContext, ContextDep, NowMsDep, SessionDep, SettingsDep
from api.registry import audit
from api.security import Principal, TransitOperatorDep
from api.settings import ApiSettings
from api.transit.alerts import AlertCreate, AlertPublic, unknown_ids
from api.transit.feeds import PROTOBUF_MEDIA_TYPE, EncodedFeed, FeedFormat, FeedKind, Snapshot, TransitService
from api.transit.gtfs import GtfsError, GtfsProblem
from api.transit.source import ZIP_MAX_AGE_S
from api.transit.trip_changes import TripChangeCreate, TripChangePublic, run_of_change

router = APIRouter(prefix="/v1/transit", tags=["transit"])
_service_lock = threading.Lock()

_FEED_RESPONSES: dict[int | str, dict[str, Any]] = {
    status.HTTP_200_OK: {
        "description": "a GTFS-realtime FeedMessage (FULL_DATASET)",
        "content": {
            PROTOBUF_MEDIA_TYPE: {"schema": {"type": "string", "format": "binary"}},
            "application/json": {"schema": {"type": "object"}},
        },
    },
    status.HTTP_304_NOT_MODIFIED: {"description": "unchanged since the ETag / date the client has"},
}
IfNoneMatch = Annotated[str | None, Header(description="an ETag of an earlier answer")]
IfModifiedSince = Annotated[str | None, Header(description="the Last-Modified of an earlier answer")]
FormatQuery = Annotated[FeedFormat, Query(description="pb (protobuf, default) or json")]


def transit_of(state: Any, settings: ApiSettings) -> TransitService:
    """The transit service on an app's ``state``; made from ``settings`` on first use unless installed
    (by one thread: requests and the background jobs may come at once)."""
    with _service_lock:
        if getattr(state, "transit", None) is None:
            state.transit = TransitService(settings)
    service: TransitService = state.transit
    return service


def transit_service(request: Request, context: AppContext) -> TransitService:
    """The app's transit service; made from the app's settings on first use unless installed."""
    return transit_of(request.app.state, context.settings)


async def _transit_dep(request: Request, context: ContextDep) -> TransitService:
    # On the event loop, not in a worker thread: the cached feeds are answered without waiting for
    # one behind slow telemetry queries.
    return transit_service(request, context)


TransitDep = Annotated[TransitService, Depends(_transit_dep)]


def _matches(if_none_match: str | None, etag: str) -> bool:
    """Whether If-None-Match names ``etag`` (weak comparison, as RFC 9110 asks for GET)."""
    if not if_none_match:
        return False
    tags = [tag.strip().removeprefix("W/") for tag in if_none_match.split(",")]
    return "*" in tags or etag in tags


def _not_modified_since(if_modified_since: str | None, timestamp_s: int) -> bool:
    if not if_modified_since:
        return False
    try:
        return timestamp_s <= parsedate_to_datetime(if_modified_since).timestamp()
    except (TypeError, ValueError):
        return False  # an unreadable date is ignored, as RFC 9110 asks


def _cached_answer(
    body: bytes,
    media_type: str,
    etag: str,
    timestamp_s: int,
    max_age_s: int,
    inm: str | None,
    ims: str | None,
) -> Response:
    headers = {
        "ETag": etag,
        "Last-Modified": format_datetime(dt.datetime.fromtimestamp(timestamp_s, dt.UTC), usegmt=True),
        "Cache-Control": f"public, max-age={max_age_s}",
    }
    # If-None-Match wins over If-Modified-Since when both are sent (RFC 9110 13.2.2).
    if _matches(inm, etag) or (inm is None and _not_modified_since(ims, timestamp_s)):
        return Response(status_code=status.HTTP_304_NOT_MODIFIED, headers=headers)
    return Response(body, media_type=media_type, headers=headers)


def _snapshot(context: AppContext, service: TransitService, now_ms: int) -> Snapshot:
    settings = context.settings
    return service.snapshot(
        context.store,
        now_ms=now_ms,
        max_age_s=settings.feed_max_vehicle_age_s,
        max_ahead_s=settings.feed_max_clock_ahead_s,
        wait_s=settings.transit_feed_wait_s,
    )


def _encoded(
    kind: FeedKind, fmt: FeedFormat, context: AppContext, service: TransitService, now_ms: int
) -> EncodedFeed:
    return _snapshot(context, service, now_ms).encoded(kind, fmt)


async def _feed(
    kind: FeedKind,
    fmt: FeedFormat,
    context: ContextDep,
    service: TransitService,
    now_ms: int,
    inm: str | None,
    ims: str | None,
) -> Response:
    """The feed from the snapshot in hand, on the event loop; a build or a first encoding (store reads,
    serialising) in a worker thread."""
    ready = service.ready(now_ms)
    feed = ready.cached_encoding(kind, fmt) if ready is not None else None
    if feed is None:
        feed = await run_in_threadpool(_encoded, kind, fmt, context, service, now_ms)
    return _cached_answer(
        feed.body,
        feed.media_type,
        feed.etag,
        feed.timestamp_s,
        context.settings.feed_cache_max_age_s,
        inm,
        ims,
    )


def _add_feed_routes(kind: FeedKind, summary: str, description: str | None = None) -> None:
    async def any_format(
        context: ContextDep,
        service: TransitDep,
        now_ms: NowMsDep,
        format: FormatQuery = FeedFormat.PB,
        if_none_match: IfNoneMatch = None,
        if_modified_since: IfModifiedSince = None,
    ) -> Response:
        return await _feed(kind, format, context, service, now_ms, if_none_match, if_modified_since)

    async def protobuf(
        context: ContextDep,
        service: TransitDep,
        now_ms: NowMsDep,
        if_none_match: IfNoneMatch = None,
        if_modified_since: IfModifiedSince = None,
    ) -> Response:
        return await _feed(kind, FeedFormat.PB, context, service, now_ms, if_none_match, if_modified_since)

    async def as_json(
        context: ContextDep,
        service: TransitDep,
        now_ms: NowMsDep,
        if_none_match: IfNoneMatch = None,
        if_modified_since: IfModifiedSince = None,
    ) -> Response:
        return await _feed(kind, FeedFormat.JSON, context, service, now_ms, if_none_match, if_modified_since)

    path = f"/{kind.value}"
    common: dict[str, Any] = {
        "response_class": Response,
        "responses": _FEED_RESPONSES,
        "description": description or summary,
    }
    router.add_api_route(path, any_format, summary=summary, name=f"{kind.name.lower()}", **common)
    router.add_api_route(
        path + ".pb", protobuf, summary=summary + " (protobuf)", name=f"{kind.name.lower()}_pb", **common
    )
    router.add_api_route(
        path + ".json", as_json, summary=summary + " (JSON)", name=f"{kind.name.lower()}_json", **common
    )


_add_feed_routes(FeedKind.VEHICLE_POSITIONS, "Where each bus is now: GTFS-realtime VehiclePositions")
_add_feed_routes(
    FeedKind.TRIP_UPDATES,
    "When buses will reach their next stops: GTFS-realtime TripUpdates",
    "Per run with a bus: arrival and departure at every stop ahead, from running times learned per"
    " segment and hour where history has them (the schedule elsewhere), each with its `uncertainty` in"
    " seconds where the learned spread is known (0: measured, absent: unknown). Runs an operator canceled"
    " (`POST /v1/transit/trip-changes`) or that are detected as missed are `CANCELED`; stops an operator"
    " took out are `SKIPPED`, without times.",
)
_add_feed_routes(FeedKind.ALERTS, "Service alerts: GTFS-realtime Alerts")


@router.get(
    "/gtfs.zip",
    response_class=Response,
    responses={
        200: {"content": {"application/zip": {}}},
        304: {},
        404: {"description": "no static GTFS loaded"},
    },
)
def gtfs_zip(
    service: TransitDep, if_none_match: IfNoneMatch = None, if_modified_since: IfModifiedSince = None
) -> Response:
    """The static GTFS the feeds refer to, byte for byte (journey planners need both)."""
    published = service.source.current()
    if published is None:
        raise HTTPException(
            status.HTTP_404_NOT_FOUND, "no static GTFS is loaded (set CITYGW_TRANSIT_GTFS_PATH)"
        )
    answer = _cached_answer(
        published.zip_bytes,
        "application/zip",
        published.etag,
        int(published.loaded_at_s),
        ZIP_MAX_AGE_S,
        if_none_match,
        if_modified_since,
    )
    answer.headers["Content-Disposition"] = 'attachment; filename="gtfs.zip"'
    return answer


@router.put(
    "/gtfs.zip",
    status_code=status.HTTP_200_OK,
    openapi_extra={"requestBody": {"content": {"application/zip": {}}}},
    responses={
        status.HTTP_413_CONTENT_TOO_LARGE: {"description": "larger than CITYGW_TRANSIT_GTFS_MAX_BYTES"}
    },
)
async def replace_gtfs_zip(
    request: Request,
    operator: TransitOperatorDep,
    service: TransitDep,
    session: SessionDep,
    settings: SettingsDep,
    now_ms: NowMsDep,
) -> dict[str, Any]:
    """Validate and publish a new static GTFS, or 422 naming every problem.

    The zip is served at once; the realtime feeds switch to it ``ZIP_MAX_AGE_S`` later, when no
    cached copy of the old zip is left (their header ``feed_version`` names the zip they refer to).

    Audited either way, with the zip's SHA-256 so the file in use can be traced to who sent it.
    """
    data = await _bounded_body(request, settings.transit_gtfs_max_bytes)
    upload = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    try:
        published = await run_in_threadpool(partial(service.source.publish, data, now_s=now_ms / 1000))
    except GtfsError as exc:
        await run_in_threadpool(
            _audit, session, operator, now_ms, "transit.gtfs.replace", "transit-gtfs",
            after=upload, result="refused", detail=str(exc),
        )  # fmt: skip
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            {"message": str(exc), "problems": [_problem(p) for p in exc.problems]},
        ) from None
    timetable = published.timetable
    answer = {"trips": len(timetable.trips), "stops": len(timetable.stops), "routes": len(timetable.routes)}
    await run_in_threadpool(
        _audit, session, operator, now_ms, "transit.gtfs.replace", "transit-gtfs", after={**upload, **answer}
    )
    return {**answer, "by": operator.actor}


async def _bounded_body(request: Request, max_bytes: int) -> bytes:
    """The request body, or 413 as soon as it is known to be larger than ``max_bytes`` (read no further)."""
    too_large = HTTPException(
        status.HTTP_413_CONTENT_TOO_LARGE,
        f"the zip is larger than {max_bytes} bytes (CITYGW_TRANSIT_GTFS_MAX_BYTES)",
    )
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        raise too_large
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > max_bytes:
            raise too_large
    return bytes(body)


def _problem(problem: GtfsProblem) -> dict[str, Any]:
    return {"file": problem.file, "row": problem.row, "field": problem.field, "reason": problem.reason}


def _audit(
    session: SessionDep,
    operator: Principal,
    now_ms: int,
    action: str,
    target: str,
    **change: Any,
) -> None:
    audit.commit(
        session,
        by=operator,
        ts_ms=now_ms,
        action=action,
        target=target,
        **change,
    )


@router.post("/alerts", status_code=status.HTTP_201_CREATED)
def create_alert(
    alert: Annotated[AlertCreate, Body()],
    operator: TransitOperatorDep,
    service: TransitDep,
    session: SessionDep,
    now_ms: NowMsDep,
) -> AlertPublic:
    """Publish an operator's alert (in the Alerts feed from the next build); audited, refusals too."""
    published = service.source.current()
    if published is not None and (problems := unknown_ids(alert, published.timetable)):
        _audit(
            session,
            operator,
            now_ms,
            "transit.alert.create",
            "transit-alert:new",
            after=alert.model_dump(mode="json"),
            result="refused",
            detail="; ".join(problems),
        )
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, problems)
    created = service.alerts.create(alert, actor=operator.actor, now_s=now_ms // 1000)
    _audit(
        session,
        operator,
        now_ms,
        "transit.alert.create",
        f"transit-alert:{created.id}",
        after=created.model_dump(mode="json"),
    )
    return created


@router.post("/alerts/{alert_id}/end")
def end_alert(
    alert_id: str, operator: TransitOperatorDep, service: TransitDep, session: SessionDep, now_ms: NowMsDep
) -> AlertPublic:
    """End an operator's alert now; it leaves the feed and stays on record (audited)."""
    ended = service.alerts.end(alert_id, now_s=now_ms // 1000)
    if ended is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no alert {alert_id!r}")
    _audit(
        session,
        operator,
        now_ms,
        "transit.alert.end",
        f"transit-alert:{alert_id}",
        after={"ended_at": ended.ended_at},
    )
    return ended


@router.post(
    "/trip-changes",
    status_code=status.HTTP_201_CREATED,
    responses={status.HTTP_422_UNPROCESSABLE_CONTENT: {"description": "the run is not in the GTFS in use"}},
)
def create_trip_change(
    change: Annotated[TripChangeCreate, Body()],
    operator: TransitOperatorDep,
    service: TransitDep,
    session: SessionDep,
    now_ms: NowMsDep,
) -> TripChangePublic:
    """Cancel a run, or skip stops of it (TripUpdates CANCELED / SKIPPED from the next build); audited,
    refusals too."""
    published = service.source.current()
    problems = ["no static GTFS is loaded"] if published is None else []
    if published is not None:
        run = run_of_change(change, published.timetable)
        if isinstance(run, list):
            problems = run
        elif run.arrival(len(run.trip.stop_times) - 1) < now_ms // 1000:
            problems = [f"start_date: the run {run.key} is over"]
    if problems:
        _audit(
            session, operator, now_ms, "transit.trip_change.create", "transit-trip-change:new",
            after=change.model_dump(mode="json"), result="refused", detail="; ".join(problems),
        )  # fmt: skip
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, problems)
    created = service.trip_changes.create(change, actor=operator.actor, now_s=now_ms // 1000)
    _audit(
        session, operator, now_ms, "transit.trip_change.create", f"transit-trip-change:{created.id}",
        after=created.model_dump(mode="json"),
    )  # fmt: skip
    return created


@router.get("/trip-changes")
def list_trip_changes(operator: TransitOperatorDep, service: TransitDep) -> list[TripChangePublic]:
    """The trip changes not ended (a dispatcher's view of what the feed says; ended ones are in the audit)."""
    return service.trip_changes.not_ended()


@router.post(
    "/trip-changes/{change_id}/end", responses={status.HTTP_404_NOT_FOUND: {"description": "no such"}}
)
def end_trip_change(
    change_id: str, operator: TransitOperatorDep, service: TransitDep, session: SessionDep, now_ms: NowMsDep
) -> TripChangePublic:
    """End a trip change now: the run is back as planned (the change stays on record; audited)."""
    ended = service.trip_changes.end(change_id, now_s=now_ms // 1000)
    if ended is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no trip change {change_id!r}")
    _audit(
        session, operator, now_ms, "transit.trip_change.end", f"transit-trip-change:{change_id}",
        after={"ended_at": ended.ended_at},
    )  # fmt: skip
    return ended


@router.get(
    "/vehicles/stream",
    response_class=StreamingResponse,
    responses={
        200: {"content": {"text/event-stream": {}}},
        status.HTTP_503_SERVICE_UNAVAILABLE: {"description": "transit_stream_max_clients streams are open"},
    },
)
async def vehicle_stream(request: Request, context: ContextDep, service: TransitDep) -> StreamingResponse:
    """Server-sent events: ``vehicle`` (an entity as JSON) when a bus changes, ``gone`` when it leaves."""
    state = request.app.state
    if getattr(state, "vehicle_streams", 0) >= context.settings.transit_stream_max_clients:
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE,
            "too many vehicle streams open; poll /v1/transit/vehicle-positions instead, or retry later",
            headers={"Retry-After": "30"},
        )

    async def events() -> AsyncIterator[bytes]:
        # Counted while the body runs (the event loop's thread only: no lock needed).
        state.vehicle_streams = getattr(state, "vehicle_streams", 0) + 1
        try:
            sent: dict[str, str] = {}
            yield b": citygw vehicle stream\n\n"
            while not await request.is_disconnected():
                snapshot = await run_in_threadpool(_snapshot, context, service, context.clock())
                timestamp = snapshot.feeds[FeedKind.VEHICLE_POSITIONS].header.timestamp
                current = await run_in_threadpool(snapshot.vehicle_entities)
                for vehicle, data in current.items():
                    if sent.get(vehicle) != data:
                        yield f"event: vehicle\nid: {timestamp}\ndata: {data}\n\n".encode()
                for gone in sorted(set(sent) - set(current)):
                    yield f"event: gone\ndata: {json.dumps({'id': gone})}\n\n".encode()
                sent = current
                await asyncio.sleep(service.settings.transit_stream_period_s)
        finally:
            state.vehicle_streams -= 1

    return StreamingResponse(events(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
