"""The collector's fast path (collector/fastpath.py) stores exactly what the exact path stores.

Each payload goes through ``Converter.convert`` (collector/convert.py) twice, with the fast path
and without it: the lines (as InfluxDB reads them: fields in any order), the dead letters and the
origin of every line must be the same. The fast path may decline a payload (the exact path then takes it), but
it must take the well-formed ones, or it is no fast path.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from citygw.contract import wire
from collector.convert import EARLIEST_TS_MS, MAX_FUTURE_MS, Batch, Received
from collector.dead_letter import Reason
from collector.fastpath import TelemetryFastPath
from collector.field_types import FieldTypes
from collector.service import Collector
from collector.store.base import Retention
from collector.store.influx_v1 import InfluxV1Store
from tests.collector.helpers import now_ms
from tests.collector.test_wire_fast import CORPUS

TOPIC = wire.topic("agent-1", wire.Channel.TELEMETRY)
RECEIVED_MS = now_ms()


@contextmanager
def fresh_collectors() -> Iterator[tuple[Collector, Collector]]:
    """(with the fast path, without it), never started: conversion only, no broker, no database."""
    store = InfluxV1Store("http://127.0.0.1:9", "unused")
    fast = Collector("mqtt://127.0.0.1:9", store, client_id="fast")
    exact = Collector("mqtt://127.0.0.1:9", store, client_id="exact")
    exact.converter.fast = None
    yield fast, exact
    store.close()


@pytest.fixture(scope="module")
def collectors() -> Iterator[tuple[Collector, Collector]]:
    with fresh_collectors() as both:
        yield both


def normalised(line: str) -> str:
    """A line with its fields sorted (InfluxDB keeps no field order). Lines with a string field are
    left alone: only the exact path writes those, so they must be equal as they are."""
    if '"' in line:
        return line
    rest, _, ts = line.rpartition(" ")
    series, _, field_set = rest.rpartition(" ")
    return f"{series} {','.join(sorted(field_set.split(',')))} {ts}"


def outcome(collector: Collector, payload: bytes, topic: str = TOPIC) -> dict[str, Any]:
    """What the collector makes of one message received at RECEIVED_MS: lines, origins, dead letters."""
    message = Received(topic, payload, RECEIVED_MS)
    batch = Batch()
    collector.converter.convert(message, batch)
    dead = [(p.tags["reason"], p.fields["error"], p.fields["payload"]) for p in batch.dead]
    return {
        "lines": [normalised(line) for line in batch.lines],
        "origins": [index for _, index in batch.origins],
        "dead": dead,
    }


def knowing(*payloads: bytes, max_cached: int = 100_000) -> TelemetryFastPath:
    """A fast path that knows the field types of the readings of ``payloads`` (as the exact path
    learns them from the readings it accepts; the fast path leaves unknown ones to it)."""
    types = FieldTypes()
    for payload in payloads:
        for reading in orjson.loads(payload)["readings"]:
            if isinstance(reading, dict) and isinstance(reading.get("fields"), dict):
                types.check(str(reading.get("measurement")), reading["fields"])
    return TelemetryFastPath(types, max_cached=max_cached)


def taken_by_fast_path(payload: bytes, agent: str = "agent-1") -> bool:
    window = (EARLIEST_TS_MS, RECEIVED_MS + MAX_FUTURE_MS)
    try:
        fast_path = knowing(payload)
    except (ValueError, TypeError, KeyError):  # not a batch of readings: nothing to learn
        fast_path = TelemetryFastPath()
    return fast_path.convert(payload, agent, *window) is not None


@pytest.mark.parametrize("payload", [payload for _, payload in CORPUS], ids=[what for what, _ in CORPUS])
def test_both_paths_store_the_same_from_every_payload_of_the_corpus(
    collectors: tuple[Collector, Collector], payload: bytes
) -> None:
    fast, exact = collectors
    assert outcome(fast, payload) == outcome(exact, payload)


def test_the_fast_path_takes_the_well_formed_payloads_of_the_corpus() -> None:
    taken = set()
    for what, payload in CORPUS:
        agent = own_agent(payload)
        if taken_by_fast_path(payload, agent):
            taken.add(what)
            # A collector of its own: one that has seen other tests' payloads learned their field types.
            with fresh_collectors() as (_, exact):
                dead = outcome(exact, payload, wire.topic(agent, wire.Channel.TELEMETRY))["dead"]
            assert not dead, f"{what}: a payload with dead letters must take the exact path"
    well_formed = {
        "valid, as the models write it",
        "no schema key",
        "no tags",
        "many readings",
        "most fields",
    }
    assert well_formed <= taken


def own_agent(payload: bytes) -> str:
    """The agent a payload names, if it is a valid one; else agent-1."""
    try:
        agent = orjson.loads(payload)["agent"]
    except (ValueError, TypeError, KeyError):
        return "agent-1"
    return agent if isinstance(agent, str) and wire.is_agent_id(agent) else "agent-1"


def batch(*readings: dict[str, Any], agent: str = "agent-1", **top: Any) -> bytes:
    return json.dumps({"schema": 1, "agent": agent, "seq": 4, "readings": list(readings)} | top).encode()


def reading(**changes: Any) -> dict[str, Any]:
    base = {"device": "lamp-1", "measurement": "lighting", "ts": now_ms(), "fields": {"level": 40}}
    return base | changes


@pytest.mark.parametrize(
    ("what", "payload", "reason"),
    [
        # orjson reads an integer beyond 64 bits as a float: the exact path tells them apart.
        ("integer beyond 64 bits", batch(reading(fields={"x": 2**64})), Reason.SCHEMA),
        ("negative integer beyond 64 bits", batch(reading(fields={"x": -(2**63) - 1})), Reason.SCHEMA),
        ("integer beyond int64 that orjson keeps", batch(reading(fields={"x": 2**63})), Reason.SCHEMA),
        ("reserved tag", batch(reading(tags={"agent": "x"})), Reason.SCHEMA),
        ("ts before 2000", batch(reading(ts=1000)), Reason.TIMESTAMP),
        ("ts an hour ahead", batch(reading(ts=now_ms() + 3_600_000)), Reason.TIMESTAMP),
        ("another agent", batch(reading(), agent="agent-2"), Reason.AGENT_MISMATCH),
        ("name with a trailing newline", batch(reading(measurement="lighting\n")), Reason.SCHEMA),
        ("device with a trailing newline", batch(reading(device="lamp-1\n")), Reason.SCHEMA),
        # Issue 22.1: a field named like a tag hijacks InfluxQL conditions on that tag.
        ("field named device", batch(reading(fields={"level": 40, "device": "lamp-9"})), Reason.SCHEMA),
        ("field named district", batch(reading(fields={"district": 1.5})), Reason.SCHEMA),
        ("field named time", batch(reading(fields={"time": 1})), Reason.SCHEMA),
        ("tag named time", batch(reading(tags={"time": "now"})), Reason.SCHEMA),
        # Issue 22.10: look-alike labels.
        ("tag value with a trailing space", batch(reading(tags={"site": "depot "})), Reason.SCHEMA),
        ("device id with a Cyrillic a", batch(reading(device="l\u0430mp-1")), Reason.SCHEMA),
        ("device id with a zero-width space", batch(reading(device="lamp\u200b-1")), Reason.SCHEMA),
        # Issue 21.8: bool and float are not the integer schema version (True == 1.0 == 1 in Python).
        ("schema true", batch(reading(), schema=True), Reason.SCHEMA),
        ("schema 1.0", batch(reading(), schema=1.0), Reason.SCHEMA),
    ],
    ids=lambda value: value if isinstance(value, str) and len(value) < 60 else "",
)
def test_what_the_fast_path_declines_the_exact_path_dead_letters(
    collectors: tuple[Collector, Collector], what: str, payload: bytes, reason: str
) -> None:
    fast, exact = collectors
    assert not taken_by_fast_path(payload)
    assert [dead[0] for dead in outcome(fast, payload)["dead"]] == [reason]
    assert outcome(fast, payload) == outcome(exact, payload)


@pytest.mark.parametrize(
    "fields",
    [{"x": 1e16}, {"i": 2**63 - 1, "j": -(2**63)}, {"on": True, "off": False}, {"f": 0.1, "n": -7}],
    ids=["float 1e16", "int64 bounds", "booleans", "float and int"],
)
def test_numbers_at_the_edges_are_stored_the_same(
    collectors: tuple[Collector, Collector], fields: dict[str, Any]
) -> None:
    fast, exact = collectors
    payload = batch(*(reading(device=device, measurement="edges", fields=fields) for device in ("a", "b")))
    result = outcome(fast, payload)
    assert result == outcome(exact, payload)
    assert len(result["lines"]) == 2
    assert not result["dead"]


def test_a_known_series_with_a_bad_value_is_still_checked(collectors: tuple[Collector, Collector]) -> None:
    """The template of a series is remembered; its readings' values and times are checked each time."""
    fast_path = knowing(batch(reading()))
    received = now_ms()
    window = (EARLIEST_TS_MS, received + MAX_FUTURE_MS)
    assert fast_path.convert(batch(reading()), "agent-1", *window) is not None
    for bad in ({"level": "40"}, {"level": [40]}, {"level": None}):
        assert fast_path.convert(batch(reading(fields=bad)), "agent-1", *window) is None
    assert fast_path.convert(batch(reading(ts=received + MAX_FUTURE_MS + 1)), "agent-1", *window) is None
    assert fast_path.convert(batch(reading(fields=[["level", 40]])), "agent-1", *window) is None


