"""The static GTFS in use: loaded from a zip file, swapped whole when a new zip arrives.

Readers take ``source.current()`` once per answer and use that one object throughout, so a
reload never shows them half of an old and half of a new timetable, and never makes them wait.
A new zip that does not validate is refused and the old timetable stays in use. The realtime feeds
go on naming the old timetable's trips for ``ZIP_MAX_AGE_S`` after a swap, while the new zip is
already served: apps and caches may keep the old zip that long (its Cache-Control max-age), and a
trip id they cannot look up is lost on them. Each feed's header ``feed_version`` says which zip it
refers to.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from api.transit.gtfs import GtfsError, GtfsProblem, load_gtfs
from api.transit.timetable import Timetable

log = logging.getLogger(__name__)
ZIP_MAX_AGE_S = 300  # Cache-Control max-age of /v1/transit/gtfs.zip


@dataclass(frozen=True, slots=True)
class PublishedTimetable:
    """A validated timetable and the exact zip it came from (journey planners download it)."""

    timetable: Timetable
    zip_bytes: bytes
    etag: str
    loaded_at_s: float

    @classmethod
    def from_zip(cls, data: bytes, *, loaded_at_s: float | None = None) -> PublishedTimetable:
        """Validate ``data`` (raises ``GtfsError``) and wrap it."""
        return cls(
            timetable=load_gtfs(data),
            zip_bytes=data,
            etag=f'"{hashlib.sha256(data).hexdigest()[:32]}"',
            loaded_at_s=time.time() if loaded_at_s is None else loaded_at_s,
        )

    @property
    def feed_version(self) -> str:
        """feed_info.txt's feed_version, else the zip's ETag (without quotes): what realtime headers name."""
        return self.timetable.feed_version or self.etag.strip('"')


class TimetableSource:
    """Keeps the timetable of the GTFS zip at ``path`` current (thread-safe).

    ``current()`` notices a replaced file (mtime, size) at most every ``check_every_s`` and
    loads it; ``publish(data)`` validates an uploaded zip, writes it atomically to ``path`` and
    swaps it in.
    """

    def __init__(self, path: Path | None, *, check_every_s: float = 2.0) -> None:
        self.path = path
        self.check_every_s = check_every_s
        self.last_refusal: GtfsError | None = None
        self._lock = threading.Lock()
        self._published: PublishedTimetable | None = None
        self._replaced: PublishedTimetable | None = None  # the one before, for the realtime feeds
        self._seen_file: tuple[int, int] | None = None
        self._checked_at = -float("inf")

    def current(self) -> PublishedTimetable | None:
        """The timetable in use, or None when there is no (valid) zip yet."""
        due = self._published is None or time.monotonic() - self._checked_at >= self.check_every_s
        if self.path is not None and due:
            self._reload_if_replaced()
        return self._published

    def for_realtime(self, now_s: float) -> PublishedTimetable | None:
        """What the realtime feeds refer to: the timetable before a swap, until ``ZIP_MAX_AGE_S`` after it."""
        current, replaced = self.current(), self._replaced
        if current is None or replaced is None or not 0 <= now_s - current.loaded_at_s < ZIP_MAX_AGE_S:
            return current
        return replaced

    def _swap(self, published: PublishedTimetable) -> None:
        if self._published is not None and self._published.etag != published.etag:
            self._replaced = self._published
        self._published = published

    def publish(self, data: bytes, *, now_s: float | None = None) -> PublishedTimetable:
        """Validate ``data``, store it at ``path`` (tmp file + rename) and serve it from ``now_s`` on."""
        published = PublishedTimetable.from_zip(data, loaded_at_s=now_s)
        with self._lock:
            if self.path is not None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                temporary = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
                temporary.write_bytes(data)
                os.replace(temporary, self.path)
                self._seen_file = _signature(self.path)
            self._swap(published)
            self.last_refusal = None
        log.info(
            "GTFS published: %d trips, %d stops",
            len(published.timetable.trips),
            len(published.timetable.stops),
        )
        return published

    def _reload_if_replaced(self) -> None:
        # Only one thread loads; the others keep answering from the timetable they have, or wait for
        # the first one (a background job may be loading it when the first request comes).
        if not self._lock.acquire(blocking=self._published is None):
            return
        if self._published is not None and time.monotonic() - self._checked_at < self.check_every_s:
            self._lock.release()  # loaded by the thread we waited for
            return
        try:
            self._checked_at = time.monotonic()
            assert self.path is not None
            signature = _signature(self.path)
            if signature is None or signature == self._seen_file:
                return
            self._seen_file = signature
            try:
                self._swap(PublishedTimetable.from_zip(self.path.read_bytes()))
                self.last_refusal = None
                log.info("GTFS loaded from %s", self.path)
            except GtfsError as exc:
                self.last_refusal = exc
                log.error("GTFS zip %s refused, keeping the timetable in use: %s", self.path, exc)
            except OSError as exc:
                self.last_refusal = GtfsError(
                    [GtfsProblem(str(self.path), None, None, f"cannot read: {exc}")]
                )
                log.error("GTFS zip %s unreadable: %s", self.path, exc)
        finally:
            self._lock.release()


def _signature(path: Path) -> tuple[int, int] | None:
    try:
        stat = path.stat()
    except FileNotFoundError:
        return None
    return stat.st_mtime_ns, stat.st_size
