"""The embedded store's durability (what the collector acknowledges survives a power cut) and its
concurrency (reads never wait for writes)."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

import pytest

from collector.store.base import Point, StoreUnavailable
from collector.store.sqlite import SqliteStore

SYNCHRONOUS_FULL = 2


def test_a_write_is_on_disk_before_it_returns(tmp_path: Path) -> None:
    """WAL with synchronous=NORMAL may roll the last commits back after a power loss; the broker has
    by then forgotten the messages the collector acknowledged for them."""
    store = SqliteStore(tmp_path / "telemetry.sqlite")
    try:
        assert store._db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        assert store._db.execute("PRAGMA synchronous").fetchone() == (SYNCHRONOUS_FULL,)
    finally:
        store.close()


def test_a_read_never_waits_for_a_write(tmp_path: Path) -> None:
    """A write can wait long for SQLite's write lock (another process's transaction, a slow disk's
    fsync); reads meanwhile answer at once with what was committed. One connection behind one lock
    kept the API's feed requests waiting for the collector's writes."""
    path = tmp_path / "telemetry.sqlite"
    store = SqliteStore(path)
    other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    try:
        store.write([_fix(1_000)])
        other.execute("BEGIN IMMEDIATE")  # another writer holds SQLite's write lock
        wrote: list[bool] = []
        writer = threading.Thread(target=lambda: wrote.append(store.write([_fix(2_000)]) is None))
        writer.start()
        deadline = time.monotonic() + 10
        while not store._lock.locked():  # the store's write is under way, waiting for SQLite's lock
            assert time.monotonic() < deadline
            time.sleep(0.01)
        unstick = threading.Timer(4, other.execute, args=("COMMIT",))  # the old store waits for it
        unstick.start()
        started = time.monotonic()
        rows = store.range(measurement="vehicle_position", start_ms=0, end_ms=10_000)
        took = time.monotonic() - started
        unstick.join()
        writer.join(15)
        assert wrote == [True]
        assert took < 1.5, f"the read waited {took:.1f} s for the write"
        assert [row.ts_ms for row in rows] == [1_000]
        assert [
            row.ts_ms for row in store.range(measurement="vehicle_position", start_ms=0, end_ms=10_000)
        ] == [
            1_000,
            2_000,
        ]
    finally:
        other.close()
        store.close()


def test_reads_from_many_threads_see_every_commit_and_close_cleanly(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "telemetry.sqlite")
    seen: list[int] = []

    def read() -> None:
        rows = store.range(measurement="vehicle_position", start_ms=0, end_ms=10_000)
        seen.append(len(rows))

    for n in range(1, 4):
        store.write([_fix(n * 1_000)])
        readers = [threading.Thread(target=read) for _ in range(8)]
        for thread in readers:
            thread.start()
        for thread in readers:
            thread.join(10)
        assert seen[-8:] == [n] * 8
    store.close()
    with pytest.raises(StoreUnavailable):
        store.range(measurement="vehicle_position", start_ms=0, end_ms=10_000)


def _fix(ts_ms: int) -> Point:
    return Point("vehicle_position", {"device": "gps-1"}, ts_ms, {"lat": 49.84, "lon": 24.03})
