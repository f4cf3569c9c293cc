"""Dashboard previews without Grafana: every panel's queries run on InfluxDB, drawn into one PNG each.

A newcomer sees what a dashboard holds before installing Grafana, and its author sees an empty
panel at once. The panels are laid out on Grafana's 24-column grid and drawn plainly with
matplotlib (time series as lines, stats as their last value, tables as text, geomaps as points):
what the queries return, not Grafana's look.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only: no display on a server or in CI

from matplotlib import dates as mdates
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from dashboards.macros import TimeRange, fixed_value, panels, render, variables

Query = Callable[[str], list[dict[str, Any]]]
"""Run one InfluxQL statement; its series (``name``, ``tags``, ``columns``, ``values``; times in ms)."""

GRID_COLUMNS = 24
INCH_PER_COLUMN = 0.75
INCH_PER_ROW = 0.42
TABLE_ROWS = 8
LEFT_MARGIN = 0.045  # of the figure's width: room for a panel's y tick labels
# Grafana's unit ids as a reader writes them.
UNITS = {
    "watt": "W",
    "kwatth": "kWh",
    "volt": "V",
    "percent": "%",
    "celsius": "°C",
    "m3": "m³",
    "flowcmh": "m³/h",
    "conμgm3": "µg/m³",
    "velocitykmh": "km/h",
    "s": "s",
}


@dataclass
class Preview:
    """One dashboard's picture and what each panel got."""

    uid: str
    path: Path
    rows_by_panel: dict[str, int] = field(default_factory=dict)

    @property
    def empty_panels(self) -> list[str]:
        return [title for title, rows in self.rows_by_panel.items() if rows == 0]


def variable_values(board: Mapping[str, Any], query: Query) -> dict[str, list[str]]:
    """Every template variable set to All: queries run in order, earlier ones substituted, as Grafana does."""
    chosen: dict[str, list[str]] = {}
    for variable in variables(board):
        fixed = fixed_value(variable)
        if fixed is not None:
            chosen[variable["name"]] = fixed
            continue
        series = query(render(variable["query"], chosen))
        values = sorted({str(value) for s in series for _key, value in s.get("values", [])})
        chosen[variable["name"]] = values or [""]
    return chosen


def _layout(board: Mapping[str, Any]) -> tuple[list[tuple[dict[str, Any], int, int, int, int]], int]:
    """(panel, x, y, w, h) in grid units, each panel floated up as far as it goes, as Grafana shows it."""
    skyline = [0] * GRID_COLUMNS  # the lowest edge taken so far in each column
    placed = []
    ordered = sorted(panels(board), key=lambda p: (int(p["gridPos"]["y"]), int(p["gridPos"]["x"])))
    for panel in ordered:
        grid = panel["gridPos"]
        x, w, h = int(grid["x"]), int(grid["w"]), int(grid["h"])
        y = max(skyline[x : x + w])
        skyline[x : x + w] = [y + h] * w
        placed.append((panel, x, y, w, h))
    return placed, max(skyline)


def render_board(board: Mapping[str, Any], query: Query, window: TimeRange, out: Path) -> Preview:
    """Draw ``board`` over ``window`` into ``out`` (PNG); the rows each panel's queries returned."""
    chosen = variable_values(board, query)
    placed, rows = _layout(board)
    width, height = GRID_COLUMNS * INCH_PER_COLUMN, rows * INCH_PER_ROW + 0.6
    figure = Figure(figsize=(width, height), dpi=72)
    figure.suptitle(board.get("title", board.get("uid", "")), x=0.01, ha="left", fontsize=16)
    preview = Preview(str(board.get("uid", "")), out)
    for panel, x, y, w, h in placed:
        pad = 0.012
        left = x / GRID_COLUMNS + LEFT_MARGIN
        bottom = 1 - (y + h) * INCH_PER_ROW / height - 0.6 / height + pad * 2
        axes = figure.add_axes(
            (left, bottom, w / GRID_COLUMNS - LEFT_MARGIN - pad, h * INCH_PER_ROW / height - pad * 4)
        )
        series = [
            s for target in panel.get("targets", []) for s in query(render(target["query"], chosen, window))
        ]
        title = str(panel.get("title", ""))
        preview.rows_by_panel[title] = sum(len(s.get("values", [])) for s in series)
        axes.set_title(title, fontsize=10, loc="left")
        _DRAW.get(str(panel.get("type")), _draw_table)(axes, series, panel)
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, format="png")
    return preview


def _label(series: Mapping[str, Any], column: str) -> str:
    tags = " ".join(str(value) for value in (series.get("tags") or {}).values() if value)
    return f"{tags} {column}".strip()


