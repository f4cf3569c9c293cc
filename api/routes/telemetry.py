"""Telemetry of one measurement over a time range, raw or aggregated over windows."""

from __future__ import annotations

from collections.abc import Callable
from enum import StrEnum
from typing import Annotated

from fastapi import APIRouter, Path, Query, status
from pydantic import BaseModel, Field

from api.across_devices import GroupBy, combine, group_of_devices
from api.consumption import Counter, consumption, reset_flag
from api.deps import NowMsDep, SettingsDep, StoreDep
from api.query import (
    AggregateQuery,
    DeviceQuery,
    EndQuery,
    FieldsQuery,
    StartQuery,
    TimeRange,
    WindowQuery,
    bad_request,
    check_raw_rows,
    check_windowed_rows,
    check_windows,
    duration_s,
    field_names,
    time_range,
    window_seconds,
)
from api.series import descriptive_tags
from api.timespec import iso
from citygw.contract.wire import NAME_PATTERN
from collector.store.base import Aggregate, FieldValue
from firmware_bridge.catalogue import RoleCatalogue, RoleField
from firmware_bridge.roles import ROLES, Role, StateClass

router = APIRouter(prefix="/v1/telemetry", tags=["telemetry"])

MeasurementPath = Annotated[str, Path(pattern=NAME_PATTERN, description="e.g. air_quality, electricity")]


class RowPublic(BaseModel):
    ts: str = Field(description="the point's time, or its window's start, ISO 8601 UTC")
    ts_ms: int
    device: str | None
    agent: str | None
    tags: dict[str, str]
    values: dict[str, FieldValue | None]


class TelemetryPublic(BaseModel):
    measurement: str
    start: str
    start_ms: int
    end: str = Field(description="exclusive")
    end_ms: int
    window_s: int | None
    aggregate: Aggregate | None
    rows: list[RowPublic]


@router.get(
    "/{measurement}",
    response_model=TelemetryPublic,
    responses={
        status.HTTP_400_BAD_REQUEST: {"description": "the range is empty or too large for the window"}
    },
)
def telemetry(
    store: StoreDep,
    settings: SettingsDep,
    now_ms: NowMsDep,
    measurement: MeasurementPath,
    start: StartQuery = None,
    end: EndQuery = None,
    device: DeviceQuery = None,
    fields: FieldsQuery = None,
    window: WindowQuery = None,
    aggregate: AggregateQuery = None,
) -> TelemetryPublic:
    """Rows of one measurement in [start, end): raw points, or one row per device and window."""
    span = time_range(start, end, now_ms=now_ms, settings=settings)
    window_s = window_seconds(window)
    names = field_names(fields) if fields is not None else None
    if window_s is None and aggregate is not None:
        raise bad_request(f"aggregate={aggregate.value} needs a window, e.g. window=1m")
    # Counted first so that a year of raw points, or windows of every meter, is refused, not loaded.
    if window_s is not None:
        check_windowed_rows(
            store,
            measurement,
            span,
            window_s,
            names,
            device=device,
            max_windows=settings.query_max_windows,
            max_rows=settings.query_max_points,
        )
    else:
        check_raw_rows(store, measurement, span, device, names, settings.query_max_points)
    rows = store.range(
        measurement=measurement,
        start_ms=span.start_ms,
        end_ms=span.end_ms,
        device=device,
        fields=names,
        window_s=window_s,
        aggregate=aggregate or Aggregate.MEAN,
    )
    if len(rows) > settings.query_max_points:  # raw: check_raw_rows counted at least this many
        raise bad_request(
            f"{len(rows)} rows in this range; at most {settings.query_max_points}:"
            " use a window (e.g. window=1m), a shorter range, or one device"
        )
    return TelemetryPublic(
        measurement=measurement,
        start=iso(span.start_ms),
        start_ms=span.start_ms,
        end=iso(span.end_ms),
        end_ms=span.end_ms,
        window_s=window_s,
        aggregate=(aggregate or Aggregate.MEAN) if window_s is not None else None,
        rows=[
            RowPublic(
                ts=iso(row.ts_ms),
                ts_ms=row.ts_ms,
                device=row.tags.get("device"),
                agent=row.tags.get("agent"),
                tags=descriptive_tags(row.tags),
                values=dict(row.values),
            )
            for row in rows
        ],
    )


