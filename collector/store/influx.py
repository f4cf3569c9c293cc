"""InfluxDB stores: line protocol writes over the v1 or v2 API, InfluxQL reads over ``/query``.

Every InfluxDB generation answers InfluxQL (2.x through its v1-compatible ``/query``), so one
reader serves both writers. Values go in as bound parameters; identifiers are checked against
the wire contract's name pattern and double-quoted.
"""

from __future__ import annotations

import gzip
import json
import re
from collections.abc import Callable, Mapping, Sequence
from math import isfinite as _isfinite
from typing import Any, NamedTuple

import httpx
import orjson
import urllib3
from influxdb_client.client.influxdb_client import InfluxDBClient
from influxdb_client.client.write import point as library_point
from influxdb_client.client.write.point import Point as LineProtocolPoint
from influxdb_client.client.write_api import SYNCHRONOUS
from influxdb_client.domain.write_precision import WritePrecision
from influxdb_client.rest import ApiException

from citygw.wire import NAME_PATTERN, ReadingDict, is_name
from collector.store.base import (
    INT64_MAX,
    INT64_MIN,
    Aggregate,
    DeviceKey,
    FieldValue,
    LinesRejected,
    Point,
    PointsRejected,
    Retention,
    Row,
    StoreError,
    StoreUnavailable,
    device_key,
    newest_per_device,
)

_DATABASE_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
_NS_PER_MS = 1_000_000
_MAX_TIME_MS = (2**63 - 2) // _NS_PER_MS
_NUMERIC_ONLY = {Aggregate.MEAN, Aggregate.MIN, Aggregate.MAX, Aggregate.SUM}
NUMBER_TYPES = frozenset({float, int, bool})  # what orjson writes as line protocol does
_MS: Any = WritePrecision.MS  # a str constant; WriteApi.write is annotated with the class
DEFAULT_TIMEOUT = httpx.Timeout(10.0, connect=3.0)


def library_line_protocol(point: Point) -> str:
    """The point as influxdb_client's own Point writes it (the reference for LineEncoder)."""
    record = LineProtocolPoint.from_dict(
        {"measurement": point.measurement, "tags": point.tags, "fields": point.fields, "time": point.ts_ms},
        write_precision=_MS,
    )
    line: str = record.to_line_protocol()
    return line


class _Layout(NamedTuple):
    names: tuple[str, ...]
    keys: tuple[str, ...]  # escaped, with '='
    pairs: tuple[tuple[str, str], ...]  # (name, key)


