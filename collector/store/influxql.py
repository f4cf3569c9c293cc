"""InfluxQL reads over ``/query``: what the InfluxDB stores answer the API and the collector with.

Every InfluxDB generation answers InfluxQL (2.x through its v1-compatible ``/query``), so one
reader serves both writers. Values go in as bound parameters; identifiers are checked against
the wire contract's name pattern and double-quoted.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

import httpx

from citygw.contract.wire import NAME_PATTERN, is_name
from collector.store.base import (
    Aggregate,
    DeviceKey,
    FieldValue,
    Point,
    Retention,
    Row,
    StoreError,
    StoreUnavailable,
    device_key,
    newest_per_device,
)
from collector.store.influx_write import PermissionDenied, error_text, refused

_NS_PER_MS = 1_000_000
_MAX_TIME_MS = (2**63 - 2) // _NS_PER_MS
_NUMERIC_ONLY = {Aggregate.MEAN, Aggregate.MIN, Aggregate.MAX, Aggregate.SUM}


def quote_identifier(name: str, what: str = "name") -> str:
    """``name`` double-quoted for InfluxQL, after checking it against the wire contract's name pattern."""
    if not is_name(name):
        raise ValueError(f"{what} {name!r} does not match {NAME_PATTERN}")
    return f'"{name}"'


