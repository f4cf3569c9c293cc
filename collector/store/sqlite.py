"""The embedded store: one SQLite file (WAL), no server; same contract as the InfluxDB stores.

Writes go through one connection, one at a time; reads each take a connection of their own from a
pool, so a read never waits for a write (a commit's fsync, a lock held by another process) nor for
another read: in WAL mode SQLite lets readers and the writer work at once.
"""

from __future__ import annotations

import json
import math
import sqlite3
import threading
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from collector.store.base import (
    INT64_MAX,
    INT64_MIN,
    NUMERIC_ONLY,
    Aggregate,
    DeviceKey,
    FieldValue,
    Point,
    PointsRejected,
    Row,
    StoreUnavailable,
    check_window,
    point_order,
    row_order,
)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS points (
    measurement TEXT NOT NULL,
    tags_key TEXT NOT NULL,
    device TEXT,
    ts_ms INTEGER NOT NULL,
    fields TEXT NOT NULL,
    UNIQUE (measurement, tags_key, ts_ms)
);
CREATE INDEX IF NOT EXISTS points_by_time ON points (measurement, ts_ms);
CREATE INDEX IF NOT EXISTS points_by_device ON points (device, ts_ms);
CREATE TABLE IF NOT EXISTS field_types (
    measurement TEXT NOT NULL,
    field TEXT NOT NULL,
    type TEXT NOT NULL,
    PRIMARY KEY (measurement, field)
);
"""

_UPSERT = """
INSERT INTO points (measurement, tags_key, device, ts_ms, fields) VALUES (?, ?, ?, ?, ?)
ON CONFLICT (measurement, tags_key, ts_ms) DO UPDATE SET fields = json_patch(fields, excluded.fields)
"""


# Window start of ts_ms for a window of ? ms (the same ? bound twice), correct for negative times too.
_WINDOW_START = "(ts_ms - (((ts_ms % ?) + ?) % ?))"

_SQL_AGGREGATE = {
    Aggregate.MEAN: "AVG(j.value)",
    Aggregate.MIN: "MIN(j.value)",
    Aggregate.MAX: "MAX(j.value)",
    Aggregate.SUM: "SUM(j.value)",
    Aggregate.COUNT: "COUNT(j.value)",
}


def tags_key(tags: Iterable[tuple[str, str]]) -> str:
    """Canonical encoding of a tag set: JSON object with sorted keys (the series identity)."""
    return json.dumps(dict(sorted(tags)), separators=(",", ":"), ensure_ascii=False)


def field_type(value: FieldValue) -> str:
    """InfluxDB's name for the type of a field value (bool before int: bool is an int in Python)."""
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "float"
    return "string"


def _invalid(point: Point) -> str | None:
    """Why a point can never be stored, or None."""
    if not point.fields:
        return "point has no fields"
    for name, value in point.fields.items():
        if isinstance(value, float) and not math.isfinite(value):
            return f'field "{name}" is not a finite number'
        if isinstance(value, int) and not isinstance(value, bool) and not INT64_MIN <= value <= INT64_MAX:
            return f'field "{name}" is out of the 64-bit integer range'
        if not isinstance(value, bool | int | float | str):
            return f'field "{name}" has unsupported type {type(value).__name__}'
    return None


