"""The publisher against a real Mosquitto: readings leave the journal only after PUBACK."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from citygw.contract import wire
from citygw.contract.agent_config import AgentConfig
from edge.journal import Journal
from edge.publisher import MqttClient, Publisher
from tests.edge.conftest import AGENT, Watcher, agent_config, save_sessions, watching
from tests.services import Mosquitto


def readings(start: int, count: int) -> list[wire.Reading]:
    return [
        wire.Reading(device="aq-1", measurement="air_quality", ts=1_700_000_000_000 + n, fields={"n": n})
        for n in range(start, start + count)
    ]


def delivered(watcher: Watcher) -> list[int]:
    """Reading numbers in delivery order, duplicates (same seq) removed."""
    seen: set[int] = set()
    numbers: list[int] = []
    for batch in watcher.batches():
        if batch.seq in seen:
            continue
        seen.add(batch.seq)
        numbers += [int(r.fields["n"]) for r in batch.readings]
    return numbers


def assert_seq_continuous(watcher: Watcher) -> None:
    seqs = sorted({batch.seq for batch in watcher.batches()})
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), f"gap in seq: {seqs}"


@contextlib.asynccontextmanager
async def running(publisher: Publisher) -> AsyncIterator[asyncio.Task[None]]:
    task = asyncio.create_task(publisher.run(), name="publisher")
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def setup(tmp_path: Path, url: str) -> tuple[AgentConfig, Journal, Publisher]:
    config = agent_config(tmp_path, url)
    journal = Journal(config.journal.path, AGENT)
    return config, journal, Publisher(config, journal, version="9.9.9", started_at=1234)


async def test_publishes_journal_and_forgets_after_puback(tmp_path: Path, mosquitto: Mosquitto) -> None:
    _, journal, publisher = setup(tmp_path, mosquitto.url)
    journal.append(readings(0, 120))
    async with watching(mosquitto.url) as watcher, running(publisher):
        await watcher.wait_for("120 readings", lambda: len(delivered(watcher)) == 120)
        await watcher.wait_for("empty journal", lambda: journal.backlog() == 0)
        assert delivered(watcher) == list(range(120))
        assert all(len(b.readings) <= 50 for b in watcher.batches())
        assert all(b.agent == AGENT for b in watcher.batches())
        assert_seq_continuous(watcher)
        status, _ = watcher.statuses()[-1]
        assert status.state is wire.AgentState.ONLINE
        assert (status.version, status.started_at) == ("9.9.9", 1234)
        assert publisher.connected.is_set()


async def test_nothing_leaves_the_journal_while_the_broker_cannot_ack(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    """A frozen broker (SIGSTOP) takes the bytes but sends no PUBACK: the journal must keep them."""
    _, journal, publisher = setup(tmp_path, mosquitto.url)
    async with watching(mosquitto.url) as watcher, running(publisher):
        await asyncio.wait_for(publisher.connected.wait(), 10)
        assert mosquitto.proc is not None
        os.kill(mosquitto.proc.pid, signal.SIGSTOP)
        try:
            journal.append(readings(0, 10))
            await asyncio.sleep(1.0)  # several publish intervals, shorter than publish_timeout
            assert journal.backlog() == 10
            assert publisher.counters.batches_published == 0
        finally:
            os.kill(mosquitto.proc.pid, signal.SIGCONT)
        await watcher.wait_for("the 10 readings", lambda: len(delivered(watcher)) == 10)
        await watcher.wait_for("empty journal", lambda: journal.backlog() == 0)


async def test_broker_outage_loses_nothing_and_keeps_order(tmp_path: Path, mosquitto: Mosquitto) -> None:
    _, journal, publisher = setup(tmp_path, mosquitto.url)
    async with watching(mosquitto.url) as watcher, running(publisher):
        journal.append(readings(0, 30))
        await watcher.wait_for("first 30", lambda: len(delivered(watcher)) == 30)
        await save_sessions(mosquitto)  # the watcher's session must outlive the kill, not the agent's
        mosquitto.kill()
        await watcher.wait_for("the publisher to notice", lambda: not publisher.connected.is_set())
        for start in range(30, 230, 20):  # the pollers keep journaling during the outage
            journal.append(readings(start, 20))
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.5)
        assert journal.backlog() == 200, "nothing may leave the journal while the broker is down"

        mosquitto.start()
        await asyncio.wait_for(publisher.connected.wait(), 15)
        journal.append(readings(230, 5))
        await watcher.wait_for("all 235", lambda: len(delivered(watcher)) == 235, within=30)
        await watcher.wait_for("empty journal", lambda: journal.backlog() == 0)
        got = delivered(watcher)
        assert sorted(got) == list(range(235)), "readings lost or duplicated"
        backlog = [n for n in got if n < 230]
        assert backlog == sorted(backlog), "the backlog drains in order"
        assert_seq_continuous(watcher)
        assert publisher.counters.connects == 2


async def test_live_readings_overtake_a_rate_capped_backlog(tmp_path: Path, mosquitto: Mosquitto) -> None:
    config = agent_config(
        tmp_path, mosquitto.url, publish={"batch_max_readings": 100, "interval": 0.1, "backlog_rate": 1000}
    )
    journal = Journal(config.journal.path, AGENT)
    journal.append(readings(0, 3000))  # the outage's backlog: 3 s at 1000 readings/s
    publisher = Publisher(config, journal)
    async with watching(mosquitto.url) as watcher, running(publisher):
        await asyncio.wait_for(publisher.connected.wait(), 10)
        await asyncio.sleep(0.3)
        journal.append(readings(10_000, 1))  # a bus position, journaled while the backlog drains
        await watcher.wait_for("the live reading", lambda: 10_000 in delivered(watcher), within=2)
        backlog_sent = len([n for n in delivered(watcher) if n < 10_000])
        assert 100 <= backlog_sent < 3000, "live data must not wait for the whole backlog"
        await watcher.wait_for("all", lambda: len(delivered(watcher)) == 3001, within=15)
        backlog = [n for n in delivered(watcher) if n < 10_000]
        assert backlog == list(range(3000))
        assert_seq_continuous(watcher)
        assert journal.backlog() == 0


async def test_several_batches_in_flight_each_acked_alone(tmp_path: Path, mosquitto: Mosquitto) -> None:
    """With the broker frozen, `inflight` batches are formed and sent; none leaves the journal."""
    config = agent_config(tmp_path, mosquitto.url, publish={"batch_max_readings": 10, "inflight": 3})
    journal = Journal(config.journal.path, AGENT)
    publisher = Publisher(config, journal)
    async with watching(mosquitto.url) as watcher, running(publisher):
        await asyncio.wait_for(publisher.connected.wait(), 10)
        assert mosquitto.proc is not None
        os.kill(mosquitto.proc.pid, signal.SIGSTOP)
        try:
            journal.append(readings(0, 100))
            await asyncio.sleep(1.0)
            assert len(journal.formed_batches()) == 3, "the window is 3 batches"
            assert journal.backlog() == 100
        finally:
            os.kill(mosquitto.proc.pid, signal.SIGCONT)
        await watcher.wait_for("all 100", lambda: len(delivered(watcher)) == 100)
        await watcher.wait_for("empty journal", lambda: journal.backlog() == 0)
        assert sorted(delivered(watcher)) == list(range(100))
        assert_seq_continuous(watcher)


async def test_cancel_says_offline(tmp_path: Path, mosquitto: Mosquitto) -> None:
    _, _, publisher = setup(tmp_path, mosquitto.url)
    async with watching(mosquitto.url) as watcher:
        async with running(publisher):
            await asyncio.wait_for(publisher.connected.wait(), 10)
        await watcher.wait_for("offline status", lambda: len(watcher.statuses()) == 2)
    async with watching(mosquitto.url, client_id="late-watcher") as late:
        await late.wait_for("retained status", lambda: len(late.statuses()) == 1)
        status, retained = late.statuses()[0]
        assert status.state is wire.AgentState.OFFLINE
        assert retained


async def test_health_is_sent_only_when_connected(tmp_path: Path, mosquitto: Mosquitto) -> None:
    _, journal, publisher = setup(tmp_path, mosquitto.url)
    health = wire.Health(agent=AGENT, ts=1, devices={}, journal=journal.health())
    assert not await publisher.publish_health(health)
    async with watching(mosquitto.url) as watcher, running(publisher):
        await asyncio.wait_for(publisher.connected.wait(), 10)
        assert await publisher.publish_health(health)
        await watcher.wait_for("health", lambda: bool(watcher.on(wire.Channel.HEALTH)))
        received = watcher.on(wire.Channel.HEALTH)[0]
        assert wire.Health.model_validate_json(received.payload) == health
        assert not received.retain


@pytest.mark.parametrize("turns", range(4))
async def test_a_wait_told_to_stop_as_its_answer_comes_stops(turns: int) -> None:
    """A task cancelled in the loop turn its PUBACK (or CONNACK, SUBACK) arrives is cancelled.

    aiomqtt's own wait (``asyncio.wait_for``) returns the answer and drops the cancellation on
    Python 3.11: a health or outbox loop cancelled so went on for ever and the agent never stopped.
    """
    client = MqttClient("127.0.0.1", 9)
    answer = asyncio.Event()

    async def keep_waiting() -> None:  # like the health loop: wait for an answer, again and again
        while True:
            await client._wait_for(answer.wait(), timeout=5)
            answer.clear()

    task = asyncio.create_task(keep_waiting())
    await asyncio.sleep(0.01)
    answer.set()
    for _ in range(turns):
        await asyncio.sleep(0)
    task.cancel()
    done, _ = await asyncio.wait([task], timeout=2)
    assert done, "the answer was returned and the cancellation lost"
    assert task.cancelled()