class InfluxQLReader:
    """Latest points and ranges through InfluxQL on ``/query`` (1.x natively, 2.x/3.x v1-compatible)."""

    def __init__(self, http: httpx.Client, database: str) -> None:
        self._http = http
        self._database = database

    def query(self, statement: str, params: Mapping[str, object] | None = None) -> list[dict[str, Any]]:
        """The series of one InfluxQL statement; values only through ``params`` ($name)."""
        form = {"q": statement, "db": self._database, "epoch": "ms"}
        if params:
            form["params"] = json.dumps(params)
        try:
            response = self._http.post("/query", data=form)
        except httpx.HTTPError as exc:
            raise StoreUnavailable(f"InfluxDB query at {self._http.base_url}: {exc!r}") from exc
        if response.status_code in (401, 403):
            raise refused(self._http.base_url, response.status_code, error_text(response.content))
        if response.status_code == 400:
            raise StoreError(f"InfluxQL {statement!r} refused: {error_text(response.content)}")
        if response.status_code != 200:
            raise StoreUnavailable(
                f"InfluxDB query at {self._http.base_url}: HTTP {response.status_code} "
                f"{error_text(response.content)}"
            )
        (result,) = response.json()["results"]
        if "error" in result:
            message = str(result["error"])
            if message.startswith("database not found"):
                raise StoreUnavailable(f"InfluxDB at {self._http.base_url}: {message}")
            raise StoreError(f"InfluxQL {statement!r}: {message}")
        series: list[dict[str, Any]] = result.get("series", [])
        return series

    def field_types(self, measurement: str | None = None) -> dict[str, dict[str, str]]:
        """{measurement: {field: type}} from SHOW FIELD KEYS (the first type wins on a conflict)."""
        statement = "SHOW FIELD KEYS"
        if measurement is not None:
            statement += " FROM " + quote_identifier(measurement, "measurement")
        types: dict[str, dict[str, str]] = {}
        for series in self.query(statement):
            _expect_columns(series, statement, "fieldKey", "fieldType")
            known = types.setdefault(series["name"], {})
            for name, kind in series.get("values", []):
                known.setdefault(name, kind)
        return types

    def default_retention(self) -> Retention | None:
        """The database's default retention policy, if it does not keep points for ever."""
        statement = f'SHOW RETENTION POLICIES ON "{self._database}"'
        for series in self.query(statement):
            columns = _expect_columns(series, statement, "name", "duration", "default")
            for row in series.get("values", []):
                policy = dict(zip(columns, row, strict=True))
                if policy.get("default"):
                    ms = go_duration_ms(str(policy["duration"]))
                    what = f"retention policy {policy['name']!r} ({policy['duration']})"
                    return None if ms is None else Retention(what, ms)
        return None

    def latest(
        self, *, measurement: str | None = None, device: str | None = None, since_ms: int | None = None
    ) -> list[Point]:
        """The newest point of each series (measurement + tags), optionally filtered."""
        source = "/.*/" if measurement is None else quote_identifier(measurement, "measurement")
        where, params = _conditions(device=device, start_ms=since_ms)
        series_list = self.query(
            f"SELECT * FROM {source}{where} GROUP BY * ORDER BY time DESC LIMIT 1", params
        )
        if not series_list:
            return []
        types = self.field_types(measurement)
        points: list[Point] = []
        for series in series_list:
            name = series["name"]
            for ts, values in _rows(series, types.get(name, {})):
                if values:
                    points.append(Point(name, _tags(series), ts, values))
        points.sort(key=lambda p: (p.measurement, sorted(p.tags.items())))
        return points

    def latest_page(
        self,
        *,
        limit: int,
        after: DeviceKey | None = None,
        measurement: str | None = None,
        agent: str | None = None,
    ) -> list[Point]:
        """One page of newest points per device, read per agent in order: SHOW TAG VALUES of "device"
        after the cursor with LIMIT (one list per measurement), then the newest point of those only."""
        if limit <= 0:
            return []
        source = "" if measurement is None else f" FROM {quote_identifier(measurement, 'measurement')}"
        agents = [agent] if agent is not None else ["", *sorted(self._tag_values(source, "agent"))]
        page: list[DeviceKey] = []
        for agent_id in agents:
            if after is not None and agent_id < after[0]:
                continue
            resume = after if after is not None and agent_id == after[0] else None
            page += self._devices_of(source, agent_id, resume, limit - len(page))
            if len(page) >= limit:
                break
        points: list[Point] = []
        for agent_id in dict.fromkeys(key[0] for key in page):
            wanted = {key for key in page if key[0] == agent_id}
            points += [p for p in self._newest_of(agent_id, wanted) if device_key(p) in wanted]
        return newest_per_device(points)

    def _tag_values(
        self,
        source: str,
        key: str,
        where: str = "",
        params: Mapping[str, object] | None = None,
        limit: int | None = None,
    ) -> dict[str, set[str]]:
        """{value: measurements having it} of tag ``key``; at most ``limit`` values per measurement."""
        statement = f'SHOW TAG VALUES{source} WITH KEY = "{key}"{where}'
        if limit is not None:
            statement += f" LIMIT {int(limit)}"
        found: dict[str, set[str]] = {}
        for series in self.query(statement, params):
            for _key, value in series.get("values", []):
                found.setdefault(str(value), set()).add(series["name"])
        return found

    def _devices_of(self, source: str, agent_id: str, after: DeviceKey | None, limit: int) -> list[DeviceKey]:
        """The first ``limit`` (agent, device, measurement) of one agent after ``after``."""
        where = ' WHERE "agent" = $agent'
        params: dict[str, object] = {"agent": agent_id}
        found: list[DeviceKey] = []
        if after is not None:  # the cursor's own device in the measurements after its one
            same = self._tag_values(
                source, "device", where + ' AND "device" = $device', {**params, "device": after[1]}
            )
            found += [(agent_id, after[1], m) for m in same.get(after[1], ()) if m > after[2]]
            where += f' AND "device" =~ /{_after_pattern(after[1])}/'
        listed = self._tag_values(source, "device", where, params, limit=limit)
        found += [(agent_id, device, m) for device, names in listed.items() for m in names]
        return sorted(found)[:limit]

    def _newest_of(self, agent_id: str, page: set[DeviceKey]) -> list[Point]:
        """The newest point of each (device, measurement) of ``page``: grouped by agent and device only,
        so a device with many series (a descriptive tag that changed) is still one row; its other
        tags come back as columns."""
        sources = ",".join(quote_identifier(m, "measurement") for m in sorted({key[2] for key in page}))
        devices = "|".join(_literal(device) for device in sorted({key[1] for key in page}))
        statement = (
            f'SELECT * FROM {sources} WHERE "agent"::tag = $agent AND "device"::tag =~ /^(?:{devices})$/'
            ' GROUP BY "agent", "device" ORDER BY time DESC LIMIT 1'
        )
        types = self.field_types()
        points = []
        for series in self.query(statement, {"agent": agent_id}):
            fields_of = types.get(series["name"], {})
            for ts, values in _rows(series, fields_of):
                fields = {name: value for name, value in values.items() if name in fields_of}
                tags = {name: str(v) for name, v in values.items() if name not in fields_of and v != ""}
                if fields:
                    points.append(Point(series["name"], {**tags, **_tags(series)}, ts, fields))
        return points

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
        """Points of ``measurement`` in [start_ms, end_ms), raw or aggregated per device and window."""
        if window_s is not None and window_s <= 0:
            raise ValueError(f"window_s must be a positive number of seconds, not {window_s}")
        source = quote_identifier(measurement, "measurement")
        wanted = None if fields is None else [quote_identifier(name, "field") for name in fields]
        where, params = _conditions(device=device, start_ms=start_ms, end_ms=end_ms)
        types = self.field_types(measurement).get(measurement, {})
        if not types or wanted == []:
            return []
        rows: list[Row] = []
        if window_s is None:
            selection = "*" if wanted is None else ", ".join(wanted)
            for series in self.query(f"SELECT {selection} FROM {source}{where} GROUP BY *", params):
                rows += [Row(ts, _tags(series), values) for ts, values in _rows(series, types) if values]
        else:
            chosen = [name for name in types if fields is None or name in fields]
            if aggregate in _NUMERIC_ONLY:
                chosen = [name for name in chosen if types[name] in ("integer", "float")]
            if not chosen:
                return []
            function = aggregate.value
            selection = ", ".join(f'{function}("{name}") AS "{name}"' for name in chosen)
            statement = (
                f'SELECT {selection} FROM {source}{where} GROUP BY time({window_s}s), "device" fill(none)'
            )
            result_types = {name: _aggregate_type(aggregate, types[name]) for name in chosen}
            for series in self.query(statement, params):
                rows += [
                    Row(ts, _tags(series), values) for ts, values in _rows(series, result_types) if values
                ]
        rows.sort(key=lambda r: (r.ts_ms, sorted(r.tags.items())))
        return rows

    def count_devices(
        self,
        *,
        measurement: str,
        start_ms: int,
        end_ms: int,
        device: str | None = None,
        fields: Sequence[str] | None = None,
    ) -> int:
        """Devices with points (with one of ``fields``) in [start_ms, end_ms), counted inside InfluxDB.

        The inner query has a row per device ("" for points without one); fill(0) gives every column
        of such a row a value, so the outer COUNT of any column is the number of devices: one row
        comes back, however many devices there are.
        """
        if fields is not None and not fields:
            return 0
        source = quote_identifier(measurement, "measurement")
        counted = (
            "COUNT(*)"
            if fields is None
            else ", ".join(f"COUNT({quote_identifier(name, 'field')})" for name in fields)
        )
        where, params = _conditions(device=device, start_ms=start_ms, end_ms=end_ms)
        statement = f'SELECT COUNT(*) FROM (SELECT {counted} FROM {source}{where} GROUP BY "device" fill(0))'
        return max(
            (
                int(value)
                for series in self.query(statement, params)
                for row in series.get("values", [])
                for value in row[1:]
                if value is not None
            ),
            default=0,
        )

    def newest(
        self,
        *,
        measurement: str,
        start_ms: int,
        end_ms: int,
        limit: int,
        tags: Mapping[str, str] | None = None,
    ) -> list[Row]:
        """The ``limit`` newest points, newest first: ORDER BY time DESC LIMIT inside InfluxDB."""
        if limit <= 0:
            return []
        types = self.field_types(measurement).get(measurement, {})
        if not types:
            return []
        where, params = _conditions(device=None, start_ms=start_ms, end_ms=end_ms, tags=tags)
        source = quote_identifier(measurement, "measurement")
        statement = f"SELECT * FROM {source}{where} ORDER BY time DESC LIMIT {int(limit)}"
        rows: list[Row] = []
        for series in self.query(statement, params):  # one series: no GROUP BY, tags are columns
            for ts, values in _rows(series, types):
                fields = {name: value for name, value in values.items() if name in types}
                tag_values = {name: str(v) for name, v in values.items() if name not in types and v != ""}
                if fields:
                    rows.append(Row(ts, tag_values, fields))
        return rows

    def count_by_tag(
        self,
        *,
        measurement: str,
        start_ms: int,
        end_ms: int,
        tag: str,
        tags: Mapping[str, str] | None = None,
    ) -> dict[str, int]:
        """Points per value of ``tag``, counted inside InfluxDB (a point counts once: its most-set field)."""
        where, params = _conditions(device=None, start_ms=start_ms, end_ms=end_ms, tags=tags)
        source = quote_identifier(measurement, "measurement")
        statement = f"SELECT COUNT(*) FROM {source}{where} GROUP BY {quote_identifier(tag, 'tag')}"
        counts: dict[str, int] = {}
        for series in self.query(statement, params):
            value = series.get("tags", {}).get(tag, "")
            counted = [int(v) for row in series.get("values", []) for v in row[1:] if v is not None]
            counts[value] = counts.get(value, 0) + max(counted, default=0)
        return counts


