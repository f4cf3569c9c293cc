"""Storing a batch alone (collector/store_writes.py): retries and refusals on a real SQLite store."""

from __future__ import annotations

import math
import threading
from collections.abc import Sequence
from pathlib import Path

from citygw.contract import wire
from collector.convert import Batch, Converter, Received
from collector.dead_letter import DEAD_LETTER, DeadLetters, Reason
from collector.store.base import Point, StoreUnavailable
from collector.store.sqlite import SqliteStore
from collector.store_writes import BatchWriter

NOW = 1_700_000_000_000
TOPIC = "citygw/v1/agent-1/telemetry"


class FlakyStore(SqliteStore):
    """Down for its first ``down`` writes."""

    def __init__(self, path: Path, down: int) -> None:
        super().__init__(path)
        self.down = down
        self.calls = 0

    def write(self, points: Sequence[Point]) -> None:
        self.calls += 1
        if self.calls <= self.down:
            raise StoreUnavailable("down for maintenance")
        super().write(points)


def converted(converter: Converter, *values: float) -> Batch:
    readings = [
        wire.Reading(device=f"meter-{n}", measurement="water", ts=NOW + n, fields={"m3": 1.0})
        for n in range(len(values))
    ]
    batch = Batch()
    payload = wire.encode(wire.TelemetryBatch(agent="agent-1", seq=0, readings=readings))
    converter.convert(Received(TOPIC, payload, NOW + 1000), batch)
    for point, value in zip(batch.points, values, strict=True):
        point.fields["m3"] = value  # what the store will see (NaN: refused by SQLite)
    return batch


def writer(
    store: SqliteStore, converter: Converter, stopping: threading.Event, retries: list[int]
) -> BatchWriter:
    return BatchWriter(
        store,
        converter,
        name="test",
        stopping=stopping,
        retry_initial_seconds=0.001,
        retry_max_seconds=0.002,
        on_retry=lambda: retries.append(1),
    )


def test_a_batch_is_retried_while_the_store_is_down_then_written(tmp_path: Path) -> None:
    store = FlakyStore(tmp_path / "t.sqlite", down=3)
    converter = Converter(DeadLetters("test"))
    retries: list[int] = []
    outcome = writer(store, converter, threading.Event(), retries).store(converted(converter, 1.0, 2.0))
    assert outcome.written
    assert outcome.stored == 2
    assert len(retries) == 3
    assert [p.fields["m3"] for p in store.latest(measurement="water")] == [1.0, 2.0]
    store.close()


def test_refused_records_become_rejected_by_store_letters_and_the_rest_is_stored(tmp_path: Path) -> None:
    store = FlakyStore(tmp_path / "t.sqlite", down=0)
    converter = Converter(DeadLetters("test"))
    outcome = writer(store, converter, threading.Event(), []).store(converted(converter, 1.0, math.nan, 3.0))
    assert outcome.written
    assert outcome.stored == 2
    (letter,) = outcome.dead
    assert letter.tags["reason"] == Reason.REJECTED_BY_STORE
    assert '"device":"meter-1"' in str(letter.fields["payload"])
    assert len(store.latest(measurement="water")) == 2
    assert [p.tags["reason"] for p in store.latest(measurement=DEAD_LETTER)] == [Reason.REJECTED_BY_STORE]
    store.close()


def test_stopping_while_the_store_is_down_leaves_the_batch_unwritten(tmp_path: Path) -> None:
    store = FlakyStore(tmp_path / "t.sqlite", down=1_000_000)
    converter = Converter(DeadLetters("test"))
    stopping = threading.Event()
    stopping.set()
    outcome = writer(store, converter, stopping, []).store(converted(converter, 1.0))
    assert not outcome.written
    assert store.calls == 1
    store.close()
