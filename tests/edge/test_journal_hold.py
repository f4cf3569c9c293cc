"""With ``hold`` the journal keeps a batch past the broker's PUBACK until a collector confirms it."""

from __future__ import annotations

import time
from pathlib import Path

from edge.journal import Journal
from tests.edge.test_journal import decode, reading


def sent(journal: Journal, readings: int = 5) -> tuple[int, bytes]:
    """Journal ``readings`` readings, form them into one batch and acknowledge it as the broker would."""
    start = journal.counters.appended
    journal.append([reading(n) for n in range(start, start + readings)])
    batch = journal.form_batch(readings, live=True)
    assert batch is not None
    assert journal.ack(batch.seq) == readings
    return batch.seq, batch.payload


def test_a_held_batch_survives_a_crash_and_comes_back_with_its_seq_and_bytes(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite"
    journal = Journal(path, "pi-1", hold=True)
    seq, payload = sent(journal)
    assert journal.backlog() == 0, "the broker has it"
    assert journal.held() == 5
    assert journal.held_seqs() == [seq]
    again = journal.held_batch(seq)
    assert again is not None
    assert (again.seq, again.payload) == (seq, payload)
    # The agent dies (no close): the batch is on disk, formed, and goes out again.
    reopened = Journal(path, "pi-1", hold=True)
    assert [(b.seq, b.payload) for b in reopened.formed_batches()] == [(seq, payload)]
    assert reopened.backlog() == 5


def test_confirm_forgets_held_batches_for_good(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite"
    journal = Journal(path, "pi-1", hold=True)
    first, _ = sent(journal)
    second, _ = sent(journal)
    third, _ = sent(journal)
    assert journal.confirm([(first, second)]) == 10
    assert journal.held_seqs() == [third]
    assert journal.held() == 5
    assert journal.confirm([(first, second)]) == 0, "a second confirmation changes nothing"
    assert journal.held_batch(first) is None
    assert journal.confirmed_top == second
    assert journal.counters.batches_confirmed == 2
    journal.confirm([(third, third)])
    assert journal.held() == 0
    assert journal.size_bytes() == 0
    journal.close()
    assert Journal(path, "pi-1", hold=True).formed_batches() == []


def test_without_hold_the_pubback_is_final(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "j.sqlite", "pi-1")
    seq, _ = sent(journal)
    assert journal.held() == 0
    assert journal.held_seqs() == []
    assert journal.held_batch(seq) is None


def test_a_batch_confirmed_before_its_puback_leaves_the_backlog(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "j.sqlite", "pi-1", hold=True)
    journal.append([reading(n) for n in range(4)])
    batch = journal.form_batch(10, live=True)
    assert batch is not None
    assert journal.confirm([(batch.seq, batch.seq)]) == 4
    assert journal.backlog() == 0
    assert journal.ack(batch.seq) == 0, "its PUBACK then changes nothing"
    assert journal.held() == 0
    assert journal.formed_batches() == []


def test_that_a_collector_confirms_is_remembered_across_restarts(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite"
    journal = Journal(path, "pi-1", hold=True)
    assert not journal.collector_acks_seen
    seq, _ = sent(journal)
    journal.confirm([(seq, seq)])
    assert journal.collector_acks_seen
    journal.close()
    assert Journal(path, "pi-1", hold=True).collector_acks_seen


def test_held_seqs_by_time_and_seq(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "j.sqlite", "pi-1", hold=True)
    first, _ = sent(journal)
    between = time.monotonic()
    time.sleep(0.01)
    second, _ = sent(journal)
    assert journal.held_seqs(sent_before=between) == [first]
    assert journal.held_seqs(below=second) == [first]
    assert journal.held_seqs(below=first) == []
    time.sleep(0.01)
    journal.held_batch(first)  # sent again now
    assert journal.held_seqs(sent_before=time.monotonic() - 0.005) == [second]


def test_release_lets_held_batches_go_as_a_final_puback_would(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "j.sqlite", "pi-1", hold=True)
    seq, _ = sent(journal)
    assert journal.release([seq]) == 5
    assert journal.held() == 0
    assert journal.counters.released == 5
    assert journal.size_bytes() == 0


def test_the_quota_lets_held_batches_go_before_any_reading(tmp_path: Path) -> None:
    # Room for about 20 readings: 12 held, then 12 more; the oldest held batches give way, not readings.
    size = len(reading(0).model_dump_json()) + 48
    journal = Journal(tmp_path / "j.sqlite", "pi-1", hold=True, quota_bytes=20 * size + 10)
    sent(journal, 6)
    second, _ = sent(journal, 6)
    journal.append([reading(n) for n in range(100, 112)])
    assert journal.counters.dropped == 0, "no reading dropped while held batches could give way"
    assert journal.counters.released == 6
    assert journal.held_seqs() == [second]
    assert journal.backlog() == 12
    batch = journal.form_batch(100, live=True)
    assert batch is not None
    assert [r.ts for r in decode(batch.payload).readings] == [reading(n).ts for n in range(100, 112)]
