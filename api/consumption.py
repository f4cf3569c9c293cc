"""Meters' consumption per interval from their cumulative counters, through resets and meter replacements.

Between two readings of one meter the consumption is new - old. A reading flagged
``<field>_reset: true`` (the agent saw the counter go down: reboot or wrap) counts its own value,
the counter having restarted from zero. A counter lower than before without the flag is a meter
replaced under the same device id: the new meter's first reading is its baseline, and what was used
between the old meter's last reading and it is unknown (counted 0, reported as a replacement).
An increment belongs to the interval of the later reading. A counter is read from the first of
its ``Counter`` fields a row has (the fields of a role, each meter model naming its own), in the
role's unit.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from collector.store.base import FieldValue, Row


def reset_flag(field: str) -> str:
    """The field the agent sets on a reading taken after ``field``'s counter went down."""
    return f"{field}_reset"


@dataclass(slots=True)
class Interval:
    """Consumption of one group in one interval."""

    group: str | None
    ts_ms: int
    consumption: float = 0.0
    readings: int = 0
    resets: int = 0
    replacements: int = 0


@dataclass(frozen=True, slots=True)
class Counter:
    """A counter field and its factor to the unit consumption is given in (1: the field's own)."""

    field: str
    factor: float = 1.0


def _number(value: FieldValue | None) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def consumption(
    rows: Iterable[Row],
    field: str | Sequence[Counter],
    *,
    start_ms: int,
    interval_ms: int,
    group_of: Callable[[str], str | None],
) -> list[Interval]:
    """Intervals (aligned to the epoch, from ``start_ms`` on) of raw counter ``rows`` of any number of meters.

    Rows before ``start_ms`` only give each meter its starting value.
    """
    counters = [Counter(field)] if isinstance(field, str) else list(field)
    previous: dict[tuple[str, str], float] = {}
    intervals: dict[tuple[str, int], Interval] = {}
    for row in sorted(rows, key=lambda r: (r.tags.get("agent", ""), r.tags.get("device", ""), r.ts_ms)):
        device = row.tags.get("device")
        counter = next((c for c in counters if _number(row.values.get(c.field)) is not None), None)
        if device is None or counter is None:
            continue
        value = (_number(row.values.get(counter.field)) or 0.0) * counter.factor
        meter = (row.tags.get("agent", ""), device)
        before = previous.get(meter)
        previous[meter] = value
        if before is None or row.ts_ms < start_ms:
            continue
        group = group_of(device)
        ts_ms = row.ts_ms - row.ts_ms % interval_ms
        interval = intervals.get((group or "", ts_ms))
        if interval is None:
            interval = intervals[(group or "", ts_ms)] = Interval(group, ts_ms)
        interval.readings += 1
        if row.values.get(reset_flag(counter.field)) is True:
            interval.resets += 1
            interval.consumption += value
        elif value < before:
            interval.replacements += 1
        else:
            interval.consumption += value - before
    return [intervals[key] for key in sorted(intervals)]
