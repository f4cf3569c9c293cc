"""The on-disk journal: every reading is written here before anything else happens to it.

SQLite in WAL mode. A reading leaves the journal only when the broker acknowledged the
batch that carries it (``ack``). A batch, once formed, keeps its sequence number and its
exact bytes until acknowledged, so a republish after a reconnect or a restart is the same
message and the collector can tell a duplicate from a gap.

``fsync="normal"`` (synchronous=NORMAL) never corrupts the file, but on power loss it may lose
the transactions not yet synced: at worst the readings journaled since the last checkpoint
(``wal_autocheckpoint`` pages, set here to about 1 MB, a few thousand readings) and in
practice the last seconds the kernel had not written back. A lost ack only means a
duplicate later. ``fsync="full"`` syncs every commit: nothing acknowledged to the poller
is lost, at the price of one fsync per append (an SD card does a few hundred a second).

A quota (``quota_bytes``, counted as the readings' JSON plus a fixed per-row overhead) bounds
the file; when it is reached the policy decides what gives way, and every reading given up
is counted in ``counters.dropped`` (published on ``health``):

- ``drop_oldest``: the oldest readings not yet in a batch make room for the new ones;
- ``drop_newest``: new readings are refused until the backlog drains;
- ``stop_slow``: from the moment the quota is reached until the backlog is back under 90 % of
  it, readings of slow devices (``slow_devices``: polled rarely, e.g. meter totals) are
  refused; the others make room as with ``drop_oldest``.

After an outage, live data goes first: ``mark_live()`` (called on each connect) draws a line
in the journal; ``form_batch(live=True)`` takes readings above it, ``form_batch(live=False)``
the backlog below it, oldest first, so the publisher can interleave the two.

Calls are synchronous on the event loop: with synchronous=NORMAL a WAL commit does not wait
for the disk (only checkpoints do); with ``full`` every commit waits for an fsync.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, NamedTuple

from citygw import wire

QuotaPolicy = Literal["drop_oldest", "drop_newest", "stop_slow"]
# Per-row cost on disk beyond the JSON (rowid, index entry, page slack), for the quota.
ROW_OVERHEAD_BYTES = 48
# When dropping the oldest, free this share of the quota at once rather than a row per append.
DROP_SLACK = 0.01
CHECKPOINT_PAGES = 256
# stop_slow: slow devices are taken again once the backlog fell below this share of the quota.
RESUME_SLOW_SHARE = 0.9

_SCHEMA = """
CREATE TABLE IF NOT EXISTS readings (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    batch_seq INTEGER NULL,
    payload TEXT NOT NULL
);
DROP INDEX IF EXISTS readings_by_batch;
CREATE TABLE IF NOT EXISTS batches (
    seq INTEGER PRIMARY KEY,
    payload BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
"""
FIRST_SEQ = 1


class Batch(NamedTuple):
    """A formed telemetry message: its seq, its exact bytes and how many readings it carries."""

    seq: int
    payload: bytes
    size: int


class JournalMismatch(RuntimeError):
    """The journal file belongs to another agent."""


@dataclass
class JournalCounters:
    """What went through the journal since it was opened."""

    appended: int = 0
    batches_formed: int = 0
    batches_acked: int = 0
    readings_acked: int = 0
    dropped: int = 0


class Journal:
    """Readings waiting for a PUBACK, on disk, in the order they were read."""

    def __init__(
        self,
        path: str | Path,
        agent_id: str,
        *,
        fsync: Literal["normal", "full"] = "normal",
        quota_bytes: int | None = None,
        policy: QuotaPolicy = "drop_oldest",
        slow_devices: frozenset[str] = frozenset(),
    ) -> None:
        self.path = Path(path)
        self.agent_id = agent_id
        self.quota_bytes = quota_bytes
        self.policy: QuotaPolicy = policy
        self.slow_devices = slow_devices
        self.counters = JournalCounters()
        self.slow_stopped = False
        self._batch_cost: dict[int, tuple[int, int, int, int]] = {}  # seq -> readings, bytes, first/last id
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # isolation_level=None: transactions are explicit (BEGIN IMMEDIATE ... COMMIT).
        self._db = sqlite3.connect(self.path, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(f"PRAGMA synchronous={'FULL' if fsync == 'full' else 'NORMAL'}")
        self._db.execute(f"PRAGMA wal_autocheckpoint={CHECKPOINT_PAGES}")
        self._db.executescript(_SCHEMA)
        with self._transaction():
            owner = self._meta("agent")
            if owner is None:
                self._set_meta("agent", agent_id)
            elif owner != agent_id:
                raise JournalMismatch(
                    f"journal {self.path} belongs to agent {owner!r}, not {agent_id!r}: "
                    "set journal.path to a file of this agent or move this one aside"
                )
            if self._meta("next_seq") is None:
                self._set_meta("next_seq", str(FIRST_SEQ))
        count, size = self._db.execute(
            "SELECT count(*), coalesce(sum(length(payload)), 0) FROM readings"
        ).fetchone()
        self._backlog = int(count)
        self._bytes = int(size) + ROW_OVERHEAD_BYTES * self._backlog
        (top,) = self._db.execute("SELECT coalesce(max(id), 0) FROM readings").fetchone()
        self._live_from = int(top)

    def close(self) -> None:
        self._db.close()

    def append(self, readings: Sequence[wire.Reading]) -> int:
        """Write readings to disk in one transaction; returns how many the quota let in."""
        rows = [
            (wire.encode(reading).decode(),)
            for reading in readings
            if not (self.slow_stopped and reading.device in self.slow_devices)
        ]
        refused = len(readings) - len(rows)
        size = sum(len(row[0]) + ROW_OVERHEAD_BYTES for row in rows)
        with self._transaction():
            if self.quota_bytes is not None and self._bytes + size > self.quota_bytes:
                if self.policy == "drop_newest":
                    while rows and self._bytes + size > self.quota_bytes:
                        size -= len(rows.pop()[0]) + ROW_OVERHEAD_BYTES
                        refused += 1
                else:
                    self.slow_stopped = self.policy == "stop_slow"
                    self._drop_oldest(self._bytes + size - self.quota_bytes)
            self._db.executemany("INSERT INTO readings (payload) VALUES (?)", rows)
        self._bytes += size
        self._backlog += len(rows)
        self.counters.appended += len(rows)
        self.counters.dropped += refused
        return len(rows)

    def size_bytes(self) -> int:
        """What the readings on disk count against the quota."""
        return self._bytes

    def _drop_oldest(self, excess: int) -> None:
        """Delete the oldest readings not yet in a batch until ``excess`` bytes (plus slack) are free."""
        assert self.quota_bytes is not None
        goal = excess + int(self.quota_bytes * DROP_SLACK)
        freed = dropped = 0
        last_id = None
        rows = self._db.execute(
            "SELECT id, length(payload) FROM readings WHERE batch_seq IS NULL ORDER BY id"
        )
        for row_id, length in rows:
            if freed >= goal:
                break
            freed += int(length) + ROW_OVERHEAD_BYTES
            dropped += 1
            last_id = int(row_id)
        rows.close()
        if last_id is None:
            return
        self._db.execute("DELETE FROM readings WHERE batch_seq IS NULL AND id <= ?", (last_id,))
        self._bytes -= freed
        self._backlog -= dropped
        self.counters.dropped += dropped

    def next_batch(self, max_readings: int) -> tuple[int, bytes] | None:
        """The batch to publish next: the oldest unacknowledged one, else a new one; None if empty."""
        row = self._db.execute("SELECT seq, payload FROM batches ORDER BY seq LIMIT 1").fetchone()
        if row is not None:
            return int(row[0]), bytes(row[1])
        with self._transaction():
            rows = self._db.execute(
                "SELECT id, payload FROM readings WHERE batch_seq IS NULL ORDER BY id LIMIT ?",
                (min(max_readings, wire.MAX_READINGS_PER_BATCH),),
            ).fetchall()
            if not rows:
                return None
            seq, payload, _ = self._seal(rows)
            return seq, payload

    def _seal(self, rows: list[tuple[int, str]]) -> Batch:
        """Turn consecutive unbatched rows into batch ``next_seq`` (inside a transaction)."""
        seq = int(self._meta("next_seq") or FIRST_SEQ)
        # Built from the stored reading JSON rather than re-validated models: same bytes
        # as wire.encode(TelemetryBatch(...)), without parsing every reading again.
        payload = (
            f'{{"schema":{wire.SCHEMA_VERSION},"agent":{json.dumps(self.agent_id)},"seq":{seq},'
            f'"readings":[{",".join(r[1] for r in rows)}]}}'
        ).encode()
        self._db.execute("INSERT INTO batches (seq, payload) VALUES (?, ?)", (seq, payload))
        self._db.execute(
            "UPDATE readings SET batch_seq = ? WHERE batch_seq IS NULL AND id BETWEEN ? AND ?",
            (seq, rows[0][0], rows[-1][0]),
        )
        self._set_meta("next_seq", str(seq + 1))
        self.counters.batches_formed += 1
        self._batch_cost[seq] = (len(rows), sum(len(r[1]) for r in rows), rows[0][0], rows[-1][0])
        return Batch(seq, payload, len(rows))

    def mark_live(self) -> None:
        """Readings journaled from now on are live; those already on disk are backlog."""
        (top,) = self._db.execute("SELECT coalesce(max(id), 0) FROM readings").fetchone()
        self._live_from = int(top)

    def formed_batches(self) -> list[Batch]:
        """Batches formed but not yet acknowledged, in seq order (to republish after a reconnect)."""
        rows = self._db.execute(
            "SELECT b.seq, b.payload, (SELECT count(*) FROM readings r WHERE r.batch_seq = b.seq) "
            "FROM batches b ORDER BY b.seq"
        ).fetchall()
        return [Batch(int(seq), bytes(payload), int(size)) for seq, payload, size in rows]

    def form_batch(self, max_readings: int, *, live: bool) -> Batch | None:
        """A new batch of live readings (above the ``mark_live`` line) or of backlog; None if none."""
        where = "id > ?" if live else "id <= ?"
        with self._transaction():
            rows = self._db.execute(
                f"SELECT id, payload FROM readings WHERE batch_seq IS NULL AND {where} ORDER BY id LIMIT ?",
                (self._live_from, min(max_readings, wire.MAX_READINGS_PER_BATCH)),
            ).fetchall()
            if not rows:
                return None
            return self._seal(rows)

    def has_live(self) -> bool:
        """True when live readings wait for a batch."""
        row = self._db.execute(
            "SELECT 1 FROM readings WHERE batch_seq IS NULL AND id > ? LIMIT 1", (self._live_from,)
        ).fetchone()
        return row is not None

    def ack(self, seq: int) -> int:
        """The broker has the batch ``seq``: forget it and its readings; returns how many were forgotten."""
        with self._transaction():
            cost = self._batch_cost.pop(seq, None)
            if cost is None:  # formed before a restart
                gone, size, first, last = self._db.execute(
                    "SELECT count(*), coalesce(sum(length(payload)), 0), min(id), max(id) "
                    "FROM readings WHERE batch_seq = ?",
                    (seq,),
                ).fetchone()
            else:
                gone, size, first, last = cost
            # A batch is a range of ids: deleting by rowid range needs no index on batch_seq.
            self._db.execute(
                "DELETE FROM readings WHERE id BETWEEN ? AND ? AND batch_seq = ?",
                (first or 0, last or 0, seq),
            )
            batches = self._db.execute("DELETE FROM batches WHERE seq = ?", (seq,)).rowcount
        gone = int(gone)
        self._bytes -= int(size) + ROW_OVERHEAD_BYTES * gone
        if self.slow_stopped and self.quota_bytes and self._bytes < self.quota_bytes * RESUME_SLOW_SHARE:
            self.slow_stopped = False
        self._backlog -= gone
        self.counters.readings_acked += gone
        self.counters.batches_acked += batches
        return gone

    def backlog(self) -> int:
        """Readings on disk not yet acknowledged by the broker."""
        return self._backlog

    def health(self) -> wire.JournalHealth:
        return wire.JournalHealth(backlog=self._backlog, dropped=self.counters.dropped)

    def _transaction(self) -> _Transaction:
        return _Transaction(self._db)

    def _meta(self, key: str) -> str | None:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def _set_meta(self, key: str, value: str) -> None:
        self._db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))


class _Transaction:
    """BEGIN IMMEDIATE ... COMMIT, or ROLLBACK on error."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def __enter__(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: type[BaseException] | None, *_: object) -> None:
        self._db.execute("ROLLBACK" if exc_type is not None else "COMMIT")