class GroupRowPublic(BaseModel):
    group: str | None = Field(description="the district or site (null: devices without that tag), or 'city'")
    ts: str = Field(description="the window's start, ISO 8601 UTC")
    ts_ms: int
    devices: int = Field(description="devices that reported in the window")
    values: dict[str, float]


class GroupsPublic(BaseModel):
    measurement: str
    by: GroupBy
    start: str
    end: str = Field(description="exclusive")
    window_s: int
    aggregate: Aggregate
    rows: list[GroupRowPublic]


@router.get(
    "/{measurement}/groups",
    response_model=GroupsPublic,
    responses={
        status.HTTP_400_BAD_REQUEST: {"description": "the range is empty or has too many windows or devices"}
    },
)
def telemetry_by_group(
    store: StoreDep,
    settings: SettingsDep,
    now_ms: NowMsDep,
    measurement: MeasurementPath,
    by: Annotated[GroupBy, Query(description="district, site, or city (all devices of the kind)")],
    window: Annotated[str, Query(max_length=16, description="window: 10s, 5m, 1h, 1d ...")] = "1h",
    aggregate: Annotated[Aggregate, Query(description="mean, min, max, sum, count; last: mean of lasts")] = (
        Aggregate.MEAN
    ),
    start: StartQuery = None,
    end: EndQuery = None,
    fields: FieldsQuery = None,
    roles: Annotated[
        str | None,
        Query(
            max_length=500,
            description="roles instead of fields, comma-separated (active_power,voltage): each model's "
            "fields of a role combined under the role's name, in its unit (docs/profiles.md)",
        ),
    ] = None,
) -> GroupsPublic:
    """One measurement summarised per window across the devices of each district, site, or the city."""
    span = time_range(start, end, now_ms=now_ms, settings=settings)
    window_s = duration_s("window", window)
    names = field_names(fields) if fields is not None else None
    rename: dict[str, tuple[str, float]] = {}
    if roles is not None:
        if fields is not None:
            raise bad_request("give fields or roles, not both")
        rename = _role_fields(settings.roles, measurement, roles)
        names = list(rename)
    # combine() reads a row per device and window: bounded before the first is loaded.
    check_windowed_rows(
        store,
        measurement,
        span,
        window_s,
        names,
        device=None,
        max_windows=settings.query_max_windows,
        max_rows=settings.query_max_points,
        offers_device=False,
    )
    rows = combine(
        store,
        measurement,
        span,
        window_s=window_s,
        aggregate=aggregate,
        fields=names,
        group_of=group_of_devices(store, measurement, by),
        rename=rename,
    )
    return GroupsPublic(
        measurement=measurement,
        by=by,
        start=iso(span.start_ms),
        end=iso(span.end_ms),
        window_s=window_s,
        aggregate=aggregate,
        rows=[
            GroupRowPublic(
                group=row.group,
                ts=iso(row.ts_ms),
                ts_ms=row.ts_ms,
                devices=len(row.devices),
                values=row.values,
            )
            for row in rows
        ],
    )


class ConsumptionBy(StrEnum):
    DEVICE = "device"
    DISTRICT = "district"
    SITE = "site"
    CITY = "city"


class IntervalPublic(BaseModel):
    group: str | None = Field(description="the device, district or site (null: without that tag), or 'city'")
    ts: str = Field(description="the interval's start, ISO 8601 UTC")
    ts_ms: int
    consumption: float = Field(description="in the counter's unit (kWh, m³)")
    readings: int
    resets: int = Field(description="counter resets (reboot, wrap) counted from zero")
    replacements: int = Field(description="meters replaced (counter restarted lower): consumption unknown")


class ConsumptionPublic(BaseModel):
    measurement: str
    field: str | None = Field(description="the counter asked for by name")
    role: Role | None = Field(description="the counters asked for by role (each meter model's own field)")
    unit: str | None = Field(description="the unit of consumption: the role's (null: the field's own)")
    by: ConsumptionBy
    start: str
    end: str = Field(description="exclusive")
    interval_s: int
    intervals: list[IntervalPublic]


