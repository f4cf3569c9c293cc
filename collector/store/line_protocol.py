"""Line protocol: points and validated readings to InfluxDB's text format, fast.

The encoder InfluxDB stores write with (``InfluxV1Store.encoder``, ``InfluxV2Store.encoder``);
the escaping is influxdb_client's own, pinned by tests/collector/store/test_line_protocol.py.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from math import isfinite as _isfinite
from typing import Any, NamedTuple

import orjson
from influxdb_client.client.write import point as library_point
from influxdb_client.client.write.point import Point as LineProtocolPoint
from influxdb_client.domain.write_precision import WritePrecision

from citygw.contract.wire import ReadingDict
from collector.store.base import (
    INT64_MAX,
    INT64_MIN,
    FieldValue,
    Point,
)

NUMBER_TYPES = frozenset({float, int, bool})  # what orjson writes as line protocol does
MS_PRECISION: Any = WritePrecision.MS  # a str constant; WriteApi.write is annotated with the class


def library_line_protocol(point: Point) -> str:
    """The point as influxdb_client's own Point writes it (the reference for LineEncoder)."""
    record = LineProtocolPoint.from_dict(
        {"measurement": point.measurement, "tags": point.tags, "fields": point.fields, "time": point.ts_ms},
        write_precision=MS_PRECISION,
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
