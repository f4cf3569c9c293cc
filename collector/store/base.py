"""The store interface: one shape for the embedded SQLite store and every InfluxDB generation.

A point's identity is (measurement, tags, ts_ms): writing the same point twice changes nothing
visible, which makes at-least-once delivery harmless (see ARCHITECTURE.md).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    from collector.store.line_protocol import LineEncoder

FieldValue = bool | int | float | str
# The integers every store holds (InfluxDB's and SQLite's 64-bit integers); JSON's are unbounded.
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


@dataclass(frozen=True, slots=True)
class Point:
    """One stored point: a reading with the collector's identity tags (device, agent) added."""

    measurement: str
    tags: Mapping[str, str]
    ts_ms: int
    fields: Mapping[str, FieldValue]


DeviceKey = tuple[str, str, str]
"""(agent, device, measurement): one entry of a device list, in the order lists are paged; no agent is ""."""


def device_key(point: Point) -> DeviceKey:
    return (point.tags.get("agent", ""), point.tags.get("device", ""), point.measurement)


def newest_per_device(points: Iterable[Point]) -> list[Point]:
    """The newest point per (agent, device, measurement), sorted; points without a device are skipped.

    A device can have several series of one measurement when a descriptive tag changed (a bus
    changing route); the newest describes it now.
    """
    newest: dict[DeviceKey, Point] = {}
    for point in points:
        if not point.tags.get("device"):
            continue
        key = device_key(point)
        known = newest.get(key)
        if known is None or point.ts_ms > known.ts_ms:
            newest[key] = point
    return [newest[key] for key in sorted(newest)]


def point_order(point: Point) -> tuple[str, list[tuple[str, str]]]:
    """How ``latest`` sorts its points: by measurement, then tags."""
    return point.measurement, sorted(point.tags.items())


class Aggregate(StrEnum):
    MEAN = "mean"
    MIN = "min"
    MAX = "max"
    LAST = "last"
    SUM = "sum"
    COUNT = "count"


NUMERIC_ONLY = frozenset({Aggregate.MEAN, Aggregate.MIN, Aggregate.MAX, Aggregate.SUM})
"""The aggregates of numbers: a window's strings and booleans are left out of them."""


def check_window(window_s: int | None) -> None:
    """ValueError unless ``window_s`` (of ``range``) is None or a positive number of seconds."""
    if window_s is not None and window_s <= 0:
        raise ValueError(f"window_s must be a positive number of seconds, not {window_s}")


@dataclass(frozen=True, slots=True)
class Row:
    """One row of a range query: a window start (or a raw point's time) and its values."""

    ts_ms: int
    tags: Mapping[str, str]
    values: Mapping[str, FieldValue | None] = field(default_factory=dict)


def row_order(row: Row) -> tuple[int, list[tuple[str, str]]]:
    """How ``range`` sorts its rows: by time, then tags."""
    return row.ts_ms, sorted(row.tags.items())


class StoreError(Exception):
    """Base of store errors."""


class StoreUnavailable(StoreError):
    """The store cannot take writes now (down, overloaded, network); retrying later may succeed."""


class PointsRejected(StoreError):
    """Some points can never be written (e.g. field type conflict); the others were written.

    ``rejected`` pairs each refused point with the store's reason.
    """

    def __init__(self, rejected: Sequence[tuple[Point, str]]) -> None:
        super().__init__(f"{len(rejected)} point(s) rejected: {rejected[0][1] if rejected else ''}")
        self.rejected = list(rejected)


class LinesRejected(StoreError):
    """Some lines of line protocol can never be written; the others were written.

    ``rejected`` pairs the index of each refused line with the store's reason.
    """

    def __init__(self, rejected: Sequence[tuple[int, str]]) -> None:
        super().__init__(f"{len(rejected)} line(s) rejected: {rejected[0][1] if rejected else ''}")
        self.rejected = list(rejected)


class PointWriter(Protocol):
    def write(self, points: Sequence[Point]) -> None:
        """Write all points or raise: StoreUnavailable (nothing certain, retry) or PointsRejected.

        Called from several threads at once (the collector's ``store_writers``).
        """
        ...

    def close(self) -> None: ...


