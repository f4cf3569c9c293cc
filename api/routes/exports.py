"""Exports of long telemetry ranges as CSV or JSON, streamed a time chunk at a time.

Bounds are checked before the first byte (range length, rows counted by the store), so a refusal
is a clear 400 and never a broken download; then each chunk is read, written and forgotten.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from enum import StrEnum
from typing import Annotated

from fastapi import APIRouter, Path, Query, status
from fastapi.responses import StreamingResponse

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
    field_names,
    time_range,
    window_seconds,
)
from api.spreadsheet import csv_cell
from api.timespec import iso
from citygw.contract.wire import NAME_PATTERN
from collector.store.base import Aggregate, Row, TelemetryReader, newest_per_device

router = APIRouter(prefix="/v1/exports", tags=["exports"])
TAG_COLUMNS = ("site", "district")


class ExportFormat(StrEnum):
    CSV = "csv"
    JSON = "json"


MEDIA_TYPES = {ExportFormat.CSV: "text/csv; charset=utf-8", ExportFormat.JSON: "application/json"}


def chunks(span: TimeRange, chunk_s: int, window_s: int | None) -> Iterator[TimeRange]:
    """``span`` cut at epoch-aligned multiples of the chunk: whole windows, never one split."""
    step_s = chunk_s if window_s is None else -(-chunk_s // window_s) * window_s
    step = step_s * 1000
    start = span.start_ms
    while start < span.end_ms:
        end = min(span.end_ms, (start // step + 1) * step)
        yield TimeRange(start, end)
        start = end


def _columns(
    store: TelemetryReader, measurement: str, span: TimeRange, device: str | None, fields: list[str] | None
) -> list[str]:
    """The asked fields, or every field some point in the range has (counted by the store, not loaded:
    one window over the whole range, two when it straddles a window boundary)."""
    if fields is not None:
        return fields
    counted = store.range(
        measurement=measurement,
        start_ms=span.start_ms,
        end_ms=span.end_ms,
        device=device,
        window_s=max(1, -(-(span.end_ms - span.start_ms) // 1000)),
        aggregate=Aggregate.COUNT,
    )
    return sorted({name for row in counted for name, count in row.values.items() if count})


def _csv_lines(rows: list[Row], columns: list[str], tags: dict[str, dict[str, str]]) -> str:
    out = io.StringIO()
    writer = csv.writer(out)  # RFC 4180: CRLF, CR and LF in a cell quoted
    for row in rows:
        device = row.tags.get("device", "")
        known = {**tags.get(device, {}), **row.tags}
        writer.writerow(
            [iso(row.ts_ms), row.ts_ms]
            + [csv_cell(text) for text in (device, known.get("agent", ""))]
            + [csv_cell(known.get(tag, "")) for tag in TAG_COLUMNS]
            + [csv_cell(row.values.get(name)) for name in columns]
        )
    return out.getvalue()


def _json_rows(rows: list[Row], tags: dict[str, dict[str, str]], first: bool) -> str:
    parts: list[str] = []
    for row in rows:
        device = row.tags.get("device")
        known = {**tags.get(device or "", {}), **row.tags}
        item = {
            "ts": iso(row.ts_ms),
            "ts_ms": row.ts_ms,
            "device": device,
            "agent": known.get("agent"),
            **{tag: known.get(tag) for tag in TAG_COLUMNS},
            "values": dict(row.values),
        }
        parts.append(("" if first and not parts else ",\n") + json.dumps(item, separators=(",", ":")))
    return "".join(parts)


@router.get(
    "/{measurement}",
    response_class=StreamingResponse,
    responses={
        status.HTTP_200_OK: {"content": {"text/csv": {}, "application/json": {}}},
        status.HTTP_400_BAD_REQUEST: {"description": "the range is empty or too large"},
    },
)
def export(
    store: StoreDep,
    settings: SettingsDep,
    now_ms: NowMsDep,
    measurement: Annotated[str, Path(pattern=NAME_PATTERN, description="e.g. electricity, water")],
    format: Annotated[ExportFormat, Query(description="csv or json")] = ExportFormat.CSV,
    start: StartQuery = None,
    end: EndQuery = None,
    device: DeviceQuery = None,
    fields: FieldsQuery = None,
    window: WindowQuery = None,
    aggregate: AggregateQuery = None,
) -> StreamingResponse:
    """One measurement over a long range, raw or per device and window, as a streamed download."""
    span = time_range(start, end, now_ms=now_ms, settings=settings, max_span_s=settings.export_max_range_s)
    window_s = window_seconds(window)
    names = field_names(fields) if fields is not None else None
    if window_s is None and aggregate is not None:
        raise bad_request(f"aggregate={aggregate.value} needs a window, e.g. window=1h")
    if window_s is not None:
        check_windowed_rows(
            store,
            measurement,
            span,
            window_s,
            names,
            device=device,
            max_windows=settings.export_max_rows,
            max_rows=settings.export_max_rows,
        )
    else:
        check_raw_rows(store, measurement, span, device, names, settings.export_max_rows)
    columns = _columns(store, measurement, span, device, names)
    # Aggregated rows carry only the device: its other tags come from its newest point.
    tags = {
        point.tags["device"]: dict(point.tags)
        for point in newest_per_device(store.latest(measurement=measurement, device=device))
    }
    how = aggregate or Aggregate.MEAN

    def rows_of(part: TimeRange) -> list[Row]:
        return store.range(
            measurement=measurement,
            start_ms=part.start_ms,
            end_ms=part.end_ms,
            device=device,
            fields=names,
            window_s=window_s,
            aggregate=how,
        )

    def body() -> Iterator[str]:
        if format is ExportFormat.CSV:
            header = io.StringIO()
            csv.writer(header).writerow(["ts", "ts_ms", "device", "agent", *TAG_COLUMNS, *columns])
            yield header.getvalue()
            for part in chunks(span, settings.export_chunk_s, window_s):
                yield _csv_lines(rows_of(part), columns, tags)
            return
        head = {
            "measurement": measurement,
            "start": iso(span.start_ms),
            "end": iso(span.end_ms),
            "window_s": window_s,
            "aggregate": how.value if window_s is not None else None,
        }
        yield json.dumps(head)[:-1] + ', "rows": [\n'
        first = True
        for part in chunks(span, settings.export_chunk_s, window_s):
            rows = rows_of(part)
            if rows:
                yield _json_rows(rows, tags, first)
                first = False
        yield "\n]}\n"

    filename = f"{measurement}-{iso(span.start_ms)[:10]}-{iso(span.end_ms)[:10]}.{format.value}"
    return StreamingResponse(
        body(),
        media_type=MEDIA_TYPES[format],
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )
