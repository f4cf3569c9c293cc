"""Acknowledgements: batches finished in arrival order, and the end-to-end acks agents get.

MQTT asks a client to acknowledge QoS 1 messages in the order they came. The collector's writer
threads store several batches at once and the later one may be stored first, so ``InOrder``
holds a batch that is done until every batch numbered before it is done too, then finishes them
in number order (the collector then sends their PUBACKs). ``agent_acks`` turns the (agent, seq)
of the telemetry now stored into the messages each agent gets on its ``ack`` channel
(wire.Ack, at most ``wire.MAX_ACK_RANGES`` ranges each). Neither touches the network.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from typing import Generic, TypeVar

from citygw.contract import wire

T = TypeVar("T")


class InOrder(Generic[T]):
    """Calls ``finish`` on items numbered 0, 1, 2… in that order, each once all before it are done.

    ``done`` may be called from several threads, in any order of numbers; ``finish`` runs under
    the lock, so finishes never overlap nor overtake one another.
    """

    def __init__(self, finish: Callable[[T], None]) -> None:
        self._finish = finish
        self._held: dict[int, T] = {}
        self._next = 0
        self._lock = threading.Lock()

    @property
    def held(self) -> int:
        """Items done and waiting for an earlier one."""
        return len(self._held)

    def reset(self) -> None:
        """Forget held items; numbering starts again at 0 (a new start of the collector)."""
        with self._lock:
            self._held.clear()
            self._next = 0

    def done(self, number: int, item: T) -> None:
        """Item ``number`` is done: finish it, and the held ones after it, once every earlier one is."""
        with self._lock:
            if number < self._next or number in self._held:
                raise ValueError(f"item {number} is done already")
            self._held[number] = item
            while (ready := self._held.pop(self._next, None)) is not None:
                self._next += 1
                self._finish(ready)


def agent_acks(seqs: Iterable[tuple[str, int]]) -> list[tuple[str, bytes]]:
    """(topic, payload) of the acks telling each agent which of its batches (seqs) are stored."""
    by_agent: dict[str, list[int]] = {}
    for agent, seq in seqs:
        by_agent.setdefault(agent, []).append(seq)
    messages = []
    for agent, numbers in by_agent.items():
        ranges = wire.seq_ranges(numbers)
        for start in range(0, len(ranges), wire.MAX_ACK_RANGES):
            ack = wire.Ack(agent=agent, seqs=ranges[start : start + wire.MAX_ACK_RANGES])
            messages.append((wire.topic(agent, wire.Channel.ACK), wire.encode(ack)))
    return messages


__all__ = ["InOrder", "agent_acks"]
