"""Times and durations as people type them in query strings, and times as the API writes them."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from citygw.contract.wire import MAX_TS_MS

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_UNIT_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000}
# ASCII digits only: \d and int() also take other scripts' digits, which nobody types in a URL.
_RELATIVE = re.compile(r"^(?:now)?(?:([+-])([0-9]{1,12})(ms|s|m|h|d|w))?$")
_DURATION = re.compile(r"^([0-9]{1,9})(s|m|h|d|w)$")
# Far enough either way for any telemetry; keeps datetime arithmetic inside its range.
_MIN_MS = 0
_MAX_MS = MAX_TS_MS


def parse_instant(text: str, *, now_ms: int) -> int:
    """Milliseconds since the epoch from ISO 8601, epoch milliseconds, ``now``, or relative ``-1h``.

    An ISO time without a UTC offset is taken as UTC. Raises ValueError with what was expected.
    """
    text = text.strip()
    relative = _RELATIVE.match(text)
    if relative and text:
        sign, amount, unit = relative.groups()
        offset = int(amount) * _UNIT_MS[unit] if amount else 0
        ms = now_ms - offset if sign == "-" else now_ms + offset
    elif text.isascii() and text.isdigit():
        digits = text.lstrip("0") or "0"  # any number of leading zeros; int() refuses over 4300 digits
        ms = int(digits) if len(digits) <= len(str(_MAX_MS)) else _MAX_MS + 1
    else:
        try:
            moment = datetime.fromisoformat(text)
        except ValueError:
            raise ValueError(
                f"{text!r} is not a time; use ISO 8601 (2024-05-01T12:00:00Z), epoch milliseconds,"
                " 'now' or a relative time like -15m, -1h, -7d"
            ) from None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        ms = (moment - _EPOCH) // timedelta(milliseconds=1)
    if not _MIN_MS <= ms <= _MAX_MS:
        raise ValueError(f"{text!r} is outside 1970-01-01 .. 9999-12-31")
    return ms


def parse_duration(text: str) -> int:
    """Whole seconds from ``10s``, ``5m``, ``1h``, ``1d`` or ``1w``; ValueError otherwise."""
    match = _DURATION.match(text.strip())
    if not match or int(match.group(1)) == 0:
        raise ValueError(
            f"{text!r} is not a duration; use a positive whole number and a unit: 10s, 5m, 1h, 1d"
        )
    return int(match.group(1)) * _UNIT_MS[match.group(2)] // 1000


def iso(ts_ms: int) -> str:
    """ISO 8601 in UTC with milliseconds, e.g. ``2024-05-01T12:00:00.250Z``."""
    moment = _EPOCH + timedelta(milliseconds=ts_ms)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ts_ms % 1000:03d}Z"
