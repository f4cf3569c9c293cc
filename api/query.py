"""Query-string pieces every telemetry endpoint shares: time ranges, windows, field lists and their bounds."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import HTTPException, Query, status
from fastapi.exceptions import RequestValidationError

from api.settings import ApiSettings
from api.timespec import iso, parse_duration, parse_instant
from citygw.contract.wire import LABEL_PATTERN, MAX_FIELDS_PER_READING, NAME_PATTERN, is_name
from collector.store.base import Aggregate, TelemetryReader

StartQuery = Annotated[
    str | None,
    Query(max_length=64, description="ISO 8601, epoch ms or relative (-1h); default: one hour before end"),
]
EndQuery = Annotated[
    str | None, Query(max_length=64, description="exclusive; ISO 8601, epoch ms or relative; default: now")
]
DeviceQuery = Annotated[str | None, Query(pattern=LABEL_PATTERN, description="only this device")]
FieldsQuery = Annotated[
    str | None, Query(max_length=4096, description="comma-separated field names; default: all")
]
WindowQuery = Annotated[
    str | None, Query(max_length=16, description="aggregate over windows of 10s, 5m, 1h, 1d ...")
]
AggregateQuery = Annotated[Aggregate | None, Query(description="how a window is summarised; default mean")]


def invalid(param: str, value: str, message: str) -> RequestValidationError:
    """A 422 shaped like FastAPI's own, for checks a type annotation cannot express."""
    error: dict[str, Any] = {"type": "value_error", "loc": ("query", param), "msg": message, "input": value}
    return RequestValidationError([error])


def bad_request(message: str) -> HTTPException:
    return HTTPException(status.HTTP_400_BAD_REQUEST, message)


def field_names(text: str, param: str = "fields") -> list[str]:
    """Distinct field names from ``a,b,c``; 422 naming the bad ones."""
    names = list(dict.fromkeys(name.strip() for name in text.split(",") if name.strip()))
    if not names:
        raise invalid(param, text, "give one or more field names, comma-separated, e.g. pm25,no2")
    bad = [name for name in names if not is_name(name)]
    if bad:
        raise invalid(param, text, f"field names must match {NAME_PATTERN}: {', '.join(map(repr, bad))}")
    if len(names) > MAX_FIELDS_PER_READING:
        raise invalid(param, text, f"at most {MAX_FIELDS_PER_READING} fields")
    return names


@dataclass(frozen=True, slots=True)
class TimeRange:
    """[start_ms, end_ms), start before end."""

    start_ms: int
    end_ms: int

    @property
    def span_ms(self) -> int:
        return self.end_ms - self.start_ms


def time_range(
    start: str | None, end: str | None, *, now_ms: int, settings: ApiSettings, max_span_s: int | None = None
) -> TimeRange:
    """The range the caller asked for (422 for what is not a time, 400 for empty or too long)."""
    try:
        end_ms = parse_instant(end, now_ms=now_ms) if end is not None else now_ms
    except ValueError as exc:
        raise invalid("end", end or "", str(exc)) from None
    if start is None:
        # The default range stops at the epoch, before which no time is a time.
        start_ms = max(0, end_ms - settings.query_default_range_s * 1000)
        if start_ms >= end_ms:
            raise bad_request(f"end ({iso(end_ms)}) is the epoch: nothing is before it; give a later end")
    else:
        try:
            start_ms = parse_instant(start, now_ms=now_ms)
        except ValueError as exc:
            raise invalid("start", start, str(exc)) from None
        if start_ms >= end_ms:
            raise bad_request(f"start ({iso(start_ms)}) must be before end ({iso(end_ms)})")
    if max_span_s is not None and end_ms - start_ms > max_span_s * 1000:
        raise bad_request(f"the range spans more than {max_span_s} s; ask for a shorter one")
    return TimeRange(start_ms, end_ms)


def duration_s(param: str, text: str) -> int:
    """Whole seconds of ``text`` (10s, 5m, 1h, 1d); 422 naming ``param`` otherwise."""
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise invalid(param, text, str(exc)) from None


def window_seconds(window: str | None) -> int | None:
    return duration_s("window", window) if window is not None else None


def check_windows(span: TimeRange, window_s: int, max_windows: int) -> int:
    """The number of windows in ``span``; 400 naming the smallest window that fits when there are too many."""
    windows = -(-span.span_ms // (window_s * 1000))
    if windows > max_windows:
        smallest = -(-span.span_ms // (max_windows * 1000))
        raise bad_request(
            f"{windows} windows of {window_s} s in this range; at most {max_windows}:"
            f" use a window of at least {smallest} s or a shorter range"
        )
    return windows


def check_windowed_rows(
    store: TelemetryReader,
    measurement: str,
    span: TimeRange,
    window_s: int,
    fields: Sequence[str] | None,
    *,
    device: str | None,
    max_windows: int,
    max_rows: int,
    offers_device: bool = True,
) -> None:
    """400 when a windowed read of the range could load more than ``max_rows`` rows from the store.

    ``range`` gives a row per device and window: the windows are counted here, the devices by the
    store (not fetched), before any row is loaded. ``offers_device``: the route has ``device=``.
    """
    check_windows(span, window_s, max_windows)
    window_ms = window_s * 1000
    windows = (span.end_ms - 1) // window_ms - span.start_ms // window_ms + 1  # epoch-aligned, as stored
    devices = store.count_devices(
        measurement=measurement, start_ms=span.start_ms, end_ms=span.end_ms, device=device, fields=fields
    )
    if windows * devices <= max_rows:
        return
    ways = []
    fitting = max_rows // devices  # windows per device that fit; one more may start before span.start
    if fitting > 1:
        ways.append(f"a window of at least {-(-span.span_ms // ((fitting - 1) * 1000))} s")
    elif fitting == 1:
        ways.append("a larger window")
    ways.append("a shorter range")
    if offers_device and device is None:
        ways.append("one device (device=...)")
    advice = f"{', '.join(ways[:-1])} or {ways[-1]}" if len(ways) > 1 else ways[0]
    raise bad_request(
        f"{windows} windows of {window_s} s for {devices} devices in this range: up to"
        f" {windows * devices} rows; at most {max_rows}: use {advice}"
    )


def raw_rows_at_least(
    store: TelemetryReader,
    measurement: str,
    span: TimeRange,
    device: str | None,
    fields: list[str] | None,
) -> int:
    """A lower bound of the raw rows in the range, counted by the store instead of fetched.

    One COUNT window spans the range (two when it straddles a window boundary); a row per
    point has at least as many rows as its most-counted field.
    """
    counts = store.range(
        measurement=measurement,
        start_ms=span.start_ms,
        end_ms=span.end_ms,
        device=device,
        fields=fields,
        window_s=-(-span.span_ms // 1000),
        aggregate=Aggregate.COUNT,
    )
    return sum(
        max((v for v in row.values.values() if isinstance(v, int) and not isinstance(v, bool)), default=0)
        for row in counts
    )


def check_raw_rows(
    store: TelemetryReader,
    measurement: str,
    span: TimeRange,
    device: str | None,
    fields: list[str] | None,
    max_points: int,
) -> None:
    """400 when the raw range holds more than ``max_points`` rows (counted, not loaded)."""
    at_least = raw_rows_at_least(store, measurement, span, device, fields)
    if at_least > max_points:
        raise bad_request(
            f"at least {at_least} rows in this range; at most {max_points}:"
            " use a window (e.g. window=1m), a shorter range, or one device"
        )
