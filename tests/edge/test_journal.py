"""The journal keeps readings on disk until the broker acknowledged the batch carrying them."""

from __future__ import annotations

import logging
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from citygw.contract import wire
from edge.journal import FIRST_SEQ, Journal, JournalMismatch


def reading(n: int, device: str = "aq-1") -> wire.Reading:
    return wire.Reading(
        device=device, measurement="air_quality", ts=1_700_000_000_000 + n, fields={"pm25": n}
    )


def decode(payload: bytes) -> wire.TelemetryBatch:
    return wire.TelemetryBatch.model_validate_json(payload)


def test_empty_journal_has_no_batch(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "j.sqlite", "pi-1")
    assert journal.next_batch(10) is None
    assert journal.backlog() == 0


def test_batches_keep_reading_order_and_valid_wire_payload(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "j.sqlite", "pi-1")
    journal.append([reading(n) for n in range(5)])
    journal.append([reading(n) for n in range(5, 7)])
    got = journal.next_batch(4)
    assert got is not None
    seq, payload = got
    batch = decode(payload)
    assert (batch.agent, batch.seq) == ("pi-1", seq)
    assert batch.readings == [reading(n) for n in range(4)]
    assert payload == wire.encode(batch)
    journal.ack(seq)
    got = journal.next_batch(4)
    assert got is not None
    assert decode(got[1]).readings == [reading(n) for n in range(4, 7)]
    assert got[0] == seq + 1


def test_unacknowledged_batch_comes_back_unchanged(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "j.sqlite", "pi-1")
    journal.append([reading(n) for n in range(3)])
    first = journal.next_batch(10)
    journal.append([reading(9)])
    assert journal.next_batch(10) == first, "a republish must carry the same seq and bytes"
    assert journal.backlog() == 4


def test_backlog_counts_until_ack(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "j.sqlite", "pi-1")
    journal.append([reading(n) for n in range(10)])
    assert journal.backlog() == 10
    got = journal.next_batch(6)
    assert got is not None
    assert journal.backlog() == 10, "forming a batch is not delivering it"
    assert journal.ack(got[0]) == 6
    assert journal.backlog() == 4
    assert journal.ack(got[0]) == 0, "a second ack of the same seq changes nothing"
    assert journal.backlog() == 4
    assert journal.health() == wire.JournalHealth(backlog=4, dropped=0)