def _expect_columns(series: Mapping[str, Any], statement: str, *names: str) -> list[str]:
    """The series' columns, if they include ``names``; else StoreError: the server answers
    InfluxQL in form only (VictoriaMetrics lists its databases whatever it is asked)."""
    columns: list[str] = list(series.get("columns", []))
    if not set(names) <= set(columns):
        raise StoreError(f"{statement!r} answered columns {columns}, not {list(names)}: no InfluxQL here")
    return columns


_GO_DURATION = re.compile(r"(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?")


def go_duration_ms(text: str) -> int | None:
    """A duration as InfluxDB writes a retention policy's (``168h0m0s``) in ms; None for ``0s`` (for ever)."""
    match = _GO_DURATION.fullmatch(text)
    if not text or match is None:
        raise ValueError(f"not a retention policy duration like 168h0m0s: {text!r}")
    hours, minutes, seconds = (int(part or 0) for part in match.groups())
    ms = ((hours * 60 + minutes) * 60 + seconds) * 1000
    return ms or None


def _conditions(
    *,
    device: str | None,
    start_ms: int | None,
    end_ms: int | None = None,
    tags: Mapping[str, str] | None = None,
) -> tuple[str, dict[str, object]]:
    clauses: list[str] = []
    params: dict[str, object] = {}
    if start_ms is not None:
        clauses.append("time >= $start")
        params["start"] = _clamp(start_ms) * _NS_PER_MS
    if end_ms is not None:
        clauses.append("time < $end")
        params["end"] = _clamp(end_ms) * _NS_PER_MS
    if device is not None:
        # ::tag: InfluxQL takes an unqualified name for a field of that name when one exists.
        clauses.append('"device"::tag = $device')
        params["device"] = device
    for number, (name, value) in enumerate(sorted((tags or {}).items())):
        clauses.append(f"{quote_identifier(name, 'tag')}::tag = $tag{number}")
        params[f"tag{number}"] = value
    return (" WHERE " + " AND ".join(clauses) if clauses else ""), params


