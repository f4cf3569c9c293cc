"""The collector's conversion alone (collector/convert.py): no broker, no store, no thread.

Every dead-letter reason is produced here from a message, for both encodings a store may choose
(Points, and line protocol with its fast path); tests/collector/test_service.py and
test_hostile_payloads.py keep the same cases end to end through Mosquitto and the stores.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from citygw.contract import wire
from collector.convert import MAX_FUTURE_MS, MAX_PAYLOAD_BYTES, WHOLE_MESSAGE, Batch, Converter, Received
from collector.dead_letter import DEAD_LETTER, REASONS, DeadLetters, Reason
from collector.health import AGENT_HEALTH
from collector.owners import OwnerPolicy, Owners
from collector.store.base import Point, Retention
from collector.store.line_protocol import LineEncoder

NOW = int(time.time() * 1000)
TOPIC = "citygw/v1/agent-1/telemetry"


def reading(**changes: Any) -> dict[str, Any]:
    return {
        "device": "meter-1",
        "measurement": "electricity",
        "ts": NOW - 1000,
        "fields": {"kwh": 1.5},
    } | changes


def payload(*readings: dict[str, Any], agent: str = "agent-1", seq: int = 7) -> bytes:
    return wire.encode(
        wire.TelemetryBatch.model_validate({"agent": agent, "seq": seq, "readings": list(readings)})
    )


def raw(*readings: dict[str, Any], agent: str = "agent-1", seq: int = 7) -> bytes:
    """A telemetry payload as is, even one the wire models would refuse to build."""
    import json

    return json.dumps({"schema": 1, "agent": agent, "seq": seq, "readings": list(readings)}).encode()


def converter(encoded: str, **options: Any) -> Converter:
    encoder = LineEncoder() if encoded == "lines" else None
    return Converter(DeadLetters("test-collector"), encoder=encoder, **options)


def convert(conv: Converter, message_payload: bytes, topic: str = TOPIC, received_ms: int = NOW) -> Batch:
    batch = Batch()
    conv.convert(Received(topic, message_payload, received_ms), batch)
    return batch


@pytest.fixture(params=["points", "lines"])
def encoded(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def records(batch: Batch) -> list[Any]:
    return batch.lines or batch.points


def test_a_valid_message_becomes_one_record_per_reading_with_its_origin_and_seq(encoded: str) -> None:
    conv = converter(encoded)
    message = payload(reading(tags={"site": "north"}), reading(device="meter-2", tags={"site": "north"}))
    batch = convert(conv, message)
    assert len(records(batch)) == 2
    assert batch.dead == []
    assert [index for _, index in batch.origins] == [0, 1]
    assert batch.seqs == [("agent-1", 7)]
    if encoded == "points":
        assert batch.points[1] == Point(
            "electricity",
            {"site": "north", "device": "meter-2", "agent": "agent-1"},
            NOW - 1000,
            {"kwh": 1.5},
        )
    else:
        assert batch.lines[1] == f"electricity,agent=agent-1,device=meter-2,site=north kwh=1.5 {NOW - 1000}"
    assert conv.sites == {"agent-1": "north"}  # for its health points


# (case, message payload, topic, reason, error fragment, reading-level: the other reading is kept)
MESSAGE_CASES: list[tuple[str, bytes, str, str, str]] = [
    ("too large", b"x" * (MAX_PAYLOAD_BYTES + 1), TOPIC, Reason.TOO_LARGE, "exceeds"),
    ("not a data topic", payload(reading()), "citygw/v1/agent-1/config", Reason.TOPIC, "not a telemetry"),
    ("not JSON", b"{not json", TOPIC, Reason.INVALID_JSON, "JSON"),
    ("no readings", raw(), TOPIC, Reason.SCHEMA, "readings"),
    (
        "a device id with a Cyrillic letter",
        raw(reading(device="meter-\u0430")),
        TOPIC,
        Reason.SCHEMA,
        "U+0430",
    ),
    ("another agent's name", payload(reading(), agent="agent-2"), TOPIC, Reason.AGENT_MISMATCH, "differs"),
    ("health not JSON", b"[", "citygw/v1/agent-1/health", Reason.INVALID_JSON, "JSON"),
]


@pytest.mark.parametrize(
    ("case", "body", "topic", "reason", "error"), MESSAGE_CASES, ids=[c[0] for c in MESSAGE_CASES]
)
def test_a_bad_message_is_one_dead_letter_with_its_reason_and_payload(
    encoded: str, case: str, body: bytes, topic: str, reason: str, error: str
) -> None:
    batch = convert(converter(encoded), body, topic)
    assert records(batch) == []
    (letter,) = batch.dead
    assert letter.measurement == DEAD_LETTER
    assert letter.tags == {"reason": reason, "agent": "agent-1", "collector": "test-collector"}
    assert error in str(letter.fields["error"])
    assert letter.fields["topic"] == topic
    assert letter.fields["payload"] == body[:4096].decode(errors="replace")
    assert batch.messages == [Received(topic, body, NOW)]


def strict_without_config() -> dict[str, Any]:
    return {"owners": Owners(OwnerPolicy.STRICT)}


def an_hour_kept(conv: Converter) -> None:
    conv.retention = Retention("retention policy 'hour' (1h0m0s)", 3_600_000)


def string_kwh_known(conv: Converter) -> None:
    convert(conv, payload(reading(fields={"kwh": "high"}), seq=1))


def budget_of_one(conv: Converter) -> None:
    convert(conv, payload(reading(device="first"), seq=1))


READING_CASES: list[tuple[str, dict[str, Any], Any, Any, str, str]] = [
    ("a tag named agent", reading(tags={"agent": "x"}), None, None, Reason.SCHEMA, "reserved"),
    ("a field named device", reading(fields={"device": 1.0}), None, None, Reason.SCHEMA, "NOT_FIELD_NAMES"),
    ("a reserved measurement", reading(measurement="dead_letter"), None, None, Reason.SCHEMA, "own records"),
    ("an integer beyond 64 bits", reading(fields={"n": 2**64}), None, None, Reason.SCHEMA, "64-bit"),
    ("from the future", reading(ts=NOW + MAX_FUTURE_MS + 1), None, None, Reason.TIMESTAMP, "outside"),
    ("before 2000", reading(ts=900_000_000_000), None, None, Reason.TIMESTAMP, "outside"),
    ("older than kept", reading(ts=NOW - 7_200_000), an_hour_kept, None, Reason.TIMESTAMP, "older than"),
    ("a device not owned", reading(), None, strict_without_config, Reason.NOT_OWNED, "reading 0"),
    ("another type", reading(), string_kwh_known, None, Reason.FIELD_TYPE, "kwh"),
    ("a series beyond the budget", reading(device="second"), budget_of_one, None, Reason.TOO_MANY_SERIES, ""),
]


@pytest.mark.parametrize(
    ("case", "bad", "before", "options", "reason", "error"), READING_CASES, ids=[c[0] for c in READING_CASES]
)
def test_a_bad_reading_is_dead_lettered_alone_as_the_wire_carries_it(
    encoded: str, case: str, bad: dict[str, Any], before: Any, options: Any, reason: str, error: str
) -> None:
    extra = options() if options else {}
    if reason == Reason.TOO_MANY_SERIES:
        extra["max_series_per_agent"] = 1
    conv = converter(encoded, **extra)
    if before is not None:
        before(conv)
    good = reading(device="first") if reason == Reason.TOO_MANY_SERIES else reading(measurement="water")
    message = raw(good, bad) if reason != Reason.NOT_OWNED else raw(bad)
    batch = convert(conv, message)
    (letter,) = batch.dead
    assert letter.tags["reason"] == reason
    assert error in str(letter.fields["error"])
    assert wire.Reading.model_validate_json(str(letter.fields["payload"])) == wire.Reading.model_validate(bad)
    assert len(records(batch)) == (0 if reason == Reason.NOT_OWNED else 1)
    assert batch.seqs == [
        ("agent-1", 7)
    ]  # the message is taken: its good readings stored, the bad one a letter


def test_a_message_it_fails_on_is_a_collector_error_and_leaves_nothing_half_added() -> None:
    class Broken(LineEncoder):
        def reading_lines(self, agent: str, readings: Any) -> list[str]:
            raise RuntimeError("a bug")

    conv = Converter(DeadLetters("test-collector"), encoder=Broken())
    conv.fast = None  # the exact path, which calls the encoder
    batch = convert(conv, payload(reading()))
    assert batch.lines == []
    assert batch.origins == []
    (letter,) = batch.dead
    assert letter.tags["reason"] == Reason.COLLECTOR_ERROR
    assert "a bug" in str(letter.fields["error"])
    assert batch.seqs == [("agent-1", 7)]  # read from the journal's header: the agent stops holding it


def test_readings_the_store_refuses_become_rejected_by_store_letters(encoded: str) -> None:
    conv = converter(encoded)
    batch = convert(conv, payload(reading(device="a"), reading(device="b")))
    letters = conv.refused_letters([(batch.origins[1], "field type conflict")])
    (letter,) = letters
    assert letter.tags["reason"] == Reason.REJECTED_BY_STORE
    assert letter.fields["error"] == "field type conflict"
    assert wire.Reading.model_validate_json(str(letter.fields["payload"])).device == "b"


def test_every_reason_is_produced_here() -> None:
    produced = {case[3] for case in MESSAGE_CASES} | {case[4] for case in READING_CASES}
    produced |= {Reason.COLLECTOR_ERROR, Reason.REJECTED_BY_STORE}  # the two tests above
    assert produced == set(REASONS)


def test_dead_letters_of_one_instant_each_get_their_own_time() -> None:
    conv = converter("points")
    batch = Batch()
    for _ in range(3):
        conv.convert(Received(TOPIC, b"{", NOW), batch)
    assert [letter.ts_ms for letter in batch.dead] == [NOW, NOW + 1, NOW + 2]


def test_a_jump_in_an_agents_seq_is_noted_unless_gaps_are_not_watched() -> None:
    watching, shared = converter("points"), converter("points", watch_gaps=False)
    for conv in (watching, shared):
        for seq in (1, 2, 5, 3, 0):
            convert(conv, payload(reading(), seq=seq))
    batch = convert(watching, payload(reading(), seq=9))
    assert batch.gaps == [("agent-1", 0, 9)]  # 0: the agent started over
    assert convert(shared, payload(reading(), seq=20)).gaps == []


def test_a_payload_dead_lettered_whole_is_confirmed_by_its_journal_header() -> None:
    conv = converter("points")
    header = b'{"schema":1,"agent":"agent-1","seq":42,"readings":[oops'
    assert convert(conv, header).seqs == [("agent-1", 42)]
    assert convert(conv, header.replace(b"agent-1", b"agent-2")).seqs == []  # another agent's header


def test_health_becomes_agent_health_points_and_a_bad_time_a_dead_letter(encoded: str) -> None:
    conv = converter(encoded)
    health = wire.Health(
        agent="agent-1", ts=NOW - 1000, devices={}, journal=wire.JournalHealth(backlog=3, dropped=0)
    )
    batch = convert(conv, wire.encode(health), "citygw/v1/agent-1/health")
    assert len(records(batch)) == 1
    assert batch.origins[0][1] == WHOLE_MESSAGE
    if encoded == "points":
        assert batch.points[0].measurement == AGENT_HEALTH
        assert batch.points[0].fields["journal_backlog"] == 3

    late = health.model_copy(update={"ts": NOW + MAX_FUTURE_MS + 1})
    (letter,) = convert(conv, wire.encode(late), "citygw/v1/agent-1/health").dead
    assert letter.tags["reason"] == Reason.TIMESTAMP

    # A retained status being cleared stores nothing and is no dead letter.
    cleared = convert(conv, b"", "citygw/v1/agent-1/status")
    assert records(cleared) == []
    assert cleared.dead == []
