"""Telemetry of one measurement over a time range, raw or aggregated over windows."""

from __future__ import annotations

import re
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path, Query, status
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, Field

from api.deps import NowMsDep, SettingsDep, StoreDep
from api.series import descriptive_tags
from api.timespec import iso, parse_duration, parse_instant
from citygw.wire import LABEL_PATTERN, MAX_FIELDS_PER_READING, NAME_PATTERN
from collector.store.base import Aggregate, FieldValue, TelemetryReader

router = APIRouter(prefix="/v1/telemetry", tags=["telemetry"])

_NAME_RE = re.compile(NAME_PATTERN)


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


def _invalid(param: str, value: str, message: str) -> RequestValidationError:
    """A 422 shaped like FastAPI's own, for checks a type annotation cannot express."""
    error: dict[str, Any] = {"type": "value_error", "loc": ("query", param), "msg": message, "input": value}
    return RequestValidationError([error])


def _fields(text: str) -> list[str]:
    names = list(dict.fromkeys(name.strip() for name in text.split(",") if name.strip()))
    if not names:
        raise _invalid("fields", text, "give one or more field names, comma-separated, e.g. pm25,no2")
    bad = [name for name in names if not _NAME_RE.match(name)]
    if bad:
        raise _invalid("fields", text, f"field names must match {NAME_PATTERN}: {', '.join(map(repr, bad))}")
    if len(names) > MAX_FIELDS_PER_READING:
        raise _invalid("fields", text, f"at most {MAX_FIELDS_PER_READING} fields")
    return names


def _bad_request(message: str) -> HTTPException:
    return HTTPException(status.HTTP_400_BAD_REQUEST, message)


def _raw_rows_at_least(
    store: TelemetryReader,
    measurement: str,
    start_ms: int,
    end_ms: int,
    device: str | None,
    fields: list[str] | None,
) -> int:
    """A lower bound of the raw rows in the range, counted by the store instead of fetched.

    One COUNT window spans the range (two when it straddles a window boundary); a row per
    point has at least as many rows as its most-counted field.
    """
    counts = store.range(
        measurement=measurement,
        start_ms=start_ms,
        end_ms=end_ms,
        device=device,
        fields=fields,
        window_s=-(-(end_ms - start_ms) // 1000),
        aggregate=Aggregate.COUNT,
    )
    return sum(
        max((v for v in row.values.values() if isinstance(v, int) and not isinstance(v, bool)), default=0)
        for row in counts
    )


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
    measurement: Annotated[str, Path(pattern=NAME_PATTERN, description="e.g. air_quality, electricity")],
    start: Annotated[
        str | None, Query(description="ISO 8601, epoch ms or relative (-1h); default: one hour before end")
    ] = None,
    end: Annotated[
        str | None, Query(description="exclusive; ISO 8601, epoch ms or relative; default: now")
    ] = None,
    device: Annotated[str | None, Query(pattern=LABEL_PATTERN, description="only this device")] = None,
    fields: Annotated[str | None, Query(description="comma-separated field names; default: all")] = None,
    window: Annotated[str | None, Query(description="aggregate over windows of 10s, 5m, 1h, 1d ...")] = None,
    aggregate: Annotated[
        Aggregate | None, Query(description="how a window is summarised; default mean")
    ] = None,
) -> TelemetryPublic:
    """Rows of one measurement in [start, end): raw points, or one row per device and window."""
    try:
        end_ms = parse_instant(end, now_ms=now_ms) if end is not None else now_ms
    except ValueError as exc:
        raise _invalid("end", end or "", str(exc)) from None
    try:
        start_ms = (
            parse_instant(start, now_ms=now_ms)
            if start is not None
            else end_ms - settings.query_default_range_s * 1000
        )
    except ValueError as exc:
        raise _invalid("start", start or "", str(exc)) from None
    try:
        window_s = parse_duration(window) if window is not None else None
    except ValueError as exc:
        raise _invalid("window", window or "", str(exc)) from None
    field_names = _fields(fields) if fields is not None else None

    if start_ms >= end_ms:
        raise _bad_request(f"start ({iso(start_ms)}) must be before end ({iso(end_ms)})")
    if window_s is None and aggregate is not None:
        raise _bad_request(f"aggregate={aggregate.value} needs a window, e.g. window=1m")
    if window_s is not None:
        windows = -(-(end_ms - start_ms) // (window_s * 1000))
        if windows > settings.query_max_windows:
            smallest = -(-(end_ms - start_ms) // (settings.query_max_windows * 1000))
            raise _bad_request(
                f"{windows} windows of {window_s} s in this range; at most {settings.query_max_windows}:"
                f" use a window of at least {smallest} s or a shorter range"
            )
    else:
        # Counted first so that a year of raw points is refused, not loaded into memory.
        at_least = _raw_rows_at_least(store, measurement, start_ms, end_ms, device, field_names)
        if at_least > settings.query_max_points:
            raise _bad_request(
                f"at least {at_least} rows in this range; at most {settings.query_max_points}:"
                " use a window (e.g. window=1m), a shorter range, or one device"
            )
    rows = store.range(
        measurement=measurement,
        start_ms=start_ms,
        end_ms=end_ms,
        device=device,
        fields=field_names,
        window_s=window_s,
        aggregate=aggregate or Aggregate.MEAN,
    )
    if len(rows) > settings.query_max_points:
        advice = "a bigger window" if window_s is not None else "a window (e.g. window=1m)"
        raise _bad_request(
            f"{len(rows)} rows in this range; at most {settings.query_max_points}:"
            f" use {advice}, a shorter range, or one device"
        )
    return TelemetryPublic(
        measurement=measurement,
        start=iso(start_ms),
        start_ms=start_ms,
        end=iso(end_ms),
        end_ms=end_ms,
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
