"""The on-disk journal: every reading is written here before anything else happens to it.

SQLite in WAL mode. A reading leaves the journal only when the broker acknowledged the
batch that carries it (``ack``), or with ``hold`` when the collector confirmed it (``confirm``).
A batch, once formed, keeps its sequence number and its exact bytes until then (across a power
cut: with ``fsync="full"``), so a republish after a reconnect or a restart is the same message
and the collector can tell a duplicate from a gap.

Each reading is stored once, as its wire JSON, at append, under an id that only grows. A
batch is a span of consecutive ids (table ``spans``: seq, first id, last id) and its payload
is those stored fragments joined under the batch header: forming a batch writes one small
row, no copy of the readings, and nothing is parsed or encoded again. Readings live in
segment tables of ``SEGMENT_READINGS`` consecutive ids; an ack writes nothing, and a segment
none of whose readings waits for a PUBACK any more is dropped whole (SQLite frees its pages
without rewriting them, where deleting rows writes every page they were on). Until then its
acknowledged spans stay on disk (``close`` deletes them): after a crash they are republished
with their seqs and bytes, as duplicates the store absorbs.

``fsync="normal"`` (synchronous=NORMAL) never corrupts the file, but on power loss it may lose
the transactions not yet synced: the readings journaled since the last checkpoint
(``wal_autocheckpoint`` pages, set here to about 1 MB of WAL: ~570 readings when each append
carries 1-5), and of those only what the kernel had not written back yet (~30 s). A lost ack
only means a duplicate later; a lost batch formation means its readings are formed anew after the
restart, possibly under a seq already published (duplicates the store absorbs).
``fsync="full"`` syncs every commit: nothing acknowledged to the poller is lost and a formed
batch keeps its seq and bytes across a power cut, at the price of one fsync per append (an
SD card does a few hundred a second). Measured by tests/edge/test_power_cut.py and
bench/journal_power_cut.py (docs/interfaces.md).

A quota (``quota_bytes``, counted as the unacknowledged readings' JSON plus a fixed per-row
overhead) bounds the file, give or take the acknowledged readings of segments not yet
dropped; when it is reached the policy decides what gives way, and every reading given up
is counted in ``counters.dropped`` (published on ``health``):

- ``drop_oldest``: the oldest readings not yet in a batch make room for the new ones;
- ``drop_newest``: new readings are refused until the backlog drains;
- ``stop_slow``: from the moment the quota is reached until the backlog is back under 90 % of
  it, readings of slow devices (``slow_devices``: polled rarely, e.g. meter totals) are
  refused (``refuses(device)``: ModbusPoller skips their polls meanwhile); the others make
  room as with ``drop_oldest``.

With ``hold`` (the agent's ``publish.end_to_end_ack``) a batch the broker acknowledged is kept,
its readings on disk, until the collector confirms it stored it (``confirm``, from the wire's
``ack`` channel): a broker that dies before it saved what it acknowledged loses nothing, the
batch is sent again (``held_batch``) with its seq and bytes. A held batch takes no memory beyond
its id range. Held batches count against the quota and are the first to give way to it, oldest
first (``counters.released``): the broker did acknowledge them. Until a collector has ever
confirmed a batch of this journal (``collector_acks_seen``, kept on disk), the publisher releases
a held batch after a timeout: an older collector that never confirms leaves things as they were.

After an outage, live data goes first: ``mark_live()`` (called on each connect) draws a line
in the journal; ``form_batch(live=True)`` takes readings above it, ``form_batch(live=False)``
the backlog below it, oldest first, so the publisher can interleave the two.

Calls are synchronous on the event loop: with synchronous=NORMAL a WAL commit does not wait
for the disk (only checkpoints do); with ``full`` every commit waits for an fsync.
"""

from __future__ import annotations

import bisect
import itertools
import json
import logging
import sqlite3
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, NamedTuple

from citygw.contract import wire

log = logging.getLogger(__name__)