def test_seq_is_monotonic_across_reopen(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite"
    journal = Journal(path, "pi-1")
    seqs = []
    for n in range(3):
        journal.append([reading(n)])
        got = journal.next_batch(10)
        assert got is not None
        seqs.append(got[0])
        journal.ack(got[0])
    journal.close()
    journal = Journal(path, "pi-1", fsync="full")
    journal.append([reading(99)])
    got = journal.next_batch(10)
    assert got is not None
    assert seqs == [FIRST_SEQ, FIRST_SEQ + 1, FIRST_SEQ + 2]
    assert got[0] == FIRST_SEQ + 3


CRASHING_WRITER = """
import os, signal, sys
from citygw.contract import wire
from edge.journal import Journal
journal = Journal(sys.argv[1], "pi-1")
def reading(n):
    return wire.Reading(device="aq-1", measurement="air_quality", ts=n, fields={"pm25": n})
journal.append([reading(n) for n in range(3)])
seq, payload = journal.next_batch(2)
journal.append([reading(3)])
sys.stdout.buffer.write(payload)
sys.stdout.flush()
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_batch_survives_a_crash(tmp_path: Path) -> None:
    """A process killed with SIGKILL before the ack: the next one republishes the same batch."""
    path = tmp_path / "j.sqlite"
    child = subprocess.run(
        [sys.executable, "-c", CRASHING_WRITER, str(path)], capture_output=True, check=False, timeout=60
    )
    assert child.returncode == -signal.SIGKILL, child.stderr.decode()
    reopened = Journal(path, "pi-1")
    assert reopened.backlog() == 4
    formed = reopened.next_batch(10)
    assert formed is not None
    assert formed[1] == child.stdout
    assert formed[0] == FIRST_SEQ
    reopened.ack(formed[0])
    rest = reopened.next_batch(10)
    assert rest is not None
    assert [r.ts for r in decode(rest[1]).readings] == [2, 3]
    assert rest[0] == FIRST_SEQ + 1


def test_journal_is_wal_and_refuses_another_agent(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite"
    Journal(path, "pi-1").close()
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    with pytest.raises(JournalMismatch, match="belongs to agent 'pi-1'"):
        Journal(path, "pi-2")


def quota_for(count: int) -> int:
    """Bytes the quota counts for ``count`` readings like ``reading(n)``."""
    from edge.journal import ROW_OVERHEAD_BYTES

    return count * (len(wire.encode(reading(100))) + ROW_OVERHEAD_BYTES)


def drained(journal: Journal) -> list[wire.Reading]:
    """Every reading in the journal, in order, acknowledged on the way."""
    found: list[wire.Reading] = []
    while (got := journal.next_batch(1000)) is not None:
        found += decode(got[1]).readings
        journal.ack(got[0])
    return found


def journaled(journal: Journal) -> list[int]:
    return [int(r.fields["pm25"]) for r in drained(journal)]


def test_drop_oldest_makes_room_and_counts(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "j.sqlite", "pi-1", quota_bytes=quota_for(100), policy="drop_oldest")
    for n in range(100, 400):
        journal.append([reading(n)])
    assert journal.size_bytes() <= quota_for(100)
    kept = journaled(journal)
    assert journal.counters.dropped == 300 - len(kept)
    assert journal.health().dropped == journal.counters.dropped
    assert kept == list(range(400 - len(kept), 400)), "the newest survive, in order, without holes"
    assert len(kept) >= 98


def test_batches_stay_full_after_the_quota_dropped_more_than_a_batch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ids the quota freed are skipped: the next batch is as full as its limit, across segments, in order."""
    monkeypatch.setattr("edge.journal.SEGMENT_READINGS", 16)
    journal = Journal(tmp_path / "j.sqlite", "pi-1", quota_bytes=quota_for(40), policy="drop_oldest")
    for n in range(100, 200):
        journal.append([reading(n)])
    assert journal.counters.dropped > 10, "more ids freed than a batch holds"
    sizes, kept = [], []
    while (batch := journal.next_batch(10)) is not None:
        readings = decode(batch[1]).readings
        sizes.append(len(readings))
        kept += [int(r.fields["pm25"]) for r in readings]
        journal.ack(batch[0])
    assert kept == list(range(200 - len(kept), 200))
    assert journal.counters.dropped == 100 - len(kept)
    assert all(size == 10 for size in sizes[:-1]), sizes


@pytest.mark.parametrize("chunk", [3, 1024])
def test_drop_oldest_walks_past_batches_and_chunks_and_frees_exactly_enough(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, chunk: int
) -> None:
    """Oldest unbatched readings go first, across formed batches, segments and chunk boundaries;
    exactly as many as free the excess plus the slack, and the counters agree with the disk."""
    monkeypatch.setattr("edge.journal.SEGMENT_READINGS", 16)
    monkeypatch.setattr("edge.journal.DROP_CHUNK", chunk)
    monkeypatch.setattr("edge.journal.DROP_SLACK", 0.1)
    path = tmp_path / "j.sqlite"
    per_reading = quota_for(1)
    journal = Journal(path, "pi-1", quota_bytes=quota_for(100), policy="drop_oldest")
    journal.append([reading(n) for n in range(100, 105)])  # ids 1..5: backlog, the oldest
    journal.mark_live()
    journal.append([reading(n) for n in range(105, 110)])  # ids 6..10
    batch = journal.form_batch(5, live=True)  # ids 6..10: in a batch, never dropped
    assert batch is not None
    assert batch.size == 5
    journal.append([reading(n) for n in range(110, 200)])  # ids 11..100: the quota is full
    assert journal.counters.dropped == 0
    journal.append([reading(200)])  # 1 reading over: frees it plus 10 % of the quota
    assert journal.counters.dropped == 11  # ids 1..5, then past the batch ids 11..16
    assert journal.health().dropped == 11
    assert journal.backlog() == 90
    assert journal.size_bytes() == 90 * per_reading
    journal.close()
    reopened = Journal(path, "pi-1")  # what is on disk agrees with the counters
    assert reopened.size_bytes() == 90 * per_reading
    assert reopened.formed_batches() == [batch]
    assert journaled(reopened) == list(range(105, 110)) + list(range(116, 201))


def test_drop_oldest_reads_a_bounded_number_of_rows_whatever_the_backlog(tmp_path: Path) -> None:
    """Hitting the quota with a large backlog reads the few rows it drops, not the whole backlog."""
    import tracemalloc

    journal = Journal(tmp_path / "j.sqlite", "pi-1", quota_bytes=quota_for(40_000), policy="drop_oldest")
    for _ in range(20):
        journal.append([reading(100)] * 2_000)
    assert journal.counters.dropped == 0
    tracemalloc.start()
    try:
        journal.append([reading(100)])
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert journal.counters.dropped == 401  # 1 % of the quota plus the new reading's room
    # A row fetched costs Python ~100 bytes; the 40 000 rows of the backlog would be ~4 MB.
    assert peak < 400_000, f"{peak} bytes allocated to drop 401 readings"
    journal.close()


def test_a_full_disk_refuses_readings_and_counts_them_instead_of_raising(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """SQLITE_FULL (no quota): SQLite rolled the append back; it is refused like drop_newest, logged once."""
    monkeypatch.setattr("edge.journal.SEGMENT_READINGS", 64)  # full disks also strike creating a segment
    journal = Journal(tmp_path / "j.sqlite", "pi-1")
    (pages,) = journal._db.execute("PRAGMA page_count").fetchone()
    journal._db.execute(f"PRAGMA max_page_count={pages + 8}")  # a disk with 8 pages (32 kB) left
    taken = refused = 0
    with caplog.at_level(logging.WARNING, logger="edge.journal"):
        for n in range(1000, 2000, 20):
            got = journal.append([reading(k) for k in range(n, n + 20)])
            taken += got
            refused += 20 - got
    assert 0 < taken < 1000
    assert refused == 1000 - taken
    assert journal.counters.dropped == refused
    assert journal.health() == wire.JournalHealth(backlog=taken, dropped=refused)
    full = [r.getMessage() for r in caplog.records if "disk is full" in r.getMessage()]
    assert len(full) == 1, full
    assert "database or disk is full" in full[0]
    journal._db.execute("PRAGMA max_page_count=1000000")  # room again: appends go on, nothing lost
    assert journal.append([reading(2000)]) == 1
    assert f"{refused} readings were refused while it was full" in caplog.text
    assert journaled(journal) == [*range(1000, 1000 + taken), 2000]


def test_a_full_disk_defers_batches_and_acks_instead_of_raising(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """SQLITE_FULL forming a batch: none now, formed once there is room; acks go on; logged once."""
    journal = Journal(tmp_path / "j.sqlite", "pi-1")
    journal.append([reading(n) for n in range(1000)])
    (pages,) = journal._db.execute("PRAGMA page_count").fetchone()
    journal._db.execute(f"PRAGMA max_page_count={pages}")  # not one page left
    formed: list[int] = []
    with caplog.at_level(logging.WARNING, logger="edge.journal"):
        while (batch := journal.form_batch(1, live=True)) is not None:  # a page of spans, then full
            formed.append(batch.seq)
        assert 0 < len(formed) < 1000
        assert journal.has_live()
        assert journal.form_batch(1, live=True) is None  # still full: tried again, still none
        assert sum(journal.ack(seq) for seq in formed) == len(formed)
        journal._db.execute("PRAGMA max_page_count=1000000")  # room again
        rest = journal.form_batch(1000, live=True)
    full = [r.getMessage() for r in caplog.records if "disk is full" in r.getMessage()]
    assert len(full) == 1, full
    assert "room again" in caplog.text
    assert rest is not None
    assert [int(r.fields["pm25"]) for r in decode(rest.payload).readings] == list(range(len(formed), 1000))
    assert rest.seq == formed[-1] + 1  # no seq lost to the refused attempts
    assert journal.backlog() == 1000 - len(formed)
    journal.close()


def test_an_ack_a_full_disk_cannot_write_leaves_the_batch_on_disk_and_is_reclaimed_later(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Deleting frees pages, so max_page_count never refuses an ack: a real disk (WAL growth) can."""
    monkeypatch.setattr("edge.journal.SEGMENT_READINGS", 64)
    journal = Journal(tmp_path / "j.sqlite", "pi-1")
    journal.append([reading(n) for n in range(200)])
    first, second = journal.form_batch(64, live=True), journal.form_batch(64, live=True)
    assert first is not None
    assert second is not None
    full = sqlite3.OperationalError("database or disk is full")
    full.sqlite_errorcode = sqlite3.SQLITE_FULL  # type: ignore[attr-defined]
    forget = journal._forget

    def refused(*_: object) -> None:
        raise full

    monkeypatch.setattr(journal, "_forget", refused)
    assert journal.ack(first.seq) == 64  # the broker has it; its segment stays on disk for now
    assert journal.formed_batches() == [second]
    monkeypatch.setattr(journal, "_forget", forget)
    assert journal.ack(second.seq) == 64  # room again: both segments go
    assert journal._segments.isdisjoint({0, 1})
    assert journaled(journal) == list(range(128, 200))


def test_drop_newest_refuses_and_counts(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "j.sqlite", "pi-1", quota_bytes=quota_for(100), policy="drop_newest")
    taken = sum(journal.append([reading(n), reading(n + 500)]) for n in range(100, 200))
    assert taken == 100
    assert journal.counters.dropped == 100
    kept = journaled(journal)
    assert kept == [n + k for n in range(100, 150) for k in (0, 500)], "the first 100 were kept"
    journal.append([reading(500)])
    assert journal.counters.dropped == 100, "room again once the backlog drained"


def test_stop_slow_refuses_slow_devices_first(tmp_path: Path) -> None:
    journal = Journal(
        tmp_path / "j.sqlite",
        "pi-1",
        quota_bytes=quota_for(100),
        policy="stop_slow",
        slow_devices=frozenset({"meter-1"}),
    )
    for n in range(100, 300):
        journal.append([reading(n, device="bus-1"), reading(n, device="meter-1")])
    assert journal.counters.dropped == 400 - journal.backlog()
    devices = [r.device for r in drained(journal)]
    assert devices.count("meter-1") < 60, "slow readings stop once the quota is reached"
    assert devices[-50:] == ["bus-1"] * 50, "fast readings keep coming"


def test_quota_survives_a_reopen(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite"
    journal = Journal(path, "pi-1", quota_bytes=quota_for(50))
    journal.append([reading(n) for n in range(100, 140)])
    size = journal.size_bytes()
    journal.close()
    again = Journal(path, "pi-1", quota_bytes=quota_for(50))
    assert again.size_bytes() == size
    again.append([reading(n) for n in range(140, 160)])
    assert again.counters.dropped > 0


def test_live_and_backlog_batches(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "j.sqlite", "pi-1")
    journal.append([reading(n) for n in range(10)])
    journal.mark_live()
    journal.append([reading(n) for n in range(10, 13)])
    live = journal.form_batch(100, live=True)
    old = journal.form_batch(4, live=False)
    assert live is not None
    assert old is not None
    assert [r.fields["pm25"] for r in decode(live.payload).readings] == [10, 11, 12]
    assert [r.fields["pm25"] for r in decode(old.payload).readings] == [0, 1, 2, 3]
    assert (live.size, old.size, old.seq) == (3, 4, live.seq + 1)
    assert journal.form_batch(100, live=True) is None
    assert [b.seq for b in journal.formed_batches()] == [live.seq, old.seq]
    journal.ack(old.seq)
    assert journal.backlog() == 9


def tables(path: Path) -> list[str]:
    with sqlite3.connect(path) as db:
        return sorted(n for (n,) in db.execute("SELECT name FROM sqlite_master WHERE name GLOB 'readings*'"))


def test_segments_leave_whole_and_batches_keep_their_bytes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Batches across segment boundaries; a segment goes once all its readings are acknowledged."""
    monkeypatch.setattr("edge.journal.SEGMENT_READINGS", 10)
    path = tmp_path / "j.sqlite"
    journal = Journal(path, "pi-1")
    journal.append([reading(n) for n in range(25)])  # ids 1..25: segments 0, 1, 2
    batches = [journal.form_batch(8, live=True) for _ in range(3)]
    assert None not in batches
    first, second, third = (batch for batch in batches if batch is not None)
    assert journal.ack(second.seq) == 8
    assert tables(path) == ["readings_0", "readings_1", "readings_2"], "segment 0 still has unacked readings"
    assert journal.ack(first.seq) == 8
    assert tables(path) == ["readings_1", "readings_2"]
    assert journal.backlog() == 9
    journal.close()
    reopened = Journal(path, "pi-1")
    assert reopened.formed_batches() == [third], "only the unacknowledged batch comes back, same bytes"
    assert reopened.backlog() == 9
    assert [int(r.fields["pm25"]) for r in drained(reopened)] == list(range(16, 25))
    assert drained(reopened) == []


@pytest.mark.parametrize("reopen", [False, True], ids=["running", "reopened"])
def test_holes_the_quota_made_are_skipped_and_their_segments_reclaimed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, reopen: bool
) -> None:
    """Readings dropped between a formed batch and newer ones: the rest come out whole, in order, once.

    The journal knows which ids surely have their row (no query); below that line it asks
    SQLite, so a hole must neither stop a batch short nor leave a segment on disk for ever.
    """
    monkeypatch.setattr("edge.journal.SEGMENT_READINGS", 16)
    path = tmp_path / "j.sqlite"
    journal = Journal(path, "pi-1", quota_bytes=quota_for(40), policy="drop_oldest")
    journal.append([reading(n) for n in range(100, 110)])  # ids 1..10
    held = journal.form_batch(10, live=True)  # formed, not yet acknowledged: never dropped
    assert held is not None
    for n in range(110, 160):  # ids 11..60: the quota drops the oldest unbatched ones
        journal.append([reading(n)])
    dropped = journal.counters.dropped
    assert 0 < dropped < 50
    if reopen:
        journal.close()
        journal = Journal(path, "pi-1", quota_bytes=quota_for(40), policy="drop_oldest")
        assert journal.formed_batches() == [held]
    out: list[int] = []
    sizes: list[int] = []
    while (got := journal.next_batch(7)) is not None:
        readings = decode(got[1]).readings
        out += [int(r.fields["pm25"]) for r in readings]
        sizes.append(len(readings))
        journal.ack(got[0])
    assert out == list(range(100, 110)) + list(range(110 + dropped, 160))
    assert all(size == 7 for size in sizes[1:-1]), sizes
    assert journal.backlog() == 0
    assert tables(path) == ["readings_3"], "every segment but the one appends go to is gone"
    journal.append([reading(160)])
    assert journaled(journal) == [160]


def test_a_segment_with_readings_not_yet_in_a_batch_stays(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("edge.journal.SEGMENT_READINGS", 16)
    path = tmp_path / "j.sqlite"
    journal = Journal(path, "pi-1")
    journal.append([reading(n) for n in range(40)])  # ids 1..40: segments 0, 1, 2
    for _ in range(2):  # ids 1..10, 11..20: segment 0 fully batched, segment 1 in part
        batch = journal.form_batch(10, live=True)
        assert batch is not None
        journal.ack(batch.seq)
    assert tables(path) == ["readings_1", "readings_2"], "segment 1 keeps ids 21..31, not yet in a batch"
    assert journaled(journal) == list(range(20, 40))


def test_journal_from_before_segments_is_migrated(tmp_path: Path) -> None:
    """A journal with one readings table and batches stored whole keeps its batches' seqs and bytes."""
    path = tmp_path / "j.sqlite"
    fragments = [wire.encode(reading(n)).decode() for n in range(5)]
    payload = b'{"legacy batch": true}'
    with sqlite3.connect(path) as db:
        db.executescript(
            "CREATE TABLE readings (id INTEGER PRIMARY KEY AUTOINCREMENT, batch_seq INTEGER, payload TEXT);"
            "CREATE TABLE batches (seq INTEGER PRIMARY KEY, payload BLOB NOT NULL);"
            "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);"
            "INSERT INTO meta VALUES ('agent', 'pi-1'), ('next_seq', '8');"
        )
        db.executemany(
            "INSERT INTO readings (batch_seq, payload) VALUES (?, ?)",
            [(7 if n < 2 else None, f) for n, f in enumerate(fragments)],
        )
        db.execute("INSERT INTO batches VALUES (7, ?)", (payload,))
    journal = Journal(path, "pi-1")
    assert journal.formed_batches() == [(7, payload, 2)]
    assert journal.backlog() == 5
    journal.ack(7)
    rest = journal.next_batch(10)
    assert rest is not None
    assert rest[0] == 8
    assert [int(r.fields["pm25"]) for r in decode(rest[1]).readings] == [2, 3, 4]


@pytest.mark.parametrize("seed", range(4))
def test_every_batch_says_what_it_carries_through_drops_acks_and_reopens(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, seed: int
) -> None:
    """Where the journal knows every id has its row it does not ask SQLite to count them: each
    batch's size, and the backlog, must still match the readings it carries, holes or not."""
    import random

    monkeypatch.setattr("edge.journal.SEGMENT_READINGS", 16)
    rng = random.Random(seed)
    path = tmp_path / "j.sqlite"
    journal = Journal(path, "pi-1", quota_bytes=quota_for(60), policy="drop_oldest")
    journal.mark_live()
    sent: list[int] = []
    formed: list[int] = []
    dropped = 0
    n = 100
    for _ in range(300):
        action = rng.random()
        if action < 0.5:
            count = rng.randint(1, 12)
            journal.append([reading(n + i) for i in range(count)])
            n += count
        elif action < 0.8:
            batch = journal.form_batch(rng.randint(1, 20), live=rng.random() < 0.5)
            if batch is not None:
                readings = decode(batch.payload).readings
                assert batch.size == len(readings) > 0
                sent += [int(r.fields["pm25"]) for r in readings]
                formed.append(batch.seq)
        elif action < 0.95 and formed:
            journal.ack(formed.pop(rng.randrange(len(formed))))
        else:
            dropped += journal.counters.dropped
            journal.close()
            journal = Journal(path, "pi-1", quota_bytes=quota_for(60), policy="drop_oldest")
            journal.mark_live()
            formed = [batch.seq for batch in journal.formed_batches()]
    for seq in formed:
        journal.ack(seq)
    rest = journaled(journal)
    assert journal.backlog() == 0
    assert len(set(sent)) == len(sent), "no reading in two batches"
    assert not set(sent) & set(rest)
    assert dropped + journal.counters.dropped + len(sent) + len(rest) == n - 100, (
        "each reading sent or dropped"
    )