class LineEncoder:
    """Points to line protocol, byte for byte as influxdb_client's Point writes them, ten times faster.

    The escaping is the library's own (its translation tables; a test pins the output to
    ``library_line_protocol``). What makes it fast: the escaped series prefix (measurement and
    sorted tags) and the sorted, escaped field keys are computed once per series and per set of
    field names and cached, and no intermediate object is built per point. Anything unusual (a
    subclass of a field type) goes to the library.
    """

    def __init__(self, max_cached: int = 100_000) -> None:
        self.max_cached = max_cached
        self._prefixes: dict[tuple[Any, ...], str] = {}
        self._layouts: dict[tuple[str, ...], _Layout] = {}

    def line(self, point: Point) -> str:
        """One line (no newline); '' if the point has no writable field (all NaN or infinite)."""
        series = (point.measurement, tuple(point.tags.items()))
        prefix = self._prefixes.get(series) or self._prefix(series, point.measurement, point.tags)
        fields = self._fields(point.fields)
        if fields is None:
            return library_line_protocol(point)
        return f"{prefix}{fields} {point.ts_ms}" if fields else ""

    def reading_line(self, agent: str, reading: ReadingDict) -> str:
        """The line of ``Point(measurement, {**tags, "device": device, "agent": agent}, ts, fields)``."""
        fields = self._fields(reading["fields"])
        if not fields:  # nothing writable, or a value for the library
            tags = {**reading.get("tags", {}), "device": reading["device"], "agent": agent}
            return self.line(Point(reading["measurement"], tags, reading["ts"], reading["fields"]))
        return f"{self._reading_prefix(agent, reading)}{fields} {reading['ts']}"

    def reading_lines(self, agent: str, readings: Sequence[ReadingDict]) -> list[str]:
        """``reading_line`` of each of a message's validated readings, its numbers formatted at once.

        Float ``repr`` was the bulk of encoding: here orjson formats every number and boolean of
        the message in one call (the same shortest round-trip digits as ``repr``; ``5.0`` where
        the library writes ``5``, the same float to InfluxDB). A message with a string field, a
        value orjson would write as ``null`` (NaN, infinity: validated readings have none) or an
        integer beyond 64 bits takes ``reading_line``.
        """
        layouts = []
        values: list[FieldValue] = []
        for reading in readings:
            fields = reading["fields"]
            names = tuple(fields)
            layout = self._layouts.get(names) or self._layout(names)
            layouts.append(layout)
            values.extend(map(fields.__getitem__, layout.names))
        texts = number_texts(values)
        if texts is None:
            return [self.reading_line(agent, reading) for reading in readings]
        lines = []
        start = 0
        for reading, layout in zip(readings, layouts, strict=True):
            end = start + len(layout.keys)
            field_set = ",".join(map(str.__add__, layout.keys, texts[start:end]))
            lines.append(f"{self._reading_prefix(agent, reading)}{field_set} {reading['ts']}")
            start = end
        return lines

    def _reading_prefix(self, agent: str, reading: ReadingDict) -> str:
        tags = reading.get("tags")
        measurement, device = reading["measurement"], reading["device"]
        series = (measurement, device, agent, tuple(tags.items()) if tags else ())
        prefix = self._prefixes.get(series)
        if prefix is None:
            prefix = self._prefix(series, measurement, {**(tags or {}), "device": device, "agent": agent})
        return prefix

    def _prefix(self, series: tuple[Any, ...], measurement: str, tags: Mapping[str, str]) -> str:
        prefix = _series_prefix(measurement, tags)
        if len(self._prefixes) >= self.max_cached:
            self._prefixes.clear()
        self._prefixes[series] = prefix
        return prefix

    def _fields(self, fields: Mapping[str, FieldValue]) -> str | None:
        """The field set ('' if no value is writable), or None if a value needs the library."""
        names = tuple(fields)
        layout = self._layouts.get(names) or self._layout(names)
        parts = []
        for name, key in layout.pairs:
            value = fields[name]
            # type() is, not isinstance: a bool is an int, and subclasses go to the library.
            if type(value) is float:
                if not _isfinite(value):
                    continue
                text = repr(value)
                parts.append(key + (text[:-2] if text[-2:] == ".0" else text))
            elif type(value) is int:
                parts.append(f"{key}{value}i")
            elif type(value) is bool:
                parts.append(key + ("true" if value else "false"))
            elif type(value) is str:
                parts.append(f'{key}"{value.translate(library_point._ESCAPE_STRING)}"')
            else:
                return None
        return ",".join(parts)

    def _layout(self, names: tuple[str, ...]) -> _Layout:
        """The names and their escaped keys with '=' in the library's order (sorted by name)."""
        ordered = tuple(sorted(names))
        keys = tuple(map(_field_key, ordered))
        layout = _Layout(ordered, keys, tuple(zip(ordered, keys, strict=True)))
        if len(self._layouts) >= self.max_cached:
            self._layouts.clear()
        self._layouts[names] = layout
        return layout


def number_texts(values: list[FieldValue], *, large: bool = True) -> list[str] | None:
    """Each value as line protocol writes it (an int with its ``i``), all formatted by one
    ``orjson.dumps``: the shortest round-trip digits, as ``repr``. None if a value is not a number
    or a boolean, is NaN or infinite (orjson writes null) or is an integer beyond 64 bits; with
    ``large=False`` also if one is 1e16 or more (written with an exponent: for values orjson parsed,
    perhaps an integer beyond 64 bits read as a float). The caller then takes another way.
    """
    kinds = set(map(type, values))
    if not kinds <= NUMBER_TYPES:
        return None
    try:
        text = orjson.dumps(values)
    except orjson.JSONEncodeError:  # an integer beyond 64 bits
        return None
    if b"null" in text or (not large and b"e+" in text):
        return None
    texts = text.decode()[1:-1].split(",")
    if int in kinds:
        for index, value in enumerate(values):
            if type(value) is int:
                if not INT64_MIN <= value <= INT64_MAX:
                    return None
                texts[index] += "i"
    return texts