QuotaPolicy = Literal["drop_oldest", "drop_newest", "stop_slow"]
# Per-row cost on disk beyond the JSON (rowid, index entry, page slack), for the quota.
ROW_OVERHEAD_BYTES = 48
# When dropping the oldest, free this share of the quota at once rather than a row per append.
DROP_SLACK = 0.01
# Rows read at a time while looking for the oldest readings to drop: bounds the memory it takes.
DROP_CHUNK = 1024
CHECKPOINT_PAGES = 256
# stop_slow: slow devices are taken again once the backlog fell below this share of the quota.
RESUME_SLOW_SHARE = 0.9
# Readings per segment table (about 2 MB of JSON): the unit in which acknowledged readings leave the disk.
SEGMENT_READINGS = 8192

_SCHEMA = """
CREATE TABLE IF NOT EXISTS spans (
    seq INTEGER PRIMARY KEY,
    first_id INTEGER NOT NULL,
    last_id INTEGER NOT NULL,
    legacy_payload BLOB NULL
);
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
"""
FIRST_SEQ = 1
# A stored reading's size in bytes: new rows are BLOBs of UTF-8 JSON, journals of earlier versions hold TEXT.
_BYTES = "length(CAST(payload AS BLOB))"
_NO_ID = 1 << 62  # above any reading id: "no upper bound"


class Batch(NamedTuple):
    """A formed telemetry message: its seq, its exact bytes and how many readings it carries."""

    seq: int
    payload: bytes
    size: int


@dataclass
class _Span:
    """A formed batch in memory: its id range, what it counts against the quota, its bytes till acked."""

    first: int
    last: int
    size: int
    nbytes: int
    payload: bytes | None = None
    acked: bool = False  # done with: confirmed (hold) or acknowledged by the broker (no hold)
    held: bool = False  # acknowledged by the broker, waiting for the collector's confirmation
    sent_at: float = 0.0  # time.monotonic() of its last PUBACK or resend, while held


class _Run(NamedTuple):
    """Readings read for a batch: id range, count, JSON bytes, and their JSON joined by commas."""

    first: int
    last: int
    size: int
    nbytes: int
    body: bytes


def _first(span: _Span) -> int:
    return span.first


def _second(pair: tuple[int, int]) -> int:
    return pair[1]


def _merged(spans: Iterable[_Span]) -> list[tuple[int, int]]:
    """The spans' id ranges, adjacent or overlapping ones merged, in id order."""
    ranges: list[tuple[int, int]] = []
    for span in sorted(spans, key=_first):
        if ranges and span.first <= ranges[-1][1] + 1:
            ranges[-1] = (ranges[-1][0], max(ranges[-1][1], span.last))
        else:
            ranges.append((span.first, span.last))
    return ranges


class JournalMismatch(RuntimeError):
    """The journal file belongs to another agent."""


@dataclass
class JournalCounters:
    """What went through the journal since it was opened."""

    appended: int = 0
    batches_formed: int = 0
    batches_acked: int = 0
    readings_acked: int = 0
    batches_confirmed: int = 0
    released: int = 0  # held readings let go unconfirmed (quota, or no collector confirms)
    dropped: int = 0


def _segment(reading_id: int) -> int:
    return reading_id // SEGMENT_READINGS


