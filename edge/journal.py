"""The on-disk journal: every reading is written here before anything else happens to it.

SQLite in WAL mode. A reading leaves the journal only when the broker acknowledged the
batch that carries it (``ack``). A batch, once formed, keeps its sequence number and its
exact bytes until acknowledged, so a republish after a reconnect or a restart is the same
message and the collector can tell a duplicate from a gap.

``fsync="normal"`` (synchronous=NORMAL) may lose the last transactions on power loss but
never corrupts the file; ``fsync="full"`` syncs every commit.

Calls are synchronous on the event loop: with synchronous=NORMAL a WAL commit does not wait
for the disk (only checkpoints do); with ``full`` every commit waits for an fsync.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from citygw import wire

_SCHEMA = """
CREATE TABLE IF NOT EXISTS readings (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    batch_seq INTEGER NULL,
    payload TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS readings_by_batch ON readings (batch_seq);
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
        self, path: str | Path, agent_id: str, *, fsync: Literal["normal", "full"] = "normal"
    ) -> None:
        self.path = Path(path)
        self.agent_id = agent_id
        self.counters = JournalCounters()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # isolation_level=None: transactions are explicit (BEGIN IMMEDIATE ... COMMIT).
        self._db = sqlite3.connect(self.path, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(f"PRAGMA synchronous={'FULL' if fsync == 'full' else 'NORMAL'}")
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
        (count,) = self._db.execute("SELECT count(*) FROM readings").fetchone()
        self._backlog = int(count)

    def close(self) -> None:
        self._db.close()

    def append(self, readings: Sequence[wire.Reading]) -> None:
        """Write readings to disk in one transaction."""
        if not readings:
            return
        rows = [(wire.encode(reading).decode(),) for reading in readings]
        with self._transaction():
            self._db.executemany("INSERT INTO readings (payload) VALUES (?)", rows)
        self._backlog += len(rows)
        self.counters.appended += len(rows)

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
            seq = int(self._meta("next_seq") or FIRST_SEQ)
            # Built from the stored reading JSON rather than re-validated models: same bytes
            # as wire.encode(TelemetryBatch(...)), without parsing every reading again.
            payload = (
                f'{{"schema":{wire.SCHEMA_VERSION},"agent":{json.dumps(self.agent_id)},"seq":{seq},'
                f'"readings":[{",".join(r[1] for r in rows)}]}}'
            ).encode()
            self._db.execute("INSERT INTO batches (seq, payload) VALUES (?, ?)", (seq, payload))
            self._db.execute(
                "UPDATE readings SET batch_seq = ? WHERE batch_seq IS NULL AND id <= ?", (seq, rows[-1][0])
            )
            self._set_meta("next_seq", str(seq + 1))
        self.counters.batches_formed += 1
        return seq, payload

    def ack(self, seq: int) -> int:
        """The broker has the batch ``seq``: forget it and its readings; returns how many were forgotten."""
        with self._transaction():
            gone = self._db.execute("DELETE FROM readings WHERE batch_seq = ?", (seq,)).rowcount
            batches = self._db.execute("DELETE FROM batches WHERE seq = ?", (seq,)).rowcount
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
