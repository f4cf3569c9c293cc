"""End-to-end acks: the collector tells each agent which of its batches are stored (``ack`` channel)."""

from __future__ import annotations

import queue
from pathlib import Path
from typing import Any

import pytest
from paho.mqtt.client import Client, MQTTMessage
from paho.mqtt.enums import CallbackAPIVersion

from citygw.contract import wire
from collector.dead_letter import DEAD_LETTER
from collector.store.base import Point, StoreUnavailable
from collector.store.sqlite import SqliteStore
from tests.collector.helpers import Agent, fast, now_ms, started, stored, wait_until
from tests.services import Mosquitto

pytestmark = pytest.mark.integration


class Acks:
    """A subscriber to the agents' ack topics, collecting the confirmed seqs per agent."""

    def __init__(self, broker: Mosquitto) -> None:
        self.messages: queue.Queue[MQTTMessage] = queue.Queue()
        self.client = Client(CallbackAPIVersion.VERSION2, client_id="test-acks")
        self.client.on_message = lambda _c, _u, message: self.messages.put(message)
        self.client.connect("127.0.0.1", broker.port)
        self.client.subscribe(wire.subscription(wire.Channel.ACK), qos=1)
        self.client.loop_start()
        self.confirmed: dict[str, set[int]] = {}

    def seqs(self, agent: str, wait: float = 0.0) -> set[int]:
        """The seqs confirmed to ``agent`` so far, after ``wait`` seconds of listening."""
        try:
            while True:
                message = self.messages.get(timeout=wait)
                if message.topic == wire.ACK_PROBE_TOPIC:  # the collector's check that it may publish
                    assert message.payload == b""
                    continue
                ack = wire.Ack.model_validate_json(message.payload)
                assert message.topic == wire.topic(ack.agent, wire.Channel.ACK)
                for first, last in ack.seqs:
                    self.confirmed.setdefault(ack.agent, set()).update(range(first, last + 1))
        except queue.Empty:
            pass
        return self.confirmed.get(agent, set())

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def acks(mosquitto: Mosquitto) -> Any:
    listener = Acks(mosquitto)
    yield listener
    listener.close()


def test_stored_batches_are_confirmed_to_their_agent(
    mosquitto: Mosquitto, agent: Agent, acks: Acks, tmp_path: Path
) -> None:
    other = Agent(mosquitto, "agent-2")
    store = SqliteStore(tmp_path / "telemetry.sqlite")
    try:
        with started(fast(mosquitto, store)) as collector:
            for _ in range(10):
                agent.publish(agent.batch(count=3))
            agent.publish(agent.batch(count=2, seq=20))
            other.publish(other.batch(count=1, seq=7))
            wait_until(lambda: acks.seqs("agent-1", 0.05) == {*range(10), 20}, "agent-1's seqs confirmed")
            wait_until(lambda: acks.seqs("agent-2", 0.05) == {7}, "agent-2's seq confirmed")
            assert collector.stats.confirmed == 12
            assert "\ncitygw_collector_confirmed_batches_total 12\n" in collector.metrics_text()
    finally:
        other.close()


def test_dead_lettered_batches_are_confirmed_too(
    mosquitto: Mosquitto, agent: Agent, acks: Acks, tmp_path: Path
) -> None:
    store = SqliteStore(tmp_path / "telemetry.sqlite")
    future = agent.readings(0, 1)[0].model_copy(update={"ts": now_ms() + 3_600_000})
    one_bad = wire.encode(wire.TelemetryBatch(agent="agent-1", seq=3, readings=[future]))
    # A journal-made header, then something the schema refuses: the whole message is a dead letter.
    not_valid = b'{"schema":1,"agent":"agent-1","seq":4,"readings":[{"device":"d"}]}'
    someone_elses = b'{"schema":1,"agent":"agent-9","seq":5,"readings":[{"device":"d"}]}'
    with started(fast(mosquitto, store)) as collector:
        for payload in (one_bad, not_valid, someone_elses):
            agent.publish(payload)
        wait_until(lambda: collector.stats.dead_letters == 3, "three dead letters")
        wait_until(lambda: acks.seqs("agent-1", 0.05) == {3, 4}, "the dead-lettered seqs confirmed")
        assert 5 not in acks.seqs("agent-1", 0.3), "a payload naming another agent confirms nothing"
        assert acks.seqs("agent-9") == set()
    assert len(stored(store, DEAD_LETTER)) == 3


class DownStore(SqliteStore):
    """A SQLite store that is unavailable until ``up`` is set."""

    up = False

    def write(self, points: list[Point]) -> None:
        if not self.up:
            raise StoreUnavailable("down for the test")
        super().write(points)


def test_nothing_is_confirmed_before_the_store_took_it(
    mosquitto: Mosquitto, agent: Agent, acks: Acks, tmp_path: Path
) -> None:
    store = DownStore(tmp_path / "telemetry.sqlite")
    with started(fast(mosquitto, store)) as collector:
        for _ in range(5):
            agent.publish(agent.batch(count=2))
        wait_until(lambda: collector.stats.store_retries >= 3, "the store to refuse")
        assert acks.seqs("agent-1", 0.5) == set()
        store.up = True
        wait_until(lambda: acks.seqs("agent-1", 0.05) == set(range(5)), "seqs confirmed once stored")
    assert len(stored(store)) == 10


def test_a_collector_told_not_to_confirms_nothing(
    mosquitto: Mosquitto, agent: Agent, acks: Acks, tmp_path: Path
) -> None:
    store = SqliteStore(tmp_path / "telemetry.sqlite")
    with started(fast(mosquitto, store, acks=False)) as collector:
        agent.publish(agent.batch(count=2))
        wait_until(lambda: collector.stats.messages == 1, "the message stored")
        assert acks.seqs("agent-1", 0.5) == set()
        assert collector.stats.confirmed == 0