@runtime_checkable
class LineWriter(Protocol):
    """A store that also takes InfluxDB line protocol (ms precision) as is: the collector's fast path.

    ``encoder`` is the store's own: the collector converts readings for it with that one.
    """

    encoder: LineEncoder

    def write_lines(self, lines: Sequence[str]) -> None:
        """Write all lines or raise: StoreUnavailable (nothing certain, retry) or LinesRejected.

        Called from several threads at once, like ``write``.
        """
        ...


@dataclass(frozen=True, slots=True)
class Retention:
    """How long the store keeps points: it refuses older ones (``what`` names the setting)."""

    what: str
    ms: int


@runtime_checkable
class SchemaReader(Protocol):
    """A store that can tell what it will refuse: field types, and points older than it keeps."""

    def field_types(self) -> dict[str, dict[str, str]]:
        """``{measurement: {field: type}}`` in InfluxDB's names (float, integer, boolean, string).

        StoreUnavailable: not reachable now, ask again; StoreError: this store cannot tell.
        """
        ...

    def retention(self) -> Retention | None:
        """How long new points are kept (None: for ever, or not known); errors as ``field_types``."""
        ...


class TelemetryReader(Protocol):
    def latest(
        self, *, measurement: str | None = None, device: str | None = None, since_ms: int | None = None
    ) -> list[Point]:
        """The newest point of each series (measurement + tags), optionally filtered."""
        ...

    def latest_page(
        self,
        *,
        limit: int,
        after: DeviceKey | None = None,
        measurement: str | None = None,
        agent: str | None = None,
    ) -> list[Point]:
        """The newest point of the first ``limit`` devices after ``after`` in ``device_key`` order (as
        ``newest_per_device`` of ``latest``, one page of it), optionally of one measurement or agent:
        listed and cut by the store, so what is read grows with ``limit``, not with the series kept."""
        ...

    def range(
        self,
        *,
        measurement: str,
        start_ms: int,
        end_ms: int,
        device: str | None = None,
        fields: Sequence[str] | None = None,
        window_s: int | None = None,
        aggregate: Aggregate = Aggregate.MEAN,
    ) -> list[Row]:
        """Points of ``measurement`` in [start_ms, end_ms); aggregated per device over windows when
        ``window_s`` is given (windows aligned to the epoch, empty windows left out)."""
        ...

    def count_devices(
        self,
        *,
        measurement: str,
        start_ms: int,
        end_ms: int,
        device: str | None = None,
        fields: Sequence[str] | None = None,
    ) -> int:
        """How many devices have points (with one of ``fields``) in [start_ms, end_ms), counted by the
        store, not fetched: the most rows one window of ``range`` can have. Points without a device
        count as one more, as ``range`` gives them a row of their own."""
        ...

    def newest(
        self,
        *,
        measurement: str,
        start_ms: int,
        end_ms: int,
        limit: int,
        tags: Mapping[str, str] | None = None,
    ) -> list[Row]:
        """The ``limit`` newest raw points of ``measurement`` in [start_ms, end_ms) whose tags have the
        values in ``tags``, newest first: sorted and cut by the store, never fetched whole."""
        ...

    def count_by_tag(
        self,
        *,
        measurement: str,
        start_ms: int,
        end_ms: int,
        tag: str,
        tags: Mapping[str, str] | None = None,
    ) -> dict[str, int]:
        """Points of ``measurement`` in [start_ms, end_ms) (with the values in ``tags``) per value of
        ``tag`` ("" without it), counted by the store."""
        ...


class Store(PointWriter, TelemetryReader, Protocol):
    """A store that can be written and read."""


Tags = Mapping[str, str]
__all__ = [
    "INT64_MAX",
    "INT64_MIN",
    "NUMERIC_ONLY",
    "Aggregate",
    "DeviceKey",
    "FieldValue",
    "LineWriter",
    "LinesRejected",
    "Point",
    "PointWriter",
    "PointsRejected",
    "Retention",
    "Row",
    "SchemaReader",
    "Store",
    "StoreError",
    "StoreUnavailable",
    "Tags",
    "TelemetryReader",
    "check_window",
    "device_key",
    "newest_per_device",
    "point_order",
    "row_order",
]
