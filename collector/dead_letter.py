"""The dead-letter record: what the collector could not store, and why.

One point per refused payload (or per refused reading of a valid one) in the ``dead_letter``
measurement. Tags: ``reason`` (a ``Reason``), ``agent`` (the topic's agent, or ``unknown``),
``collector`` (its client id). Fields: ``topic``, ``error`` (at most ``ERROR_CHARS``) and
``payload`` (its first ``PAYLOAD_BYTES``, as text). Read them with ``GET /v1/dead-letters``, on the
"CityGW system health" dashboard, or with InfluxQL.
"""

from __future__ import annotations

DEAD_LETTER = "dead_letter"
PAYLOAD_BYTES = 4096
ERROR_CHARS = 2000


class Reason:
    """Short codes of the dead-letter ``reason`` tag."""

    INVALID_JSON = "invalid_json"
    SCHEMA = "schema"
    AGENT_MISMATCH = "agent_mismatch"
    TIMESTAMP = "timestamp"
    TOO_LARGE = "too_large"
    TOPIC = "topic"
    REJECTED_BY_STORE = "rejected_by_store"
    COLLECTOR_ERROR = "collector_error"  # the collector failed on it (a bug: its log has the traceback)


REASONS = tuple(value for name, value in vars(Reason).items() if name.isupper())

__all__ = ["DEAD_LETTER", "ERROR_CHARS", "PAYLOAD_BYTES", "REASONS", "Reason"]
