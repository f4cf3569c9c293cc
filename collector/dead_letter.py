"""The dead-letter record: what the collector could not store, and why.

One point per refused payload (or per refused reading of a valid one) in the ``dead_letter``
measurement. Tags: ``reason`` (a ``Reason``), ``agent`` (the topic's agent, or ``unknown``),
``collector`` (its client id). Fields: ``topic``, ``error`` (at most ``ERROR_CHARS``) and
``payload`` (its first ``PAYLOAD_BYTES``, as text). Read them with ``GET /v1/dead-letters``, on the
"CityGW system health" dashboard, or with InfluxQL.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from collector.store.base import Point

DEAD_LETTER = "dead_letter"
PAYLOAD_BYTES = 4096
ERROR_CHARS = 2000


class Reason:
    """Short codes of the dead-letter ``reason`` tag."""

    INVALID_JSON = "invalid_json"
    SCHEMA = "schema"
    AGENT_MISMATCH = "agent_mismatch"
    TIMESTAMP = "timestamp"
    FIELD_TYPE = "field_type"  # a field's value of another type than the measurement holds it as
    NOT_OWNED = "not_owned"  # a device, vehicle tag or agent its pushed config does not give it (owners.py)
    TOO_LARGE = "too_large"
    TOO_MANY_SERIES = "too_many_series"  # a new series beyond the agent's budget (collector/series_budget.py)
    TOPIC = "topic"
    REJECTED_BY_STORE = "rejected_by_store"
    COLLECTOR_ERROR = "collector_error"  # the collector failed on it (a bug: its log has the traceback)


class DeadLetters:
    """Makes dead-letter points for one collector: each its own time, so none overwrites another.

    A point's identity is its series and time; two letters of the same reason and agent in the
    same millisecond would be one. Each letter takes the message's receive time, or 1 ms after
    the collector's previous letter if that is later (the ``collector`` tag separates collectors).
    Called from the converter and the writers at once. ``note`` hears of each letter (the
    collector's ``DeadLetterLog``), if given.
    """

    def __init__(self, collector: str, note: Callable[[str, str, str, str, str], None] | None = None) -> None:
        self.collector = collector
        self._note = note
        self._last_ms = 0
        self._lock = threading.Lock()

    def letter(
        self, topic: str, received_ms: int, payload: bytes, reason: str, error: str, agent: str | None
    ) -> Point:
        """The dead letter of ``payload`` (a message's, or one reading's), received on ``topic``."""
        with self._lock:
            ts = max(received_ms, self._last_ms + 1)
            self._last_ms = ts
        agent = agent or "unknown"
        if self._note is not None:
            self._note(self.collector, agent, reason, topic, error)
        return Point(
            DEAD_LETTER,
            {"reason": reason, "agent": agent, "collector": self.collector},
            ts,
            {
                "topic": topic,
                "error": error[:ERROR_CHARS],
                "payload": payload[:PAYLOAD_BYTES].decode(errors="replace"),
            },
        )


REASONS = tuple(value for name, value in vars(Reason).items() if name.isupper())
LOG_EVERY_S = 60.0


@dataclass(slots=True)
class _Logged:
    at: float  # when the last line for this (agent, reason) was written
    left_out: int = 0  # letters since then, not logged
    latest: str = ""  # the latest of them: topic and error


class DeadLetterLog:
    """Warnings for dead letters, at most one line per (agent, reason) every ``every_s`` seconds.

    One agent sending 100 000 bad messages wrote 100 000 warning lines (issue 21.7). Now the first
    letter of an (agent, reason) is logged as it comes; the next ones within ``every_s`` are counted,
    and ``flush`` (called often, by the converter) writes one summary line with the count and the
    latest error once ``every_s`` has passed. The dead-letter store still keeps every letter. At
    most ``max_keys`` pairs are followed; past that the summaries are written and the count restarts.
    """

    def __init__(
        self,
        logger: logging.Logger,
        every_s: float = LOG_EVERY_S,
        *,
        clock: Callable[[], float] = time.monotonic,
        max_keys: int = 10_000,
    ) -> None:
        self.every_s = every_s
        self.max_keys = max_keys
        self._log = logger
        self._clock = clock
        self._logged: dict[tuple[str, str], _Logged] = {}
        self._lock = threading.Lock()

    def letter(self, collector: str, agent: str, reason: str, topic: str, error: str) -> None:
        """Log this dead letter, or count it for the next summary of its (agent, reason)."""
        now = self._clock()
        with self._lock:
            logged = self._logged.get((agent, reason))
            if logged is not None and now - logged.at < self.every_s:
                logged.left_out += 1
                logged.latest = f"{topic}: {error}"
                return
            summaries = []
            if logged is None and len(self._logged) >= self.max_keys:
                summaries = self._flush(now, everything=True)
                self._logged.clear()
            more = logged.left_out if logged is not None else 0
            self._logged[(agent, reason)] = _Logged(now)
        self._summarise(collector, now, summaries)
        again = f" ({more} more since the last report, not logged)" if more else ""
        self._log.warning(
            "collector %s: dead letter (%s) from %s: %s%s", collector, reason, topic, error, again
        )

    def flush(self, collector: str, *, everything: bool = False) -> None:
        """Write the summaries that are due (all with ``everything``, e.g. at stop); forget quiet pairs."""
        now = self._clock()
        with self._lock:
            summaries = self._flush(now, everything=everything)
        self._summarise(collector, now, summaries)

    def _summarise(
        self, collector: str, now: float, summaries: list[tuple[tuple[str, str], _Logged]]
    ) -> None:
        for (agent, reason), logged in summaries:
            self._log.warning(
                "collector %s: %d more dead letter(s) (%s) from agent %s in the last %.0f s; the latest: %s",
                collector,
                logged.left_out,
                reason,
                agent,
                now - logged.at,
                logged.latest,
            )

    def _flush(self, now: float, *, everything: bool) -> list[tuple[tuple[str, str], _Logged]]:
        due = [
            (key, logged)
            for key, logged in self._logged.items()
            if everything or now - logged.at >= self.every_s
        ]
        lines = []
        for key, logged in due:
            if logged.left_out:
                lines.append((key, _Logged(logged.at, logged.left_out, logged.latest)))
                logged.at, logged.left_out, logged.latest = now, 0, ""
            else:
                del self._logged[key]  # quiet for a whole period: its next letter is logged at once
        return lines


__all__ = [
    "DEAD_LETTER",
    "ERROR_CHARS",
    "LOG_EVERY_S",
    "PAYLOAD_BYTES",
    "REASONS",
    "DeadLetterLog",
    "DeadLetters",
    "Reason",
]