def line_template(measurement: str, tags: Mapping[str, str], names: Sequence[str]) -> str:
    """The lines of a series with these field names, to fill in twice with ``%``.

    ``template % field_texts`` puts each field's text (in the order of ``names``, ints already
    with their ``i``), then ``% ts_ms`` the time: ``m,t=v a=%s,b=%s %%d``. The escaping is the
    library's, as in ``LineEncoder``; a ``%`` in a name or tag is doubled.
    """
    prefix = _series_prefix(measurement, tags).replace("%", "%%%%")
    fields = ",".join(_field_key(name).replace("%", "%%%%") + "%s" for name in names)
    return f"{prefix}{fields} %%d"


def _series_prefix(measurement: str, tags: Mapping[str, str]) -> str:
    """Escaped measurement and tags (sorted by key, as the library writes them), then a space."""
    escaped_tags = []
    for key, value in sorted(tags.items()):
        escaped_key = str(key).translate(library_point._ESCAPE_KEY)
        escaped_value = str(value).translate(library_point._ESCAPE_KEY)
        if escaped_value.endswith("\\"):
            escaped_value += " "
        if escaped_key and escaped_value:
            escaped_tags.append(f"{escaped_key}={escaped_value}")
    escaped = measurement.translate(library_point._ESCAPE_MEASUREMENT)
    return f"{escaped}{',' if escaped_tags else ''}{','.join(escaped_tags)} "


def _field_key(name: str) -> str:
    return str(name).translate(library_point._ESCAPE_KEY) + "="


_ENCODER = LineEncoder()


def to_line_protocol(point: Point) -> str:
    """The point as one line of line protocol (influxdb_client's escaping); '' if it has no usable field."""
    return _ENCODER.line(point)


def quote_identifier(name: str, what: str = "name") -> str:
    """``name`` double-quoted for InfluxQL, after checking it against the wire contract's name pattern."""
    if not is_name(name):
        raise ValueError(f"{what} {name!r} does not match {NAME_PATTERN}")
    return f'"{name}"'


class _PermissionDenied(StoreUnavailable):
    """HTTP 403: the user was recognised and may not do this (retried: an admin may grant it)."""


def _refused(server: object, status: int, reason: str) -> StoreUnavailable:
    """401: who we are was not accepted; 403: it was, and may not do this (e.g. a read-only user writing)."""
    if status == 401:
        return StoreUnavailable(f"InfluxDB at {server}: authentication failed ({reason})")
    return _PermissionDenied(f"InfluxDB at {server}: permission denied ({reason})")


class _BadRequest(Exception):
    """The server refused (part of) a batch for good (HTTP 400)."""


class _TooLarge(Exception):
    """The batch is larger than the server accepts (HTTP 413)."""


def write_bisecting(points: Sequence[Point], send: Callable[[list[str]], None]) -> None:
    """``write_lines_bisecting`` for points: raises PointsRejected with exactly the refused points."""
    try:
        write_lines_bisecting([to_line_protocol(point) for point in points], send)
    except LinesRejected as exc:
        raise PointsRejected([(points[index], reason) for index, reason in exc.rejected]) from None


def write_lines_bisecting(lines: Sequence[str], send: Callable[[list[str]], None]) -> None:
    """Send ``lines`` through ``send``; on a refusal, find the bad lines by writing halves.

    Rewriting the lines a partial write already stored is harmless (same identity). Raises
    LinesRejected with exactly the refused lines (by index, in order) once all the others are
    written; an empty line stands for a point without a writable field.
    """
    rejected = [(index, _NO_FIELD) for index, line in enumerate(lines) if not line]
    usable = [index for index, line in enumerate(lines) if line] if rejected else range(len(lines))
    rejected += _send_halves(lines, usable, send)
    if rejected:
        raise LinesRejected(sorted(rejected))


_NO_FIELD = "point has no field with a writable value (NaN or infinite?)"


def _send_halves(
    lines: Sequence[str], indices: Sequence[int], send: Callable[[list[str]], None]
) -> list[tuple[int, str]]:
    if not indices:
        return []
    try:
        send([lines[index] for index in indices])
        return []
    except _BadRequest as exc:
        if len(indices) == 1:
            return [(indices[0], str(exc))]
    except _TooLarge:
        if len(indices) == 1:
            return [(indices[0], "point is larger than the server accepts (HTTP 413)")]
    middle = len(indices) // 2
    return _send_halves(lines, indices[:middle], send) + _send_halves(lines, indices[middle:], send)