def _numbers(values: Sequence[Any]) -> list[float]:
    return [float(v) if isinstance(v, int | float) and not isinstance(v, bool) else math.nan for v in values]


def _draw_time_series(axes: Axes, series: list[dict[str, Any]], panel: Mapping[str, Any]) -> None:
    for one in series:
        columns, rows = one["columns"], one.get("values", [])
        times = mdates.date2num([dt.datetime.fromtimestamp(row[0] / 1000, dt.UTC) for row in rows])  # type: ignore[no-untyped-call]
        for index, column in enumerate(columns[1:], start=1):
            axes.plot(times, _numbers([row[index] for row in rows]), label=_label(one, column), linewidth=1.2)
    axes.xaxis.set_major_formatter(mdates.DateFormatter("%H:%M"))  # type: ignore[no-untyped-call]
    axes.tick_params(labelsize=8)
    if series:
        axes.legend(fontsize=7, loc="upper left", ncols=2, frameon=False)
    else:
        _no_data(axes)


def _draw_stat(axes: Axes, series: list[dict[str, Any]], panel: Mapping[str, Any]) -> None:
    axes.set_axis_off()
    values = [v for one in series for row in one.get("values", []) for v in row[1:] if v is not None]
    if not values:
        _no_data(axes)
        return
    value = values[-1]
    unit = panel.get("fieldConfig", {}).get("defaults", {}).get("unit", "")
    text = f"{value:.4g}" if isinstance(value, float) else str(value)
    axes.text(
        0.5,
        0.4,
        f"{text} {UNITS.get(unit, '')}".strip(),
        ha="center",
        va="center",
        fontsize=26,
        transform=axes.transAxes,
    )


def _draw_table(axes: Axes, series: list[dict[str, Any]], panel: Mapping[str, Any]) -> None:
    axes.set_axis_off()
    rows: list[list[str]] = []
    header: list[str] = []
    for one in series:
        tags = one.get("tags") or {}
        header = [*tags, *one["columns"]]
        for row in one.get("values", []):
            cells = [*tags.values(), *row]
            rows.append([_cell(cell) for cell in cells])
    if not rows:
        _no_data(axes)
        return
    table = axes.table(cellText=rows[:TABLE_ROWS], colLabels=header, loc="upper center", cellLoc="left")
    table.auto_set_font_size(False)
    table.set_fontsize(7)


def _draw_geomap(axes: Axes, series: list[dict[str, Any]], panel: Mapping[str, Any]) -> None:
    for one in series:
        columns = one["columns"]
        if "lat" not in columns or "lon" not in columns:
            continue
        lat, lon = columns.index("lat"), columns.index("lon")
        rows = [row for row in one.get("values", []) if row[lat] is not None and row[lon] is not None]
        axes.scatter([row[lon] for row in rows], [row[lat] for row in rows], s=30, label=_label(one, ""))
    axes.tick_params(labelsize=8)
    # Metres east and north alike at Lviv's latitude; the box stays the panel's, the range grows.
    axes.set_aspect(1 / math.cos(math.radians(49.84)), adjustable="datalim")
    axes.ticklabel_format(useOffset=False)
    if not any(one.get("values") for one in series):
        _no_data(axes)


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, int) and value > 1_000_000_000_000:  # a time in ms
        return dt.datetime.fromtimestamp(value / 1000, dt.UTC).strftime("%H:%M")
    return "" if value is None else str(value)[:24]


def _no_data(axes: Axes) -> None:
    axes.text(0.5, 0.5, "No data", ha="center", va="center", color="grey", transform=axes.transAxes)


_DRAW: dict[str, Callable[[Axes, list[dict[str, Any]], Mapping[str, Any]], None]] = {
    "timeseries": _draw_time_series,
    "stat": _draw_stat,
    "table": _draw_table,
    "geomap": _draw_geomap,
}


def preview_all(
    boards: Mapping[str, Mapping[str, Any]], query: Query, window: TimeRange, folder: Path
) -> list[Preview]:
    """A PNG per dashboard in ``folder`` (``<uid>.png``)."""
    return [render_board(board, query, window, folder / f"{uid}.png") for uid, board in boards.items()]


def last_hours(hours: float, now_ms: int, points: int = 60) -> TimeRange:
    """The last ``hours`` to ``now_ms``, in about ``points`` steps (Grafana's $__interval)."""
    span_ms = int(hours * 3_600_000)
    return TimeRange(now_ms - span_ms, now_ms, max(1000, span_ms // points))
