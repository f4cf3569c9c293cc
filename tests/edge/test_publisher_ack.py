"""The publisher with end-to-end acks, on a real Mosquitto: a batch stays until a collector confirms it."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from citygw.contract import wire
from edge.agent import open_journal
from edge.journal import Journal
from edge.publisher import Publisher
from tests.edge.conftest import AGENT, Watcher, agent_config, save_sessions, watching
from tests.edge.test_publisher import readings, running
from tests.edge.test_remote import say
from tests.services import Mosquitto


def holding(tmp_path: Path, url: str, **publish: Any) -> tuple[Journal, Publisher]:
    config = agent_config(tmp_path, url, publish={"batch_max_readings": 50, "interval": 0.1, **publish})
    journal = open_journal(config)
    return journal, Publisher(config, journal)


async def confirm(url: str, *ranges: tuple[int, int]) -> None:
    """What a collector says once the store took these batches."""
    await say(url, wire.Channel.ACK, wire.encode(wire.Ack(agent=AGENT, seqs=list(ranges))))


def seqs_sent(watcher: Watcher) -> list[int]:
    return [batch.seq for batch in watcher.batches()]


async def until(what: str, check: Any, within: float = 15.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not check():
        assert loop.time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


async def test_a_batch_stays_after_its_puback_until_the_collector_confirms_it(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    journal, publisher = holding(tmp_path, mosquitto.url)
    journal.append(readings(0, 120))
    async with watching(mosquitto.url) as watcher, running(publisher):
        await watcher.wait_for("three batches", lambda: len(watcher.batches()) == 3)
        await until("every PUBACK", lambda: journal.backlog() == 0)
        assert journal.held() == 120, "the broker's PUBACK is not the end"
        first, *_, last = seqs_sent(watcher)
        await confirm(mosquitto.url, (first, first + 1))
        await until("two confirmed", lambda: journal.held() == 20)
        await confirm(mosquitto.url, (last, last))
        await until("all confirmed", lambda: journal.held() == 0)
        assert publisher.counters.acks_received == 2
        assert publisher.counters.batches_resent == 0


async def test_held_batches_go_again_after_the_broker_lost_them(tmp_path: Path, mosquitto: Mosquitto) -> None:
    journal, publisher = holding(tmp_path, mosquitto.url)
    async with watching(mosquitto.url) as watcher, running(publisher):
        await asyncio.wait_for(publisher.connected.wait(), 10)
        await confirm(mosquitto.url, (0, 0))  # a collector confirms: this agent holds from now on
        await until("the confirmation", lambda: journal.collector_acks_seen)
        await save_sessions(mosquitto)  # the sessions survive the kill, the messages after it do not
        journal.append(readings(0, 100))
        await until("every PUBACK", lambda: journal.backlog() == 0 and len(watcher.batches()) == 2)
        sent = seqs_sent(watcher)
        mosquitto.kill()
        mosquitto.start()
        await watcher.wait_for("the same batches again", lambda: seqs_sent(watcher) == sent * 2, within=20)
        again = watcher.batches()[2:]
        assert [b.readings for b in again] == [b.readings for b in watcher.batches()[:2]]
        assert publisher.counters.batches_resent == 2
        await confirm(mosquitto.url, (sent[0], sent[-1]))
        await until("all confirmed", lambda: journal.held() == 0)


async def test_a_held_batch_goes_again_when_a_later_one_is_confirmed_and_it_is_not(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    journal, publisher = holding(tmp_path, mosquitto.url, ack_timeout=0.5)
    async with watching(mosquitto.url) as watcher, running(publisher):
        await asyncio.wait_for(publisher.connected.wait(), 10)
        await confirm(mosquitto.url, (0, 0))  # a collector confirms: this agent holds from now on
        await until("the confirmation", lambda: journal.collector_acks_seen)
        journal.append(readings(0, 100))
        await until("every PUBACK", lambda: journal.backlog() == 0 and len(watcher.batches()) == 2)
        first, second = seqs_sent(watcher)
        await asyncio.sleep(1.5)
        assert seqs_sent(watcher) == [first, second], "nothing confirmed: nothing sent again (store down)"
        await confirm(mosquitto.url, (second, second))  # the first was lost past the broker
        await watcher.wait_for("the first again", lambda: seqs_sent(watcher) == [first, second, first])
        await confirm(mosquitto.url, (first, first))
        await until("all confirmed", lambda: journal.held() == 0)


async def test_with_no_collector_confirming_ever_the_puback_is_final_after_the_timeout(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    journal, publisher = holding(tmp_path, mosquitto.url, ack_timeout=0.5)
    journal.append(readings(0, 30))
    async with running(publisher):
        await until("every PUBACK", lambda: journal.backlog() == 0)
        assert journal.held() == 30
        await until("let go", lambda: journal.held() == 0, within=5)
        assert journal.counters.released == 30
        assert journal.size_bytes() == 0


async def test_end_to_end_ack_off_takes_the_puback_as_final(tmp_path: Path, mosquitto: Mosquitto) -> None:
    journal, publisher = holding(tmp_path, mosquitto.url, end_to_end_ack=False)
    journal.append(readings(0, 30))
    async with running(publisher):
        await until("every PUBACK", lambda: journal.backlog() == 0)
        assert journal.held() == 0
        assert journal.size_bytes() == 0
        assert wire.topic(AGENT, wire.Channel.ACK) not in publisher._listeners