def _error_text(body: bytes | str | None) -> str:
    """The server's reason from an error body (v1 says "error", v2 says "message")."""
    if body is None:
        return ""
    text = body.decode(errors="replace") if isinstance(body, bytes) else body
    try:
        decoded = json.loads(text)
    except ValueError:
        return text.strip()[:500]
    if isinstance(decoded, dict):
        return str(decoded.get("error") or decoded.get("message") or decoded)[:500]
    return text.strip()[:500]


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
            raise _refused(self._http.base_url, response.status_code, _error_text(response.content))
        if response.status_code == 400:
            raise StoreError(f"InfluxQL {statement!r} refused: {_error_text(response.content)}")
        if response.status_code != 200:
            raise StoreUnavailable(
                f"InfluxDB query at {self._http.base_url}: HTTP {response.status_code} "
                f"{_error_text(response.content)}"
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


class _InfluxReads:
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
        except _PermissionDenied as exc:
            raise StoreError(f"{exc}; {_READ_TOO}") from exc

    def retention(self) -> Retention | None:
        """The duration of the database's default retention policy (None: infinite)."""
        try:
            return self.reader.default_retention()
        except _PermissionDenied as exc:
            raise StoreError(f"{exc}; {_READ_TOO}") from exc


_READ_TOO = "grant the collector's user READ too (GRANT ALL, docs/deploy.md) so it knows them from the start"


class InfluxV1Store(_InfluxReads):
    """InfluxDB 1.x API: POST /write (ms precision) with user/password, InfluxQL reads.

    Writes are gzip-compressed unless ``gzip=False``: for an InfluxDB on the same host, where
    compressing costs both sides CPU and saves no network (see collector/README.md, "Speed").
    """

    def __init__(
        self,
        base_url: str,
        database: str,
        username: str | None = None,
        password: str | None = None,
        *,
        gzip: bool = True,
        timeout: httpx.Timeout = DEFAULT_TIMEOUT,
    ) -> None:
        if not _DATABASE_RE.fullmatch(database):
            raise ValueError(f"InfluxDB database name {database!r} does not match {_DATABASE_RE.pattern}")
        self.database = database
        self.gzip = gzip
        auth = httpx.BasicAuth(username, password or "") if username else None
        self._http = httpx.Client(base_url=base_url, auth=auth, timeout=timeout)
        self.reader = InfluxQLReader(self._http, database)

    def ensure_database(self) -> None:
        """Create the database if this user cannot see it yet; call at start-up.

        With auth on, CREATE DATABASE needs an admin, while SHOW DATABASES lists to any user the
        databases it has a privilege on: a least-privilege writer or reader whose database exists
        carries on; one whose database is missing gets a StoreError naming the admin's step.
        """
        listed = self.reader.query("SHOW DATABASES")
        if any(row[0] == self.database for series in listed for row in series.get("values", [])):
            return
        try:
            self.reader.query(f'CREATE DATABASE "{self.database}"')
        except StoreUnavailable as exc:
            if "privilege" not in str(exc):
                raise
            raise StoreError(
                f"InfluxDB at {self._http.base_url}: database {self.database!r} does not exist or this "
                f"user has no privilege on it, and only an admin may create it: as an admin run "
                f'CREATE DATABASE "{self.database}" and GRANT WRITE (collector, API) or READ (Grafana) '
                f'ON "{self.database}" TO the user (docs/deploy.md, step 3); the server said: {exc}'
            ) from exc

    def write(self, points: Sequence[Point]) -> None:
        """Write all points or raise StoreUnavailable (retry later) or PointsRejected (the rest written)."""
        write_bisecting(points, self._send)

    def write_lines(self, lines: Sequence[str]) -> None:
        """Write all lines or raise StoreUnavailable (retry later) or LinesRejected (the rest written)."""
        write_lines_bisecting(lines, self._send)

    def _send(self, lines: list[str]) -> None:
        body = "\n".join(lines).encode()
        headers = {"Content-Type": "text/plain; charset=utf-8"}
        if self.gzip:
            body = gzip.compress(body, compresslevel=1)
            headers["Content-Encoding"] = "gzip"
        try:
            response = self._http.post(
                "/write", params={"db": self.database, "precision": "ms"}, content=body, headers=headers
            )
        except httpx.HTTPError as exc:
            raise StoreUnavailable(f"InfluxDB at {self._http.base_url}: {exc!r}") from exc
        status = response.status_code
        if status == 204:
            return
        reason = _error_text(response.content)
        if status == 400:
            raise _BadRequest(reason)
        if status == 413:
            raise _TooLarge(reason)
        if status in (401, 403):
            raise _refused(self._http.base_url, status, reason)
        if status == 404:
            raise StoreUnavailable(
                f"InfluxDB at {self._http.base_url}: database {self.database!r} not found ({reason}); "
                "create it, e.g. with InfluxV1Store.ensure_database() at start-up"
            )
        raise StoreUnavailable(f"InfluxDB at {self._http.base_url}: HTTP {status} {reason}")

    def close(self) -> None:
        self._http.close()


class InfluxV2Store(_InfluxReads):
    """InfluxDB v2 API (2.x, 3.x, Cloud, VictoriaMetrics): token, org and bucket.

    Writes go through influxdb_client's synchronous WriteApi (gzip); reads through the
    v1-compatible ``/query`` with ``db`` = bucket.
    """

    def __init__(
        self,
        url: str,
        org: str,
        bucket: str,
        token: str,
        *,
        timeout: httpx.Timeout = DEFAULT_TIMEOUT,
        retention: str | None = None,
    ) -> None:
        self.url = url
        self.org = org
        self.bucket = bucket
        # The bucket's retention as a duration (720h0m0s): its API is not every server's, so a setting.
        ms = None if retention is None else go_duration_ms(retention)
        self._retention = None if ms is None else Retention(f"bucket retention {retention} (store URL)", ms)
        read_timeout = timeout.read if timeout.read is not None else 10.0
        self._client = InfluxDBClient(
            url=url, token=token, org=org, timeout=int(read_timeout * 1000), enable_gzip=True
        )
        self._write_api = self._client.write_api(write_options=SYNCHRONOUS)
        self._http = httpx.Client(base_url=url, headers={"Authorization": f"Token {token}"}, timeout=timeout)
        self.reader = InfluxQLReader(self._http, bucket)

    def retention(self) -> Retention | None:
        """The ``retention`` given (None: for ever, or not said)."""
        return self._retention

    def field_types(self) -> dict[str, dict[str, str]]:
        """As the v1 store, if the server answers InfluxQL for the bucket; StoreError if it answers
        but cannot (VictoriaMetrics, an InfluxDB 2.x bucket without a DBRP mapping)."""
        try:
            return self.reader.field_types()
        except StoreUnavailable as exc:
            if isinstance(exc.__cause__, httpx.HTTPError):
                raise  # not reachable: ask again
            raise StoreError(f"{self.url} answers no InfluxQL for bucket {self.bucket!r}: {exc}") from exc

    def write(self, points: Sequence[Point]) -> None:
        """Write all points or raise StoreUnavailable (retry later) or PointsRejected (the rest written)."""
        write_bisecting(points, self._send)

    def write_lines(self, lines: Sequence[str]) -> None:
        """Write all lines or raise StoreUnavailable (retry later) or LinesRejected (the rest written)."""
        write_lines_bisecting(lines, self._send)

    def _send(self, lines: list[str]) -> None:
        try:
            self._write_api.write(bucket=self.bucket, org=self.org, record=lines, write_precision=_MS)
        except ApiException as exc:
            status = exc.status or 0
            reason = _error_text(exc.body) or str(exc.reason)
            # InfluxDB 2.x answers 422 for points it can never take (a field's type conflict, a time
            # outside the bucket's retention): dead letters, like 1.x's 400, not a retry for ever.
            if status in (400, 422):
                raise _BadRequest(reason) from exc
            if status == 413:
                raise _TooLarge(reason) from exc
            if status in (401, 403):
                raise _refused(self.url, status, reason) from exc
            raise StoreUnavailable(f"InfluxDB at {self.url}: HTTP {status} {reason}") from exc
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise StoreUnavailable(f"InfluxDB at {self.url}: {exc!r}") from exc

    def close(self) -> None:
        self._write_api.close()  # type: ignore[no-untyped-call]
        self._client.close()  # type: ignore[no-untyped-call]
        self._http.close()


__all__ = [
    "InfluxQLReader",
    "InfluxV1Store",
    "InfluxV2Store",
    "LineEncoder",
    "go_duration_ms",
    "library_line_protocol",
    "line_template",
    "number_texts",
    "quote_identifier",
    "to_line_protocol",
    "write_bisecting",
    "write_lines_bisecting",
]
