"""An operator's notice board in SQLite: notices are posted, ended (never deleted) and listed.

Operator alerts and trip changes (cancellations, skipped stops) are both kept this way, one table
each, in the file of ``CITYGW_TRANSIT_ALERTS_PATH`` (or in memory): the board is also the record.
"""

from __future__ import annotations

import re
import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, slots=True)
class Notice:
    """One posted notice: its JSON body as posted, who posted it, when, and when it ended."""

    id: str
    body: str
    created_by: str
    created_at: int
    ended_at: int | None


class NoticeBoard:
    """Notices of one ``table``, ids ``<prefix>-<n>``, in SQLite (``path``) or memory (None); thread-safe."""

    def __init__(self, path: Path | None, *, table: str, prefix: str) -> None:
        if not re.fullmatch(r"[a-z_]+", table) or not re.fullmatch(r"[a-z]+", prefix):
            raise ValueError(f"bad board table {table!r} or prefix {prefix!r}")
        self._table, self._prefix = table, prefix
        self._id = re.compile(rf"{prefix}-([1-9][0-9]{{0,17}})")
        self._lock = threading.Lock()
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(path) if path else ":memory:", check_same_thread=False)
        self._db.execute(
            f"CREATE TABLE IF NOT EXISTS {table} (number INTEGER PRIMARY KEY AUTOINCREMENT,"
            " body TEXT NOT NULL, created_by TEXT NOT NULL, created_at INTEGER NOT NULL, ended_at INTEGER)"
        )
        self._db.commit()

    def post(self, body: str, *, actor: str, now_s: int) -> Notice:
        with self._lock:
            cursor = self._db.execute(
                f"INSERT INTO {self._table} (body, created_by, created_at) VALUES (?, ?, ?)",
                (body, actor, now_s),
            )
            self._db.commit()
        return Notice(f"{self._prefix}-{cursor.lastrowid}", body, actor, now_s, None)

    def end(self, notice_id: str, *, now_s: int) -> Notice | None:
        """End the notice now (it stays on record); None if there is no such notice."""
        with self._lock:
            self._db.execute(
                f"UPDATE {self._table} SET ended_at = ? WHERE number = ? AND ended_at IS NULL",
                (now_s, self._number(notice_id)),
            )
            self._db.commit()
        return self.get(notice_id)

    def get(self, notice_id: str) -> Notice | None:
        with self._lock:
            row = self._db.execute(
                f"SELECT number, body, created_by, created_at, ended_at FROM {self._table} WHERE number = ?",
                (self._number(notice_id),),
            ).fetchone()
        return self._notice(row) if row else None

    def not_ended(self) -> list[Notice]:
        """Notices not ended, oldest first."""
        with self._lock:
            rows = self._db.execute(
                f"SELECT number, body, created_by, created_at, ended_at FROM {self._table}"
                " WHERE ended_at IS NULL ORDER BY number"
            ).fetchall()
        return [self._notice(row) for row in rows]

    def close(self) -> None:
        self._db.close()

    def _number(self, notice_id: str) -> int:
        """The row of ``<prefix>-<n>`` as issued (ASCII digits, within SQLite's integers), or -1 (no row)."""
        match = self._id.fullmatch(notice_id)
        return int(match[1]) if match else -1

    def _notice(self, row: tuple[int, str, str, int, int | None]) -> Notice:
        number, body, created_by, created_at, ended_at = row
        return Notice(f"{self._prefix}-{number}", body, created_by, created_at, ended_at)