@router.get(
    "/{measurement}/consumption",
    response_model=ConsumptionPublic,
    responses={status.HTTP_400_BAD_REQUEST: {"description": "the range is empty or too large"}},
)
def meter_consumption(
    store: StoreDep,
    settings: SettingsDep,
    now_ms: NowMsDep,
    measurement: MeasurementPath,
    field: Annotated[
        str | None, Query(pattern=NAME_PATTERN, description="a cumulative counter by field name")
    ] = None,
    role: Annotated[
        Role | None,
        Query(description="every counter of a role instead: active_energy_import (kWh), volume_total (m³)"),
    ] = None,
    interval: Annotated[str, Query(max_length=16, description="10m, 1h, 1d ...")] = "1h",
    by: Annotated[ConsumptionBy, Query(description="per device, district, site or the city")] = (
        ConsumptionBy.DEVICE
    ),
    start: StartQuery = None,
    end: EndQuery = None,
    device: DeviceQuery = None,
) -> ConsumptionPublic:
    """Consumption per interval from a cumulative counter, counter resets and meter replacements handled.

    The counter is a ``field``, or a ``role``: each meter's field of that role, whatever its model
    calls it, converted to the role's unit (docs/profiles.md)."""
    counters = _counters(settings.roles.of(role, measurement) if role else [], field, role, measurement)
    span = time_range(start, end, now_ms=now_ms, settings=settings)
    interval_s = duration_s("interval", interval)
    check_windows(span, interval_s, settings.query_max_windows)
    # One interval earlier gives each meter the reading its first increment starts from.
    fetched = TimeRange(max(0, span.start_ms - interval_s * 1000), span.end_ms)
    wanted = [name for c in counters for name in (c.field, reset_flag(c.field))]
    check_raw_rows(store, measurement, fetched, device, wanted, settings.query_max_points)
    rows = store.range(
        measurement=measurement,
        start_ms=fetched.start_ms,
        end_ms=fetched.end_ms,
        device=device,
        fields=wanted,
    )
    group_of: Callable[[str], str | None] = (
        (lambda name: name)
        if by is ConsumptionBy.DEVICE
        else group_of_devices(store, measurement, GroupBy(by.value))
    )
    intervals = consumption(
        rows, counters, start_ms=span.start_ms, interval_ms=interval_s * 1000, group_of=group_of
    )
    return ConsumptionPublic(
        measurement=measurement,
        field=field,
        role=role,
        unit=ROLES[role].unit if role else None,
        by=by,
        start=iso(span.start_ms),
        end=iso(span.end_ms),
        interval_s=interval_s,
        intervals=[
            IntervalPublic(
                group=i.group,
                ts=iso(i.ts_ms),
                ts_ms=i.ts_ms,
                consumption=round(i.consumption, 6),
                readings=i.readings,
                resets=i.resets,
                replacements=i.replacements,
            )
            for i in intervals
        ],
    )


def _counters(
    fields: list[RoleField], field: str | None, role: Role | None, measurement: str
) -> list[Counter]:
    """What to count: the named field, or every field of the role in the measurement (its unit's factor)."""
    if (field is None) == (role is None):
        raise bad_request("give field (a counter's name) or role (e.g. active_energy_import), one of them")
    if role is None:
        assert field is not None
        return [Counter(field)]
    if ROLES[role].state_class is not StateClass.TOTAL_INCREASING:
        raise bad_request(f"role {role.value} is no counter: use a total_increasing role (docs/profiles.md)")
    if not fields:
        raise bad_request(f"no profile gives a field of {measurement} the role {role.value}")
    return [Counter(f.field, ROLES[role].units[f.unit]) for f in fields]


def _role_fields(catalogue: RoleCatalogue, measurement: str, text: str) -> dict[str, tuple[str, float]]:
    """Each channel-less field of the asked roles in ``measurement``: (role name, factor to its unit)."""
    found: dict[str, tuple[str, float]] = {}
    for name in (part.strip() for part in text.split(",") if part.strip()):
        try:
            role = Role(name)
        except ValueError:
            raise bad_request(f"no role {name!r}; the roles are listed in docs/profiles.md") from None
        fields = catalogue.read(role, measurement)
        if not fields:
            raise bad_request(f"no profile gives a field of {measurement} the role {role.value}")
        found |= {f.field: (role.value, ROLES[role].units[f.unit]) for f in fields}
    return found