def _table(segment: int) -> str:
    return f"readings_{segment}"


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
        hold: bool = False,
    ) -> None:
        self.path = Path(path)
        self.hold = hold
        self.confirmed_top = 0  # the highest seq a collector confirmed since open
        self._held = 0  # readings in held batches
        self.agent_id = agent_id
        self.quota_bytes = quota_bytes
        self.policy: QuotaPolicy = policy
        self.slow_devices = slow_devices
        self.counters = JournalCounters()
        self.slow_stopped = False
        self._full = False  # the last write failed for a full disk (SQLITE_FULL)
        self._refused_while_full = 0  # readings refused since the disk became full
        self._unreclaimed: set[int] = set()  # segments whose reclaim a full disk refused: retried
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # isolation_level=None: transactions are explicit (BEGIN IMMEDIATE ... COMMIT).
        self._db = sqlite3.connect(self.path, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self.set_fsync(fsync)
        self._db.execute(f"PRAGMA wal_autocheckpoint={CHECKPOINT_PAGES}")
        # Debian builds SQLite with secure_delete on: it would write zeros over every freed page.
        self._db.execute("PRAGMA secure_delete=OFF")
        self._db.executescript(_SCHEMA)
        self._segments: set[int] = set()
        with self._transaction():
            owner = self._meta("agent")
            if owner is None:
                self._set_meta("agent", agent_id)
            elif owner != agent_id:
                raise JournalMismatch(
                    f"journal {self.path} belongs to agent {owner!r}, not {agent_id!r}: "
                    "set journal.path to a file of this agent or move this one aside"
                )
            self._segments = self._stored_segments()
            if self._db.execute("SELECT 1 FROM sqlite_master WHERE name = 'readings'").fetchone():
                self._migrate_single_table()
            # meta's next_seq is written when spans are deleted; until then the spans hold the top seq.
            (top_seq,) = self._db.execute("SELECT coalesce(max(seq), 0) FROM spans").fetchone()
            self._next_seq = max(int(self._meta("next_seq") or FIRST_SEQ), int(top_seq) + 1)
            self.collector_acks_seen = self._meta("collector_acks") == "1"
        self._spans: dict[int, _Span] = {}
        # The id ranges formed batches cover, adjacent ones merged, in id order: for _gaps, which
        # then skips a run of thousands of batches (held during an outage) in one step.
        self._covered: list[tuple[int, int]] = []
        self._bytes = self._backlog = 0
        top = 0
        ranges: list[tuple[int, int, int]] = []
        for segment in sorted(self._segments):
            count, size, low, high = self._db.execute(
                f"SELECT count(*), coalesce(sum({_BYTES}), 0), min(id), max(id) FROM {_table(segment)}"
            ).fetchone()
            self._backlog += int(count)
            self._bytes += int(size) + ROW_OVERHEAD_BYTES * int(count)
            top = max(top, int(high or 0), segment * SEGMENT_READINGS - 1)
            if count:
                ranges.append((int(low), int(high), int(count)))
        self._next_id = top + 1
        # Every id from _whole_from up to _next_id has its row: no query needed to know it is there.
        self._whole_from = self._next_id
        for low, high, count in reversed(ranges):
            if high != self._whole_from - 1 or count != high - low + 1:
                break
            self._whole_from = low
        for seq, first, last, legacy in self._db.execute(
            "SELECT seq, first_id, last_id, legacy_payload FROM spans ORDER BY seq"
        ).fetchall():
            # Formed before the restart: rebuilt from its rows (same bytes), republished on the next connect.
            run = self._run(first - 1, last + 1)
            payload = bytes(legacy) if legacy is not None else self._payload(seq, run.body if run else b"")
            self._spans[seq] = _Span(first, last, run.size if run else 0, run.nbytes if run else 0, payload)
        self._covered = _merged(self._spans.values())
        self._live_from = top

    def _migrate_single_table(self) -> None:
        """Journals from before segments (one ``readings`` table, ``batches`` with their bytes): move them."""
        for (segment,) in self._db.execute(
            f"SELECT DISTINCT id / {SEGMENT_READINGS} FROM readings"
        ).fetchall():
            self._create_segment(int(segment))
            self._db.execute(
                f"INSERT INTO {_table(segment)} (id, payload) SELECT id, payload FROM readings "
                "WHERE id / ? = ?",
                (SEGMENT_READINGS, segment),
            )
        self._db.execute(
            "INSERT INTO spans (seq, first_id, last_id, legacy_payload) "
            "SELECT b.seq, min(r.id), max(r.id), b.payload FROM batches b "
            "JOIN readings r ON r.batch_seq = b.seq GROUP BY b.seq"
        )
        self._db.execute("DROP TABLE readings")
        self._db.execute("DROP TABLE IF EXISTS batches")

    def close(self) -> None:
        """Forget the acknowledged batches still on disk (a restart would republish them), then close.

        On a full disk they stay: a restart republishes them (duplicates).
        """
        try:
            self._forget(set(), [seq for seq, span in self._spans.items() if span.acked])
        except sqlite3.OperationalError as exc:
            if not self._disk_full(exc):
                raise
        finally:
            self._db.close()

    def append(self, readings: Sequence[wire.Reading]) -> int:
        """Write readings to disk in one transaction; returns how many the quota let in."""
        fragments = [wire.encode(r) for r in readings if not self.refuses(r.device)]
        refused = len(readings) - len(fragments)
        size = sum(len(f) + ROW_OVERHEAD_BYTES for f in fragments)
        if self.quota_bytes is not None and self._held and self._bytes + size > self.quota_bytes:
            self._release_for(self._bytes + size - self.quota_bytes)
        freed = dropped = 0
        try:
            with self._transaction():
                if self.quota_bytes is not None and self._bytes + size > self.quota_bytes:
                    if self.policy == "drop_newest":
                        while fragments and self._bytes + size > self.quota_bytes:
                            size -= len(fragments.pop()) + ROW_OVERHEAD_BYTES
                            refused += 1
                    else:
                        self.slow_stopped = self.policy == "stop_slow"
                        freed, dropped = self._drop_oldest(self._bytes + size - self.quota_bytes)
                first = self._next_id
                while fragments[first - self._next_id :]:
                    segment = _segment(first)
                    end = min((segment + 1) * SEGMENT_READINGS, self._next_id + len(fragments))
                    self._create_segment(segment)
                    self._db.executemany(
                        f"INSERT INTO {_table(segment)} (id, payload) VALUES (?, ?)",
                        zip(
                            range(first, end),
                            fragments[first - self._next_id : end - self._next_id],
                            strict=True,
                        ),
                    )
                    first = end
        except sqlite3.OperationalError as exc:
            if not self._disk_full(exc):
                raise
            self.counters.dropped += len(readings)  # refused, as by drop_newest
            self._refused_while_full += len(readings)
            return 0
        self._room_again()
        self._next_id += len(fragments)
        self._bytes += size - freed
        self._backlog += len(fragments) - dropped
        self.counters.appended += len(fragments)
        self.counters.dropped += refused + dropped
        return len(fragments)

    def _disk_full(self, exc: sqlite3.OperationalError) -> bool:
        """True when ``exc`` is SQLITE_FULL: SQLite rolled the write back, which is retried later.

        The first of an episode is logged; ``_room_again`` ends it.
        """
        if exc.sqlite_errorcode != sqlite3.SQLITE_FULL:
            return False
        self._segments = self._stored_segments()  # a table created or dropped by the write is back as it was
        if not self._full:
            self._full = True
            log.warning(
                "journal %s: the disk is full (%s): new readings are refused, counted in health "
                "journal.dropped, no batch is formed and acknowledged ones stay on disk (sent again "
                "after a restart) until there is room again",
                self.path,
                exc,
            )
        return True

    def _room_again(self) -> None:
        """A write that takes space went through (deletes may succeed on a full disk): the episode is over."""
        if self._full:
            log.warning(
                "journal %s: the disk has room again; %d readings were refused while it was full",
                self.path,
                self._refused_while_full,
            )
            self._full, self._refused_while_full = False, 0

    def _stored_segments(self) -> set[int]:
        return {
            int(name.removeprefix("readings_"))
            for (name,) in self._db.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name GLOB 'readings_[0-9]*'"
            )
        }

    def _create_segment(self, segment: int) -> None:
        if segment not in self._segments:
            self._db.execute(
                f"CREATE TABLE {_table(segment)} (id INTEGER PRIMARY KEY, payload TEXT NOT NULL)"
            )
            self._segments.add(segment)

    def refuses(self, device_id: str) -> bool:
        """True while stop_slow keeps ``device_id``'s readings out: its polls can be skipped."""
        return self.slow_stopped and device_id in self.slow_devices

    def size_bytes(self) -> int:
        """What the unacknowledged readings on disk count against the quota."""
        return self._bytes

    def _select(self, columns: str, after: int, before: int, limit: int) -> list[tuple[Any, ...]]:
        """``columns`` of at most ``limit`` readings with after < id < before, in id order."""
        found: list[tuple[Any, ...]] = []
        if after + 1 >= min(before, self._next_id):  # nothing journaled there: no query
            return found
        for segment in sorted(self._segments):
            if (segment + 1) * SEGMENT_READINGS <= after + 1 or segment * SEGMENT_READINGS >= before:
                continue
            found += self._db.execute(
                f"SELECT {columns} FROM {_table(segment)} WHERE id > ? AND id < ? ORDER BY id LIMIT ?",
                (after, before, limit - len(found)),
            ).fetchall()
            if len(found) >= limit:
                break
        return found

    def _gaps(self, after: int, upto: int) -> Iterator[tuple[int, int]]:
        """Id windows (exclusive bounds) in (after, upto] that no formed batch covers, lowest first."""
        start = bisect.bisect_right(self._covered, after, key=_second)  # the first ending above ``after``
        for first, last in itertools.islice(self._covered, start, None):
            if first > upto:
                break
            if first > after + 1:
                yield after, first
            after = max(after, last)
        if after < upto:
            yield after, upto + 1

    def _cover(self, first: int, last: int) -> None:
        """Add the id range of a new batch to ``_covered``, merged with the ranges it touches."""
        covered = self._covered
        at = bisect.bisect_left(covered, first - 1, key=_second)  # the first ending at or above first - 1
        end = at
        while end < len(covered) and covered[end][0] <= last + 1:
            end += 1
        touched = covered[at:end]
        low = min([first, *(pair[0] for pair in touched)])
        high = max([last, *(pair[1] for pair in touched)])
        covered[at:end] = [(low, high)]

    def _drop_oldest(self, excess: int) -> tuple[int, int]:
        """Delete the oldest readings not yet in a batch until ``excess`` bytes (plus slack) are free.

        Walks the ids ``DROP_CHUNK`` rows at a time, so memory stays bounded whatever the backlog.
        Returns the bytes freed and the readings dropped, for the caller to count once committed.
        """
        assert self.quota_bytes is not None
        goal = excess + int(self.quota_bytes * DROP_SLACK)
        freed = dropped = 0
        for after, before in list(self._gaps(0, _NO_ID)):
            last_id = after
            while freed < goal:
                chunk = self._select(f"id, {_BYTES}", last_id, before, DROP_CHUNK)
                for row_id, length in chunk:
                    freed += int(length) + ROW_OVERHEAD_BYTES
                    dropped += 1
                    last_id = int(row_id)
                    if freed >= goal:
                        break
                if len(chunk) < DROP_CHUNK:
                    break
            if last_id > after:
                self._delete_rows(after, last_id)
            if freed >= goal:
                break
        return freed, dropped

    def next_batch(self, max_readings: int) -> tuple[int, bytes] | None:
        """The batch to publish next: the oldest unacknowledged one, else a new one; None if empty."""
        formed = self.formed_batches()
        if formed:
            return formed[0].seq, formed[0].payload
        batch = self._form(max_readings, 0, _NO_ID)
        return None if batch is None else (batch.seq, batch.payload)

    def _form(self, max_readings: int, after: int, upto: int) -> Batch | None:
        """Seal the oldest unbatched readings in (after, upto], consecutive ids, into a batch."""
        limit = min(max_readings, wire.MAX_READINGS_PER_BATCH)
        for low, high in self._gaps(after, upto):
            run = self._run(low, high, limit)
            if run is None:
                continue
            try:
                batch = self._seal(run)
            except sqlite3.OperationalError as exc:
                if not self._disk_full(exc):
                    raise
                return None  # not sent now: formed on a later call, once the disk has room
            self._room_again()
            return batch
        return None

    def _run(self, after: int, before: int, limit: int = 0) -> _Run | None:
        """The readings with after < id < before (at most ``limit`` if > 0) joined in id order, or None.

        SQLite joins them (``group_concat`` over the id-ordered rows): one bytes object per
        segment instead of a Python string per reading, the bulk of the cost of forming a batch.
        """
        if after + 1 >= min(before, self._next_id):
            return None
        first = last = count = nbytes = 0
        parts: list[bytes] = []
        for segment in sorted(self._segments):
            if (segment + 1) * SEGMENT_READINGS <= after + 1 or segment * SEGMENT_READINGS >= before:
                continue
            table = _table(segment)
            while limit <= 0 or count < limit:
                # Skip ids without a row (readings dropped by the quota), then take a range of
                # ids: they only grow, so the next ``limit - count`` readings lie below ``below``.
                end = min(before, (segment + 1) * SEGMENT_READINGS, self._next_id)
                start = after + 1
                if start < self._whole_from:
                    (start,) = self._db.execute(
                        f"SELECT min(id) FROM {table} WHERE id > ? AND id < ?", (after, end)
                    ).fetchone()
                if start is None or start >= end:
                    break
                below = end if limit <= 0 else min(end, start + limit - count)
                if start >= self._whole_from:
                    # Every id there has its row: no need to have SQLite count them (a third of the query).
                    low, high, n = start, below - 1, below - start
                    (body,) = self._db.execute(
                        f"SELECT CAST(group_concat(payload, ',') AS BLOB) FROM {table} "
                        "WHERE id >= ? AND id < ?",
                        (start, below),
                    ).fetchone()
                else:
                    low, high, n, body = self._db.execute(
                        "SELECT min(id), max(id), count(*), CAST(group_concat(payload, ',') AS BLOB) "
                        f"FROM {table} WHERE id >= ? AND id < ?",
                        (start, below),
                    ).fetchone()
                first = first or int(low)
                # Their bytes: the joined ones less the commas.
                last, count, nbytes = int(high), count + int(n), nbytes + len(body) - (int(n) - 1)
                parts.append(body)
                after = below - 1
            if 0 < limit <= count:
                break
        return _Run(first, last, count, nbytes, b",".join(parts)) if count else None

    def _seal(self, run: _Run) -> Batch:
        """Make ``run`` (consecutive unbatched ids) batch ``next_seq``, durably: one row of ``spans``."""
        seq = self._next_seq
        self._db.execute(
            "INSERT INTO spans (seq, first_id, last_id) VALUES (?, ?, ?)", (seq, run.first, run.last)
        )
        self._next_seq = seq + 1
        payload = self._payload(seq, run.body)
        self._spans[seq] = _Span(run.first, run.last, run.size, run.nbytes, payload)
        self._cover(run.first, run.last)
        self.counters.batches_formed += 1
        return Batch(seq, payload, run.size)

    def _payload(self, seq: int, body: bytes) -> bytes:
        # The stored reading JSON joined under the header: the same bytes as
        # wire.encode(TelemetryBatch(...)), without parsing or encoding a reading again.
        header = (
            f'{{"schema":{wire.SCHEMA_VERSION},"agent":{json.dumps(self.agent_id)},"seq":{seq},"readings":['
        )
        return b"".join((header.encode(), body, b"]}"))

    def mark_live(self) -> None:
        """Readings journaled from now on are live; those already on disk are backlog."""
        self._live_from = self._next_id - 1

    def formed_batches(self) -> list[Batch]:
        """Batches formed but not yet acknowledged, in seq order (to republish after a reconnect)."""
        batches = []
        for seq in sorted(self._spans):
            span = self._spans[seq]
            if span.payload is not None:  # None once acknowledged
                batches.append(Batch(seq, span.payload, span.size))
        return batches

    def form_batch(self, max_readings: int, *, live: bool) -> Batch | None:
        """A new batch of live readings (above the ``mark_live`` line) or of backlog; None if none."""
        if live:
            return self._form(max_readings, self._live_from, _NO_ID)
        return self._form(max_readings, 0, self._live_from)

    def has_live(self) -> bool:
        """True when live readings wait for a batch."""
        return any(self._select("1", low, high, 1) for low, high in self._gaps(self._live_from, _NO_ID))

    def ack(self, seq: int) -> int:
        """The broker has the batch ``seq``: forget it (hold: keep it until confirmed); returns its
        readings, 0 if it was acknowledged before."""
        span = self._spans.get(seq)
        if span is None or span.acked:
            return 0
        if span.held:  # a resend acknowledged again
            span.sent_at = time.monotonic()
            return 0
        self._backlog -= span.size
        self.counters.readings_acked += span.size
        self.counters.batches_acked += 1
        if self.hold:
            span.held, span.payload, span.sent_at = True, None, time.monotonic()
            self._held += span.size
            return span.size
        self._done_with([span])
        return span.size

    def confirm(self, ranges: Iterable[tuple[int, int]]) -> int:
        """A collector stored the batches whose seqs lie in ``ranges`` ([first, last]): forget them.

        Also a batch the broker has not acknowledged yet (sent again, stored before its PUBACK).
        Returns the readings forgotten.
        """
        if not self.collector_acks_seen:
            with self._transaction():
                self._set_meta("collector_acks", "1")
            self.collector_acks_seen = True
        done = []
        for first, last in ranges:
            self.confirmed_top = max(self.confirmed_top, last)
            for seq in self._seqs_within(first, last):
                span = self._spans[seq]
                if span.acked:
                    continue
                if span.held:
                    self._held -= span.size
                else:
                    self._backlog -= span.size
                done.append(span)
        self.counters.batches_confirmed += len(done)
        self._done_with(done)
        return sum(span.size for span in done)

    def _seqs_within(self, first: int, last: int) -> list[int]:
        if last - first < len(self._spans):
            return [seq for seq in range(first, last + 1) if seq in self._spans]
        return [seq for seq in self._spans if first <= seq <= last]

    def _done_with(self, spans: list[_Span]) -> None:
        """Forget ``spans`` (acknowledged or confirmed): their readings leave the quota and the disk."""
        segments: set[int] = set()
        for span in spans:
            span.acked, span.held, span.payload = True, False, None
            self._bytes -= span.nbytes + ROW_OVERHEAD_BYTES * span.size
            segments.update(range(_segment(span.first), _segment(span.last) + 1))
        if self.slow_stopped and self.quota_bytes and self._bytes < self.quota_bytes * RESUME_SLOW_SHARE:
            self.slow_stopped = False
        if segments:
            self._reclaim(segments)

    def held(self) -> int:
        """Readings the broker acknowledged that no collector confirmed yet (kept with ``hold``)."""
        return self._held

    def held_seqs(self, *, sent_before: float | None = None, below: int | None = None) -> list[int]:
        """Seqs of the held batches, lowest first: those last sent before ``sent_before`` (monotonic)
        and below ``below``, if given."""
        return [
            seq
            for seq, span in sorted(self._spans.items())
            if span.held
            and (sent_before is None or span.sent_at < sent_before)
            and (below is None or seq < below)
        ]

    def held_batch(self, seq: int) -> Batch | None:
        """Held batch ``seq`` read back from disk (same seq, same bytes) to send again; None if it is
        no longer held. Counts as sent now."""
        span = self._spans.get(seq)
        if span is None or not span.held:
            return None
        run = self._run(span.first - 1, span.last + 1)
        span.sent_at = time.monotonic()
        return Batch(seq, self._payload(seq, run.body if run else b""), span.size)

    def release(self, seqs: Iterable[int]) -> int:
        """Let held batches go unconfirmed, as if the broker's PUBACK were final; returns their readings."""
        spans = [span for seq in seqs if (span := self._spans.get(seq)) is not None and span.held]
        for span in spans:
            self._held -= span.size
        self.counters.released += sum(span.size for span in spans)
        self._done_with(spans)
        return sum(span.size for span in spans)

    def _release_for(self, excess: int) -> None:
        """The quota is short of ``excess`` bytes: release held batches, oldest first, until it is not."""
        seqs, freed = [], 0
        for seq in self.held_seqs():
            if freed >= excess:
                break
            span = self._spans[seq]
            seqs.append(seq)
            freed += span.nbytes + ROW_OVERHEAD_BYTES * span.size
        released = self.release(seqs)
        log.warning(
            "journal %s: quota reached: %d readings the broker acknowledged but no collector confirmed yet "
            "are let go (lost only if the broker loses them)",
            self.path,
            released,
        )

    def _reclaim(self, segments: Iterable[int]) -> None:
        """Empty those of ``segments`` (and of those a full disk kept) that hold no unacknowledged reading.

        On a full disk they stay as they are, acknowledged batches included (sent again after a
        restart: duplicates), and are tried again on the next ack.
        """
        candidates, self._unreclaimed = {*segments, *self._unreclaimed}, set()
        settled = {s for s in candidates if s in self._segments and self._settled(s)}
        if settled:
            touched = [
                seq
                for seq, span in self._spans.items()
                if span.acked and settled.intersection(range(_segment(span.first), _segment(span.last) + 1))
            ]
            try:
                self._forget(settled, touched)
            except sqlite3.OperationalError as exc:
                if not self._disk_full(exc):
                    raise
                self._unreclaimed = settled

    def _forget(self, settled: set[int], seqs: list[int]) -> None:
        """Drop the ``settled`` segments and the acknowledged batches ``seqs`` with all their readings.

        The segment appends go to is emptied rather than dropped. A batch's readings in other
        segments go too, so that a batch on disk always has all its readings (same bytes).
        """
        current = _segment(self._next_id)
        with self._transaction():
            for segment in sorted(settled):
                if segment == current:
                    self._db.execute(f"DELETE FROM {_table(segment)}")
                else:
                    self._db.execute(f"DROP TABLE {_table(segment)}")
                    self._segments.discard(segment)
                self._rows_gone_below((segment + 1) * SEGMENT_READINGS)
            for seq in seqs:
                self._delete_rows(self._spans[seq].first - 1, self._spans[seq].last)
            self._db.executemany("DELETE FROM spans WHERE seq = ?", [(seq,) for seq in seqs])
            self._set_meta("next_seq", str(self._next_seq))
        for seq in seqs:
            del self._spans[seq]
        if seqs:
            self._covered = _merged(self._spans.values())

    def _delete_rows(self, after: int, upto: int) -> None:
        """Delete the readings with after < id <= upto (row by row: SQLite writes each page they were on)."""
        self._rows_gone_below(upto + 1)
        for segment in range(_segment(after + 1), _segment(upto) + 1):
            if segment in self._segments:
                self._db.execute(f"DELETE FROM {_table(segment)} WHERE id > ? AND id <= ?", (after, upto))

    def _rows_gone_below(self, bound: int) -> None:
        """Rows below ``bound`` may have been deleted: only ids from there on surely have theirs."""
        self._whole_from = max(self._whole_from, min(bound, self._next_id))

    def _settled(self, segment: int) -> bool:
        """True when every reading of ``segment`` is in an acknowledged batch."""
        low, high = segment * SEGMENT_READINGS - 1, (segment + 1) * SEGMENT_READINGS
        if any(not s.acked and s.first < high and s.last > low for s in self._spans.values()):
            return False
        gaps = list(self._gaps(low, high - 1))
        if any(max(after + 1, self._whole_from) < min(before, self._next_id) for after, before in gaps):
            return False  # readings not yet in a batch, known to be there
        return not any(
            self._db.execute(
                f"SELECT 1 FROM {_table(segment)} WHERE id > ? AND id < ? LIMIT 1", gap
            ).fetchone()
            for gap in gaps
        )

    def set_fsync(self, fsync: Literal["normal", "full"]) -> None:
        """How hard commits reach the disk, from the next one on (a pushed config may change it)."""
        self._db.execute(f"PRAGMA synchronous={'FULL' if fsync == 'full' else 'NORMAL'}")

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
    """BEGIN IMMEDIATE ... COMMIT, or ROLLBACK on error (unless SQLite rolled back itself)."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def __enter__(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: type[BaseException] | None, *_: object) -> None:
        if exc_type is None:
            try:
                self._db.execute("COMMIT")
            except sqlite3.Error:
                self._rollback()
                raise
        else:
            self._rollback()

    def _rollback(self) -> None:
        # SQLite may have rolled back already (SQLITE_FULL, SQLITE_IOERR): a ROLLBACK then would
        # raise "no transaction is active" and hide the error that matters.
        if self._db.in_transaction:
            self._db.execute("ROLLBACK")
