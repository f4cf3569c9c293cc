"""Telemetry payloads in the agents' own form, straight to line protocol.

The exact path (``Converter.convert``, collector/convert.py) validates a payload with pydantic
(``wire.TELEMETRY_BATCH_DICT``), checks each reading, then encodes the lines: about 6 us per
reading, most of a collector's CPU. Yet nearly every payload in the field is well formed, and
its readings repeat the same few measurements, devices, tags and field names. Here:

- ``orjson.loads`` parses the payload (a quarter of pydantic's time);
- everything that depends on names only (patterns, reserved tags, counts of tags and fields) is
  checked once per distinct (agent, measurement, device, tags, field names) and remembered with
  the line template it yields (``line_template``); so is whether the agent's pushed config gives it
  the device and the ``vehicle`` tag, and its ``site`` (collector/owners.py: the config is part of
  the key, so a new config is checked afresh);
- per reading, only the keys present, the timestamp and the types of the values are checked, the
  types against those the measurement holds (``FieldTypes``, remembered with the template; a
  field whose type is not known yet takes the exact path, which learns it);
- orjson formats all the message's numbers in one call, and two ``%`` fill in all its lines.

``TelemetryFastPath.convert`` returns the lines only when the exact path would store every
reading of the message; the lines are the points the exact path writes (fields in the payload's
order, which InfluxDB does not keep). Anything else returns None, and the message takes the exact
path, which finds the reason: invalid JSON or schema, another agent, a name that fails its
pattern, a reserved tag or field name, a device or vehicle the agent does not own, a timestamp out of
range, a value of another type than its field's, a string field, an integer beyond 64 bits, a new
series beyond the agent's ``SeriesBudget``,
a float of 1e16 or more (orjson reads an integer beyond 64 bits as a float: the exact path tells
them apart). tests/collector/test_fastpath.py checks both paths on the hostile corpus and on
generated payloads.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import orjson

from citygw.contract import wire
from collector.field_types import FieldTypes
from collector.owners import Owners
from collector.series_budget import SeriesBudget
from collector.store.line_protocol import line_template, number_texts

_BATCH_KEYS = frozenset({"schema", "agent", "seq", "readings"})


class TelemetryLines(NamedTuple):
    """A telemetry message the fast path took: its sequence number, site tag and lines."""

    seq: int
    site: str | None  # the first reading's "site" tag, if any
    lines: list[str]


class TelemetryFastPath:
    """Line protocol for well-formed telemetry payloads, or None (see the module's text)."""

    def __init__(
        self,
        field_types: FieldTypes | None = None,
        series: SeriesBudget | None = None,
        owners: Owners | None = None,
        max_cached: int = 100_000,
    ) -> None:
        self.max_cached = max_cached
        self.field_types = FieldTypes() if field_types is None else field_types
        self.series = SeriesBudget() if series is None else series
        self.owners = Owners() if owners is None else owners
        # (template, the type of each field): a field's known type never changes, so neither does this.
        self._templates: dict[tuple[Any, ...], tuple[str, tuple[type, ...]]] = {}

    def convert(self, payload: bytes, agent: str, earliest_ms: int, latest_ms: int) -> TelemetryLines | None:
        """The lines of ``payload`` from ``agent`` (the topic's), timestamps within [earliest, latest]."""
        try:
            batch = orjson.loads(payload)
        except orjson.JSONDecodeError:
            return None
        if type(batch) is not dict or not _batch_ok(batch, agent):
            return None
        readings = batch["readings"]
        # The agent's config, in the templates' key: a new config (a new Owned) misses the cache.
        owned = self.owners.of(agent)
        templates: list[str] = []
        values: list[Any] = []
        kinds: list[type] = []
        times: list[Any] = []
        known = self._templates
        try:
            for reading in readings:
                fields = reading["fields"]
                size = len(reading)
                if size == 4:
                    tags: Any = ()
                elif size == 5 and type(reading["tags"]) is dict:
                    tags = tuple(reading["tags"].items())
                else:
                    return None
                if type(fields) is not dict:
                    return None
                key = (agent, owned, reading["measurement"], reading["device"], tags, tuple(fields))
                entry = known.get(key) or self._template(key)
                if entry is None:
                    return None
                templates.append(entry[0])
                kinds += entry[1]
                values += fields.values()
                times.append(reading["ts"])
        except (KeyError, TypeError):  # a missing key, a reading not an object, an unhashable value
            return None
        if not set(map(type, times)) <= {int} or not earliest_ms <= min(times) <= max(times) <= latest_ms:
            return None
        if list(map(type, values)) != kinds:
            return None
        texts = number_texts(values, large=False)  # None for a string field: the exact path checks it
        if texts is None:
            return None
        lines = ("\n".join(templates) % tuple(texts) % tuple(times)).split("\n")
        if owned is not None:
            return TelemetryLines(batch["seq"], owned.site, lines)
        first_tags = readings[0].get("tags")
        return TelemetryLines(batch["seq"], first_tags.get("site") if first_tags else None, lines)

    def _template(self, key: tuple[Any, ...]) -> tuple[str, tuple[type, ...]] | None:
        """The line template and field types of a valid (agent, its config, measurement, device, tags,
        field names), or None (also while a field's type is not known, or the agent does not own it)."""
        agent, owned, measurement, device, tags, names = key
        if not (
            type(measurement) is str
            and wire.is_name(measurement)
            and measurement not in wire.RESERVED_MEASUREMENTS
            and type(device) is str
            and wire.is_label(device)
            and len(tags) <= wire.MAX_TAGS_PER_READING
            and all(type(name) is str and wire.is_name(name) for name, _ in tags)
            and all(type(value) is str and wire.is_label(value) for _, value in tags)
            and wire.NOT_TAG_NAMES.isdisjoint(name for name, _ in tags)
            and 1 <= len(names) <= wire.MAX_FIELDS_PER_READING
            and all(wire.is_name(name) for name in names)
            and wire.NOT_FIELD_NAMES.isdisjoint(names)
        ):
            return None
        series_tags = dict(tags)
        if owned is not None:
            if owned.problem(device, series_tags) is not None or owned.site is None:
                return None  # not this agent's: the exact path dead-letters it (not_owned)
            series_tags["site"] = owned.site
        kinds = self.field_types.expected(measurement, names)
        if kinds is None or not self.series.admit(agent, measurement, device, series_tags.items()):
            return None  # unknown types, or a new series beyond the agent's budget: the exact path decides
        template = line_template(measurement, {**series_tags, "device": device, "agent": agent}, names)
        if len(self._templates) >= self.max_cached:
            self._templates.clear()
        self._templates[key] = entry = (template, kinds)
        return entry


def _batch_ok(batch: dict[str, Any], agent: str) -> bool:
    """The message's own keys as the exact path accepts them, from ``agent``."""
    readings, seq = batch.get("readings"), batch.get("seq")
    schema = batch.get("schema", wire.SCHEMA_VERSION)
    return (
        batch.keys() <= _BATCH_KEYS
        and batch.get("agent") == agent
        and type(seq) is int
        and seq >= 0
        and type(schema) is int
        and schema == wire.SCHEMA_VERSION
        and type(readings) is list
        and 1 <= len(readings) <= wire.MAX_READINGS_PER_BATCH
    )


__all__ = ["TelemetryFastPath", "TelemetryLines"]