def test_templates_stay_bounded_and_right() -> None:
    fast_path = knowing(batch(reading()), max_cached=3)
    window = (EARLIEST_TS_MS, now_ms() + MAX_FUTURE_MS)
    for round_ in range(2):
        for n in range(5):
            taken = fast_path.convert(
                batch(reading(device=f"lamp-{n}", ts=EARLIEST_TS_MS + n)), "agent-1", *window
            )
            assert taken is not None
            assert taken.seq == 4
            assert taken.lines == [f"lighting,agent=agent-1,device=lamp-{n} level=40i {EARLIEST_TS_MS + n}"]
            assert len(fast_path._templates) <= 3, round_


def test_the_site_tag_and_seq_come_back() -> None:
    payload = batch(reading(tags={"site": "depot 2"}), reading(), seq=9)
    taken = knowing(payload).convert(payload, "agent-1", EARLIEST_TS_MS, now_ms() + MAX_FUTURE_MS)
    assert taken is not None
    assert (taken.seq, taken.site) == (9, "depot 2")
    assert taken.lines[0].startswith("lighting,agent=agent-1,device=lamp-1,site=depot\\ 2 level=40i ")


def test_a_value_of_another_type_than_its_fields_is_refused_alike_and_new_fields_take_the_exact_path() -> (
    None
):
    """Issue 22.2: a field keeps the type first known; the fast path never learns one itself."""
    store = InfluxV1Store("http://127.0.0.1:9", "unused")
    fast = Collector("mqtt://127.0.0.1:9", store, client_id="fast")
    exact = Collector("mqtt://127.0.0.1:9", store, client_id="exact")
    exact.converter.fast = None
    window = (EARLIEST_TS_MS, RECEIVED_MS + MAX_FUTURE_MS)
    first = batch(reading(fields={"level": 40}))
    assert fast.converter.fast is not None
    assert fast.converter.fast.convert(first, "agent-1", *window) is None  # not known yet
    assert outcome(fast, first) == outcome(exact, first)
    assert fast.converter.fast.convert(first, "agent-1", *window) is not None  # learned by the exact path
    for wrong in ({"level": 40.0}, {"level": "40"}, {"level": True}):
        payload = batch(reading(fields=wrong), reading(device="lamp-2", fields={"level": 41}))
        assert fast.converter.fast.convert(payload, "agent-1", *window) is None
        result = outcome(fast, payload)
        assert result == outcome(exact, payload)
        assert [(reason, "'level'" in error) for reason, error, _ in result["dead"]] == [
            (Reason.FIELD_TYPE, True)
        ]
        assert result["origins"] == [1]
    mixed = batch(reading(fields={"x": 1}), reading(device="lamp-2", fields={"x": "one"}))
    assert [dead[0] for dead in outcome(fast, mixed)["dead"]] == [Reason.FIELD_TYPE]
    assert [dead[0] for dead in outcome(exact, mixed)["dead"]] == [Reason.FIELD_TYPE]
    store.close()