def _clamp(ts_ms: int) -> int:
    """``ts_ms`` within the times InfluxDB can represent (int64 nanoseconds, about 1677 to 2262)."""
    return max(-_MAX_TIME_MS, min(_MAX_TIME_MS, ts_ms))


def _literal(text: str) -> str:
    """``text`` as an InfluxQL (RE2) regex matching it literally: every character as ``\\x{...}``."""
    return "".join(f"\\x{{{ord(char):x}}}" for char in text)


def _after_pattern(text: str) -> str:
    """A regex (RE2, anchored) matching the strings after ``text`` in code point order: InfluxQL compares
    tags only for equality or by regex, and lists their values in that order."""
    pattern = ".+"  # ``text`` itself followed by anything
    for char in reversed(text):
        pattern = f"[^\\x00-\\x{{{ord(char):x}}}]|{_literal(char)}(?:{pattern})"
    return f"^(?:{pattern})"


def _aggregate_type(aggregate: Aggregate, field_type: str) -> str:
    if aggregate is Aggregate.MEAN:
        return "float"
    if aggregate is Aggregate.COUNT:
        return "integer"
    return field_type


def _tags(series: Mapping[str, Any]) -> dict[str, str]:
    # GROUP BY * lists every tag key of the measurement; a series without one shows it as "".
    return {key: value for key, value in series.get("tags", {}).items() if value != ""}


