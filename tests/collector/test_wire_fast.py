"""The collector's fast validator (wire.TELEMETRY_BATCH_DICT) and the wire models are one contract.

Both must accept the same payloads with the same values, and refuse the same payloads with the
same error locations and kinds (so the dead-letter reason and text do not depend on which one
the collector uses).
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import ValidationError

from citygw.contract import wire
from tests.collector.helpers import now_ms
from tests.collector.test_hostile_payloads import hostile_payloads, many_readings


def reading(**changes: object) -> dict[str, object]:
    base: dict[str, object] = {
        "device": "meter-0",
        "measurement": "electricity",
        "ts": now_ms(),
        "fields": {"x": 1},
    }
    return base | changes


def body(*readings: dict[str, object], **top: object) -> bytes:
    return json.dumps({"schema": 1, "agent": "agent-1", "seq": 0, "readings": list(readings)} | top).encode()


def corpus() -> list[tuple[str, bytes]]:
    cases = [(what, payload) for what, _, payload, _, _ in hostile_payloads()]
    cases += [
        ("valid, as the models write it", _agent_batch()),
        ("no schema key", json.dumps({"agent": "a", "seq": 0, "readings": [reading()]}).encode()),
        ("no tags", body(reading())),
        ("every field type", body(reading(fields={"b": True, "i": -3, "f": 2.5, "s": "text", "z": 0.0}))),
        ("many readings", many_readings(wire.MAX_READINGS_PER_BATCH)),
        ("top-level array", b"[1, 2]"),
        ("top-level string", b'"batch"'),
        ("null", b"null"),
        ("readings not a list", body(readings={"0": reading()})),
        ("reading not an object", body("meter-0")),  # type: ignore[arg-type]
        ("no readings key", json.dumps({"schema": 1, "agent": "agent-1", "seq": 0}).encode()),
        ("empty readings", body()),
        ("negative seq", body(reading(), seq=-1)),
        ("seq as bool", body(reading(), seq=True)),
        ("seq as float", body(reading(), seq=1.0)),
        ("negative ts", body(reading(ts=-1))),
        ("ts as text", body(reading(ts="1700000000000"))),
        ("ts missing", body({"device": "d", "measurement": "m", "fields": {"x": 1}})),
        ("no fields", body(reading(fields={}))),
        (
            "too many fields",
            body(reading(fields={f"f{i}": i for i in range(wire.MAX_FIELDS_PER_READING + 1)})),
        ),
        ("most fields", body(reading(fields={f"f{i}": i for i in range(wire.MAX_FIELDS_PER_READING)}))),
        ("too many tags", body(reading(tags={f"t{i}": "v" for i in range(wire.MAX_TAGS_PER_READING + 1)}))),
        ("null field", body(reading(fields={"x": None}))),
        ("list field", body(reading(fields={"x": [1]}))),
        ("long string field", body(reading(fields={"x": "a" * 257}))),
        ("longest string field", body(reading(fields={"x": "a" * 256}))),
        ("tag value a number", body(reading(tags={"site": 5}))),
        ("upper-case field name", body(reading(fields={"Kwh": 1}))),
        ("label too long", body(reading(device="d" * 129))),
        ("extra key in reading", body(reading(unit="kWh"))),
        ("agent upper case", body(reading(), agent="Agent-1")),
        ("schema as text", body(reading(), schema="1")),
        ("duplicate keys", b'{"schema": 1, "agent": "a", "agent": "b", "seq": 0, "readings": []}'),
        ("BOM", b"\xef\xbb\xbf" + body(reading())),
        ("trailing garbage", body(reading()) + b" x"),
    ]
    return cases


def _agent_batch() -> bytes:
    return wire.encode(
        wire.TelemetryBatch(
            agent="agent-1",
            seq=3,
            readings=[
                wire.Reading(device="meter-1", measurement="water", ts=now_ms(), fields={"m3": 1.25}),
                wire.Reading(
                    device="meter-2",
                    measurement="water",
                    ts=now_ms(),
                    fields={"on": False},
                    tags={"site": "a b"},
                ),
            ],
        )
    )


def outcome_of_model(payload: bytes) -> tuple[str, Any]:
    try:
        batch = wire.TelemetryBatch.model_validate_json(payload)
    except ValidationError as exc:
        return "refused", _errors(exc)
    return "accepted", batch.model_dump(by_alias=True)


def outcome_of_fast(payload: bytes) -> tuple[str, Any]:
    try:
        batch = wire.TELEMETRY_BATCH_DICT.validate_json(payload)
    except ValidationError as exc:
        return "refused", _errors(exc)
    readings = [{"tags": {}} | dict(reading) for reading in batch["readings"]]
    return "accepted", {"schema": 1} | dict(batch) | {"readings": readings}


def _errors(exc: ValidationError) -> list[tuple[tuple[int | str, ...], str]]:
    # A model names itself where a TypedDict just wants a dict: the same refusal.
    kinds = {"model_type": "dict_type", "model_attributes_type": "dict_type"}
    return [(error["loc"], kinds.get(error["type"], error["type"])) for error in exc.errors()]


CORPUS = corpus()


@pytest.mark.parametrize("payload", [payload for _, payload in CORPUS], ids=[what for what, _ in CORPUS])
def test_fast_validator_and_models_agree(payload: bytes) -> None:
    assert outcome_of_fast(payload) == outcome_of_model(payload)


def test_the_corpus_has_both_outcomes() -> None:
    outcomes = [outcome_of_model(payload)[0] for _, payload in CORPUS]
    assert outcomes.count("accepted") >= 6
    assert outcomes.count("refused") >= 40
