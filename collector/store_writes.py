"""Storing a converted batch: retried while the store is down, refused records dead-lettered.

A write that fails (``StoreUnavailable``, or anything unexpected) is tried again after
``retry_delay`` (exponential, capped, jittered) until it succeeds or the collector stops; then the
batch is left to the broker's session, nothing of it acknowledged. Records the store refuses for
good (``LinesRejected``/``PointsRejected``: it wrote the rest) become ``rejected_by_store`` dead
letters, written next; a dead letter the store refuses is logged and dropped. Writes go in the
store's own encoding (the converter's encoder: lines, else Points). Several writer threads share
one ``BatchWriter``.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from collector.convert import Batch, Converter
from collector.store.base import (
    LinesRejected,
    LineWriter,
    Point,
    PointsRejected,
    PointWriter,
    StoreUnavailable,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Outcome:
    """A batch a writer is done with: ``written`` (``stored`` points and the ``dead`` letters
    written with them), or not (stopping while the store is down: left to the broker)."""

    batch: Batch
    written: bool
    stored: int = 0
    dead: list[Point] = field(default_factory=list)


class BatchWriter:
    """Writes batches to ``store``; ``on_retry`` hears of each retry, ``on_write`` of each write's seconds."""

    def __init__(
        self,
        store: PointWriter,
        converter: Converter,
        *,
        name: str,
        stopping: threading.Event,
        retry_initial_seconds: float = 0.5,
        retry_max_seconds: float = 30.0,
        on_retry: Callable[[], None] = lambda: None,
        on_write: Callable[[float], None] = lambda seconds: None,
    ) -> None:
        self.name = name
        self.retry_initial_seconds = retry_initial_seconds
        self.retry_max_seconds = retry_max_seconds
        self._store = store
        self._converter = converter
        self._stopping = stopping
        self._on_retry = on_retry
        self._on_write = on_write

    def store(self, batch: Batch) -> Outcome:
        """Write ``batch`` until the store takes it (its refused records dead-lettered), or until
        stopping while the store is down (then not ``written``: left to the broker's session)."""
        lines, points = batch.lines, batch.points
        dead = list(batch.dead)  # every dead letter of the batch that gets written
        pending = batch.dead  # the dead letters of the next write
        stored = len(batch.origins)
        attempt = 0
        while True:
            started = time.perf_counter()
            try:
                rejected = self._write(lines, points, pending)
                self._on_write(time.perf_counter() - started)
            except Exception as exc:
                # StoreUnavailable, or anything unexpected: keep the batch, acknowledge nothing, retry.
                self._on_write(time.perf_counter() - started)
                if self._stopping.is_set():
                    log.warning(
                        "collector %s: stopping with %d unstored message(s): %s",
                        self.name,
                        len(batch.messages),
                        exc,
                    )
                    return Outcome(batch, written=False)
                delay = retry_delay(attempt, self.retry_initial_seconds, self.retry_max_seconds)
                attempt += 1
                self._on_retry()
                if isinstance(exc, StoreUnavailable):
                    log.warning(
                        "collector %s: store unavailable, retry %d in %.1f s: %s",
                        self.name,
                        attempt,
                        delay,
                        exc,
                    )
                else:
                    log.exception("collector %s: write failed, retry %d in %.1f s", self.name, attempt, delay)
                self._stopping.wait(delay)
                continue
            if not rejected:
                break
            # The store wrote everything else; dead-letter what it refused (once: a refused dead
            # letter cannot be dead-lettered again), then write only those dead letters.
            log.warning("collector %s: store refused %d point(s)", self.name, len(rejected))
            records = len(lines) + len(points)
            refused_readings = []
            for index, reason in rejected:
                if index < records:
                    refused_readings.append((batch.origins[index], reason))
                    continue
                letter = pending[index - records]
                log.error("collector %s: store refused a dead letter: %s (%s)", self.name, reason, letter)
                dead.remove(letter)
            stored -= len(refused_readings)
            pending = self._converter.refused_letters(refused_readings)
            dead += pending
            lines, points = [], []
            if not pending:
                break
        return Outcome(batch, written=True, stored=stored, dead=dead)

    def _write(self, lines: list[str], points: list[Point], dead: list[Point]) -> list[tuple[int, str]]:
        """One store write of the records (lines or points) then ``dead``; the refused ones by index."""
        if (encoder := self._converter.encoder) is not None:
            assert isinstance(self._store, LineWriter)
            try:
                self._store.write_lines(lines + [encoder.line(letter) for letter in dead])
            except LinesRejected as exc:
                return exc.rejected
            return []
        everything = points + dead
        try:
            self._store.write(everything)
        except PointsRejected as exc:
            position = {id(point): index for index, point in enumerate(everything)}
            return [(position[id(point)], reason) for point, reason in exc.rejected]
        return []


def retry_delay(attempt: int, initial: float, maximum: float) -> float:
    """Seconds to wait before retry ``attempt`` (0-based): exponential, capped, with "equal jitter".

    The jitter (a random point in the upper half) keeps collectors that failed together from
    retrying together against a store that is just coming back.
    """
    ceiling = min(maximum, initial * 2 ** min(attempt, 30))
    return random.uniform(ceiling / 2, ceiling)


__all__ = ["BatchWriter", "Outcome", "retry_delay"]
