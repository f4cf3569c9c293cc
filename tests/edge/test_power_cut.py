"""Power cuts under the journal: what ``journal.fsync: normal`` and ``full`` keep, on a real ext4.

The disk logs every write and flush (tests/edge/blackout_disk.py); each cut image keeps what
was flushed before the cut and none, all or a random half of the writes since (a disk's
volatile cache). The guarantees held here are those of docs/interfaces.md (journal).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.edge.blackout_disk import FLUSH, HEADER, WRITE, records, replay
from tests.edge.power_cut import Fsync, Verdict, cut_points, judge, record, recover, unavailable

CUTS = 30


def _log(*entries: tuple[bytes, int, bytes]) -> bytes:
    return b"".join(HEADER.pack(kind, offset, len(data)) + data for kind, offset, data in entries)


def test_replay_keeps_the_flushed_writes_and_the_chosen_volatile_ones() -> None:
    log = _log((WRITE, 0, b"ab"), (FLUSH, 0, b""), (WRITE, 2, b"cd"), (WRITE, 0, b"xy"), (FLUSH, 0, b""))
    ends = [r.end for r in records(log)]
    base = b"...."
    assert replay(base, log, ends[0], None) == b"ab.."  # written, never flushed, the cache got out
    assert replay(base, log, ends[0], frozenset()) == b"...."  # written, never flushed, lost
    assert replay(base, log, ends[1], frozenset()) == b"ab.."
    assert replay(base, log, ends[3], frozenset()) == b"ab.."
    assert replay(base, log, ends[3], frozenset({1})) == b"xy.."  # the later write alone reached the disk
    assert replay(base, log, ends[3], frozenset({0})) == b"abcd"
    assert replay(base, log, ends[4], frozenset()) == b"xycd"


def test_a_truncated_log_is_refused() -> None:
    log = _log((WRITE, 0, b"abcd"))
    with pytest.raises(ValueError, match="log truncated inside the record at 0"):
        list(records(log[:-1]))


def _cuts(tmp_path: Path, fsync: Fsync, steps: int) -> list[Verdict]:
    run = record(tmp_path, fsync, steps=steps, seed=11)
    verdicts = []
    for cut, keep in cut_points(run, CUTS, seed=12):
        outcome = recover(bytes(replay(run.base, run.log, cut, keep)), fsync, tmp_path)
        verdicts.append(judge(run, cut, outcome))
    assert verdicts[-1].returned > 1000, "the run must journal enough readings to cut into"
    return verdicts


@pytest.mark.integration
@pytest.mark.timeout(300)  # two runs of ~25 s alone; more when the suite shares the 2 cores
@pytest.mark.skipif(unavailable() is not None, reason=f"power cuts need a logging disk: {unavailable()}")
def test_full_loses_no_reading_whose_append_returned(tmp_path: Path) -> None:
    verdicts = _cuts(tmp_path, "full", steps=700)
    for v in verdicts:
        assert not v.lost, f"cut at {v.cut}: readings lost although their append returned: {v.lost}"
        assert not v.twice, f"cut at {v.cut}: readings in two batches: {v.twice}"
        assert not v.wrong_batch, f"cut at {v.cut}: formed readings back in another batch: {v.wrong_batch}"
        assert not v.changed_bytes, f"cut at {v.cut}: batches back with other bytes: {v.changed_bytes}"
    # At-least-once: acknowledged batches not yet dropped come back (same seq, same bytes).
    assert any(v.duplicates for v in verdicts)


@pytest.mark.integration
@pytest.mark.timeout(300)  # two runs of ~25 s alone; more when the suite shares the 2 cores
@pytest.mark.skipif(unavailable() is not None, reason=f"power cuts need a logging disk: {unavailable()}")
def test_normal_loses_only_the_readings_since_the_last_checkpoint(tmp_path: Path) -> None:
    verdicts = _cuts(tmp_path, "normal", steps=1500)
    for v in verdicts:
        assert not v.must_survive_lost, f"cut at {v.cut}: checkpointed readings lost: {v.must_survive_lost}"
        assert not v.holes, f"cut at {v.cut}: lost readings older than a surviving one: {v.holes}"
        assert not v.twice, f"cut at {v.cut}: readings in two batches: {v.twice}"
    # The cut is real: some cuts take readings whose append had returned (unsynced WAL pages).
    assert any(v.lost for v in verdicts)