def test_readings_older_than_the_store_keeps_are_refused_alike() -> None:
    """Issue 22.8: with the store's retention known, older readings are ``timestamp`` dead letters."""
    store = InfluxV1Store("http://127.0.0.1:9", "unused")
    fast = Collector("mqtt://127.0.0.1:9", store, client_id="fast")
    exact = Collector("mqtt://127.0.0.1:9", store, client_id="exact")
    exact.converter.fast = None
    for collector in (fast, exact):
        collector.converter.retention = Retention("retention policy 'hour' (1h0m0s)", 3_600_000)
    kept, lost = RECEIVED_MS - 3_599_000, RECEIVED_MS - 3_601_000
    warm = batch(reading(ts=kept))
    assert outcome(fast, warm) == outcome(exact, warm)
    assert fast.converter.fast is not None
    assert fast.converter.fast.convert(warm, "agent-1", kept, RECEIVED_MS) is not None
    payload = batch(reading(ts=kept), reading(device="lamp-2", ts=lost))
    result = outcome(fast, payload)
    assert result == outcome(exact, payload)
    assert result["origins"] == [0]
    ((reason, error, _),) = result["dead"]
    assert reason == Reason.TIMESTAMP
    assert "older than the store keeps: retention policy 'hour' (1h0m0s)" in error
    store.close()


