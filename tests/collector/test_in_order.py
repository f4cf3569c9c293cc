"""Acknowledgement order and agent acks alone (collector/acks.py): no broker, no store."""

from __future__ import annotations

import random
import threading

import pytest

from citygw.contract import wire
from collector.acks import InOrder, agent_acks


def test_a_batch_done_early_waits_for_every_batch_before_it() -> None:
    finished: list[str] = []
    order: InOrder[str] = InOrder(finished.append)
    order.done(2, "c")
    order.done(1, "b")
    assert finished == []
    assert order.held == 2
    order.done(0, "a")
    assert finished == ["a", "b", "c"]
    assert order.held == 0
    order.done(3, "d")
    assert finished == ["a", "b", "c", "d"]


def test_done_twice_is_refused_and_reset_starts_again_from_zero() -> None:
    finished: list[int] = []
    order: InOrder[int] = InOrder(finished.append)
    order.done(0, 0)
    with pytest.raises(ValueError, match="done already"):
        order.done(0, 0)
    order.done(2, 2)
    order.reset()
    assert order.held == 0
    order.done(0, 10)
    assert finished == [0, 10]


def test_writers_finishing_in_any_order_from_many_threads_finish_in_number_order() -> None:
    finished: list[int] = []
    order: InOrder[int] = InOrder(finished.append)
    numbers = list(range(2000))
    random.Random(7).shuffle(numbers)
    chunks = [numbers[i::4] for i in range(4)]

    def finish_all(chunk: list[int]) -> None:
        for number in chunk:
            order.done(number, number)

    threads = [threading.Thread(target=finish_all, args=(chunk,)) for chunk in chunks]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert finished == list(range(2000))


def test_agent_acks_name_each_agents_stored_seqs_as_ranges_on_its_ack_channel() -> None:
    acks = agent_acks([("agent-1", 3), ("agent-2", 9), ("agent-1", 4), ("agent-1", 5), ("agent-1", 8)])
    assert [topic for topic, _ in acks] == ["citygw/v1/agent-1/ack", "citygw/v1/agent-2/ack"]
    first = wire.Ack.model_validate_json(acks[0][1])
    assert first.agent == "agent-1"
    assert first.seqs == wire.seq_ranges([3, 4, 5, 8])
    assert wire.Ack.model_validate_json(acks[1][1]).seqs == wire.seq_ranges([9])


def test_agent_acks_split_past_the_most_ranges_one_ack_carries() -> None:
    seqs = [("agent-1", 2 * n) for n in range(wire.MAX_ACK_RANGES + 1)]  # every one its own range
    acks = agent_acks(seqs)
    assert len(acks) == 2
    carried = [wire.Ack.model_validate_json(payload).seqs for _, payload in acks]
    assert len(carried[0]) == wire.MAX_ACK_RANGES
    assert carried[0] + carried[1] == wire.seq_ranges([seq for _, seq in seqs])
    assert agent_acks([]) == []