class SqliteStore:
    """Points in one SQLite table keyed by (measurement, tags, ts_ms); rewrites merge fields.

    The collector's threads write through one connection behind a lock; the API's reads each
    borrow a read-only connection of the pool (an in-memory database has one connection only, so
    there reads take the lock too). Field types are fixed per measurement at first write, as in
    InfluxDB, so a type conflict is rejected the same way by every store.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        self._lock = threading.Lock()  # the write connection's
        self._pool_lock = threading.Lock()
        self._idle_readers: list[sqlite3.Connection] = []
        self._readers: list[sqlite3.Connection] = []
        self._closed = False
        self._in_memory = self.path == ":memory:" or "mode=memory" in self.path
        try:
            self._db = _connect(self.path)
            self._db.execute("PRAGMA journal_mode=WAL")
            # FULL: a commit is on disk before write() returns, so what the collector acknowledges
            # next survives a power cut (NORMAL may roll the last commits back); one fsync a batch.
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(_SCHEMA)
            self._types: dict[tuple[str, str], str] = {
                (m, f): t for m, f, t in self._db.execute("SELECT measurement, field, type FROM field_types")
            }
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"cannot open SQLite store {self.path}: {exc}") from exc

    def write(self, points: Sequence[Point]) -> None:
        """Upsert all points in one transaction; points that can never be stored raise PointsRejected."""
        rejected: list[tuple[Point, str]] = []
        rows: list[tuple[str, str, str | None, int, str]] = []
        new_types: dict[tuple[str, str], str] = {}
        with self._lock:
            for point in points:
                reason = _invalid(point) or self._type_conflict(point, new_types)
                if reason:
                    rejected.append((point, reason))
                    continue
                for name, value in point.fields.items():
                    new_types.setdefault((point.measurement, name), field_type(value))
                rows.append(
                    (
                        point.measurement,
                        tags_key(point.tags.items()),
                        point.tags.get("device"),
                        point.ts_ms,
                        json.dumps(dict(point.fields), separators=(",", ":"), ensure_ascii=False),
                    )
                )
            added = {key: t for key, t in new_types.items() if key not in self._types}
            try:
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    self._db.executemany(
                        "INSERT OR IGNORE INTO field_types (measurement, field, type) VALUES (?, ?, ?)",
                        [(m, f, t) for (m, f), t in added.items()],
                    )
                    self._db.executemany(_UPSERT, rows)
                except BaseException:
                    self._db.execute("ROLLBACK")
                    raise
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                raise StoreUnavailable(f"SQLite store {self.path}: {exc}") from exc
            self._types.update(added)
        if rejected:
            raise PointsRejected(rejected)

    def _type_conflict(self, point: Point, new_types: dict[tuple[str, str], str]) -> str | None:
        for name, value in point.fields.items():
            key = (point.measurement, name)
            known = self._types.get(key) or new_types.get(key)
            actual = field_type(value)
            if known is not None and known != actual:
                return (
                    f'field type conflict: input field "{name}" on measurement "{point.measurement}" '
                    f"is type {actual}, already exists as type {known}"
                )
        return None

    def latest(
        self, *, measurement: str | None = None, device: str | None = None, since_ms: int | None = None
    ) -> list[Point]:
        """The newest point of each series (measurement + tags), optionally filtered."""
        where, params = self._filters(measurement=measurement, device=device)
        if since_ms is not None:
            where.append("ts_ms >= ?")
            params.append(since_ms)
        # SQLite fills the bare columns of a MAX() aggregate from the row holding the maximum.
        sql = (
            "SELECT measurement, tags_key, MAX(ts_ms), fields FROM points"
            + (" WHERE " + " AND ".join(where) if where else "")
            + " GROUP BY measurement, tags_key"
        )
        points = [
            Point(m, json.loads(tags), ts, json.loads(fields))
            for m, tags, ts, fields in self._query(sql, params)
        ]
        points.sort(key=point_order)
        return points

    def latest_page(
        self,
        *,
        limit: int,
        after: DeviceKey | None = None,
        measurement: str | None = None,
        agent: str | None = None,
    ) -> list[Point]:
        """One page of newest points per device: GROUP BY (agent, device, measurement) ORDER BY it LIMIT."""
        if limit <= 0:
            return []
        agent_of = "COALESCE(json_extract(tags_key, ?), '')"
        where, params = self._filters(measurement=measurement, device=None)
        where.append("device IS NOT NULL AND device != ''")
        if agent is not None:
            where.append(f"{agent_of} = ?")
            params += [_json_path("agent"), agent]
        if after is not None:
            where.append(f"({agent_of}, device, measurement) > (?, ?, ?)")
            params += [_json_path("agent"), *after]
        # SQLite fills the bare columns of a MAX() aggregate from the row holding the maximum.
        sql = (
            f"SELECT measurement, tags_key, MAX(ts_ms), fields, {agent_of} AS agent_id FROM points"
            f" WHERE {' AND '.join(where)} GROUP BY agent_id, device, measurement"
            " ORDER BY agent_id, device, measurement LIMIT ?"
        )
        return [
            Point(m, json.loads(tags), ts, json.loads(fields))
            for m, tags, ts, fields, _agent in self._query(sql, [_json_path("agent"), *params, limit])
        ]

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
        """Points of ``measurement`` in [start_ms, end_ms), raw or aggregated per device and window.

        Rows carry only the fields a point (or window) has; raw rows with none of the wanted
        fields are left out, as InfluxDB does.
        """
        check_window(window_s)
        where, params = self._filters(measurement=measurement, device=device)
        where.append("ts_ms >= ? AND ts_ms < ?")
        params += [start_ms, end_ms]
        if window_s is None:
            return self._raw(where, params, fields)
        return self._aggregated(where, params, fields, window_s * 1000, aggregate)

    def count_devices(
        self,
        *,
        measurement: str,
        start_ms: int,
        end_ms: int,
        device: str | None = None,
        fields: Sequence[str] | None = None,
    ) -> int:
        """Devices with points (with one of ``fields``) in [start_ms, end_ms); no device counts as one."""
        if fields is not None and not fields:
            return 0
        where, params = self._filters(measurement=measurement, device=device)
        where.append("ts_ms >= ? AND ts_ms < ?")
        params += [start_ms, end_ms]
        if fields is not None:
            keys = ", ".join("?" for _ in fields)
            where.append(f"EXISTS (SELECT 1 FROM json_each(points.fields) WHERE key IN ({keys}))")
            params += list(fields)
        # DISTINCT keeps one NULL: the points without a device, one more row per window in range().
        sql = "SELECT COUNT(*) FROM (SELECT DISTINCT device FROM points WHERE " + " AND ".join(where) + ")"
        ((count,),) = self._query(sql, params)
        return int(count)

    def newest(
        self,
        *,
        measurement: str,
        start_ms: int,
        end_ms: int,
        limit: int,
        tags: Mapping[str, str] | None = None,
    ) -> list[Row]:
        """The ``limit`` newest points, newest first: ORDER BY ts_ms DESC LIMIT on the time index."""
        where, params = self._tagged(measurement, start_ms, end_ms, tags)
        sql = "SELECT ts_ms, tags_key, fields FROM points WHERE " + " AND ".join(where)
        rows = self._query(sql + " ORDER BY ts_ms DESC, tags_key LIMIT ?", [*params, max(0, limit)])
        return [Row(ts, json.loads(tag_text), json.loads(encoded)) for ts, tag_text, encoded in rows]

    def count_by_tag(
        self,
        *,
        measurement: str,
        start_ms: int,
        end_ms: int,
        tag: str,
        tags: Mapping[str, str] | None = None,
    ) -> dict[str, int]:
        """Points per value of ``tag`` ("" without it), counted by SQLite."""
        where, params = self._tagged(measurement, start_ms, end_ms, tags)
        value = "COALESCE(json_extract(tags_key, ?), '')"
        sql = f"SELECT {value}, COUNT(*) FROM points WHERE {' AND '.join(where)} GROUP BY 1"
        return {str(key): int(count) for key, count in self._query(sql, [_json_path(tag), *params])}

    def _tagged(
        self, measurement: str, start_ms: int, end_ms: int, tags: Mapping[str, str] | None
    ) -> tuple[list[str], list[object]]:
        where, params = self._filters(measurement=measurement, device=None)
        where.append("ts_ms >= ? AND ts_ms < ?")
        params += [start_ms, end_ms]
        for name, wanted in sorted((tags or {}).items()):
            where.append("json_extract(tags_key, ?) = ?")
            params += [_json_path(name), wanted]
        return where, params

    def _raw(self, where: list[str], params: list[object], fields: Sequence[str] | None) -> list[Row]:
        sql = "SELECT ts_ms, tags_key, fields FROM points WHERE " + " AND ".join(where)
        result: list[Row] = []
        for ts, tags, encoded in self._query(sql, params):
            values: dict[str, FieldValue] = json.loads(encoded)
            if fields is not None:
                values = {name: values[name] for name in fields if name in values}
            if values:
                result.append(Row(ts, json.loads(tags), values))
        result.sort(key=row_order)
        return result

    def _aggregated(
        self,
        where: list[str],
        params: list[object],
        fields: Sequence[str] | None,
        window_ms: int,
        aggregate: Aggregate,
    ) -> list[Row]:
        if fields is not None:
            if not fields:
                return []
            where.append(f"j.key IN ({', '.join('?' for _ in fields)})")
            params += list(fields)
        if aggregate in NUMERIC_ONLY:
            where.append("j.type IN ('integer', 'real')")
        if aggregate is Aggregate.LAST:
            # Bare column j.value comes from the row with the newest ts_ms in the group.
            select = f"{_WINDOW_START} AS win, device, j.key, MAX(ts_ms), j.value, j.type"
        else:
            select = f"{_WINDOW_START} AS win, device, j.key, NULL, {_SQL_AGGREGATE[aggregate]}, NULL"
        sql = (
            f"SELECT {select} FROM points, json_each(points.fields) AS j WHERE "
            + " AND ".join(where)
            + " GROUP BY win, device, j.key"
        )
        grouped: dict[tuple[int, str | None], dict[str, FieldValue | None]] = {}
        for win, device, key, _, value, json_type in self._query(sql, [window_ms] * 3 + params):
            if json_type in ("true", "false"):
                value = json_type == "true"
            grouped.setdefault((win, device), {})[key] = value
        rows = [
            Row(win, {} if device is None else {"device": device}, values)
            for (win, device), values in grouped.items()
        ]
        rows.sort(key=row_order)
        return rows

    @staticmethod
    def _filters(*, measurement: str | None, device: str | None) -> tuple[list[str], list[object]]:
        where: list[str] = []
        params: list[object] = []
        if measurement is not None:
            where.append("measurement = ?")
            params.append(measurement)
        if device is not None:
            where.append("device = ?")
            params.append(device)
        return where, params

    def _query(self, sql: str, params: Sequence[object]) -> list[Any]:
        if self._in_memory:
            with self._lock:
                return self._read(self._db, sql, params)
        reader = self._borrow_reader()
        try:
            return self._read(reader, sql, params)
        finally:
            with self._pool_lock:
                if not self._closed:
                    self._idle_readers.append(reader)

    def _read(self, db: sqlite3.Connection, sql: str, params: Sequence[object]) -> list[Any]:
        try:
            return list(db.execute(sql, params))  # all rows: the read transaction ends here
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"SQLite store {self.path}: {exc}") from exc

    def _borrow_reader(self) -> sqlite3.Connection:
        """An idle read connection, or a new one (as many as reads run at once)."""
        with self._pool_lock:
            if self._closed:
                raise StoreUnavailable(f"SQLite store {self.path} is closed")
            if self._idle_readers:
                return self._idle_readers.pop()
        try:
            reader = _connect(self.path)
            reader.execute("PRAGMA query_only=ON")
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"SQLite store {self.path}: {exc}") from exc
        with self._pool_lock:
            self._readers.append(reader)
        return reader

    def close(self) -> None:
        with self._pool_lock:
            self._closed = True
            readers, self._readers, self._idle_readers = self._readers, [], []
        for reader in readers:
            reader.close()
        with self._lock:
            self._db.close()


def _connect(path: str) -> sqlite3.Connection:
    """A connection usable from any thread (one at a time), in autocommit mode: reads see every commit."""
    return sqlite3.connect(path, check_same_thread=False, timeout=10, isolation_level=None)


def _json_path(key: str) -> str:
    """The JSON path of an object member ``key``, quoted: any tag key is safe in it."""
    return "$." + json.dumps(key)


__all__ = ["SqliteStore", "field_type", "tags_key"]
