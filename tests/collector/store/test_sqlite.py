"""The embedded store's durability: what the collector acknowledges survives a power cut."""

from __future__ import annotations

from pathlib import Path

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