def _rows(series: Mapping[str, Any], types: Mapping[str, str]) -> list[tuple[int, dict[str, FieldValue]]]:
    """(ts_ms, values) of a series, nulls left out and numbers given their stored type back.

    InfluxDB's JSON writes the float 5.0 as 5; the field's type restores it.
    """
    columns: list[str] = series["columns"]
    rows: list[tuple[int, dict[str, FieldValue]]] = []
    for raw in series.get("values", []):
        values: dict[str, FieldValue] = {}
        for column, value in zip(columns[1:], raw[1:], strict=True):
            if value is None:
                continue
            kind = types.get(column)
            # type() is: a bool is an int; a string is a shard where the field has another type.
            if kind == "float" and type(value) is int:
                value = float(value)
            elif kind == "integer" and type(value) is float:
                value = int(value)
            values[column] = value
        rows.append((int(raw[0]), values))
    return rows


class InfluxQLReads:
    """The read half shared by both writers: delegates to one InfluxQLReader."""

    reader: InfluxQLReader

    def latest(
        self, *, measurement: str | None = None, device: str | None = None, since_ms: int | None = None
    ) -> list[Point]:
        """The newest point of each series (measurement + tags), optionally filtered."""
        return self.reader.latest(measurement=measurement, device=device, since_ms=since_ms)

    def latest_page(
        self,
        *,
        limit: int,
        after: DeviceKey | None = None,
        measurement: str | None = None,
        agent: str | None = None,
    ) -> list[Point]:
        """One page of newest points per device, listed and cut inside InfluxDB."""
        return self.reader.latest_page(limit=limit, after=after, measurement=measurement, agent=agent)

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
        """Points of ``measurement`` in [start_ms, end_ms), raw or aggregated per device and window."""
        return self.reader.range(
            measurement=measurement,
            start_ms=start_ms,
            end_ms=end_ms,
            device=device,
            fields=fields,
            window_s=window_s,
            aggregate=aggregate,
        )

    def count_devices(
        self,
        *,
        measurement: str,
        start_ms: int,
        end_ms: int,
        device: str | None = None,
        fields: Sequence[str] | None = None,
    ) -> int:
        """Devices with points (with one of ``fields``) in [start_ms, end_ms), counted inside InfluxDB."""
        return self.reader.count_devices(
            measurement=measurement, start_ms=start_ms, end_ms=end_ms, device=device, fields=fields
        )

    def newest(
        self,
        *,
        measurement: str,
        start_ms: int,
        end_ms: int,
        limit: int,
        tags: Mapping[str, str] | None = None,
    ) -> list[Row]:
        """The ``limit`` newest points, newest first, sorted and cut inside InfluxDB."""
        return self.reader.newest(
            measurement=measurement, start_ms=start_ms, end_ms=end_ms, limit=limit, tags=tags
        )

    def count_by_tag(
        self,
        *,
        measurement: str,
        start_ms: int,
        end_ms: int,
        tag: str,
        tags: Mapping[str, str] | None = None,
    ) -> dict[str, int]:
        """Points per value of ``tag``, counted inside InfluxDB."""
        return self.reader.count_by_tag(
            measurement=measurement, start_ms=start_ms, end_ms=end_ms, tag=tag, tags=tags
        )

    def field_types(self) -> dict[str, dict[str, str]]:
        """``{measurement: {field: type}}`` of the whole database (SHOW FIELD KEYS)."""
        try:
            return self.reader.field_types()
        except PermissionDenied as exc:
            raise StoreError(f"{exc}; {_READ_TOO}") from exc

    def retention(self) -> Retention | None:
        """The duration of the database's default retention policy (None: infinite)."""
        try:
            return self.reader.default_retention()
        except PermissionDenied as exc:
            raise StoreError(f"{exc}; {_READ_TOO}") from exc


_READ_TOO = "grant the collector's user READ too (GRANT ALL, docs/deploy.md) so it knows them from the start"
