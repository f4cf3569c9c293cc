"""The collector's conversion: a received message to store records or dead letters, and nothing else.

``Converter.convert`` takes one message (topic, payload, receive time) and adds to a ``Batch``
the records of its valid readings, in the store's own encoding (``encoder``: the store's line
encoder, else Points), and a dead letter with its reason for each part it refuses. No network,
no threads, no logging of dead letters (``DeadLetters`` tells whoever listens): the collector
(collector/service.py) feeds it from MQTT and writes what it returns, and
tests/collector/test_convert.py runs every reason through it without any service.

What it keeps between messages is what judging the next one needs: each field's type
(field_types.py), each agent's series (series_budget.py), the agents' configs (owners.py), the
store's retention, each agent's site and last seq, and when each device's health was last stored.
Well-formed telemetry for a line store goes straight from JSON to lines (fastpath.py); anything
the fast path is not sure of takes the exact path here, which finds the reason.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import repeat
from typing import Any

from pydantic import ValidationError

from citygw.contract import wire
from collector.dead_letter import DeadLetters, Reason
from collector.fastpath import TelemetryFastPath
from collector.field_types import FieldTypes
from collector.health import DEVICE_HEALTH_EVERY_S, DeviceHealthGate, health_points, status_point
from collector.owners import Owned, Owners
from collector.series_budget import MAX_SERIES_PER_AGENT, SeriesBudget
from collector.store.base import INT64_MAX, INT64_MIN, Point, Retention
from collector.store.line_protocol import LineEncoder

log = logging.getLogger(__name__)

MAX_PAYLOAD_BYTES = 1024 * 1024
EARLIEST_TS_MS = int(datetime(2000, 1, 1, tzinfo=UTC).timestamp() * 1000)
MAX_FUTURE_MS = 10 * 60 * 1000
# What the collector subscribes to; everything but telemetry becomes agent_health points.
CHANNELS = (wire.Channel.TELEMETRY, wire.Channel.HEALTH, wire.Channel.STATUS)
WHOLE_MESSAGE = -1  # origin index of the points of a health or status message


@dataclass(frozen=True, slots=True)
class Received:
    """A message as received: topic, payload, receive time; ``mid``, ``qos`` and ``connection``
    only matter to acknowledging it (collector/service.py)."""

    topic: str
    payload: bytes
    received_ms: int
    mid: int = 0
    qos: int = 1
    connection: int = 0


@dataclass(slots=True)
class Batch:
    """Messages converted for one store write, in arrival order (``number``: the batch's, from 0).

    Each stored reading is a line (stores with a line encoder) or a Point (the others), with its
    origin (message, index of the reading; ``WHOLE_MESSAGE`` for health and status) to
    dead-letter it if the store refuses it. ``seqs``: (agent, seq) of its telemetry, to confirm to
    the agents once stored; ``gaps``: (agent, last seq seen, seq) where an agent's seq jumped.
    """

    number: int = 0
    messages: list[Received] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)
    points: list[Point] = field(default_factory=list)
    origins: list[tuple[Received, int]] = field(default_factory=list)
    dead: list[Point] = field(default_factory=list)
    seqs: list[tuple[str, int]] = field(default_factory=list)
    gaps: list[tuple[str, int, int]] = field(default_factory=list)

    @property
    def size(self) -> int:
        return len(self.origins) + len(self.dead)


class Converter:
    """Messages to records of ``encoder`` (Points when None) and dead letters from ``dead_letters``.

    ``watch_gaps=False`` when the collector sees only part of each agent's messages (a shared
    subscription): a jump in seq is then no loss. Used by one thread (``refused_letters`` aside).
    """

    def __init__(
        self,
        dead_letters: DeadLetters,
        *,
        encoder: LineEncoder | None = None,
        owners: Owners | None = None,
        max_series_per_agent: int = MAX_SERIES_PER_AGENT,
        device_health_every_s: float = DEVICE_HEALTH_EVERY_S,
        watch_gaps: bool = True,
    ) -> None:
        self.dead_letters = dead_letters
        self.encoder = encoder
        self.owners = owners if owners is not None else Owners()
        self.field_types = FieldTypes()
        self.series = SeriesBudget(max_series_per_agent)
        self.retention: Retention | None = None  # how long the store keeps points, once known
        self.sites: dict[str, str] = {}  # agent -> the site tag of its telemetry, for its health points
        # Well-formed telemetry straight to lines, for a line encoder.
        self.fast = None if encoder is None else TelemetryFastPath(self.field_types, self.series, self.owners)
        self.watch_gaps = watch_gaps
        self._last_seq: dict[str, int] = {}
        self._device_health = DeviceHealthGate(device_health_every_s)

    def convert(self, message: Received, batch: Batch) -> None:
        """Add ``message`` to ``batch``: its records, or dead letters. A message it fails on (a bug)
        becomes a ``collector_error`` dead letter, never an exception."""
        parts: tuple[list[Any], ...] = (
            batch.messages,
            batch.lines,
            batch.points,
            batch.origins,
            batch.dead,
            batch.seqs,
            batch.gaps,
        )
        sizes = [len(part) for part in parts]
        try:
            self._convert(message, batch)
        except Exception as exc:
            log.exception(
                "collector %s: failed on a message of %s", self.dead_letters.collector, message.topic
            )
            for part, size in zip(parts, sizes, strict=True):
                del part[size:]  # what it added before failing
            batch.messages.append(message)
            agent = (wire.parse_topic(message.topic) or ("unknown",))[0]
            batch.dead.append(self._letter(message, Reason.COLLECTOR_ERROR, repr(exc), agent))
        if len(batch.seqs) == sizes[5] and (taken := dead_batch_seq(message)) is not None:
            batch.seqs.append(taken)  # dead-lettered whole: stored as such, taken all the same

    def refused_letters(self, refused: list[tuple[tuple[Received, int], str]]) -> list[Point]:
        """Dead letters for the readings the store refused (each message parsed again once: rare path).

        A health or status message is dead-lettered whole, once, whichever of its points were refused.
        """
        parsed: dict[int, wire.TelemetryBatchDict] = {}
        letters = []
        whole: set[int] = set()
        for (message, index), reason in refused:
            if index == WHOLE_MESSAGE:
                if id(message) not in whole:
                    whole.add(id(message))
                    agent = (wire.parse_topic(message.topic) or ("unknown",))[0]
                    letters.append(self._letter(message, Reason.REJECTED_BY_STORE, reason, agent))
                continue
            payload = parsed.get(id(message))
            if payload is None:
                payload = parsed[id(message)] = wire.TELEMETRY_BATCH_DICT.validate_json(message.payload)
            reading = payload["readings"][index]
            letters.append(
                self._reading_letter(message, Reason.REJECTED_BY_STORE, reason, payload["agent"], reading)
            )
        return letters

    def earliest_ok(self, received_ms: int) -> int:
        """The oldest time the store takes for a message received at ``received_ms``."""
        if self.retention is None:
            return EARLIEST_TS_MS
        return max(EARLIEST_TS_MS, received_ms - self.retention.ms)

    def _convert(self, message: Received, batch: Batch) -> None:
        batch.messages.append(message)
        parsed = wire.parse_topic(message.topic)
        topic_agent = parsed[0] if parsed else None
        if len(message.payload) > MAX_PAYLOAD_BYTES:
            error = f"payload of {len(message.payload)} bytes exceeds {MAX_PAYLOAD_BYTES}"
            batch.dead.append(self._letter(message, Reason.TOO_LARGE, error, topic_agent))
            return
        if parsed is None or parsed[1] not in CHANNELS:
            error = f"not a telemetry, health or status topic: {message.topic}"
            batch.dead.append(self._letter(message, Reason.TOPIC, error, topic_agent))
            return
        if parsed[1] is not wire.Channel.TELEMETRY:
            self._convert_agent_message(message, parsed[0], parsed[1], batch)
            return
        latest_ok = message.received_ms + MAX_FUTURE_MS
        earliest_ok = self.earliest_ok(message.received_ms)
        if self.fast is not None:
            taken = self.fast.convert(message.payload, parsed[0], earliest_ok, latest_ok)
            if taken is not None:
                self._take_seq(parsed[0], taken.seq, batch)
                if taken.site:
                    self.sites[parsed[0]] = taken.site  # the config's site when the agent has one
                batch.lines += taken.lines
                batch.origins += zip(repeat(message), range(len(taken.lines)))
                return
        try:
            payload = wire.TELEMETRY_BATCH_DICT.validate_json(message.payload)
        except ValidationError as exc:
            errors = exc.errors(include_url=False)
            if any(error["type"] == "json_invalid" for error in errors):
                reason = Reason.INVALID_JSON
            else:
                reason = Reason.SCHEMA
            batch.dead.append(self._letter(message, reason, _describe(exc), topic_agent))
            return
        agent = payload["agent"]
        if agent != topic_agent:
            error = f"payload agent {agent!r} differs from topic agent {topic_agent!r}"
            batch.dead.append(self._letter(message, Reason.AGENT_MISMATCH, error, topic_agent))
            return
        self._take_seq(agent, payload["seq"], batch)
        owned = self.owners.of(agent)
        first_tags = payload["readings"][0].get("tags")
        if owned is None and first_tags and (site := first_tags.get("site")):
            self.sites[agent] = site
        valid: list[wire.ReadingDict] = []
        for index, reading in enumerate(payload["readings"]):
            problem = self._reading_problem(index, reading, agent, owned, earliest_ok, message.received_ms)
            if problem is not None:
                reason, error = problem
                batch.dead.append(self._reading_letter(message, reason, error, agent, reading))
                continue
            stored = _stored_tags(reading.get("tags"), owned)
            if not self.series.admit(agent, reading["measurement"], reading["device"], stored.items()):
                error = f"reading {index}: {self.series.refusal(agent)}"
                batch.dead.append(
                    self._reading_letter(message, Reason.TOO_MANY_SERIES, error, agent, reading)
                )
                continue
            if stored is not reading.get("tags"):
                reading["tags"] = stored
            valid.append(reading)
            batch.origins.append((message, index))
        if self.encoder is not None:
            batch.lines += self.encoder.reading_lines(agent, valid)
        else:
            for reading in valid:
                all_tags = {**reading.get("tags", {}), "device": reading["device"], "agent": agent}
                batch.points.append(Point(reading["measurement"], all_tags, reading["ts"], reading["fields"]))

    def _reading_problem(
        self,
        index: int,
        reading: wire.ReadingDict,
        agent: str,
        owned: Owned | None,
        earliest_ok: int,
        received_ms: int,
    ) -> tuple[str, str] | None:
        """(reason, error) of a reading of a valid message that cannot be stored; None if it can
        (as far as its series: the agent's series budget is asked last, by the caller)."""
        tags = reading.get("tags")
        ts = reading["ts"]
        if tags and not wire.NOT_TAG_NAMES.isdisjoint(tags):
            reserved = sorted(wire.NOT_TAG_NAMES.intersection(tags))
            return Reason.SCHEMA, (
                f"reading {index}: tag(s) {reserved} are reserved for the collector or InfluxDB"
            )
        if not wire.NOT_FIELD_NAMES.isdisjoint(reading["fields"]):
            names = sorted(wire.NOT_FIELD_NAMES.intersection(reading["fields"]))
            return Reason.SCHEMA, (
                f"reading {index}: field(s) {names} are named like a tag CityGW filters by or a key "
                "InfluxDB reserves (wire.NOT_FIELD_NAMES); rename them in the device profile"
            )
        if reading["measurement"] in wire.RESERVED_MEASUREMENTS:
            name = reading["measurement"]
            error = f"reading {index}: measurement {name!r} holds CityGW's own records, not readings"
            return Reason.SCHEMA, error
        if owned is not None and (problem := owned.problem(reading["device"], tags)) is not None:
            return Reason.NOT_OWNED, f"reading {index}: {problem}"
        if not earliest_ok <= ts <= received_ms + MAX_FUTURE_MS:
            return Reason.TIMESTAMP, f"reading {index}: {self._time_problem(ts, received_ms)}"
        if (too_big := _first_out_of_int64(reading["fields"])) is not None:
            return Reason.SCHEMA, f"reading {index}: field {too_big!r} is an integer outside the 64-bit range"
        if (wrong := self.field_types.check(reading["measurement"], reading["fields"])) is not None:
            return Reason.FIELD_TYPE, f"reading {index}: {wrong}"
        return None

    def _convert_agent_message(
        self, message: Received, agent: str, channel: wire.Channel, batch: Batch
    ) -> None:
        """Add a health or status message to ``batch`` as ``agent_health`` points, or a dead letter."""
        if not message.payload and channel is wire.Channel.STATUS:
            return  # a retained status being cleared: nothing to store, not a bad payload
        model = wire.Health if channel is wire.Channel.HEALTH else wire.Status
        try:
            payload = model.model_validate_json(message.payload)
        except ValidationError as exc:
            invalid_json = any(error["type"] == "json_invalid" for error in exc.errors(include_url=False))
            reason = Reason.INVALID_JSON if invalid_json else Reason.SCHEMA
            batch.dead.append(self._letter(message, reason, _describe(exc), agent))
            return
        if payload.agent != agent:
            error = f"payload agent {payload.agent!r} differs from topic agent {agent!r}"
            batch.dead.append(self._letter(message, Reason.AGENT_MISMATCH, error, agent))
            return
        owned = self.owners.of(agent)
        site = owned.site if owned is not None and owned.site is not None else self.sites.get(agent)
        if isinstance(payload, wire.Status):
            points = [status_point(payload, message.received_ms, site)]
        elif not self.earliest_ok(message.received_ms) <= payload.ts <= message.received_ms + MAX_FUTURE_MS:
            error = self._time_problem(payload.ts, message.received_ms)
            batch.dead.append(self._letter(message, Reason.TIMESTAMP, error, agent))
            return
        else:
            points = health_points(payload, site, self._device_health)
        for point in points:
            if self.encoder is not None:
                batch.lines.append(self.encoder.line(point))
            else:
                batch.points.append(point)
            batch.origins.append((message, WHOLE_MESSAGE))

    def _time_problem(self, ts: int, received_ms: int) -> str:
        """Why a time outside [earliest_ok, receive time + 10 min] is refused."""
        if self.retention is not None and EARLIEST_TS_MS <= ts < received_ms - self.retention.ms:
            return (
                f"ts {ts} is older than the store keeps: {self.retention.what} "
                f"(received at {received_ms}); the store would refuse it"
            )
        return f"ts {ts} is outside [2000-01-01, receive time + 10 min] (received at {received_ms})"

    def _take_seq(self, agent: str, seq: int, batch: Batch) -> None:
        """Note the seq to confirm, and a jump since the agent's last (lost messages upstream)."""
        batch.seqs.append((agent, seq))
        if not self.watch_gaps:
            return
        last = self._last_seq.get(agent)
        if last is not None and seq > last + 1:
            batch.gaps.append((agent, last, seq))
        # A lower or equal seq is a redelivery (keep the high mark) or, at 0, an agent starting over.
        if last is None or seq > last or seq == 0:
            self._last_seq[agent] = seq

    def _reading_letter(
        self, message: Received, reason: str, error: str, agent: str, reading: wire.ReadingDict
    ) -> Point:
        """A dead letter for one reading of a valid message, the reading as the wire carries it."""
        payload = wire.encode(wire.Reading.model_validate(reading))
        return self.dead_letters.letter(message.topic, message.received_ms, payload, reason, error, agent)

    def _letter(self, message: Received, reason: str, error: str, agent: str | None) -> Point:
        return self.dead_letters.letter(
            message.topic, message.received_ms, message.payload, reason, error, agent
        )


# How an agent's journal starts every telemetry payload (edge/journal.py): the seq of a payload
# dead-lettered whole (too large, not valid) is read from there, so that the agent stops holding it.
_BATCH_HEADER = re.compile(rb'\{"schema":1,"agent":"([a-z0-9][a-z0-9_-]{0,63})","seq":(\d{1,18}),')


def dead_batch_seq(message: Received) -> tuple[str, int] | None:
    """(agent, seq) of a telemetry message from its header, if it has the journal's and its agent's."""
    parsed = wire.parse_topic(message.topic)
    if parsed is None or parsed[1] is not wire.Channel.TELEMETRY:
        return None
    header = _BATCH_HEADER.match(message.payload, 0, 120)
    if header is None or header[1].decode() != parsed[0]:
        return None
    return parsed[0], int(header[2])


def _first_out_of_int64(fields: dict[str, wire.FieldValue]) -> str | None:
    """The name of the first integer field no store can hold (JSON integers are unbounded)."""
    for name, value in fields.items():
        if type(value) is int and not INT64_MIN <= value <= INT64_MAX:
            return name
    return None


def _describe(exc: ValidationError) -> str:
    parts = []
    for error in exc.errors(include_url=False)[:10]:
        location = ".".join(str(item) for item in error["loc"])
        message = str(error["msg"])
        if error.get("ctx", {}).get("pattern") == wire.LABEL_PATTERN and isinstance(error["input"], str):
            message = wire.label_problem(error["input"]) or message  # which character, in words
        parts.append(f"{location}: {message}" if location else message)
    return "; ".join(parts)


def _stored_tags(tags: dict[str, str] | None, owned: Owned | None) -> dict[str, str]:
    """The tags a reading is stored with: an agent held to its config gets the config's site."""
    if owned is None or owned.site is None:
        return tags or {}
    return {**(tags or {}), "site": owned.site}  # the config's, not the agent's


__all__ = [
    "CHANNELS",
    "EARLIEST_TS_MS",
    "MAX_FUTURE_MS",
    "MAX_PAYLOAD_BYTES",
    "WHOLE_MESSAGE",
    "Batch",
    "Converter",
    "Received",
    "dead_batch_seq",
]
