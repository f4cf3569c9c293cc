"""Issue 21.7: dead letters are logged per agent and reason at most once a minute, with counts;
the dead-letter store keeps every one."""

from __future__ import annotations

import logging
import uuid

import pytest

from collector.dead_letter import DEAD_LETTER, DeadLetterLog, Reason
from collector.store.influx_v1 import InfluxV1Store
from tests.collector.helpers import END, Agent, fast, started, wait_until
from tests.services import InfluxDB, Mosquitto


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [record.getMessage() for record in caplog.records if record.name == "test.dead_letters"]


def test_the_first_of_each_agent_and_reason_is_logged_then_one_summary_a_minute(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = Clock()
    letters = DeadLetterLog(logging.getLogger("test.dead_letters"), 60.0, clock=clock)
    caplog.set_level(logging.WARNING, "test.dead_letters")
    for n in range(1000):
        letters.letter("c1", "agent-1", Reason.SCHEMA, "citygw/v1/agent-1/telemetry", f"bad {n}")
        letters.letter("c1", "agent-2", Reason.SCHEMA, "citygw/v1/agent-2/telemetry", f"bad {n}")
    letters.letter("c1", "agent-1", Reason.INVALID_JSON, "citygw/v1/agent-1/telemetry", "EOF")
    letters.flush("c1")  # nothing due yet
    assert lines(caplog) == [
        "collector c1: dead letter (schema) from citygw/v1/agent-1/telemetry: bad 0",
        "collector c1: dead letter (schema) from citygw/v1/agent-2/telemetry: bad 0",
        "collector c1: dead letter (invalid_json) from citygw/v1/agent-1/telemetry: EOF",
    ]
    caplog.clear()
    clock.now += 59
    letters.letter("c1", "agent-1", Reason.SCHEMA, "citygw/v1/agent-1/telemetry", "bad 1000")
    letters.flush("c1")
    assert lines(caplog) == []
    clock.now += 1
    letters.flush("c1")
    assert lines(caplog) == [
        "collector c1: 1000 more dead letter(s) (schema) from agent agent-1 in the last 60 s; "
        "the latest: citygw/v1/agent-1/telemetry: bad 1000",
        "collector c1: 999 more dead letter(s) (schema) from agent agent-2 in the last 60 s; "
        "the latest: citygw/v1/agent-2/telemetry: bad 999",
    ]
    caplog.clear()
    clock.now += 60
    letters.flush("c1")  # quiet for a minute: forgotten, so the next one is logged at once
    letters.letter("c1", "agent-1", Reason.SCHEMA, "citygw/v1/agent-1/telemetry", "again")
    letters.letter("c1", "agent-1", Reason.SCHEMA, "citygw/v1/agent-1/telemetry", "and again")
    letters.flush("c1", everything=True)  # at stop
    assert lines(caplog) == [
        "collector c1: dead letter (schema) from citygw/v1/agent-1/telemetry: again",
        "collector c1: 1 more dead letter(s) (schema) from agent agent-1 in the last 0 s; "
        "the latest: citygw/v1/agent-1/telemetry: and again",
    ]


def test_the_pairs_followed_stay_bounded(caplog: pytest.LogCaptureFixture) -> None:
    letters = DeadLetterLog(logging.getLogger("test.dead_letters"), 60.0, clock=Clock(), max_keys=10)
    caplog.set_level(logging.WARNING, "test.dead_letters")
    for n in range(100):
        letters.letter("c1", f"agent-{n}", Reason.SCHEMA, "t", "bad")
        letters.letter("c1", f"agent-{n}", Reason.SCHEMA, "t", "bad")
    assert len(letters._logged) <= 10
    letters.flush("c1", everything=True)
    assert len(lines(caplog)) == 200  # each pair's summary written when it is let go


@pytest.mark.integration
def test_an_agent_flooding_bad_messages_writes_a_few_log_lines_and_every_dead_letter(
    mosquitto: Mosquitto, agent: Agent, influxdb: InfluxDB, caplog: pytest.LogCaptureFixture
) -> None:
    database = f"flood_{uuid.uuid4().hex[:8]}"
    store = InfluxV1Store(influxdb.url, database)
    store.ensure_database()
    caplog.set_level(logging.WARNING, "collector.service")
    bad = 600
    try:
        with started(fast(mosquitto, store)) as collector:
            for n in range(bad):
                agent.publish(b'{"schema": 1, "agent": ' if n % 2 else b'{"schema": 2}')
            wait_until(lambda: collector.stats.messages == bad, "every message", timeout=60)
            warnings = [r.getMessage() for r in caplog.records if "dead letter" in r.getMessage()]
            assert len(warnings) == 2, warnings  # the first of each reason; a minute has not passed
        letters = store.range(measurement=DEAD_LETTER, start_ms=0, end_ms=END)
        assert len(letters) == bad
        assert {r.tags["reason"] for r in letters} == {Reason.INVALID_JSON, Reason.SCHEMA}
        summaries = [r.getMessage() for r in caplog.records if "more dead letter(s)" in r.getMessage()]
        assert sorted(summary.split(" more")[0].rsplit(" ", 1)[1] for summary in summaries) == ["299", "299"]
    finally:
        store.close()
        influxdb.query(f'DROP DATABASE "{database}"')
