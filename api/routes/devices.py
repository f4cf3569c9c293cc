"""Devices as the store knows them: who reported what, and when last."""

from __future__ import annotations

from typing import Annotated, Protocol

from fastapi import APIRouter, HTTPException, Path, Query, Request, Response, status
from pydantic import BaseModel, Field

from api.deps import StoreDep
from api.routes.paging import DEFAULT_LIMIT, CursorQuery, Key, LimitQuery, decode_cursor, trim
from api.series import descriptive_tags
from api.timespec import iso
from citygw.contract.wire import AGENT_ID_PATTERN, LABEL_PATTERN, NAME_PATTERN
from collector.store.base import DeviceKey, FieldValue, Point, TelemetryReader, newest_per_device

router = APIRouter(prefix="/v1/devices", tags=["devices"])

MeasurementFilter = Annotated[
    str | None, Query(pattern=NAME_PATTERN, description="only this measurement, e.g. air_quality")
]
AgentFilter = Annotated[str | None, Query(pattern=AGENT_ID_PATTERN, description="only devices of this agent")]


class DevicePublic(BaseModel):
    device: str
    agent: str | None
    measurement: str
    last_seen: str = Field(description="time of the newest reading, ISO 8601 UTC")
    last_seen_ms: int = Field(description="the same in milliseconds since the epoch")
    tags: dict[str, str] = Field(description="descriptive tags of the newest reading (site, district, route)")


class ReadingPublic(BaseModel):
    measurement: str
    agent: str | None
    ts: str = Field(description="when the value was read, ISO 8601 UTC")
    ts_ms: int
    fields: dict[str, FieldValue]
    tags: dict[str, str]


class DeviceLatestPublic(BaseModel):
    device: str
    readings: list[ReadingPublic] = Field(description="the newest reading of each measurement (and agent)")


@router.get("", response_model=list[DevicePublic])
def list_devices(
    request: Request,
    response: Response,
    store: StoreDep,
    measurement: MeasurementFilter = None,
    agent: AgentFilter = None,
    limit: LimitQuery = DEFAULT_LIMIT,
    cursor: CursorQuery = None,
) -> list[DevicePublic]:
    """Every device that ever reported, with its newest reading time, one entry per measurement.

    By agent, device and measurement, a page at a time (``Link: rel=next``); the store reads that page only.
    """
    points = newest_page(store, limit=limit, cursor=cursor, measurement=measurement, agent=agent)
    listed = [
        DevicePublic(
            device=point.tags["device"],
            agent=point.tags.get("agent"),
            measurement=point.measurement,
            last_seen=iso(point.ts_ms),
            last_seen_ms=point.ts_ms,
            tags=descriptive_tags(point.tags),
        )
        for point in points
    ]
    return trim(listed, device_key, limit=limit, request=request, response=response)


DEVICE_KEY: Key = ("agent", "device", "measurement")


def newest_page(
    store: TelemetryReader, *, limit: int, cursor: str | None, measurement: str | None, agent: str | None
) -> list[Point]:
    """The newest point of the ``limit + 1`` devices after ``cursor`` (for ``trim``), read by the store."""
    after = decode_cursor(cursor, DEVICE_KEY)
    resume: DeviceKey | None = None if after is None else (str(after[0]), str(after[1]), str(after[2]))
    return store.latest_page(limit=limit + 1, after=resume, measurement=measurement, agent=agent)


class DeviceEntry(Protocol):
    @property
    def device(self) -> str: ...
    @property
    def measurement(self) -> str: ...
    @property
    def agent(self) -> str | None: ...


def device_key(device: DeviceEntry) -> Key:
    """The order of device lists: agent, device, measurement."""
    return (device.agent or "", device.device, device.measurement)


@router.get(
    "/{device:path}/latest",
    response_model=DeviceLatestPublic,
    responses={status.HTTP_404_NOT_FOUND: {"description": "no reading of this device is stored"}},
)
def device_latest(
    store: StoreDep,
    device: Annotated[str, Path(pattern=LABEL_PATTERN, description="device id (may contain '/')")],
    agent: AgentFilter = None,
) -> DeviceLatestPublic:
    """The newest reading of each measurement of one device."""
    points = [
        point
        for point in newest_per_device(store.latest(device=device))
        if agent is None or point.tags.get("agent") == agent
    ]
    if not points:
        where = f" of agent {agent!r}" if agent else ""
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no readings of device {device!r}{where} are stored")
    return DeviceLatestPublic(
        device=device,
        readings=[
            ReadingPublic(
                measurement=point.measurement,
                agent=point.tags.get("agent"),
                ts=iso(point.ts_ms),
                ts_ms=point.ts_ms,
                fields=dict(point.fields),
                tags=descriptive_tags(point.tags),
            )
            for point in points
        ],
    )
