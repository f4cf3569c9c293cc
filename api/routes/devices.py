"""Devices as the store knows them: who reported what, and when last."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Path, Query, status
from pydantic import BaseModel, Field

from api.deps import StoreDep
from api.series import descriptive_tags, newest_per_device
from api.timespec import iso
from citygw.wire import AGENT_ID_PATTERN, LABEL_PATTERN, NAME_PATTERN
from collector.store.base import FieldValue

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
    store: StoreDep, measurement: MeasurementFilter = None, agent: AgentFilter = None
) -> list[DevicePublic]:
    """Every device that ever reported, with its newest reading time, one entry per measurement."""
    points = newest_per_device(store.latest(measurement=measurement))
    return [
        DevicePublic(
            device=point.tags["device"],
            agent=point.tags.get("agent"),
            measurement=point.measurement,
            last_seen=iso(point.ts_ms),
            last_seen_ms=point.ts_ms,
            tags=descriptive_tags(point.tags),
        )
        for point in points
        if agent is None or point.tags.get("agent") == agent
    ]


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
