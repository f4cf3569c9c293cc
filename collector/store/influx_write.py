"""What both InfluxDB writers share: HTTP errors in the store's terms, and bisecting writes.

A refused write (HTTP 400, or 413: too large) is split in halves until the refused lines are
found, the rest being written; the caller dead-letters exactly those.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence

import httpx

from collector.store.base import (
    LinesRejected,
    Point,
    PointsRejected,
    StoreUnavailable,
)
from collector.store.line_protocol import to_line_protocol

DEFAULT_TIMEOUT = httpx.Timeout(10.0, connect=3.0)


class PermissionDenied(StoreUnavailable):
    """HTTP 403: the user was recognised and may not do this (retried: an admin may grant it)."""


def refused(server: object, status: int, reason: str) -> StoreUnavailable:
    """401: who we are was not accepted; 403: it was, and may not do this (e.g. a read-only user writing)."""
    if status == 401:
        return StoreUnavailable(f"InfluxDB at {server}: authentication failed ({reason})")
    return PermissionDenied(f"InfluxDB at {server}: permission denied ({reason})")


class BadRequest(Exception):
    """The server refused (part of) a batch for good (HTTP 400)."""


class TooLarge(Exception):
    """The batch is larger than the server accepts (HTTP 413)."""


def write_bisecting(points: Sequence[Point], send: Callable[[list[str]], None]) -> None:
    """``write_lines_bisecting`` for points: raises PointsRejected with exactly the refused points."""
    try:
        write_lines_bisecting([to_line_protocol(point) for point in points], send)
    except LinesRejected as exc:
        raise PointsRejected([(points[index], reason) for index, reason in exc.rejected]) from None


def write_lines_bisecting(lines: Sequence[str], send: Callable[[list[str]], None]) -> None:
    """Send ``lines`` through ``send``; on a refusal, find the bad lines by writing halves.

    Rewriting the lines a partial write already stored is harmless (same identity). Raises
    LinesRejected with exactly the refused lines (by index, in order) once all the others are
    written; an empty line stands for a point without a writable field.
    """
    rejected = [(index, _NO_FIELD) for index, line in enumerate(lines) if not line]
    usable = [index for index, line in enumerate(lines) if line] if rejected else range(len(lines))
    rejected += _send_halves(lines, usable, send)
    if rejected:
        raise LinesRejected(sorted(rejected))


_NO_FIELD = "point has no field with a writable value (NaN or infinite?)"


def _send_halves(
    lines: Sequence[str], indices: Sequence[int], send: Callable[[list[str]], None]
) -> list[tuple[int, str]]:
    if not indices:
        return []
    try:
        send([lines[index] for index in indices])
        return []
    except BadRequest as exc:
        if len(indices) == 1:
            return [(indices[0], str(exc))]
    except TooLarge:
        if len(indices) == 1:
            return [(indices[0], "point is larger than the server accepts (HTTP 413)")]
    middle = len(indices) // 2
    return _send_halves(lines, indices[:middle], send) + _send_halves(lines, indices[middle:], send)


def error_text(body: bytes | str | None) -> str:
    """The server's reason from an error body (v1 says "error", v2 says "message")."""
    if body is None:
        return ""
    text = body.decode(errors="replace") if isinstance(body, bytes) else body
    try:
        decoded = json.loads(text)
    except ValueError:
        return text.strip()[:500]
    if isinstance(decoded, dict):
        return str(decoded.get("error") or decoded.get("message") or decoded)[:500]
    return text.strip()[:500]
