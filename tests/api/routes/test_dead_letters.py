"""GET /v1/dead-letters: what the real collector refused, through real Mosquitto, read back by the API."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from citygw.contract import wire
from collector.dead_letter import Reason
from collector.store.sqlite import SqliteStore
from tests.api.factories import FakeClock
from tests.collector.helpers import Agent, fast, now_ms, started, wait_until
from tests.services import Mosquitto

pytestmark = pytest.mark.integration


def letters(client: TestClient, **params: Any) -> dict[str, Any]:
    response = client.get("/v1/dead-letters", params={"start": "-10m", **params})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def test_refused_payloads_are_listed_newest_first_with_reason_error_and_payload(
    client: TestClient, store: SqliteStore, clock: FakeClock, mosquitto: Mosquitto
) -> None:
    agent = Agent(mosquitto)
    other = wire.topic("agent-2", wire.Channel.TELEMETRY)
    ancient = agent.readings(0, 1)[0].model_copy(update={"ts": 946_684_799_999})
    try:
        with started(fast(mosquitto, store, client_id="collector-a")) as collector:
            agent.publish(b'{"schema": 1, "agent": "agent-1", "seq": ')
            agent.client.publish(other, agent.batch(count=2), qos=1).wait_for_publish(10)
            agent.publish(agent.batch(count=2))
            agent.publish(
                wire.encode(wire.TelemetryBatch(agent="agent-1", seq=agent.seq, readings=[ancient]))
            )
            wait_until(lambda: collector.stats.messages == 4, "every message")
    finally:
        agent.close()
    clock.now_ms = now_ms() + 1

    body = letters(client)
    assert body["counts"] == {Reason.AGENT_MISMATCH: 1, Reason.INVALID_JSON: 1, Reason.TIMESTAMP: 1}
    assert [letter["reason"] for letter in body["letters"]] == [
        Reason.TIMESTAMP,
        Reason.AGENT_MISMATCH,
        Reason.INVALID_JSON,
    ]
    assert body["more"] is False
    newest, mismatch, invalid = body["letters"]
    assert newest["ts_ms"] > mismatch["ts_ms"] > invalid["ts_ms"]
    assert invalid["payload"] == '{"schema": 1, "agent": "agent-1", "seq": '
    assert invalid["topic"] == "citygw/v1/agent-1/telemetry"
    assert "Invalid JSON" in invalid["error"]
    assert (mismatch["agent"], mismatch["topic"], mismatch["collector"]) == ("agent-2", other, "collector-a")
    assert "differs from topic agent" in mismatch["error"]
    assert "946684799999" in newest["error"]
    assert '"ts":946684799999' in newest["payload"].replace(" ", "")

    assert [x["reason"] for x in letters(client, reason=Reason.TIMESTAMP)["letters"]] == [Reason.TIMESTAMP]
    by_agent = letters(client, agent="agent-2")
    assert by_agent["counts"] == {Reason.AGENT_MISMATCH: 1}
    assert [x["agent"] for x in by_agent["letters"]] == ["agent-2"]
    first = letters(client, limit=1)
    assert [x["reason"] for x in first["letters"]] == [Reason.TIMESTAMP]
    assert first["more"] is True
    assert letters(client, start="-10m", end="-9m")["letters"] == []


@pytest.mark.parametrize(
    "params",
    [{"reason": "Not A Reason"}, {"agent": "Agent One"}, {"limit": "0"}, {"start": "yesterday-ish"}],
)
def test_bad_filters_are_refused_with_the_reason(client: TestClient, params: dict[str, str]) -> None:
    response = client.get("/v1/dead-letters", params=params)
    assert response.status_code == 422, response.text
    (name,) = params
    assert name in response.text