# Generated payloads: names valid or not, values of every JSON type, times in and out of range.
_names = st.one_of(
    st.sampled_from(["kwh", "level", "site", "agent", "device", "district", "time", "t_1"]),
    st.text(max_size=6),
)
_labels = st.one_of(st.sampled_from(["lamp-1", "site 2", "a/b:c", "x.y+z"]), st.text(max_size=6))
_values = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.booleans(),
    st.text(max_size=4),
    st.none(),
    st.lists(st.integers(), max_size=1),
)
_times = st.one_of(
    st.integers(min_value=EARLIEST_TS_MS - 10, max_value=int(time.time() * 1000) + 2 * MAX_FUTURE_MS),
    st.sampled_from([True, 1.7e12, "1700000000000"]),
)
_readings = st.fixed_dictionaries(
    {
        "device": _labels,
        "measurement": st.one_of(st.just("electricity"), _names),
        "ts": _times,
        "fields": st.dictionaries(_names, _values, max_size=3),
    },
    optional={"tags": st.dictionaries(_names, _labels, max_size=2), "unit": st.just("kWh")},
)


@settings(max_examples=300, deadline=None)
@given(readings=st.lists(_readings, min_size=1, max_size=4))
def test_both_paths_store_the_same_from_generated_payloads(
    collectors: tuple[Collector, Collector], readings: list[dict[str, Any]]
) -> None:
    fast, exact = collectors
    payload = batch(*readings)
    assert outcome(fast, payload) == outcome(exact, payload)
